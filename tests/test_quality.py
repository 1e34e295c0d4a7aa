"""Expectations: actions, one-pass counts that match the generator's manifest, scores, history."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from pipeline import lake
from pipeline.quality.expectations import (
    Expectation,
    count_failures,
    failure_aggregation,
    flag,
)
from pipeline.quality.report import build_report
from pipeline.runner import run
from pipeline.silver import orders
from tests.conftest import lake_at

INFORMATIONAL = {"mixed_timestamp_format", "status_variant"}


def _manifest_totals(landing: Path) -> Counter:
    totals: Counter = Counter()
    for path in sorted((landing / "_manifests").glob("batch-*.json")):
        manifest = json.loads(path.read_text())
        for source, defects in manifest["defects"].items():
            for rule, count in defects.items():
                if rule not in INFORMATIONAL:
                    totals[(source, rule)] += count
    return totals


def test_dq_results_match_the_manifest(spark, use_lake):
    want = _manifest_totals(use_lake / "landing")
    assert sum(want.values()) > 0, "the seeded lake has defects"
    dq = lake.read(spark, "gold", "dq_results").filter(F.col("layer") == "silver").collect()
    got = {(r["table"], r["rule"]): r["rows_failed"] for r in dq}
    mismatches = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
    assert mismatches == {}


def test_warn_keeps_quarantine_moves(spark, use_lake):
    customers = lake.read(spark, "silver", "customers")
    assert customers.filter(F.col("email").isNull()).count() > 0  # invalid emails kept, nulled
    quarantine = lake.read(spark, "silver", "quarantine")
    assert quarantine.filter(F.array_contains("rules", "invalid_email")).count() == 0
    assert quarantine.filter(F.array_contains("rules", "unknown_status")).count() > 0
    silver_ids = {r[0] for r in lake.read(spark, "silver", "orders").select("order_id").collect()}
    quarantined_keys = {
        r[0]
        for r in quarantine.filter(F.col("source_table") == "orders")
        .filter(~F.array_contains("rules", "conflicting_versions"))
        .select("record_key")
        .collect()
    }
    assert not (silver_ids & quarantined_keys)


def test_all_rule_counts_come_from_one_scan(spark):
    df = spark.range(3).select(
        F.when(F.col("id") == 0, 1).when(F.col("id") == 1, 5).alias("x")
    )  # 1, 5, null
    rules = [
        Expectation("positive", "x > 0", "quarantine"),
        Expectation("small", "x < 3", "warn"),
        Expectation("present", "x IS NOT NULL", "fail"),
    ]
    counts = count_failures(flag(df, rules), rules)
    assert {c.rule: c.rows_failed for c in counts} == {"positive": 1, "small": 2, "present": 1}
    plan = failure_aggregation(flag(df, rules), rules)._jdf.queryExecution().optimizedPlan()
    text = plan.toString()
    assert text.count("Range (") == 1, text
    assert text.count("Aggregate") == 1, text


@pytest.fixture()
def copied_lake(populated_lake, tmp_path) -> Path:
    target = tmp_path / "lake"
    shutil.copytree(populated_lake, target)
    return target


def test_fail_rule_stops_the_step_and_leaves_the_table(spark, copied_lake, monkeypatch):
    with lake_at(copied_lake):
        before = DeltaTable.forPath(spark, lake.path("silver", "orders")).history(1).first()
        rule = Expectation("order_id_is_numeric", "order_id RLIKE '^[0-9]+$'", "fail")
        monkeypatch.setattr(orders, "EXPECTATIONS", [*orders.EXPECTATIONS, rule])
        result = run("silver", spark=spark)
        assert not result.ok
        assert "order_id_is_numeric" in (result.error or "")
        failed = [s for s in result.steps if s.status == "failed"]
        assert [s.step for s in failed] == ["silver.orders"]
        after = DeltaTable.forPath(spark, lake.path("silver", "orders")).history(1).first()
        assert after["version"] == before["version"]
        dq = lake.read(spark, "gold", "dq_results").filter(F.col("run_id") == result.run_id)
        fired = dq.filter(F.col("rule") == "order_id_is_numeric").first()
        assert fired["action"] == "fail" and fired["rows_failed"] > 0
        report = build_report()
        assert report["fail_fired"]
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", "quality"],
            env={**os.environ, "SHOPLAKE_LAKE": str(copied_lake)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, done.stdout + done.stderr
        assert "order_id_is_numeric" in done.stdout


def test_scores_per_table_and_layer(use_lake):
    report = build_report()
    scored = {(t["layer"], t["table"]): t["score"] for t in report["tables"]}
    for layer, table in [("bronze", "orders"), ("silver", "orders"), ("gold", "daily_sales")]:
        assert 0.0 <= scored[(layer, table)] <= 1.0
    assert scored[("silver", "orders")] < 1.0, "the seeded data has defects"
    assert all(r["balanced"] for r in report["reconciliation"])
    failing = {(f["table"], f["rule"]): f for f in report["failing"]}
    assert failing[("orders", "unknown_status")]["examples"], "sample records come from quarantine"
