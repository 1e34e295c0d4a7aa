"""A run's two writers give the same lake.

On a small local lake a run collects each whole table as Arrow, checks it
there and commits it with delta-rs, and an increment reads its keys' rows with
delta-rs (pipeline.lake.local_rows); on a remote lake Spark does all of it:
its joins find the touched rows and it checks and writes every table. The
suite's lakes are small, so this file runs the same batches on a local lake and
on a remote one (a ``file://`` root made to look remote, tests/conftest.py:
look_remote) and compares every batch table and every recorded check, after a
full run and after an increment.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline import catalog
from tests.conftest import lake_at

# Columns that differ between any two runs of the same files: when they ran, and the
# row hash over them.
RUN_VALUES = {"ingested_at", "_ingested_at", "quarantined_at", "_row_hash", "batch_id", "_batch_id"}
WRITERS = ("spark", "delta-rs")


def test_the_writer_follows_the_lakes_size(tmp_path, monkeypatch) -> None:
    from pipeline.runner import SMALL_LAKE_BYTES, small_writes

    monkeypatch.setenv("SHOPLAKE_LAKE", str(tmp_path))
    monkeypatch.delenv("SHOPLAKE_WRITER", raising=False)
    orders = tmp_path / "landing" / "orders"
    orders.mkdir(parents=True)
    (orders / "batch-000001.csv").write_bytes(b"x" * 1000)
    assert small_writes() is True
    assert small_writes(landing=SMALL_LAKE_BYTES) is False
    monkeypatch.setenv("SHOPLAKE_WRITER", "spark")
    assert small_writes() is False
    monkeypatch.setenv("SHOPLAKE_WRITER", "delta-rs")
    assert small_writes(landing=SMALL_LAKE_BYTES) is True
    monkeypatch.setenv("SHOPLAKE_WRITER", "duckdb")
    with pytest.raises(ValueError, match="SHOPLAKE_WRITER"):
        small_writes()


MERGED = ("silver.customers", "silver.orders", "silver.order_items", "silver.fact_sales")


def _run(spark, root: Path, writer: str, increment: bool = False) -> None:
    """A run of ``root``; the Spark writer's lake is a remote one (``look_remote``). An
    increment merges what it touches on both (SHOPLAKE_INCREMENTAL_MIN_ROWS=0)."""
    from pipeline import lake
    from pipeline.runner import run

    with lake_at(root.as_uri() if writer == "spark" else root):  # type: ignore[arg-type]
        assert (lake.local_location("silver", "orders") is None) == (writer == "spark")
        result = run("all", spark=spark)
    assert result.ok, result.error
    if increment:
        for step in (s for s in result.steps if s.step in MERGED):
            assert any(n.startswith("incremental") for n in step.notes), (writer, step)


@pytest.fixture(scope="module")
def lakes(spark, tmp_path_factory) -> dict[str, list[Path]]:
    """Per writer: the lake after a full run, and a copy of it after a 2 % append and a run.

    The Spark writer's lake is remote: Spark reads, joins, checks and writes it all."""
    from pipeline.sources.generate import generate
    from tests.conftest import look_remote

    monkeypatch, remote = pytest.MonkeyPatch(), pytest.MonkeyPatch()
    base = tmp_path_factory.mktemp("writers")
    first = base / "first"
    generate(first, orders=600, batches=2, seed=5, defect_rate=0.05)
    second = base / "second"  # the same files and a 2 % batch: each run gets the same bytes
    shutil.copytree(first, second)
    generate(second, orders=12, seed=5, append=True, defect_rate=0.05)
    out: dict[str, list[Path]] = {}
    try:
        monkeypatch.setenv("SHOPLAKE_INCREMENTAL_MIN_ROWS", "0")
        for writer in WRITERS:
            if writer == "spark":
                monkeypatch.delenv("SHOPLAKE_WRITER", raising=False)  # a remote lake's
                look_remote(remote, base / "state")
            else:
                remote.undo()
                monkeypatch.setenv("SHOPLAKE_WRITER", writer)
            full = base / writer / "full"
            shutil.copytree(first / "landing", full / "landing")
            _run(spark, full, writer)
            step = base / writer / "increment"
            shutil.copytree(full, step)
            shutil.rmtree(step / "landing")
            shutil.copytree(second / "landing", step / "landing")
            _run(spark, step, writer, increment=True)
            out[writer] = [full, step]
    finally:
        remote.undo()
        monkeypatch.undo()
    return out


def _rows(root: Path, layer: str, table: str) -> Counter:
    from pipeline.read import delta_arrow

    data = delta_arrow(str(root / layer / table))
    kept = [c for c in data.column_names if c not in RUN_VALUES]
    return Counter(tuple(_plain(r[c]) for c in kept) for r in data.select(kept).to_pylist())


def _plain(value: object) -> object:
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _plain(v)) for k, v in value.items()))
    return value


BATCH_TABLES = [
    (t.layer, t.name) for t in catalog.tables(kind=("batch", "shared")) if t.layer != "bronze"
]


@pytest.mark.parametrize("stage", [0, 1], ids=["full", "increment"])
@pytest.mark.parametrize(("layer", "table"), BATCH_TABLES, ids=[t for _, t in BATCH_TABLES])
def test_both_writers_leave_the_same_rows(lakes, stage, layer, table) -> None:
    spark_rows = _rows(lakes["spark"][stage], layer, table)
    arrow_rows = _rows(lakes["delta-rs"][stage], layer, table)
    assert sum(spark_rows.values()) > 0, f"{layer}.{table} is empty"
    assert arrow_rows == spark_rows


@pytest.mark.parametrize("stage", [0, 1], ids=["full", "increment"])
def test_both_writers_record_the_same_checks(lakes, stage) -> None:
    from pipeline.read import delta_arrow

    def checks(root: Path) -> Counter:
        data = delta_arrow(str(root / "gold" / "dq_results"))
        names = ["layer", "table", "rule", "action", "rows_checked", "rows_failed"]
        present = [c for c in names if c in data.column_names]
        return Counter(tuple(r.values()) for r in data.select(present).to_pylist())

    spark_checks = checks(lakes["spark"][stage])
    assert sum(spark_checks.values()) > 20
    assert checks(lakes["delta-rs"][stage]) == spark_checks


def test_arrow_checks_agree_with_sparks_on_awkward_rows(spark) -> None:
    """Duplicate and null keys, null and negative revenue, a list in the grain; and a
    table aggregated by its grain, whose rule counts the keys marked as conflicts."""
    from pyspark.sql import functions as F

    from pipeline.gold.grain import CONFLICT
    from pipeline.gold.steps import _arrow_metrics, _metrics, _rule_counts
    from pipeline.quality.checks import arrow_table_checks, table_checks

    schema = "k string, d date, cats array<string>, net_revenue decimal(18,2), updated_at timestamp"
    day = dt.date(2024, 3, 1)
    ts = dt.datetime(2024, 3, 1, 10, 0)
    rows = [
        ("a", day, ["x", "y"], Decimal("1.50"), ts),
        ("a", day, ["x", "y"], Decimal("-2.00"), None),
        ("a", day, ["x"], None, ts),
        (None, day, None, Decimal("3.00"), ts),
        (None, day, [], Decimal("0.00"), ts),
        ("b", None, ["y", "x"], Decimal("4.25"), dt.datetime(2024, 3, 2)),
    ]
    df = spark.createDataFrame(rows, schema)
    data = df.toArrow()
    assert isinstance(data, pa.Table)
    marked = df.withColumn(CONFLICT, F.col("k").isNull())

    def sparks(frame, grain, total):
        return _rule_counts(frame.agg(*_metrics(frame, grain)).first().asDict(), total)

    for frame in (df, marked):
        arrow = frame.toArrow()
        for grain in (["k"], ["k", "d"], ["k", "cats"], ["d", "cats"]):
            for total in (None, Decimal("7.25"), Decimal("7.26")):
                got = _rule_counts(_arrow_metrics(arrow, grain), total)
                assert got == sparks(frame, grain, total), (grain, total)
    assert sparks(df, ["k"], None)[0].rows_failed == 3  # two repeats of a, one of null
    assert sparks(marked, ["k"], None)[0].rows_failed == 2  # the two keys marked
    now = dt.datetime(2024, 3, 20)
    for key in (["k"], ["k", "d"]):
        expected = table_checks(df, key, ["k", "net_revenue"], now=now)
        assert arrow_table_checks(data, key, ["k", "net_revenue"], now=now) == expected
    assert table_checks(df, ["k"], ["k"], now=now)[0].rows_failed == 3  # the check can fail


def _stats_kept(location: Path) -> set[str]:
    """The columns with a null count in the table's file statistics (Delta keeps one
    for every statistics column, min and max only where the type has an order)."""
    from deltalake import DeltaTable as RustTable

    actions = pa.table(RustTable(str(location)).get_add_actions(flatten=True))
    return {n.removeprefix("null_count.") for n in actions.column_names if "null_count." in n}


STATS_TABLES = [(t.layer, t.name) for t in catalog.tables(kind=("batch", "shared"))]


@pytest.mark.parametrize(("layer", "table"), STATS_TABLES, ids=[t for _, t in STATS_TABLES])
def test_sparks_writer_keeps_statistics_of_the_catalogs_columns(lakes, layer, table) -> None:
    for root in lakes["spark"]:
        wanted = set(catalog.table(layer, table).stats_columns)
        assert wanted, f"{layer}.{table} declares no statistics columns"
        assert _stats_kept(root / layer / table) == wanted, root


def test_a_table_with_other_statistics_gets_the_catalogs_once(spark, tmp_path) -> None:
    """A table delta-rs created (every column's statistics) is set once by Spark's first
    write to it; the files written after that have the catalog's columns only."""
    from pipeline import lake

    with lake_at(tmp_path):
        frame = spark.createDataFrame(
            [(dt.date(2026, 1, day), day, Decimal("1.00")) for day in range(1, 4)],
            "order_date date, orders bigint, net_revenue decimal(18,2)",
        )
        location = lake.path("gold", "daily_sales")
        lake.write_arrow(location, frame.toArrow(), "overwrite")
        assert _stats_kept(tmp_path / "gold" / "daily_sales") == {
            "order_date",
            "orders",
            "net_revenue",
        }
        before = lake.latest_version(spark, "gold", "daily_sales")
        lake.append(frame, "gold", "daily_sales")
        lake.append(frame, "gold", "daily_sales")
        # one ALTER, then the two appends
        assert lake.latest_version(spark, "gold", "daily_sales") == before + 3
        lake.overwrite(frame, "gold", "daily_sales")
        assert _stats_kept(tmp_path / "gold" / "daily_sales") == {"order_date"}


def test_sparks_sync_into_a_table_delta_rs_created_sets_its_statistics(spark, tmp_path) -> None:
    """``sync`` holds the table's lock while Spark's writer first sets the catalog's
    statistics on a table delta-rs created (``declare_stats`` commits under the same
    lock): the lock is reentrant, where this used to wait on itself for ever."""
    import threading

    from pyspark.sql import functions as F

    from pipeline import lake

    with lake_at(tmp_path):
        frame = spark.createDataFrame(
            [(dt.date(2026, 1, day), day, Decimal("1.00")) for day in range(1, 4)],
            "order_date date, orders bigint, net_revenue decimal(18,2)",
        )
        lake.write_arrow(lake.path("gold", "daily_sales"), frame.toArrow(), "overwrite")
        changed = frame.withColumn("orders", F.col("orders") + 1)
        wrote: list[bool] = []
        worker = threading.Thread(  # a thread of its own: Spark's writer, and a timeout
            target=lambda: wrote.append(lake.sync(changed, "gold", "daily_sales", ["order_date"])),
            daemon=True,
        )
        worker.start()
        worker.join(timeout=120)
        assert wrote == [True], "sync did not finish within two minutes"
        assert _last_engine(tmp_path / "gold" / "daily_sales") == "spark"
        assert _stats_kept(tmp_path / "gold" / "daily_sales") == {"order_date"}


def _last_engine(table: Path) -> str:
    """Which engine made the table's last commit, from its commitInfo."""
    import json

    last = max((table / "_delta_log").glob("*.json"))
    for line in last.read_text().splitlines():
        info = json.loads(line).get("commitInfo")
        if info is not None:
            return "spark" if "Apache-Spark" in info.get("engineInfo", "") else "delta-rs"
    raise AssertionError(f"{last} has no commitInfo")


BRONZE_SOURCES = [t.name for t in catalog.tables(kind="batch") if t.layer == "bronze"]


@pytest.mark.parametrize("stage", [0, 1], ids=["full", "increment"])
def test_both_writers_land_the_same_bronze(lakes, stage) -> None:
    """A small local lake's Bronze appends are collected and committed by delta-rs, one
    data file per landing file (the crash repair reads which files a table holds from
    their statistics); a remote lake's by Spark: the same rows and ingest-log counts."""
    from deltalake import DeltaTable as RustTable

    from pipeline.read import delta_arrow

    small, remote = lakes["delta-rs"][stage], lakes["spark"][stage]
    for source in BRONZE_SOURCES:
        spark_rows = _rows(remote, "bronze", source)
        assert sum(spark_rows.values()) > 0, source
        assert _rows(small, "bronze", source) == spark_rows, source
        table = small / "bronze" / source
        assert _last_engine(table) == "delta-rs", source
        assert _last_engine(remote / "bronze" / source) == "spark", source
        files = pa.table(RustTable(str(table)).get_add_actions(flatten=True))
        lows = files.column("min._source_file").to_pylist()
        assert lows == files.column("max._source_file").to_pylist(), source
        assert None not in lows, source

    def logged(root: Path) -> Counter:
        log = delta_arrow(str(root / "bronze" / "_ingested_files"))
        names = ["source", "file", "rows", "unparseable_rows", "status"]
        return Counter(tuple(r.values()) for r in log.select(names).to_pylist())

    expected = logged(remote)
    assert sum(r[2] for r in expected) > 0
    assert any(r[3] for r in expected), "the batches hold no malformed line to count"
    assert logged(small) == expected


def test_a_local_tables_existence_is_read_from_its_log(spark, tmp_path) -> None:
    """``lake.exists`` lists a local table's log instead of asking Spark (a JVM snapshot
    load per question); it answers as Spark's ``isDeltaTable`` does in every case."""
    from delta.tables import DeltaTable
    from deltalake import DeltaTable as RustTable

    from pipeline import lake

    def both() -> tuple[bool, bool]:
        return (
            lake.exists(spark, "gold", "t"),
            DeltaTable.isDeltaTable(spark, lake.path("gold", "t")),
        )

    with lake_at(tmp_path):
        table = tmp_path / "gold" / "t"
        assert both() == (False, False)  # no folder
        (table / "_delta_log").mkdir(parents=True)
        (table / "_delta_log" / "00000000000000000000.crc").write_text("{}")
        assert both() == (False, False)  # a log without a commit
        shutil.rmtree(table)
        spark.range(3).write.format("delta").save(str(table))
        lake.write_arrow(str(table), pa.table({"id": [4, 5]}), "append")
        assert both() == (True, True)
        assert sorted(r[0] for r in lake.read(spark, "gold", "t").collect()) == [0, 1, 2, 4, 5]
        RustTable(str(table)).create_checkpoint()
        for commit in (table / "_delta_log").glob("*.json"):
            commit.unlink()  # a log whose commits were cleaned up, its checkpoint kept
        assert both() == (True, True)


def test_a_large_lakes_small_gold_tables_are_collected(spark, lakes, tmp_path, monkeypatch) -> None:
    """On a lake too large for small_writes, Gold tables that follow the calendar, and
    those whose last version held few rows, are collected and committed by delta-rs;
    of the rest, those aggregated by their grain are committed by delta-rs from one
    Spark job's files, the others stay Spark's; the rows are the same either way."""
    from pipeline import lake, runner

    root = tmp_path / "lake"
    shutil.copytree(lakes["spark"][0], root)
    monkeypatch.delenv("SHOPLAKE_WRITER", raising=False)
    monkeypatch.setattr(runner, "small_writes", lambda landing=None: False)
    gold = [t for t in catalog.tables(kind=("batch",)) if t.layer == "gold"]
    with lake_at(root):  # every table of this lake is a few hundred rows
        assert lake.logged_row_count("gold", "customer_rfm") < lake.COLLECT_ROWS
        assert lake.collect_target("gold", "customer_rfm") is not None
        monkeypatch.setenv("SHOPLAKE_WRITER", "spark")
        assert lake.collect_target("gold", "daily_sales") is None
        monkeypatch.delenv("SHOPLAKE_WRITER")
        monkeypatch.setattr(lake, "COLLECT_ROWS", 0)  # as if the rest were large
        monkeypatch.setenv("SHOPLAKE_RUN_PARALLELISM", "1")
        largest = max(gold, key=lambda t: lake.logged_row_count("gold", t.name) or 0)
        started: list[str] = []

        def tell(message: str, fraction: float) -> None:
            if message.endswith(" ..."):
                started.append(message.removesuffix(" ..."))

        # a full refresh: the copied lake's Gold is as its inputs left it, so would be kept
        result = runner.run("gold", spark=spark, progress=tell, full_refresh=True)
    assert result.ok, result.error
    # a large lake starts the ready step whose table held most rows (runner.largest_first)
    assert started[0] == f"gold.{largest.name}" != f"gold.{gold[0].name}", started
    assert {t.name for t in gold if t.by_calendar} == {
        "daily_sales",
        "category_sales",
        "revenue_anomalies",
    }
    # Tables aggregated by their grain are written by one Spark job and committed by
    # delta-rs after their checks (pipeline/checked_write.py); customer_rfm stays Spark's.
    checked = {"sales_cells", "sales_orders", "product_sales"}
    for table in gold:
        wanted = "delta-rs" if table.by_calendar or table.name in checked else "spark"
        assert _last_engine(root / "gold" / table.name) == wanted, table.name
        staged = _last_adds(root / "gold" / table.name)
        assert bool(staged) and all(p.startswith("staged-") for p in staged) == (
            table.name in checked
        ), table.name
        assert _rows(root, "gold", table.name) == _rows(lakes["spark"][0], "gold", table.name)


def _last_adds(table: Path) -> list[str]:
    """The files the table's last commit added."""
    import json

    last = max((table / "_delta_log").glob("*.json"))
    lines = [json.loads(line) for line in last.read_text().splitlines()]
    return [line["add"]["path"] for line in lines if "add" in line]


def test_a_large_lakes_small_steps_run_as_on_a_small_lake(
    spark, lakes, tmp_path, monkeypatch
) -> None:
    """On a lake too large for small_writes, a step whose input tables are small runs
    in a session of its own with a small lake's settings and writes through delta-rs;
    the others keep the lake's; the rows are the same."""
    from pipeline import lake, registry, runner

    root = tmp_path / "lake"
    shutil.copytree(lakes["spark"][0], root)
    monkeypatch.delenv("SHOPLAKE_WRITER", raising=False)
    monkeypatch.delenv("SHOPLAKE_CODEGEN", raising=False)
    # a large lake: only a lake without landing files (the small steps' rule) is small
    monkeypatch.setattr(runner, "small_lake", lambda landing=None: landing == 0)
    steps = {s.name: s for s in registry.steps_for("all")}
    with lake_at(root):
        products = lake.logged_row_count("bronze", "products")
        monkeypatch.setattr(runner, "SMALL_STEP_ROWS", products + 1)
        assert runner.small_step(steps["silver.products"])
        assert not runner.small_step(steps["silver.customers"])
        assert not runner.small_step(steps["bronze.products"])  # reads landing files
        management = spark.sparkContext._jvm.java.lang.management.ManagementFactory
        (full,) = [b for b in management.getGarbageCollectorMXBeans() if "MarkSweep" in b.getName()]
        at_step_ends: list[int] = []

        def progress(message: str, fraction: float) -> None:
            if message.endswith(("succeeded", "rows")):
                at_step_ends.append(full.getCollectionCount())

        result = runner.run("silver", spark=spark, full_refresh=True, progress=progress)
    assert result.ok, result.error
    # The heap the large run grew is given back after its last step (runner.return_heap).
    assert full.getCollectionCount() > at_step_ends[-1], at_step_ends
    assert spark.conf.get("spark.sql.codegen.wholeStage") == "true"
    small = runner._small_session(spark)
    assert small is not spark and small.conf.get("spark.sql.codegen.wholeStage") == "false"
    threshold = "spark.sql.autoBroadcastJoinThreshold"  # joins broadcast by size: large only
    assert (spark.conf.get(threshold), small.conf.get(threshold)) == ("10MB", "-1")
    assert _last_engine(root / "silver" / "products") == "delta-rs"
    assert _last_engine(root / "silver" / "customers") == "spark"
    assert _last_engine(root / "silver" / "dim_date") == "delta-rs"  # a row a day: collected
    assert _rows(root, "silver", "dim_date") == _rows(lakes["spark"][0], "silver", "dim_date")
    for table in ("products", "customers", "orders", "quarantine"):
        assert _rows(root, "silver", table) == _rows(lakes["spark"][0], "silver", table), table


@contextmanager
def _small_run() -> Iterator[None]:
    from pipeline import lake

    token = lake.small_writes.set(True)  # as the runner sets it for a small lake's steps
    try:
        yield
    finally:
        lake.small_writes.reset(token)


def test_a_small_lakes_reads_are_the_parquet_files_delta_rs_lists(
    spark, lakes, tmp_path, monkeypatch
) -> None:
    """On a small local lake ``lake.read`` is a plain Parquet read of the files in the
    table's current version (lake.listed_files_frame): the same rows, columns and types
    as Spark's Delta reader, the partitioned quarantine included; elsewhere Delta's."""
    from delta.tables import DeltaTable

    from pipeline import lake
    from tests.conftest import look_remote

    root = lakes["delta-rs"][1]  # after an increment: several versions, files replaced
    with lake_at(root), _small_run():
        for layer, table in STATS_TABLES:
            listed = lake.read(spark, layer, table)
            plan = listed._jdf.queryExecution().executedPlan().toString()
            assert "InMemoryFileIndex" in plan, (table, plan)
            delta = DeltaTable.forPath(spark, lake.path(layer, table)).toDF()
            assert listed.schema == delta.schema, table
            assert sorted(map(repr, listed.collect())) == sorted(map(repr, delta.collect())), table
    with lake_at(root):  # not a small run's step
        assert lake.listed_files_frame(spark, "silver", "orders") is None
    for name, properties, listed in (
        ("plain", "", True),
        ("deletion-vectors", "TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')", False),
        ("glob[1]", "", False),  # Spark would read the folder's name as a pattern
    ):
        location = tmp_path / name / "gold" / "daily_sales"
        spark.sql(f"CREATE TABLE delta.`{location}` (order_date DATE) USING delta {properties}")
        spark.sql(f"INSERT INTO delta.`{location}` VALUES (DATE'2026-01-01')")
        with lake_at(tmp_path / name), _small_run():
            frame = lake.listed_files_frame(spark, "gold", "daily_sales")
            assert (frame is not None) == listed, name
    look_remote(monkeypatch, tmp_path / "state")
    with lake_at(root.as_uri()), _small_run():  # type: ignore[arg-type]
        assert lake.listed_files_frame(spark, "silver", "orders") is None
