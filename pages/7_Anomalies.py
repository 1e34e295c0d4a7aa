"""Anomalies: days whose revenue leaves the band mean ± 3 std of the 28 days before.

The flags, baselines and z-scores are gold.revenue_anomalies (batch) and
gold.live_alerts (stream); this page draws them.
"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from pages import _ui as ui
from pipeline import read

ui.page_guard()
st.title("Anomalies")

daily_tab, live_tab = st.tabs(["Daily revenue", "Live alerts"])

with daily_tab:
    anomalies = read.anomaly_band(ui.table("gold", "revenue_anomalies"))
    if anomalies.empty:
        ui.empty_lake("revenue anomalies")
    else:
        flagged = anomalies[anomalies["is_anomaly"]]
        m1, m2, m3 = st.columns(3)
        m1.metric("Days", ui.count(len(anomalies)), border=True)
        m2.metric("Anomalous days", ui.count(len(flagged)), border=True)
        m3.metric(
            "Spikes / drops",
            f"{(flagged['direction'] == 'spike').sum()} / {(flagged['direction'] == 'drop').sum()}",
            border=True,
        )
        fig = go.Figure()
        fig.add_trace(
            go.Scatter(
                x=anomalies["order_date"],
                y=anomalies["upper"],
                mode="lines",
                line={"width": 0},
                showlegend=False,
                hoverinfo="skip",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=anomalies["order_date"],
                y=anomalies["lower"],
                mode="lines",
                line={"width": 0},
                fill="tonexty",
                fillcolor="rgba(15,118,110,0.15)",
                name="baseline ± 3 std",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=anomalies["order_date"],
                y=anomalies["baseline_mean"],
                mode="lines",
                line={"dash": "dot", "color": "#64748b"},
                name="baseline mean",
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
        fig.update_layout(title="Daily net revenue and its baseline band", hovermode="x")
        ui.chart(fig, key="band")
        st.caption(
            "Baseline = mean and sample standard deviation of the 28 days before each day; "
            "no band until 28 days exist. A day is anomalous when |z| >= 3."
        )
        st.subheader("Anomalous days")
        if flagged.empty:
            st.success("No anomalous day.")
        else:
            st.dataframe(
                flagged[
                    [
                        "order_date",
                        "net_revenue",
                        "baseline_mean",
                        "baseline_std",
                        "z_score",
                        "direction",
                    ]
                ].sort_values("order_date", ascending=False),
                hide_index=True,
                width="stretch",
                column_config={
                    "order_date": st.column_config.DateColumn("day", format="YYYY-MM-DD"),
                    "z_score": st.column_config.NumberColumn("z-score", format="%.2f"),
                    "baseline_mean": st.column_config.NumberColumn("baseline", format="%.2f"),
                    "baseline_std": st.column_config.NumberColumn("std", format="%.2f"),
                },
            )


@st.fragment(run_every="15s")
def live_alerts() -> None:
    """Redrawn on its own every 15 s while the stream may be adding alerts."""
    alerts = ui.table("gold", "live_alerts")
    if alerts.empty:
        st.info("No live alert: start the stream on the Live page to watch 1-minute windows.")
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
