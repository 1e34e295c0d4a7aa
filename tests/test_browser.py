"""The real app in a real browser: `streamlit run Home.py` driven by headless Chromium.

AppTest runs page scripts in-process; this checks what a user sees: the server
starts, every page draws in the browser without an exception box or a
traceback, navigation works, the charts render, and a KPI in the page equals
Gold. Screenshots land in tests/artifacts/screenshots/ for a human look.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable

from tests.pages_support import ROOT, free_port

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("SHOPLAKE_CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / "tests" / "artifacts" / "screenshots"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# url path -> the page's title (h1); the Live page is another module's, any title will do
PAGES: dict[str, str | None] = {
    "": "ShopLake",
    "Generate": "Data generator",
    "Pipeline": "Pipeline",
    "Quality": "Data quality",
    "Sales": "Sales",
    "Customers": "Customers (RFM)",
    "Anomalies": "Anomalies",
    "Live": None,
    "Import": "Import your data",
}


@pytest.fixture(scope="module")
def browser_lake(populated_lake: Path) -> Path:
    """conftest's engine-built lake (read-only: nothing here clicks a run button)."""
    return populated_lake


@contextmanager
def serve(lake: Path, log_path: Path) -> Iterator[str]:
    """`streamlit run Home.py` on ``lake``, on a free localhost port, until the block ends."""
    port = free_port()
    env = {**os.environ, "SHOPLAKE_LAKE": str(lake), "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "Home.py",
                "--server.port",
                str(port),
                "--server.headless",
                "true",
                "--browser.gatherUsageStats",
                "false",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://localhost:{port}"
            deadline = time.monotonic() + 90
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"streamlit exited early:\n{log_path.read_text()[-3000:]}")
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                        if r.read().strip() == b"ok":
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"streamlit did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    server_log = log_path.read_text()
    assert "Traceback" not in server_log, server_log[-3000:]


@pytest.fixture(scope="module")
def app_url(browser_lake: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve(browser_lake, tmp_path_factory.mktemp("streamlit") / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: run `make browser` (scripts/ensure_browser.sh)"
        )
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def settle(page: object, title: str | None, timeout: float = 90) -> None:
    """Wait until the page's title (any h1 when None) is drawn and the script stopped running."""
    heading = (
        page.locator("h1") if title is None else page.get_by_role("heading", name=title, exact=True)
    )
    heading.first.wait_for(timeout=timeout * 1000)
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        running = page.locator('[data-testid="stStatusWidget"]').filter(has_text="Running")
        if running.count() == 0:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 1.0:
                return
        else:
            quiet_since = None
        page.wait_for_timeout(200)
    raise AssertionError(f"page {title!r} still running after {timeout} s")


def assert_no_error(page: object, name: str | None) -> None:
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, exceptions.first.inner_text()
    text = page.locator("body").inner_text()
    assert "Traceback" not in text, text[:2000]
    assert "could not be drawn" not in text, text[:2000]


def metric_value(page: object, label: str) -> str:
    card = page.locator('[data-testid="stMetric"]').filter(has_text=label).first
    return card.locator('[data-testid="stMetricValue"]').inner_text().strip()


def test_first_visit_straight_to_a_page(browser: object, app_url: str, browser_lake: Path) -> None:
    """The server's very first run is a deep link: no 'Page not found', the KPI equals Gold."""
    daily = DeltaTable(str(browser_lake / "gold" / "daily_sales")).to_pandas()
    dates = pd.to_datetime(daily["order_date"])
    last90 = daily[dates >= dates.max() - pd.Timedelta(days=89)]
    expected = f"${Decimal(last90['net_revenue'].sum()):,.2f}"  # the default currency, USD

    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        page.goto(f"{app_url}/Sales", wait_until="domcontentloaded")
        settle(page, "Sales")
        assert_no_error(page, "Sales")
        assert "Page not found" not in page.locator("body").inner_text()
        assert metric_value(page, "Net revenue") == expected
        # the app's own navigation (sections) is in place, not Streamlit's legacy page list
        nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
        assert "Business" in nav and "Customers (RFM)" in nav, nav
        page.screenshot(path=str(SHOTS / "sales_first_visit.png"), full_page=True)
    finally:
        context.close()


def test_every_page_in_chromium(browser: object, app_url: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    # tall: Streamlit scrolls inside its own container, so a screenshot shows one viewport
    context = browser.new_context(viewport={"width": 1400, "height": 3200})
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    try:
        for path, title in PAGES.items():
            page.goto(f"{app_url}/{path}", wait_until="domcontentloaded")
            settle(page, title)
            assert_no_error(page, title)
            if path in ("Sales", "Customers", "Quality", "Anomalies", "Pipeline"):
                page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
            page.wait_for_timeout(1_000)  # icons and lazy widgets
            page.screenshot(path=str(SHOTS / f"{(path or 'home').lower()}.png"), full_page=True)
            # issue 16.6: no KPI cut off ("1,423,718…"), no "None" cell text on the page
            cut = page.locator('[data-testid="stMetricValue"]').evaluate_all(
                "els => els.filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText)"
            )
            assert not cut, (path, cut)
            if path != "Quality":  # another page's formats
                words = page.locator("main").inner_text().split()
                assert "None" not in words and "nan" not in words, path
    finally:
        context.close()
    assert not page_errors, page_errors


def test_sidebar_navigation_in_chromium(browser: object, app_url: str, browser_lake: Path) -> None:
    customers = DeltaTable(str(browser_lake / "gold" / "customer_rfm")).to_pyarrow_table().num_rows
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        page.goto(app_url, wait_until="domcontentloaded")
        settle(page, "ShopLake")
        nav = page.locator('[data-testid="stSidebarNav"]')
        nav.get_by_text("Customers (RFM)", exact=True).click()
        settle(page, "Customers (RFM)")
        assert page.url.rstrip("/").endswith("/Customers"), page.url
        assert metric_value(page, "Customers") == f"{customers:,}"
        assert_no_error(page, "Customers (RFM)")
        page.locator('[data-testid="stSidebarNav"]').get_by_text("Pipeline", exact=True).click()
        settle(page, "Pipeline")
        assert page.get_by_role("button", name="Run All layers").is_enabled()
        assert_no_error(page, "Pipeline")
    finally:
        context.close()


def test_a_run_shows_progress_with_the_history_still_on_the_page(
    browser: object, populated_lake: Path, tmp_path: Path
) -> None:
    """Issue 16.7: while a run executes, the progress box (steps, rows so far, %) and the
    history below it are both on the page; when it ends the new run is in the history."""
    lake = tmp_path / "lake"
    shutil.copytree(populated_lake, lake)
    runs_before = DeltaTable(str(lake / "gold" / "pipeline_runs")).to_pandas()["run_id"].nunique()
    SHOTS.mkdir(parents=True, exist_ok=True)
    with serve(lake, tmp_path / "server.log") as url:
        context = browser.new_context(viewport={"width": 1400, "height": 2400})
        page = context.new_page()
        try:
            page.goto(f"{url}/Pipeline", wait_until="domcontentloaded")
            settle(page, "Pipeline")
            page.get_by_role("button", name="Run Gold").click()
            box = page.get_by_text("steps done").first
            box.wait_for(timeout=120_000)
            # mid-run: the history's heading and its run count are drawn under the box
            assert page.get_by_role("heading", name="History", exact=True).is_visible()
            runs_card = page.locator('[data-testid="stMetric"]').filter(has_text="Runs").first
            assert runs_card.is_visible()
            page.get_by_text("rows written so far").first.wait_for(timeout=120_000)
            page.screenshot(path=str(SHOTS / "pipeline_during_a_run.png"), full_page=True)
            page.get_by_text("succeeded:").first.wait_for(timeout=300_000)
            settle(page, "Pipeline")
            assert_no_error(page, "Pipeline")
            assert metric_value(page, "Runs") == f"{runs_before + 1:,}"
        finally:
            context.close()
