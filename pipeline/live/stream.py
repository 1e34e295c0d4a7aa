"""The live query in the background of this process (the Live page): start, supervise, stop.

The query itself is split by purpose:

paths         where its tables, checkpoints and drop folder are
kafka_source  the Spark source (Kafka with SASL/SSL, or the drop folder)
plan          the micro-batch's one Spark job (parse, rules, totals)
arrow_rules   the per-batch steps on that job's Arrow table
delta_io      the delta-rs commits and look-ups
writer        the foreachBatch writer, exactly once (its docstring says how)
hooks         the optional after-commit callback tests install
query         process lock, start, graceful stop
lag           consumer lag
foreground    the command line's run (`python -m pipeline stream run`)
dashboard     the Live page's views of the live Gold tables

This module keeps one background query per process, restarts it after a
failure (a broker restart, a lost connection) on a supervisor thread, and
reports its status. The names the command line and the scripts use are
re-exported here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from pipeline.live.errors import StreamError, short
from pipeline.live.foreground import RunSummary, run_foreground
from pipeline.live.kafka_source import DEFAULT_MAX_OFFSETS
from pipeline.live.lag import consumer_lag, progress_dict, topic_end_offsets
from pipeline.live.paths import (
    GOLD,
    STORE,
    checkpoint_root,
    drop_folder,
    resolve_source,
    table_path,
)
from pipeline.live.query import (
    DEFAULT_TRIGGER_SECONDS,
    QUERY_PREFIX,
    ProcessLock,
    graceful_stop,
    start_query,
)
from pipeline.live.writer import BatchReport, BatchWriter

__all__ = [
    "DEFAULT_MAX_OFFSETS",
    "GOLD",
    "STORE",
    "BatchReport",
    "RunSummary",
    "StreamError",
    "checkpoint_root",
    "drop_folder",
    "reports",
    "run_foreground",
    "running_here",
    "start_background",
    "status",
    "stop",
    "table_path",
    "topic_end_offsets",
    "wait",
]


@dataclass
class LiveQuery:
    source: str
    query: StreamingQuery
    writer: BatchWriter
    lock: ProcessLock
    available_now: bool
    started_at: float = field(default_factory=time.time)
    restarts: int = 0
    stop_requested: bool = False
    error: str | None = None
    supervisor: threading.Thread | None = None


_current: LiveQuery | None = None
_lock = threading.Lock()


def _active_live_query(spark: SparkSession) -> StreamingQuery | None:
    for query in spark.streams.active:
        if (query.name or "").startswith(QUERY_PREFIX):
            return query
    return None


def start_background(
    spark: SparkSession,
    source: str | None = None,
    available_now: bool = False,
    trigger_seconds: float = DEFAULT_TRIGGER_SECONDS,
    max_per_batch: int | None = None,
    max_restarts: int = 20,
    fault: Callable[[str, int], None] | None = None,
) -> dict[str, Any]:
    """Start the live query in this process unless one already runs; returns status()."""
    global _current
    chosen = resolve_source(source)
    with _lock:
        if _current is not None and not _current.stop_requested and _alive(_current):
            return status()
        if _active_live_query(spark) is not None:
            return status()
        lock = ProcessLock(checkpoint_root(chosen), chosen)
        lock.acquire()
        try:
            query, writer = start_query(
                spark, chosen, available_now, trigger_seconds, max_per_batch, fault
            )
        except Exception:
            lock.release()
            raise
        live = LiveQuery(chosen, query, writer, lock, available_now)
        live.supervisor = threading.Thread(
            target=_supervise,
            args=(spark, live, trigger_seconds, max_per_batch, max_restarts),
            name="shoplake-live-supervisor",
            daemon=True,
        )
        _current = live
        live.supervisor.start()
    return status()


def _alive(live: LiveQuery) -> bool:
    return live.query.isActive or (
        live.supervisor is not None and live.supervisor.is_alive() and not live.stop_requested
    )


def _supervise(
    spark: SparkSession,
    live: LiveQuery,
    trigger_seconds: float,
    max_per_batch: int | None,
    max_restarts: int,
) -> None:
    """Restart the query after a failure (a broker restart, a lost connection)."""
    backoff = 2.0
    while not live.stop_requested:
        try:
            live.query.awaitTermination()
        except Exception as exc:
            live.error = short(exc)
        if live.stop_requested:
            break
        failure = live.query.exception()
        if failure is None:
            break  # availableNow finished
        live.error = short(failure)
        if live.restarts >= max_restarts:
            break
        time.sleep(backoff)
        backoff = min(backoff * 2, 30.0)
        if live.stop_requested:
            break
        try:
            live.query, _ = start_query(
                spark,
                live.source,
                live.available_now,
                trigger_seconds,
                max_per_batch,
                live.writer.fault,
                live.writer,
            )
            live.restarts += 1
        except Exception as exc:
            live.error = short(exc)
            live.restarts += 1
    live.lock.release()


def stop(timeout: float = 120.0) -> dict[str, Any]:
    """Stop the live query of this process (a batch in flight finishes first)."""
    with _lock:
        live = _current
        if live is None:
            return status()
        live.stop_requested = True
        graceful_stop(live.query, live.writer, timeout)
        if live.supervisor is not None:
            live.supervisor.join(timeout)
        live.lock.release()
    return status()


def wait(timeout: float | None = None) -> bool:
    """Wait for the background query to end (availableNow); True if it ended."""
    live = _current
    if live is None:
        return True
    if live.supervisor is not None:
        live.supervisor.join(timeout)
        return not live.supervisor.is_alive()
    return True


def reports() -> list[BatchReport]:
    """The recent micro-batch reports of the background query (the latest 200)."""
    live = _current
    if live is None:
        return []
    with live.writer.lock:
        return list(live.writer.reports)


def status(with_lag: bool = True) -> dict[str, Any]:
    """What the page and the CLI show about the live query."""
    live = _current
    out: dict[str, Any] = {
        "active": False,
        "source": None,
        "query_id": None,
        "available_now": None,
        "restarts": 0,
        "error": None,
        "batches": 0,
        "last_batch_id": None,
        "input_rows_per_second": None,
        "processed_rows_per_second": None,
        "batch_duration_ms": None,
        "watermark": None,
        "last_batch_age_seconds": None,
        "consumer_lag": None,
    }
    if live is None:
        return out
    out.update(
        active=bool(live.query.isActive),
        source=live.source,
        query_id=str(live.query.id),
        available_now=live.available_now,
        restarts=live.restarts,
        error=live.error,
    )
    with live.writer.lock:
        reports = [r for r in live.writer.reports if not r.failed]
    out["batches"] = len(reports)
    if reports:
        last = reports[-1]
        out["last_batch_id"] = last.batch_id
        out["last_batch_age_seconds"] = round(time.time() - last.finished_at, 1)
        out["last_batch_rows"] = last.rows
    if live.writer.watermark is not None:
        out["watermark"] = live.writer.watermark.strftime("%Y-%m-%d %H:%M:%S UTC")
    progress = progress_dict(live.query)
    if progress:
        out["input_rows_per_second"] = _round(progress.get("inputRowsPerSecond"))
        out["processed_rows_per_second"] = _round(progress.get("processedRowsPerSecond"))
        out["batch_duration_ms"] = (progress.get("durationMs") or {}).get("triggerExecution")
        if live.source == "kafka" and with_lag:
            out["consumer_lag"] = consumer_lag(progress)
    return out


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)


def running_here() -> bool:
    """Whether this process runs the background query (the command line refuses a second)."""
    return _current is not None and _alive(_current)
