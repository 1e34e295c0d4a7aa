#!/usr/bin/env bash
# Headless Chromium for the browser tests, from Debian's packages.
# Playwright drives it through executable_path (it cannot download its own here).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser tests ..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  exit 0
fi
echo "The browser tests need Chromium: install it (Debian/Ubuntu: sudo apt-get install chromium)," >&2
echo "or set SHOPLAKE_CHROMIUM to its path." >&2
[ -n "${SHOPLAKE_CHROMIUM:-}" ] && [ -x "${SHOPLAKE_CHROMIUM}" ] && exit 0
exit 1
