"""Expectations: named SQL boolean rules with an action, evaluated in one pass.

A table declares its rules as data (a list of ``Expectation``). ``flag`` adds
two array columns naming the rules each row failed, so a single aggregation
(``count_failures``) gives every rule's count, and the same functions serve a
batch step and a streaming micro-batch (foreachBatch).

A rule's ``condition`` is true when the row is fine. A null result counts as
a failure: a rule that cannot be evaluated has not been met.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Literal

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

Action = Literal["warn", "quarantine", "fail"]

QUARANTINE_RULES = "_quarantine_rules"
WARN_RULES = "_warn_rules"
FAIL_RULES = "_fail_rules"


@dataclass(frozen=True)
class Expectation:
    name: str
    condition: str
    action: Action
    description: str = ""

    def passed(self) -> Column:
        return F.coalesce(F.expr(self.condition), F.lit(False))


@dataclass(frozen=True)
class RuleCount:
    rule: str
    action: Action
    rows_checked: int
    rows_failed: int

    @property
    def pass_rate(self) -> float:
        if self.rows_checked == 0:
            return 1.0
        return 1.0 - self.rows_failed / self.rows_checked


def _failed_names(expectations: Sequence[Expectation], action: Action) -> Column:
    """Most rows pass every rule: for them the conjunction of the conditions is enough and
    the empty array is a constant, so the array of names is built only for a row that
    failed one (with mark_versions' single window, BENCHMARKS.md sixteenth session)."""
    mine = [e for e in expectations if e.action == action]
    none = F.array().cast("array<string>")
    if not mine:
        return none
    names = F.array(*[F.when(~e.passed(), F.lit(e.name)) for e in mine])
    passed_all = reduce(lambda a, b: a & b, [e.passed() for e in mine])
    return F.when(passed_all, none).otherwise(F.filter(names, lambda name: name.isNotNull()))


def flag(df: DataFrame, expectations: Sequence[Expectation]) -> DataFrame:
    """Add the arrays of failed quarantine, warn and fail rule names."""
    return df.select(
        "*",
        _failed_names(expectations, "quarantine").alias(QUARANTINE_RULES),
        _failed_names(expectations, "warn").alias(WARN_RULES),
        _failed_names(expectations, "fail").alias(FAIL_RULES),
    )


def is_quarantined() -> Column:
    return F.size(F.col(QUARANTINE_RULES)) > 0


def failure_aggregation(flagged: DataFrame, expectations: Sequence[Expectation]) -> DataFrame:
    """One row: the row count and every rule's failures, as a single aggregation."""
    aggs = [F.count(F.lit(1)).alias("_rows")]
    for i, e in enumerate(expectations):
        column = {"quarantine": QUARANTINE_RULES, "warn": WARN_RULES, "fail": FAIL_RULES}[e.action]
        aggs.append(F.sum(F.array_contains(F.col(column), e.name).cast("int")).alias(f"_r{i}"))
    return flagged.agg(*aggs)


def count_failures(flagged: DataFrame, expectations: Sequence[Expectation]) -> list[RuleCount]:
    """Every rule's failure count from one aggregation over the flagged rows."""
    row = failure_aggregation(flagged, expectations).first()
    rows = int(row[0] or 0)
    return [
        RuleCount(e.name, e.action, rows, int(row[i + 1] or 0)) for i, e in enumerate(expectations)
    ]


def only_well_formed(condition: str) -> str:
    """A rule about a field is moot on a line that could not be parsed at all."""
    return f"(_raw IS NOT NULL) OR ({condition})"


def record_rules(key_present: str, key_description: str) -> list[Expectation]:
    """The rules every source starts with: the line parsed, and its key is there."""
    return [
        Expectation("malformed_record", "_raw IS NULL", "quarantine", "the line could be parsed"),
        Expectation("missing_key", only_well_formed(key_present), "quarantine", key_description),
    ]


def updated_at_rules() -> list[Expectation]:
    """updated_at ranks versions; unparseable counts as oldest, out of range is quarantined."""
    return [
        Expectation(
            "updated_at_out_of_range",
            only_well_formed("_updated_at IS NULL OR NOT _updated_at_out_of_range"),
            "quarantine",
            "updated_at between 2000-01-01 and one day after ingestion",
        ),
        Expectation(
            "unparseable_updated_at",
            "updated_at IS NULL OR _updated_at IS NOT NULL",
            "warn",
            "updated_at parses (else it counts as the oldest version)",
        ),
    ]
