"""The benchmark compares equal work: DuckDB's baseline must reproduce Spark's Gold exactly.

Fast on purpose: it reuses the session's populated lake (one Spark run shared
with the pipeline tests) and runs DuckDB in memory on the same landing files.
"""

from __future__ import annotations

import os

import pytest
from pyspark.sql import functions as F

from pipeline import lake
from pipeline.bench import harness
from pipeline.bench.duckdb_baseline import GOLD_TABLES, compare, run_baseline

GOLD = GOLD_TABLES  # the catalog's Gold tables that the baseline defines


@pytest.fixture(scope="module")
def baseline(populated_lake):
    return run_baseline(populated_lake / "landing")


@pytest.mark.parametrize("table", GOLD)
def test_duckdb_gold_equals_spark_gold(spark, use_lake, baseline, table):
    spark_rows = lake.read(spark, "gold", table).toPandas()
    verdict = compare(table, spark_rows, baseline.tables[table])
    assert verdict["rows"] > 0
    assert verdict["equal"], verdict["mismatches"]


def test_duckdb_silver_counts_equal_spark_reconciliation(spark, use_lake, baseline):
    runs = (
        lake.read(spark, "gold", "pipeline_runs")
        .filter(F.col("step").startswith("silver.") & F.col("reconciliation").isNotNull())
        .orderBy("finished_at")
        .collect()
    )
    spark_counts = {r["step"].split(".", 1)[1]: dict(r["reconciliation"]) for r in runs}
    for source, counts in baseline.reconciliation.items():
        wanted = {k: counts[k] for k in ("bronze", "silver", "quarantined", "duplicate")}
        wanted["superseded"] = counts["superseded"]
        assert {k: spark_counts[source][k] for k in wanted} == wanted, source


def test_baseline_layers_are_timed(baseline):
    assert set(baseline.seconds) == {"bronze", "silver", "gold"}
    assert all(v >= 0 for v in baseline.seconds.values())


def test_process_tree_memory_is_sampled():
    assert harness.tree_rss(os.getpid()) > 10 * 1024**2


def test_a_child_sharing_its_parents_pages_is_counted_once():
    """A fork that has not run a program of its own reports its parent's pages as its
    own (a vfork's child, for a moment, the whole JVM): the tree counts them once,
    while a child running a program of its own is counted."""
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import os, subprocess, sys, time\n"
        "held = bytearray(300 * 1024 * 1024)\n"
        "held[::4096] = b'x' * len(held[::4096])\n"
        "if os.fork() == 0:\n"
        "    time.sleep(60); os._exit(0)\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; x = bytearray(100 << 20); "
        "x[::4096] = bytes(len(x[::4096])); time.sleep(60)'])\n"
        "print('ready', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(1.0)  # the program touches its 100 MB
        total, cpu = harness.tree_sample(proc.pid)
        assert len(cpu) == 3  # the parent, the fork and the program, all seen
        # 300 MB once, the program's 100 MB, interpreters; 700+ MB counted the fork too
        assert 400 * 1024**2 < total < 600 * 1024**2, total / 1024**2
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _result(fill: float | None, **fields) -> dict:
    """A latest.json-shaped result: every required key set to ``fill``, then ``fields``."""
    result = {key: fill for key in harness.REQUIRED_KEYS}
    result.update(
        generated_at="2026-01-01T00:00:00Z",
        elapsed_seconds=60.0,
        results_equal=True,
        steps={},
        scaling=[],
        incremental={},
        dq={},
        equality={"by_orders": {}},
        machine=harness.machine_info((1.0, 1.0, 1.0)),
        notes=[],
    )
    result.update(fields)
    return result


def test_report_has_every_required_key_and_renders():
    """The shape of latest.json and BENCHMARKS.md, without running the (minutes-long) bench."""
    spread = harness.stats([2.0, 1.0, 3.0])
    assert spread == {"median": 2.0, "min": 1.0, "max": 3.0, "runs": 3, "values": [2.0, 1.0, 3.0]}
    result = _result(
        1.0,
        mode="quick",
        orders=10_000,
        duckdb_peak_memory_gb=0.2,
        steps={
            layer: {"shoplake_seconds": 1.0, "duckdb_seconds": 0.5, "ratio_vs_duckdb": 2.0}
            for layer in harness.LAYERS
        },
        scaling=[
            {
                "orders": 10_000,
                "rows": {"orders": 12_000, "order_items": 30_000},
                "shoplake_seconds": spread,
                "peak_memory_gb": 1.5,
                "duckdb_seconds": harness.stats([0.5]),
                "duckdb_peak_memory_gb": 0.2,
                "ratio_vs_duckdb": 4.0,
            }
        ],
        equality={"by_orders": {"10000": {"equal": True}}},
        notes=["a note"],
    )
    text = harness.render_markdown(result)
    assert "| 10,000 |" in text and "Mode: quick." in text and "- a note" in text
    assert result["machine"]["cores"] and result["machine"]["memory_gb"]


def test_the_run_with_nothing_new_is_reported_beside_the_increment():
    incremental = {
        "base_orders": 1_000_000,
        "orders_appended": 10_000,
        "seconds": 40.0,
        "fraction_of_full": 0.4,
        "nothing_new": harness._nothing_new(
            {"seconds": 1.44, "cpu_seconds": 2.5, "ok": True, "error": None, "jobs": 9}
            | {"commits": 3, "gold_kept": 7}
        ),
    }
    per_layer = {"shoplake_seconds": 1.0, "duckdb_seconds": 0.5, "ratio_vs_duckdb": 2.0}
    result = _result(
        1.0,
        mode="full",
        orders=1_000_000,
        steps=dict.fromkeys(harness.LAYERS, per_layer),
        incremental=incremental,
    )
    text = harness.render_markdown(result)
    assert "(nothing new) took 1.4 s (9 Spark jobs, 3 Delta commits; 7 Gold tables kept" in text
    assert harness._nothing_new(None) is None


def test_the_sessions_first_large_run_is_shown_beside_the_timed_one():
    """The full mode's largest worker runs the lake once before the timed run (it compiles
    the code the timed run reuses); that first run's seconds stay in the report."""
    assert harness.FULL.large_settle_runs == 1 and harness.QUICK.large_settle_runs == 0
    first = {"seconds": 120.5, "cpu_seconds": 230.0, "ok": True, "steps": {}}
    assert harness._first_run([{"settle": [first]}]) == {
        "seconds": 120.5,
        "cpu_seconds": 230.0,
        "ok": True,
    }
    assert harness._first_run([{"settle": []}]) is None and harness._first_run([]) is None
    shown = harness.render_markdown(
        _result(
            2.0,
            mode="full",
            orders=1_000_000,
            first_full_seconds=120.5,
            first_full_ratio_vs_duckdb=6.03,
        )
    )
    assert "the session's first at this size" in shown and "120.5 s (6.03x DuckDB)" in shown
    assert "drops its tables" in shown
    hidden = harness.render_markdown(
        _result(2.0, mode="full", orders=1_000_000, first_full_seconds=None)
    )
    assert "the session's first at this size" not in hidden and "drops its tables" not in hidden


def _run(seconds: float, jobs: int, commits: int, steps: dict[str, tuple]) -> dict:
    return {
        "seconds": seconds,
        "jobs": jobs,
        "commits": commits,
        "steps": {n: {"seconds": s, "jobs": j, "commits": c} for n, (s, j, c) in steps.items()},
    }


def test_run_summary_takes_medians_per_run_and_per_step():
    runs = [
        _run(10.0, 40, 8, {"bronze.orders": (2.0, 5, 1), "silver.orders": (8.0, 35, 2)}),
        _run(14.0, 44, 8, {"bronze.orders": (4.0, 5, 1), "silver.orders": (10.0, 39, 2)}),
        _run(12.0, 42, 9, {"bronze.orders": (3.0, 7, 1)}),
    ]
    summary = harness.run_summary(runs)
    assert summary["seconds"]["median"] == 12.0 and summary["seconds"]["runs"] == 3
    assert (summary["jobs"], summary["commits"]) == (42, 8)
    assert summary["steps"]["bronze.orders"] == {"seconds": 3.0, "jobs": 5, "commits": 1}
    assert summary["steps"]["silver.orders"] == {"seconds": 9.0, "jobs": 37, "commits": 2}


def test_small_lake_section_renders_before_after_and_targets():
    """The small-lake section and the issue-14 targets, from a synthetic result."""
    before_full = _run(
        60.0, 400, 33, {"bronze.orders": (6.0, 20, 2), "silver.products": (19.5, 60, 3)}
    )
    before_inc = _run(
        90.0, 547, 36, {"bronze.orders": (5.0, 22, 2), "silver.products": (20.0, 61, 3)}
    )
    after_full = _run(12.0, 40, 9, {"bronze.orders": (3.0, 4, 1), "silver.catalog": (5.0, 9, 1)})
    after_inc = _run(8.0, 30, 9, {"bronze.orders": (2.0, 4, 1), "silver.catalog": (3.0, 6, 1)})
    result = _result(
        None,
        mode="full",
        orders=1_000_000,
        full_ratio_vs_duckdb=3.5,
        incremental_fraction=0.2,
        peak_memory_gb=4.5,
        incremental={"ratio_vs_duckdb_recompute": 0.5},
        before={
            "orders": 10_000,
            "full": before_full,
            "incremental": before_inc,
            "fresh_process": [{"seconds": 88.0, "commits": 33}],
            "code": "33abf1f",
            "large": {"orders": 1_000_000, "full_ratio_vs_duckdb": 7.97},
            "command": "python -m pipeline.bench.run_cost --orders 10000 --warm --fresh 1",
            "machine_load": {"before": {"at": "2026-01-01T00:00:00Z", "load_average": [9.5]}},
        },
        make_test={
            "command": "make test",
            "seconds": 754.0,
            "exit_code": 0,
            "counts": {"passed": 346},
            "load_start": [0.4, 1.0, 1.2],
            "load_end": [2.1, 2.0, 1.8],
        },
        small_lake={
            "orders": 10_000,
            "rows": {"orders": 11_600, "order_items": 29_600},
            "fresh_process": {"seconds": harness.stats([50.0, 45.0, 41.0]), "commits": 9},
            "duckdb": {"seconds": harness.stats([0.8]), "layers": {}, "peak_memory_gb": 0.2},
            "warm": {
                "settle": [{"full": 21.2, "incremental": 13.4}],
                "pairs": [{"full": after_full, "incremental": after_inc}],
                "full": harness.run_summary([after_full]),
                "incremental": harness.run_summary([after_inc]),
            },
        },
    )
    result["targets"] = harness.targets(result)
    met = {t["what"].split(":")[0] + t["limit"]: t["met"] for t in result["targets"]}
    assert met["10,000 orders<= 15 s"] is True
    assert met["10,000 orders<= 40 s"] is False  # median 45 s
    assert met["1,000,000 orders<= 0.1x"] is False
    assert met["1,000,000 orders< 1x"] is True
    assert met["1,000,000 orders, warm session<= 4x"] is True
    assert met["1,000,000 orders<= 4 GB"] is False
    assert met["`make test`, timed by the bench after everything else<= 12 min"] is False

    text = harness.render_markdown(result)
    assert "## Small lake (10,000 orders)" in text
    assert "Chromium), started by the bench after all of the above: 12.6 min (346 passed); " in text
    assert "| 5 | `make test`, timed by the bench after everything else | <= 12 min | n/a " in text
    # the untimed pair at the small size is named with its seconds, outside the medians
    assert (
        "Before them, 1 untimed pair(s) on the same files took full 21.2 s, incremental 13.4 s "
        in text
    )
    assert "| `run all`, fresh process | 88.0 s | 45.0 s | 0.51x |" in text
    assert "| `run all`, warm session | 60.0 s | 12.0 s | 0.20x |" in text
    assert "| incremental run after a 1 % append | 90.0 s | 8.0 s | 0.09x |" in text
    # a before file without the run's own job count says its figure is the steps' sum
    assert (
        "| Spark jobs, incremental run (before: its steps' jobs only) | 547 | 30 | 0.05x |" in text
    )
    assert "| Delta commits, full run | 33 | 9 | 0.27x |" in text
    assert "| ShopLake warm `run all` / DuckDB | n/a | 15.00x | |" in text
    assert (
        "| 1 | 10,000 orders: `run all` in a warm session | <= 15 s | 60.0 s | 12.0 s | **met** |"
        in text
    )
    assert "fresh process, JVM start included | <= 40 s | 88.0 s | 45.0 s | **not met** |" in text
    assert (
        "| 2 | 10,000 orders: incremental run after a 1 % append / full run "
        "| <= 1x | 1.50x | 0.67x | **met** |" in text
    )
    # per step: a step on both sides, one renamed away, one new
    assert "| bronze.orders | 6.0 s | 3.0 s | 0.50x | 20 | 4 | 2 | 1 |" in text
    assert "| silver.products | 19.5 s | n/a | n/a | 60 | n/a | 3 | n/a |" in text
    assert "| silver.catalog | n/a | 5.0 s | n/a | n/a | 9 | n/a | 1 |" in text
    assert "| **whole run** | 90.0 s | 8.0 s | 0.09x | 547 | 30 | 36 | 9 |" in text
    assert "load average was [9.5]" in text and "33abf1f" in text
    assert (
        "| 3 | 1,000,000 orders, warm session: full run / DuckDB | <= 4x | 7.97x | 3.50x |" in text
    )

    result["small_lake"]["orders"] = 5_000  # figures of another size are not compared
    text = harness.render_markdown(result)
    assert "No before figures at this size" in text
    assert "| `run all`, warm session | n/a | 12.0 s | n/a |" in text


def test_the_report_keeps_the_sections_measured_by_hand() -> None:
    """`make bench` rewrites its own sections and keeps the ones below the marker."""
    result = _result(1.0, mode="full", orders=10_000, notes=[])
    previous = f"# old\n\nstale figures\n\n{harness.BY_HAND}\n\n## By hand\n\nkept 1.23 s\n"
    text = harness.report_text(result, previous)
    assert "stale figures" not in text
    assert text.endswith(f"{harness.BY_HAND}\n\n## By hand\n\nkept 1.23 s\n")
    assert text.startswith(harness.render_markdown(result))
    assert harness.BY_HAND not in harness.report_text(result, "# old, no marker\n")


def test_make_test_figure_comes_from_a_passing_suite_only():
    """pytest's summary line gives the counts; a failed or timed-out suite gives target 5
    no figure (a fast failure must not pass for a fast suite)."""
    output = (
        "....\n"
        "FAILED tests/test_live.py::test_a - AssertionError: late\n"
        "ERROR tests/test_cli.py::test_b - RuntimeError\n"
        "=========== 340 passed, 2 failed, 1 skipped in 701.23s (0:11:41) ===========\n"
        "make: *** [Makefile:40: test] Error 1\n"
    )
    assert harness.pytest_counts(output) == {"passed": 340, "failed": 2, "skipped": 1}
    assert harness.pytest_counts("no summary here") == {}
    assert harness.failed_tests(output) == [
        "FAILED tests/test_live.py::test_a - AssertionError: late",
        "ERROR tests/test_cli.py::test_b - RuntimeError",
    ]
    base = _result(None, mode="full", orders=1_000_000)
    for code, seconds, expected in ((0, 600.0, 10.0), (2, 300.0, None), (None, 2400.0, None)):
        result = {**base, "make_test": {"seconds": seconds, "exit_code": code, "counts": {}}}
        row = harness.targets(result)[-1]
        assert row["issue_target"] == "5" and row["after"] == expected
        assert row["met"] is (None if expected is None else True)
