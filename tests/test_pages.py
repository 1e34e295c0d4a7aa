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

from pipeline import read
from pipeline.read import delta_arrow
from tests.pages_support import (
    HOME,
    PAGE_FILES,
    metric,
    parse_number,
    write_synthetic_lake,
)

PAGE_TIMEOUT = 120  # seconds: generous for a loaded 2-core machine
COUNT_COLUMNS = [
    "rows_in",
    "rows_out",
    "rows_quarantined",
    "duplicates",
    "superseded",
    "unaccounted",
]
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
    """Money as the pages show it: the default currency (USD), separators, cents."""
    amount = Decimal(str(value)).quantize(Decimal("0.01"))
    return f"{'-' if amount < 0 else ''}${abs(amount):,.2f}"


def numbers(frame: pd.DataFrame, column: str) -> pd.Series:
    """A table column shown as text where it has gaps ("1,234" / "—") back to numbers."""
    text = frame[column].astype(str).str.replace(",", "").replace("—", None)
    return pd.to_numeric(text, errors="coerce")


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

    # a status: only delivered orders' revenue; no cancelled or returned order among them
    at.multiselect(key="f_status").set_value(["delivered"]).run()
    assert_clean(at)
    delivered = both[both["status"] == "delivered"]
    assert metric(at, "Orders") == f"{delivered['order_id'].nunique():,}"
    assert metric(at, "Net revenue") == money(delivered["line_net"].sum())
    assert metric(at, "Cancelled + returned") == "0"
    top = next(d.value for d in at.dataframe if "product_name" in d.value.columns)
    per_product = delivered.groupby("product_id")["line_net"].sum()
    for row in top.itertuples():
        assert money(row.net_revenue) == money(per_product[row.product_id])
    assert money(top["net_revenue"].iloc[0]) == money(per_product.max())


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
    infos = " ".join(i.value for i in at.info)
    assert "Stream stopped" in infos and "30 windows" in infos, infos
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
    """docs/quality.md "Score": records that passed every quarantine and fail rule, weighted."""
    lake = point_lake(pages_synthetic_lake)
    dq = delta(lake, "gold", "dq_results")
    latest_run = dq.sort_values("checked_at").groupby(["layer", "table"])["run_id"].last()
    checked = failed = 0
    for (layer, table), run in latest_run.items():
        rows = dq[(dq["layer"] == layer) & (dq["table"] == table) & (dq["run_id"] == run)]
        gates = rows[rows["action"].isin(["quarantine", "fail"])]
        checked += int((gates if len(gates) else rows)["rows_checked"].max())
        # no fates recorded in this lake: each failure is taken as a distinct record
        failed += int(gates["rows_failed"].sum())
    at = open_page("quality")
    assert_clean(at)
    assert metric(at, "Overall") == f"{(1 - failed / checked) * 100:.1f}%"
    rules, failing = [d.value for d in at.dataframe if "Pass rate" in d.value.columns]
    assert set(failing["Rule"]) == {
        "valid_status",
        "order_id_present",
        "quantity_in_range",
        "valid_email",
    }
    assert "orders_non_negative" in set(rules["Rule"])  # every rule with its pass rate


def test_quarantine_samples_are_shown_as_data_not_html(
    point_lake, pages_synthetic_lake: Path
) -> None:
    point_lake(pages_synthetic_lake)
    at = open_page("quality")
    at.selectbox(key="sample_rule").set_value(("orders", "valid_status", 40)).run()
    assert_clean(at)
    sample = next(d.value for d in at.dataframe if "Rules failed" in d.value.columns)
    assert len(sample) == 25  # 40 records carry the rule; the page shows 25
    assert sample["Rules failed"].str.contains("valid_status").all()
    raw = at.code[0].value.splitlines()
    assert len(raw) == 25 and "<script>" in raw[0]  # kept verbatim, as data
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
    recon = recon.assign(**{c: numbers(recon, c) for c in COUNT_COLUMNS})
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


# ------------------------------------------------------------------------------------ quality page


def _quality_charts(at: AppTest) -> dict[str, dict]:
    """The page's Plotly figures by title (AppTest keeps their JSON spec)."""
    figures = [json.loads(e.proto.spec) for e in at.get("plotly_chart")]
    return {f["layout"]["title"]["text"]: f for f in figures}


def test_quality_page_shows_the_cli_scores_readably(point_lake, pages_synthetic_lake: Path) -> None:
    """The page and `python -m pipeline quality --json` show the same scores, readably."""
    import subprocess
    import sys

    lake = point_lake(pages_synthetic_lake)
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "quality", "--json"],
        env={**os.environ, "SHOPLAKE_LAKE": str(lake)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    cli = json.loads(done.stdout)
    at = open_page("quality")
    assert_clean(at)
    assert metric(at, "Overall") == f"{cli['overall']['score'] * 100:.1f}%"
    for layer in cli["layers"]:
        label = f"{layer['layer'].title()} ({layer['tables']} tables)"
        assert metric(at, label) == f"{layer['score'] * 100:.1f}%"
    table = next(d.value for d in at.dataframe if "Records checked" in d.value.columns)
    shown = dict(zip(table["Table"], table["Score"], strict=True))
    want = {
        f"{t['layer'].title()} · {t['table'].replace('_', ' ')}": t["score"] for t in cli["tables"]
    }
    assert shown == pytest.approx(want)
    assert shown["Silver · orders"] < 0.99  # 60 of 3,000 orders quarantined: 98 %, not 99 %
    # readable: no raw column names, no "None" cells
    for frame in (d.value for d in at.dataframe):
        assert not [c for c in frame.columns if "_" in c], list(frame.columns)
        assert not frame.isin(["None", "nan"]).any().any(), frame
        assert not frame.isna().any().any(), frame
    charts = _quality_charts(at)
    assert charts["Score"]["layout"]["xaxis"]["range"] == [0, 100]
    trend = charts["Score per run"]
    assert {t["mode"] for t in trend["data"]} == {"lines+markers"}
    assert trend["layout"]["yaxis"]["range"] == [0, 100]
    # the sample box opens on a rule that has quarantined records
    source, rule, records = at.selectbox(key="sample_rule").value
    assert records > 0 and (source, rule) == ("orders", "valid_status")
    assert len(at.code[0].value.splitlines()) == 25


def test_home_overall_score_is_the_quality_pages(point_lake, tmp_path: Path) -> None:
    """Home's overall score is the records-weighted one of the Quality page and the CLI."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from pipeline.quality.report import build_report

    lake = point_lake(tmp_path / "lake")
    now = pd.Timestamp("2025-07-01 08:00", tz="UTC")
    dq = pd.DataFrame(
        {
            "run_id": ["r1"] * 2,
            "layer": ["silver"] * 2,
            "table": ["orders", "customers"],
            "rule": ["unknown_status", "missing_key"],
            "action": ["quarantine"] * 2,
            "rows_checked": [1000, 10],
            "rows_failed": [100, 0],
            "pass_rate": [0.9, 1.0],
            "checked_at": [now] * 2,
        }
    )
    write_deltalake(str(lake / "gold" / "dq_results"), pa.Table.from_pandas(dq))
    report = build_report()  # what `python -m pipeline quality` prints
    assert report["overall"]["score"] == pytest.approx(910 / 1010)
    home = open_page("home")
    assert_clean(home)
    assert metric(home, "Overall quality score") == "90.1%"  # not the tables' mean, 95.0 %
    quality = open_page("quality")
    assert_clean(quality)
    assert metric(quality, "Overall") == "90.1%"


def test_quality_page_with_one_run_and_a_long_record(point_lake, tmp_path: Path) -> None:
    """One run: a value, not scattered dots; a long raw record is shown whole."""
    import pyarrow as pa
    from deltalake import write_deltalake

    lake = point_lake(tmp_path / "lake")
    now = pd.Timestamp("2025-07-01 08:00", tz="UTC")
    dq = pd.DataFrame(
        {
            "run_id": ["r1"] * 3,
            "layer": ["silver"] * 3,
            "table": ["orders"] * 3,
            "rule": ["unknown_status", "missing_key", "valid_email"],
            "action": ["quarantine", "quarantine", "warn"],
            "rows_checked": [200, 200, 200],
            "rows_failed": [20, 0, 7],
            "pass_rate": [0.9, 1.0, 0.965],
            "checked_at": [now] * 3,
        }
    )
    write_deltalake(str(lake / "gold" / "dq_results"), pa.Table.from_pandas(dq))
    tail = '"status": "teleported"}'
    record = '{"order_id": "1", "note": "' + "x" * 600 + '", ' + tail
    quarantine = pa.table(
        {
            "source_table": ["orders"],
            "record_key": pa.array([None], pa.string()),
            "rules": [["unknown_status"]],
            "raw_record": [record],
            "batch_id": ["batch-000001"],
            "quarantined_at": pa.array([now.to_pydatetime()], pa.timestamp("us", tz="UTC")),
        }
    )
    write_deltalake(str(lake / "silver" / "quarantine"), quarantine)
    at = open_page("quality")
    assert_clean(at)
    assert metric(at, "Overall") == "90.0%"  # 20 of 200 quarantined; warn rules do not count
    assert "Score per run" not in _quality_charts(at)
    assert any("One run so far: overall 90.0%" in i.value for i in at.info)
    assert at.code[0].value == record  # whole, the bad field at its end included
    sample = next(d.value for d in at.dataframe if "Rules failed" in d.value.columns)
    assert sample["Record key"].tolist() == ["—"]


# ------------------------------------------------------------------------------------ quarantine


def _raw(key: str) -> str:
    """A quarantined record as it arrived (2 kB): the column no query may read for every row."""
    return '{"key": "' + key + '", "note": "' + "x" * 2000 + '"}'


def _quarantine_lake(root: Path) -> Path:
    """A hand-made silver.quarantine in two commits (two files), plus one run's dq_results."""
    import pyarrow as pa
    from deltalake import write_deltalake

    now = pd.Timestamp("2025-07-01 08:00", tz="UTC").to_pydatetime()
    ts = pa.timestamp("us", tz="UTC")
    commits = [
        [
            ("orders", "O1", ["unknown_status"]),
            ("orders", "O2", ["missing_key", "unknown_status"]),
            ("order_items", "I1", ["orphan_item"]),
        ],
        [
            ("orders", "O3", ["unknown_status", "missing_key"]),
            ("order_items", "I2", ["orphan_item", "unknown_status"]),
        ],
    ]
    for rows in commits:
        part = pa.table(
            {
                "source_table": [r[0] for r in rows],
                "record_key": [r[1] for r in rows],
                "rules": pa.array([r[2] for r in rows], pa.list_(pa.string())),
                "raw_record": [_raw(r[1]) for r in rows],
                "batch_id": ["batch-000001"] * len(rows),
                "quarantined_at": pa.array([now] * len(rows), ts),
            }
        )
        write_deltalake(str(root / "silver" / "quarantine"), part, mode="append")
    dq = pd.DataFrame(
        {
            "run_id": ["r1"],
            "layer": ["silver"],
            "table": ["orders"],
            "rule": ["unknown_status"],
            "action": ["quarantine"],
            "rows_checked": [100],
            "rows_failed": [3],
            "pass_rate": [0.97],
            "checked_at": [pd.Timestamp(now)],
        }
    )
    write_deltalake(str(root / "gold" / "dq_results"), pa.Table.from_pandas(dq))
    return root


def test_quarantine_sample_query_returns_the_rules_records(point_lake, tmp_path: Path) -> None:
    """The LIMITed sample query picks exactly the records that carry the rule, whole."""
    from pipeline import read

    _quarantine_lake(point_lake(tmp_path / "lake"))
    columns = list(read.TABLES["silver"]["quarantine"])
    orders = read.quarantine_samples("unknown_status", "orders", limit=10)
    assert list(orders.columns) == columns
    assert sorted(orders["record_key"]) == ["O1", "O2", "O3"]
    rules = dict(zip(orders["record_key"], orders["rules"], strict=True))
    assert rules == {
        "O1": "unknown_status",
        "O2": "missing_key, unknown_status",
        "O3": "unknown_status, missing_key",
    }
    whole = dict(zip(orders["record_key"], orders["raw_record"], strict=True))
    assert whole == {k: _raw(k) for k in ("O1", "O2", "O3")}  # verbatim, whole
    assert set(orders["source_table"]) == {"orders"}
    assert str(orders["quarantined_at"].dtype) == "datetime64[us, UTC]"
    every_source = read.quarantine_samples("unknown_status", limit=10)
    assert sorted(every_source["record_key"]) == ["I2", "O1", "O2", "O3"]
    two = read.quarantine_samples("unknown_status", limit=2)
    assert len(two) == 2 and set(two["record_key"]) <= {"I2", "O1", "O2", "O3"}
    assert read.quarantine_samples("missing_key", "order_items").empty
    quoted = read.quarantine_samples("it's'; DROP TABLE q; --", "orders")
    assert quoted.empty and list(quoted.columns) == columns


def test_quarantine_counts_are_queries_never_a_loaded_table(
    point_lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counts and samples take no table: they query the lake's; the page never loads it whole."""
    import inspect

    from pipeline import read

    _quarantine_lake(point_lake(tmp_path / "lake"))
    assert list(inspect.signature(read.quarantine_rule_counts).parameters) == []
    assert list(inspect.signature(read.quarantine_samples).parameters) == [
        "rule",
        "source_table",
        "limit",
    ]

    def refuse(name: str, original, target):
        """`original`, failing the test when called on silver.quarantine."""

        def guarded(*args, **kwargs):
            assert not target(args), f"{name} loaded silver.quarantine whole"
            return original(*args, **kwargs)

        return guarded

    def is_path(value: object) -> bool:
        return str(value).rstrip("/").endswith("silver/quarantine")

    loaders = {
        "read_arrow": lambda args: tuple(args[:2]) == ("silver", "quarantine"),
        "delta_arrow": lambda args: bool(args) and is_path(args[0]),
    }
    for name, target in loaders.items():
        monkeypatch.setattr(read, name, refuse(name, getattr(read, name), target))

    def on_table(args: tuple) -> bool:
        return is_path(args[0].table_uri)

    for method in ("to_pyarrow_table", "to_pyarrow_dataset", "to_pandas"):
        original = getattr(DeltaTable, method)
        monkeypatch.setattr(DeltaTable, method, refuse(method, original, on_table))

    counts = read.quarantine_rule_counts()
    assert list(counts.itertuples(index=False, name=None)) == [
        ("orders", "unknown_status", 3),
        ("order_items", "orphan_item", 2),  # a tie: by source table, then rule
        ("orders", "missing_key", 2),
        ("order_items", "unknown_status", 1),
    ]
    at = open_page("quality")
    assert_clean(at)
    box = at.selectbox(key="sample_rule")
    assert box.options == [
        "orders · unknown_status (3 records)",
        "order items · orphan_item (2 records)",
        "orders · missing_key (2 records)",
        "order items · unknown_status (1 records)",
    ]
    sample = next(d.value for d in at.dataframe if "Rules failed" in d.value.columns)
    assert sorted(sample["Record key"]) == ["O1", "O2", "O3"]
    assert len(at.code[0].value.splitlines()) == 3


# ------------------------------------------------------------------------------------ issue 16


def _live_lake(root: Path, ended_seconds_ago: float = 30) -> Path:
    """A lake holding only gold.live_sales_minute: ten windows, the newest ended just now."""
    import pyarrow as pa
    from deltalake import write_deltalake

    now = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=ended_seconds_ago)).floor("min")
    ends = [now - pd.Timedelta(minutes=i) for i in range(10)][::-1]
    ts = pa.timestamp("us", tz="UTC")
    table = pa.table(
        {
            "window_start": pa.array([e - pd.Timedelta(minutes=1) for e in ends], ts),
            "window_end": pa.array(ends, ts),
            "orders": pa.array([3] * 10, pa.int64()),
            "units": pa.array([6] * 10, pa.int64()),
            "net_revenue": pa.array([Decimal("1234.50")] * 10, pa.decimal128(18, 2)),
            "avg_order_value": pa.array([Decimal("411.50")] * 10, pa.decimal128(18, 2)),
        }
    )
    write_deltalake(str(root / "gold" / "live_sales_minute"), table)
    return root


def test_home_stream_status_follows_the_processes(point_lake, tmp_path: Path) -> None:
    """Issue 16.1: a window that ended 30 s ago does not make a stopped stream "live"."""
    from pipeline.live import health

    point_lake(_live_lake(tmp_path / "lake"))
    at = open_page("home")
    assert_clean(at)
    shown = " ".join(e.value for e in [*at.info, *at.success, *at.warning])
    assert "Stream stopped" in shown, shown
    assert "Stream live" not in shown and "Stream running" not in shown

    # a query of this lake running (its heartbeat, as stream.start_background writes it)
    beat = health.Heartbeat(health.query_beat_path("files"), {"source": "files"}).start()
    try:
        at = open_page("home")
        assert "Stream running" in " ".join(s.value for s in at.success)
        at = open_page("anomalies")
        infos = " ".join(i.value for i in at.info)
        assert "stream is running" in infos and "Start it" not in infos, infos
    finally:
        beat.stop()
    at = open_page("home")  # right after stopping
    assert "Stream stopped" in " ".join(i.value for i in at.info)
    at = open_page("anomalies")
    assert "stream stopped" in " ".join(i.value for i in at.info)


def test_a_dead_process_heartbeat_reads_stopped(tmp_path: Path) -> None:
    """A killed query leaves its heartbeat file: a pid that is gone means stopped."""
    import subprocess
    import sys

    from pipeline.live import health

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    path = tmp_path / "beat.json"
    path.write_text(json.dumps({"pid": int(gone.stdout), "beat_at": time.time()}))
    assert health.read_beat(path) is None
    path.write_text(json.dumps({"pid": os.getpid(), "beat_at": time.time() - 60}))
    assert health.read_beat(path)["state"] == "not responding"
    path.write_text(json.dumps({"pid": os.getpid(), "beat_at": time.time()}))
    assert health.read_beat(path)["state"] == "running"


MONEY_TEXT = r"^-?\$\d{1,3}(,\d{3})*\.\d{2}$"


def test_money_is_shown_with_currency_and_separators(
    point_lake, pages_synthetic_lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16.6: "60631.18" becomes "$60,631.18"; SHOPLAKE_CURRENCY chooses the currency."""
    import re

    lake = point_lake(pages_synthetic_lake)
    daily = delta(lake, "gold", "daily_sales")
    at = open_page("sales")
    at.button_group(key="period").set_value("All").run()
    shown = metric(at, "Net revenue")
    assert re.match(MONEY_TEXT, shown), shown
    assert float(daily["net_revenue"].sum()) > 1000  # so a separator is due
    for label in ("Avg order value", "Gross margin"):
        assert re.match(MONEY_TEXT, metric(at, label)), metric(at, label)
    at = open_page("customers")
    assert re.match(MONEY_TEXT, metric(at, "Revenue"))
    monkeypatch.setenv("SHOPLAKE_CURRENCY", "EUR")
    at = open_page("sales")
    at.button_group(key="period").set_value("All").run()
    assert metric(at, "Net revenue") == money(daily["net_revenue"].sum()).replace("$", "€")


def test_tables_read_as_words_without_none(point_lake, pages_synthetic_lake: Path) -> None:
    """Issue 16.6: segment names as words, column labels, no "None" cells, dates as dates."""
    point_lake(pages_synthetic_lake)
    at = open_page("customers")
    assert_clean(at)
    segments = next(d.value for d in at.dataframe if "revenue_share" in d.value.columns)
    assert "Champions" in set(segments["rfm_segment"]), segments
    assert not segments["rfm_segment"].str.contains("_").any()
    figures = [json.loads(e.proto.spec) for e in at.get("plotly_chart")]
    bar_names = {
        n for f in figures for t in f["data"] for n in (t.get("y") or []) if isinstance(n, str)
    }
    assert "Champions" in bar_names and "champions" not in bar_names
    found = [d.value for d in at.dataframe if "customer_id" in d.value.columns][-1]
    assert found["last_order_date"].str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
    assert "Champions" in at.multiselect(key="segments").options
    from pipeline import formats

    gaps = pd.DataFrame({"share": [0.4149, None], "n": pd.array([1234, None], "Int64")})
    shown = formats.display_frame(gaps, formats={"share": formats.pct})
    assert list(shown["share"]) == ["41.5%", "—"] and list(shown["n"]) == ["1,234", "—"]
    for page in ("home", "pipeline", "sales", "customers", "generate", "live"):
        at = open_page(page)
        assert_clean(at)
        for frame in (d.value for d in at.dataframe):
            cells = frame.astype(str)
            assert not cells.isin(["None", "nan", "NaN", "<NA>", "NaT"]).any().any(), (page, frame)


def _downloads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record AppTest's media file managers, to read what a download button would serve."""
    import streamlit.testing.v1.app_test as app_test

    managers: list[object] = []

    class Recording(app_test.MediaFileManager):  # type: ignore[misc, name-defined]
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            managers.append(self)

    monkeypatch.setattr(app_test, "MediaFileManager", Recording)
    return managers


def _served(managers: list[object], url: str) -> bytes:
    file_id = url.rsplit("/", 1)[-1].split(".")[0]
    for manager in reversed(managers):
        try:
            return manager._storage.get_file(file_id).content  # type: ignore[attr-defined]
        except Exception:
            continue
    raise AssertionError(f"no file behind {url}")


def test_csv_downloads_keep_exact_decimals_and_integer_counts(
    point_lake, pages_synthetic_lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16.6: no 3042.9900000000002 and no "2.0" in a CSV download."""
    import io
    import re

    lake = point_lake(pages_synthetic_lake)
    managers = _downloads(monkeypatch)
    at = open_page("sales")
    at.button_group(key="period").set_value("All").run()
    files = {b.label: _served(managers, b.proto.url) for b in at.get("download_button")}
    per_day = files["sales per day"].decode()
    head, *rows = per_day.splitlines()
    columns = head.split(",")
    for row in rows:
        for name, cell in zip(columns, row.split(","), strict=True):
            if name in ("net_revenue", "gross_revenue", "cost"):
                assert re.fullmatch(r"-?\d+\.\d{2}", cell), (name, cell)
            elif name in ("orders", "units", "cancelled_orders", "returned_orders"):
                assert re.fullmatch(r"\d+", cell), (name, cell)
            elif name == "order_date":
                assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", cell), cell
    back = pd.read_csv(io.StringIO(per_day), dtype=str)
    daily = delta(lake, "gold", "daily_sales")
    assert sum(Decimal(v) for v in back["net_revenue"]) == daily["net_revenue"].sum()
    categories = files["categories"].decode()
    assert not re.search(r"\.\d{7,}", categories), categories  # no float noise
    products = pd.read_csv(io.StringIO(files["top products"].decode()), dtype=str)
    assert products["units"].str.fullmatch(r"\d+").all()
    assert products["net_revenue"].str.fullmatch(r"-?\d+\.\d{2}").all()


def test_live_kpis_roll_over_a_named_window(point_lake, tmp_path: Path) -> None:
    """Issue 16.3: "Orders, last 5 min" counts the minute in progress, drawn as partial."""
    point_lake(_live_lake(tmp_path / "lake", ended_seconds_ago=-60))  # newest window: this minute
    at = open_page("live")
    assert_clean(at)
    minutes = delta(tmp_path / "lake", "gold", "live_sales_minute")
    now = pd.Timestamp.now(tz="UTC").floor("min")
    recent = minutes[minutes["window_start"] >= now - pd.Timedelta(minutes=4)]
    assert len(recent) >= 4
    assert metric(at, "Orders, last 5 min") == f"{int(recent['orders'].sum()):,}"
    assert metric(at, "Revenue, last 5 min") == money(recent["net_revenue"].sum())
    assert metric(at, "Orders, last hour") == f"{int(minutes['orders'].sum()):,}"
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = [t.get("name", "") for t in chart["data"]]
    assert any("partial" in n for n in names), names
    layout = chart["layout"]
    assert layout["yaxis"]["rangemode"] == "tozero" and layout["yaxis2"]["rangemode"] == "tozero"


def test_run_progress_in_the_users_terms() -> None:
    """Issue 16.7: concurrent steps, overall %, elapsed and an estimate from earlier runs."""
    from pipeline.ui_progress import run_view, step_history

    t0 = pd.Timestamp("2025-07-01 08:00", tz="UTC")
    runs = pd.DataFrame(
        {
            "run_id": ["r1"] * 3,
            "step": ["bronze.orders", "silver.orders", "silver.customers"],
            "started_at": [t0, t0 + pd.Timedelta(seconds=10), t0 + pd.Timedelta(seconds=10)],
            "finished_at": [
                t0 + pd.Timedelta(seconds=10),
                t0 + pd.Timedelta(seconds=40),
                t0 + pd.Timedelta(seconds=30),
            ],
            "status": ["succeeded"] * 3,
        }
    )
    expected, concurrency = step_history(runs)
    assert expected == {"bronze.orders": 10.0, "silver.orders": 30.0, "silver.customers": 20.0}
    assert concurrency == pytest.approx(60 / 40)
    events = [
        (100.0, "bronze.orders ...", 0.0),
        (110.0, "bronze.orders succeeded · 11,600 rows", 1 / 3),
        (110.0, "silver.orders ...", 1 / 3),
        (110.0, "silver.customers ...", 1 / 3),
    ]
    steps = list(expected)
    view = run_view(steps, events, 100.0, 120.0, expected, concurrency)
    assert set(view.running) == {"silver.orders", "silver.customers"}
    assert view.done == 1
    assert view.fraction == pytest.approx((10 + 10 + 10) / 60)
    assert view.remaining == pytest.approx((60 - 30) / 1.5)
    text = view.headline()
    assert "Running silver.customers, silver.orders" in text and "1/3 steps done" in text
    assert "50 %" in text and "20 s elapsed" in text and "about 20 s left" in text
    assert view.rows_written == 11_600 and "11,600 rows written so far" in text


def test_generate_page_shows_the_lakes_settings(point_lake, tmp_path: Path) -> None:
    """Issue 16.8: the settings that made the lake, and why N orders make more records."""
    from pipeline.sources.generate import generate

    lake = point_lake(tmp_path / "lake")
    manifests = generate(lake, orders=400, batches=2, seed=5, defect_rate=0.05)
    at = open_page("generate")
    assert_clean(at)
    assert at.number_input[0].value == 400 and at.number_input[1].value == 2
    assert at.number_input[2].value == 5
    records = sum(m["rows"]["orders"] for m in manifests)
    assert records > 400
    text = " ".join(m.value for m in at.markdown)
    assert f"Why 400 orders make {records:,} order records" in text, text
    assert "Made with 400 orders in 2 batch(es), seed 5" in " ".join(c.value for c in at.caption)


def test_home_explains_silver_rows_and_filters_mean_all_when_empty(
    point_lake, pages_synthetic_lake: Path
) -> None:
    """Issue 16.8: Silver's count includes the model; no "Select all" that changes nothing."""
    point_lake(pages_synthetic_lake)
    at = open_page("home")
    assert "dimensional model" in " ".join(c.value for c in at.caption)
    at = open_page("sales")
    for key in ("f_category", "f_country", "f_channel", "f_status"):
        box = at.multiselect(key=key)
        assert box.proto.select_all == 0 and box.value == []
        assert box.placeholder.startswith("All")


def test_sales_tables_are_read_ahead_once_per_version(
    point_lake, pages_synthetic_lake: Path
) -> None:
    """The Sales page's first visit after a run finds its Gold tables read (1M orders: ~4 s)."""
    point_lake(pages_synthetic_lake)
    read._sales_cache.clear()
    read.prefetch_sales()
    deadline = time.monotonic() + 60
    while read.sales_key() not in read._sales_cache:
        assert time.monotonic() < deadline, "the sales tables were not read ahead"
        time.sleep(0.05)
    ahead = read._sales_cache[read.sales_key()]
    assert read.sales_gold() is ahead and read.sales_gold() is ahead
    at = open_page("sales")
    assert_clean(at)
    assert read._sales_cache[read.sales_key()] is ahead  # the page used it, no second read
