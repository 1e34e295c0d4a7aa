"""Data quality: scores per table and layer, trends, failing rules with sample records.

A table's score is the mean pass rate of its rules in a run (gold.dq_results);
a layer's score is the mean of its tables' latest scores.
"""

from __future__ import annotations

import streamlit as st

from pages import _ui as ui
from pipeline import read

ui.page_guard()
st.title("Data quality")

dq = ui.table("gold", "dq_results")
if dq.empty:
    ui.empty_lake("quality results")
    st.stop()

latest = read.latest_scores(dq)
layers = read.layer_scores(dq).set_index("layer")
failing = read.failing_rules(dq)

# --- scores --------------------------------------------------------------------------------------
cols = st.columns(len(read.LAYERS) + 1)
cols[0].metric("Overall", ui.pct(latest["score"].mean()), border=True)
for col, layer in zip(cols[1:], read.LAYERS, strict=True):
    score = layers["score"].get(layer) if layer in layers.index else None
    tables = int(layers["tables"].get(layer, 0)) if layer in layers.index else 0
    col.metric(f"{layer.title()} ({tables} tables)", ui.pct(score), border=True)

st.subheader("Score per table (latest run that checked it)")
shown = latest.sort_values("score", ascending=False)
shown = shown.assign(name=shown["layer"] + "." + shown["table"], score_pct=shown["score"] * 100)
fig = ui.bars(shown, "name", ["score_pct"], "Score (%)", horizontal=True)
fig.update_xaxes(range=[max(0.0, float(shown["score_pct"].min()) - 5), 100])
ui.chart(fig, key="scores")
st.dataframe(
    latest,
    hide_index=True,
    width="stretch",
    column_config={"score": st.column_config.ProgressColumn("score", min_value=0, max_value=1)},
)

# --- trend ---------------------------------------------------------------------------------------
st.subheader("Trend across runs")
trend = read.table_scores(dq)
if trend["run_id"].nunique() < 2:
    st.caption("One run so far: the trend appears after the next run.")
trend = trend.assign(name=trend["layer"] + "." + trend["table"], score_pct=trend["score"] * 100)
ui.chart(ui.lines(trend, "checked_at", "score_pct", "name", "Score (%) per run"), key="trend")

# --- failing rules -------------------------------------------------------------------------------
st.subheader("Failing rules")
if failing.empty:
    st.success("Every rule passed on every row in its latest check.")
else:
    st.dataframe(
        failing,
        hide_index=True,
        width="stretch",
        column_config={
            "pass_rate": st.column_config.ProgressColumn("pass rate", min_value=0, max_value=1)
        },
    )
    counts = read.quarantine_rule_counts(ui.quarantine())
    rules = sorted(set(failing["rule"]) | set(counts["rule"]))
    rule = st.selectbox("Sample quarantined records of rule", rules)
    sample = read.quarantine_samples(ui.quarantine(), rule, limit=25)
    if sample.empty:
        action = failing.loc[failing["rule"] == rule, "action"]
        kind = action.iloc[0] if not action.empty else "this"
        st.caption(
            f"No quarantined record for {ui.plain(rule)} "
            f"({ui.plain(kind)} rules keep or stop, not move)."
        )
    else:
        st.dataframe(sample, hide_index=True, width="stretch")
    if not counts.empty:
        with st.expander("Quarantine: records per source table and rule"):
            st.dataframe(counts, hide_index=True, width="stretch")

# --- before / after each step --------------------------------------------------------------------
st.subheader("Before and after each step")
runs = ui.table("gold", "pipeline_runs")
summary = read.run_summary(runs)
if summary.empty:
    st.caption("No run recorded.")
else:
    run_id = st.selectbox("Run", summary["run_id"].tolist(), key="recon_run")
    steps = read.step_reconciliation(runs, run_id)
    fig = ui.bars(
        steps,
        "step",
        ["rows_in", "rows_out", "rows_quarantined", "duplicates", "superseded"],
        "Rows in and out of each step",
    )
    ui.chart(fig, key="recon")
    st.dataframe(steps, hide_index=True, width="stretch")
