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
from pipeline.bench.duckdb_baseline import compare, run_baseline

GOLD = ("daily_sales", "category_sales", "customer_rfm", "revenue_anomalies")


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


def test_report_has_every_required_key_and_renders():
    """The shape of latest.json and BENCHMARKS.md, without running the (minutes-long) bench."""
    spread = harness.stats([2.0, 1.0, 3.0])
    assert spread == {"median": 2.0, "min": 1.0, "max": 3.0, "runs": 3, "values": [2.0, 1.0, 3.0]}
    result = {key: 1.0 for key in harness.REQUIRED_KEYS}
    result.update(
        mode="quick",
        generated_at="2026-01-01T00:00:00Z",
        orders=10_000,
        elapsed_seconds=60.0,
        results_equal=True,
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
        incremental={},
        dq={},
        equality={"by_orders": {"10000": {"equal": True}}},
        machine=harness.machine_info((1.0, 1.0, 1.0)),
        notes=["a note"],
    )
    text = harness.render_markdown(result)
    assert "| 10,000 |" in text and "Mode: quick." in text and "- a note" in text
    assert result["machine"]["cores"] and result["machine"]["memory_gb"]
