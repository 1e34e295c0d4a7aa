"""An optional callback the micro-batch writer calls after each of its commits.

``hook(step, batch_id)`` runs after every step of BatchWriter (bronze,
quarantine, dq, store, gold, alerts, state); it may raise (a simulated crash)
or block (hold the process where a test kills it). Production installs none,
and nothing here reads the environment: a test passes ``fault=`` to
run_foreground/start_background in its own process, or installs a hook here
for a `python -m pipeline stream run` subprocess it starts (tests/hooks_site/
sitecustomize.py does that at interpreter start-up, put on PYTHONPATH by
tests/test_live_crash.py only).
"""

from __future__ import annotations

from collections.abc import Callable

CommitHook = Callable[[str, int], None]

_installed: CommitHook | None = None


def install(hook: CommitHook | None) -> None:
    """Use `hook` for writers created from now on in this process (None removes it)."""
    global _installed
    _installed = hook


def installed() -> CommitHook | None:
    return _installed
