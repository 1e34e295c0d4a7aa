"""The quality report: scores per table and layer, failing rules with examples, reconciliation.

Reads the small Gold tables with delta-rs, so `python -m pipeline quality`
answers in a second without starting Spark.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from pipeline.config import settings


def _table(layer: str, name: str, columns: list[str] | None = None) -> pd.DataFrame | None:
    try:
        return DeltaTable(settings().table_path(layer, name)).to_pandas(columns=columns)
    except (TableNotFoundError, FileNotFoundError, OSError):
        return None


def table_scores(dq: pd.DataFrame) -> pd.DataFrame:
    """A table's score is the mean pass rate over its rules in a run."""
    grouped = dq.groupby(["run_id", "layer", "table"], as_index=False).agg(
        score=("pass_rate", "mean"),
        rules=("rule", "count"),
        failing_rules=("rows_failed", lambda s: int((s > 0).sum())),
        checked_at=("checked_at", "max"),
    )
    return grouped.sort_values(["checked_at", "layer", "table"])


def layer_scores(dq: pd.DataFrame) -> pd.DataFrame:
    return dq.groupby(["run_id", "layer"], as_index=False).agg(score=("pass_rate", "mean"))


def samples(rule: str, source_table: str, limit: int = 3) -> list[str]:
    q = _table("silver", "quarantine", ["source_table", "rules", "raw_record"])
    if q is None or q.empty:
        return []
    mine = q[q["source_table"] == source_table]
    hits = mine[mine["rules"].map(lambda rules: rule in list(rules))]
    return [str(x)[:300] for x in hits["raw_record"].head(limit)]


def build_report() -> dict[str, Any]:
    dq = _table("gold", "dq_results")
    runs = _table("gold", "pipeline_runs")
    if dq is None or dq.empty:
        return {
            "run_id": None,
            "tables": [],
            "failing": [],
            "reconciliation": [],
            "fail_fired": False,
        }
    latest_per_table = dq.sort_values("checked_at").groupby(["layer", "table"]).tail(1)
    latest_runs = set(latest_per_table["run_id"])
    current = dq.merge(
        latest_per_table[["layer", "table", "run_id"]], on=["layer", "table", "run_id"], how="inner"
    )
    scores = table_scores(current)
    failing = current[current["rows_failed"] > 0].sort_values(["layer", "table", "rule"])
    failing_rows = [
        {
            "layer": r.layer,
            "table": r.table,
            "rule": r.rule,
            "action": r.action,
            "rows_failed": int(r.rows_failed),
            "rows_checked": int(r.rows_checked),
            "examples": samples(r.rule, r.table) if r.layer == "silver" else [],
        }
        for r in failing.itertuples()
    ]
    reconciliation = []
    if runs is not None and not runs.empty:
        recent = runs[runs["run_id"].isin(latest_runs) & runs["reconciliation"].notna()]
        for r in recent.sort_values("started_at").itertuples():
            entry = dict(r.reconciliation)
            entry["step"] = r.step
            entry["balanced"] = entry.get("bronze", 0) == sum(
                entry.get(k, 0) for k in ("silver", "quarantined", "duplicate", "superseded")
            )
            reconciliation.append(entry)
    return {
        "run_id": str(dq.sort_values("checked_at")["run_id"].iloc[-1]),
        "tables": [
            {
                "layer": r.layer,
                "table": r.table,
                "score": round(float(r.score), 6),
                "rules": int(r.rules),
                "failing_rules": int(r.failing_rules),
            }
            for r in scores.itertuples()
        ],
        "failing": failing_rows,
        "reconciliation": reconciliation,
        "fail_fired": any(f["action"] == "fail" for f in failing_rows),
    }


def print_report(as_json: bool = False) -> int:
    """Print the latest report; exit code 2 when a fail-action rule fired."""
    report = build_report()
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return 2 if report["fail_fired"] else 0
    if report["run_id"] is None:
        print("no quality results yet: run `python -m pipeline run all` first")
        return 1
    print(f"quality report (latest run {report['run_id']})")
    print(f"{'layer':<8}{'table':<20}{'score':>9}{'rules':>7}{'failing':>9}")
    for t in report["tables"]:
        print(
            f"{t['layer']:<8}{t['table']:<20}{t['score']:>9.2%}{t['rules']:>7}{t['failing_rules']:>9}"
        )
    if report["failing"]:
        print("\nfailing rules:")
        for f in report["failing"]:
            print(
                f"  {f['layer']}.{f['table']} {f['rule']} [{f['action']}]: "
                f"{f['rows_failed']:,} of {f['rows_checked']:,}"
            )
            for example in f["examples"]:
                print(f"      e.g. {example}")
    if report["reconciliation"]:
        print("\nreconciliation (bronze = silver + quarantined + duplicates + superseded):")
        for r in report["reconciliation"]:
            mark = "ok" if r["balanced"] else "MISMATCH"
            print(
                f"  {r['step']:<20} {r.get('bronze', 0):>9,} = {r.get('silver', 0):,} + "
                f"{r.get('quarantined', 0):,} + {r.get('duplicate', 0):,} + "
                f"{r.get('superseded', 0):,}  {mark}"
            )
    fired = report["fail_fired"]
    print(f"\n{len(report['tables'])} tables scored; fail rules fired: {'yes' if fired else 'no'}")
    return 2 if fired else 0
