"""Home: the state of the lake at a glance, and what to do next."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages import _ui as ui
from pipeline import formats, read
from pipeline.config import settings
from pipeline.live import health

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
layer_scores = read.layer_scores(dq, runs).set_index("layer")["score"].to_dict()

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

st.caption(
    "Silver rows include the dimensional model (dim_customer with its history, dim_product, "
    "dim_date, fact_sales) besides the cleaned tables, so Silver can hold more rows than Bronze."
)

with st.expander("Tables", expanded=False):
    frame = pd.DataFrame(
        [
            {
                "table": f"{s.layer}.{s.table}",
                "exists": "yes" if s.exists else "no",
                "rows": s.rows if s.exists else None,
                "files": s.files if s.exists else None,
                "version": s.version,
                "last change": formats.utc_time(s.modified) if s.modified is not None else None,
            }
            for s in stats
        ]
    )
    ui.show_table(frame, count_cols=["rows", "files", "version"])
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
    scores = read.latest_scores(dq, runs)
    if scores.empty:
        st.write("No quality results yet.")
    else:
        worst = scores.sort_values("score").iloc[0]
        # the Quality page's and `python -m pipeline quality`'s number (pipeline/quality/scores.py)
        st.metric(
            "Overall quality score",
            ui.pct(read.overall_score(dq, runs)),
            help=(
                "Records that passed every quarantine and fail rule, out of the records each "
                "table's latest run checked; tables weigh by records checked."
            ),
        )
        lowest = ui.plain(f"{worst['layer']}.{worst['table']}")
        st.caption(f"Lowest: {lowest} at {ui.pct(worst['score'])}")
        st.page_link(ui.PAGES["quality"], label="Quality report", icon=":material/verified:")

# --- streaming -----------------------------------------------------------------------------------
st.subheader("Live stream")


@st.fragment(run_every="10s")
def stream_status() -> None:
    """Redrawn on its own every 10 s, from the state of the query, producers and broker."""
    live = health.live_status()
    minutes = ui.table("gold", "live_sales_minute", ["window_start", "window_end"])
    written = read.live_freshness(minutes)
    if written["state"] == "never run":
        windows = "no 1-minute window written yet"
    else:
        windows = (
            f"last 1-minute window ended {ui.ago(written['last_window_end'])} "
            f"({ui.count(written['windows'])} windows in total)"
        )
    text = f"{live.headline}: {ui.plain(live.detail())}; {windows}."
    if live.running:
        st.success(text, icon=":material/sensors:")
    elif live.state == "not responding":
        st.warning(text, icon=":material/sensors:")
    else:
        st.info(text, icon=":material/sensors_off:")


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
