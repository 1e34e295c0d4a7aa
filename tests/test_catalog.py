"""The table catalog (pipeline/catalog.py) is the one declaration every list derives from.

No Spark session here: the step registry, the derived lists and the schemas are
checked as Python objects. What a real run writes is checked against the
catalog where a lake is built anyway: ``assert_written_columns`` is called by
tests/test_pipeline.py (the batch tables) and tests/test_live.py (the live ones).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest

from pipeline import catalog


def _spark_name(delta_type: object) -> str:
    """A Delta log type (JSON) as the Spark SQL name the catalog uses."""
    if isinstance(delta_type, str):
        return {"long": "bigint", "integer": "int"}.get(delta_type, delta_type)
    assert isinstance(delta_type, dict), delta_type
    if delta_type["type"] == "array":
        return f"array<{_spark_name(delta_type['elementType'])}>"
    if delta_type["type"] == "map":
        key, value = _spark_name(delta_type["keyType"]), _spark_name(delta_type["valueType"])
        return f"map<{key},{value}>"
    raise AssertionError(f"a type the catalog does not use: {delta_type}")


def written_columns(path: Path) -> list[tuple[str, str]]:
    """(name, type) of a Delta table as its log records them, read with delta-rs."""
    from deltalake import DeltaTable

    fields = json.loads(DeltaTable(str(path)).schema().to_json())["fields"]
    return [(f["name"], _spark_name(f["type"])) for f in fields]


def assert_written_columns(lake: Path, required: Iterable[str]) -> list[str]:
    """Every catalog table present in ``lake`` has exactly the catalog's columns and types;
    the ``required`` ones (``layer.name``) must be present. Returns the tables checked."""
    checked = []
    for table in catalog.CATALOG:
        path = lake / table.layer / table.name
        if not (path / "_delta_log").is_dir():
            continue
        declared = [(c.name, c.type) for c in table.columns]
        assert written_columns(path) == declared, table.ref
        checked.append(table.ref)
    missing = set(required) - set(checked)
    assert not missing, f"a run did not write {sorted(missing)}"
    return checked


# ------------------------------------------------------------------------ the step registry


def test_every_step_output_and_input_is_a_catalog_table():
    from pipeline.registry import all_steps

    for step in all_steps():
        assert step.outputs, step.name
        for ref in step.outputs:
            assert catalog.table_of(ref).kind == "batch", (step.name, ref)
        for ref in step.inputs:
            if not ref.startswith("landing/"):
                catalog.table_of(ref)  # raises for an undeclared table


def test_every_batch_table_has_exactly_one_step_writing_it():
    from pipeline.registry import all_steps

    steps = all_steps()
    names = {s.name for s in steps}
    for table in catalog.tables(kind="batch"):
        writers = [s.name for s in steps if table.ref in s.outputs]
        assert writers == [table.writer], table.ref
    for table in catalog.tables(kind="shared"):  # silver.quarantine: each refine step appends
        assert set(table.writers) - {catalog.LIVE} <= names, table.ref


def test_the_run_order_follows_from_the_catalog_inputs():
    from pipeline.registry import all_steps
    from pipeline.runner import dependencies

    needs = dependencies(all_steps())
    assert needs["gold.revenue_anomalies"] == {"gold.daily_sales"}
    assert needs["silver.fact_sales"] == {
        "silver.orders",
        "silver.order_items",
        "silver.products",
        "silver.customers",
    }


# ------------------------------------------------------------------------ derived lists


def test_the_apps_tables_are_the_catalogs_without_bookkeeping():
    from pipeline import read

    want = {(t.layer, t.name): t.public for t in catalog.CATALOG if t.kind != "bookkeeping"}
    got = {
        (layer, name): cols
        for layer, tables in read.TABLES.items()
        for name, cols in tables.items()
    }
    assert got == want
    assert "_row_hash" not in read.TABLES["silver"]["quarantine"]
    assert read.RFM_SEGMENTS == catalog.RFM_SEGMENT_NAMES


def test_the_demo_resets_every_batch_table_and_keeps_the_history():
    from pipeline import demo

    reset = {f"{layer}.{name}" for layer, names in demo.BATCH_TABLES.items() for name in names}
    assert reset == {t.ref for t in catalog.tables(kind=("batch", "bookkeeping"))}
    assert {"gold.pipeline_runs", "gold.dq_results", "gold.live_sales_minute"}.isdisjoint(reset)


def test_the_bench_compares_catalog_tables_by_their_grain():
    from pipeline.bench import duckdb_baseline

    assert duckdb_baseline.GOLD_TABLES  # the baseline defines some Gold
    for name in duckdb_baseline.GOLD_TABLES:
        assert duckdb_baseline.KEYS[name] == catalog.table("gold", name).grain
    order = [t.name for t in catalog.tables("gold")]
    assert order.index("daily_sales") < order.index("revenue_anomalies"), "anomalies read it"


def test_the_sales_builders_publish_the_catalogs_grain():
    from pipeline.gold import sales_cells

    for name, grain in (
        ("sales_cells", sales_cells.CELL_GRAIN),
        ("sales_orders", sales_cells.ORDER_GRAIN),
        ("product_sales", sales_cells.PRODUCT_GRAIN),
    ):
        assert tuple(grain) == catalog.table("gold", name).grain, name


def test_the_live_query_writes_catalog_tables():
    from pipeline.live import paths, plan
    from pipeline.live.kafka_source import RAW_COLUMNS

    for layer, name in paths.TABLES.values():
        assert catalog.LIVE in catalog.table(layer, name).writers, (layer, name)
    assert plan.BRONZE_COLUMNS[: len(RAW_COLUMNS)] == RAW_COLUMNS


def test_rfm_segments_have_a_label_and_cover_the_grid():
    from pipeline.formats import SEGMENT_LABELS

    assert list(SEGMENT_LABELS) == list(catalog.RFM_SEGMENT_NAMES)
    cells = [(r, f) for _, rs, fs in catalog.RFM_SEGMENTS for r in rs for f in fs]
    assert sorted(cells) == [(r, f) for r in range(1, 6) for f in range(1, 6)], "each cell once"


# ------------------------------------------------------------------------ schemas


def test_both_run_record_writers_use_the_catalog_schema():
    from pyspark.sql.pandas.types import to_arrow_schema

    from pipeline import runner
    from pipeline.live import arrow_rules

    assert runner.DQ_SCHEMA == catalog.spark_schema("gold", "dq_results")
    assert runner.RUNS_SCHEMA == catalog.spark_schema("gold", "pipeline_runs")
    assert arrow_rules.DQ_SCHEMA == to_arrow_schema(runner.DQ_SCHEMA, timezone="UTC")


def test_spark_and_arrow_schemas_agree_for_every_table():
    from pyspark.sql.pandas.types import to_arrow_schema

    for table in catalog.CATALOG:
        spark = catalog.spark_schema(table.layer, table.name)
        assert [f.name for f in spark.fields] == list(table.names)
        assert [f.dataType.simpleString() for f in spark.fields] == [c.type for c in table.columns]
        arrow = catalog.arrow_schema(table.layer, table.name)
        assert to_arrow_schema(spark, timezone="UTC") == arrow, table.ref


def test_bookkeeping_tables_are_catalog_entries():
    """The ingest log, refine state and touched keys are written under catalog names."""
    from pipeline.bronze import ingest
    from pipeline.silver import incremental

    assert ingest.LOG_SCHEMA == catalog.spark_schema("bronze", ingest.LOG_TABLE)
    assert incremental.STATE_SCHEMA == catalog.spark_schema("silver", incremental.STATE_TABLE)
    assert incremental.TOUCHED_SCHEMA == catalog.spark_schema("silver", incremental.TOUCHED_TABLE)


def test_lookups_refuse_undeclared_tables_and_types():
    with pytest.raises(catalog.UnknownTableError, match="gold.nope"):
        catalog.table("gold", "nope")
    with pytest.raises(catalog.UnknownTableError):
        catalog.refs("silver.orders", "silver.order")
    with pytest.raises(catalog.UnknownTableError, match="no table written by step gold.nope"):
        catalog.outputs_of("gold.nope")
    with pytest.raises(ValueError, match="several writers"):
        _ = catalog.table("silver", "quarantine").writer
    assert catalog.columns("silver", "quarantine")[-1] == "_row_hash"
    assert "_row_hash" not in catalog.columns("silver", "quarantine", internal=False)
    assert [t.name for t in catalog.tables("gold", "live")] == ["live_sales_minute", "live_alerts"]
    with pytest.raises(ValueError, match="unknown column type 'varchar'"):
        catalog._arrow_type("array<varchar>")


def test_written_columns_reads_the_delta_log(tmp_path: Path):
    """The helper the real-run checks use: a table with other columns fails it."""
    import pyarrow as pa
    from deltalake import write_deltalake

    schema = catalog.arrow_schema("gold", "live_alerts")
    write_deltalake(str(tmp_path / "gold" / "live_alerts"), schema.empty_table())
    assert assert_written_columns(tmp_path, ["gold.live_alerts"]) == ["gold.live_alerts"]
    other = pa.schema([*schema, ("extra", pa.string())])
    write_deltalake(str(tmp_path / "gold" / "live_sales_minute"), other.empty_table())
    with pytest.raises(AssertionError, match="gold.live_sales_minute"):
        assert_written_columns(tmp_path, [])
    with pytest.raises(AssertionError, match="did not write"):
        assert_written_columns(tmp_path / "elsewhere", ["gold.daily_sales"])
