"""Live: the order event stream, minute by minute.

Thin by design: controls call pipeline.live (broker, producer, stream) and the
live panel reads gold.live_sales_minute and gold.live_alerts through the
checked reader every page uses (pipeline.read via pages/_ui.py, cached per
Delta version, delta-rs, not Spark), ordered by pipeline.live.dashboard. Only
the panel reruns on its timer (st.fragment), so the controls keep their state.
"""

from __future__ import annotations

import datetime as dt
import os

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from pages import _ui as ui
from pipeline import read
from pipeline.config import settings
from pipeline.live import broker, dashboard, health, producer, stream

REFRESH_SECONDS = 3


def _run(action, success: str) -> None:
    """Run a control action; show its failure as one line instead of a traceback."""
    try:
        action()
        st.session_state["live_notice"] = ("success", success)
    except Exception as exc:  # any failure is reported on the page
        st.session_state["live_notice"] = ("error", f"{type(exc).__name__}: {exc}")


ui.page_guard()
cfg = settings()
st.title("Live orders")
st.caption(
    f"Topic `{cfg.topic}` on `{cfg.bootstrap_servers}`"
    + (" (local broker)" if cfg.uses_local_broker else " (external cluster)")
    + f" · drop folder `{stream.drop_folder()}` · 1-minute windows, 2-minute watermark"
)

notice = st.session_state.pop("live_notice", None)
if notice:
    (st.success if notice[0] == "success" else st.error)(ui.plain(notice[1]))

state = health.live_status(check_broker=False)
broker_col, producer_col, query_col = st.columns(3)

with broker_col:
    st.subheader("Broker")
    if cfg.uses_local_broker:
        start_broker = st.button("Start broker", key="live_broker_start")
        stop_broker = st.button("Stop broker", key="live_broker_stop")
        if start_broker:
            with st.spinner("Starting the local Kafka broker..."):
                _run(broker.start, "Kafka broker running")
            st.rerun()
        if stop_broker:
            with st.spinner("Stopping the broker..."):
                _run(broker.stop, "Kafka broker stopped")
            st.rerun()
    else:
        st.write("External cluster (KAFKA_BOOTSTRAP_SERVERS): nothing to start here.")

with producer_col:
    st.subheader("Producer")
    target = st.radio("Target", ["kafka", "files"], horizontal=True, key="live_producer_target")
    rate = st.slider("Events per second", 1, 500, 20, key="live_producer_rate")
    malformed = st.slider("Malformed share", 0.0, 0.5, 0.05, 0.01, key="live_malformed")
    duplicates = st.slider("Duplicate share", 0.0, 0.5, 0.05, 0.01, key="live_duplicates")
    running = producer.background()
    elsewhere = [p for p in state.producers if p.get("pid") != os.getpid()]
    if running is not None and running.running:
        if st.button("Stop producer", key="live_producer_stop"):
            _run(producer.stop_background, "Producer stopped")
            st.rerun()
    elif elsewhere:
        st.info(
            f"A producer runs in another process (pid {elsewhere[0].get('pid')}, "
            "the command line): stop it there.",
            icon=":material/info:",
        )
    elif st.button("Start producer", key="live_producer_start"):
        _run(
            lambda: producer.start_background(
                rate=float(rate), malformed=malformed, duplicates=duplicates, target=target
            ),
            "Producer running",
        )
        st.rerun()

with query_col:
    st.subheader("Streaming query")
    source = st.radio(
        "Source",
        ["kafka", "files"],
        index=0 if cfg.stream_source == "kafka" else 1,
        horizontal=True,
        key="live_query_source",
    )
    query_beat = state.query
    if query_beat is not None and query_beat.get("pid") != os.getpid():
        st.info(
            f"The query runs in another process (pid {query_beat.get('pid')}, the command "
            "line): stop it there.",
            icon=":material/info:",
        )
    elif stream.status(with_lag=False)["active"]:
        if st.button("Stop query", key="live_query_stop"):
            with st.spinner("Stopping after the batch in flight..."):
                _run(stream.stop, "Query stopped")
            st.rerun()
    elif st.button("Start query", key="live_query_start"):
        with st.spinner("Starting the streaming query..."):
            _run(
                lambda: stream.start_background(ui.spark(), source=source),
                "Query running",
            )
        st.rerun()


def _minute_chart(minutes: pd.DataFrame, current: dt.datetime) -> go.Figure:
    """Net revenue bars and orders per minute; the minute in progress is drawn as partial."""
    recent = minutes.tail(60)
    partial = recent["window_start"] >= pd.Timestamp(current)
    done, now_part = recent[~partial], recent[partial]
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    width = 0.8 * 60_000  # ms: a one-bar trace would otherwise be drawn a pixel wide
    figure.add_bar(
        x=done["window_start"] + pd.Timedelta(seconds=30),
        y=done["net_revenue"].astype(float),
        width=width,
        name="Net revenue",
        marker_color="#0f766e",
    )
    figure.add_bar(
        x=now_part["window_start"] + pd.Timedelta(seconds=30),
        y=now_part["net_revenue"].astype(float),
        width=width,
        name="Net revenue, minute in progress (partial)",
        marker={"color": "rgba(15,118,110,0.35)", "pattern": {"shape": "/"}},
    )
    figure.add_scatter(
        x=done["window_start"] + pd.Timedelta(seconds=30),
        y=done["orders"],
        name="Orders",
        mode="lines+markers",
        line={"color": "#f59e0b"},
        secondary_y=True,
    )
    if len(now_part):
        figure.add_scatter(
            x=now_part["window_start"] + pd.Timedelta(seconds=30),
            y=now_part["orders"],
            name="Orders, minute in progress (partial)",
            mode="markers",
            marker={"color": "#f59e0b", "symbol": "circle-open", "size": 10},
            secondary_y=True,
        )
    figure.update_layout(
        title="Per minute, last hour (UTC)", height=360, legend_orientation="h", barmode="overlay"
    )
    ui.money_axis(figure, title="Net revenue", secondary_y=False)
    ui.count_axis(figure, secondary_y=True, top=float(recent["orders"].max()), title="Orders")
    figure.update_xaxes(hoverformat="%H:%M")
    return figure


@st.fragment(run_every=REFRESH_SECONDS)
def live_panel() -> None:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    minutes = dashboard.minutes_view(ui.table("gold", "live_sales_minute"))
    alerts = dashboard.alerts_view(ui.table("gold", "live_alerts"))
    kpis = read.live_kpis(minutes, now)
    recent, hour, n = kpis["recent"], kpis["hour"], kpis["window_minutes"]
    row1, row2 = st.columns(3), st.columns(3)
    row1[0].metric(f"Orders, last {n} min", ui.count(recent["orders"]), border=True)
    row1[1].metric(f"Revenue, last {n} min", ui.money(recent["net_revenue"]), border=True)
    row1[2].metric(
        f"Avg order value, last {n} min", ui.money(recent["avg_order_value"]), border=True
    )
    row2[0].metric("Orders, last hour", ui.count(hour["orders"]), border=True)
    row2[1].metric("Revenue, last hour", ui.money(hour["net_revenue"]), border=True)
    row2[2].metric("Avg order value, last hour", ui.money(hour["avg_order_value"]), border=True)
    st.caption(
        f"Rolling windows: the minute in progress (partial) and the {n - 1} minutes before it; "
        "the hour likewise. Event time, UTC; revenue-bearing orders only."
    )

    if len(minutes):
        ui.chart(_minute_chart(minutes, kpis["current_minute"]), key="live_minutes_chart")
    else:
        st.info("No live minutes yet: start the broker, the producer and the query.")

    st.subheader("Alerts")
    if len(alerts):
        ui.show_table(
            alerts.head(50),
            config={
                "window_start": st.column_config.DatetimeColumn(
                    "Window start (UTC)", format="YYYY-MM-DD HH:mm"
                ),
                "z_score": st.column_config.NumberColumn("Z-score", format="%.2f"),
                "value": st.column_config.NumberColumn("Value", format="%,.2f"),
                "baseline": st.column_config.NumberColumn("Baseline", format="%,.2f"),
            },
        )
    else:
        st.write("No alerts.")

    st.subheader("System health")
    live = health.live_status(broker_timeout=1.5)
    query = stream.status()
    h1, h2, h3, h4, h5 = st.columns(5)
    h1.metric("Broker", live.broker)
    h2.metric("Producer", "running" if live.producing else "stopped")
    h3.metric("Query", live.state)
    lag = query["consumer_lag"]
    h4.metric("Consumer lag (offsets)", ui.count(lag))
    age = query["last_batch_age_seconds"]
    h5.metric("Last batch", "—" if age is None else f"{age:.0f} s ago")
    st.caption(f"{live.headline}: {ui.plain(live.detail())}.")
    if query["error"]:
        st.warning(f"Last query error: {ui.plain(query['error'])}")
    live_producer = producer.background()
    if live_producer is not None and live_producer.error:
        st.warning(f"Producer error: {ui.plain(live_producer.error)}")
    with st.expander("Query metrics"):
        st.json(
            {
                key: query[key]
                for key in (
                    "source",
                    "query_id",
                    "batches",
                    "last_batch_id",
                    "input_rows_per_second",
                    "processed_rows_per_second",
                    "batch_duration_ms",
                    "watermark",
                    "restarts",
                )
            }
        )


live_panel()
