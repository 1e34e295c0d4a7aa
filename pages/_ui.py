"""Streamlit glue shared by the pages: cached reads, the SparkSession, job progress.

Long (~430 lines): every cached read and shared widget of the pages, in one place.

`pipeline/` must not import Streamlit, so the caching and the drawing of
shared widgets live here. Reads are cached keyed on the table's Delta version
(`read.cache_key`): a finished run or generation changes the version, so the
next rerun reads fresh data without any timer. Big read-only structures (the
customer table) use `st.cache_resource` so a rerun does not copy them (the
Sales page's Gold tables too), small frames and derived aggregates
`st.cache_data`. The quarantine is only queried (counts and a LIMITed sample).
"""

from __future__ import annotations

import datetime as dt
import re
import runpy
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pipeline import app_state, formats, read
from pipeline.config import settings
from pipeline.ui_progress import SparkWatch, run_view, stage_rows, step_history

PAGES = {
    "home": "pages/1_Overview.py",
    "generate": "pages/2_Generate.py",
    "pipeline": "pages/3_Pipeline.py",
    "quality": "pages/4_Quality.py",
    "sales": "pages/5_Sales.py",
    "customers": "pages/6_Customers.py",
    "anomalies": "pages/7_Anomalies.py",
    "live": "pages/8_Live.py",
}
PLOTLY_CONFIG = {"displaylogo": False}
Key = tuple[int, int] | None  # read.cache_key(): (Delta version, commit mtime)


def _lake() -> str:
    """Part of every cache key: tests and users may point the app at another lake."""
    return settings().lake


HOME_SCRIPT = Path(__file__).resolve().parent.parent / "Home.py"


def page_guard() -> None:
    """Draw this page through Home.py's navigation when Streamlit ran it directly.

    Streamlit (1.67) serves the very first script run of a server process in
    its legacy `pages/` directory mode: it learns that the app uses
    st.navigation only when Home.py calls it. A first visit straight to, say,
    /Sales then runs the page file alone (no page config, no sections) and
    every rerun would stay in that mode. Running Home.py here switches the
    process to st.navigation for good and draws the requested page through it
    (the URL paths in Home.py equal the legacy names, so it resolves). On every
    other run this is a no-op.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        runpy.run_path(str(HOME_SCRIPT), run_name="__main__")
        st.stop()


@st.cache_resource(show_spinner="Starting Spark (about 10 seconds the first time) ...")
def spark() -> Any:
    """The process's one SparkSession (pipeline.spark owns its configuration)."""
    from pipeline.spark import get_spark

    return get_spark()


@st.cache_data(show_spinner=False, max_entries=64)
def _read_cached(
    lake: str, layer: str, table: str, key: Key, columns: tuple[str, ...] | None
) -> pd.DataFrame:
    return read.read_table(layer, table, columns)


def table(layer: str, name: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A contract table as pandas, re-read only when its Delta version changes."""
    key = read.cache_key(layer, name)
    return _read_cached(_lake(), layer, name, key, tuple(columns) if columns else None)


@st.cache_resource(show_spinner=False, max_entries=8)
def _shared(lake: str, layer: str, table: str, key: Key) -> pd.DataFrame:
    return read.read_table(layer, table)


def shared_table(layer: str, name: str) -> pd.DataFrame:
    """Like `table`, without the copy st.cache_data makes on every hit: for big tables.

    The frame is shared between reruns and sessions: callers must not modify it.
    """
    return _shared(_lake(), layer, name, read.cache_key(layer, name))


@st.cache_data(show_spinner=False, max_entries=64)
def _derived(
    lake: str, layer: str, table: str, key: Key, name: str, arg: Any, _fn: Callable[..., Any]
) -> Any:
    frame = _shared(lake, layer, table, key)
    return _fn(frame) if arg is None else _fn(frame, arg)


def derived(fn: Callable[..., Any], layer: str, name: str, arg: Any = None) -> Any:
    """fn(table[, arg]) cached per table version: aggregates computed once, not per rerun."""
    fn_name = f"{fn.__module__}.{fn.__qualname__}"  # the cache key; the function is not hashed
    return _derived(_lake(), layer, name, read.cache_key(layer, name), fn_name, arg, fn)


def sales() -> read.SalesGold:
    """The Sales page's Gold tables, read once per version and shared (read-only);
    read ahead in the background when the app opens and after a run."""
    return read.sales_gold()


@st.cache_data(show_spinner=False, max_entries=8)
def _quarantine_counts(lake: str, key: Key) -> pd.DataFrame:
    return read.quarantine_rule_counts()


def quarantine_counts() -> pd.DataFrame:
    """Quarantined records per source table and rule, counted by delta-rs once per version."""
    return _quarantine_counts(_lake(), read.cache_key("silver", "quarantine"))


@st.cache_data(show_spinner=False, max_entries=64)
def _quarantine_sample(
    lake: str, key: Key, rule: str, source_table: str | None, limit: int
) -> pd.DataFrame:
    return read.quarantine_samples(rule, source_table, limit)


def quarantine_sample(rule: str, source_table: str | None = None, limit: int = 25) -> pd.DataFrame:
    """Up to `limit` quarantined records of a rule, queried (never the whole table) per version."""
    key = read.cache_key("silver", "quarantine")
    return _quarantine_sample(_lake(), key, rule, source_table, limit)


@st.cache_data(show_spinner=False, max_entries=256)
def _stats_cached(lake: str, layer: str, name: str, key: Key) -> read.TableStats:
    return read.table_stats(layer, name)


def all_table_stats() -> list[read.TableStats]:
    return [
        _stats_cached(_lake(), layer, name, read.cache_key(layer, name))
        for layer, tables in read.TABLES.items()
        for name in tables
    ]


def refresh() -> None:
    """Drop every cached read (after a run or a generation finished)."""
    st.cache_data.clear()


# ----------------------------------------------------------------------------- formatting


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def plain(value: object) -> str:
    """Text from the data, made inert for elements that render Markdown (st.error, captions).

    Escapes Markdown and Streamlit's own syntax (:icons:, :color[...]), so a
    record, an error message or a run id can neither format, link nor load an
    image. Tables and charts show data as data and need none of this.
    """
    return _MARKDOWN.sub(r"\\\1", str(value))


money = formats.money
count = formats.count
pct = formats.pct
date = formats.date
segment = formats.segment
label = formats.label


def ago(moment: dt.datetime | None) -> str:
    if moment is None or pd.isna(moment):
        return "never"
    seconds = (dt.datetime.now(dt.UTC) - pd.Timestamp(moment).tz_convert("UTC")).total_seconds()
    if seconds < 90:
        return f"{max(int(seconds), 0)} s ago"
    if seconds < 5400:
        return f"{int(seconds // 60)} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def chart(fig: go.Figure, key: str | None = None) -> None:
    """Every Plotly figure goes through here: same margins, theme and toolbar.

    Figures are built with plotly.graph_objects: plotly.express costs ~50 ms per
    figure, which alone would break the page time budget.
    """
    fig.update_layout(margin={"l": 10, "r": 10, "t": 40, "b": 10})
    st.plotly_chart(fig, width="stretch", config=PLOTLY_CONFIG, key=key)


def money_axis(
    fig: go.Figure, axis: str = "y", title: str | None = None, secondary_y: bool | None = None
) -> None:
    """A money axis: the currency symbol, thousands separators, starting at 0."""
    options: dict[str, Any] = {
        "tickprefix": formats.currency_symbol(),
        "tickformat": ",.0f",
        "hoverformat": ",.2f",
        "rangemode": "tozero",
    }
    if title is not None:
        options["title_text"] = title
    _axis(fig, axis, secondary_y, options)


def count_axis(
    fig: go.Figure,
    axis: str = "y",
    secondary_y: bool | None = None,
    top: float | None = None,
    title: str | None = None,
) -> None:
    """A count axis: whole numbers with thousands separators, starting at 0.

    With `top` (the largest value) the ticks are whole steps (1, 2, 5, 10 ...):
    a count axis never shows 2.5 orders, nor "2, 2, 3" from rounded ticks.
    """
    options: dict[str, Any] = {"tickformat": ",d", "rangemode": "tozero"}
    if top is not None and top > 0:
        options["dtick"] = _whole_step(float(top) / 5)
    if title is not None:
        options["title_text"] = title
    _axis(fig, axis, secondary_y, options)


def _whole_step(rough: float) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50 ... that is at least `rough`."""
    magnitude = 1
    while True:
        for factor in (1, 2, 5):
            if magnitude * factor >= rough:
                return magnitude * factor
        magnitude *= 10


def _axis(fig: go.Figure, axis: str, secondary_y: bool | None, options: dict[str, Any]) -> None:
    if axis == "x":
        fig.update_xaxes(**options)
    elif secondary_y is None:
        fig.update_yaxes(**options)
    else:
        fig.update_yaxes(secondary_y=secondary_y, **options)


def bars(
    frame: pd.DataFrame,
    x: str,
    ys: Sequence[str],
    title: str,
    horizontal: bool = False,
    names: Sequence[str] | None = None,
) -> go.Figure:
    """Grouped bars of one or more numeric columns."""
    fig = go.Figure()
    for i, y in enumerate(ys):
        label = names[i] if names else y.replace("_", " ")
        if horizontal:
            fig.add_trace(go.Bar(x=frame[y], y=frame[x], name=label, orientation="h"))
        else:
            fig.add_trace(go.Bar(x=frame[x], y=frame[y], name=label))
    fig.update_layout(title=title, barmode="group", showlegend=len(ys) > 1)
    return fig


def lines(frame: pd.DataFrame, x: str, y: str, by: str, title: str) -> go.Figure:
    """One line per value of `by`."""
    fig = go.Figure()
    for value, part in frame.groupby(by, sort=True):
        fig.add_trace(go.Scatter(x=part[x], y=part[y], name=str(value), mode="lines+markers"))
    fig.update_layout(title=title)
    return fig


def empty_lake(what: str) -> None:
    """What to do when the table a page needs does not exist yet."""
    st.info(f"No {what} yet. Generate demo data, then run the pipeline.")
    left, right = st.columns(2)
    left.page_link(PAGES["generate"], label="Generate data", icon=":material/database:")
    right.page_link(PAGES["pipeline"], label="Run the pipeline", icon=":material/play_arrow:")


csv_bytes = formats.csv_bytes


def money_column(title: str) -> Any:
    """A table column of money in the configured currency, with thousands separators."""
    return st.column_config.NumberColumn(title, format=formats.money_format())


def count_column(title: str) -> Any:
    return st.column_config.NumberColumn(title, format="%,d")


def date_column(title: str) -> Any:
    return st.column_config.DateColumn(title, format="YYYY-MM-DD")


def show_table(
    frame: pd.DataFrame,
    money_cols: Sequence[str] = (),
    count_cols: Sequence[str] = (),
    pct_cols: Sequence[str] = (),
    date_cols: Sequence[str] = (),
    segment_cols: Sequence[str] = (),
    config: dict[str, Any] | None = None,
    **kwargs: Any,
) -> None:
    """st.dataframe with readable headers and formats: every table of the pages goes here.

    Money in the currency with separators, counts with separators, dates
    without a time, segment names as words, an em dash for a missing value.
    """
    texts = {c: formats.money for c in money_cols} | {c: formats.pct for c in pct_cols}
    texts |= {c: formats.count for c in count_cols}
    shown = formats.display_frame(frame, dates=date_cols, segments=segment_cols, formats=texts)
    column_config: dict[str, Any] = {c: formats.label(c) for c in shown.columns}
    for c in shown.columns:
        numeric = pd.api.types.is_numeric_dtype(shown[c])
        if c in money_cols and numeric:
            column_config[c] = money_column(formats.label(c))
        elif c in pct_cols and numeric:
            column_config[c] = st.column_config.NumberColumn(formats.label(c), format="percent")
        elif numeric and (c in count_cols or pd.api.types.is_integer_dtype(shown[c])):
            column_config[c] = count_column(formats.label(c))
    column_config.update(config or {})
    kwargs.setdefault("hide_index", True)
    kwargs.setdefault("width", "stretch")
    st.dataframe(shown, column_config=column_config, **kwargs)


# ----------------------------------------------------------------------------- jobs


def start_job(kind: str, label: str, work: Callable[[app_state.Job], Any]) -> app_state.Job | None:
    try:
        return app_state.start(kind, label, work)
    except app_state.JobBusyError as exc:
        st.warning(f"Another job is already in progress ({exc}); wait for it to finish.")
        return None


def follow(
    job: app_state.Job,
    watch: SparkWatch | None = None,
    poll: float = 0.5,
    steps: Sequence[str] | None = None,
    runs: pd.DataFrame | None = None,
) -> None:
    """Draw the job's progress until it ends (the script waits here, the job runs elsewhere).

    For a pipeline run (`steps` given) the box says which steps run now, how
    many are done, the overall percentage, the time elapsed and an estimate
    from the previous runs' step durations (`runs` = gold.pipeline_runs);
    Spark's stages and tasks are folded under an expander. Call it last on a
    page (into a container placed above) so everything else stays visible.
    If the user leaves the page, Streamlit stops this loop, not the job; on
    return the page finds the running job and follows it again. When it ends,
    cached reads are dropped and the page reruns to show the new data.
    """
    expected, concurrency = step_history(runs) if steps else ({}, 1.0)
    with st.container(border=True):
        st.markdown(f"**{plain(job.label)}**")
        bar = st.progress(0.0, text=plain(job.message))
        table = st.empty()
        spark_bar = spark_stages = None
        if watch is not None and watch.available:
            with st.expander("Spark detail: stages and tasks", expanded=False):
                url = watch.ui_url()
                if url:
                    st.caption(f"Full detail in the [Spark UI]({url}).")
                spark_bar, spark_stages = st.empty(), st.empty()
        while True:
            finished = not job.running
            if steps:
                view = run_view(
                    list(steps),
                    list(job.events),
                    job.started_at,
                    time.time(),
                    expected,
                    concurrency,
                    finished,
                )
                bar.progress(view.fraction, text=plain(view.headline()))
                table.dataframe(
                    formats.display_frame(pd.DataFrame(view.rows(expected))),
                    hide_index=True,
                    width="stretch",
                )
            else:
                bar.progress(
                    job.fraction,
                    text=f"{plain(job.message)} · {job.fraction * 100:.0f} % · "
                    f"{formats.duration(job.elapsed)} elapsed",
                )
            if spark_bar is not None and spark_stages is not None:
                _draw_spark(watch, spark_bar, spark_stages)
            if finished:
                break
            time.sleep(poll)
    refresh()
    st.rerun()


def _draw_spark(watch: Any, spark_bar: Any, stages: Any) -> None:
    rows = stage_rows(watch.poll())
    totals = watch.totals()
    if totals["tasks"]:
        frac = totals["tasks_done"] / totals["tasks"]
        spark_bar.progress(
            min(frac, 1.0),
            text=(
                f"Spark: {totals['stages_done']:,}/{totals['stages']:,} stages, "
                f"{totals['tasks_done']:,}/{totals['tasks']:,} tasks done, "
                f"{totals['tasks_active']:,} running, {totals['tasks_failed']:,} failed"
            ),
        )
    if rows:
        stages.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
