"""Data quality: scores per table and layer, each rule's pass rate, trends, failing rules.

Every score comes from pipeline/quality/scores.py, the computation `python -m
pipeline quality` prints (docs/quality.md, "Score"): the share of the records a
run checked that passed every quarantine and fail rule. Warn rules do not lower
it and are counted beside it; layers and the overall score weigh tables by the
records they checked.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import streamlit as st

from pages import _ui as ui
from pipeline import formats, read
from pipeline.quality import scores as quality

SCORE_HELP = (
    "Records that passed every quarantine and fail rule, out of the records the latest run "
    "checked. Warn rules do not lower it; tables weigh by records checked."
)

ui.page_guard()
st.title("Data quality")

dq = ui.table("gold", "dq_results")
if dq.empty:
    ui.empty_lake("quality results")
    st.stop()
runs = ui.table("gold", "pipeline_runs")
latest = read.latest_scores(dq, runs)
layers = read.layer_scores(dq, runs).set_index("layer")
rules = quality.latest_rules(dq, latest)
failing = read.failing_rules(dq, runs)


def table_name(layer: pd.Series, table: pd.Series) -> pd.Series:
    return layer.str.title() + " · " + table.str.replace("_", " ")


def show(frame: pd.DataFrame, pct_cols: Sequence[str] = (), **kwargs: object) -> None:
    """ui.show_table with the headers as words and missing percentages as a dash."""
    frame = frame.rename(columns=formats.labels(frame.columns))
    for col in pct_cols:
        if frame[col].isna().any():
            frame = frame.assign(**{col: frame[col].map(formats.pct)})
    numeric = [c for c in pct_cols if pd.api.types.is_numeric_dtype(frame[c])]
    ui.show_table(frame, pct_cols=numeric, **kwargs)


# --- scores --------------------------------------------------------------------------------------
shown_layers = [x for x in quality.LAYER_ORDER if x in read.LAYERS or x in layers.index]
cols = st.columns(len(shown_layers) + 1)
cols[0].metric("Overall", ui.pct(quality.overall_score(latest)), help=SCORE_HELP, border=True)
for col, layer in zip(cols[1:], shown_layers, strict=True):
    if layer in layers.index:
        row = layers.loc[layer]
        passed = int(row["records_checked"]) - int(row["records_failed"])
        col.metric(
            f"{layer.title()} ({int(row['tables'])} tables)",
            ui.pct(row["score"]),
            help=f"{passed:,} of {int(row['records_checked']):,} records passed.",
            border=True,
        )
    else:
        col.metric(f"{layer.title()} (0 tables)", ui.pct(None), border=True)

st.subheader("Score per table (latest run that checked it)")
named = latest.assign(name=table_name(latest["layer"], latest["table"]))
bars = named.sort_values("score", ascending=True).assign(score_pct=named["score"] * 100)
fig = ui.bars(bars, "name", ["score_pct"], "Score", horizontal=True, names=["Score"])
fig.update_xaxes(range=[0, 100], ticksuffix=" %", title_text="Records that passed (%)")
ui.chart(fig, key="scores")
show(
    pd.DataFrame(
        {
            "Table": named["name"],
            "Score": named["score"],
            "Records checked": named["records_checked"],
            "Records failed": named["records_failed"],
            "Warnings": named["warnings"],
            "Rules": named["rules"],
            "Rules failing": named["rules_failing"],
            "Exact": named["exact"],
            "Run": named["run_id"],
        }
    ),
    pct_cols=["Score"],
    config={
        "Warnings": st.column_config.NumberColumn(
            "Warnings", format="%,d", help="Rows flagged by warn rules (kept, not scored)."
        ),
        "Exact": st.column_config.CheckboxColumn(
            "Exact",
            help="Unchecked: the run recorded rule counts only, so records failing several "
            "rules may be counted more than once; the score is then a lower bound.",
        ),
    },
)
st.caption(SCORE_HELP)

with st.expander("Each rule's pass rate (latest run per table)"):
    show(
        pd.DataFrame(
            {
                "Table": table_name(rules["layer"], rules["table"]),
                "Rule": rules["rule"],
                "Action": rules["action"],
                "Checked": rules["rows_checked"],
                "Failed": rules["rows_failed"],
                "Pass rate": rules["pass_rate"],
            }
        ),
        pct_cols=["Pass rate"],
    )

# --- trend ---------------------------------------------------------------------------------------
st.subheader("Trend across runs")
trend = quality.scoring_runs(dq, runs)
if trend["run_id"].nunique() < 2:
    st.info(
        f"One run so far: overall {ui.pct(quality.overall_score(latest))}. "
        "The trend appears after the next run.",
        icon=":material/show_chart:",
    )
else:
    trend = trend.assign(
        name=table_name(trend["layer"], trend["table"]), score_pct=trend["score"] * 100
    )
    fig = ui.lines(trend, "checked_at", "score_pct", "name", "Score per run")
    fig.update_yaxes(range=[0, 100], ticksuffix=" %", title_text="Records that passed (%)")
    ui.chart(fig, key="trend")

# --- failing rules -------------------------------------------------------------------------------
st.subheader("Failing rules")
if failing.empty:
    st.success("Every rule passed on every record in its table's latest run.")
else:
    show(
        pd.DataFrame(
            {
                "Table": table_name(failing["layer"], failing["table"]),
                "Rule": failing["rule"],
                "Action": failing["action"],
                "Failed": failing["rows_failed"],
                "Checked": failing["rows_checked"],
                "Pass rate": failing["pass_rate"],
            }
        ),
        pct_cols=["Pass rate"],
    )

counts = ui.quarantine_counts()  # queried in delta-rs: the page never holds the quarantine
if counts.empty:
    st.caption("No record is in quarantine.")
else:
    options = list(zip(counts["source_table"], counts["rule"], counts["records"], strict=True))
    picked = st.selectbox(
        "Sample quarantined records of",
        options,
        format_func=lambda o: f"{o[0].replace('_', ' ')} · {o[1]} ({o[2]:,} records)",
        key="sample_rule",
    )
    table, rule = picked[0], picked[1]
    sample = ui.quarantine_sample(rule, table, limit=25)
    show(
        pd.DataFrame(
            {
                "Record key": sample["record_key"],
                "Rules failed": sample["rules"],
                "Batch": sample["batch_id"],
                "Quarantined at": sample["quarantined_at"],
            }
        )
    )
    st.caption(f"The {len(sample):,} records as they arrived, whole:")
    st.code("\n".join(str(r) for r in sample["raw_record"]), language=None, wrap_lines=True)
    with st.expander("Quarantine: records per source table and rule"):
        show(counts)

# --- before / after each step --------------------------------------------------------------------
st.subheader("Before and after each step")
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
        names=["Rows in", "Rows out", "Quarantined", "Duplicates", "Superseded"],
    )
    fig.update_yaxes(rangemode="tozero")
    ui.chart(fig, key="recon")
    balanced = (
        steps["balanced"]
        .astype(object)
        .map(lambda v: formats.DASH if formats.is_missing(v) else ("yes" if v else "no"))
    )
    show(steps.assign(balanced=balanced))
