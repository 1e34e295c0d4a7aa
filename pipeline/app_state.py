"""Background jobs of the app (generate data, run the pipeline), one at a time per process.

Why a thread: a Streamlit script is stopped whenever its user clicks anything
or leaves the page, and Streamlit stops it by raising inside the script thread.
Running Spark work in that thread would abort a run half-way. The job runs in
its own thread instead; any page (and any browser session of this server)
can see it, follow its progress and show its result, including after the user
navigated away and came back. No Streamlit import here.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]


class JobBusyError(RuntimeError):
    """Another job of this app is still running."""


def readable_error(exc: BaseException) -> str:
    """One readable line for the user (the traceback goes to the server log only).

    Spark and py4j errors carry a JVM stack trace after the first line.
    """
    text = str(exc).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    name = type(exc).__name__
    message = f"{name}: {first}" if first else name
    return message if len(message) <= 400 else message[:397] + "..."


@dataclass
class Job:
    kind: str
    label: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    message: str = "starting"
    fraction: float = 0.0
    result: Any = None
    error: str | None = None
    # every (time, message, fraction) reported: steps may run concurrently, so the page
    # replays them all instead of reading only the latest message
    events: list[tuple[float, str, float]] = field(default_factory=list, repr=False)
    meta: dict[str, Any] = field(default_factory=dict)  # what the page knows (e.g. the steps)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.finished_at is None

    @property
    def elapsed(self) -> float:
        return (self.finished_at or time.time()) - self.started_at

    def report(self, message: str, fraction: float) -> None:
        """The progress callback handed to the engine (called from the job thread)."""
        self.message = str(message)
        try:
            self.fraction = min(max(float(fraction), 0.0), 1.0)
        except (TypeError, ValueError):
            pass
        self.events.append((time.time(), self.message, self.fraction))  # atomic under the GIL

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends; True when it did."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running


_lock = threading.Lock()
_jobs: dict[str, Job] = {}  # latest job per kind
_current: Job | None = None


def current() -> Job | None:
    """The running job, if any."""
    job = _current
    return job if job is not None and job.running else None


def last(kind: str) -> Job | None:
    """The latest job of a kind (running or finished) in this process."""
    return _jobs.get(kind)


def start(kind: str, label: str, work: Callable[[Job], Any]) -> Job:
    """Run `work(job)` in a daemon thread; raise JobBusyError if a job is running."""
    global _current
    with _lock:
        if _current is not None and _current.running:
            raise JobBusyError(f"{_current.label} is still running")
        job = Job(kind=kind, label=label)

        def target() -> None:
            try:
                job.result = work(job)
            except Exception as exc:  # shown to the user as one line, logged in full
                log.exception("%s failed", label)
                job.error = readable_error(exc)
            finally:
                job.finished_at = time.time()

        job._thread = threading.Thread(target=target, name=f"shoplake-{kind}", daemon=True)
        _jobs[kind] = job
        _current = job
        job._thread.start()
        return job
