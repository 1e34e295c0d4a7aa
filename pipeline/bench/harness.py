"""The benchmark harness behind `python -m pipeline bench [--quick]`.

Why it is built this way:

- Every measurement runs in a fresh worker subprocess. Session start is then
  the first ``get_spark()`` of a new process, timed on its own; peak memory is
  that of one task's whole process tree (Python plus the JVM it starts), read
  from psutil when installed, else from /proc; and nothing one measurement
  warmed up flatters the next. The one exception is deliberate: the largest
  size's worker warms its session on a scratch lake (the issue times the full
  run in a warm session) and, in the full mode, with one untimed full run of
  the same files (a session's first large run compiles the code the later
  ones reuse; its time is reported beside); a run with nothing new on the same
  files and the incremental run follow the full run in that session, as in
  the app.
- A ratio against DuckDB is only honest when both engines did the same work,
  so after each Spark run the harness compares Spark's Gold tables with the
  DuckDB baseline's (``pipeline.bench.duckdb_baseline``) on the same landing
  files and records the verdict next to the times.
- `make bench` has to finish in under 20 minutes on a shared 2-core machine.
  Mandatory measurements run once; repetitions are added only while the time
  budget still allows them, and every figure says how many runs it is the
  median of (with min and max), so a cut repetition is visible, not hidden.
- Pages and the live stream are measured by scripts other parts of the
  project own (scripts/bench_pages.py, scripts/bench_stream.py), through
  their entry points (``page_seconds``, ``bench_stream``) and result keys;
  when one is missing its figures are null and the notes say so.
- A small lake (10,000 orders) has a section of its own: there a run's cost
  is its fixed cost (job starts, Delta log reads, commits), so each run and
  step reports its Spark jobs and Delta commits beside its seconds, and the
  figures recorded before the run-cost work (``bench/results/before-run-cost.json``,
  made with ``pipeline.bench.run_cost`` from a checkout of the old code) are
  shown beside them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.util
import json
import os
import pickle
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import PROJECT_ROOT, settings, spark_settings

RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
REPORT = PROJECT_ROOT / "BENCHMARKS.md"
BEFORE = RESULTS_DIR / "before-run-cost.json"  # the small-lake figures before the run-cost work
SCRIPTS = PROJECT_ROOT / "scripts"
LAYERS = ("bronze", "silver", "gold")

REQUIRED_KEYS = (
    "session_start_seconds",
    "full_seconds",
    "duckdb_seconds",
    "full_ratio_vs_duckdb",
    "incremental_seconds",
    "incremental_fraction",
    "dq_overhead_fraction",
    "page_seconds_max",
    "stream_events_per_second",
    "stream_latency_p95_seconds",
    "peak_memory_gb",
)


@dataclass(frozen=True)
class Plan:
    mode: str
    sizes: tuple[int, ...]
    spark_reps: dict[int, int]  # wanted full runs per size (the first is mandatory)
    duckdb_reps: int
    dq_orders: int  # the lake on which Silver runs with and without expectations
    dq_pairs: int  # (off, on) pairs, run as off-on-on-off...: warm-up hits both alike
    budget_seconds: float
    batches: int = 3
    warmup_orders: int = 2_000  # the largest size's worker runs these first, untimed
    # untimed full runs of the largest lake before its timed one, in the same session: a
    # session's first large run compiles the code every later one reuses (its seconds are
    # still reported, as "the session's first run at this size")
    large_settle_runs: int = 0
    small_orders: int = 10_000  # the small-lake section (0: none)
    small_fresh_reps: int = 3  # `python -m pipeline run all` processes, taken first
    small_warm_pairs: int = 3  # full + 1 % incremental pairs in one warm session
    small_settle_pairs: int = 1  # untimed pairs at the small size before those (run_cost)
    small_duckdb_reps: int = 3
    test_suite: bool = False  # `make test`, timed last (issue 14's target 5)
    test_suite_timeout: float = 40 * 60.0
    seed: int = 42
    defect_rate: float = 0.02
    worker_timeout: float = 1800.0

    @property
    def largest(self) -> int:
        return max(self.sizes)


QUICK = Plan(
    "quick",
    (5_000, 10_000),
    {5_000: 1, 10_000: 1},
    1,
    5_000,
    1,
    900.0,
    warmup_orders=500,
    small_fresh_reps=1,
    small_warm_pairs=1,
    small_settle_pairs=0,
    small_duckdb_reps=1,
)
FULL = Plan(
    "full",
    (100_000, 300_000, 1_000_000),
    {100_000: 1, 300_000: 1, 1_000_000: 1},  # the largest: one run, then its increment
    3,
    100_000,
    2,
    18 * 60.0,
    large_settle_runs=1,
    test_suite=True,
)


# --------------------------------------------------------------------------- memory


_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds so far) for every process, from /proc."""
    table: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS)
    return table


def _statm(pid: int) -> tuple[int, ...]:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return tuple(int(v) for v in handle.read().split())
    except (OSError, ValueError):
        return ()


def _program(pid: int) -> tuple[str, bytes] | None:
    """The program a process runs and its arguments; None once it has gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return os.readlink(f"/proc/{pid}/exe"), handle.read()
    except OSError:
        return None


def _copy_of_parent(pid: int, parent: int) -> bool:
    """Whether ``pid`` runs its parent's very program and arguments: a vfork or fork
    that has not yet started a program of its own, whose pages are the parent's."""
    mine = _program(pid)
    return mine is not None and mine == _program(parent)


def tree_sample(pid: int) -> tuple[int, dict[int, float]]:
    """Resident bytes of a process and all its descendants (the JVM included), and the
    CPU seconds each of them has used so far.

    A child that still shares its parent's address space is not counted again:
    the JVM starts commands (Hadoop's local file system runs a few) with vfork,
    and until the exec the child's statm is the parent's, so a sample taken
    then counted the 2 GB JVM twice (transient peaks of 3.8-4.9 GB in runs whose
    memory stayed near 2.6 GB). Such a child is known by running the parent's
    program with the parent's arguments (``_copy_of_parent``), not by equal
    memory figures: read a moment after the parent's, they need not match, and
    the JVM could be counted twice again (one bench's unexplained 5.52 GB, where
    runs peak near 3.8, did not recur in a rerun sampled both ways). A child
    forked without an exec of its own shares its pages with the parent until
    they are written, so it is left out too.
    """
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0, {}
        total, cpu = 0, {}
        for p in procs:
            try:
                if p is root or not _copy_of_parent(p.pid, p.ppid()):
                    total += p.memory_info().rss
                times = p.cpu_times()
                cpu[p.pid] = times.user + times.system
            except psutil.Error:
                pass
        return total, cpu
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    total, cpu, todo = 0, {}, [pid]
    while todo:
        current = todo.pop()
        statm = _statm(current)
        parent = table.get(current, (0, 0.0))[0]
        if len(statm) > 1 and (current == pid or not _copy_of_parent(current, parent)):
            total += statm[1] * _PAGE
        todo.extend(children.get(current, []))
        if current in table:
            cpu[current] = table[current][1]
    return total, cpu


def tree_rss(pid: int) -> int:
    return tree_sample(pid)[0]


class PeakSampler(threading.Thread):
    """Samples a process tree until stopped: peak RSS, and CPU seconds per process.

    CPU time is what a busy shared machine cannot inflate much, so it is kept
    beside the wall-clock times (at most one interval of a process is missed).
    """

    def __init__(self, pid: int, interval: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0
        self.cpu: dict[int, float] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss, cpu = tree_sample(self.pid)
            self.peak = max(self.peak, rss)
            for pid, seconds in cpu.items():
                self.cpu[pid] = max(self.cpu.get(pid, 0.0), seconds)
            self._stop_event.wait(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join(timeout=5)
        return self.peak

    @property
    def cpu_seconds(self) -> float:
        return round(sum(self.cpu.values()), 2)


# --------------------------------------------------------------------------- statistics


def stats(values: Sequence[float]) -> dict[str, Any] | None:
    values = [float(v) for v in values if v is not None]
    if not values:
        return None
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "runs": len(values),
        "values": [round(v, 3) for v in values],
    }


def median(s: dict | None) -> float | None:
    return None if not s else s["median"]


def ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, digits)


def gb(n_bytes: float | None) -> float | None:
    return None if n_bytes is None else round(n_bytes / 1024**3, 3)


# --------------------------------------------------------------------------- workers


def _load_script(name: str):
    path = SCRIPTS / f"{name}.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location(f"shoplake_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(PROJECT_ROOT))
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _timed_run(spark, target: str, kind: str) -> dict:
    """One timed run: seconds, CPU, Spark jobs and Delta commits, for the run and per step."""
    from pipeline.bench.run_cost import delta_commits, jobs_started
    from pipeline.runner import run

    lake = Path(os.environ["SHOPLAKE_LAKE"])
    commits0, jobs0 = delta_commits(lake), jobs_started(spark)
    cpu0 = sum(tree_sample(os.getpid())[1].values())
    t0 = time.perf_counter()
    result = run(target, spark=spark)
    seconds = time.perf_counter() - t0
    cpu = sum(tree_sample(os.getpid())[1].values()) - cpu0
    jobs1 = jobs_started(spark)
    layers = {
        layer: round(sum(s.seconds for s in result.steps if s.step.startswith(layer + ".")), 3)
        for layer in LAYERS
    }
    return {
        "kind": kind,
        "target": target,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 2),  # this run's, the JVM's included
        "ok": result.ok,
        "error": result.error,
        "layers": {k: v for k, v in layers.items() if target in ("all", k)},
        # the run's own, its bookkeeping outside the steps included
        "jobs": None if None in (jobs0, jobs1) else jobs1 - jobs0,
        "commits": delta_commits(lake) - commits0,
        "steps": {
            s.step: {
                "seconds": round(s.seconds, 3),
                "jobs": s.spark_jobs,
                "commits": s.delta_commits,
            }
            for s in result.steps
        },
        "quarantined": sum(s.rows_quarantined for s in result.steps if s.step.startswith("silver")),
        # Gold steps whose inputs were as their last build left them (not recomputed)
        "gold_kept": sum(
            any("not recomputed" in n for n in s.notes)
            for s in result.steps
            if s.step.startswith("gold.")
        ),
        "rows_in": {s.step: s.rows_in for s in result.steps},
    }


def task_generate(p: dict) -> dict:
    from pipeline.demo import generate_demo

    t0 = time.perf_counter()
    manifests = generate_demo(
        orders=p["orders"],
        batches=p.get("batches", 3),
        seed=p.get("seed", 42),
        defect_rate=p.get("defect_rate", 0.02),
        append=p.get("append", False),
    )
    rows: dict[str, int] = {}
    for m in manifests:
        for source, n in m.get("rows", {}).items():
            rows[source] = rows.get(source, 0) + n
    return {"seconds": round(time.perf_counter() - t0, 3), "rows": rows}


def _reset_silver() -> None:
    from pipeline.config import settings

    shutil.rmtree(settings().lake_path / "silver", ignore_errors=True)


def _warm_up(spark, orders: int, seed: int) -> float:
    """Run the whole pipeline once on a small scratch lake, untimed.

    The issue times the full run "in a warm SparkSession": a fresh JVM spends
    its first run loading and compiling Spark's and Delta's code (a 5,000-order
    run took 134 s in a fresh process and 89 s in a warm one), which is the
    session's cost, not the data's. The app keeps its session warm the same way.
    """
    from pipeline.demo import generate_demo
    from pipeline.runner import run

    lake = os.environ["SHOPLAKE_LAKE"]
    scratch = tempfile.mkdtemp(prefix="shoplake-bench-warmup-")
    t0 = time.perf_counter()
    os.environ["SHOPLAKE_LAKE"] = scratch
    try:
        generate_demo(orders=orders, batches=1, seed=seed)
        result = run("all", spark=spark)
        if not result.ok:
            raise RuntimeError(f"the warm-up run failed: {result.error}")
    finally:
        os.environ["SHOPLAKE_LAKE"] = lake
        shutil.rmtree(scratch, ignore_errors=True)
    return round(time.perf_counter() - t0, 3)


def task_spark(p: dict) -> dict:
    t0 = time.perf_counter()
    from pipeline.spark import get_spark

    imported = time.perf_counter() - t0
    t0 = time.perf_counter()
    spark = get_spark("shoplake-bench")
    out: dict[str, Any] = {
        "session_start_seconds": round(time.perf_counter() - t0, 3),
        "import_seconds": round(imported, 3),
        "runs": [],
    }
    if p.get("warmup_orders"):
        out["warmup_seconds"] = _warm_up(spark, p["warmup_orders"], p.get("seed", 42))
    from pipeline.demo import reset_batch_tables

    for _ in range(p.get("settle_runs", 0)):  # the same files, then the tables dropped
        out.setdefault("settle", []).append(_timed_run(spark, "all", "settle"))
        reset_batch_tables()
    if p.get("reset"):
        reset_batch_tables()
    if p.get("full"):
        out["runs"].append(_timed_run(spark, "all", "full"))
        if p.get("compare_with"):  # before an append changes Gold
            lake = Path(os.environ["SHOPLAKE_LAKE"])
            out["equal"] = check_equal(lake, Path(p["compare_with"]))
    if p.get("rerun"):  # the same files again: what a run with nothing new costs
        out["nothing_new"] = _timed_run(spark, "all", "nothing_new")
    if p.get("append_orders"):
        from pipeline.demo import generate_demo

        t0 = time.perf_counter()
        generate_demo(orders=p["append_orders"], seed=p.get("seed", 42), append=True)
        out["append_generate_seconds"] = round(time.perf_counter() - t0, 3)
        out["runs"].append(_timed_run(spark, "all", "incremental"))
    for mode in p.get("dq_modes", []):  # "warmup" runs with expectations and is not counted
        _reset_silver()
        os.environ["SHOPLAKE_EXPECTATIONS"] = "on" if mode == "warmup" else mode
        out["runs"].append(_timed_run(spark, "silver", f"silver_expectations_{mode}"))
    os.environ.pop("SHOPLAKE_EXPECTATIONS", None)
    return out


def task_duckdb(p: dict) -> dict:
    from pipeline.bench.duckdb_baseline import run_baseline

    database = Path(p["database"])
    for leftover in (database, database.with_name(database.name + ".wal")):
        leftover.unlink(missing_ok=True)
    t0 = time.perf_counter()
    result = run_baseline(p["landing"], database=database)
    seconds = time.perf_counter() - t0
    if p.get("tables_out"):
        with open(p["tables_out"], "wb") as handle:
            pickle.dump(result.tables, handle)
    for leftover in (database, database.with_name(database.name + ".wal")):
        leftover.unlink(missing_ok=True)
    return {
        "seconds": round(seconds, 3),
        "layers": {k: round(v, 3) for k, v in result.seconds.items()},
        "reconciliation": result.reconciliation,
    }


def task_pages(p: dict) -> dict:
    """scripts/bench_pages.py's ``page_seconds()``: median rerun seconds per page."""
    module = _load_script("bench_pages")
    if module is None:
        return {"available": False}
    return {"available": True, "entry": "page_seconds", "result": module.page_seconds()}


def task_stream(p: dict) -> dict:
    """scripts/bench_stream.py's ``bench_stream(quick)``: throughput and latency."""
    module = _load_script("bench_stream")
    if module is None:
        return {"available": False}
    result = module.bench_stream(quick=p["quick"])
    return {"available": True, "entry": "bench_stream", "result": result}


def task_run_cost(p: dict) -> dict:
    """Warm full/incremental pairs on the small lake's landing files (``run_cost.measure``)."""
    from pipeline.bench.run_cost import measure

    return measure(
        p["orders"],
        append_share=0.01,
        warm=True,
        seed=p.get("seed", 42),
        landing=Path(p["landing"]),
        pairs=p["pairs"],
        budget_seconds=p.get("budget_seconds"),
        settle_pairs=p.get("settle_pairs", 0),
    )


TASKS: dict[str, Callable[[dict], dict]] = {
    "generate": task_generate,
    "spark": task_spark,
    "duckdb": task_duckdb,
    "pages": task_pages,
    "stream": task_stream,
    "run_cost": task_run_cost,
}


def worker_main(argv: Sequence[str]) -> int:
    task, params, out = argv
    result = TASKS[task](json.loads(params))
    Path(out).write_text(json.dumps(result, default=str))
    return 0


@dataclass
class WorkerResult:
    ok: bool
    data: dict
    wall_seconds: float
    peak_bytes: int
    error: str | None = None
    cpu_seconds: float | None = None


class WorkerFailed(RuntimeError):
    pass


def _stop_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def run_worker(
    task: str, params: dict, env: dict[str, str], work: Path, label: str, timeout: float
) -> WorkerResult:
    """Run one task in a fresh interpreter, sampling its process tree's memory."""
    out = work / f"{label}.json"
    log = work / f"{label}.log"
    cmd = [sys.executable, "-m", "pipeline.bench.harness", "worker", task, json.dumps(params)]
    cmd.append(str(out))
    t0 = time.perf_counter()
    with open(log, "wb") as log_handle:
        proc = subprocess.Popen(
            cmd,
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: a timeout stops the JVM too
        )
        sampler = PeakSampler(proc.pid)
        sampler.start()
        error = None
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            code, error = -1, f"timed out after {timeout:.0f} s"
        except BaseException:  # Ctrl-C reaches only our group: stop the worker's too
            _stop_group(proc)
            raise
        finally:
            peak = sampler.stop()
    wall = time.perf_counter() - t0
    if code == 0 and out.is_file():
        return WorkerResult(
            True, json.loads(out.read_text()), wall, peak, None, sampler.cpu_seconds
        )
    tail = log.read_text(errors="replace").strip().splitlines()[-15:]
    error = (error or f"exit code {code}") + ("\n" + "\n".join(tail) if tail else "")
    return WorkerResult(False, {}, wall, peak, error, sampler.cpu_seconds)


# --------------------------------------------------------------------------- the benchmark


@dataclass
class Bench:
    plan: Plan
    work: Path
    env: dict[str, str]
    started: float = field(default_factory=time.perf_counter)
    notes: list[str] = field(default_factory=list)
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def say(self, message: str) -> None:
        minutes, seconds = divmod(int(self.elapsed()), 60)
        self.log(f"[{minutes:2d}:{seconds:02d}] {message}")

    def affordable(self, estimate: float, reserve: float = 0.0) -> bool:
        return self.elapsed() + estimate + reserve <= self.plan.budget_seconds

    def lake_env(self, lake: Path) -> dict[str, str]:
        return {**self.env, "SHOPLAKE_LAKE": str(lake)}

    def worker(self, task: str, params: dict, lake: Path | None, label: str) -> WorkerResult:
        env = self.lake_env(lake) if lake else dict(self.env)
        result = run_worker(task, params, env, self.work, label, self.plan.worker_timeout)
        if not result.ok:
            self.say(f"{label} FAILED: {result.error.splitlines()[0] if result.error else ''}")
        return result


def _spark_gold(lake: Path, tables: Sequence[str]) -> dict[str, Any]:
    from deltalake import DeltaTable

    out = {}
    for name in tables:
        out[name] = DeltaTable(str(lake / "gold" / name)).to_pyarrow_table().to_pandas()
    return out


def check_equal(lake: Path, duck_tables_file: Path, tables: Sequence[str] = ()) -> dict:
    """Spark's Gold (read with delta-rs) against the DuckDB baseline's, table by table.

    By default every Gold table the baseline defines (``duckdb_baseline.GOLD_TABLES``,
    named by pipeline/catalog.py).
    """
    from pipeline.bench.duckdb_baseline import GOLD_TABLES, compare

    tables = tuple(tables) or GOLD_TABLES
    try:
        with open(duck_tables_file, "rb") as handle:
            duck = pickle.load(handle)
        spark = _spark_gold(lake, tables)
    except Exception as exc:  # a missing table is a failed check, not a crash
        return {"equal": False, "error": f"{type(exc).__name__}: {exc}"}
    result = {name: compare(name, spark[name], duck[name]) for name in tables}
    for r in result.values():
        r.pop("columns", None)
    return {"equal": all(r["equal"] for r in result.values()), "tables": result}


def _layer_stats(runs: Sequence[dict]) -> dict[str, dict | None]:
    return {layer: stats([r["layers"].get(layer) for r in runs]) for layer in LAYERS}


def _spark_full(
    bench: Bench, size: int, lake: Path, rep: int, reset: bool, extra: dict | None = None
) -> dict | None:
    """A full run in a fresh worker; ``extra`` adds a warm-up before it, an equality
    check and an incremental run after it (the largest size: see ``measure``)."""
    label = f"spark-full-{size}-{rep}"
    warm = bool(extra and extra.get("warmup_orders"))
    how = "fresh process, warmed up first" if warm else "fresh process"
    bench.say(f"{size:,} orders: ShopLake full run {rep} ({how}) ...")
    res = bench.worker("spark", {"full": True, "reset": reset, **(extra or {})}, lake, label)
    if not res.ok:
        bench.notes.append(f"{label} failed: {res.error}")
        return None
    run = res.data["runs"][0]
    if not run["ok"]:
        bench.notes.append(f"{label}: the run failed: {run['error']}")
        return None
    bench.say(
        f"{size:,} orders: ShopLake {run['seconds']:.1f} s "
        f"(session start {res.data['session_start_seconds']:.1f} s"
        + (f", warm-up {res.data['warmup_seconds']:.1f} s" if warm else "")
        + f"), peak {gb(res.peak_bytes):.2f} GB"
    )
    return {
        **run,
        "session": "warmed" if warm else "fresh",
        "warmup_seconds": res.data.get("warmup_seconds"),
        "settle": res.data.get("settle") or [],
        "session_start_seconds": res.data["session_start_seconds"],
        "peak": res.peak_bytes,
        "cpu": run["cpu_seconds"],
        "_equal": res.data.get("equal"),
        "_incremental": res.data["runs"][1] if len(res.data["runs"]) > 1 else None,
        "_append_generate_seconds": res.data.get("append_generate_seconds"),
        "_nothing_new": res.data.get("nothing_new"),
    }


def _first_run(spark_runs: list[dict]) -> dict | None:
    """The session's first full run at this size, run before the timed one on the same
    files: it compiles the code the timed run reuses, so its figures are shown beside."""
    settle = (spark_runs[0].get("settle") or []) if spark_runs else []
    if not settle:
        return None
    run = settle[0]
    return {"seconds": run["seconds"], "cpu_seconds": run["cpu_seconds"], "ok": run["ok"]}


def _duckdb(
    bench: Bench, size: int, lake: Path, rep: int | str, tables_out: Path | None
) -> dict | None:
    label = f"duckdb-{size}-{rep}"
    params = {"landing": str(lake / "landing"), "database": str(bench.work / f"{label}.duckdb")}
    if tables_out:
        params["tables_out"] = str(tables_out)
    res = bench.worker("duckdb", params, None, label)
    if not res.ok:
        bench.notes.append(f"{label} failed: {res.error}")
        return None
    bench.say(f"{size:,} orders: DuckDB {res.data['seconds']:.1f} s, peak {gb(res.peak_bytes)} GB")
    return {**res.data, "peak": res.peak_bytes, "cpu": res.cpu_seconds}


def measure(plan: Plan, work: Path, env: dict[str, str], log=None) -> dict:
    """Run every measurement of the plan; returns latest.json's content."""
    bench = Bench(plan, work, env)
    if log:
        bench.log = log
    load_start = os.getloadavg()
    session_starts: list[float] = []
    scaling: list[dict] = []
    equality: dict[str, Any] = {}
    incremental: dict[str, Any] = {}
    dq: dict[str, Any] = {}
    largest_runs: list[dict] = []
    largest_duck: list[dict] = []
    last_full_estimate = 0.0
    dq_lake: Path | None = None
    dq_full: dict | None = None
    small = _small_lake(bench)

    for size in plan.sizes:
        lake = work / f"lake-{size}"
        bench.say(f"{size:,} orders: generating the landing files ...")
        gen = bench.worker(
            "generate",
            {
                "orders": size,
                "batches": plan.batches,
                "seed": plan.seed,
                "defect_rate": plan.defect_rate,
            },
            lake,
            f"generate-{size}",
        )
        if not gen.ok:
            raise WorkerFailed(f"generating {size:,} orders failed: {gen.error}")
        bench.say(f"{size:,} orders: generated in {gen.data['seconds']:.1f} s: {gen.data['rows']}")

        duck_runs: list[dict] = []
        tables_file = work / f"duckdb-gold-{size}.pickle"
        for rep in range(1, plan.duckdb_reps + 1):
            if rep > 1 and not bench.affordable(
                duck_runs[-1]["seconds"] * 2 + 10, reserve=last_full_estimate
            ):
                bench.notes.append(f"DuckDB at {size:,} orders: {rep - 1} run(s), time budget")
                break
            d = _duckdb(bench, size, lake, rep, tables_file if rep == 1 else None)
            if d:
                duck_runs.append(d)

        spark_runs: list[dict] = []
        wanted = plan.spark_reps.get(size, 1)
        extra = None
        if size == plan.largest:
            # One worker: a warm-up, the full run, its Gold check, then the ~1 % append
            # and the incremental run in the same (warm) session, as in the app. The
            # lake then holds the append, so the largest size gets no second full run.
            wanted = 1
            extra = {
                "warmup_orders": plan.warmup_orders,
                "settle_runs": plan.large_settle_runs,
                "seed": plan.seed,
                "rerun": True,
                "append_orders": max(1, size // 100),
                "compare_with": str(tables_file) if duck_runs else None,
            }
        first = _spark_full(bench, size, lake, 1, reset=False, extra=extra)
        if first:
            spark_runs.append(first)
            session_starts.append(first["session_start_seconds"])
            last_full_estimate = first["seconds"] * plan.largest / size
            if duck_runs:
                equal = first.pop("_equal", None)
                equality[str(size)] = equal if equal is not None else check_equal(lake, tables_file)
                verdict = "equal" if equality[str(size)]["equal"] else "DIFFERENT"
                bench.say(f"{size:,} orders: Spark and DuckDB Gold are {verdict}")

        if size == plan.dq_orders and first:
            dq_lake, dq_full = lake, first  # measured last, when the budget left is known

        for rep in range(2, wanted + 1):
            estimate = (spark_runs[-1]["seconds"] + 30) if spark_runs else 0
            # what must still follow: the incremental run and DuckDB's recompute, one pair
            # of Silver runs for the quality overhead, pages and stream
            dq_estimate = dq_full["layers"]["silver"] * 2 + 60 if dq_full else 0
            reserve = (
                dq_estimate
                + 180
                + (estimate * 0.5 if size == plan.largest else last_full_estimate * 1.5)
            )
            if not spark_runs or not bench.affordable(estimate, reserve=reserve):
                bench.notes.append(
                    f"ShopLake at {size:,} orders: {len(spark_runs)} of {wanted} planned full "
                    "run(s) fit the time budget"
                )
                break
            again = _spark_full(bench, size, lake, rep, reset=True)
            if again:
                spark_runs.append(again)
                session_starts.append(again["session_start_seconds"])

        entry = {
            "orders": size,
            "rows": gen.data["rows"],
            "generate_seconds": gen.data["seconds"],
            "session": spark_runs[0]["session"] if spark_runs else None,
            "shoplake_seconds": stats([r["seconds"] for r in spark_runs]),
            "shoplake_layers": _layer_stats(spark_runs),
            "peak_memory_gb": gb(max((r["peak"] for r in spark_runs), default=None)),
            "duckdb_seconds": stats([r["seconds"] for r in duck_runs]),
            "duckdb_layers": _layer_stats(duck_runs),
            "duckdb_peak_memory_gb": gb(max((r["peak"] for r in duck_runs), default=None)),
            "session_start_seconds": stats([r["session_start_seconds"] for r in spark_runs]),
            # CPU of each worker's whole process tree, start-up included: robust to a busy host
            "shoplake_process_cpu_seconds": stats([r["cpu"] for r in spark_runs]),
            "duckdb_process_cpu_seconds": stats([r["cpu"] for r in duck_runs]),
            "run_cost": run_summary(spark_runs),  # seconds, jobs and commits per step
            # the untimed full runs before the timed one in its session (the largest size)
            "first_run": _first_run(spark_runs),
        }
        entry["ratio_vs_duckdb"] = ratio(
            median(entry["shoplake_seconds"]), median(entry["duckdb_seconds"]), 2
        )
        entry["cpu_ratio_vs_duckdb"] = ratio(
            median(entry["shoplake_process_cpu_seconds"]),
            median(entry["duckdb_process_cpu_seconds"]),
            2,
        )
        scaling.append(entry)
        if size == plan.largest:
            largest_runs, largest_duck = spark_runs, duck_runs
            if first:
                incremental = _measure_incremental(bench, size, lake, first, spark_runs)
        for run in spark_runs:  # what only the incremental measurement needed
            for key in (
                "_equal",
                "_incremental",
                "_append_generate_seconds",
                "_nothing_new",
                "settle",
            ):
                run.pop(key, None)

    if dq_lake is not None and dq_full is not None:
        dq = _measure_dq(bench, plan.dq_orders, dq_lake, dq_full)
        session_starts.extend(dq.pop("_session_starts", []))
    # pages read the largest lake, as a dashboard over the benchmark's data would
    pages = _measure_script(bench, "pages", work / f"lake-{plan.largest}")
    stream = _measure_script(bench, "stream", None)  # it builds its own lake and broker
    _small_lake_more(bench, small)
    load_end = os.getloadavg()  # the measurements' end: the test suite loads the machine itself
    suite = _make_test(bench)

    top = scaling[-1] if scaling else {}
    full_seconds = median(top.get("shoplake_seconds"))
    duck_seconds = median(top.get("duckdb_seconds"))
    first_run = top.get("first_run") or {}
    steps = {}
    for layer in LAYERS:
        ours = median(_layer_stats(largest_runs)[layer]) if largest_runs else None
        theirs = median(_layer_stats(largest_duck)[layer]) if largest_duck else None
        steps[layer] = {
            "shoplake_seconds": ours,
            "duckdb_seconds": theirs,
            "ratio_vs_duckdb": ratio(ours, theirs, 2),
        }
    if incremental.get("equal_after_append"):
        equality[f"{plan.largest}+append"] = incremental["equal_after_append"]
    all_equal = bool(equality) and all(e.get("equal") for e in equality.values())
    cores = os.cpu_count() or 1
    if max(load_start[0], load_end[0]) > cores:
        bench.notes.insert(
            0,
            f"the machine was busy: load average {load_start[0]:.1f} at the start and "
            f"{load_end[0]:.1f} at the end on {cores} cores, so wall times are inflated; "
            "process CPU seconds are affected much less",
        )
    result: dict[str, Any] = {
        "schema_version": 1,
        "mode": plan.mode,
        "generated_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "orders": plan.largest,
        "warmup_orders": plan.warmup_orders,
        "session_start_seconds": median(stats(session_starts)),
        "full_seconds": full_seconds,
        "duckdb_seconds": duck_seconds,
        "full_ratio_vs_duckdb": ratio(full_seconds, duck_seconds, 2),
        "first_full_seconds": first_run.get("seconds"),
        "first_full_ratio_vs_duckdb": ratio(first_run.get("seconds"), duck_seconds, 2),
        "incremental_seconds": incremental.get("seconds"),
        "incremental_fraction": incremental.get("fraction_of_full"),
        "dq_overhead_fraction": dq.get("overhead_fraction"),
        "page_seconds_max": pages.get("page_seconds_max"),
        "stream_events_per_second": stream.get("events_per_second"),
        "stream_latency_p95_seconds": stream.get("latency_p95_seconds"),
        "peak_memory_gb": top.get("peak_memory_gb"),
        "duckdb_peak_memory_gb": top.get("duckdb_peak_memory_gb"),
        "results_equal": all_equal,
        "session_start": stats(session_starts),
        "steps": steps,
        "scaling": scaling,
        "incremental": incremental,
        "dq": dq,
        "pages": pages,
        "stream": stream,
        "equality": {"checked": bool(equality), "equal": all_equal, "by_orders": equality},
        "small_lake": small,
        "make_test": suite,
        "before": load_before(),
        "machine": machine_info(load_start, load_end),
        "notes": bench.notes,
        "elapsed_seconds": round(bench.elapsed(), 1),
    }
    result["targets"] = targets(result)
    return result


def _target(
    number: str, what: str, after: float | None, before: float | None, bound: float, unit: str
) -> dict[str, Any]:
    """One target row; ``bound`` is inclusive except for "faster than" (unit "<x")."""
    strict = unit == "<x"
    unit = "x" if strict else unit
    limit = f"{'<' if strict else '<='} {bound:g}{unit}"
    met = None if after is None else (after < bound if strict else after <= bound)
    return {
        "issue_target": number,
        "what": what,
        "limit": limit,
        "after": after,
        "before": before,
        "met": met,
        "unit": unit,
    }


def _comparable_before(r: dict) -> dict:
    """The recorded before figures, when they are of the small lake's size (else none)."""
    before = r.get("before") or {}
    return before if before.get("orders") == (r.get("small_lake") or {}).get("orders") else {}


def targets(r: dict) -> list[dict[str, Any]]:
    """Issue 14's targets, each with its figure after (and before, when recorded) and
    whether it is met: None when this bench did not measure it. The 10,000-order ones
    come from the small-lake section, the others from the largest size."""
    small = r.get("small_lake") or {}
    warm = small.get("warm") or {}
    before = _comparable_before(r)
    b_full = (before.get("full") or {}).get("seconds")
    b_inc = (before.get("incremental") or {}).get("seconds")
    b_fresh = median(stats([f["seconds"] for f in before.get("fresh_process", [])]))
    b_large = (r.get("before") or {}).get("large") or {}
    if b_large.get("orders") != r.get("orders"):
        b_large = {}
    full_s = median((warm.get("full") or {}).get("seconds"))
    inc_s = median((warm.get("incremental") or {}).get("seconds"))
    fresh_s = median((small.get("fresh_process") or {}).get("seconds"))
    n, big = f"{small.get('orders') or 10_000:,} orders", f"{r['orders']:,} orders"
    inc = r.get("incremental") or {}
    suite = r.get("make_test") or {}
    passed = suite.get("exit_code") == 0 and suite.get("seconds") is not None
    suite_min = round(suite["seconds"] / 60, 2) if passed else None  # a failed suite: no figure
    return [
        _target("1", f"{n}: `run all` in a warm session", full_s, b_full, 15, " s"),
        _target(
            "1",
            f"{n}: `python -m pipeline run all`, fresh process, JVM start included",
            fresh_s,
            b_fresh,
            40,
            " s",
        ),
        _target(
            "2",
            f"{n}: incremental run after a 1 % append / full run",
            ratio(inc_s, full_s),
            ratio(b_inc, b_full),
            1,
            "x",
        ),
        _target(
            "2",
            f"{big}: incremental run after a 1 % append / full run",
            r.get("incremental_fraction"),
            b_large.get("incremental_fraction"),
            0.10,
            "x",
        ),
        _target(
            "2",
            f"{big}: incremental run / DuckDB's full rebuild in the same bench",
            inc.get("ratio_vs_duckdb_recompute"),
            b_large.get("incremental_vs_duckdb_recompute"),
            1,
            "<x",
        ),
        _target(
            "3",
            f"{big}, warm session: full run / DuckDB",
            r.get("full_ratio_vs_duckdb"),
            b_large.get("full_ratio_vs_duckdb"),
            4,
            "x",
        ),
        _target(
            "3",
            f"{big}: peak memory of the whole process tree",
            r.get("peak_memory_gb"),
            b_large.get("peak_memory_gb"),
            4,
            " GB",
        ),
        _target(
            "5",
            "`make test`, timed by the bench after everything else",
            suite_min,
            None,
            12,
            " min",
        ),
    ]


def _median_of(values) -> float | None:
    values = [v for v in values if v is not None]
    return None if not values else round(statistics.median(values), 3)


def run_summary(runs: Sequence[dict]) -> dict[str, Any]:
    """Medians over repeated runs of one kind: the run's seconds, Spark jobs and Delta
    commits, and each step's (a step missing from a run is left out of its medians)."""
    names = list(dict.fromkeys(name for r in runs for name in r.get("steps", {})))
    steps = {}
    for name in names:
        per_run = [r["steps"][name] for r in runs if name in r.get("steps", {})]
        per_run = [v if isinstance(v, dict) else {"seconds": v} for v in per_run]
        steps[name] = {
            k: _median_of(v.get(k) for v in per_run) for k in ("seconds", "jobs", "commits")
        }
    return {
        "seconds": stats([r["seconds"] for r in runs]),
        "jobs": _median_of(r.get("jobs") for r in runs),
        "commits": _median_of(r.get("commits") for r in runs),
        "steps": steps,
    }


def load_before(path: Path = BEFORE) -> dict | None:
    """The figures recorded before the run-cost work, when someone recorded them."""
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _fresh_run(bench: Bench, landing: Path, rep: int) -> dict | None:
    """One `python -m pipeline run all` process on a copy of ``landing``, wall clock."""
    from pipeline.bench.run_cost import fresh_process

    bench.say(f"small lake: `python -m pipeline run all` in a fresh process ({rep}) ...")
    try:
        (run,) = fresh_process(landing, 1, PROJECT_ROOT, bench.env)
    except RuntimeError as exc:
        bench.notes.append(f"small lake, fresh process {rep}: {exc}")
        return None
    bench.say(f"small lake: fresh process {run['seconds']:.1f} s, {run['commits']} Delta commits")
    return run


def _small_lake(bench: Bench) -> dict | None:
    """The small-lake section: DuckDB, the fresh processes, then the warm pairs.

    All of it runs before the larger sizes, on copies of the same landing files
    DuckDB reads; the warm pairs in one worker (one session, warmed on a scratch
    lake like the app's). ``_small_lake_more`` adds the medians at the end.
    """
    plan = bench.plan
    size = plan.small_orders
    if not size:
        return None
    lake = bench.work / f"lake-small-{size}"
    bench.say(f"small lake: generating {size:,} orders ...")
    params = {"orders": size, "batches": plan.batches, "seed": plan.seed}
    gen = bench.worker("generate", {**params, "defect_rate": plan.defect_rate}, lake, "gen-small")
    if not gen.ok:
        raise WorkerFailed(f"generating the small lake failed: {gen.error}")
    duck = [
        _duckdb(bench, size, lake, f"small-{rep}", None)
        for rep in range(1, 1 + plan.small_duckdb_reps)
    ]
    duck = [d for d in duck if d]
    out: dict[str, Any] = {
        "orders": size,
        "rows": gen.data["rows"],
        "duckdb": {
            "seconds": stats([d["seconds"] for d in duck]),
            "layers": {k: median(v) for k, v in _layer_stats(duck).items()},
            "peak_memory_gb": gb(max((d["peak"] for d in duck), default=None)),
        },
        "_landing": lake / "landing",
    }
    # Fresh processes first, on a machine the bench has not yet loaded: one of them
    # taken after the larger sizes measured 83.6 s where it took 35.2 s alone.
    runs: list[dict] = []
    for rep in range(1, plan.small_fresh_reps + 1):
        run = _fresh_run(bench, lake / "landing", rep)
        if run is None:  # its note says why; the next would fail the same way
            break
        runs.append(run)
    out["fresh_process_runs"] = runs
    bench.say(f"small lake: warm session, up to {plan.small_warm_pairs} full/incremental pairs ...")
    res = bench.worker(
        "run_cost",
        {
            "orders": size,
            "landing": str(lake / "landing"),
            "pairs": plan.small_warm_pairs,
            "settle_pairs": plan.small_settle_pairs,
            # the first pair is mandatory; more only within a fifth of the bench's budget
            "budget_seconds": plan.budget_seconds / 5,
            "seed": plan.seed,
        },
        None,
        "run-cost-small",
    )
    if not res.ok:
        bench.notes.append(f"small lake, warm session: {res.error}")
        return out
    pairs = res.data["pairs"]
    if len(pairs) < plan.small_warm_pairs:
        bench.notes.append(
            f"small lake: {len(pairs)} of {plan.small_warm_pairs} warm pair(s), time budget"
        )
    out["warm_pairs_planned"] = plan.small_warm_pairs
    out["warm"] = {
        "session_start_seconds": res.data["session_start_seconds"],
        "warmup_seconds": res.data.get("warmup_seconds"),
        "peak_memory_gb": gb(res.peak_bytes),
        # untimed, at this size: what the first runs after a small warm-up take
        "settle": [
            {kind: pair[kind]["seconds"] for kind in ("full", "incremental") if kind in pair}
            for pair in res.data.get("settle", [])
        ],
        "pairs": pairs,
        "full": run_summary([p["full"] for p in pairs]),
        "incremental": run_summary([p["incremental"] for p in pairs if "incremental" in p]),
    }
    full = median(out["warm"]["full"]["seconds"])
    inc = median(out["warm"]["incremental"]["seconds"])
    bench.say(f"small lake: warm full {full} s, incremental {inc} s (medians)")
    return out


def _small_lake_more(bench: Bench, small: dict | None) -> None:
    """The section's fresh-process medians (its runs were taken first, ``_small_lake``)."""
    if small is None:
        return
    runs = small["fresh_process_runs"]
    if 0 < len(runs) < bench.plan.small_fresh_reps:
        bench.notes.append(
            f"small lake: {len(runs)} of {bench.plan.small_fresh_reps} fresh process(es)"
        )
    small["fresh_process"] = {
        "seconds": stats([r["seconds"] for r in runs]),
        "commits": _median_of(r["commits"] for r in runs),
    }
    del small["_landing"]


_PYTEST_SUMMARY = re.compile(r"^=+ (?P<counts>[^=]*?) in [\d.]+s(?: \([\d:]+\))? =+$", re.M)


def pytest_counts(output: str) -> dict[str, int]:
    """The last pytest summary line's counts ("346 passed, 2 failed in ..."), by outcome."""
    found = _PYTEST_SUMMARY.findall(output)
    if not found:
        return {}
    counts: dict[str, int] = {}
    for part in found[-1].split(","):
        number, _, outcome = part.strip().partition(" ")
        if number.isdigit():
            counts[outcome] = int(number)
    return counts


def _make_test(bench: Bench) -> dict | None:
    """``make test`` as CI runs it, timed from outside (issue 14's target 5).

    Last, when none of the bench's own processes load the machine any more, in
    the project folder with the caller's environment minus ``SHOPLAKE_*`` (a
    clean shell's, as CI's). Its output is kept in the work folder only for
    the seconds it takes to read the counts.
    """
    if not bench.plan.test_suite:
        return None
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPLAKE_")}
    log_path = bench.work / "make-test.log"
    bench.say("make test ...")
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["make", "test"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code: int | None = proc.wait(timeout=bench.plan.test_suite_timeout)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            code = None
        except BaseException:
            _stop_group(proc)
            raise
    seconds = time.perf_counter() - t0
    output = log_path.read_text(errors="replace")
    out = {
        "command": "make test",
        "seconds": round(seconds, 1),
        "exit_code": code,
        "counts": pytest_counts(output),
        "load_start": [round(x, 2) for x in load_start],
        "load_end": [round(x, 2) for x in os.getloadavg()],
    }
    if code != 0:
        why = "timed out" if code is None else f"exit code {code}"
        out["failures"] = failed_tests(output)
        tail = " | ".join(out["failures"] + output.strip().splitlines()[-3:])
        bench.notes.append(f"make test: {why} after {seconds / 60:.1f} min: {tail}")
    bench.say(f"make test: {seconds / 60:.1f} min, {out['counts']}")
    return out


def failed_tests(output: str) -> list[str]:
    """pytest's summary lines of the tests that failed or errored: the log itself is
    deleted once read, and a failure in a busy bench is worth telling from a flake."""
    return [
        line.strip()[:300] for line in output.splitlines() if line.startswith(("FAILED ", "ERROR "))
    ][:10]


def _measure_dq(bench: Bench, size: int, lake: Path, full: dict) -> dict:
    """Silver from the same Bronze with and without its expectations, in one process."""
    plan = bench.plan
    silver = full["layers"]["silver"]
    # a fresh JVM's first Silver run pays class loading and JIT for both variants: a
    # warm-up run goes first and is not counted; then off-on, on-off, ... balances drift
    modes: list[str] = ["warmup"]
    for pair in range(plan.dq_pairs):
        needed = silver * 2.5 + 40
        if pair and not bench.affordable(needed * (pair + 1) + silver, reserve=180):
            bench.notes.append(f"quality overhead: {pair} pair(s) of Silver runs, time budget")
            break
        modes += ["off", "on"] if pair % 2 == 0 else ["on", "off"]
    bench.say(f"{size:,} orders: Silver with/without expectations ({' '.join(modes)}) ...")
    res = bench.worker("spark", {"dq_modes": modes}, lake, f"spark-dq-{size}")
    if not res.ok:
        bench.notes.append(f"quality overhead: {res.error}")
        return {"overhead_fraction": None, "error": res.error}
    runs = res.data["runs"]
    failed = [r for r in runs if not r["ok"]]
    on = [r for r in runs if r["kind"].endswith("_on") and r["ok"]]
    off = [r for r in runs if r["kind"].endswith("_off") and r["ok"]]
    honoured = bool(on and off) and min(r["quarantined"] for r in off) < min(
        r["quarantined"] for r in on
    )
    out: dict[str, Any] = {
        "orders": size,
        "order": modes,
        "warmup_seconds": runs[0]["seconds"] if runs else None,
        "with_expectations_seconds": stats([r["seconds"] for r in on]),
        "without_expectations_seconds": stats([r["seconds"] for r in off]),
        "quarantined_with": on[0]["quarantined"] if on else None,
        "quarantined_without": off[0]["quarantined"] if off else None,
        "switch_honoured": honoured,
        "definition": "(Silver with expectations - without) / without, medians",
        "_session_starts": [res.data["session_start_seconds"]],
    }
    if failed:
        out["errors"] = [r["error"] for r in failed]
    if not honoured:
        out["overhead_fraction"] = None
        bench.notes.append(
            "quality overhead is null: SHOPLAKE_EXPECTATIONS=off did not change what Silver "
            "quarantined, so the switch is not honoured (yet)"
        )
    else:
        with_s = median(out["with_expectations_seconds"])
        without_s = median(out["without_expectations_seconds"])
        out["overhead_fraction"] = (
            None if with_s is None or not without_s else round((with_s - without_s) / without_s, 3)
        )
        bench.say(f"{size:,} orders: Silver {with_s} s with expectations, {without_s} s without")
        if out["overhead_fraction"] is not None and out["overhead_fraction"] < 0:
            bench.notes.append(
                "quality overhead came out negative: at this size (or on this busy machine) "
                "the noise between Silver runs is larger than the rules' cost"
            )
    return out


def _measure_incremental(
    bench: Bench, size: int, lake: Path, first: dict, full_runs: list[dict]
) -> dict:
    """The ~1 % batch's run (timed in the full run's worker), then DuckDB recomputing all."""
    orders = max(1, size // 100)
    run = first.get("_incremental")
    if not run or not run["ok"]:
        error = run["error"] if run else "the worker did not run the increment"
        bench.notes.append(f"incremental run failed: {error}")
        return {"seconds": None, "fraction_of_full": None, "error": error}
    full = statistics.median(r["seconds"] for r in full_runs)
    out: dict[str, Any] = {
        "orders_appended": orders,
        "base_orders": size,
        "session": "the full run's (warm)",
        "generate_seconds": first.get("_append_generate_seconds"),
        "seconds": run["seconds"],
        "layers": run["layers"],
        "jobs": run["jobs"],
        "commits": run["commits"],
        "steps": run["steps"],
        "fraction_of_full": ratio(run["seconds"], full, 4),
        "nothing_new": _nothing_new(first.get("_nothing_new")),
        # the worker's whole tree: warm-up, full run, append and increment
        "peak_memory_gb": gb(first["peak"]),
        "process_cpu_seconds": run["cpu_seconds"],
    }
    tables_file = bench.work / f"duckdb-gold-{size}-appended.pickle"
    duck = _duckdb(bench, size, lake, 99, tables_file)
    if duck:
        out["duckdb_recompute_seconds"] = duck["seconds"]
        out["ratio_vs_duckdb_recompute"] = ratio(run["seconds"], duck["seconds"], 2)
        check = check_equal(lake, tables_file)
        out["equal_after_append"] = check
        verdict = "equal" if check["equal"] else "DIFFERENT"
        bench.say(f"after the append: Spark and DuckDB Gold are {verdict}")
    bench.say(
        f"incremental: {run['seconds']:.1f} s = {out['fraction_of_full']:.1%} of the full run"
        if out["fraction_of_full"] is not None
        else "incremental: done"
    )
    return out


def _nothing_new(run: dict | None) -> dict | None:
    """``run all`` again on the full run's files before the append: its cost with nothing new."""
    if not run:
        return None
    keys = ("seconds", "cpu_seconds", "ok", "error", "jobs", "commits")
    return {k: run[k] for k in keys} | {"gold_steps_kept": run.get("gold_kept")}


def _measure_script(bench: Bench, kind: str, lake: Path | None) -> dict:
    script = SCRIPTS / f"bench_{kind}.py"
    if not script.is_file():
        bench.notes.append(f"{kind}: scripts/bench_{kind}.py does not exist yet; figures are null")
        return {"available": False}
    bench.say(f"{kind}: running scripts/bench_{kind}.py ...")
    res = bench.worker(kind, {"quick": bench.plan.mode == "quick"}, lake, f"{kind}")
    if not res.ok:
        bench.notes.append(f"{kind}: scripts/bench_{kind}.py failed: {res.error}")
        return {"available": True, "error": res.error}
    raw = res.data.get("result")
    out: dict[str, Any] = {"available": True, "entry": res.data.get("entry"), "result": raw}
    if lake is not None:
        out["lake_orders"] = bench.plan.largest
    if kind == "pages":  # page_seconds(): {page: median rerun seconds}
        out["page_seconds_max"] = round(max(raw.values()), 3) if raw else None
    else:  # bench_stream(): its documented keys
        out["events_per_second"] = raw["stream_events_per_second"]
        out["latency_p95_seconds"] = raw["stream_latency_p95_seconds"]
    out["peak_memory_gb"] = gb(res.peak_bytes)
    return out


# --------------------------------------------------------------------------- machine and report


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _java_version() -> str | None:
    java = shutil.which("java")
    if os.environ.get("JAVA_HOME"):
        java = str(Path(os.environ["JAVA_HOME"]) / "bin" / "java")
    if not java:
        return None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = (out.stderr or out.stdout).strip().splitlines()
    return first[0] if first else None


def machine_info(
    load_start: tuple[float, float, float] | None = None,
    load_end: tuple[float, float, float] | None = None,
) -> dict:
    cpu = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "memory_gb": memory,
        "cpu": cpu,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "java": _java_version(),
        "pyspark": _version("pyspark"),
        "delta_spark": _version("delta-spark"),
        "deltalake": _version("deltalake"),
        "duckdb": _version("duckdb"),
        "pandas": _version("pandas"),
        "pyarrow": _version("pyarrow"),
        "spark_master": settings().spark_master or spark_settings().local_master,
        "driver_memory": spark_settings().driver_memory,
        "load_average_at_start": [round(x, 2) for x in load_start] if load_start else None,
        "load_average_at_end": [round(x, 2) for x in (load_end or os.getloadavg())],
    }


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value}{unit}"


def _spread(s: dict | None) -> str:
    if not s:
        return "n/a"
    if s["runs"] == 1:
        return f"{s['median']:.1f} s (1 run)"
    return f"{s['median']:.1f} s ({s['min']:.1f}-{s['max']:.1f}, {s['runs']} runs)"


def _num(value: Any, unit: str = "") -> str:
    """A figure as the tables show it: seconds to 0.1, counts whole, n/a when missing."""
    if value is None:
        return "n/a"
    if unit == " s":
        return f"{value:,.1f} s"
    if unit == " GB":
        return f"{value:,.2f} GB"
    if unit == "x":
        return f"{value:,.2f}x"
    if unit == " min":
        return f"{value:,.1f} min"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _met(met: bool | None) -> str:
    return "not measured" if met is None else ("**met**" if met else "**not met**")


def render_targets(r: dict) -> list[str]:
    rows = r.get("targets") or []
    if not rows:
        return []
    lines = [
        "",
        "## Run-cost targets (issue 14)",
        "",
        "| # | target | limit | before | after | |",
        "|---|---|---|---|---|---|",
    ]
    for t in rows:
        lines.append(
            f"| {t['issue_target']} | {t['what']} | {t['limit']} | {_num(t['before'], t['unit'])} "
            f"| {_num(t['after'], t['unit'])} | {_met(t['met'])} |"
        )
    return lines


def _before_after(label: str, before: Any, after: Any, unit: str = "") -> str:
    return (
        f"| {label} | {_num(before, unit)} | {_num(after, unit)} "
        f"| {_num(ratio(after, before, 2), 'x')} |"
    )


def render_step_table(after: dict | None, before: dict | None) -> list[str]:
    """Per step: seconds, Spark jobs and Delta commits, before | after | ratio for seconds."""
    after_steps = (after or {}).get("steps", {})
    before_steps = (before or {}).get("steps", {})
    names = list(dict.fromkeys([*after_steps, *before_steps]))
    lines = [
        "| step | seconds before | seconds after | ratio | Spark jobs before | after "
        "| Delta commits before | after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        a, b = after_steps.get(name) or {}, before_steps.get(name) or {}
        lines.append(
            f"| {name} | {_num(b.get('seconds'), ' s')} | {_num(a.get('seconds'), ' s')} "
            f"| {_num(ratio(a.get('seconds'), b.get('seconds'), 2), 'x')} "
            f"| {_num(b.get('jobs'))} | {_num(a.get('jobs'))} "
            f"| {_num(b.get('commits'))} | {_num(a.get('commits'))} |"
        )
    total_b, total_a = before or {}, after or {}
    lines.append(
        f"| **whole run** | {_num(median(total_b.get('seconds')), ' s')} "
        f"| {_num(median(total_a.get('seconds')), ' s')} "
        f"| {_num(ratio(median(total_a.get('seconds')), median(total_b.get('seconds')), 2), 'x')} "
        f"| {_num(total_b.get('jobs'))} | {_num(total_a.get('jobs'))} "
        f"| {_num(total_b.get('commits'))} | {_num(total_a.get('commits'))} |"
    )
    return lines


def _settled(settle: list[dict]) -> str:
    """The untimed pairs at the small size, with their seconds (they are not in the medians)."""
    if not settle:
        return ""
    took = "; ".join(
        f"full {p['full']:.1f} s"
        + (f", incremental {p['incremental']:.1f} s" if "incremental" in p else "")
        for p in settle
    )
    return (
        f" Before them, {len(settle)} untimed pair(s) on the same files took {took} "
        "(the JIT still compiling the code a run at this size uses)."
    )


def render_make_test(r: dict) -> list[str]:
    """The test suite's line: target 5 is CI's command, timed by the bench itself."""
    suite = r.get("make_test")
    if not suite:
        return []
    counts = ", ".join(f"{n:,} {outcome}" for outcome, n in suite.get("counts", {}).items())
    status = (
        "it passed"
        if suite.get("exit_code") == 0
        else "it timed out"
        if suite.get("exit_code") is None
        else f"it FAILED (exit code {suite['exit_code']}), so target 5 has no figure"
    )
    start, end = suite.get("load_start") or [], suite.get("load_end") or []
    return [
        "",
        "## The test suite (`make test`)",
        "",
        f"`make test` (the command CI runs: the Makefile's pytest workers, real Spark, Delta, "
        f"Kafka and Chromium), started by the bench after all of the above: "
        f"{_fmt(suite['seconds'] / 60, ' min')} ({counts or 'no pytest summary'}); {status}. "
        f"Load average {start[0] if start else 'n/a'} at its start, "
        f"{end[0] if end else 'n/a'} at its end.",
    ]


def render_small_lake(r: dict) -> list[str]:
    """The small-lake section: the run's fixed cost, before | after, and per step."""
    small = r.get("small_lake")
    if not small:
        return []
    before = _comparable_before(r)
    warm = small.get("warm") or {}
    b_full = run_summary([before["full"]]) if before.get("full") else {}
    b_inc = run_summary([before["incremental"]]) if before.get("incremental") else {}
    b_fresh = stats([f["seconds"] for f in before.get("fresh_process", [])])
    a_full, a_inc = warm.get("full") or {}, warm.get("incremental") or {}
    # a before file recorded before run_cost counted the whole run has only the steps' sum
    counted_all = "step_jobs" in (before.get("full") or {"step_jobs": 0})
    steps_only = "" if counted_all else " (before: its steps' jobs only)"
    fresh = small.get("fresh_process") or {}
    duck = small.get("duckdb") or {}
    n = small["orders"]
    lines = [
        "",
        f"## Small lake ({n:,} orders)",
        "",
        f"Landing files: {small['rows'].get('orders', 0):,} orders / "
        f"{small['rows'].get('order_items', 0):,} order lines. A fresh process is "
        f"`python -m pipeline run all` timed from outside (JVM start included): "
        f"{_spread(fresh.get('seconds'))}. The warm session ran "
        f"{len(warm.get('pairs', []))} full run(s), each followed by a 1 % append's "
        f"incremental run, after an untimed warm-up on a 2,000-order scratch lake "
        f"(full {_spread(a_full.get('seconds'))}, incremental "
        f"{_spread(a_inc.get('seconds'))}).{_settled(warm.get('settle') or [])} DuckDB "
        f"rebuilt everything from the same landing files in {_spread(duck.get('seconds'))}.",
        "",
        "| measure | before | after | after / before |",
        "|---|---|---|---|",
        _before_after(
            "`run all`, fresh process", median(b_fresh), median(fresh.get("seconds")), " s"
        ),
        _before_after(
            "`run all`, warm session",
            median(b_full.get("seconds")),
            median(a_full.get("seconds")),
            " s",
        ),
        _before_after(
            "incremental run after a 1 % append",
            median(b_inc.get("seconds")),
            median(a_inc.get("seconds")),
            " s",
        ),
        _before_after("Spark jobs, full run" + steps_only, b_full.get("jobs"), a_full.get("jobs")),
        _before_after(
            "Spark jobs, incremental run" + steps_only, b_inc.get("jobs"), a_inc.get("jobs")
        ),
        _before_after("Delta commits, full run", b_full.get("commits"), a_full.get("commits")),
        _before_after("Delta commits, incremental run", b_inc.get("commits"), a_inc.get("commits")),
        f"| DuckDB full rebuild, same files | n/a | {_num(median(duck.get('seconds')), ' s')} | |",
        f"| ShopLake warm `run all` / DuckDB | n/a "
        f"| {_num(ratio(median(a_full.get('seconds')), median(duck.get('seconds')), 2), 'x')} "
        "| |",
    ]
    if before:
        load = before.get("machine_load") or {}
        start, end = load.get("before") or {}, load.get("after") or {}
        lines += [
            "",
            f"Before: the code at {before.get('code') or 'n/a'}, recorded "
            f"{start.get('at', 'n/a')} with `{before.get('command', 'n/a')}` while the machine's "
            f"load average was {start.get('load_average', 'n/a')} at the start and "
            f"{end.get('load_average', 'n/a')} at the end on {start.get('cores', '?')} cores "
            "(`bench/results/before-run-cost.json`; a busy machine inflates seconds, not job or "
            "commit counts).",
        ]
    else:
        lines += [
            "",
            "No before figures at this size: `bench/results/before-run-cost.json` is missing "
            "or holds another size.",
        ]
    lines += ["", "### Per step, full run (warm session, medians)", ""]
    lines += render_step_table(a_full, b_full)
    lines += ["", "### Per step, incremental run after a 1 % append (medians)", ""]
    lines += render_step_table(a_inc, b_inc)
    return lines


def render_large_steps(r: dict) -> list[str]:
    """Per step at the largest size: the full run's and the incremental run's figures."""
    top = (r.get("scaling") or [{}])[-1].get("run_cost")
    inc = r.get("incremental") or {}
    if not top:
        return []
    inc_run = run_summary([inc]) if inc.get("steps") else {}
    lines = [
        "",
        f"## Per step ({r['orders']:,} orders, full run and the 1 % incremental run)",
        "",
        "| step | full s | Spark jobs | Delta commits | incremental s | Spark jobs "
        "| Delta commits |",
        "|---|---|---|---|---|---|---|",
    ]
    inc_steps = inc_run.get("steps", {})
    for name in dict.fromkeys([*top["steps"], *inc_steps]):
        f, i = top["steps"].get(name) or {}, inc_steps.get(name) or {}
        lines.append(
            f"| {name} | {_num(f.get('seconds'), ' s')} | {_num(f.get('jobs'))} "
            f"| {_num(f.get('commits'))} | {_num(i.get('seconds'), ' s')} "
            f"| {_num(i.get('jobs'))} | {_num(i.get('commits'))} |"
        )
    lines.append(
        f"| **whole run** | {_num(median(top['seconds']), ' s')} | {_num(top.get('jobs'))} "
        f"| {_num(top.get('commits'))} | {_num(inc.get('seconds'), ' s')} "
        f"| {_num(inc.get('jobs'))} | {_num(inc.get('commits'))} |"
    )
    return lines


def render_markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# ShopLake benchmarks",
        "",
        "Generated by `python -m pipeline bench"
        + (" --quick" if r["mode"] == "quick" else "")
        + f"` (`make bench` runs the full mode) on {r['generated_at']}. Mode: {r['mode']}.",
        f"Raw figures: `bench/results/latest.json`. The whole benchmark took "
        f"{r['elapsed_seconds'] / 60:.1f} minutes.",
        "",
        "## Machine",
        "",
        f"- {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB memory, {m['os']}",
        f"- Python {m['python']}, {m['java']}, PySpark {m['pyspark']}, Delta Lake (Spark) "
        f"{m['delta_spark']}, delta-rs {m['deltalake']}, DuckDB {m['duckdb']}, pandas "
        f"{m['pandas']}, pyarrow {m['pyarrow']}",
        f"- Spark master {m['spark_master']}, driver memory {m['driver_memory']}",
        f"- Load average at start {m['load_average_at_start']}, at end "
        f"{m['load_average_at_end']} (other work on the machine inflates the times)",
        "",
        f"## Headline ({r['orders']:,} orders)",
        "",
        "| measure | value |",
        "|---|---|",
        f"| Spark session start (fresh process) | {_fmt(r['session_start_seconds'], ' s')} |",
        f"| ShopLake full run (Bronze -> Silver -> Gold) | {_fmt(r['full_seconds'], ' s')} |",
        f"| DuckDB, same work | {_fmt(r['duckdb_seconds'], ' s')} |",
        f"| ShopLake / DuckDB | {_fmt(r['full_ratio_vs_duckdb'], 'x', 2)} |",
        *(
            [
                "| ShopLake full run, the session's first at this size (before the timed one) "
                f"| {_fmt(r['first_full_seconds'], ' s')} "
                f"({_fmt(r.get('first_full_ratio_vs_duckdb'), 'x', 2)} DuckDB) |"
            ]
            if r.get("first_full_seconds") is not None
            else []
        ),
        f"| Incremental run after a ~1 % batch | {_fmt(r['incremental_seconds'], ' s')} "
        f"({_fmt((r['incremental_fraction'] or 0) * 100 if r['incremental_fraction'] is not None else None, ' %')} of the full run) |",  # noqa: E501
        f"| Quality overhead (Silver with vs without expectations) | "
        f"{_fmt(r['dq_overhead_fraction'] * 100 if r['dq_overhead_fraction'] is not None else None, ' %')} |",  # noqa: E501
        f"| Slowest page | {_fmt(r['page_seconds_max'], ' s', 2)} |",
        f"| Stream throughput | {_fmt(r['stream_events_per_second'], ' events/s')} |",
        f"| Stream latency p95 | {_fmt(r['stream_latency_p95_seconds'], ' s', 2)} |",
        f"| Peak memory, whole process tree incl. JVM | {_fmt(r['peak_memory_gb'], ' GB', 2)} |",
        f"| Spark and DuckDB Gold equal | {'yes' if r['results_equal'] else 'NO'} |",
        *render_targets(r),
        *render_small_lake(r),
        *render_make_test(r),
        "",
        "## Per layer (largest size, medians)",
        "",
        "| layer | ShopLake | DuckDB | ratio |",
        "|---|---|---|---|",
    ]
    for layer, s in r["steps"].items():
        lines.append(
            f"| {layer} | {_fmt(s['shoplake_seconds'], ' s')} | {_fmt(s['duckdb_seconds'], ' s')} "
            f"| {_fmt(s['ratio_vs_duckdb'], 'x', 2)} |"
        )
    lines += render_large_steps(r)
    lines += [
        "",
        "## Scaling",
        "",
        "| orders | landing rows (orders / items) | session | ShopLake full run | peak memory "
        "| DuckDB | DuckDB peak | ratio | process CPU s, ShopLake / DuckDB | Gold equal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in r["scaling"]:
        eq = r["equality"]["by_orders"].get(str(s["orders"]), {})
        rows = s["rows"]
        lines.append(
            f"| {s['orders']:,} | {rows.get('orders', 0):,} / {rows.get('order_items', 0):,} "
            f"| {s.get('session') or 'fresh'} | {_spread(s['shoplake_seconds'])} "
            f"| {_fmt(s['peak_memory_gb'], ' GB', 2)} "
            f"| {_spread(s['duckdb_seconds'])} | {_fmt(s['duckdb_peak_memory_gb'], ' GB', 2)} "
            f"| {_fmt(s['ratio_vs_duckdb'], 'x', 2)} "
            f"| {_fmt(median(s.get('shoplake_process_cpu_seconds')))} / "
            f"{_fmt(median(s.get('duckdb_process_cpu_seconds')))} "
            f"| {'yes' if eq.get('equal') else ('n/a' if not eq else 'NO')} |"
        )
    inc = r["incremental"]
    if inc.get("seconds") is not None:
        lines += [
            "",
            "## Incremental",
            "",
            f"After the {inc['base_orders']:,}-order full run, "
            f"`generate --append` wrote {inc['orders_appended']:,} new and updated orders; "
            f"`run all` processed them in {inc['seconds']:.1f} s "
            f"({inc['fraction_of_full']:.1%} of the full run). DuckDB, which has no incremental "
            f"path here, recomputed everything in "
            f"{_fmt(inc.get('duckdb_recompute_seconds'), ' s')}. Gold after the append equal: "
            f"{'yes' if inc.get('equal_after_append', {}).get('equal') else 'NO or n/a'}.",
        ]
        again = inc.get("nothing_new")
        if again and again.get("ok"):
            lines += [
                "",
                f"Before the append, `run all` on the same files (nothing new) took "
                f"{again['seconds']:.1f} s ({again['jobs']} Spark jobs, {again['commits']} "
                f"Delta commits; {again['gold_steps_kept']} Gold tables kept as they were).",
            ]
    dq = r["dq"]
    if dq.get("orders"):
        lines += [
            "",
            "## Quality overhead",
            "",
            f"Silver on the {dq['orders']:,}-order lake, one process, runs in the order "
            f"{' '.join(dq['order'])}: with expectations "
            f"{_spread(dq['with_expectations_seconds'])}, without "
            f"{_spread(dq['without_expectations_seconds'])}. Overhead "
            f"= {dq['definition']}: {_fmt(dq.get('overhead_fraction'), '', 3)}. Switch honoured: "
            f"{dq['switch_honoured']} (the first, warm-up run is not counted).",
        ]
    pages = r.get("pages") or {}
    if isinstance(pages.get("result"), dict):
        per_page = {k: v for k, v in pages["result"].items() if isinstance(v, int | float)}
        if per_page:
            lines += [
                "",
                "## Pages",
                "",
                f"Script time per page (Streamlit AppTest, median rerun after a warm-up) on the "
                f"{pages.get('lake_orders') or 0:,}-order lake: "
                + ", ".join(f"{k} {v:.2f} s" for k, v in per_page.items())
                + ". Peak memory of that process, which visits every page (Python only: "
                "the pages read Gold with delta-rs, no JVM): "
                f"{_fmt(pages.get('peak_memory_gb'), ' GB', 2)}.",
            ]
    stream = (r.get("stream") or {}).get("result")
    if isinstance(stream, dict):
        lines += [
            "",
            "## Live stream",
            "",
            f"`scripts/bench_stream.py`: {_fmt(r['stream_events_per_second'], ' events/s')} "
            f"draining a backlog; produce-to-visible latency p50 "
            f"{_fmt(stream.get('stream_latency_p50_seconds'), ' s', 2)}, p95 "
            f"{_fmt(r['stream_latency_p95_seconds'], ' s', 2)}.",
        ]
    lines += [
        "",
        "## How it is measured",
        "",
        "- Each measurement runs in a fresh worker process; peak memory is the summed RSS of "
        "that process and its children (the JVM), sampled every 0.25 s (shared pages count "
        "once per process, so it is an upper bound; a child still sharing its parent's "
        "address space, a command the JVM has started but not yet exec'd, is not counted "
        "again).",
        "- ShopLake time is `pipeline.runner.run('all')` from an empty lake (Bronze, Silver "
        "with its MERGE and quarantine, the dimensional model, Gold and the quality records), "
        "not counting session start, which is measured on its own.",
        f"- At the largest size the session is warm, as the issue asks: the worker first runs "
        f"the pipeline once on a {r.get('warmup_orders') or 'small'}-order scratch lake "
        "(untimed), "
        + (
            "then a full run of the largest lake (the session's first at this size, which "
            "compiles the generated code later runs reuse: its seconds are in the headline), "
            "drops its tables, "
            if r.get("first_full_seconds") is not None
            else ""
        )
        + "then the full run, then the append and the incremental run in the same "
        "session, as in the app. The smaller sizes run in a fresh session: their times "
        "include the JVM's warm-up (about 45 s of class loading and compilation here), which "
        "weighs most at 100,000 orders. The largest size's peak memory covers its whole "
        "worker (warm-up, full run and increment).",
        "- DuckDB runs `pipeline/bench/duckdb_baseline.py`: the same rules over the same "
        "files, every layer persisted to a DuckDB file, all cores (DuckDB's default). "
        "Its Gold is compared row by row with Spark's (money exactly, floats to 1e-9) "
        "before any ratio is reported.",
        "- Figures are medians; the spread (min-max) and the run count are in the tables and "
        "`latest.json`. Repetitions are cut when the 20-minute budget would be exceeded.",
        "- Small lake: the fresh processes are `python -m pipeline run all` started by the "
        "bench on copies of the landing files, first of all its measurements, and timed from "
        "outside (interpreter and JVM start included); the warm session is one worker "
        "(`pipeline/bench/run_cost.py`) that warms up on a 2,000-order scratch lake and with "
        "one untimed full/incremental pair on the same files (a session the app keeps has "
        "run its lake before), then "
        "runs timed full/incremental pairs on new copies of the same files, as many as a fifth of "
        "the budget allows (at most "
        f"{(r.get('small_lake') or {}).get('warm_pairs_planned', 3)}). Spark jobs are "
        "the jobs the session started during the run (its bookkeeping outside the steps "
        "included; a step's are those of its job group); Delta commits are the commit files "
        "the run added to the lake's tables' logs. Steps may run at once, so their seconds can "
        "add up to more than the run's.",
        "- Process CPU seconds (user + system of the worker's whole process tree, the JVM "
        "included; for ShopLake those of the timed run, for DuckDB the whole worker) are given "
        "beside wall time: a busy shared machine inflates wall time far more than CPU time.",
        "- `make test` (full mode only) is started by the bench after everything else and timed "
        "from outside, make's set-up check included, with the caller's environment minus "
        "`SHOPLAKE_*`; target 5 takes its minutes only when it passed.",
    ]
    if r["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n.splitlines()[0]}" for n in r["notes"]]
    return "\n".join(lines) + "\n"


# Sections measured by other scripts (side-by-side pairs of two checkouts, the app's
# memory) live below this line in BENCHMARKS.md; `make bench` keeps them as they are.
BY_HAND = "<!-- below: measured by other scripts, kept as is by make bench -->"


def report_text(result: dict, previous: str | None) -> str:
    """The rendered report, followed by the part of ``previous`` below ``BY_HAND``."""
    text = render_markdown(result)
    if previous and BY_HAND in previous:
        text += "\n" + BY_HAND + previous.split(BY_HAND, 1)[1]
    return text


def _should_write_report(mode: str, path: Path) -> bool:
    """A quick smoke run must not overwrite the numbers of a full run."""
    if mode == "full" or not path.is_file():
        return True
    return "Mode: quick." in path.read_text(errors="replace")


def run_bench(
    quick: bool = False,
    results_dir: Path = RESULTS_DIR,
    report: Path = REPORT,
    plan: Plan | None = None,
) -> int:
    plan = plan or (QUICK if quick else FULL)
    work = Path(tempfile.mkdtemp(prefix="shoplake-bench-"))
    env = dict(os.environ)
    env.setdefault("SHOPLAKE_SPARK_UI", "false")  # no port clash with a running app
    env.pop("SHOPLAKE_EXPECTATIONS", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    print(
        f"ShopLake benchmark ({plan.mode}: {', '.join(f'{s:,}' for s in plan.sizes)} orders); "
        f"work folder {work}",
        file=sys.stderr,
    )
    try:
        result = measure(plan, work, env)
    except WorkerFailed as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, default=str) + "\n"
    (results_dir / f"{plan.mode}.json").write_text(text)
    if _should_write_report(plan.mode, report):  # latest.json is the report's raw figures
        (results_dir / "latest.json").write_text(text)
        previous = report.read_text() if report.is_file() else None
        report.write_text(report_text(result, previous))
    missing = [k for k in REQUIRED_KEYS if result.get(k) is None]
    print(
        f"benchmark done in {result['elapsed_seconds'] / 60:.1f} min: full "
        f"{_fmt(result['full_seconds'], ' s')} vs DuckDB {_fmt(result['duckdb_seconds'], ' s')} "
        f"({_fmt(result['full_ratio_vs_duckdb'], 'x', 2)}), Gold equal: "
        f"{result['results_equal']}; wrote {results_dir / 'latest.json'}"
        + (f"; null: {', '.join(missing)}" if missing else "")
    )
    return 0 if result["results_equal"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "worker":
        return worker_main(argv[1:])
    args = _parser().parse_args(argv)
    return run_bench(plan=plan_for(args))


def plan_for(args) -> Plan:
    """The mode's plan, or a custom one (e.g. the quality overhead at 1,000,000 orders)."""
    plan = QUICK if getattr(args, "quick", False) else FULL
    sizes_wanted = getattr(args, "sizes", None)
    dq_orders = getattr(args, "dq_orders", None)
    budget = getattr(args, "budget_minutes", None)
    small = getattr(args, "small_orders", None)
    if not (sizes_wanted or dq_orders or budget or small is not None):
        return plan
    sizes = tuple(sorted(set(sizes_wanted or plan.sizes) | ({dq_orders} if dq_orders else set())))
    return dataclasses.replace(
        plan,
        mode="custom",
        sizes=sizes,
        spark_reps={s: plan.spark_reps.get(s, 1) for s in sizes},
        dq_orders=dq_orders or min(sizes),
        budget_seconds=budget * 60.0 if budget else plan.budget_seconds,
        small_orders=plan.small_orders if small is None else small,
    )


def _parser():
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.harness")
    parser.add_argument("--quick", action="store_true")
    add_plan_options(parser)
    return parser


def add_plan_options(parser) -> None:
    parser.add_argument(
        "--sizes", type=int, nargs="+", help="order counts to run instead of the mode's"
    )
    parser.add_argument(
        "--dq-orders", type=int, help="the size at which the quality overhead is measured"
    )
    parser.add_argument("--budget-minutes", type=float, help="time budget of the whole run")
    parser.add_argument(
        "--small-orders", type=int, help="size of the small-lake section (0: leave it out)"
    )


if __name__ == "__main__":
    sys.exit(main())
