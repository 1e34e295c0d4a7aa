"""Run steps: one run at a time per lake, each step timed, counted and recorded.

A run takes an exclusive file lock for the lake, so two browser sessions
(or the app and the command line) pressing run at once cannot interleave
writes: the second is told a run is in progress. The lock file is under a
local lake root, and in CACHE_DIR/locks for a URL root (pipeline/storage).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pyspark.sql import SparkSession
from pyspark.sql import types as T

from pipeline import lake, storage
from pipeline.config import CACHE_DIR, settings
from pipeline.registry import Context, Step, StepFailed, StepOutcome, steps_for

Progress = Callable[[str, float], None]

RUNS_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType()),
        T.StructField("step", T.StringType()),
        T.StructField("started_at", T.TimestampType()),
        T.StructField("finished_at", T.TimestampType()),
        T.StructField("status", T.StringType()),
        T.StructField("rows_in", T.LongType()),
        T.StructField("rows_out", T.LongType()),
        T.StructField("rows_quarantined", T.LongType()),
        T.StructField("error", T.StringType()),
        T.StructField("reconciliation", T.MapType(T.StringType(), T.LongType())),
    ]
)

DQ_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType()),
        T.StructField("layer", T.StringType()),
        T.StructField("table", T.StringType()),
        T.StructField("rule", T.StringType()),
        T.StructField("action", T.StringType()),
        T.StructField("rows_checked", T.LongType()),
        T.StructField("rows_failed", T.LongType()),
        T.StructField("pass_rate", T.DoubleType()),
        T.StructField("checked_at", T.TimestampType()),
    ]
)


class RunInProgressError(RuntimeError):
    pass


@dataclass
class StepResult:
    step: str
    status: str
    rows_in: int = 0
    rows_out: int = 0
    rows_quarantined: int = 0
    seconds: float = 0.0
    error: str | None = None
    reconciliation: dict[str, int] | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    run_id: str
    status: str
    steps: list[StepResult]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


@contextmanager
def run_lock() -> Iterator[None]:
    """One run per lake: a POSIX lock, on a local file even for a URL root (one per machine)."""
    path = storage.lock_file(settings().lake, ".run.lock", CACHE_DIR / "locks")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "w")  # noqa: SIM115 - held for the whole run
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RunInProgressError("a pipeline run is already in progress on this lake") from exc
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _message(exc: BaseException) -> str:
    """One readable line: the JVM's own message, with lake paths shown as table names."""
    java = getattr(exc, "java_exception", None)
    text = str(java.getMessage()) if java is not None else str(exc)
    text = text.strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    lake_root = settings().lake
    root = re.escape(str(storage.local_path(lake_root) or lake_root))
    first = re.sub(rf"(file:)?(//)?{root}/(bronze|silver|gold)/([A-Za-z_]+)", r"\3.\4", first)
    return first[:600]


def _records(
    run_id: str,
    step: Step,
    started: dt.datetime,
    finished: dt.datetime,
    status: str,
    outcome: StepOutcome | None,
    error: str | None,
) -> tuple[tuple, list[tuple]]:
    """One gold.pipeline_runs row and the step's gold.dq_results rows."""
    o = outcome or StepOutcome()
    run_row = (
        run_id,
        step.name,
        started,
        finished,
        status,
        o.rows_in,
        o.rows_out,
        o.rows_quarantined,
        error,
        o.reconciliation,
    )
    dq_rows = [
        (
            run_id,
            c.layer,
            c.table,
            c.count.rule,
            c.count.action,
            c.count.rows_checked,
            c.count.rows_failed,
            c.count.pass_rate,
            finished,
        )
        for c in o.checks
    ]
    return run_row, dq_rows


def _record(spark: SparkSession, runs: list[tuple], dq: list[tuple]) -> None:
    """Two commits for the whole run: per-step commits cost about a second each."""
    if runs:
        lake.append(lake.rows_frame(spark, runs, RUNS_SCHEMA), "gold", "pipeline_runs")
    if dq:
        lake.append(lake.rows_frame(spark, dq, DQ_SCHEMA), "gold", "dq_results")


def run(
    target: str = "all",
    spark: SparkSession | None = None,
    progress: Progress | None = None,
    full_refresh: bool = False,
) -> RunResult:
    """Run a layer (or all) and return what happened; failures are results, not tracebacks.

    The run's gold.pipeline_runs and gold.dq_results rows are written once, at
    its end (also when a step failed); a run killed midway leaves none.
    """
    steps = steps_for(target)
    if spark is None:
        from pipeline.spark import get_spark

        spark = get_spark()
    run_id = _now().strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    results: list[StepResult] = []
    with run_lock():
        ctx = Context(spark, run_id, _now(), full_refresh)
        failed: str | None = None
        runs: list[tuple] = []
        dq: list[tuple] = []
        for i, step in enumerate(steps):
            if failed:
                results.append(StepResult(step.name, "skipped"))
                continue
            if progress:
                progress(f"{step.name} ...", i / len(steps))
            spark.sparkContext.setJobGroup(run_id, step.name, interruptOnCancel=True)
            started, t0 = _now(), time.perf_counter()
            try:
                outcome = step.run(ctx)
                fired = [
                    c for c in outcome.checks if c.count.action == "fail" and c.count.rows_failed
                ]
                status, error = "succeeded", None
                if fired:
                    status = "failed"
                    error = "; ".join(
                        f"{c.layer}.{c.table}: rule {c.count.rule} failed on "
                        f"{c.count.rows_failed} rows"
                        for c in fired
                    )
            except StepFailed as exc:  # a fail rule: its checks are still recorded
                outcome, status, error = exc.outcome, "failed", f"{step.name}: {_message(exc)}"
            except Exception as exc:  # recorded and reported; the run stops here
                reads = ", ".join(step.inputs)
                error = f"{step.name}: {_message(exc)} (the step reads {reads})"
                outcome, status = None, "failed"
            seconds = time.perf_counter() - t0
            run_row, dq_rows = _records(run_id, step, started, _now(), status, outcome, error)
            runs.append(run_row)
            dq.extend(dq_rows)
            o = outcome or StepOutcome()
            results.append(
                StepResult(
                    step.name,
                    status,
                    o.rows_in,
                    o.rows_out,
                    o.rows_quarantined,
                    seconds,
                    error,
                    o.reconciliation,
                    o.notes,
                )
            )
            if status == "failed":
                failed = error
        _record(spark, runs, dq)
        if progress:
            progress("done" if not failed else "failed", 1.0)
    return RunResult(run_id, "failed" if failed else "succeeded", results, failed)
