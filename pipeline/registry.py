"""The step registry: what each step reads and writes, and in which order.

The app's buttons and the command line both run steps through
``pipeline.runner``, which times them, counts their rows and records
gold.pipeline_runs and gold.dq_results.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pyspark.sql import SparkSession

from pipeline.quality.expectations import RuleCount

LAYERS = ("bronze", "silver", "gold")

# The session the current thread's step runs in when it is not the run's own: a
# small step's on a large lake (pipeline.runner.small_step). Set by the runner for
# every step it starts, since a pool thread keeps its context from one step to the next.
step_session: contextvars.ContextVar[SparkSession | None] = contextvars.ContextVar(
    "step_session", default=None
)


@dataclass
class Context:
    """What the steps of one run share.

    Bookkeeping rows (the Bronze ingest log, Silver's refine state and touched
    keys) are not committed by each step: a step ``defer``s them and the
    runner appends each table's rows in one commit at the end of the run,
    with the run's log. A run killed before then leaves the data tables
    written and the bookkeeping as it was, and the next run redoes the work
    (Bronze finds its files' rows already committed; Silver refines the same
    files again, against the tables as the last recorded state left them).
    """

    session: SparkSession  # the run's; steps use ``spark``
    run_id: str
    started_at: dt.datetime
    full_refresh: bool = False  # recompute incremental Silver tables from all of Bronze
    small_writes: bool = False  # whole-table writes through delta-rs (pipeline.lake.arrow_target)
    deferred: dict[tuple[str, str], tuple[object, list[tuple]]] = field(default_factory=dict)
    touched: dict[str, list[str] | None] = field(default_factory=dict)  # this run's, by source
    # revenue-bearing net revenue of silver.fact_sales as this run left it (Gold reconciles)
    silver_net_revenue: object = None
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def spark(self) -> SparkSession:
        """The session the current step runs in: the run's, or a small step's own."""
        return step_session.get() or self.session

    def defer(self, layer: str, table: str, schema: object, rows: Sequence[tuple]) -> None:
        """Rows for ``layer.table``, appended by the runner when the run ends."""
        with self.lock:
            entry = self.deferred.setdefault((layer, table), (schema, []))
            entry[1].extend(rows)


@dataclass
class CheckResult:
    layer: str
    table: str
    count: RuleCount


@dataclass
class StepOutcome:
    rows_in: int = 0
    rows_out: int = 0
    rows_quarantined: int = 0
    checks: list[CheckResult] = field(default_factory=list)
    reconciliation: dict[str, int] | None = None
    notes: list[str] = field(default_factory=list)

    def add_checks(self, layer: str, table: str, counts: list[RuleCount]) -> None:
        self.checks.extend(CheckResult(layer, table, c) for c in counts)


class StepFailed(RuntimeError):
    """A fail-action rule fired: the step stopped before writing its target."""

    def __init__(self, message: str, outcome: StepOutcome):
        super().__init__(message)
        self.outcome = outcome


def fired_rules(outcome: StepOutcome) -> list[CheckResult]:
    return [c for c in outcome.checks if c.count.action == "fail" and c.count.rows_failed]


def raise_on_fail(outcome: StepOutcome) -> None:
    fired = fired_rules(outcome)
    if fired:
        listed = "; ".join(
            f"{c.layer}.{c.table}: rule {c.count.rule} failed on {c.count.rows_failed} rows"
            for c in fired
        )
        raise StepFailed(f"stopped before writing: {listed}", outcome)


@dataclass(frozen=True)
class Step:
    name: str
    layer: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    run: Callable[[Context], StepOutcome]


def all_steps() -> list[Step]:
    from pipeline.bronze.steps import STEPS as bronze
    from pipeline.gold.steps import STEPS as gold
    from pipeline.silver.steps import STEPS as silver

    return [*bronze, *silver, *gold]


def steps_for(target: str) -> list[Step]:
    """A layer's steps, all of them, or one step with every step upstream of it.

    ``gold.revenue_anomalies`` runs the Bronze and Silver steps it reads from,
    gold.daily_sales and itself, and leaves the other Gold tables alone: a
    table brought up to date costs only its own lineage.
    """
    steps = all_steps()
    if target in (*LAYERS, "all"):
        return [s for s in steps if target == "all" or s.layer == target]
    by_name = {s.name: s for s in steps}
    if target not in by_name:
        raise ValueError(
            f"unknown target {target!r}: choose bronze, silver, gold, all or one step "
            f"({', '.join(by_name)})"
        )
    producers = {table: s.name for s in steps for table in s.outputs}
    wanted: set[str] = set()
    pending = [target]
    while pending:
        name = pending.pop()
        if name not in wanted:
            wanted.add(name)
            pending += [producers[t] for t in by_name[name].inputs if t in producers]
    return [s for s in steps if s.name in wanted]
