"""Quality scores: the one computation behind `python -m pipeline quality` and the Quality page.

Pure pandas over gold.dq_results rows (run x table x rule) and, where they
help, gold.pipeline_runs rows; no Spark, no Streamlit. The contract is
docs/quality.md ("Score"); the decisions taken where it is silent:

- **Records checked** (N) of a table in a run: the largest rows_checked of
  its quarantine and fail rules (every Silver expectation is counted over the
  records the run refined, duplicates excluded). A table with warn rules only
  (Bronze) uses its largest rows_checked and always scores 100 %.
- **Records failed**: the distinct records that failed at least one
  quarantine or fail rule. A record can fail several rules, so rule failures
  are never summed when the distinct figure is known. It is taken, in order:
  1. from a summary row ``rule = SUMMARY_RULE`` (the figure proposed for the
     Silver steps to record: records checked, records that failed any
     quarantine or fail rule);
  2. for a Silver step that checked every Bronze record of its table (a full
     recompute, or an incremental run touching every key): its
     gold.pipeline_runs reconciliation, whose ``quarantined`` count is
     distinct records by construction (each record has one fate), exact when
     bronze - duplicate equals N;
  3. for the live stream: N minus the rows_checked of ``unique_event_id``,
     which the stream counts over the events that passed every quarantine
     rule;
  4. otherwise (an incremental Silver run, which records cumulative fates
     only): the sum of the quarantine rules' failures, capped at N. That is an
     upper bound, so the score is a lower bound, never flattering; the row
     is marked ``exact = False`` unless at most one quarantine rule failed.
  A fail rule that fired adds its failed rows (a check of the whole table,
  rows_checked = 1, fails all N records); the union with the quarantined
  records is then bounded by the sum, and marked inexact.
- **Score** = (N - records failed) / N; no score (None) when N = 0.
  Warn rules never lower it: their failures are shown beside it as
  ``warnings`` (a count of rule failures, one record may count twice).
- **Latest score** of a table: the latest run that checked at least one record
  of it with a quarantine or fail rule (or, for warn-only tables, any
  record). A run that only added a warn check to a table (the model step's
  orphan counts) or found nothing new does not replace it.
- **Layer and overall** = 1 - sum(records failed) / sum(records checked) over
  the tables' latest scores: tables weigh by the records they checked.
- **A rule's pass rate** = 1 - rows_failed / rows_checked, clipped to 0..1
  (a warn count that is cumulative over an incremental run's smaller
  denominator, e.g. superseded_versions, cannot show a negative rate).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

LAYER_ORDER = ("bronze", "silver", "gold", "live")
GATES = ("quarantine", "fail")  # the actions that lower a score
SUMMARY_RULE = "records_failing_any_rule"  # see the module docstring, source 1
LIVE_VALID_RULE = "unique_event_id"  # counted by the stream over the valid events

SCORE_COLUMNS = [
    "run_id",
    "checked_at",
    "layer",
    "table",
    "records_checked",
    "records_failed",
    "score",
    "exact",
    "rules",
    "rules_failing",
    "warnings",
]
RULE_COLUMNS = [
    "run_id",
    "checked_at",
    "layer",
    "table",
    "rule",
    "action",
    "rows_checked",
    "rows_failed",
    "pass_rate",
]
LAYER_COLUMNS = ["layer", "tables", "records_checked", "records_failed", "score"]


def counters(value: object) -> dict[str, int]:
    """A Delta map value as read by pyarrow (a list of (key, value) pairs) or a dict."""
    if isinstance(value, Mapping):
        return {str(k): int(v or 0) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return {str(k): int(v or 0) for k, v in value}
    return {}


def _fates(runs: pd.DataFrame | None) -> dict[tuple[str, str], dict[str, int]]:
    """(run_id, step) -> the reconciliation counters the step recorded."""
    if runs is None or runs.empty or "reconciliation" not in runs.columns:
        return {}
    return {
        (str(run), str(step)): counters(value)
        for run, step, value in zip(
            runs["run_id"], runs["step"], runs["reconciliation"], strict=True
        )
        if value is not None
    }


def rule_results(dq: pd.DataFrame) -> pd.DataFrame:
    """Every rule row with its own pass rate (clipped to 0..1), the summary row left out."""
    if dq.empty:
        return pd.DataFrame(columns=RULE_COLUMNS)
    frame = dq[dq["rule"] != SUMMARY_RULE]
    checked = pd.to_numeric(frame["rows_checked"], errors="coerce").fillna(0).astype("int64")
    failed = pd.to_numeric(frame["rows_failed"], errors="coerce").fillna(0).astype("int64")
    rate = np.where(checked > 0, 1 - failed / checked.where(checked > 0, 1), 1.0)
    out = frame.assign(rows_checked=checked, rows_failed=failed, pass_rate=np.clip(rate, 0, 1))
    return out.reset_index(drop=True)[RULE_COLUMNS]


def _score_one(
    run_id: str, layer: str, table: str, rules: pd.DataFrame, fates: dict
) -> dict[str, object]:
    """One table in one run: records checked and failed, by the module docstring."""
    summary = rules[rules["rule"] == SUMMARY_RULE]
    rules = rules[rules["rule"] != SUMMARY_RULE]
    gates = rules[rules["action"].isin(GATES)]
    warn = rules[rules["action"] == "warn"]
    fail = gates[(gates["action"] == "fail") & (gates["rows_failed"] > 0)]
    quarantine = gates[gates["action"] == "quarantine"]
    if not summary.empty:
        n = int(summary["rows_checked"].max())
    elif not gates.empty:
        n = int(gates["rows_checked"].max())
    else:
        n = int(rules["rows_checked"].max()) if not rules.empty else 0
    whole_table = bool(((fail["rows_checked"] <= 1) & (n > 1)).any())
    exact = True
    if not summary.empty:
        failed = int(summary["rows_failed"].max())
    else:
        fate = fates.get((run_id, f"{layer}.{table}"), {})
        valid = warn.loc[warn["rule"] == LIVE_VALID_RULE, "rows_checked"]
        if fate and fate.get("bronze", -1) - fate.get("duplicate", 0) == n:
            quarantined = fate.get("quarantined", 0)
        elif layer == "live" and not valid.empty:
            quarantined = n - int(valid.max())
        else:
            quarantined = int(quarantine["rows_failed"].sum())
            exact = int((quarantine["rows_failed"] > 0).sum()) <= 1
        failed = quarantined + int(fail["rows_failed"].sum())
        if quarantined and not fail.empty:
            exact = False
    if whole_table:
        failed, exact = n, True
    failed = max(0, min(failed, n))
    return {
        "run_id": run_id,
        "checked_at": rules["checked_at"].max() if not rules.empty else summary["checked_at"].max(),
        "layer": layer,
        "table": table,
        "records_checked": n,
        "records_failed": failed,
        "score": (n - failed) / n if n else None,
        "exact": exact,
        "rules": len(rules),
        "rules_failing": int((rules["rows_failed"] > 0).sum()),
        "warnings": int(warn["rows_failed"].sum()),
        "_gated": not gates.empty or not summary.empty,
    }


def table_scores(dq: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every table's score in every run that checked it, oldest first."""
    if dq.empty:
        return pd.DataFrame(columns=[*SCORE_COLUMNS, "_gated"])
    frame = dq.assign(
        rows_checked=pd.to_numeric(dq["rows_checked"], errors="coerce").fillna(0).astype("int64"),
        rows_failed=pd.to_numeric(dq["rows_failed"], errors="coerce").fillna(0).astype("int64"),
    )
    fates = _fates(runs)
    rows = [
        _score_one(str(run_id), str(layer), str(table), part, fates)
        for (run_id, layer, table), part in frame.groupby(["run_id", "layer", "table"], sort=False)
    ]
    out = pd.DataFrame(rows, columns=[*SCORE_COLUMNS, "_gated"])
    out["score"] = out["score"].astype("float64")
    return out.sort_values(["checked_at", "layer", "table"], ignore_index=True)


def scoring_runs(dq: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The (run, table) scores that count (docstring, "Latest score"), oldest first.

    A run that only added warn checks to a table that has quarantine or fail
    rules, or that checked no record of a table others runs did check, is
    left out: it would read 100 % without having judged a record.
    """
    scores = table_scores(dq, runs)
    if scores.empty:
        return pd.DataFrame(columns=SCORE_COLUMNS)
    keys = [scores["layer"], scores["table"]]
    gated_table = scores["_gated"].groupby(keys).transform("any")
    scoring = scores["_gated"] | ~gated_table
    has_records = scores["records_checked"] > 0
    any_records = (scoring & has_records).groupby(keys).transform("any")
    return scores[scoring & (has_records | ~any_records)].reset_index(drop=True)[SCORE_COLUMNS]


def latest_scores(dq: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each table's score in the latest run that checked records of it."""
    scored = scoring_runs(dq, runs)
    if scored.empty:
        return scored
    latest = scored.sort_values("checked_at").groupby(["layer", "table"], sort=False).tail(1)
    order = {layer: i for i, layer in enumerate(LAYER_ORDER)}
    latest = latest.assign(_order=latest["layer"].map(order).fillna(len(order)))
    return latest.sort_values(["_order", "layer", "table"], ignore_index=True)[SCORE_COLUMNS]


def _weighted(frame: pd.DataFrame) -> float | None:
    checked = int(frame["records_checked"].sum())
    return None if checked == 0 else 1 - int(frame["records_failed"].sum()) / checked


def layer_scores(latest: pd.DataFrame) -> pd.DataFrame:
    """Per layer: its tables' latest scores, weighted by the records each checked."""
    if latest.empty:
        return pd.DataFrame(columns=LAYER_COLUMNS)
    rows = [
        {
            "layer": layer,
            "tables": len(part),
            "records_checked": int(part["records_checked"].sum()),
            "records_failed": int(part["records_failed"].sum()),
            "score": _weighted(part),
        }
        for layer, part in latest.groupby("layer", sort=False)
    ]
    out = pd.DataFrame(rows, columns=LAYER_COLUMNS)
    order = {layer: i for i, layer in enumerate(LAYER_ORDER)}
    return out.sort_values(
        "layer", key=lambda s: s.map(order).fillna(len(order)), ignore_index=True
    )


def overall_score(latest: pd.DataFrame) -> float | None:
    """Every table's latest score, weighted by the records each checked."""
    return None if latest.empty else _weighted(latest)


def latest_rules(dq: pd.DataFrame, latest: pd.DataFrame) -> pd.DataFrame:
    """The rules of each table's latest scored run, with their pass rates."""
    rules = rule_results(dq)
    if rules.empty or latest.empty:
        return pd.DataFrame(columns=RULE_COLUMNS)
    keys = latest[["run_id", "layer", "table"]]
    mine = rules.merge(keys, on=["run_id", "layer", "table"], how="inner")
    return mine.sort_values(["layer", "table", "rule"], ignore_index=True)[RULE_COLUMNS]


def failing_rules(dq: pd.DataFrame, latest: pd.DataFrame) -> pd.DataFrame:
    """Rules that failed records in their table's latest scored run, most failures first."""
    rules = latest_rules(dq, latest)
    bad = rules[rules["rows_failed"] > 0]
    return bad.sort_values(
        ["rows_failed", "layer", "table", "rule"],
        ascending=[False, True, True, True],
        ignore_index=True,
    )
