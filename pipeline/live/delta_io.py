"""The micro-batch's Delta commits and look-ups through delta-rs (no Spark job).

A micro-batch's outputs are small (at most ``maxOffsetsPerTrigger`` rows).
Committing them through Spark's Delta writer costs a few Spark jobs and a log
replay per table (seconds per batch on a small machine); the ``deltalake``
(delta-rs) writer commits the same Arrow data, with the same app transactions,
in milliseconds. The tables stay ordinary Delta tables that Spark and delta-rs
both read and write. Whole-table reads go through pipeline.read.delta_arrow,
the reader every page uses.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from pipeline import lake, read


def delta_table(path: str):
    """The table opened by delta-rs, or None when it does not exist yet."""
    return lake.rust_table_at(path)


def commit_append(
    path: str,
    table: pa.Table,
    app_id: str,
    version: int,
    mode: str = "append",
    partition_by: list[str] | None = None,
) -> bool:
    """Append (or overwrite) once per (app_id, version); False when already committed.

    `partition_by` applies when this write creates the table; an existing table
    keeps its own partitioning (silver.quarantine is shared with the batch steps).
    """
    from deltalake import CommitProperties, Transaction

    target = delta_table(path)
    if target is not None:
        done = target.transaction_version(app_id)
        if done is not None and done >= version:
            return False
    lake.write_arrow(
        path,
        table,
        mode,
        partition_by or (),
        commit_properties=CommitProperties(
            app_transactions=[Transaction(app_id=app_id, version=version)]
        ),
    )
    return True


def commit_upsert(path: str, table: pa.Table, keys: list[str]) -> None:
    """MERGE rows by key: matched rows replaced, new ones inserted (idempotent)."""
    from deltalake import write_deltalake

    if table.num_rows == 0:
        return
    target = delta_table(path)
    if target is None:
        write_deltalake(path, lake.nullable(table), mode="append")
        return
    predicate = " AND ".join(f"t.{k} = s.{k}" for k in keys)
    (
        target.merge(lake.nullable(table), predicate, source_alias="s", target_alias="t")
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )


def read_arrow(path: str) -> pa.Table | None:
    """The whole table as Arrow, or None when it does not exist yet."""
    if delta_table(path) is None:
        return None
    return read.delta_arrow(path)


def _plain_type(kind: pa.DataType) -> pa.DataType:
    """delta-rs' query engine answers in view and large types; the writers want plain ones.

    Wider than pipeline.read's field cast: a query may also return large strings.
    """
    if kind == pa.string_view() or kind == pa.large_string():
        return pa.string()
    if kind == pa.binary_view() or kind == pa.large_binary():
        return pa.binary()
    return kind


def query_arrow(path: str, sql: str) -> pa.Table | None:
    """Run SQL over one Delta table (named `t`) in delta-rs, pruning files by their stats.

    Spark would first replay the table's log in a job of its own; after every
    micro-batch's commit that costs more than the query.
    """
    from deltalake import QueryBuilder

    target = delta_table(path)
    if target is None:
        return None
    table = pa.table(QueryBuilder().register("t", target).execute(sql).read_all())
    schema = pa.schema([pa.field(f.name, _plain_type(f.type), True) for f in table.schema])
    return table.cast(schema)


def sql_ts(ts: dt.datetime) -> str:
    """A UTC timestamp literal for query_arrow's SQL."""
    return f"TIMESTAMP '{ts.astimezone(dt.UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}'"
