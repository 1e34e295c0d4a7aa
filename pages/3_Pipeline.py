"""Pipeline: run a layer (or all), watch Spark work, read the run history.

The run executes in a background job (pipeline.app_state) through
pipeline.runner, the same entry point as `python -m pipeline run`; this page
polls the job and Spark's status tracker while it runs.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages import _ui as ui
from pipeline import app_state, read
from pipeline.ui_progress import SparkWatch

ui.page_guard()
st.title("Pipeline")
st.caption(
    "Bronze ingests each landing file once, Silver cleans, deduplicates and quarantines, "
    "Gold recomputes the business views. Every step is timed, counted and checked."
)

TARGETS = {"bronze": "Bronze", "silver": "Silver", "gold": "Gold", "all": "All layers"}


def _run(job: app_state.Job, target: str, session: object, full_refresh: bool) -> object:
    from pipeline.runner import RunInProgressError, run

    try:
        result = run(target, spark=session, progress=job.report, full_refresh=full_refresh)
    except RunInProgressError:
        job.error = "A run is already in progress on this lake; wait for it to finish."
        return None
    read.prefetch_sales_cube()  # so the Sales page finds the new version ready
    return result


running = app_state.current()
cols = st.columns(len(TARGETS) + 1)
clicked = None
for col, (target, label) in zip(cols, TARGETS.items(), strict=False):
    if col.button(
        f"Run {label}",
        key=f"run_{target}",
        type="primary" if target == "all" else "secondary",
        disabled=running is not None,
        width="stretch",
    ):
        clicked = target

full_refresh = st.checkbox(
    "Full refresh",
    key="full_refresh",
    help="Silver normally refines only new landing files and the keys they touch; "
    "a full refresh recomputes it from all of Bronze (needed after changing a rule).",
)

if clicked:
    session = ui.spark()
    job = ui.start_job(
        "run", f"Run {TARGETS[clicked]}", lambda j: _run(j, clicked, session, full_refresh)
    )
    if job is not None:
        ui.follow(job, SparkWatch(session))

if running is not None:
    if running.kind == "run":
        ui.follow(running, SparkWatch(ui.spark()))
    else:
        st.info(f"{running.label} is in progress; runs are disabled until it finishes.")

# --- result of this app's latest run -------------------------------------------------------------
job = app_state.last("run")
if job is not None and not job.running:
    result = job.result
    if job.error:
        (st.warning if "already in progress" in job.error else st.error)(ui.plain(job.error))
    elif result is not None:
        steps = pd.DataFrame(
            [
                {
                    "step": s.step,
                    "status": s.status,
                    "seconds": round(s.seconds, 2),
                    "rows_in": s.rows_in,
                    "rows_out": s.rows_out,
                    "rows_quarantined": s.rows_quarantined,
                    "how": "; ".join(s.notes),
                }
                for s in result.steps
            ]
        )
        if result.status == "succeeded":
            st.success(
                f"Run {ui.plain(result.run_id)} succeeded: {len(result.steps)} steps "
                f"in {job.elapsed:.1f} s."
            )
        else:
            st.error(f"Run {ui.plain(result.run_id)} failed: {ui.plain(result.error)}")
            for s in result.steps:
                if s.error:
                    st.error(f"{ui.plain(s.step)}: {ui.plain(s.error)}")
        st.dataframe(steps, hide_index=True, width="stretch")

# --- history from gold.pipeline_runs -------------------------------------------------------------
st.subheader("History")
runs = ui.table("gold", "pipeline_runs")
summary = read.run_summary(runs)
if summary.empty:
    st.info("No run recorded yet: generate data, then press a run button above.")
    st.page_link(ui.PAGES["generate"], label="Generate data", icon=":material/database:")
    st.stop()

m1, m2, m3, m4 = st.columns(4)
last = summary.iloc[0]
m1.metric("Runs", ui.count(len(summary)))
m2.metric("Last run", last["status"], help=f"run {ui.plain(last['run_id'])}")
m3.metric("Last duration (s)", f"{last['seconds']:.1f}")
m4.metric("Rows quarantined (last run)", ui.count(last["rows_quarantined"]))

st.dataframe(
    summary,
    hide_index=True,
    width="stretch",
    column_config={"seconds": st.column_config.NumberColumn("seconds", format="%.1f")},
)

recent = runs[runs["run_id"].isin(summary["run_id"].head(15))].copy()
recent["seconds"] = (recent["finished_at"] - recent["started_at"]).dt.total_seconds()
fig = go.Figure()
for step, part in recent.sort_values("started_at").groupby("step", sort=False):
    fig.add_trace(go.Bar(x=part["run_id"], y=part["seconds"], name=step))
fig.update_layout(title="Step durations of the latest runs (s)", barmode="stack")
ui.chart(fig, key="durations")

# --- reconciliation of a run ---------------------------------------------------------------------
st.subheader("Reconciliation")
run_id = st.selectbox("Run", summary["run_id"].tolist(), index=0, key="recon_run")
steps = read.step_reconciliation(runs, run_id)
st.caption(
    "Silver steps: rows in = rows out + quarantined + exact duplicates + superseded versions; "
    "Bronze steps land rows one for one. Nothing read is lost: `unaccounted` must be 0. "
    "Gold steps aggregate, so they have no balance."
)
st.dataframe(steps, hide_index=True, width="stretch")
unbalanced = steps[steps["balanced"].eq(False).fillna(False)]
if not unbalanced.empty:
    st.warning(f"Steps that lose rows: {ui.plain(', '.join(unbalanced['step']))}")
detail = read.reconciliation_detail(runs, run_id)
if not detail.empty:
    with st.expander("Reconciliation counters recorded by each step"):
        st.dataframe(detail, hide_index=True, width="stretch")
for row in steps.itertuples():
    if isinstance(row.error, str) and row.error:
        st.error(f"{ui.plain(row.step)}: {ui.plain(row.error)}")
