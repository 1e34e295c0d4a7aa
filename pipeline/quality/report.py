"""`python -m pipeline quality`: the latest scores, failing rules with examples, reconciliation.

The scores come from pipeline/quality/scores.py, the computation the Quality
page draws, so both show the same numbers. The small Gold tables are read
with delta-rs (pipeline/read.py), so the command answers in a second without
starting Spark.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pandas as pd

from pipeline.quality import scores

Examples = Callable[[str, str], list[str]]
FATES = ("silver", "quarantined", "duplicate", "superseded")


def _number(value: float | None) -> float | None:
    return None if value is None or pd.isna(value) else round(float(value), 6)


def _reconciliation(runs: pd.DataFrame, run_ids: set[str]) -> list[dict[str, Any]]:
    """bronze = silver + quarantined + duplicates + superseded, per Silver step."""
    if runs.empty or "reconciliation" not in runs.columns:
        return []
    out = []
    recent = runs[runs["run_id"].isin(run_ids) & runs["reconciliation"].notna()]
    for r in recent.sort_values("started_at").itertuples():
        entry: dict[str, Any] = scores.counters(r.reconciliation)
        if not entry:
            continue
        entry["step"] = r.step
        entry["balanced"] = entry.get("bronze", 0) == sum(entry.get(k, 0) for k in FATES)
        out.append(entry)
    return out


def report(
    dq: pd.DataFrame, runs: pd.DataFrame, examples: Examples | None = None
) -> dict[str, Any]:
    """The whole report as plain data (the --json output); `examples(rule, table)` gives samples."""
    if dq.empty:
        return {
            "run_id": None,
            "overall": None,
            "layers": [],
            "tables": [],
            "failing": [],
            "reconciliation": [],
            "fail_fired": False,
        }
    latest = scores.latest_scores(dq, runs)
    rules = scores.latest_rules(dq, latest)
    failing = scores.failing_rules(dq, latest)
    tables = []
    for t in latest.itertuples():
        mine = rules[(rules["layer"] == t.layer) & (rules["table"] == t.table)]
        tables.append(
            {
                "layer": t.layer,
                "table": t.table,
                "run_id": t.run_id,
                "score": _number(t.score),
                "records_checked": int(t.records_checked),
                "records_failed": int(t.records_failed),
                "exact": bool(t.exact),
                "warnings": int(t.warnings),
                "rules": [
                    {
                        "rule": r.rule,
                        "action": r.action,
                        "rows_checked": int(r.rows_checked),
                        "rows_failed": int(r.rows_failed),
                        "pass_rate": _number(r.pass_rate),
                    }
                    for r in mine.itertuples()
                ],
            }
        )
    failing_rows = [
        {
            "layer": r.layer,
            "table": r.table,
            "rule": r.rule,
            "action": r.action,
            "rows_failed": int(r.rows_failed),
            "rows_checked": int(r.rows_checked),
            "pass_rate": _number(r.pass_rate),
            "examples": examples(r.rule, r.table)
            if examples and r.layer == "silver" and r.action == "quarantine"
            else [],
        }
        for r in failing.itertuples()
    ]
    return {
        "run_id": str(dq.sort_values("checked_at")["run_id"].iloc[-1]),
        "overall": {
            "score": _number(scores.overall_score(latest)),
            "records_checked": int(latest["records_checked"].sum()),
            "records_failed": int(latest["records_failed"].sum()),
        },
        "layers": [
            {
                "layer": r.layer,
                "tables": int(r.tables),
                "records_checked": int(r.records_checked),
                "records_failed": int(r.records_failed),
                "score": _number(r.score),
            }
            for r in scores.layer_scores(latest).itertuples()
        ],
        "tables": tables,
        "failing": failing_rows,
        "reconciliation": _reconciliation(runs, set(latest["run_id"])),
        "fail_fired": any(f["action"] == "fail" for f in failing_rows),
    }


def build_report() -> dict[str, Any]:
    """The report of the lake SHOPLAKE_LAKE points at."""
    from pipeline import read

    def examples(rule: str, table: str) -> list[str]:
        sample = read.quarantine_samples(rule, table, limit=3)  # a query, not the whole table
        return [str(x) for x in sample.get("raw_record", [])]

    return report(
        read.read_table("gold", "dq_results"), read.read_table("gold", "pipeline_runs"), examples
    )


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"


def print_report(as_json: bool = False) -> int:
    """Print the latest report; exit code 2 when a fail-action rule fired."""
    rep = build_report()
    if as_json:
        print(json.dumps(rep, indent=2, default=str))
        return 2 if rep["fail_fired"] else 0
    if rep["run_id"] is None:
        print("no quality results yet: run `python -m pipeline run all` first")
        return 1
    overall = rep["overall"]
    print(
        f"quality report (latest run {rep['run_id']}): overall {_pct(overall['score'])} "
        f"({overall['records_checked'] - overall['records_failed']:,} of "
        f"{overall['records_checked']:,} records passed every quarantine and fail rule)"
    )
    print("  " + ", ".join(f"{x['layer']} {_pct(x['score'])}" for x in rep["layers"]))
    print(f"\n{'layer':<8}{'table':<20}{'score':>9}{'checked':>12}{'failed':>10}{'warnings':>10}")
    for t in rep["tables"]:
        score = _pct(t["score"]) if t["exact"] else ">=" + _pct(t["score"])
        print(
            f"{t['layer']:<8}{t['table']:<20}{score:>9}{t['records_checked']:>12,}"
            f"{t['records_failed']:>10,}{t['warnings']:>10,}"
        )
    if not all(t["exact"] for t in rep["tables"]):
        print(">= : only per-rule counts were recorded; a record failing two rules counts twice")
    if rep["failing"]:
        print("\nfailing rules (pass rate):")
        for f in rep["failing"]:
            print(
                f"  {f['layer']}.{f['table']} {f['rule']} [{f['action']}]: "
                f"{f['rows_failed']:,} of {f['rows_checked']:,} ({_pct(f['pass_rate'])})"
            )
            for example in f["examples"]:
                print(f"      e.g. {example}")
    if rep["reconciliation"]:
        print("\nreconciliation (bronze = silver + quarantined + duplicates + superseded):")
        for r in rep["reconciliation"]:
            mark = "ok" if r["balanced"] else "MISMATCH"
            print(
                f"  {r['step']:<20} {r.get('bronze', 0):>9,} = {r.get('silver', 0):,} + "
                f"{r.get('quarantined', 0):,} + {r.get('duplicate', 0):,} + "
                f"{r.get('superseded', 0):,}  {mark}"
            )
    fired = rep["fail_fired"]
    print(f"\n{len(rep['tables'])} tables scored; fail rules fired: {'yes' if fired else 'no'}")
    return 2 if fired else 0
