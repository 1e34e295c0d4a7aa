"""Anomalies: days whose revenue leaves the band its own history predicts.

The expected revenue, band, score and flags are gold.revenue_anomalies (method:
pipeline/gold/revenue_anomalies.py, README "Gold"); live alerts are
gold.live_alerts. When the lake was made by the generator, its manifests list
the injected promotion and outage days, shown here beside what was found.
"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from pages import _ui as ui
from pipeline import read
from pipeline.live import health

ui.page_guard()
st.title("Anomalies")

daily_tab, live_tab = st.tabs(["Daily revenue", "Live alerts"])

with daily_tab:
    anomalies = read.anomaly_band(ui.table("gold", "revenue_anomalies"))
    if anomalies.empty:
        ui.empty_lake("revenue anomalies")
    else:
        flagged = anomalies[anomalies["is_anomaly"]]
        injected = read.injected_anomalies(read.landing_manifests())
        versus = read.injected_vs_found(anomalies, injected)
        m1, m2, m3, m4 = st.columns(4)
        m1.metric("Days", ui.count(len(anomalies)), border=True)
        m2.metric("Anomalous days", ui.count(len(flagged)), border=True)
        m3.metric(
            "Spikes / drops",
            f"{ui.count((flagged['direction'] == 'spike').sum())} / "
            f"{ui.count((flagged['direction'] == 'drop').sum())}",
            border=True,
        )
        m4.metric(
            "Injected days found",
            f"{ui.count(versus['found'].sum())} / {ui.count(versus['scored'].sum())}"
            if not versus.empty
            else "—",
            border=True,
            help="Promotion and outage days the generator injected (its manifests) that were "
            "flagged in their direction, out of those with a band.",
        )
        fig = go.Figure()
        fig.add_trace(
            go.Scatter(
                x=anomalies["order_date"],
                y=anomalies["upper_bound"],
                mode="lines",
                line={"width": 0},
                showlegend=False,
                hoverinfo="skip",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=anomalies["order_date"],
                y=anomalies["lower_bound"],
                mode="lines",
                line={"width": 0},
                fill="tonexty",
                fillcolor="rgba(15,118,110,0.15)",
                name="normal band",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=anomalies["order_date"],
                y=anomalies["expected_revenue"],
                mode="lines",
                line={"dash": "dot", "color": "#64748b"},
                name="expected",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=anomalies["order_date"],
                y=anomalies["net_revenue"],
                name="net revenue",
                line={"color": "#0f766e"},
            )
        )
        fig.add_trace(
            go.Scatter(
                x=flagged["order_date"],
                y=flagged["net_revenue"],
                mode="markers",
                marker={"size": 11, "color": "#dc2626", "symbol": "x"},
                name="anomaly",
                text=flagged["direction"],
            )
        )
        if not versus.empty:
            fig.add_trace(
                go.Scatter(
                    x=versus["order_date"],
                    y=versus["net_revenue"],
                    mode="markers",
                    marker={"size": 15, "color": "rgba(0,0,0,0)", "line": {"width": 2}},
                    name="injected",
                    text=versus["kind"],
                )
            )
        fig.update_layout(title="Daily net revenue and its normal band", hovermode="x")
        ui.money_axis(fig)
        ui.chart(fig, key="band")
        st.caption(
            "Expected = the median of the same weekday over the previous 8 weeks, moved by the "
            "last 14 days' level; the band is ±3.5 robust standard deviations of the last 56 "
            "days on a log scale (multiplicative: a fall to 40 % is as far out as a rise to "
            "250 %). No band in the first weeks, while history is too short."
        )
        st.subheader("Anomalous days")
        if flagged.empty:
            st.success("No anomalous day.")
        else:
            ui.show_table(
                flagged[
                    [c for c in read.TABLES["gold"]["revenue_anomalies"] if c != "is_anomaly"]
                ].sort_values("order_date", ascending=False),
                money_cols=("net_revenue", "expected_revenue", "lower_bound", "upper_bound"),
                date_cols=("order_date",),
                config={"score": st.column_config.NumberColumn("Score", format="%.1f")},
            )
        if not versus.empty:
            st.subheader("Injected vs found")
            st.caption(
                "Days the generator injected (landing/_manifests): a promotion multiplies the "
                "day's orders, an outage cuts them. Found = flagged in that direction."
            )
            ui.show_table(
                versus[["order_date", "kind", "direction", "net_revenue", "expected_revenue"]]
                .assign(
                    found=versus["found"]
                    .map({True: "yes", False: "no"})
                    .where(versus["scored"], "no band yet")
                )
                .sort_values("order_date"),
                money_cols=("net_revenue", "expected_revenue"),
                date_cols=("order_date",),
            )


@st.fragment(run_every="15s")
def live_alerts() -> None:
    """Redrawn on its own every 15 s while the stream may be adding alerts."""
    alerts = ui.table("gold", "live_alerts")
    if alerts.empty:
        live = health.live_status(check_broker=False)
        if live.running:
            st.info(
                "No live alert yet: the stream is running and no 1-minute window has left "
                "its baseline."
            )
        else:
            st.info(
                f"No live alert: {live.headline.lower()}. Start it on the Live page to "
                "watch 1-minute windows."
            )
        st.page_link(ui.PAGES["live"], label="Live page", icon=":material/sensors:")
    else:
        alerts = alerts.sort_values("window_start")
        st.metric("Alerts", ui.count(len(alerts)))
        fig = go.Figure()
        for metric, part in alerts.groupby("metric", sort=True):
            fig.add_trace(
                go.Scatter(
                    x=part["window_start"],
                    y=part["z_score"],
                    mode="markers",
                    name=str(metric),
                    text=part["kind"],
                    customdata=part[["value", "baseline"]],
                    hovertemplate="%{text}: value %{customdata[0]}, baseline %{customdata[1]}",
                )
            )
        fig.update_layout(title="Live alerts: z-score of each alerted window")
        fig.add_hline(y=3, line_dash="dot")
        fig.add_hline(y=-3, line_dash="dot")
        ui.chart(fig, key="alerts")
        st.dataframe(
            alerts.sort_values("window_start", ascending=False),
            hide_index=True,
            width="stretch",
        )


with live_tab:
    live_alerts()
