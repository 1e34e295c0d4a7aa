"""Test-only start-up hook for a `python -m pipeline stream run` subprocess.

tests/test_live_crash.py puts this folder (and the repository root) on the
subprocess's PYTHONPATH; Python imports ``sitecustomize`` from there at
interpreter start-up, before `pipeline` runs. It installs a commit hook
(pipeline.live.hooks) that holds the process right after one step's commit
of one micro-batch, named by ``SHOPLAKE_TEST_PAUSE_AFTER=step:batch`` (e.g.
``bronze:1``), so the test's SIGKILL lands there for certain instead of
racing the next commit (tens of ms). Production code never reads that
variable and never imports this file: without this folder on PYTHONPATH
nothing is installed.
"""

from __future__ import annotations

import os
import time

PAUSE_ENV = "SHOPLAKE_TEST_PAUSE_AFTER"


def _install() -> None:
    wanted = os.environ.get(PAUSE_ENV, "")
    if ":" not in wanted:
        return
    step, batch = wanted.rsplit(":", 1)

    def pause(at_step: str, batch_id: int) -> None:
        if at_step == step and batch_id == int(batch):
            time.sleep(3600)

    from pipeline.live import hooks

    hooks.install(pause)


_install()
