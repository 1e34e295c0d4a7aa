"""Spark's JVM starts from the class-data-sharing archive that setup builds (pipeline/jvm.py),
with the collector pipeline/spark.py chooses."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

from pipeline import jvm
from pipeline.config import PROJECT_ROOT


def test_a_new_spark_jvm_loads_sparks_classes_from_the_archive(tmp_path: Path) -> None:
    archive = jvm.class_archive()
    assert archive is not None, "make setup builds the archive (python -m pipeline.jvm archive)"
    log = tmp_path / "loaded.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_")}
    # -Xshare:on: the JVM refuses to start unless it can map the archive for this class path.
    env.update(
        SHOPLAKE_JVM_OPTIONS=f"-Xshare:on -Xlog:class+load=info:file={log}",
        SHOPLAKE_LAKE=str(tmp_path / "lake"),
        SHOPLAKE_SPARK_UI="false",
    )
    code = "from pipeline.spark import get_spark; get_spark(short_run=True).range(3).count()"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # Classes of pyspark's own jars: from the archive, not the jars. (Lambdas are made at
    # run time, and the jars Spark adds itself, Delta's, load through Spark's own loader.)
    loaded = [line for line in log.read_text().splitlines() if " org.apache.spark." in line]
    shared = sum("source: shared objects file" in line for line in loaded)
    from_jars = sum("/pyspark/jars/" in line for line in loaded)
    assert shared > 3000 and from_jars < shared / 20, (shared, from_jars)


def test_a_spark_jvm_collects_with_the_throughput_collector(spark) -> None:
    """GC_JVM_OPTIONS reaches the driver: its collectors are the parallel ones, not G1's."""
    management = spark.sparkContext._jvm.java.lang.management.ManagementFactory
    names = {bean.getName() for bean in management.getGarbageCollectorMXBeans()}
    assert names == {"PS Scavenge", "PS MarkSweep"}, names
    # ... and may resize the heap on an explicit collection (runner.return_heap).
    hotspot = management.getPlatformMXBean(
        spark.sparkContext._jvm.java.lang.Class.forName(
            "com.sun.management.HotSpotDiagnosticMXBean"
        )
    )
    assert hotspot.getVMOption("UseAdaptiveSizePolicyWithSystemGC").getValue() == "true"


def test_delta_rs_allocator_reads_the_setting_pipeline_makes(tmp_path: Path) -> None:
    """pipeline sets delta-rs' jemalloc options before delta-rs loads (pipeline/__init__.py),
    and that jemalloc takes them: it prints the options it runs with when asked to."""
    import pipeline

    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    code = "import os, pipeline; print(os.environ['_RJEM_MALLOC_CONF'])"
    shown = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True
    )
    assert shown.stdout.strip() == pipeline.DELTA_RS_ALLOCATOR, shown.stderr[-2000:]
    env["_RJEM_MALLOC_CONF"] = pipeline.DELTA_RS_ALLOCATOR + ",stats_print:true"
    code = (
        "import pyarrow as pa, deltalake; "
        f"deltalake.write_deltalake({str(tmp_path / 't')!r}, pa.table({{'a': [1, 2]}}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Invalid conf" not in done.stderr, done.stderr[-2000:]
    for option in pipeline.DELTA_RS_ALLOCATOR.split(","):
        name, value = option.split(":")
        assert f"opt.{name}: {value}" in done.stderr, (option, done.stderr[:3000])


def _memory_cached(spark) -> int:
    return sum(int(info.memSize()) for info in spark.sparkContext._jsc.sc().getRDDStorageInfo())


def _cached_bytes(spark, df) -> int:
    """The bytes ``df``'s cache holds in memory once it is filled (beyond what other
    tests left cached in the shared session)."""
    before = _memory_cached(spark)
    cached = df.persist()
    try:
        cached.count()
        return _memory_cached(spark) - before
    finally:
        cached.unpersist(blocking=True)


def test_persisted_rows_are_cached_without_compression(spark) -> None:
    """CACHE_COMPRESSED reaches the session: a cache of one repeated text keeps every copy
    (the same rows cached compressed, as Spark's default would, shrink to a dictionary)."""
    from pyspark.sql import functions as F

    assert spark.conf.get("spark.sql.inMemoryColumnarStorage.compressed") == "false"
    rows = spark.range(20_000).select(F.repeat(F.lit("x"), 100).alias("text"))
    plain = _cached_bytes(spark, rows)
    spark.conf.set("spark.sql.inMemoryColumnarStorage.compressed", "true")
    try:
        compressed = _cached_bytes(spark, rows)
    finally:
        spark.conf.set("spark.sql.inMemoryColumnarStorage.compressed", "false")
    assert plain > 20_000 * 100 > 10 * compressed, (plain, compressed)


def _largest_generated_method(df) -> int:
    """The largest method (bytes of bytecode) of ``df``'s whole-stage generated code."""
    stages = df._jdf.queryExecution().debug().codegenToSeq()
    return max(int(stages.apply(i)._3().maxMethodCodeSize()) for i in range(stages.size()))


@contextmanager
def _generated_code(spark) -> Iterator[None]:
    """Whole-stage generated code on for the block, whatever a small-lake run left in the
    shared session (runner: NO_CODEGEN there), and the session's settings back after."""
    settings = {
        "spark.sql.codegen.wholeStage": "true",
        "spark.sql.codegen.factoryMode": "FALLBACK",
        "spark.sql.adaptive.enabled": "false",
    }
    before = {key: spark.conf.get(key) for key in settings}
    try:
        for key, value in settings.items():
            spark.conf.set(key, value)
        yield
    finally:
        for key, value in before.items():
            spark.conf.set(key, value)


def test_a_stage_too_large_for_the_jit_runs_unfused_with_the_same_rows(spark, tmp_path) -> None:
    """HUGE_METHOD_LIMIT reaches the session and is within HotSpot's own limit (8,000 bytes,
    above which the JVM interprets a method instead of compiling it); a stage whose
    generated method exceeds the limit runs as its operators' own code and gives the rows
    the one fused method gives (Silver's number parsing, on a file read as Bronze is)."""
    from pyspark.sql import functions as F

    from pipeline.silver.normalise import parse_decimal, parse_int
    from pipeline.spark import HUGE_METHOD_LIMIT

    limit = "spark.sql.codegen.hugeMethodLimit"
    assert spark.conf.get(limit) == HUGE_METHOD_LIMIT and int(HUGE_METHOD_LIMIT) <= 8000
    lines = [("1", "2", "9.50", ""), (" 3 ", "x", "1e2", "12.5"), (None, "7", "-1", "abc")]
    spark.createDataFrame(lines, "a string, b string, c string, d string").write.parquet(
        str(tmp_path / "lines")
    )
    raw = spark.read.parquet(str(tmp_path / "lines"))  # columnar, as Bronze is read
    parsed = raw.select(
        "*",
        parse_int(F.col("a")).alias("a_int"),
        parse_int(F.col("b")).alias("b_int"),
        parse_decimal(F.col("c"), 18, 4).alias("c_dec"),
        parse_decimal(F.col("d"), 9, 4).alias("d_dec"),
    )
    kept_limit = spark.conf.get(limit)
    rows = {}
    try:
        with _generated_code(spark):
            # A limit below the stage's method: the stage certainly falls back.
            tiny = 100
            assert _largest_generated_method(parsed) > tiny
            for name, value in (("unfused", str(tiny)), ("fused", "65535")):
                spark.conf.set(limit, value)
                rows[name] = sorted(parsed.collect(), key=str)
    finally:
        spark.conf.set(limit, kept_limit)
    assert rows["unfused"] == rows["fused"]
    by_a = {row["a"]: row for row in rows["fused"]}
    assert by_a[" 3 "]["a_int"] == 3 and by_a["1"]["c_dec"] == Decimal("9.5000")
    assert by_a[" 3 "]["b_int"] is None and by_a["1"]["d_dec"] is None


def test_generated_code_outlives_a_runs_worth_of_other_queries(spark) -> None:
    """CODEGEN_CACHE_ENTRIES reaches the session: a query planned again after more other
    queries than Spark's default cache holds (100) reuses its compiled class instead of
    being compiled again (a 1,000,000-order run generates about 500 classes)."""
    from pyspark.sql import functions as F

    from pipeline.spark import CODEGEN_CACHE_ENTRIES

    assert spark.conf.get("spark.sql.codegen.cache.maxEntries") == CODEGEN_CACHE_ENTRIES
    compiled = spark._jvm.org.apache.spark.metrics.source.CodegenMetrics.METRIC_COMPILATION_TIME()

    def query(k: int):  # an integer literal is written into the generated source
        return spark.range(3).select((F.col("id") * F.lit(k) + F.lit(1)).alias("v"))

    with _generated_code(spark):
        first = [row["v"] for row in query(7919).collect()]
        start = compiled.getCount()
        others = [query(k).collect()[2]["v"] for k in range(1000, 1130)]
        assert compiled.getCount() - start >= 130  # each of them was compiled
        settled = compiled.getCount()
        again = [row["v"] for row in query(7919).collect()]
        recompiled = compiled.getCount() - settled
    assert first == again == [1, 7920, 15839]
    assert others[0] == 2001
    assert recompiled == 0


def test_nearly_unique_columns_are_written_without_a_dictionary(spark, tmp_path) -> None:
    """PLAIN_COLUMNS reaches Spark's Parquet writer (a Delta write, as every Spark write of
    the lake is): such a column is stored plain even where a dictionary would pay (here 50
    values repeated; nearly unique values, as in the lake, fall back to plain either way
    once the first page is written), any other column keeps its dictionary. Each name is a
    column the catalog declares, so a renamed column cannot leave it behind."""
    import glob

    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    from pipeline import catalog
    from pipeline.spark import PLAIN_COLUMNS

    declared = {c.name for t in catalog.tables() for c in t.columns}
    assert set(PLAIN_COLUMNS) <= declared, set(PLAIN_COLUMNS) - declared
    rows = spark.range(5_000).select(
        F.format_string("ORD-%06d", F.col("id") % 50).alias("order_id"),
        F.format_string("REC-%06d", F.col("id") % 50).alias("record_id"),
        F.element_at(
            F.array(F.lit("paid"), F.lit("shipped")), (F.col("id") % 2 + 1).cast("int")
        ).alias("status"),
    )
    rows.coalesce(1).write.format("delta").save(str(tmp_path / "t"))
    (path,) = glob.glob(str(tmp_path / "t" / "*.parquet"))
    group = pq.ParquetFile(path).metadata.row_group(0)
    encodings = {
        group.column(i).path_in_schema: set(group.column(i).encodings)
        for i in range(group.num_columns)
    }
    dictionary = {"PLAIN_DICTIONARY", "RLE_DICTIONARY"}
    assert not encodings["order_id"] & dictionary, encodings
    assert not encodings["record_id"] & dictionary, encodings
    assert encodings["status"] & dictionary, encodings
