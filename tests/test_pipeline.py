"""The batch medallion against an independent reading of the contract (tests/reference.py)."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from pipeline import catalog, lake
from pipeline.runner import run
from pipeline.sources.generate import generate
from tests import reference
from tests.conftest import lake_at
from tests.test_catalog import assert_written_columns


@pytest.fixture(scope="module")
def expected(populated_lake) -> reference.Expected:
    return reference.compute(populated_lake / "landing")


def _gold(spark, table: str) -> list[dict]:
    return [r.asDict() for r in lake.read(spark, "gold", table).collect()]


def test_daily_sales_matches_reference(spark, use_lake, expected):
    rows = {r["order_date"]: r for r in _gold(spark, "daily_sales")}
    assert set(rows) == set(expected.daily_sales)
    for day, want in expected.daily_sales.items():
        got = rows[day]
        for column in reference.DAILY_COLUMNS:
            assert got[column] == want[column], (day, column, got[column], want[column])


def test_category_sales_matches_reference(spark, use_lake, expected):
    rows = {(r["month"], r["category"]): r for r in _gold(spark, "category_sales")}
    assert set(rows) == set(expected.category_sales)
    for key, want in expected.category_sales.items():
        got = rows[key]
        for column in ("orders", "units", "net_revenue", "gross_margin"):
            assert got[column] == want[column], (key, column)
        assert math.isclose(got["revenue_share"], want["revenue_share"], rel_tol=1e-9)


def test_unknown_category_has_no_margin(spark, use_lake, expected):
    """Lines of unknown products have an unknown cost: no margin is invented for them."""
    unknown = [r for r in _gold(spark, "category_sales") if r["category"] == "Unknown"]
    assert unknown, "the seeded data has items of unknown products"
    assert all(r["net_revenue"] > 0 and r["gross_margin"] is None for r in unknown)
    known = [r for r in _gold(spark, "category_sales") if r["category"] != "Unknown"]
    assert all(r["gross_margin"] is not None for r in known)


def test_customer_rfm_matches_reference(spark, use_lake, expected):
    rows = {r["customer_id"]: r for r in _gold(spark, "customer_rfm")}
    assert set(rows) == set(expected.customer_rfm)
    for cid, want in expected.customer_rfm.items():
        got = rows[cid]
        for column, value in want.items():
            assert got[column] == value, (cid, column, got[column], value)


def test_revenue_anomalies_match_reference(spark, use_lake, expected):
    rows = {r["order_date"]: r for r in _gold(spark, "revenue_anomalies")}
    assert set(rows) == set(expected.revenue_anomalies)
    written = lake.read(spark, "gold", "revenue_anomalies").columns
    assert tuple(written) == catalog.columns("gold", "revenue_anomalies")
    cent = Decimal("0.01")
    for day, want in expected.revenue_anomalies.items():
        got = rows[day]
        assert got["net_revenue"] == want["net_revenue"]
        for column in ("expected_revenue", "lower_bound", "upper_bound"):
            if want[column] is None:
                assert got[column] is None, (day, column)
            else:  # exp/log of two libraries may differ in the last bit: a cent at most
                assert abs(got[column] - want[column]) <= cent, (day, column)
        if want["score"] is None:
            assert got["score"] is None, day
        else:
            assert math.isclose(got["score"], want["score"], rel_tol=1e-9, abs_tol=1e-9), day
        assert got["is_anomaly"] == want["is_anomaly"], day
        assert got["direction"] == want["direction"], day
    banded = [w for w in expected.revenue_anomalies.values() if w["lower_bound"] is not None]
    assert len(banded) > 300, "a year of data: all but the first weeks have a band"
    assert all(0 <= w["lower_bound"] <= w["expected_revenue"] <= w["upper_bound"] for w in banded)


def test_reconciliation_identity_for_every_table(spark, use_lake, expected):
    quarantine = lake.read(spark, "silver", "quarantine")
    for source, ref in expected.refined.items():
        bronze = lake.read(spark, "bronze", source).count()
        silver = lake.read(spark, "silver", source).count()
        quarantined = quarantine.filter(F.col("source_table") == source).count()
        assert bronze == ref.bronze
        assert silver == len(ref.rows)
        assert quarantined == len(ref.quarantined)
        assert bronze == silver + quarantined + ref.duplicates + ref.superseded, source
        recorded = (
            lake.read(spark, "gold", "pipeline_runs")
            .filter(F.col("step") == f"silver.{source}")
            .select("reconciliation")
            .first()[0]
        )
        assert recorded == {
            "bronze": bronze,
            "silver": silver,
            "quarantined": quarantined,
            "duplicate": ref.duplicates,
            "superseded": ref.superseded,
        }


def test_quarantine_names_every_failed_rule(spark, use_lake, expected):
    rows = lake.read(spark, "silver", "quarantine").select("source_table", "rules").collect()
    got: dict[tuple[str, str], int] = {}
    for r in rows:
        for rule in r["rules"]:
            got[(r["source_table"], rule)] = got.get((r["source_table"], rule), 0) + 1
    want: dict[tuple[str, str], int] = {}
    for source, ref in expected.refined.items():
        for _, rules in ref.quarantined:
            for rule in rules:
                want[(source, rule)] = want.get((source, rule), 0) + 1
    assert got == want
    assert any(rule == "malformed_record" for _, rule in got), "the data set has malformed lines"


def test_fact_sales_keeps_orphans_on_unknown_members(spark, use_lake):
    fact = lake.read(spark, "silver", "fact_sales")
    items = lake.read(spark, "silver", "order_items")
    assert fact.count() == items.count()
    unknown = fact.filter(F.col("product_key") == "UNKNOWN")
    assert unknown.count() > 0, "the seeded data has items of unknown products"
    assert unknown.filter(F.col("category") != "Unknown").count() == 0
    assert unknown.filter(F.col("line_cost").isNotNull()).count() == 0, "unknown cost is null"
    products = lake.read(spark, "silver", "dim_product")
    member = products.filter(F.col("product_id") == "UNKNOWN").select("unit_cost").collect()
    assert [r["unit_cost"] for r in member] == [None]
    dim = lake.read(spark, "silver", "dim_customer")
    current = dim.filter(F.col("is_current"))
    assert current.count() == current.select("customer_id").distinct().count()
    assert dim.filter(~F.col("is_current")).count() > 0, "later batches change customers"


# --------------------------------------------------------------- reruns and increments


@pytest.fixture(scope="module")
def small_lake(spark, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small_lake")
    with lake_at(root):
        generate(root, orders=300, batches=2, seed=5, defect_rate=0.05)
        assert run("all", spark=spark).ok
    return root


def _snapshot(spark) -> dict[str, list]:
    """Every table a batch run builds (pipeline/catalog.py), row by row."""
    out = {}
    for table in catalog.tables(kind=("batch", "shared")):
        df = lake.read(spark, table.layer, table.name)
        out[table.ref] = sorted(map(repr, df.drop("_row_hash").collect()))
    return out


def test_written_columns_equal_the_catalog(small_lake):
    """Names, order and types of every table a batch run writes, as the catalog declares."""
    built = catalog.tables(kind=("batch", "bookkeeping", "shared", "history"))
    checked = assert_written_columns(small_lake, [t.ref for t in built])
    assert set(checked) == {t.ref for t in built}


def _versions(spark, refs: list[str]) -> dict[str, int | None]:
    return {ref: lake.version(spark, *ref.split(".", 1)) for ref in refs}


def test_rerun_changes_nothing(spark, small_lake, monkeypatch):
    """A run with nothing new rewrites neither fact_sales, dim_date nor Gold; a full
    refresh, or a change to the code Gold follows, rebuilds Gold with the same rows."""
    from pipeline.gold import steps as gold_steps

    gold = [t.ref for t in catalog.tables("gold", "batch")]
    with lake_at(small_lake):
        before = _snapshot(spark)
        versions = _versions(spark, ["silver.fact_sales", "silver.dim_date", *gold])
        result = run("all", spark=spark)
        assert result.ok, result.error
        assert all(s.rows_in == 0 for s in result.steps if s.step.startswith("bronze."))
        assert _snapshot(spark) == before
        assert _versions(spark, list(versions)) == versions
        steps = {s.step: s for s in result.steps}
        fact = steps["silver.fact_sales"]
        assert fact.notes == ["inputs unchanged: not rebuilt"], fact
        assert fact.rows_out == lake.row_count(spark, "silver", "fact_sales"), fact
        assert (fact.spark_jobs, fact.delta_commits) == (0, 0), fact
        for ref in gold:
            assert any("not recomputed" in n for n in steps[ref].notes), steps[ref]
            assert steps[ref].rows_out == lake.row_count(spark, *ref.split(".", 1)), ref

        refreshed = run("gold", spark=spark, full_refresh=True)
        assert refreshed.ok, refreshed.error
        rebuilt = _versions(spark, gold)
        assert all(rebuilt[ref] > versions[ref] for ref in gold), (rebuilt, versions)

        monkeypatch.setattr(gold_steps, "logic_fingerprint", lambda: "other code")
        changed_code = run("gold", spark=spark)
        assert changed_code.ok, changed_code.error
        assert all(v > rebuilt[ref] for ref, v in _versions(spark, gold).items())
        assert _snapshot(spark) == before


def test_new_batch_reads_only_its_files(spark, small_lake):
    with lake_at(small_lake):
        manifests = generate(small_lake, orders=30, seed=5, defect_rate=0.05, append=True)
        new_batch = manifests[-1]["batch_id"]
        result = run("all", spark=spark)
        assert result.ok, result.error
        log = lake.read(spark, "bronze", "_ingested_files")
        latest = log.filter(F.col("run_id") == result.run_id).select("file", "batch_id").collect()
        assert {r["batch_id"] for r in latest} == {new_batch}
        assert len(latest) == 4
        # a small lake recomputes its Silver sources and fact table (cheaper than MERGEs);
        # tests/test_incremental.py covers the incremental path on the same kind of lake
        notes = {s.step: " ".join(s.notes) for s in result.steps}
        for name in ("silver.customers", "silver.orders", "silver.order_items"):
            assert "new files in a small table" in notes[name], notes[name]
        assert "full rebuild: a small table" in notes["silver.fact_sales"], notes[
            "silver.fact_sales"
        ]
        fact = lake.read(spark, "silver", "fact_sales")
        assert fact.count() == lake.read(spark, "silver", "order_items").count()
        # and the numbers still follow the contract after the increment
        expected = reference.compute(small_lake / "landing")
        daily = {r["order_date"]: r for r in _gold(spark, "daily_sales")}
        assert {d: (r["orders"], r["net_revenue"]) for d, r in daily.items()} == {
            d: (w["orders"], w["net_revenue"]) for d, w in expected.daily_sales.items()
        }
        categories = {(r["month"], r["category"]): r for r in _gold(spark, "category_sales")}
        assert {k: (r["orders"], r["net_revenue"]) for k, r in categories.items()} == {
            k: (w["orders"], w["net_revenue"]) for k, w in expected.category_sales.items()
        }


def test_empty_landing_zone_is_a_clear_error(spark, empty_lake):
    result = run("all", spark=spark)
    assert not result.ok
    assert "generate data" in (result.error or "")
    assert [s.status for s in result.steps][-1] == "skipped"


def test_manifest_dates_are_deterministic(populated_lake):
    """The as-of date comes from the data, so the same seed scores the same forever."""
    expected = reference.compute(populated_lake / "landing", now=dt.datetime(2030, 1, 1))
    as_of = {c["as_of_date"] for c in expected.customer_rfm.values()}
    assert len(as_of) == 1 and next(iter(as_of)) <= dt.date(2026, 7, 1)
    assert isinstance(next(iter(expected.daily_sales.values()))["net_revenue"], Decimal)


def test_sales_page_margin_counts_known_costs_only(spark, use_lake, expected):
    """The Gross margin KPI is the margin of the lines whose cost is known, and the Unknown
    category shows no margin (—), not 100 %."""
    from streamlit.testing.v1 import AppTest

    from tests.pages_support import HOME, PAGE_FILES, metric

    known = sum(c["gross_margin"] for c in expected.category_sales.values() if c["gross_margin"])
    unknown_net = sum(
        c["net_revenue"] for (_, cat), c in expected.category_sales.items() if cat == "Unknown"
    )
    assert unknown_net > 0, "the old margin (unknown cost as 0) would differ"
    at = AppTest.from_file(str(HOME), default_timeout=180)
    at.run()
    at.switch_page(PAGE_FILES["sales"]).run()
    at.button_group(key="period").set_value("All").run()
    assert not at.exception, [e.value for e in at.exception]
    assert metric(at, "Gross margin") == f"${known:,.2f}"
    table = next(d.value for d in at.dataframe if "margin_pct" in d.value.columns)
    unknown = table[table["category"] == "Unknown"]
    assert len(unknown) == 1
    for column in ("gross_margin", "margin_pct"):
        value = unknown[column].iloc[0]
        assert value is None or value == "—" or value != value, (column, value)  # NaN != NaN
    others = table[table["category"] != "Unknown"]
    assert others["gross_margin"].notna().all() and (others["gross_margin"] != "—").all()
