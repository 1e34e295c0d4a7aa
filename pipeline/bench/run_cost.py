"""What a run costs on a small lake: seconds, Spark jobs and Delta commits, per step.

A run's floor on a small lake is its fixed cost (job starts, Delta log reads,
commits), not its data, so the figures that explain it are counts, and they
do not depend on how busy the machine is. ``measure`` generates a lake,
optionally warms the session on a scratch lake first (the app keeps its
session warm), times a full ``run all``, appends a batch and times the
incremental run in the same session.

    python -m pipeline.bench.run_cost --orders 10000 --warm
    python -m pipeline.bench.run_cost --orders 10000 --warm --fresh 1 --json FILE

``--fresh N`` also times N ``python -m pipeline run all`` processes (JVM start
included) on copies of the landing files; ``--json`` records the figures with
the machine's load and the code's commit (the before figures of
``bench/results/before-run-cost.json`` are made this way from a checkout of
the code before).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LAYERS = ("bronze", "silver", "gold")
ROOT = Path(__file__).resolve().parents[2]  # the checkout whose code is measured


def delta_commits(lake: Path) -> int:
    """Commit files in every table's log under the lake root."""
    return sum(1 for _ in lake.glob("*/*/_delta_log/*.json"))


def _legacy_counts(spark, lake: Path, counted: dict[str, tuple[int, int]]):
    """For a runner that does not count (the code before the run-cost work): steps ran
    one after another under the run's job group, so the differences around each are its own."""
    import pipeline.runner as runner

    original = runner.steps_for

    def wrap(step):
        def counted_run(ctx):
            tracker = spark.sparkContext.statusTracker()
            jobs0, commits0 = len(tracker.getJobIdsForGroup(ctx.run_id)), delta_commits(lake)
            try:
                return step.run(ctx)
            finally:
                counted[step.name] = (
                    len(tracker.getJobIdsForGroup(ctx.run_id)) - jobs0,
                    delta_commits(lake) - commits0,
                )

        return type(step)(step.name, step.layer, step.inputs, step.outputs, counted_run)

    runner.steps_for = lambda target: [wrap(s) for s in original(target)]
    return original


def jobs_started(spark) -> int | None:
    """Spark jobs this session has started (the scheduler numbers them 0, 1, 2, ...).

    The run's total, bookkeeping outside any step included, is the difference
    around it; None where the scheduler is out of reach (Spark Connect).
    """
    try:
        return int(spark.sparkContext._jsc.sc().dagScheduler().numTotalJobs())
    except Exception:
        return None


def timed_run(spark, lake: Path, kind: str) -> dict[str, Any]:
    import pipeline.runner as runner

    legacy = "spark_jobs" not in runner.StepResult.__dataclass_fields__
    counted: dict[str, tuple[int, int]] = {}
    original = _legacy_counts(spark, lake, counted) if legacy else None
    commits_before, jobs_before = delta_commits(lake), jobs_started(spark)
    t0 = time.perf_counter()
    try:
        result = runner.run("all", spark=spark)
    finally:
        if original is not None:
            runner.steps_for = original
    seconds = time.perf_counter() - t0
    jobs_after = jobs_started(spark)
    if not result.ok:
        raise RuntimeError(f"the {kind} run failed: {result.error}")
    steps = {
        s.step: {
            "seconds": round(s.seconds, 3),
            "jobs": counted[s.step][0] if legacy else s.spark_jobs,
            "commits": counted[s.step][1] if legacy else s.delta_commits,
            "rows_in": s.rows_in,
            "note": "; ".join(s.notes)[:120],
        }
        for s in result.steps
    }
    step_jobs = sum(s["jobs"] or 0 for s in steps.values())
    return {
        "kind": kind,
        "seconds": round(seconds, 3),
        # the whole run's; the steps' sum leaves out the run's own bookkeeping
        "jobs": step_jobs if None in (jobs_before, jobs_after) else jobs_after - jobs_before,
        "step_jobs": step_jobs,
        "commits": delta_commits(lake) - commits_before,
        "layers": {
            layer: round(sum(v["seconds"] for k, v in steps.items() if k.startswith(layer)), 3)
            for layer in LAYERS
        },
        "steps": steps,
    }


def warm_up(spark, orders: int = 2_000, seed: int = 7) -> float:
    """One untimed run on a scratch lake: the JVM loads and compiles the code a run uses."""
    from pipeline.runner import run
    from pipeline.sources.generate import generate

    scratch = Path(tempfile.mkdtemp(prefix="shoplake-warmup-"))
    previous = os.environ.get("SHOPLAKE_LAKE")
    os.environ["SHOPLAKE_LAKE"] = str(scratch)
    t0 = time.perf_counter()
    try:
        generate(scratch, orders=orders, batches=1, seed=seed)
        result = run("all", spark=spark)
        if not result.ok:
            raise RuntimeError(f"the warm-up run failed: {result.error}")
    finally:
        if previous is None:
            os.environ.pop("SHOPLAKE_LAKE", None)
        else:
            os.environ["SHOPLAKE_LAKE"] = previous
        shutil.rmtree(scratch, ignore_errors=True)
    return round(time.perf_counter() - t0, 3)


def measure(
    orders: int,
    append_share: float = 0.01,
    warm: bool = False,
    seed: int = 42,
    landing: Path | None = None,
    pairs: int = 1,
    budget_seconds: float | None = None,
    settle_pairs: int = 0,
) -> dict[str, Any]:
    """Full run, then a ``append_share`` append and its incremental run, in one session.

    ``pairs`` repeats that full/incremental pair on new lakes in the same session
    (medians need several), starting another only while ``budget_seconds`` (for
    the pairs) still allows one more like the ones before. ``landing`` (a landing
    folder) is copied into each lake instead of generating one, so that another
    engine can be timed on the very same files. ``full`` and ``incremental`` are
    the first pair's; ``pairs`` holds them all.

    ``settle_pairs`` pairs at the same size run first and are kept apart
    (``settle``), not in ``pairs``: after a warm-up on a small scratch lake the
    JIT is still compiling the code a run at this size uses (a warm 10k session
    measured 21.2, 13.4, 12.5, 10.4 and 9.9 s for its first five full runs), and
    a session the app keeps has run its lake before (docs/decisions.md).
    """
    from pipeline.sources.generate import generate
    from pipeline.spark import get_spark

    t0 = time.perf_counter()
    spark = get_spark("shoplake-run-cost")
    out: dict[str, Any] = {
        "orders": orders,
        "session": "warmed" if warm else "fresh",
        "session_start_seconds": round(time.perf_counter() - t0, 3),
    }
    if warm:
        out["warmup_seconds"] = warm_up(spark)
    out["pairs"] = []
    if settle_pairs:
        out["settle"] = []
    started = time.perf_counter()
    for n in range(settle_pairs + pairs):
        timed = n - settle_pairs
        spent = time.perf_counter() - started
        if timed > 0 and budget_seconds is not None and spent + spent / n > budget_seconds:
            break
        lake = Path(tempfile.mkdtemp(prefix="shoplake-runcost-"))
        os.environ["SHOPLAKE_LAKE"] = str(lake)
        try:
            if landing is not None:
                shutil.copytree(landing, lake / "landing")
            else:
                generate(lake, orders=orders, batches=3, seed=seed)
            pair = {"full": timed_run(spark, lake, "full")}
            if append_share:
                appended = max(1, int(orders * append_share))
                generate(lake, orders=appended, seed=seed, append=True)
                pair["incremental"] = timed_run(spark, lake, "incremental")
        finally:
            shutil.rmtree(lake, ignore_errors=True)
        out["pairs" if timed >= 0 else "settle"].append(pair)
    out.update(out["pairs"][0])
    return out


def _step_seconds(lake: Path) -> dict[str, float]:
    """Per-step seconds of the lake's last run, from its gold.pipeline_runs (delta-rs)."""
    from deltalake import DeltaTable

    runs = DeltaTable(str(lake / "gold" / "pipeline_runs")).to_pyarrow_table().to_pandas()
    last = runs[runs["run_id"] == runs["run_id"].max()]
    took = (last["finished_at"] - last["started_at"]).dt.total_seconds()
    return {
        step: {"seconds": round(float(s), 3)} for step, s in zip(last["step"], took, strict=True)
    }


def fresh_process(
    landing: Path, reps: int = 1, root: Path = ROOT, env: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Time ``python -m pipeline run all`` in new processes, each on a fresh copy of
    ``landing``: the wall clock of the whole process, JVM start included, as a user
    at the terminal sees it. The code is ``root``'s (run from there)."""
    from pipeline.cli import run_all_in_new_process

    out = []
    for _ in range(reps):
        lake = Path(tempfile.mkdtemp(prefix="shoplake-fresh-"))
        try:
            shutil.copytree(landing, lake / "landing")
            run_env = {**(env or os.environ), "SHOPLAKE_LAKE": str(lake), "PYTHONPATH": str(root)}
            run_env.setdefault("SHOPLAKE_SPARK_UI", "false")
            t0 = time.perf_counter()
            done = run_all_in_new_process(run_env, root)
            seconds = time.perf_counter() - t0
            if done.returncode != 0:
                tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
                raise RuntimeError("python -m pipeline run all failed: " + " | ".join(tail))
            out.append(
                {
                    "seconds": round(seconds, 3),
                    "commits": delta_commits(lake),
                    "steps": _step_seconds(lake),
                }
            )
        finally:
            shutil.rmtree(lake, ignore_errors=True)
    return out


def machine_load() -> dict[str, Any]:
    """The shared machine's load now: times are only comparable at similar load."""
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return {
        "at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "uptime": uptime,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cores": os.cpu_count(),
    }


def code_version(root: Path = ROOT) -> str | None:
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return None
    return (head + (" + uncommitted changes" if dirty else "")) or None


def render(result: dict[str, Any]) -> str:
    lines = [
        f"{result['orders']:,} orders, {result['session']} session "
        f"(start {result['session_start_seconds']} s"
        + (f", warm-up {result['warmup_seconds']} s)" if "warmup_seconds" in result else ")")
    ]
    for r in result.get("fresh_process", []):
        lines.append(f"  fresh process (python -m pipeline run all): {r['seconds']:.1f} s")
    for kind in ("full", "incremental"):
        r = result.get(kind)
        if not r:
            continue
        lines.append(
            f"  {kind}: {r['seconds']:.1f} s, {r['jobs']} Spark jobs, {r['commits']} Delta commits"
        )
        for name, s in r["steps"].items():
            lines.append(
                f"    {name:<26} {s['seconds']:6.1f} s {s['jobs'] or 0:4d} jobs "
                f"{s['commits']:3d} commits  {s['note']}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--append-share", type=float, default=0.01)
    parser.add_argument("--warm", action="store_true", help="warm the session on a scratch lake")
    parser.add_argument("--pairs", type=int, default=1, help="full/incremental pairs")
    parser.add_argument(
        "--settle", type=int, default=0, help="untimed pairs at this size before the timed ones"
    )
    parser.add_argument(
        "--fresh", type=int, default=0, help="also time N `python -m pipeline run all` processes"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    os.environ.setdefault("SHOPLAKE_SPARK_UI", "false")
    load_before = machine_load()
    result = measure(
        args.orders, args.append_share, args.warm, pairs=args.pairs, settle_pairs=args.settle
    )
    if args.fresh:
        from pipeline.sources.generate import generate

        landing = Path(tempfile.mkdtemp(prefix="shoplake-landing-"))
        try:
            generate(landing, orders=args.orders, batches=3, seed=42)
            result["fresh_process"] = fresh_process(landing / "landing", args.fresh)
        finally:
            shutil.rmtree(landing, ignore_errors=True)
    result["code"] = code_version()
    result["command"] = "python -m pipeline.bench.run_cost " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    result["machine_load"] = {"before": load_before, "after": machine_load()}
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
