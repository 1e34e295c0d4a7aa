"""Bronze steps: one per source, each appending only the new landing files."""

from __future__ import annotations

from functools import partial

from pipeline import catalog
from pipeline.bronze.ingest import ingest_source
from pipeline.contract import SOURCES
from pipeline.quality.expectations import RuleCount
from pipeline.registry import Context, Step, StepOutcome


def _run(source: str, ctx: Context) -> StepOutcome:
    result = ingest_source(ctx.spark, source, ctx.run_id, defer=ctx.defer)
    out = StepOutcome(rows_in=result.rows, rows_out=result.rows)
    out.add_checks(
        "bronze",
        source,
        [
            RuleCount("unparseable_line", "warn", result.rows, result.unparseable),
            RuleCount("unreadable_file", "warn", result.files, len(result.unreadable)),
            RuleCount("schema_drift", "warn", result.files, len(result.drifted)),
        ],
    )
    out.notes.extend(result.unreadable)
    out.notes.extend(result.drifted)
    return out


STEPS = [
    Step(
        f"bronze.{name}",
        "bronze",
        (f"landing/{name}",),
        catalog.outputs_of(f"bronze.{name}"),
        partial(_run, name),
    )
    for name in SOURCES
]
