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
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field

from pyspark.sql import SparkSession

from pipeline import catalog, lake, storage
from pipeline.config import CACHE_DIR, SOURCES, settings, spark_settings
from pipeline.registry import Context, Step, StepFailed, StepOutcome, step_session, steps_for
from pipeline.silver import incremental
from pipeline.spark import SHORT_RUN_BYTES
from pipeline.spark import SNAPSHOT_PARTITIONS as SNAPSHOT_PARTITIONS_DEFAULT

Progress = Callable[[str, float], None]

# One declaration of the run records (pipeline/catalog.py), also used by the live query.
RUNS_SCHEMA = catalog.spark_schema("gold", "pipeline_runs")
DQ_SCHEMA = catalog.spark_schema("gold", "dq_results")


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
    spark_jobs: int | None = None  # None where Spark does not say (Spark Connect)
    delta_commits: int = 0


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


def _record(pool: ThreadPoolExecutor, ctx: Context, runs: list[tuple], dq: list[tuple]) -> None:
    """The run's bookkeeping, one commit per table, the independent ones at once.

    Silver's touched keys are committed before its refine state: a state that
    says a file is covered must never lack the keys that file touched (the
    fact table rebuilds from them when it failed in this run).
    """
    spark = ctx.spark
    tables = dict(ctx.deferred)
    state_table = ("silver", incremental.STATE_TABLE)
    state = tables.pop(state_table, None)
    touched = tables.pop(("silver", incremental.TOUCHED_TABLE), None)

    def append(layer: str, table: str, schema: object, rows: list[tuple]) -> None:
        lake.append_rows(spark, rows, schema, layer, table)

    def silver_state() -> None:
        if touched:
            append("silver", incremental.TOUCHED_TABLE, *touched)
        if state:
            append(*state_table, *state)

    jobs = [pool.submit(silver_state)]
    jobs += [pool.submit(append, layer, table, *entry) for (layer, table), entry in tables.items()]
    jobs.append(pool.submit(append, "gold", "pipeline_runs", RUNS_SCHEMA, runs))
    jobs.append(pool.submit(append, "gold", "dq_results", DQ_SCHEMA, dq))
    for job in jobs:
        job.result()


def dependencies(steps: Sequence[Step]) -> dict[str, set[str]]:
    """Each step's prerequisites among ``steps``: the steps writing a table it reads.

    The run order follows from the inputs (as dbt derives it from ``ref()``);
    a step whose producer is not in ``steps`` (``run silver`` alone) reads the
    table as it is.
    """
    producers: dict[str, str] = {}
    for step in steps:
        for table in step.outputs:
            producers[table] = step.name
    needs = {
        step.name: {producers[t] for t in step.inputs if t in producers} - {step.name}
        for step in steps
    }
    order: list[str] = []
    pending = dict(needs)
    while pending:
        ready = [name for name, deps in pending.items() if deps <= set(order)]
        if not ready:
            raise ValueError(f"the steps' inputs form a cycle: {sorted(pending)}")
        order.extend(ready)
        for name in ready:
            del pending[name]
    return needs


def parallelism() -> int:
    """Steps run at once. Their Spark jobs share the cores; what overlaps is each
    step's fixed cost (planning, Delta log reads, commits) with another's work."""
    return max(1, settings().run_parallelism)


def largest_first(steps: Sequence[Step]) -> list[Step]:
    """``steps`` (all ready), those whose output tables held the most rows first.

    With more steps ready than may run, the longest should start first: started
    last, it would finish alone on one core (longest-processing-time-first
    scheduling). The rows each step's tables held after the last run, by their
    Delta logs (``lake.logged_row_count``), stand for its length: at 1,000,000
    orders Gold starts with product_sales (2.1M rows), sales_orders and
    sales_cells, where the declaration order started daily_sales, category_sales
    and customer_rfm and left product_sales for last. Equal rows (a new lake, a
    remote one) keep the declaration order. A small lake's steps are a fraction of
    a second each, so the runner does not ask there (``run``).
    """

    def rows(step: Step) -> int:
        total = 0
        for ref in step.outputs:
            table = catalog.table_of(ref)
            total += lake.logged_row_count(table.layer, table.name) or 0
        return total

    return sorted(steps, key=rows, reverse=True)  # stable: ties keep their order


SMALL_LAKE_BYTES = 32 * 1024 * 1024  # landing files; 10,000 generated orders are about 3 MB


def landing_bytes() -> int:
    """Bytes of the landing files of every source: what a run's data amounts to."""
    landing = settings().landing
    return sum(
        storage.size_and_mtime(f)[0]
        for source in SOURCES
        for f in storage.list_files(storage.join(landing, source))
    )


def small_lake(landing: int | None = None) -> bool:
    """Whether the lake's landing files are under SMALL_LAKE_BYTES: each table then
    holds a few thousand rows, and a query's fixed cost outweighs its work."""
    return (landing_bytes() if landing is None else landing) < SMALL_LAKE_BYTES


def whole_stage_codegen(landing: int | None = None) -> bool:
    """Whether this run compiles its queries to Java (Spark's code generation).

    Compiling pays off over many rows and is a loss on a small lake, where
    each query's compile outweighs its work: a warm full run at 10,000 orders
    spent about a quarter of its JVM time generating, cleaning and compiling
    code, and took 17 % less time without whole-stage code generation and 15 %
    less again with expressions interpreted too (docs/decisions.md, "Run
    shape"). ``SHOPLAKE_CODEGEN`` = on | off (or ``spark.sql.codegen.wholeStage``
    in ``SHOPLAKE_SPARK_CONF``) overrides the choice by size.
    """
    mode = settings().codegen
    chosen = spark_settings().extra_conf.get("spark.sql.codegen.wholeStage")
    if mode == "auto" and chosen is not None:  # set by hand in SHOPLAKE_SPARK_CONF
        return chosen.strip().lower() == "true"
    if mode != "auto":
        return mode == "on"
    return not small_lake(landing)


def small_writes(landing: int | None = None) -> bool:
    """Whether this run's whole-table writes are committed by delta-rs (``lake.arrow_target``).

    On a small lake a table is a few thousand rows: Spark computes them, and
    collecting them as Arrow and committing with delta-rs costs hundredths of
    a second where Spark's Delta writer costs 0.6-0.9 s per table (docs/
    decisions.md, "Run shape"). ``SHOPLAKE_WRITER`` = spark | delta-rs forces it.
    A remote root is always written by Spark.
    """
    mode = settings().writer
    if mode != "auto":
        return mode == "delta-rs"
    return small_lake(landing)


BROADCAST_THRESHOLD = "spark.sql.autoBroadcastJoinThreshold"
DEFAULT_BROADCAST = "10MB"  # Spark's own default


def _compile_or_interpret(spark: SparkSession, landing: int | None = None) -> None:
    """Spark's code generation on or off for this run (``whole_stage_codegen``).

    Off: no whole-stage code, and expressions evaluated by Spark's interpreted
    implementations (``factoryMode=NO_CODEGEN``, the mode Spark's own test
    suites check against the generated code), so a small run compiles nothing.
    Adaptive execution goes with it: on a small lake it only splits each query
    into a job per shuffle stage to re-plan data that is small anyway (a warm
    10k run: 186 -> 104 jobs, 22.5 -> 19.7 s, docs/decisions.md "Run shape").
    So do joins broadcast by size: each broadcast is a Spark job of its own that
    collects a side of a few kilobytes to the driver, where joining it within the
    query's own shuffle costs less (a warm 10k run: 74 -> 64 jobs, 14.0 ->
    12.9 s). The joins the code asks to broadcast (``F.broadcast``) still are,
    and a threshold set in ``SHOPLAKE_SPARK_CONF`` holds at any size. The
    partitions follow the lake's size too (``partition_settings``).
    """
    on = whole_stage_codegen(landing)
    spark.conf.set("spark.sql.codegen.wholeStage", "true" if on else "false")
    spark.conf.set("spark.sql.codegen.factoryMode", "FALLBACK" if on else "NO_CODEGEN")
    spark.conf.set("spark.sql.adaptive.enabled", "true" if on else "false")
    chosen = spark_settings().extra_conf.get(BROADCAST_THRESHOLD)  # set by hand: kept
    spark.conf.set(BROADCAST_THRESHOLD, chosen or (DEFAULT_BROADCAST if on else "-1"))
    size = landing_bytes() if landing is None else landing
    for key, value in partition_settings(size < ONE_PARTITION_BYTES).items():
        spark.conf.set(key, value)


ONE_PARTITION_BYTES = SHORT_RUN_BYTES  # about 20,000 generated orders
SHUFFLE_PARTITIONS = "spark.sql.shuffle.partitions"
SNAPSHOT_PARTITIONS = "spark.databricks.delta.snapshotPartitions"


def partition_settings(small: bool) -> dict[str, str]:
    """A run's shuffle partitions and Delta log-replay partitions.

    ``small``: the landing files are under ONE_PARTITION_BYTES (a small step of a
    large lake counts too). Then one of each: a table of a few thousand rows needs no split,
    and every partition more is a task whose plan Spark serialises, ships and
    deserialises for a handful of rows; the run's steps, three at a time in
    threads, keep both cores busy. Warm 10,000-order full runs, alternated in one
    session (4 and 2 partitions against 1 and 1, four pairs after the warm-up):
    median 13.7 -> 12.4 s, JVM CPU 23.3 -> 19.8 s (docs/decisions.md, "Run shape").
    Not up to the small-lake size (32 MB): measured at 10,000 orders only, and
    Silver's chain of steps runs one step at a time, where one partition leaves a
    core idle once the data is no longer tiny.
    Otherwise the session's: ``SHOPLAKE_SHUFFLE_PARTITIONS`` (4 local, 32 on a
    cluster) and 2. A value set by hand (``SHOPLAKE_SHUFFLE_PARTITIONS``, or the
    key in ``SHOPLAKE_SPARK_CONF``) holds at any size.
    """
    chosen = spark_settings()
    shuffle = chosen.extra_conf.get(SHUFFLE_PARTITIONS)
    if shuffle is None:
        master = settings().spark_master or chosen.local_master
        configured = chosen.partitions(master.startswith("local"))
        shuffle = "1" if small and chosen.shuffle_partitions is None else str(configured)
    snapshot = chosen.extra_conf.get(SNAPSHOT_PARTITIONS)
    if snapshot is None:
        snapshot = "1" if small else SNAPSHOT_PARTITIONS_DEFAULT
    return {SHUFFLE_PARTITIONS: shuffle, SNAPSHOT_PARTITIONS: snapshot}


SMALL_STEP_ROWS = 50_000  # rows of a step's input tables, in all


def small_step(step: Step) -> bool:
    """Whether the step reads only tables of under SMALL_STEP_ROWS rows in all (by
    their logs): on a large lake it then runs as on a small one (``_small_session``).

    A 1,000,000-order lake still has small steps: silver.products (5,700 Bronze
    rows) took 3.6-6.0 s and 29-35 Spark jobs alone with the lake's settings, and
    1.3-1.4 s and 8 jobs with a small lake's (code generation and adaptive execution
    off, delta-rs writes; warm, one at a time), and in a run it takes two cores'
    time from the large steps beside it. Bronze steps read landing files, not
    tables: they follow the lake's size. A remote table's log gives no count.
    """
    tables = [ref for ref in step.inputs if ref.split(".", 1)[0] in catalog.LAYERS]
    if not step.inputs or len(tables) < len(step.inputs):
        return False
    total = 0
    for ref in tables:
        table = catalog.table_of(ref)
        rows = lake.logged_row_count(table.layer, table.name)
        if rows is None:
            return False
        total += rows
    return total < SMALL_STEP_ROWS


_lock_sessions = threading.Lock()
_small_sessions: weakref.WeakKeyDictionary[SparkSession, SparkSession] = weakref.WeakKeyDictionary()


def _small_session(spark: SparkSession) -> SparkSession:
    """A session of the same JVM, SparkContext and cache with a small lake's SQL
    settings (``_compile_or_interpret``), made once per session: SQL settings are
    a session's, and the large steps beside it keep theirs."""
    with _lock_sessions:
        child = _small_sessions.get(spark)
        if child is None:
            child = _small_sessions[spark] = spark.newSession()
    _compile_or_interpret(child, 0)
    return child


def _job_ids(spark: SparkSession, group: str) -> int | None:
    try:
        return len(spark.sparkContext.statusTracker().getJobIdsForGroup(group))
    except Exception:  # Spark Connect: no SparkContext, no job count
        return None


def _execute(
    ctx: Context, step: Step, run_id: str
) -> tuple[StepOutcome | None, str, str | None, dt.datetime, float, int | None, int]:
    """Run one step in the current thread; failures are returned, never raised.

    On a large lake a small step (``small_step``) gets a small lake's session and
    writers."""
    spark = ctx.session
    group = f"{run_id}/{step.name}"
    lake.current_step.set(group)
    step_session.set(None)
    lake.small_writes.set(ctx.small_writes)
    started, t0 = _now(), time.perf_counter()
    try:
        # A Spark Connect session has no SparkContext: the step fails here, saying so
        # (the batch pipeline needs a classic session: README "Running on a cluster").
        spark.sparkContext.setJobGroup(group, step.name, interruptOnCancel=True)
        if not ctx.small_writes and small_step(step):
            step_session.set(_small_session(spark))
            lake.small_writes.set(small_writes(0))
        outcome: StepOutcome | None = step.run(ctx)
        fired = [c for c in outcome.checks if c.count.action == "fail" and c.count.rows_failed]
        status, error = "succeeded", None
        if fired:
            status = "failed"
            error = "; ".join(
                f"{c.layer}.{c.table}: rule {c.count.rule} failed on {c.count.rows_failed} rows"
                for c in fired
            )
    except StepFailed as exc:  # a fail rule: its checks are still recorded
        outcome, status, error = exc.outcome, "failed", f"{step.name}: {_message(exc)}"
    except Exception as exc:  # recorded and reported; the run stops here
        reads = ", ".join(step.inputs)
        error = f"{step.name}: {_message(exc)} (the step reads {reads})"
        outcome, status = None, "failed"
    seconds = time.perf_counter() - t0
    return outcome, status, error, started, seconds, _job_ids(spark, group), lake.commits[group]


def return_heap(spark: SparkSession) -> None:
    """Let the driver's JVM give back the heap a large run grew.

    The throughput collector grows the heap to its 2 GB maximum during a large
    run and keeps it committed: the next run started with it, and an
    increment's delta-rs MERGEs then added their memory in the Python process
    beside it (4.55-4.58 GB for both at 1,000,000 orders). One full collection
    with the size policy on (``-XX:+UseAdaptiveSizePolicyWithSystemGC``,
    pipeline/spark.py: GC_JVM_OPTIONS) shrinks the heap to what the session
    still holds, in about 0.4 s (docs/decisions.md, "After a run on a large lake").
    """
    spark.sparkContext._jvm.java.lang.System.gc()


def run(
    target: str = "all",
    spark: SparkSession | None = None,
    progress: Progress | None = None,
    full_refresh: bool = False,
) -> RunResult:
    """Run a layer (or all) and return what happened; failures are results, not tracebacks.

    Steps start as soon as the steps they read from have finished, several at
    once (``parallelism``), on a large lake the largest first (``largest_first``);
    after a failure no new step starts, the running
    ones finish and the rest are skipped. The run's gold.pipeline_runs and
    gold.dq_results rows are written once, at its end (also when a step
    failed); a run killed midway leaves none. ``progress(message, fraction)``
    is called from the calling thread: "<step> ..." when a step starts,
    "<step> <status>" when it ends (a succeeded step adds " · N rows": the
    rows it left in its table), fraction = finished steps / all steps.
    """
    steps = steps_for(target)
    if spark is None:
        from pipeline.spark import get_spark

        spark = get_spark()
    needs = dependencies(steps)
    run_id = _now().strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    done: dict[str, StepResult] = {}
    records: dict[str, tuple[tuple, list[tuple]]] = {}
    tell = progress or (lambda message, fraction: None)
    with run_lock():
        landing = landing_bytes()
        _compile_or_interpret(spark, landing)
        ctx = Context(spark, run_id, _now(), full_refresh, small_writes=small_writes(landing))
        failed: str | None = None
        running: dict[Future, Step] = {}
        with ThreadPoolExecutor(parallelism(), thread_name_prefix="shoplake-step") as pool:
            while True:
                if not failed:
                    completed = set(done)
                    taken = {s.name for s in running.values()} | completed
                    ready = [s for s in steps if s.name not in taken and needs[s.name] <= completed]
                    free = max(0, parallelism() - len(running))
                    if len(ready) > free and not ctx.small_writes:
                        ready = largest_first(ready)
                    for step in ready[:free]:
                        tell(f"{step.name} ...", len(done) / len(steps))
                        running[pool.submit(_execute, ctx, step, run_id)] = step
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    step = running.pop(future)
                    outcome, status, error, began, seconds, jobs, commits = future.result()
                    records[step.name] = _records(
                        run_id, step, began, _now(), status, outcome, error
                    )
                    o = outcome or StepOutcome()
                    done[step.name] = StepResult(
                        step.name,
                        status,
                        o.rows_in,
                        o.rows_out,
                        o.rows_quarantined,
                        seconds,
                        error,
                        o.reconciliation,
                        o.notes,
                        jobs,
                        commits,
                    )
                    written = f" · {o.rows_out:,} rows" if status == "succeeded" else ""
                    tell(f"{step.name} {status}{written}", len(done) / len(steps))
                    if status == "failed" and not failed:
                        failed = error
            results = [done.get(s.name) or StepResult(s.name, "skipped") for s in steps]
            ordered = [records[s.name] for s in steps if s.name in records]
            runs = [r for r, _ in ordered]
            _record(pool, ctx, runs, [row for _, rows in ordered for row in rows])
        if not small_lake(landing):
            return_heap(spark)
        tell("done" if not failed else "failed", 1.0)
    return RunResult(run_id, "failed" if failed else "succeeded", results, failed)
