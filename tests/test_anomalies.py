"""gold.revenue_anomalies judged by results (docs/contract.md §5), on real Spark.

Synthetic daily series (pipeline.sources.daily_series: weekend uplift, growth,
a holiday season, labelled drop and spike days) go straight into the pure
builder; one generated lake goes through the whole pipeline to show that the
generator's injected outage and promotion days are flagged.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import lake
from pipeline.gold import revenue_anomalies
from pipeline.sources.daily_series import SHOPS, Series, as_daily_sales, daily_series, outcome
from pipeline.sources.generate import generate
from tests.conftest import lake_at

ROOT = Path(__file__).resolve().parent.parent
DAYS = 1100  # three years: enough labelled days for a recall, cheap for the builder


def _rows(spark, series: Series) -> list[dict]:
    frame = revenue_anomalies.build(as_daily_sales(spark, series))
    return sorted((r.asDict() for r in frame.collect()), key=lambda r: r["order_date"])


def test_dense_shop_finds_drops_and_spikes_at_the_thresholds(spark):
    """Every drop day at exactly 40 % and every spike at exactly 250 % of normal: the
    hardest case the contract names; >= 95 % of each found, <= 1 % of other days flagged."""
    series = daily_series(DAYS, seed=7, **SHOPS["dense"], drop_factor=0.4, spike_factor=2.5)
    result = outcome(series, _rows(spark, series))
    assert result.drops >= 20 and result.spikes >= 20, result
    assert result.drop_recall >= 0.95, result
    assert result.spike_recall >= 0.95, result
    assert result.false_flag_rate <= 0.01, result


@pytest.mark.parametrize("shop", ["sparse", "sparse_overdispersed"])
def test_sparse_heavy_tailed_shop_stays_calm(spark, shop):
    series = daily_series(DAYS, seed=7, **SHOPS[shop])
    assert (series.net_revenue == 0).mean() > 0.01, "the shop has days without sales"
    result = outcome(series, _rows(spark, series))
    assert result.ordinary > 900
    assert result.false_flag_rate <= 0.02, result


def test_weekly_seasonality_is_expected_not_flagged(spark):
    series = daily_series(
        400, seed=3, orders_per_day=300, value_sigma=0.8, growth=0.0, holiday=0.0, anomaly_rate=0
    )
    rows = _rows(spark, series)
    assert not any(r["is_anomaly"] for r in rows)
    scored = [r for r in rows if r["expected_revenue"] is not None]
    weekday = {d: [] for d in range(7)}
    for r in scored:
        weekday[r["order_date"].weekday()].append(float(r["expected_revenue"]))
    # the expectation follows the weekly rhythm: Saturday's is well above Tuesday's
    assert np.mean(weekday[5]) > 1.25 * np.mean(weekday[1])


def test_band_is_ordered_and_null_without_history(spark):
    series = daily_series(200, seed=5, **SHOPS["sparse"])
    rows = _rows(spark, series)
    assert [r["order_date"] for r in rows] == series.order_date
    assert all(r["expected_revenue"] is None for r in rows[:28])
    assert all(r["lower_bound"] is None and not r["is_anomaly"] for r in rows[:42])
    banded = [r for r in rows if r["lower_bound"] is not None]
    assert len(banded) > 100
    assert all(0 <= r["lower_bound"] <= r["expected_revenue"] <= r["upper_bound"] for r in banded)
    for r in rows:
        assert r["is_anomaly"] == (r["direction"] is not None)
        if r["direction"] == "drop":
            assert r["net_revenue"] < r["lower_bound"] and r["score"] < 0
        if r["direction"] == "spike":
            assert r["net_revenue"] > r["upper_bound"] and r["score"] > 0


def _with(series: Series, changes: dict[int, float]) -> Series:
    revenue = series.net_revenue.copy()
    orders = series.orders.copy()
    for day, factor in changes.items():
        revenue[day] = round(revenue[day] * factor, 2)
        orders[day] = int(round(orders[day] * factor))
    return Series(series.order_date, orders, revenue, series.kind, series.factor)


def test_a_spike_neither_hides_next_weeks_drop_nor_widens_the_band(spark):
    base = daily_series(200, seed=11, orders_per_day=250, growth=0.0, holiday=0.0, anomaly_rate=0)
    spike_day = 120
    rows = _rows(spark, _with(base, {spike_day: 6.0, spike_day + 7: 0.35}))
    assert rows[spike_day]["direction"] == "spike"
    assert rows[spike_day + 7]["direction"] == "drop", "next week's drop is found"

    alone = _rows(spark, _with(base, {spike_day: 6.0}))
    plain = _rows(spark, base)

    def width(r: dict) -> float:
        return float(r["upper_bound"]) / float(r["expected_revenue"])

    month = slice(spike_day + 1, spike_day + 29)
    for a, b in zip(alone[month], plain[month], strict=True):
        assert width(a) <= 1.05 * width(b), (a, b)  # the band stays as it was
    # the expectation too, up to the noise of a median's neighbouring ranks
    # (a 28-day mean would sit 18 % higher all month)
    ratios = [
        float(a["expected_revenue"]) / float(b["expected_revenue"])
        for a, b in zip(alone[month], plain[month], strict=True)
    ]
    assert max(abs(r - 1) for r in ratios) < 0.10, ratios
    assert abs(np.mean(ratios) - 1) < 0.03, ratios
    assert not any(r["is_anomaly"] for r in alone[month])


def test_no_look_ahead(spark):
    series = daily_series(160, seed=2, **SHOPS["dense"])
    cut = 100
    future = _with(series, {d: 5.0 for d in range(cut, 160)})
    rows, other = _rows(spark, series), _rows(spark, future)
    assert rows[:cut] == other[:cut]
    assert rows[cut:] != other[cut:]


# ------------------------------------------------------------------ the generator, end to end


@pytest.fixture(scope="module")
def labelled_lake(tmp_path_factory) -> Path:
    """A dense generated lake (about 220 orders a day: the contract's 200+ shop) with 8
    promotions and 4 outages; clean data in one batch keeps the run short.

    The run is `python -m pipeline run gold.revenue_anomalies` in a process of its own,
    as a scheduler starts it: the table's whole lineage from the landing files (every
    Bronze and Silver step, gold.daily_sales), without the Gold tables it does not read.
    Its 24 MB of landing files get the JVM's default compiler, which at this size is
    faster than the test session's quick one (docs/decisions.md, "Run shape").
    """
    root = tmp_path_factory.mktemp("labelled_lake")
    generate(root, orders=80_000, batches=1, seed=3, defect_rate=0, promotions=8, outages=4)
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "gold.revenue_anomalies"],
        cwd=ROOT,
        env={**os.environ, "SHOPLAKE_LAKE": str(root), "SHOPLAKE_SPARK_UI": "false"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return root


def test_injected_outages_and_promotions_are_flagged(spark, labelled_lake):
    manifest = json.loads(
        (labelled_lake / "landing" / "_manifests" / "batch-000001.json").read_text("utf-8")
    )
    injected = {dt.date.fromisoformat(a["date"]): a for a in manifest["anomalies"]}
    assert sorted(a["kind"] for a in injected.values()).count("outage") == 4
    assert sorted(a["kind"] for a in injected.values()).count("promotion") == 8
    with lake_at(labelled_lake):
        rows = {r["order_date"]: r for r in lake.read(spark, "gold", "revenue_anomalies").collect()}
    for day, label in injected.items():
        assert rows[day]["lower_bound"] is not None, f"{day} has a band"
        assert rows[day]["direction"] == label["direction"], (day, label, rows[day])
    others = [r for d, r in rows.items() if d not in injected and r["lower_bound"] is not None]
    flagged = sum(r["is_anomaly"] for r in others)
    assert flagged <= 0.01 * len(others), flagged


# ------------------------------------------------------------------ the Anomalies page


def test_anomalies_page_shows_injected_vs_found(tmp_path, monkeypatch):
    """The page reads the manifests' labelled days and says which Gold flagged."""
    from streamlit.testing.v1 import AppTest

    from tests.pages_support import HOME, PAGE_FILES, metric, write_synthetic_lake

    lake_root = tmp_path / "lake"
    write_synthetic_lake(lake_root, orders=3_000, seed=11)  # a 10x revenue day on 2025-06-11
    manifests = lake_root / "landing" / "_manifests"
    manifests.mkdir(parents=True)
    labels = [
        dict(date="2025-06-11", kind="promotion", direction="spike", factor=10.0),
        dict(date="2024-11-05", kind="outage", direction="drop", factor=0.05),  # not in the data
    ]
    (manifests / "batch-000001.json").write_text(
        json.dumps({"batch_id": "batch-000001", "anomalies": labels}), "utf-8"
    )
    monkeypatch.setenv("SHOPLAKE_LAKE", str(lake_root))
    at = AppTest.from_file(str(HOME), default_timeout=120)
    at.run()
    at.switch_page(PAGE_FILES["anomalies"]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert metric(at, "Injected days found") == "1 / 2"
    shown = next(d.value for d in at.dataframe if "kind" in d.value.columns)
    assert list(shown["kind"]) == ["outage", "promotion"]
    assert list(shown["found"]) == ["no", "yes"]
