"""Is the live stream running? One answer for every page and the command line.

The answer comes from the processes themselves, never from how recent the
last written window is (a stopped stream's last window is still "recent" for
minutes; a running stream with no orders writes no window):

- the streaming query and every producer keep a heartbeat file: a small JSON
  document (pid, what it does, when it started, the last beat) rewritten
  every ``BEAT_SECONDS`` by a daemon thread of the process doing the work,
  and removed when the work stops cleanly;
- a heartbeat counts when its process is alive (``/proc``/``kill 0``) and its
  last beat is at most ``STALE_SECONDS`` old; a killed process leaves a file
  whose pid is gone (ignored), a hung one a beat that ages (reported as not
  responding);
- the local broker is checked by its pid file and a metadata request
  (pipeline.live.broker.status); an external cluster by a metadata request.

The query's heartbeat sits beside its checkpoint lock (one per source, and
per topic for Kafka), the producers' in ``_checkpoints/live/_producers`` of
the lake, so a stream of another lake is never mistaken for this one's.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import storage
from pipeline.config import CACHE_DIR, settings

BEAT_SECONDS = 2.0
STALE_SECONDS = 15.0
SOURCES = ("kafka", "files")


class Heartbeat:
    """A file that says "this process is doing this", kept fresh by a daemon thread."""

    def __init__(
        self,
        path: Path,
        info: dict[str, Any],
        probe: Callable[[], dict[str, Any]] | None = None,
        every: float = BEAT_SECONDS,
    ) -> None:
        self.path = path
        self.info = {"pid": os.getpid(), "started_at": time.time(), **info}
        self.probe = probe
        self.every = every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        """Write the file now (atomically: a reader never sees half a document)."""
        extra: dict[str, Any] = {}
        if self.probe is not None:
            with contextlib.suppress(Exception):  # a probe must never stop the beat
                extra = self.probe()
        document = {**self.info, **extra, "beat_at": time.time()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(document))
        os.replace(tmp, self.path)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            with contextlib.suppress(OSError):
                self.beat()

    def start(self) -> Heartbeat:
        self.beat()
        self._thread = threading.Thread(target=self._run, name="shoplake-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating and remove the file: the work stopped cleanly."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.every + 1)
        with contextlib.suppress(OSError):
            if _read(self.path).get("pid") == os.getpid():
                self.path.unlink()


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def pid_alive(pid: object) -> bool:
    try:
        os.kill(int(pid), 0)  # type: ignore[arg-type]
    except (OSError, TypeError, ValueError):
        return False
    stat = Path(f"/proc/{int(pid)}/stat")  # type: ignore[arg-type]
    with contextlib.suppress(OSError):
        if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":  # a zombie is not running
            return False
    return True


def read_beat(path: Path, now: float | None = None) -> dict[str, Any] | None:
    """The heartbeat at ``path`` with its state: running, not responding; None if stopped."""
    beat = _read(path)
    if not beat or not pid_alive(beat.get("pid")):
        return None
    age = (now or time.time()) - float(beat.get("beat_at", 0))
    beat["age_seconds"] = round(age, 1)
    beat["state"] = "running" if age <= STALE_SECONDS else "not responding"
    return beat


# ----------------------------------------------------------------------------- locations


def _checkpoint_root(source: str) -> str:
    from pipeline.live.paths import checkpoint_root  # paths imports no Spark

    return checkpoint_root(source)


def query_beat_path(source: str) -> Path:
    """Beside the query's lock file (local even when the lake is a URL)."""
    return storage.lock_file(_checkpoint_root(source), ".heartbeat.json", CACHE_DIR / "locks")


def producer_beat_dir() -> Path:
    lake = settings().lake.rstrip("/")
    return storage.lock_file(f"{lake}/_checkpoints/live", "_producers", CACHE_DIR / "locks")


def producer_heartbeat(info: dict[str, Any], probe: Callable[[], dict[str, Any]]) -> Heartbeat:
    name = f"{os.getpid()}-{threading.get_ident()}.json"
    return Heartbeat(producer_beat_dir() / name, info, probe)


# ----------------------------------------------------------------------------- status


@dataclass
class LiveStatus:
    """The state of the three live parts, and the one line every page shows."""

    state: str  # running | not responding | stopped
    query: dict[str, Any] | None  # the query's heartbeat, None when stopped
    producers: list[dict[str, Any]] = field(default_factory=list)
    broker: str = "not checked"  # up | down | starting | external up/down | not checked
    broker_needed: bool = False

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def producing(self) -> bool:
        return any(p.get("state") == "running" for p in self.producers)

    @property
    def headline(self) -> str:
        if self.state == "stopped":
            return "Stream stopped"
        if self.state == "not responding":
            return "Stream not responding"
        return "Stream running"

    def detail(self) -> str:
        """Which parts run, in words: 'query on kafka (pid 12), producer running, broker up'."""
        parts: list[str] = []
        if self.query is not None:
            where = "this app" if self.query.get("pid") == os.getpid() else "the command line"
            parts.append(f"query on {self.query.get('source', '?')} ({where})")
        else:
            parts.append("query stopped")
        parts.append("producer running" if self.producing else "no producer running")
        if self.broker_needed or self.broker not in ("not checked", "down"):
            parts.append(f"broker {self.broker}")
        return ", ".join(parts)


def _producers(now: float) -> list[dict[str, Any]]:
    folder = producer_beat_dir()
    out = []
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.json")):
        beat = read_beat(path, now)
        if beat is None:
            with contextlib.suppress(OSError):  # a killed producer's file
                if not pid_alive(_read(path).get("pid")):
                    path.unlink()
            continue
        out.append(beat)
    return out


def _broker(timeout: float) -> str:
    from pipeline.live import broker

    status = broker.status(timeout=timeout)
    if status.mode == "external":
        return "external up" if status.healthy else "external down"
    if status.healthy:
        return "up"
    return "starting" if status.running else "down"


def live_status(check_broker: bool = True, broker_timeout: float = 1.0) -> LiveStatus:
    """The live stream as it is now: query, producers and broker (see the module docstring)."""
    now = time.time()
    beats = [b for b in (read_beat(query_beat_path(s), now) for s in SOURCES) if b is not None]
    beats.sort(key=lambda b: b["state"] != "running")
    query = beats[0] if beats else None
    state = "stopped" if query is None else str(query["state"])
    needed = (query or {}).get("source") == "kafka" or settings().stream_source == "kafka"
    broker = _broker(broker_timeout) if check_broker else "not checked"
    return LiveStatus(state, query, _producers(now), broker, needed)
