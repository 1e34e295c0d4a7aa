"""Spark's JVM starts from the class-data-sharing archive that setup builds (pipeline/jvm.py),
with the collector pipeline/spark.py chooses."""

from __future__ import annotations

import os
import subprocess
import sys
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
