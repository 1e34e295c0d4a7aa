"""An increment's MERGE gives the same table whichever engine commits it.

On a local lake ``lake.upsert`` and ``lake.replace_groups`` merge through
delta-rs (``lake.merge_target``); on a remote root, with
``SHOPLAKE_WRITER=spark`` or into a table with deletion vectors, through
Spark. The suite's incremental tests run on local lakes, so this file puts
the same change sets through both engines and compares the tables.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from pipeline import lake
from pipeline.read import delta_arrow, has_deletion_vectors, table_stats
from tests.conftest import lake_at

SCHEMA = "k string, v int, price decimal(18,2), at timestamp, day date"
AT = dt.datetime(2026, 6, 1, 12, 30)
DAY = dt.date(2026, 6, 1)


def _rows(spark, layer: str, table: str) -> list[tuple]:
    df = lake.read(spark, layer, table).drop("_row_hash")
    return sorted(tuple(r) for r in df.collect())


def _upserted(spark, engine: str, root, monkeypatch) -> tuple[list[tuple], bool]:
    """A table of four rows, then one change set: update a, keep b, delete c, add d,
    delete z (absent). Returns the rows and whether delta-rs was the merging engine."""
    monkeypatch.setenv("SHOPLAKE_WRITER", engine)
    with lake_at(root):
        base = spark.createDataFrame(
            [(k, i, Decimal(f"{i}.50"), AT, DAY) for i, k in enumerate("abc", 1)], SCHEMA
        )
        lake.sync(base, "silver", "orders", keys=["k"], compare=False)
        rust = lake.merge_target("silver", "orders") is not None
        changes = spark.createDataFrame(
            [
                ("a", 10, Decimal("10.00"), AT, DAY, False),
                ("b", 2, Decimal("2.50"), AT, DAY, False),
                ("c", None, None, None, None, True),
                ("d", 4, None, None, None, False),
                ("z", None, None, None, None, True),
            ],
            SCHEMA + ", _delete boolean",
        )
        lake.upsert(changes, "silver", "orders", keys=["k"])
        lake.upsert(changes, "silver", "orders", keys=["k"])  # again: nothing changes
        return _rows(spark, "silver", "orders"), rust


@pytest.mark.parametrize("engine", ["spark", "auto"])
def test_upsert_updates_inserts_and_deletes_alike(spark, tmp_path, monkeypatch, engine) -> None:
    rows, rust = _upserted(spark, engine, tmp_path, monkeypatch)
    assert rust is (engine == "auto")
    with lake_at(tmp_path):
        # Spark's MERGE marks replaced rows with deletion vectors; the app's reader and
        # the file statistics must not count them
        location = lake.path("silver", "orders")
        assert has_deletion_vectors(DeltaTable(location)) is (engine == "spark")
        assert delta_arrow(location).num_rows == len(rows)
        assert table_stats("silver", "orders").rows == len(rows)
    assert rows == [
        ("a", 10, Decimal("10.00"), AT, DAY),
        ("b", 2, Decimal("2.50"), AT, DAY),
        ("d", 4, None, None, None),
    ]


def test_a_scoped_upsert_and_replace_groups_agree_across_engines(
    spark, tmp_path, monkeypatch
) -> None:
    """The quarantine's scope (one source's part) and a group replacement, both engines."""
    out = {}
    for engine in ("spark", "auto"):
        monkeypatch.setenv("SHOPLAKE_WRITER", engine)
        with lake_at(tmp_path / engine):
            q = spark.createDataFrame(
                [("orders", "1", "x"), ("orders", "2", "y"), ("customers", "1", "z")],
                "source_table string, record_id string, rule string",
            )
            lake.sync(q, "silver", "q", keys=["source_table", "record_id"], compare=False)
            released = spark.createDataFrame(
                [("orders", "1", None, True), ("orders", "3", "w", False)],
                "source_table string, record_id string, rule string, _delete boolean",
            )
            lake.upsert(
                released,
                "silver",
                "q",
                keys=("source_table", "record_id"),
                scope="TARGET.source_table = 'orders'",
                deletion_vectors=False,
            )
            lines = spark.createDataFrame(
                [("o1", 1, 5), ("o1", 2, 6), ("o2", 1, 7), ("o3", 1, 8)],
                "order_id string, line_no int, qty int",
            )
            lake.overwrite(lines, "silver", "lines")
            new = spark.createDataFrame([("o1", 1, 50)], "order_id string, line_no int, qty int")
            groups = spark.createDataFrame([("o1",), ("o2",)], "order_id string")
            lake.replace_groups(new, "silver", "lines", groups)
            out[engine] = (_rows(spark, "silver", "q"), _rows(spark, "silver", "lines"))
            # delta-rs leaves the table without deletion vectors, so it keeps merging
            dv = lake._table_properties(spark, lake.path("silver", "lines"))
            assert (dv.get(lake.DELETION_VECTORS) == "true") is (engine == "spark")
    assert out["spark"] == out["auto"]
    quarantine, lines = out["auto"]
    assert quarantine == [("customers", "1", "z"), ("orders", "2", "y"), ("orders", "3", "w")]
    assert lines == [("o1", 1, 50), ("o3", 1, 8)]


def test_a_large_table_or_one_with_deletion_vectors_is_merged_by_spark(
    spark, tmp_path, monkeypatch
) -> None:
    monkeypatch.delenv("SHOPLAKE_WRITER", raising=False)
    with lake_at(tmp_path):
        df = spark.range(3).select(F.col("id").cast("string").alias("k"))
        lake.sync(df, "silver", "orders", keys=["k"], compare=False)
        assert lake.merge_target("silver", "orders") is not None
        with monkeypatch.context() as patched:
            patched.setattr(lake, "RUST_MERGE_MAX_BYTES", 1)  # its files above the size
            assert lake.merge_target("silver", "orders") is None
        lake.use_deletion_vectors(spark, "silver", "orders")
        assert lake.merge_target("silver", "orders") is None
