"""Version choice and rule flags on hand-made rows, against the rules as plain Python.

``mark_versions`` decides conflicts from one window (the first and second rows of
each key's order) and ``flag`` builds the names of failed rules only for rows that
fail one; both are checked here on every combination the contract distinguishes:
ties on updated_at and batch, unparseable (null) updated_at, records that do not
compete, keys with one record.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random

from pyspark.sql import functions as F

from pipeline.quality.expectations import (
    FAIL_RULES,
    QUARANTINE_RULES,
    WARN_RULES,
    Expectation,
    flag,
)
from pipeline.silver.versions import VERSION_FATE, mark_versions

DAYS = [None, dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2)]


def _expected_fates(rows: list[dict]) -> dict[int, str | None]:
    """docs/contract.md §3 step 3: the latest updated_at (null oldest), then the later
    batch; two competing records tied on both make every competing record a conflict."""
    fates: dict[int, str | None] = {}
    for _, group in itertools.groupby(sorted(rows, key=lambda r: r["k"]), key=lambda r: r["k"]):
        group = list(group)
        competing = [r for r in group if r["eligible"]]

        def rank(r: dict) -> tuple:
            return (r["updated_at"] is not None, r["updated_at"] or dt.datetime.min, r["_batch_id"])

        best = max((rank(r) for r in competing), default=None)
        leaders = [r for r in competing if rank(r) == best]
        for r in group:
            if not r["eligible"]:
                fates[r["id"]] = None
            elif len(leaders) > 1:
                fates[r["id"]] = "conflict"
            else:
                fates[r["id"]] = "survivor" if r in leaders else "superseded"
    return fates


def test_versions_match_the_rule_on_ties_nulls_and_non_competitors(spark) -> None:
    rng = random.Random(7)
    rows = []
    for key in range(300):
        for _ in range(rng.choice([1, 1, 2, 3, 4])):
            rows.append(
                {
                    "id": len(rows),
                    "k": f"k{key}",
                    "updated_at": rng.choice(DAYS),
                    "_batch_id": rng.choice(["b1", "b2"]),
                    "eligible": rng.random() > 0.2,
                }
            )
    df = spark.createDataFrame(
        rows, "id int, k string, updated_at timestamp, _batch_id string, eligible boolean"
    )
    marked = mark_versions(df, ["k"], F.col("updated_at"), eligible=F.col("eligible"))
    assert marked.columns == [*df.columns, VERSION_FATE]
    got = {r["id"]: r[VERSION_FATE] for r in marked.collect()}
    expected = _expected_fates(rows)
    assert got == expected
    assert {"survivor", "superseded", "conflict", None} <= set(expected.values())


RULES = [
    Expectation("a_positive", "a > 0", "quarantine"),
    Expectation("b_present", "b IS NOT NULL", "quarantine"),
    Expectation("a_small", "a < 10", "warn"),
    Expectation("b_short", "length(b) < 3", "fail"),
]


def test_flag_names_each_failed_rule_and_counts_null_as_failed(spark) -> None:
    values = [(a, b) for a in (None, -1, 5, 20) for b in (None, "x", "long")]
    df = spark.createDataFrame(values, "a int, b string")
    flagged = {(r["a"], r["b"]): r for r in flag(df, RULES).collect()}
    for a, b in values:
        passed = {
            "a_positive": a is not None and a > 0,
            "b_present": b is not None,
            "a_small": a is not None and a < 10,
            "b_short": b is not None and len(b) < 3,
        }
        row = flagged[(a, b)]
        for column, action in (
            (QUARANTINE_RULES, "quarantine"),
            (WARN_RULES, "warn"),
            (FAIL_RULES, "fail"),
        ):
            names = [e.name for e in RULES if e.action == action and not passed[e.name]]
            assert row[column] == names, (a, b, column)
