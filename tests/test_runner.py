"""The run's shape: the order follows from the steps' declared inputs and outputs."""

from __future__ import annotations

import pytest

from pipeline.registry import Step, all_steps
from pipeline.runner import dependencies


def _noop(ctx):  # pragma: no cover - never run
    raise AssertionError


def test_every_step_waits_for_the_steps_writing_what_it_reads() -> None:
    needs = dependencies(all_steps())
    assert needs["bronze.orders"] == set()
    assert needs["silver.orders"] == {"bronze.orders"}
    assert needs["silver.order_items"] == {"bronze.order_items", "silver.orders"}
    assert needs["silver.fact_sales"] >= {"silver.orders", "silver.order_items"}
    assert "silver.products" in needs["silver.fact_sales"]  # it reads silver.dim_product
    assert needs["gold.revenue_anomalies"] == {"gold.daily_sales"}
    # the three independent Silver sources can run together
    for name in ("silver.products", "silver.customers", "silver.orders"):
        assert not any(d.startswith("silver.") for d in needs[name]), name


def test_a_layer_alone_reads_the_tables_as_they_are() -> None:
    silver = [s for s in all_steps() if s.layer == "silver"]
    needs = dependencies(silver)
    assert needs["silver.orders"] == set()
    assert needs["silver.order_items"] == {"silver.orders"}


def test_a_cycle_is_refused() -> None:
    a = Step("x.a", "x", ("x.b",), ("x.a",), _noop)
    b = Step("x.b", "x", ("x.a",), ("x.b",), _noop)
    with pytest.raises(ValueError, match="cycle"):
        dependencies([a, b])


def test_code_generation_follows_the_lakes_size(tmp_path, monkeypatch) -> None:
    """Whole-stage codegen is off on a small lake, on from SMALL_LAKE_BYTES, and can be forced."""
    from pipeline.runner import SMALL_LAKE_BYTES, landing_bytes, whole_stage_codegen

    monkeypatch.setenv("SHOPLAKE_LAKE", str(tmp_path))
    monkeypatch.delenv("SHOPLAKE_CODEGEN", raising=False)
    monkeypatch.delenv("SHOPLAKE_SPARK_CONF", raising=False)
    orders = tmp_path / "landing" / "orders"
    orders.mkdir(parents=True)
    (orders / "batch-000001.csv").write_bytes(b"x" * 1000)
    (orders / "_manifest.json").write_bytes(b"y" * 500)  # not data
    assert landing_bytes() == 1000
    assert whole_stage_codegen() is False
    assert whole_stage_codegen(landing=SMALL_LAKE_BYTES) is True
    monkeypatch.setenv("SHOPLAKE_CODEGEN", "on")
    assert whole_stage_codegen() is True
    monkeypatch.setenv("SHOPLAKE_CODEGEN", "auto")
    monkeypatch.setenv("SHOPLAKE_SPARK_CONF", "spark.sql.codegen.wholeStage=true")
    assert whole_stage_codegen() is True
    monkeypatch.setenv("SHOPLAKE_CODEGEN", "sometimes")
    with pytest.raises(ValueError, match="SHOPLAKE_CODEGEN"):
        whole_stage_codegen()


def test_partitions_follow_the_lakes_size_unless_set_by_hand(monkeypatch) -> None:
    """A small lake's run: one shuffle and one log-replay partition; a larger one the
    session's; SHOPLAKE_SHUFFLE_PARTITIONS or SHOPLAKE_SPARK_CONF holds at any size."""
    from pipeline.runner import SHUFFLE_PARTITIONS, SNAPSHOT_PARTITIONS, partition_settings

    for name in ("SHOPLAKE_SHUFFLE_PARTITIONS", "SHOPLAKE_SPARK_CONF", "SPARK_MASTER"):
        monkeypatch.delenv(name, raising=False)
    assert partition_settings(small=True) == {SHUFFLE_PARTITIONS: "1", SNAPSHOT_PARTITIONS: "1"}
    assert partition_settings(small=False) == {SHUFFLE_PARTITIONS: "4", SNAPSHOT_PARTITIONS: "2"}
    monkeypatch.setenv("SPARK_MASTER", "spark://127.0.0.1:7077")
    assert partition_settings(small=False)[SHUFFLE_PARTITIONS] == "32"
    assert partition_settings(small=True)[SHUFFLE_PARTITIONS] == "1"
    monkeypatch.setenv("SHOPLAKE_SHUFFLE_PARTITIONS", "3")
    assert partition_settings(small=True)[SHUFFLE_PARTITIONS] == "3"
    monkeypatch.setenv("SHOPLAKE_SPARK_CONF", f"{SHUFFLE_PARTITIONS}=5;{SNAPSHOT_PARTITIONS}=6")
    assert partition_settings(small=True) == {SHUFFLE_PARTITIONS: "5", SNAPSHOT_PARTITIONS: "6"}


def test_a_run_sets_its_partitions_on_the_session(spark, monkeypatch) -> None:
    from pipeline.runner import (
        ONE_PARTITION_BYTES,
        SHUFFLE_PARTITIONS,
        SMALL_LAKE_BYTES,
        SNAPSHOT_PARTITIONS,
        _compile_or_interpret,
    )

    for name in ("SHOPLAKE_SHUFFLE_PARTITIONS", "SHOPLAKE_SPARK_CONF", "SPARK_MASTER"):
        monkeypatch.delenv(name, raising=False)
    keys = ("spark.sql.codegen.wholeStage", SHUFFLE_PARTITIONS, SNAPSHOT_PARTITIONS)
    before = {key: spark.conf.get(key) for key in keys}  # the later tests' session, as it was
    try:
        for landing in (ONE_PARTITION_BYTES, SMALL_LAKE_BYTES):  # a small lake, a large one
            _compile_or_interpret(spark, landing=landing)
            settings = spark.conf.get(SHUFFLE_PARTITIONS), spark.conf.get(SNAPSHOT_PARTITIONS)
            assert settings == ("4", "2"), landing
        _compile_or_interpret(spark, landing=0)
        settings = spark.conf.get(SHUFFLE_PARTITIONS), spark.conf.get(SNAPSHOT_PARTITIONS)
        assert settings == ("1", "1")
    finally:
        _compile_or_interpret(spark, landing=0)
        for key, value in before.items():
            spark.conf.set(key, value)


def test_a_short_run_uses_the_quick_compiler_unless_told_otherwise(monkeypatch) -> None:
    """`python -m pipeline run` on a small lake starts its JVM with the quick compiler only."""
    from pipeline.spark import GC_JVM_OPTIONS, SHORT_RUN_JVM_OPTIONS, _base_config, _jvm_options

    monkeypatch.delenv("SHOPLAKE_JVM_OPTIONS", raising=False)
    assert SHORT_RUN_JVM_OPTIONS in _jvm_options(short_run=True)
    assert "TieredStopAtLevel" not in _jvm_options(short_run=False)
    executors = _base_config(2, short_run=True)["spark.executor.extraJavaOptions"]
    assert SHORT_RUN_JVM_OPTIONS in executors and GC_JVM_OPTIONS in executors
    assert "SharedArchiveFile" not in executors  # the driver's class path, not theirs
    executors = _base_config(2, short_run=False)["spark.executor.extraJavaOptions"]
    assert "TieredStopAtLevel" not in executors
    monkeypatch.setenv("SHOPLAKE_JVM_OPTIONS", "-XX:TieredStopAtLevel=4 -Xss4m")
    options = _jvm_options(short_run=True)
    assert "-XX:TieredStopAtLevel=4 -Xss4m" in options
    assert SHORT_RUN_JVM_OPTIONS not in options


def test_a_step_target_runs_its_lineage_only() -> None:
    from pipeline.registry import steps_for

    names = {s.name for s in steps_for("gold.revenue_anomalies")}
    assert {"gold.revenue_anomalies", "gold.daily_sales", "silver.fact_sales"} <= names
    assert {"bronze.orders", "bronze.order_items", "silver.orders"} <= names
    assert not names & {"gold.customer_rfm", "gold.category_sales", "gold.sales_cells"}
    assert {s.name for s in steps_for("bronze.orders")} == {"bronze.orders"}
    with pytest.raises(ValueError, match="unknown target 'gold.nothing'"):
        steps_for("gold.nothing")


def test_ready_steps_start_largest_first(tmp_path) -> None:
    """With more steps ready than may run, those whose tables held most rows go first;
    a table that does not exist counts none, and ties keep the declared order."""
    import pyarrow as pa

    from pipeline import lake
    from pipeline.registry import steps_for
    from pipeline.runner import largest_first
    from tests.conftest import lake_at

    gold = {s.name: s for s in steps_for("gold")}
    with lake_at(tmp_path):
        for table, rows in (("daily_sales", 3), ("customer_rfm", 50), ("product_sales", 400)):
            data = pa.table({"n": pa.array(range(rows), pa.int64())})
            lake.write_arrow(lake.path("gold", table), data, "overwrite")
        names = [
            "gold.daily_sales",
            "gold.category_sales",
            "gold.customer_rfm",
            "gold.sales_cells",
            "gold.product_sales",
        ]
        order = [s.name for s in largest_first([gold[n] for n in names])]
    assert order == [
        "gold.product_sales",
        "gold.customer_rfm",
        "gold.daily_sales",
        "gold.category_sales",  # no table yet: 0 rows, declared before sales_cells
        "gold.sales_cells",
    ]
