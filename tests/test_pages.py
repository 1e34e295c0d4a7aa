"""The Streamlit pages, driven by streamlit.testing (AppTest), on three lakes.

- an empty lake: every page renders and says what to do next;
- a synthetic lake (tests/pages_support.py, written with delta-rs): every page
  renders, the numbers shown equal the Gold tables read independently, the
  filters change them exactly, and hostile text stays text;
- the lake built by the real engine (conftest's `populated_lake`: generator +
  pipeline.runner.run("all")), read-only, and a copy of it where the Run
  buttons are clicked like a user would (Generate on a fresh folder).

Numbers are compared with what the page shows (metric strings), against the
Delta tables read here with deltalake, not through pipeline.read.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable
from streamlit.testing.v1 import AppTest

from pipeline.read import delta_arrow
from tests.pages_support import (
    HOME,
    PAGE_FILES,
    metric,
    parse_number,
    write_synthetic_lake,
)

PAGE_TIMEOUT = 120  # seconds: the first Sales render builds the cube
RUN_TIMEOUT = 900  # a pipeline run clicked on the Pipeline page


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def pages_empty_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pages_empty_lake")


@pytest.fixture(scope="module")
def pages_synthetic_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lake = tmp_path_factory.mktemp("pages_synthetic_lake")
    write_synthetic_lake(lake, orders=3_000, seed=11)
    return lake


@pytest.fixture(scope="module")
def pages_writable_lake(populated_lake: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shared engine-built lake, for tests whose clicks write to it."""
    copy = tmp_path_factory.mktemp("pages_writable_lake") / "lake"
    shutil.copytree(populated_lake, copy)
    return copy


@pytest.fixture
def point_lake(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    def point(lake: Path) -> Path:
        monkeypatch.setenv("SHOPLAKE_LAKE", str(lake))
        return lake

    yield point


def open_page(page: str, timeout: float = PAGE_TIMEOUT) -> AppTest:
    at = AppTest.from_file(str(HOME), default_timeout=timeout)
    at.run()
    at.switch_page(PAGE_FILES[page]).run()
    return at


def assert_clean(at: AppTest, allow_errors: bool = False) -> None:
    """No exception element, and no error box unless the test expects one."""
    assert not at.exception, [e.value for e in at.exception]
    if not allow_errors:
        assert not at.error, [e.value for e in at.error]


def delta(lake: Path, layer: str, table: str) -> pd.DataFrame:
    """A table read independently of the app (decimals stay Decimal)."""
    return delta_arrow(str(lake / layer / table)).to_pandas()


def money(value: Decimal | float) -> str:
    return f"{Decimal(value):,.2f}"


def window(daily: pd.DataFrame, days: int) -> pd.DataFrame:
    dates = pd.to_datetime(daily["order_date"])
    last = dates.max()
    return daily[dates >= last - pd.Timedelta(days=days - 1)]


# ------------------------------------------------------------------------------------ empty lake


@pytest.mark.parametrize("page", list(PAGE_FILES))
def test_page_renders_on_empty_lake(page: str, point_lake, pages_empty_lake: Path) -> None:
    point_lake(pages_empty_lake)
    at = open_page(page)
    assert_clean(at)
    assert at.title, "every page has a title"
    if page in ("quality", "sales", "customers", "anomalies"):
        infos = " ".join(i.value for i in at.info)
        assert "No " in infos and "yet" in infos, infos


def test_home_on_empty_lake_says_what_to_do(point_lake, pages_empty_lake: Path) -> None:
    point_lake(pages_empty_lake)
    at = open_page("home")
    assert_clean(at)
    assert "The lake is empty" in " ".join(i.value for i in at.info)
    assert metric(at, "Landing files") == "0"
    assert metric(at, "Gold rows") == "—"


# ------------------------------------------------------------------------------------ synthetic


def test_every_page_renders_fast_on_synthetic_lake(point_lake, pages_synthetic_lake: Path) -> None:
    point_lake(pages_synthetic_lake)
    at = AppTest.from_file(str(HOME), default_timeout=PAGE_TIMEOUT)
    at.run()
    timings: dict[str, float] = {}
    for page, path in PAGE_FILES.items():
        at.switch_page(path).run()  # cold: reads the tables
        assert_clean(at)
        started = time.perf_counter()
        at.run()  # warm: what every later interaction costs
        timings[page] = time.perf_counter() - started
        assert_clean(at)
    print("warm page script seconds:", {k: round(v, 3) for k, v in timings.items()})
    slow = {k: v for k, v in timings.items() if v > 2.0}
    assert not slow, f"pages slower than 2 s on a 3,000-order lake: {slow}"


def test_sales_kpis_equal_gold_daily_sales(point_lake, pages_synthetic_lake: Path) -> None:
    lake = point_lake(pages_synthetic_lake)
    daily = delta(lake, "gold", "daily_sales")
    at = open_page("sales")
    assert_clean(at)
    last90 = window(daily, 90)
    assert metric(at, "Net revenue") == money(last90["net_revenue"].sum())
    assert metric(at, "Orders") == f"{int(last90['orders'].sum()):,}"
    assert metric(at, "Units") == f"{int(last90['units'].sum()):,}"
    cancelled = int(last90["cancelled_orders"].sum() + last90["returned_orders"].sum())
    assert metric(at, "Cancelled + returned") == f"{cancelled:,}"

    at.button_group(key="period").set_value("All").run()
    assert_clean(at)
    assert metric(at, "Net revenue") == money(daily["net_revenue"].sum())
    assert metric(at, "Orders") == f"{int(daily['orders'].sum()):,}"
    aov = daily["net_revenue"].sum() / daily["orders"].sum()
    assert parse_number(metric(at, "Avg order value")) == pytest.approx(float(aov), abs=0.006)


def test_sales_filters_apply_exactly(point_lake, pages_synthetic_lake: Path) -> None:
    lake = point_lake(pages_synthetic_lake)
    fact = delta(lake, "silver", "fact_sales")
    at = open_page("sales")
    at.button_group(key="period").set_value("All").run()
    at.multiselect(key="f_category").set_value(["Books"]).run()
    at.multiselect(key="f_country").set_value(["DE", "FR"]).run()
    assert_clean(at)
    chosen = fact[
        fact["is_revenue_bearing"]
        & (fact["category"] == "Books")
        & fact["country"].isin(["DE", "FR"])
    ]
    assert metric(at, "Net revenue") == money(chosen["line_net"].sum())
    assert metric(at, "Orders") == f"{chosen['order_id'].nunique():,}"
    assert metric(at, "Units") == f"{int(chosen['quantity'].sum()):,}"
    margin = chosen["line_net"].sum() - chosen["line_cost"].sum()
    assert metric(at, "Gross margin") == money(margin)
    lost = fact[(fact["category"] == "Books") & fact["country"].isin(["DE", "FR"])]
    lost = lost.drop_duplicates("order_id")["status"].isin(["cancelled", "returned"]).sum()
    assert metric(at, "Cancelled + returned") == f"{int(lost):,}"
    # the category table on the page follows the same filter
    tables = [d.value for d in at.dataframe]
    categories = next(t for t in tables if "category" in t.columns and "margin_pct" in t.columns)
    assert list(categories["category"]) == ["Books"]
    assert categories["orders"].iloc[0] == chosen["order_id"].nunique()

    # two categories: an order with lines in both is still one order
    at.multiselect(key="f_category").set_value(["Books", "Toys"]).run()
    assert_clean(at)
    both = fact[
        fact["is_revenue_bearing"]
        & fact["category"].isin(["Books", "Toys"])
        & fact["country"].isin(["DE", "FR"])
    ]
    overlap = both.groupby("order_id")["category"].nunique()
    assert (overlap > 1).any(), "the synthetic lake has orders spanning both categories"
    assert metric(at, "Orders") == f"{both['order_id'].nunique():,}"
    assert metric(at, "Net revenue") == money(both["line_net"].sum())
    statuses = fact[
        fact["category"].isin(["Books", "Toys"]) & fact["country"].isin(["DE", "FR"])
    ].drop_duplicates("order_id")["status"]
    cancelled = int(statuses.isin(["cancelled", "returned"]).sum())
    assert metric(at, "Cancelled + returned") == f"{cancelled:,}"
    per_category = next(d.value for d in at.dataframe if "margin_pct" in d.value.columns)
    for row in per_category.itertuples():
        assert row.orders == both[both["category"] == row.category]["order_id"].nunique()


def test_sales_category_totals_equal_gold_category_sales(
    point_lake, pages_synthetic_lake: Path
) -> None:
    lake = point_lake(pages_synthetic_lake)
    gold = delta(lake, "gold", "category_sales")
    at = open_page("sales")
    at.button_group(key="period").set_value("All").run()
    assert_clean(at)
    shown = next(d.value for d in at.dataframe if "margin_pct" in d.value.columns)
    expected = gold.groupby("category")[["net_revenue", "gross_margin"]].sum()
    for row in shown.itertuples():
        assert money(row.net_revenue) == money(expected.loc[row.category, "net_revenue"])
        assert money(row.gross_margin) == money(expected.loc[row.category, "gross_margin"])


def test_customers_page_numbers(point_lake, pages_synthetic_lake: Path) -> None:
    lake = point_lake(pages_synthetic_lake)
    rfm = delta(lake, "gold", "customer_rfm")
    at = open_page("customers")
    assert_clean(at)
    assert metric(at, "Customers") == f"{len(rfm):,}"
    assert metric(at, "Revenue") == money(rfm["monetary"].sum())
    champions = int((rfm["rfm_segment"] == "champions").sum())
    assert metric(at, "Champions") == f"{champions:,}"
    segments = next(d.value for d in at.dataframe if "revenue_share" in d.value.columns)
    assert int(segments["customers"].sum()) == len(rfm)

    some = rfm["customer_id"].iloc[0]
    at.text_input(key="search").input(some).run()
    assert_clean(at)
    found = [d.value for d in at.dataframe if "customer_id" in d.value.columns][-1]
    assert some in set(found["customer_id"])
    assert all(some.lower() in c.lower() for c in found["customer_id"])


def test_anomalies_page_numbers(point_lake, pages_synthetic_lake: Path) -> None:
    lake = point_lake(pages_synthetic_lake)
    anomalies = delta(lake, "gold", "revenue_anomalies")
    at = open_page("anomalies")
    assert_clean(at)
    assert metric(at, "Days") == f"{len(anomalies):,}"
    flagged = int(anomalies["is_anomaly"].sum())
    assert flagged > 0, "the synthetic lake has a spike"
    assert metric(at, "Anomalous days") == f"{flagged:,}"


def test_live_status_and_alerts(point_lake, pages_synthetic_lake: Path) -> None:
    lake = point_lake(pages_synthetic_lake)
    at = open_page("home")
    assert_clean(at)
    warnings = " ".join(w.value for w in at.warning)
    assert "Stream stale" in warnings and "30 windows" in warnings, warnings
    alerts = delta(lake, "gold", "live_alerts")
    at = open_page("anomalies")
    assert_clean(at)
    assert metric(at, "Alerts") == str(len(alerts))


def test_spark_watch_follows_stages_and_tasks(spark) -> None:
    """What the Pipeline page draws while a run executes: stages and tasks from Spark."""
    import threading

    from pipeline.ui_progress import SparkWatch, stage_rows

    watch = SparkWatch(spark)
    assert watch.available
    job = threading.Thread(
        target=lambda: (
            spark.sparkContext.parallelize(range(6), 6)
            .map(lambda x: (time.sleep(1.5), x)[1])
            .count()
        )
    )
    job.start()
    seen_running = False
    while job.is_alive():
        rows = stage_rows(watch.poll())
        seen_running = seen_running or any(r["state"] == "running" for r in rows)
        time.sleep(0.2)
    job.join()
    watch.poll()
    totals = watch.totals()
    assert seen_running
    assert totals["tasks"] == 6 and totals["tasks_done"] == 6, totals
    assert totals["stages"] == totals["stages_done"] == 1, totals


def test_quality_scores_equal_dq_results(point_lake, pages_synthetic_lake: Path) -> None:
    lake = point_lake(pages_synthetic_lake)
    dq = delta(lake, "gold", "dq_results")
    latest_run = dq.sort_values("checked_at").groupby(["layer", "table"])["run_id"].last()
    scores = [
        dq[(dq["layer"] == layer) & (dq["table"] == table) & (dq["run_id"] == run)][
            "pass_rate"
        ].mean()
        for (layer, table), run in latest_run.items()
    ]
    at = open_page("quality")
    assert_clean(at)
    assert metric(at, "Overall") == f"{sum(scores) / len(scores) * 100:.1f}%"
    failing = next(d.value for d in at.dataframe if "rows_failed" in d.value.columns)
    assert set(failing["rule"]) == {
        "valid_status",
        "order_id_present",
        "quantity_in_range",
        "valid_email",
    }


def test_quarantine_samples_are_shown_as_data_not_html(
    point_lake, pages_synthetic_lake: Path
) -> None:
    point_lake(pages_synthetic_lake)
    at = open_page("quality")
    at.selectbox[0].set_value("valid_status").run()
    assert_clean(at)
    sample = next(d.value for d in at.dataframe if "raw_record" in d.value.columns)
    assert len(sample) == 25  # 40 records carry the rule; the page shows 25
    assert sample["rules"].str.contains("valid_status").all()
    assert "<script>" in sample["raw_record"].iloc[0]  # kept verbatim, as data
    rendered = " ".join(m.value for m in at.markdown)
    assert "<script>" not in rendered


def test_pipeline_and_home_numbers(point_lake, pages_synthetic_lake: Path) -> None:
    lake = point_lake(pages_synthetic_lake)
    runs = delta(lake, "gold", "pipeline_runs")
    at = open_page("pipeline")
    assert_clean(at)
    assert metric(at, "Runs") == str(runs["run_id"].nunique())
    at = open_page("home")
    assert_clean(at)
    gold_rows = sum(
        DeltaTable(str(lake / "gold" / t)).to_pyarrow_table().num_rows
        for t in os.listdir(lake / "gold")
    )
    assert metric(at, "Gold rows") == f"{gold_rows:,}"


def test_error_text_from_the_data_is_shown_inert(point_lake, pages_synthetic_lake: Path) -> None:
    """A step error is data: Markdown in it must not format, link or load an image."""
    point_lake(pages_synthetic_lake)
    at = open_page("pipeline")
    assert_clean(at)
    at.selectbox(key="recon_run").set_value("20250701T070000-ffffff").run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1, errors
    assert "![x](" not in errors[0] and "<b>" not in errors[0]
    assert r"\!\[x\]" in errors[0] and r"\:red\[alert\]" in errors[0]


def test_read_cannot_leave_the_lake(point_lake, pages_synthetic_lake: Path) -> None:
    from pipeline import read

    point_lake(pages_synthetic_lake)
    for layer, table in [("gold", "../../etc"), ("..", "passwd"), ("gold", "/etc/passwd")]:
        with pytest.raises(read.UnknownTableError):
            read.table_path(layer, table)
    path = Path(read.table_path("gold", "daily_sales")).resolve()
    assert path.is_relative_to(pages_synthetic_lake.resolve())


# ------------------------------------------------------------------------------------ real engine


def test_pages_on_engine_lake(point_lake, populated_lake: Path) -> None:
    lake = point_lake(populated_lake)
    for page in PAGE_FILES:
        at = open_page(page)
        assert_clean(at)
    daily = delta(lake, "gold", "daily_sales")
    at = open_page("sales")
    at.button_group(key="period").set_value("All").run()
    assert_clean(at)
    assert metric(at, "Net revenue") == money(daily["net_revenue"].sum())
    assert metric(at, "Orders") == f"{int(daily['orders'].sum()):,}"
    rfm = delta(lake, "gold", "customer_rfm")
    at = open_page("customers")
    assert metric(at, "Customers") == f"{len(rfm):,}"
    anomalies = delta(lake, "gold", "revenue_anomalies")
    at = open_page("anomalies")
    assert metric(at, "Anomalous days") == f"{int(anomalies['is_anomaly'].sum()):,}"
    # the Pipeline page's reconciliation: every Bronze row of a Silver step is accounted for
    at = open_page("pipeline")
    assert_clean(at)
    recon = next(d.value for d in at.dataframe if "unaccounted" in d.value.columns)
    silver = recon[recon["step"].str.startswith("silver.") & recon["duplicates"].notna()]
    assert len(silver) >= 4, recon
    assert (silver["unaccounted"] == 0).all(), silver
    assert (
        silver["rows_in"]
        == silver["rows_out"]
        + silver["rows_quarantined"]
        + silver["duplicates"]
        + silver["superseded"]
    ).all()


def test_run_button_runs_the_pipeline(point_lake, pages_writable_lake: Path, spark) -> None:
    lake = point_lake(pages_writable_lake)
    before = delta(lake, "gold", "pipeline_runs")["run_id"].nunique()
    at = open_page("pipeline", timeout=RUN_TIMEOUT)
    assert_clean(at)
    at.button(key="run_gold").click().run(timeout=RUN_TIMEOUT)
    assert_clean(at)
    successes = " ".join(s.value for s in at.success).replace("\\", "")  # Markdown escapes
    assert "succeeded" in successes, successes
    runs = delta(lake, "gold", "pipeline_runs")
    assert runs["run_id"].nunique() == before + 1
    assert metric(at, "Runs") == str(before + 1)
    newest = runs.sort_values("started_at")["run_id"].iloc[-1]
    assert newest in successes
    # the Sales page shows the recomputed Gold numbers
    daily = delta(lake, "gold", "daily_sales")
    at = open_page("sales")
    at.button_group(key="period").set_value("All").run()
    assert metric(at, "Net revenue") == money(daily["net_revenue"].sum())


def test_generate_button_writes_landing_files(point_lake, tmp_path: Path) -> None:
    lake = point_lake(tmp_path / "generated")
    at = open_page("generate", timeout=RUN_TIMEOUT)
    assert_clean(at)
    at.number_input[0].set_value(400)  # orders
    at.number_input[1].set_value(2)  # batches
    at.number_input(key="rate_invalid_email").set_value(0.0)  # one defect switched off
    at.form_submit_button[0].click().run(timeout=RUN_TIMEOUT)
    assert_clean(at)
    assert "Wrote 2 batch(es)" in " ".join(s.value for s in at.success)
    assert metric(at, "Batches") == "2"
    manifests = sorted((lake / "landing" / "_manifests").glob("batch-*.json"))
    assert len(manifests) == 2
    first = json.loads(manifests[0].read_text())
    assert first["defects"]["customers"]["invalid_email"] == 0
    assert first["defects"]["orders"]["missing_key"] > 0  # the overall rate still applies
    assert sorted(p.name for p in (lake / "landing" / "orders").iterdir()) == [
        "batch-000001.csv",
        "batch-000002.csv",
    ]
    # appending adds one batch after the last
    at.checkbox[0].check()
    at.form_submit_button[0].click().run(timeout=RUN_TIMEOUT)
    assert_clean(at)
    assert len(list((lake / "landing" / "_manifests").glob("batch-*.json"))) == 3


def test_buttons_wait_for_a_running_job(point_lake, pages_synthetic_lake: Path) -> None:
    """While a job runs in this app, the run buttons are disabled and the job is named."""
    from pipeline import app_state

    point_lake(pages_synthetic_lake)
    job = app_state.start("other", "A test job", lambda job: time.sleep(2))
    try:
        at = open_page("pipeline", timeout=30)
        assert_clean(at)
        runs = [b for b in at.button if b.key and b.key.startswith("run_")]
        assert len(runs) == 4 and all(b.disabled for b in runs)
        assert "A test job is in progress" in " ".join(i.value for i in at.info)
    finally:
        assert job.wait(30)
    at.run()
    assert_clean(at)
    assert not any(b.disabled for b in at.button if b.key and b.key.startswith("run_"))


def test_run_in_progress_elsewhere_is_reported(
    point_lake, pages_writable_lake: Path, spark
) -> None:
    """Another process holding the lake's run lock: the page says so, no traceback."""
    lake = point_lake(pages_writable_lake)
    with open(lake / ".run.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        at = open_page("pipeline", timeout=RUN_TIMEOUT)
        at.button(key="run_gold").click().run(timeout=RUN_TIMEOUT)
        fcntl.flock(held, fcntl.LOCK_UN)
    assert not at.exception, [e.value for e in at.exception]
    warnings = " ".join(w.value for w in at.warning)
    assert "already in progress" in warnings, warnings
    assert "Traceback" not in warnings


def test_sales_period_counts_back_from_the_latest_order(
    point_lake, pages_synthetic_lake: Path
) -> None:
    """Presets end on the latest order date in the data, never on the wall clock."""
    point_lake(pages_synthetic_lake)
    at = open_page("sales")
    shown = [m.value for m in at.markdown]
    assert "02 Apr 2025 – 30 Jun 2025" in shown, shown
    at.button_group(key="period").set_value("Last 30 days").run()
    assert "01 Jun 2025 – 30 Jun 2025" in [m.value for m in at.markdown]
