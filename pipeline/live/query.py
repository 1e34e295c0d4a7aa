"""Starting and stopping one live query: its process lock, start, graceful stop.

Shared by the background query (pipeline.live.stream) and the command line's
foreground run (pipeline.live.foreground).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from pipeline import storage
from pipeline.config import CACHE_DIR
from pipeline.live.errors import StreamError, short
from pipeline.live.health import Heartbeat
from pipeline.live.kafka_source import read_source
from pipeline.live.paths import checkpoint_root
from pipeline.live.writer import BatchReport, BatchWriter

QUERY_PREFIX = "shoplake_live_"
DEFAULT_TRIGGER_SECONDS = 1.0


class ProcessLock:
    """A lock file per checkpoint, so two processes never run the same query.

    While held, a heartbeat file beside it (pipeline.live.health) tells every
    page and process that the query runs here; release removes it.
    """

    def __init__(self, root: str, source: str | None = None):
        self.handle = None
        self.path = storage.lock_file(root, ".lock", CACHE_DIR / "locks")  # local, even for URLs
        self.heartbeat: Heartbeat | None = None
        if self.path is not None:
            beat = storage.lock_file(root, ".heartbeat.json", CACHE_DIR / "locks")
            self.heartbeat = Heartbeat(beat, {"kind": "query", "source": source})

    def acquire(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StreamError(
                f"the live query on this checkpoint already runs in {holder}; stop it first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self.handle = handle
        if self.heartbeat is not None:
            with contextlib.suppress(OSError):
                self.heartbeat.start()

    def release(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self.handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.handle, fcntl.LOCK_UN)
                self.handle.close()
            self.handle = None


def start_query(
    spark: SparkSession,
    source: str,
    available_now: bool,
    trigger_seconds: float,
    max_per_batch: int | None,
    fault: Callable[[str, int], None] | None,
    writer: BatchWriter | None = None,
    on_report: Callable[[BatchReport], None] | None = None,
) -> tuple[StreamingQuery, BatchWriter]:
    """Start the query on this source's checkpoint; a restart passes the writer it had."""
    writer = writer or BatchWriter(source, fault, on_report)
    checkpoint = f"{checkpoint_root(source)}/spark"
    stream = read_source(spark, source, max_per_batch)
    write = (
        stream.writeStream.queryName(f"{QUERY_PREFIX}{source}")
        .option("checkpointLocation", checkpoint)
        .foreachBatch(writer)
    )
    if available_now:
        write = write.trigger(availableNow=True)
    else:
        write = write.trigger(processingTime=f"{trigger_seconds} seconds")
    try:
        query = write.start()
    except Exception as exc:
        raise StreamError(f"could not start the live query: {short(exc)}") from exc
    writer.set_app_id(str(query.id))
    return query, writer


def graceful_stop(query: StreamingQuery, writer: BatchWriter, timeout: float = 120.0) -> None:
    """Let the batch in flight finish, then stop: a clean stop replays nothing."""
    writer.stop_requested.set()
    writer.idle.wait(timeout)
    with contextlib.suppress(Exception):
        query.stop()
