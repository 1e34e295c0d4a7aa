"""Customers (RFM): segments, the R x F grid, distributions, search and export.

Scores and segments are gold.customer_rfm as computed by the pipeline; this
page only counts and draws them.
"""

from __future__ import annotations

import re

import plotly.graph_objects as go
import streamlit as st

from pages import _ui as ui
from pipeline import formats, read

ui.page_guard()
st.title("Customers (RFM)")

rfm = ui.shared_table("gold", "customer_rfm")
if rfm.empty:
    ui.empty_lake("customer segments")
    st.stop()

as_of = rfm["as_of_date"].max()
segments = ui.derived(read.rfm_segments, "gold", "customer_rfm")
st.caption(
    f"As of {as_of:%d %b %Y} (the day after the latest order). Recency in days, frequency = "
    "revenue-bearing orders, revenue (monetary) = their net revenue; scores are quintiles 1..5."
)
MONEY = ["monetary"]
COUNTS = ["customers", "frequency", "recency_days", "r_score", "f_score", "m_score"]
DATES = ["last_order_date", "as_of_date"]
labelled = segments.assign(segment=segments["rfm_segment"].map(formats.segment))

m1, m2, m3, m4 = st.columns(4)
m1.metric("Customers", ui.count(len(rfm)), border=True)
m2.metric("Revenue", ui.money(rfm["monetary"].sum()), border=True)
top = segments.set_index("rfm_segment")
m3.metric(
    "Champions",
    ui.count(top["customers"].get("champions", 0)),
    help="r5 and f4-5",
    border=True,
)
m4.metric(
    "At risk + can't lose",
    ui.count(top["customers"].get("at_risk", 0) + top["customers"].get("cant_lose", 0)),
    border=True,
)

# --- segments ------------------------------------------------------------------------------------
left, right = st.columns(2)
for col, field, title, key in (
    (left, "customers", "Customers per segment", "seg_size"),
    (right, "monetary", "Net revenue per segment", "seg_rev"),
):
    with col:
        fig = ui.bars(labelled, "segment", [field], title, horizontal=True)
        fig.update_yaxes(autorange="reversed")
        if field == "monetary":
            ui.money_axis(fig, axis="x")
        else:
            ui.count_axis(fig, axis="x")
        ui.chart(fig, key=key)
ui.show_table(
    segments,
    money_cols=MONEY,
    count_cols=COUNTS,
    pct_cols=["revenue_share"],
    segment_cols=["rfm_segment"],
    config={
        "avg_recency_days": st.column_config.NumberColumn("Avg recency (days)", format="%,.0f")
    },
)

# --- R x F grid ----------------------------------------------------------------------------------
grid = ui.derived(read.rfm_grid, "gold", "customer_rfm")
fig = go.Figure(
    go.Heatmap(
        z=grid.values,
        x=[f"F{f}" for f in grid.columns],
        y=[f"R{r}" for r in grid.index],
        text=grid.values,
        texttemplate="%{text}",
        colorscale="Teal",
    )
)
fig.update_layout(title="Customers by recency score (rows) and frequency score (columns)")
fig.update_yaxes(autorange="reversed")
ui.chart(fig, key="grid")

# --- distributions -------------------------------------------------------------------------------
c1, c2, c3 = st.columns(3)
for col, field, title in (
    (c1, "recency_days", "Recency (days)"),
    (c2, "frequency", "Frequency (orders)"),
    (c3, "monetary", "Revenue per customer"),
):
    with col:
        bins = ui.derived(read.rfm_histogram, "gold", "customer_rfm", field)
        unit = formats.currency_symbol() if field == "monetary" else ""
        fig = go.Figure(
            go.Bar(
                x=(bins["left"] + bins["right"]) / 2,
                y=bins["count"],
                width=bins["right"] - bins["left"],
                customdata=bins[["left", "right"]],
                hovertemplate=f"{unit}%{{customdata[0]:,.0f}} – {unit}%{{customdata[1]:,.0f}}: "
                "%{y:,d} customers<extra></extra>",
            )
        )
        fig.update_layout(title=title, bargap=0.02)
        ui.count_axis(fig)
        if field == "monetary":
            ui.money_axis(fig, axis="x")
        ui.chart(fig, key=f"hist_{field}")

# --- search and export ---------------------------------------------------------------------------
st.subheader("Find customers")
s1, s2 = st.columns([2, 3])
text = s1.text_input("Customer id contains", key="search")
chosen = s2.multiselect(
    "Segments",
    list(segments["rfm_segment"]),
    key="segments",
    format_func=formats.segment,
    placeholder="All segments",
    select_all=False,
)
ranked = ui.derived(read.rank_customers, "gold", "customer_rfm")
found = read.search_customers(ranked, text, chosen)
LIMIT = 1_000
st.caption(
    f"{len(found):,} customers match"
    + (f"; the first {LIMIT:,} are shown." if len(found) > LIMIT else ".")
)
ui.show_table(
    found.head(LIMIT),
    money_cols=MONEY,
    count_cols=COUNTS,
    date_cols=DATES,
    segment_cols=["rfm_segment"],
)

st.subheader("Export a segment")
e1, e2 = st.columns([2, 3])
segment = e1.selectbox(
    "Segment", list(segments["rfm_segment"]), key="export_segment", format_func=formats.segment
)
members = rfm[rfm["rfm_segment"] == segment]
e2.download_button(
    f"Download {len(members):,} {ui.plain(formats.segment(segment))} customers (CSV)",
    data=lambda: ui.csv_bytes(members, MONEY, COUNTS),
    file_name=f"shoplake_rfm_{re.sub(r'[^A-Za-z0-9_-]', '_', str(segment))}.csv",
    mime="text/csv",
    icon=":material/download:",
    key="export",
)
