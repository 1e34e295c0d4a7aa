"""Home: the state of the lake at a glance, and what to do next."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages import _ui as ui
from pipeline import read
from pipeline.config import settings

ui.page_guard()
st.title("ShopLake")
st.caption(
    "Orders, customers and products land as files and as a live stream; Spark refines them "
    "through Bronze, Silver and Gold Delta tables, checking quality at every step."
)

stats = ui.all_table_stats()
status = read.lake_status(stats)
landing = read.landing_files()
runs = ui.table("gold", "pipeline_runs")
dq = ui.table("gold", "dq_results")
summary = read.run_summary(runs)
layer_scores = read.layer_scores(dq).set_index("layer")["score"].to_dict()

# --- lake status per layer -----------------------------------------------------------------------
st.subheader("Lake")
cols = st.columns(4)
cols[0].metric("Landing files", ui.count(sum(landing.values())), border=True)
for col, row in zip(cols[1:], status.itertuples(), strict=True):
    score = layer_scores.get(row.layer)
    col.metric(
        f"{row.layer.title()} rows",
        ui.count(row.rows) if row.tables else "—",
        delta=f"quality {ui.pct(score)}" if score is not None else None,
        delta_color="off",
        delta_arrow="off",
        help=f"{row.tables}/{row.expected} tables present; changed {ui.ago(row.last_change)}",
        border=True,
    )

with st.expander("Tables", expanded=False):
    frame = pd.DataFrame(
        [
            {
                "table": f"{s.layer}.{s.table}",
                "exists": s.exists,
                "rows": s.rows,
                "files": s.files if s.exists else None,
                "version": s.version,
                "last change": s.modified,
            }
            for s in stats
        ]
    )
    st.dataframe(frame, hide_index=True, width="stretch")
    st.caption(f"Lake root: `{settings().lake}` · row counts come from the Delta log statistics.")

# --- last run and quality ------------------------------------------------------------------------
left, right = st.columns(2)
with left:
    st.subheader("Last pipeline run")
    if summary.empty:
        st.write("No run recorded yet.")
    else:
        last = summary.iloc[0]
        ok = last["status"] == "succeeded"
        (st.success if ok else st.error)(
            f"Run {ui.plain(last['run_id'])} {last['status']} {ui.ago(last['finished_at'])}: "
            f"{int(last['steps'])} steps in {last['seconds']:.1f} s"
        )
        st.page_link(ui.PAGES["pipeline"], label="Pipeline history", icon=":material/history:")
with right:
    st.subheader("Data quality")
    scores = read.latest_scores(dq)
    if scores.empty:
        st.write("No quality results yet.")
    else:
        worst = scores.sort_values("score").iloc[0]
        st.metric(
            "Overall score (mean of tables)",
            ui.pct(scores["score"].mean()),
            help="A table's score is the mean pass rate of its rules in its latest run.",
        )
        lowest = ui.plain(f"{worst['layer']}.{worst['table']}")
        st.caption(f"Lowest: {lowest} at {ui.pct(worst['score'])}")
        st.page_link(ui.PAGES["quality"], label="Quality report", icon=":material/verified:")

# --- streaming -----------------------------------------------------------------------------------
st.subheader("Live stream")


@st.fragment(run_every="10s")
def stream_status() -> None:
    """Redrawn on its own every 10 s: the stream keeps writing while this page is open."""
    minutes = ui.table("gold", "live_sales_minute", ["window_start", "window_end"])
    live = read.live_freshness(minutes)
    if live["state"] == "never run":
        st.write("The stream has not written any window yet.")
        return
    text = (
        f"Last 1-minute window ended {ui.ago(live['last_window_end'])} "
        f"({ui.count(live['windows'])} windows in total)."
    )
    (st.success if live["state"] == "live" else st.warning)(
        f"Stream {live['state']}: {text}", icon=":material/sensors:"
    )


stream_status()
st.page_link(ui.PAGES["live"], label="Live page", icon=":material/sensors:")

# --- next steps ----------------------------------------------------------------------------------
st.subheader("Next")
has_landing = sum(landing.values()) > 0
has_gold = bool(status.loc[status["layer"] == "gold", "tables"].iloc[0])
if not has_landing and not has_gold:
    st.info(
        "The lake is empty. 1) Generate demo data (or drop your own files under "
        "`landing/<source>/`), 2) run the pipeline, 3) explore sales, customers and quality."
    )
    st.page_link(ui.PAGES["generate"], label="Generate demo data", icon=":material/database:")
elif not has_gold:
    st.info("Landing files are waiting: run the pipeline to build Bronze, Silver and Gold.")
    st.page_link(ui.PAGES["pipeline"], label="Run the pipeline", icon=":material/play_arrow:")
else:
    c1, c2, c3 = st.columns(3)
    c1.page_link(ui.PAGES["sales"], label="Sales", icon=":material/payments:")
    c2.page_link(ui.PAGES["customers"], label="Customers (RFM)", icon=":material/group:")
    c3.page_link(ui.PAGES["anomalies"], label="Anomalies", icon=":material/warning:")
