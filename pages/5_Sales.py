"""Sales: KPIs against the previous period, trends, categories, products, countries, channels.

Every chart follows the filters (dates, category, country, channel, status).
Every number is a sum of Gold rows Spark built for this page (gold.sales_cells,
gold.sales_orders, gold.product_sales; pipeline/gold/sales_cells.py): the page
only filters and sums them through pipeline.read.SalesGold. Without a filter the
KPIs equal gold.daily_sales.
"""

from __future__ import annotations

import datetime as dt

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from pages import _ui as ui
from pipeline import formats, read

ui.page_guard()
st.title("Sales")

sales = ui.sales()
if sales.empty or sales.min_date is None or sales.max_date is None:
    ui.empty_lake("sales")
    st.stop()
first, last = sales.min_date, sales.max_date

# --- filters -------------------------------------------------------------------------------------
PERIODS = {"Last 30 days": 30, "Last 90 days": 90, "Last 365 days": 365, "All": None}
with st.container(border=True):
    c1, c2 = st.columns([3, 2])
    period = c1.segmented_control(
        "Period", [*PERIODS, "Custom"], default="Last 90 days", key="period", required=True
    )
    grain = c2.segmented_control(
        "Granularity", ["day", "week", "month"], default="day", key="grain", required=True
    )
    c3, d1, d2, d3, d4 = st.columns(5)
    if period == "Custom":
        picked = c3.date_input(
            "Dates", (max(first, last - dt.timedelta(days=89)), last), first, last, key="dates"
        )
        start, end = (picked[0], picked[-1]) if len(picked) else (first, last)
    else:
        days = PERIODS.get(period or "All")
        start = first if days is None else max(first, last - dt.timedelta(days=days - 1))
        end = last
        c3.caption("Dates")
        c3.markdown(f"{start:%d %b %Y} – {end:%d %b %Y}")
    # "All" is the empty selection, as in a BI tool: no "Select all" that fills every chip
    chosen_dims = {
        key: box.multiselect(
            label,
            sorted(options),
            placeholder=f"All {plural}",
            key=key,
            select_all=False,
            help=f"Leave empty for all {plural}; pick some to filter.",
        )
        for box, label, plural, key, options in (
            (d1, "Category", "categories", "f_category", sales.categories),
            (d2, "Country", "countries", "f_country", sales.countries),
            (d3, "Channel", "channels", "f_channel", sales.channels),
            (d4, "Status", "statuses", "f_status", sales.statuses),
        )
    }
    categories, countries, channels, statuses = chosen_dims.values()


def _dims(chosen: list[str], options: list[str]) -> tuple[str, ...]:
    """Choosing every option is the same as choosing none (no filter)."""
    return () if set(chosen) >= set(options) else tuple(sorted(chosen))


flt = read.SalesFilter(
    start,
    end,
    _dims(categories, sales.categories),
    _dims(countries, sales.countries),
    _dims(channels, sales.channels),
    _dims(statuses, sales.statuses),
)
daily = read.sales_daily(sales, flt)
kpi = read.sales_kpis(daily)
prev_filter = flt.previous()
has_previous = prev_filter.start >= first
prev = read.sales_kpis(read.sales_daily(sales, prev_filter)) if has_previous else None

# --- KPIs ----------------------------------------------------------------------------------------
SPECS = [
    ("Net revenue", "net_revenue", ui.money),
    ("Orders", "orders", ui.count),
    ("Avg order value", "avg_order_value", ui.money),
    ("Units", "units", ui.count),
    ("Gross margin", "gross_margin", ui.money),
    ("Cancelled + returned", "cancelled_returned", ui.count),
]
cards = [*st.columns(3), *st.columns(3)]
for col, (label, key, fmt) in zip(cards, SPECS, strict=True):
    value, before = kpi[key], (prev or {}).get(key)
    delta = None
    if prev is not None and value is not None and before:
        delta = f"{(value - before) / abs(before) * 100:+.1f}%"
    col.metric(
        label,
        fmt(value),
        delta=delta,
        delta_color="inverse" if key == "cancelled_returned" else "normal",
        border=True,
        help="Change against the same number of days just before the period."
        if prev is not None
        else "No data before this period to compare with.",
    )
st.caption(
    f"{flt.start:%d %b %Y} – {flt.end:%d %b %Y} · source: gold.sales_cells, gold.sales_orders · "
    "orders and revenue: revenue-bearing orders · "
    f"money in {formats.currency()} (SHOPLAKE_CURRENCY)"
)

# --- over time -----------------------------------------------------------------------------------
series = read.resample(daily, grain or "day")
fig = make_subplots(specs=[[{"secondary_y": True}]])
fig.add_trace(go.Bar(x=series["order_date"], y=series["net_revenue"], name="Net revenue"))
fig.add_trace(
    go.Scatter(x=series["order_date"], y=series["orders"], name="Orders", mode="lines"),
    secondary_y=True,
)
fig.update_layout(title=f"Net revenue and orders per {grain}", legend={"orientation": "h"})
fig.update_xaxes(hoverformat="%Y-%m-%d")
ui.money_axis(fig, title="Net revenue", secondary_y=False)
top = float(series["orders"].max()) if len(series) else None
ui.count_axis(fig, secondary_y=True, top=top, title="Orders")
ui.chart(fig, key="trend")

# --- categories ----------------------------------------------------------------------------------
st.subheader("Categories")
by_category = sales.by_dimension(flt, "category")
left, right = st.columns(2)
with left:
    fig = ui.bars(
        by_category,
        "category",
        ["net_revenue", "gross_margin"],
        "Net revenue and gross margin",
        names=["Net revenue", "Gross margin"],
    )
    ui.money_axis(fig)
    ui.chart(fig, key="cat_bar")
with right:
    months = sales.category_months(flt)
    fig = go.Figure()
    for category, part in months.groupby("category", sort=True):
        fig.add_trace(
            go.Scatter(x=part["month"], y=part["revenue_share"], name=category, stackgroup="share")
        )
    fig.update_layout(title="Revenue share per month")
    fig.update_yaxes(tickformat=".0%")
    ui.chart(fig, key="cat_share")
MONEY = ["net_revenue", "gross_revenue", "gross_margin", "cost", "avg_order_value"]
COUNTS = ["orders", "units", "cancelled_orders", "returned_orders"]
ui.show_table(by_category, money_cols=MONEY, count_cols=COUNTS, pct_cols=["margin_pct"])
st.caption(
    "Gross margin counts only lines whose cost is known, and margin % is over their revenue: "
    "products missing from the catalogue (category Unknown) have no cost, so no margin (—)."
)

# --- products, countries, channels ---------------------------------------------------------------
st.subheader("Top products")
products = sales.top_products(flt, limit=15)
ui.show_table(products, money_cols=MONEY, count_cols=COUNTS)

left, right = st.columns(2)
by_country = sales.by_dimension(flt, "country")
by_channel = sales.by_dimension(flt, "channel")
with left:
    fig = ui.bars(by_country, "country", ["net_revenue"], "Net revenue by country")
    ui.money_axis(fig)
    ui.chart(fig, "countries")
with right:
    fig = go.Figure(
        go.Pie(
            labels=by_channel["channel"],
            values=by_channel["net_revenue"],
            hovertemplate="%{label}: " + formats.currency_symbol() + "%{value:,.2f}<extra></extra>",
        )
    )
    fig.update_layout(title="Net revenue by channel")
    ui.chart(fig, key="channels")

# --- downloads -----------------------------------------------------------------------------------
with st.expander("Download what is shown (CSV)"):
    tag = f"{flt.start:%Y%m%d}-{flt.end:%Y%m%d}"
    files = {
        f"sales_per_{grain}": series,
        "categories": by_category,
        "top_products": products,
        "countries": by_country,
        "channels": by_channel,
    }
    for col, (name, frame) in zip(st.columns(len(files)), files.items(), strict=True):
        col.download_button(
            name.replace("_", " "),
            data=ui.csv_bytes(frame, MONEY, COUNTS),
            file_name=f"shoplake_{name}_{tag}.csv",
            mime="text/csv",
            key=f"dl_{name}",
            icon=":material/download:",
        )
