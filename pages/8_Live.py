"""Live: the order event stream, minute by minute.

Thin by design: controls call pipeline.live (broker, producer, stream) and the
live panel draws pipeline.live.stream.dashboard_snapshot(), which reads the
small live Gold tables with delta-rs, not Spark. Only the panel reruns on its
timer (st.fragment), so the controls keep their state.
"""

from __future__ import annotations

import streamlit as st
from plotly.subplots import make_subplots

from pages import _ui as ui
from pipeline.config import settings
from pipeline.live import broker, producer, stream

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
    if running is not None and running.running:
        if st.button("Stop producer", key="live_producer_stop"):
            _run(producer.stop_background, "Producer stopped")
            st.rerun()
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
    if stream.status(with_lag=False)["active"]:
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


def _minute_chart(minutes):
    recent = minutes.tail(60)
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_bar(
        x=recent["window_start"], y=recent["net_revenue"].astype(float), name="Net revenue"
    )
    figure.add_scatter(
        x=recent["window_start"],
        y=recent["orders"],
        name="Orders",
        mode="lines+markers",
        secondary_y=True,
    )
    figure.update_layout(title="Per minute (last hour)", height=340, legend_orientation="h")
    figure.update_yaxes(title_text="Net revenue", secondary_y=False)
    figure.update_yaxes(title_text="Orders", secondary_y=True)
    return figure


@st.fragment(run_every=REFRESH_SECONDS)
def live_panel() -> None:
    snapshot = stream.dashboard_snapshot()
    minute, hour = snapshot["last_minute"], snapshot["last_hour"]
    k1, k2, k3, k4, k5 = st.columns(5)
    k1.metric("Orders, last minute", minute["orders"])
    k2.metric("Revenue, last minute", ui.money(minute["net_revenue"]))
    k3.metric("Orders, last hour", hour["orders"])
    k4.metric("Revenue, last hour", ui.money(hour["net_revenue"]))
    k5.metric("Avg order value, last hour", ui.money(hour["avg_order_value"]))

    minutes = snapshot["minutes"]
    if len(minutes):
        ui.chart(_minute_chart(minutes), key="live_minutes_chart")
    else:
        st.info("No live minutes yet: start the broker, the producer and the query.")

    st.subheader("Alerts")
    alerts = snapshot["alerts"]
    if len(alerts):
        st.dataframe(alerts.head(50), hide_index=True)
    else:
        st.write("No alerts.")

    st.subheader("System health")
    health = broker.status(timeout=1.5)
    query = stream.status()
    h1, h2, h3, h4 = st.columns(4)
    h1.metric("Broker", "up" if health.healthy else "down")
    h2.metric("Query", "active" if query["active"] else "stopped")
    lag = query["consumer_lag"]
    h3.metric("Consumer lag (offsets)", "–" if lag is None else lag)
    age = query["last_batch_age_seconds"]
    h4.metric("Last batch age", "–" if age is None else f"{age:.0f}s")
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
