"""The micro-batch's one Spark job: parse, check and total every record (FramePlan).

Spark parses and checks every record and computes each valid event's totals
(pipeline.live.events) in one job per micro-batch (``batch_frame``, collected
as Arrow); pipeline.live.arrow_rules does the small per-batch steps on that
table. The column expressions are built once per query (FramePlan) and the
batch's ingestion time reaches Spark as a string, so a batch neither makes
thousands of Py4J calls nor recompiles its plan.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipeline import catalog
from pipeline.live import events as ev
from pipeline.live.kafka_source import RAW_COLUMNS
from pipeline.quality.expectations import (
    FAIL_RULES,
    QUARANTINE_RULES,
    WARN_RULES,
    Expectation,
    is_quarantined,
)

# ---------------------------------------------------------------- time helpers

# Instants cross between Python and Spark as epoch microseconds: a naive datetime
# would be read in the Python process's local zone, whatever Spark's session says.
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def micros(ts: dt.datetime) -> int:
    return (ts - EPOCH) // dt.timedelta(microseconds=1)


def ts_column(ts: dt.datetime) -> Column:
    return F.timestamp_micros(F.lit(micros(ts)))


def batch_ts(ts: dt.datetime) -> Column:
    """`ts` for every row of a micro-batch, without a timestamp literal in the plan.

    Spark compiles a timestamp literal into its generated code, so one that
    changes every micro-batch costs a new compilation of the batch's large
    projection each time (0.05-0.2 s); a string literal reaches the compiled
    code as a parameter instead. The always-true nondeterministic guard keeps
    the optimizer from folding the cast back into a timestamp literal.
    """
    text = F.when(F.spark_partition_id() >= 0, F.lit(str(micros(ts))))
    return F.timestamp_micros(text.cast("long"))


# ---------------------------------------------------------------- the batch's columns


def quarantine_columns() -> dict[str, Column]:
    """silver.quarantine's columns (docs/contract.md §4) over the flagged event rows."""
    key = F.coalesce(F.col("event_id"), F.col("order_id"), F.col("_record_id"))
    columns = {
        "source_table": F.lit("order_events"),
        "record_key": key,
        "rules": F.col(QUARANTINE_RULES),
        "raw_record": F.col("value"),
        "batch_id": F.col("_batch_id"),
        "quarantined_at": F.col("_ingested_at"),
        "source_file": F.coalesce(F.col("source_file"), F.col("topic")),
        "record_id": F.col("_record_id"),
    }
    # the batch steps keep the table in sync by this hash (pipeline.lake.sync): a table
    # the stream creates first must have the same columns
    columns["_row_hash"] = F.xxhash64(*columns.values())
    return columns


def quarantine_rows(quarantined: DataFrame) -> DataFrame:
    """silver.quarantine's shape (docs/contract.md §4) for invalid events."""
    return quarantined.select(*[c.alias(name) for name, c in quarantine_columns().items()])


BRONZE_COLUMNS = list(catalog.columns("bronze", "order_events"))  # RAW_COLUMNS, event_id, lineage
QUARANTINE_PREFIX = "_q_"
EVENT_PREFIX = "_e_"
LINEAGE_COLUMNS = ["_record_id", "_batch_id", "_ingested_at"]
RULE_COLUMNS = {"quarantine": QUARANTINE_RULES, "warn": WARN_RULES, "fail": FAIL_RULES}


def failed_rules(expectations: list[Expectation], action: str) -> Column:
    """One of `flag`'s arrays (the names of the failed rules of one action), as a Column.

    The same expression as pipeline.quality.expectations.flag builds, kept as a
    Column so that FramePlan builds it once (a test compares the two).
    """
    names = [F.when(~e.passed(), F.lit(e.name)) for e in expectations if e.action == action]
    if not names:
        return F.array().cast("array<string>")
    return F.filter(F.array(*names), lambda name: name.isNotNull())


class FramePlan:
    """batch_frame's column expressions, built once per query.

    Building them costs thousands of Py4J calls (about 0.4 s on a 2-core
    machine); a micro-batch that reuses them makes a handful. Columns are
    unresolved expressions, so one set serves every batch's DataFrame.
    """

    def __init__(self) -> None:
        self.parse = ev.parse_columns([*RAW_COLUMNS, *LINEAGE_COLUMNS])
        bad = is_quarantined()
        self.output = [
            *[F.col(c) for c in RAW_COLUMNS],
            ev.event_id_of(F.col("value")).alias("_bronze_event_id"),
            *[F.col(c) for c in LINEAGE_COLUMNS],
            F.col(QUARANTINE_RULES),
            F.col(WARN_RULES),
            F.col(FAIL_RULES),
            *[
                F.when(bad, c).alias(QUARANTINE_PREFIX + name)
                for name, c in quarantine_columns().items()
            ],
            *[
                F.when(~bad, c).alias(EVENT_PREFIX + name)
                for name, c in ev.event_total_columns(LINEAGE_COLUMNS).items()
            ],
        ]

        self.flags = [
            failed_rules(ev.EXPECTATIONS, action).alias(column)
            for action, column in RULE_COLUMNS.items()
        ]

    def apply(self, raw: DataFrame) -> DataFrame:
        first, second = self.parse
        parsed = raw.select(*first).select(*second)
        return parsed.select(F.col("*"), *self.flags).select(*self.output)


def batch_frame(raw: DataFrame, plan: FramePlan | None = None) -> DataFrame:
    """Everything a micro-batch writes, as one row per record, so one Spark job computes it.

    `raw` holds RAW_COLUMNS and LINEAGE_COLUMNS. The result has Bronze's
    columns (event_id under `_bronze_event_id`), the rule arrays of `flag`,
    the record's silver.quarantine row as `_q_*` columns (null for a valid
    event) and its event_totals row as `_e_*` columns (null for a quarantined
    one). A micro-batch used to run five Spark jobs over these (Bronze, rule
    counts, quarantine, events, minutes), each costing more in job start-up
    than in rows; the rest (counts, first delivery, minutes) is done on the
    collected Arrow data. The totals are guarded by validity: a quarantined
    item may not even fit the money type, and an ANSI cast would fail the batch.
    """
    return (plan or FramePlan()).apply(raw)
