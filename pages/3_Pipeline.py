"""Pipeline: run a layer (or all), follow it in a person's terms, read the run history.

The run executes in a background job (pipeline.app_state) through
pipeline.runner, the same entry point as `python -m pipeline run`. While it
runs, the progress box at the top shows the steps running now (several run at
once), steps done, the overall percentage weighted by the steps' usual
durations, the time elapsed and an estimate from the previous runs in
gold.pipeline_runs (pipeline.ui_progress.run_view); Spark's stages and tasks
are folded under an expander. The history below stays on the page meanwhile.
Rows are counted when a step commits: the headline adds up the rows the
finished steps wrote ("rows written so far"), and the table of every step's
counts follows once the run ends (Spark's status tracker reports tasks, not
rows, of a running stage).
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages import _ui as ui
from pipeline import app_state, formats, read
from pipeline.ui_progress import SparkWatch

ui.page_guard()
st.title("Pipeline")
st.caption(
    "Bronze ingests each landing file once, Silver cleans, deduplicates and quarantines, "
    "Gold recomputes the business views whose inputs changed. Every step is timed, counted "
    "and checked."
)

TARGETS = {"bronze": "Bronze", "silver": "Silver", "gold": "Gold", "all": "All layers"}
COUNTS = ["rows_in", "rows_out", "rows_quarantined", "duplicates", "superseded", "unaccounted"]


def _run(job: app_state.Job, target: str, session: object, full_refresh: bool) -> object:
    from pipeline.runner import RunInProgressError, run

    try:
        result = run(target, spark=session, progress=job.report, full_refresh=full_refresh)
    except RunInProgressError:
        job.error = "A run is already in progress on this lake; wait for it to finish."
        return None
    read.prefetch_sales()  # so the Sales page finds the new version ready
    return result


def _step_names(target: str) -> list[str]:
    from pipeline.registry import steps_for

    return [step.name for step in steps_for(target)]


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

progress_area = st.container()  # filled last, so the history below is drawn during a run
runs = ui.table("gold", "pipeline_runs")
following: tuple[app_state.Job, SparkWatch] | None = None
if clicked:
    session = ui.spark()
    job = ui.start_job(
        "run", f"Run {TARGETS[clicked]}", lambda j: _run(j, clicked, session, full_refresh)
    )
    if job is not None:
        job.meta["steps"] = _step_names(clicked)
        following = (job, SparkWatch(session))
elif running is not None:
    if running.kind == "run":
        following = (running, SparkWatch(ui.spark()))
    else:
        st.info(f"{running.label} is in progress; runs are disabled until it finishes.")

# --- result of this app's latest run -------------------------------------------------------------
job = app_state.last("run")
if following is None and job is not None and not job.running:
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
                f"in {formats.duration(job.elapsed)}."
            )
        else:
            st.error(f"Run {ui.plain(result.run_id)} failed: {ui.plain(result.error)}")
            for s in result.steps:
                if s.error:
                    st.error(f"{ui.plain(s.step)}: {ui.plain(s.error)}")
        ui.show_table(
            steps,
            count_cols=COUNTS,
            config={"seconds": st.column_config.NumberColumn("Seconds", format="%.2f")},
        )


# --- history from gold.pipeline_runs -------------------------------------------------------------
def history(runs: pd.DataFrame) -> None:
    st.subheader("History")
    summary = read.run_summary(runs)
    if summary.empty:
        st.info("No run recorded yet: generate data, then press a run button above.")
        st.page_link(ui.PAGES["generate"], label="Generate data", icon=":material/database:")
        return

    m1, m2, m3, m4 = st.columns(4)
    last = summary.iloc[0]
    m1.metric("Runs", ui.count(len(summary)))
    m2.metric("Last run", last["status"], help=f"run {ui.plain(last['run_id'])}")
    m3.metric("Last duration", formats.duration(last["seconds"]))
    m4.metric("Rows quarantined (last run)", ui.count(last["rows_quarantined"]))

    ui.show_table(
        summary,
        count_cols=["steps", *COUNTS],
        config={
            "seconds": st.column_config.NumberColumn("Seconds", format="%,.1f"),
            "started_at": st.column_config.DatetimeColumn(
                "Started (UTC)", format="YYYY-MM-DD HH:mm:ss"
            ),
            "finished_at": st.column_config.DatetimeColumn(
                "Finished (UTC)", format="YYYY-MM-DD HH:mm:ss"
            ),
        },
    )

    # steps overlap (independent steps run at once): a timeline, not stacked durations
    latest = runs[runs["run_id"] == last["run_id"]].sort_values("started_at", ascending=False)
    offset = (latest["started_at"] - latest["started_at"].min()).dt.total_seconds()
    seconds = (latest["finished_at"] - latest["started_at"]).dt.total_seconds()
    fig = go.Figure(
        go.Bar(
            y=latest["step"],
            x=seconds,
            base=offset,
            orientation="h",
            marker_color=["#0f766e" if s == "succeeded" else "#dc2626" for s in latest["status"]],
            customdata=seconds,
            hovertemplate="%{y}: %{customdata:,.1f} s<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Timeline of the last run (seconds from its start; {last['run_id']})",
        height=max(260, 28 * len(latest) + 80),
    )
    fig.update_xaxes(rangemode="tozero", tickformat=",.0f", title_text="seconds")
    ui.chart(fig, key="durations")

    # --- reconciliation of a run -----------------------------------------------------------------
    st.subheader("Reconciliation")
    run_id = st.selectbox("Run", summary["run_id"].tolist(), index=0, key="recon_run")
    steps = read.step_reconciliation(runs, run_id)
    st.caption(
        "Silver steps: rows in = rows out + quarantined + exact duplicates + superseded "
        "versions; Bronze steps land rows one for one. Nothing read is lost: Unaccounted must "
        "be 0. Gold steps aggregate, so they have no balance (—)."
    )
    ui.show_table(
        steps.drop(columns=["error"]),
        count_cols=COUNTS,
        config={"seconds": st.column_config.NumberColumn("Seconds", format="%.2f")},
    )
    unbalanced = steps[steps["balanced"].eq(False).fillna(False)]
    if not unbalanced.empty:
        st.warning(f"Steps that lose rows: {ui.plain(', '.join(unbalanced['step']))}")
    detail = read.reconciliation_detail(runs, run_id)
    if not detail.empty:
        with st.expander("Reconciliation counters recorded by each step"):
            ui.show_table(detail)
    for row in steps.itertuples():
        if isinstance(row.error, str) and row.error:
            st.error(f"{ui.plain(row.step)}: {ui.plain(row.error)}")


history(runs)

if following is not None:
    job, watch = following
    with progress_area:
        ui.follow(job, watch, steps=job.meta.get("steps"), runs=runs)
