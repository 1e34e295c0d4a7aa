"""A Gold table written in one Spark job and committed by delta-rs only after its checks.

pipeline/checked_write.py stages the rows as Parquet files inside the table's
folder and gathers the checks' metrics in the same job; these tests hold it to
what Spark's checked overwrite guaranteed: a failed check leaves the table as it
was (and no files behind), a passed one leaves exactly the rows, with the per-file
statistics readers skip files by. pipeline/gold/grain.py's grain rule is checked
on each of the Gold step's three ways to publish.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from tests.conftest import lake_at

SCHEMA = (
    "order_date date, product_id string, country string, channel string, status string, "
    "orders bigint, net_revenue decimal(18,2)"
)


def _frame(spark, days: int, shift: int = 0):
    rows = [
        (
            dt.date(2026, 1, 1) + dt.timedelta(days=d),
            f"P{(d * 7 + shift) % 13:03d}",
            None if d % 5 == 0 else ("DE", "FR", "US")[d % 3],  # nulls in a stats column
            "web",
            "delivered",
            d + shift,
            Decimal(f"{d}.25"),
        )
        for d in range(days)
    ]
    return spark.createDataFrame(rows, SCHEMA).repartition(3)  # several files


def _table(root: Path) -> Path:
    return root / "gold" / "product_sales"


def _arrow(root: Path) -> pa.Table:
    from pipeline.read import delta_arrow

    data = delta_arrow(str(_table(root)))
    return data.sort_by([("order_date", "ascending"), ("product_id", "ascending")])


def _expected(frame) -> pa.Table:
    data = frame.toArrow()
    return data.sort_by([("order_date", "ascending"), ("product_id", "ascending")])


def _metrics():
    return [F.count(F.lit(1)).alias("rows"), F.sum("net_revenue").alias("net_revenue")]


def _staged(root: Path) -> list[Path]:
    return sorted(_table(root).glob("staged-*"))


def test_a_failed_check_leaves_the_table_and_no_files(spark, tmp_path) -> None:
    from deltalake import DeltaTable

    from pipeline import checked_write, lake

    with lake_at(tmp_path):
        lake.overwrite(_frame(spark, 10), "gold", "product_sales")
        before, version = _arrow(tmp_path), DeltaTable(str(_table(tmp_path))).version()
        seen: list[dict] = []

        def refuse(values) -> None:
            seen.append(dict(values))
            raise RuntimeError("rule failed")

        with pytest.raises(RuntimeError, match="rule failed"):
            checked_write.overwrite_checked(
                _frame(spark, 20, 1), "gold", "product_sales", _metrics(), refuse
            )
    assert seen and seen[0]["rows"] == 20  # the check saw the new rows' metrics
    assert DeltaTable(str(_table(tmp_path))).version() == version
    assert _arrow(tmp_path).equals(before)
    assert _staged(tmp_path) == []


def test_a_passed_check_commits_the_rows_with_their_statistics(spark, tmp_path) -> None:
    from deltalake import DeltaTable

    from pipeline import checked_write, lake

    new = _frame(spark, 40, 2)
    with lake_at(tmp_path):
        lake.overwrite(_frame(spark, 10), "gold", "product_sales")  # Spark's writer first
        values = checked_write.overwrite_checked(
            new, "gold", "product_sales", _metrics(), lambda values: None
        )
        wanted = lake.stats_columns("gold", "product_sales", new.columns).split(",")
    assert values["rows"] == 40 and values["net_revenue"] == sum(
        Decimal(f"{d}.25") for d in range(40)
    )
    assert _arrow(tmp_path).equals(_expected(new))
    table = DeltaTable(str(_table(tmp_path)))
    adds = pa.table(table.get_add_actions(flatten=False)).to_pylist()
    assert len(adds) > 1 and all(a["path"].startswith("staged-") for a in adds)
    log = max((_table(tmp_path) / "_delta_log").glob("*.json")).read_text().splitlines()
    stats = {
        json.loads(line)["add"]["path"]: json.loads(json.loads(line)["add"]["stats"])
        for line in log
        if "add" in json.loads(line)
    }
    for path, got in stats.items():  # each file's statistics, recomputed from its rows
        rows = pq.read_table(_table(tmp_path) / path)
        assert got["numRecords"] == rows.num_rows
        assert set(got["nullCount"]) == set(wanted)
        for column in wanted:
            values_ = rows.column(column)
            assert got["nullCount"][column] == values_.null_count, (path, column)
            low, high = pc.min_max(values_).values()
            as_json = (lambda v: v.isoformat()) if column == "order_date" else (lambda v: v)
            if low.is_valid:
                assert got["minValues"][column] == as_json(low.as_py()), (path, column)
                assert got["maxValues"][column] == as_json(high.as_py()), (path, column)
            else:
                assert column not in got["minValues"]
    # Spark skips files by these statistics: its filtered reads still find every row
    read = spark.read.format("delta").load(str(_table(tmp_path)))
    for day in (dt.date(2026, 1, 1), dt.date(2026, 1, 17), dt.date(2026, 2, 9)):
        want = new.filter(F.col("order_date") == day).count()
        assert read.filter(F.col("order_date") == day).count() == want == 1
    assert read.filter(F.col("country").isNull()).count() == new.filter("country IS NULL").count()


def test_a_new_table_gets_the_catalogs_statistics_setting(spark, tmp_path) -> None:
    from deltalake import DeltaTable

    from pipeline import checked_write, lake

    frame = _frame(spark, 12)
    with lake_at(tmp_path):
        checked_write.overwrite_checked(
            frame, "gold", "product_sales", _metrics(), lambda values: None
        )
        wanted = lake.stats_columns("gold", "product_sales", frame.columns)
        lake.overwrite(_frame(spark, 5), "gold", "product_sales")  # Spark's writer after it
    table = DeltaTable(str(_table(tmp_path)))
    assert table.metadata().configuration[lake.STATS_COLUMNS] == wanted
    assert _arrow(tmp_path).equals(_expected(_frame(spark, 5)))


def test_a_table_of_other_columns_is_rewritten_by_spark(spark, tmp_path) -> None:
    from pipeline import checked_write, lake

    frame = _frame(spark, 12)
    with lake_at(tmp_path):
        older = frame.withColumn("retired", F.lit("x"))  # an older version's columns
        lake.overwrite(older, "gold", "product_sales")
        checked_write.overwrite_checked(
            frame, "gold", "product_sales", _metrics(), lambda values: None
        )
    assert _arrow(tmp_path).equals(_expected(frame))
    assert _staged(tmp_path) == []
    log = max((_table(tmp_path) / "_delta_log").glob("*.json")).read_text()
    assert "Apache-Spark" in log and "staged-" not in log


def _fact(spark, names: tuple[str, str]):
    """Two revenue-bearing lines of one product, day and cell, under ``names``."""
    rows = [
        (dt.date(2026, 3, 1), f"O{i}", "P1", name, "Books", "DE", "web", "delivered", True, True)
        for i, name in enumerate(names)
    ]
    lines = spark.createDataFrame(
        rows,
        "order_date date, order_id string, product_id string, product_name string, "
        "category string, country string, channel string, status string, "
        "is_revenue_bearing boolean, first_for_product boolean",
    )
    return lines.select(
        "*",
        F.lit(2).alias("quantity"),
        F.lit(Decimal("10.00")).cast("decimal(18,2)").alias("line_gross"),
        F.lit(Decimal("9.00")).cast("decimal(18,2)").alias("line_net"),
        F.lit(None).cast("decimal(18,2)").alias("line_cost"),
    )


@pytest.mark.parametrize("way", ["collected", "checked_write", "staged"])
def test_a_product_of_two_names_fails_the_grain_rule_each_way(
    spark, tmp_path, monkeypatch, way
) -> None:
    """Grouped by the grain, a dependent column with two values in one key is what the
    grain rule catches, whichever way the step publishes; the table stays as it was."""
    from deltalake import DeltaTable

    from pipeline import lake
    from pipeline.gold import sales_cells
    from pipeline.gold import steps as gold
    from pipeline.registry import StepFailed

    monkeypatch.delenv("SHOPLAKE_WRITER", raising=False)
    with lake_at(tmp_path):
        good = sales_cells.build_products(_fact(spark, ("Atlas", "Atlas")))
        assert good.filter(F.col("_grain_conflict")).count() == 0
        lake.overwrite(good.drop("_grain_conflict"), "gold", "product_sales")
        version = DeltaTable(str(_table(tmp_path))).version()
        if way == "collected":
            monkeypatch.setattr(lake, "collect_target", lambda layer, table: "local")
        else:
            monkeypatch.setattr(lake, "collect_target", lambda layer, table: None)
        if way == "staged":
            monkeypatch.setenv("SHOPLAKE_WRITER", "spark")
        bad = sales_cells.build_products(_fact(spark, ("Atlas", "Atlas Pro")))
        with pytest.raises(StepFailed) as failed:
            gold._publish("product_sales", bad, sales_cells.PRODUCT_GRAIN, 2, Decimal("18.00"))
    rules = {c.count.rule: c.count.rows_failed for c in failed.value.outcome.checks}
    assert rules == {
        "grain_unique": 1,
        "no_negative_revenue": 0,
        "net_revenue_reconciles_with_silver": 0,
    }
    assert DeltaTable(str(_table(tmp_path))).version() == version
    assert _staged(tmp_path) == []
