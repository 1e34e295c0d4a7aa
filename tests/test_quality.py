"""Expectations: actions, one-pass counts that match the generator's manifest, scores, history."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from pipeline import lake
from pipeline.quality import scores
from pipeline.quality.expectations import (
    Expectation,
    count_failures,
    failure_aggregation,
    flag,
)
from pipeline.quality.report import build_report, report
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


def test_scores_per_table_and_layer(spark, use_lake):
    rep = build_report()
    scored = {(t["layer"], t["table"]): t for t in rep["tables"]}
    for layer, table in [("bronze", "orders"), ("silver", "orders"), ("gold", "daily_sales")]:
        assert 0.0 <= scored[(layer, table)]["score"] <= 1.0
    assert all(r["balanced"] for r in rep["reconciliation"])
    failing = {(f["table"], f["rule"]): f for f in rep["failing"]}
    assert failing[("orders", "unknown_status")]["examples"], "sample records come from quarantine"
    # the score is the share of distinct records that passed, counted here from Silver itself
    quarantine = lake.read(spark, "silver", "quarantine")
    dq = lake.read(spark, "gold", "dq_results").filter(F.col("layer") == "silver").toPandas()
    for source in ("orders", "order_items", "customers"):
        quarantined = quarantine.filter(F.col("source_table") == source).count()
        checked = int(
            dq.loc[(dq["table"] == source) & (dq["rule"] == "missing_key"), "rows_checked"].iloc[0]
        )
        got = scored[("silver", source)]
        assert got["exact"], got
        assert (got["records_checked"], got["records_failed"]) == (checked, quarantined)
        assert got["score"] == pytest.approx(1 - quarantined / checked, abs=1e-6)
    mean_rate = dq.loc[dq["table"] == "orders", "pass_rate"].mean()
    assert scored[("silver", "orders")]["score"] < mean_rate  # not the mean of the rules' rates


# ---------------------------------------------------------------- the score, on recorded rows

T0 = pd.Timestamp("2025-07-01 08:00", tz="UTC")


def _dq(*rows: tuple, run_id: str = "r1", minutes: int = 0) -> pd.DataFrame:
    """gold.dq_results rows from (layer, table, rule, action, rows_checked, rows_failed)."""
    return pd.DataFrame(
        [
            {
                "run_id": run_id,
                "layer": layer,
                "table": table,
                "rule": rule,
                "action": action,
                "rows_checked": checked,
                "rows_failed": failed,
                "pass_rate": 1 - failed / checked if checked else 1.0,
                "checked_at": T0 + pd.Timedelta(minutes=minutes),
            }
            for layer, table, rule, action, checked, failed in rows
        ]
    )


def _runs(run_id: str, step: str, **fates: int) -> pd.DataFrame:
    return pd.DataFrame(
        [{"run_id": run_id, "step": step, "started_at": T0, "reconciliation": fates}]
    )


def _score(dq: pd.DataFrame, runs: pd.DataFrame | None = None) -> dict:
    latest = scores.latest_scores(dq, runs)
    return {f"{r.layer}.{r.table}": r for r in latest.itertuples()}


def test_a_batch_ten_percent_quarantined_scores_ninety():
    # 1,000 records, 100 quarantined by ten rules (10 each): the mean pass rate would say 99 %
    dq = _dq(*[("silver", "orders", f"rule_{i}", "quarantine", 1000, 10) for i in range(10)])
    runs = _runs("r1", "silver.orders", bronze=1000, silver=900, quarantined=100, duplicate=0)
    got = _score(dq, runs)["silver.orders"]
    assert got.score == pytest.approx(0.90)
    assert (got.records_checked, got.records_failed, got.exact) == (1000, 100, True)


def test_a_record_failing_several_rules_counts_once():
    # 150 rule failures, but the step's fates say 100 distinct records were quarantined
    dq = _dq(
        ("silver", "orders", "missing_key", "quarantine", 1000, 100),
        ("silver", "orders", "unknown_status", "quarantine", 1000, 50),
    )
    runs = _runs("r1", "silver.orders", bronze=1010, silver=890, quarantined=100, duplicate=10)
    assert _score(dq, runs)["silver.orders"].score == pytest.approx(0.90)
    # without the fates (an incremental run) the sum is an upper bound: marked inexact
    got = _score(dq)["silver.orders"]
    assert got.score == pytest.approx(0.85) and not got.exact


def test_a_recorded_summary_row_is_exact():
    dq = _dq(
        ("silver", "orders", "missing_key", "quarantine", 1000, 100),
        ("silver", "orders", "unknown_status", "quarantine", 1000, 50),
        ("silver", "orders", scores.SUMMARY_RULE, "summary", 1000, 120),
    )
    got = _score(dq)["silver.orders"]
    assert (got.score, got.exact) == (pytest.approx(0.88), True)
    assert scores.SUMMARY_RULE not in set(scores.rule_results(dq)["rule"])


def test_warn_rules_are_counted_beside_the_score():
    dq = _dq(
        ("silver", "customers", "missing_key", "quarantine", 200, 20),
        ("silver", "customers", "valid_email", "warn", 200, 50),
        ("silver", "customers", "freshness", "warn", 1, 1),
    )
    got = _score(dq)["silver.customers"]
    assert got.score == pytest.approx(0.90)
    assert got.warnings == 51


def test_layers_and_overall_weigh_tables_by_records_checked():
    dq = _dq(
        ("silver", "orders", "missing_key", "quarantine", 1000, 100),
        ("silver", "products", "missing_key", "quarantine", 10, 0),
        ("gold", "daily_sales", "grain_unique", "fail", 90, 0),
    )
    latest = scores.latest_scores(dq)
    layers = scores.layer_scores(latest).set_index("layer")
    assert layers.loc["silver", "score"] == pytest.approx(1 - 100 / 1010)  # not (0.9 + 1) / 2
    assert scores.overall_score(latest) == pytest.approx(1 - 100 / 1100)


def test_a_fired_table_check_fails_every_record():
    dq = _dq(
        ("silver", "orders", "missing_key", "quarantine", 1000, 10),
        ("silver", "orders", "reconciliation", "fail", 1, 1),
    )
    assert _score(dq)["silver.orders"].score == 0.0


def test_live_events_count_each_quarantined_event_once():
    # 100 events, 8 quarantined (the valid ones are what unique_event_id checks), 12 failures
    dq = _dq(
        ("live", "order_events", "no_items", "quarantine", 100, 6),
        ("live", "order_events", "unknown_status", "quarantine", 100, 6),
        ("live", "order_events", scores.LIVE_VALID_RULE, "warn", 92, 3),
    )
    got = _score(dq)["live.order_events"]
    assert (got.score, got.exact, got.warnings) == (pytest.approx(0.92), True, 3)


def test_a_run_that_judged_no_record_keeps_the_last_score():
    first = _dq(("silver", "orders", "missing_key", "quarantine", 1000, 100), run_id="r1")
    # the model step of a later run adds a warn count only; a Bronze run with no new file
    later = _dq(
        ("silver", "orders", "orphan_customer", "warn", 900, 4),
        ("bronze", "orders", "unparseable_line", "warn", 0, 0),
        run_id="r2",
        minutes=60,
    )
    bronze = _dq(("bronze", "orders", "unparseable_line", "warn", 1100, 3), run_id="r1")
    got = _score(pd.concat([first, bronze, later], ignore_index=True))
    assert (got["silver.orders"].run_id, got["silver.orders"].score) == ("r1", pytest.approx(0.9))
    assert (got["bronze.orders"].run_id, got["bronze.orders"].score) == ("r1", 1.0)


def test_rule_pass_rates_stay_within_zero_and_one():
    dq = _dq(("silver", "orders", "superseded_versions", "warn", 10, 25))
    assert scores.rule_results(dq)["pass_rate"].tolist() == [0.0]


def test_report_and_page_functions_agree():
    dq = _dq(
        ("silver", "orders", "missing_key", "quarantine", 1000, 100),
        ("gold", "daily_sales", "grain_unique", "fail", 90, 0),
    )
    rep = report(dq, pd.DataFrame())
    latest = scores.latest_scores(dq)
    assert rep["overall"]["score"] == pytest.approx(scores.overall_score(latest))
    assert [t["score"] for t in rep["tables"]] == pytest.approx(latest["score"].tolist())
    assert [f["rule"] for f in rep["failing"]] == ["missing_key"]
