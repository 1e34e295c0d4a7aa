"""The per-batch steps on batch_frame's collected Arrow table, in one pass each.

Rule counts, the first delivery of each event_id and the dq_results rows use
the same definitions as the DataFrame functions (pipeline.quality.expectations,
pipeline.live.events), tested against them in tests/test_live.py: a second
Spark job per step would cost more in start-up than in rows.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import catalog
from pipeline.live.plan import EVENT_PREFIX, RULE_COLUMNS
from pipeline.quality.expectations import (
    FAIL_RULES,
    QUARANTINE_RULES,
    WARN_RULES,
    Expectation,
    RuleCount,
)

UTC_TS = pa.timestamp("us", tz="UTC")
DQ_SCHEMA = catalog.arrow_schema("gold", "dq_results")  # the runner writes the same (catalog)


def unprefixed(frame: pa.Table, prefix: str) -> pa.Table:
    names = [n for n in frame.column_names if n.startswith(prefix)]
    return frame.select(names).rename_columns([n[len(prefix) :] for n in names])


def rule_counts(frame: pa.Table, expectations: list[Expectation]) -> list[RuleCount]:
    """count_failures over batch_frame's collected rule arrays (no second Spark job)."""
    failed: dict[tuple[str, str], int] = {}
    for column in (QUARANTINE_RULES, WARN_RULES, FAIL_RULES):
        names = pc.list_flatten(frame[column])
        if len(names):
            for item in pc.value_counts(names).to_pylist():
                failed[(column, item["values"])] = int(item["counts"])
    action_column = RULE_COLUMNS
    return [
        RuleCount(
            e.name, e.action, frame.num_rows, failed.get((action_column[e.action], e.name), 0)
        )
        for e in expectations
    ]


def first_deliveries(frame: pa.Table) -> pa.Table:
    """The event_totals rows of the valid records, first delivery of each event_id only.

    The first delivery is the lowest (partition, offset, record id), nulls last,
    as ev.first_per_event orders them.
    """
    valid = frame.filter(pc.is_valid(frame[EVENT_PREFIX + "event_id"]))
    events = unprefixed(valid, EVENT_PREFIX)
    if events.num_rows == 0:
        return events
    keys = pa.table(
        {
            "event_id": events["event_id"],
            "partition": valid["partition"],
            "offset": valid["offset"],
            "_record_id": valid["_record_id"],
        }
    )
    order = pc.sort_indices(
        keys, sort_keys=[(name, "ascending") for name in keys.column_names], null_placement="at_end"
    )
    ids = pc.take(keys["event_id"], order).combine_chunks()
    first = pa.concat_arrays([pa.array([True]), pc.not_equal(ids[1:], ids[:-1])])
    return events.take(pc.filter(order, first))


def dq_table(run_id: str, now: dt.datetime, counts: list[RuleCount]) -> pa.Table:
    """gold.dq_results rows (layer 'live', table 'order_events') for one micro-batch."""
    rows = [
        {
            "run_id": run_id,
            "layer": "live",
            "table": "order_events",
            "rule": c.rule,
            "action": c.action,
            "rows_checked": int(c.rows_checked),
            "rows_failed": int(c.rows_failed),
            "pass_rate": float(c.pass_rate),
            "checked_at": now,
        }
        for c in counts
    ]
    return pa.Table.from_pylist(rows, schema=DQ_SCHEMA)
