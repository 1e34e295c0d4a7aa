"""The command line's live query: run here until the source is drained or time is up."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import SparkSession

from pipeline.live.errors import StreamError, short
from pipeline.live.paths import checkpoint_root, resolve_source
from pipeline.live.query import DEFAULT_TRIGGER_SECONDS, ProcessLock, graceful_stop, start_query
from pipeline.live.writer import BatchReport


@dataclass
class RunSummary:
    source: str
    batches: int
    rows: int
    quarantined: int
    duplicates: int
    late: int
    inserted: int
    seconds: float

    def line(self) -> str:
        return (
            f"stream {self.source}: {self.batches} batches, {self.rows} records, "
            f"{self.inserted} new events, {self.duplicates} duplicates, "
            f"{self.quarantined} quarantined, {self.late} late in {self.seconds:.1f}s"
        )


def run_foreground(
    source: str | None = None,
    available_now: bool = True,
    seconds: float | None = None,
    spark: SparkSession | None = None,
    max_per_batch: int | None = None,
    trigger_seconds: float = DEFAULT_TRIGGER_SECONDS,
    progress: Callable[[BatchReport], None] | None = None,
    fault: Callable[[str, int], None] | None = None,
) -> RunSummary:
    """Run the query here until availableNow drains the source or `seconds` pass."""
    from pipeline.live import stream  # imported here: stream re-exports this module's names
    from pipeline.spark import get_spark

    chosen = resolve_source(source)
    if not available_now and seconds is None:
        seconds = float("inf")
    spark = spark or get_spark()
    if stream.running_here():
        raise StreamError("the live query already runs in this process (the Live page?)")
    lock = ProcessLock(checkpoint_root(chosen), chosen)
    lock.acquire()
    started = time.monotonic()
    done: list[BatchReport] = []

    def record(report: BatchReport) -> None:
        if not report.failed:
            done.append(report)
        if progress is not None:
            progress(report)

    try:
        query, writer = start_query(
            spark, chosen, available_now, trigger_seconds, max_per_batch, fault, on_report=record
        )
        deadline = started + seconds if seconds is not None else None
        try:
            while query.isActive:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    query.awaitTermination(min(1.0, remaining) if remaining is not None else 1.0)
                except Exception:
                    break  # the query failed: reported below from query.exception()
        finally:
            if query.isActive:
                graceful_stop(query, writer)
        failure = query.exception()
        if failure is not None:
            raise StreamError(f"the live query failed: {short(failure)}")
    finally:
        lock.release()
    return RunSummary(
        source=chosen,
        batches=len(done),
        rows=sum(r.rows for r in done),
        quarantined=sum(r.quarantined for r in done),
        duplicates=sum(r.duplicates for r in done),
        late=sum(r.late for r in done),
        inserted=sum(r.inserted for r in done),
        seconds=time.monotonic() - started,
    )
