"""The one SparkSession factory.

Local by default (``local[*]``), sized for a small machine; ``SPARK_MASTER``
points it at a cluster and ``SPARK_REMOTE`` makes it a Spark Connect client.
Delta Lake and the Kafka connector come from the jars fetched by
``pipeline.jvm`` (no network at start-up).
"""

from __future__ import annotations

import os
import re
import shutil
import threading

from pyspark.sql import SparkSession

from pipeline import jvm
from pipeline.config import CACHE_DIR, settings, spark_settings

_lock = threading.Lock()


class JavaMissingError(RuntimeError):
    pass


def _check_java() -> None:
    if os.environ.get("JAVA_HOME") or shutil.which("java"):
        return
    raise JavaMissingError(
        "Java 17 or newer is required to run Spark: install a JDK and put `java` on PATH "
        "(or set JAVA_HOME)."
    )


# A process that runs one very small lake and exits (``python -m pipeline run`` below
# SHORT_RUN_BYTES of landing files) spends most of its time in code the JVM has not
# compiled yet: its quick compiler alone gets there sooner (fresh 10k-order run, 3 MB,
# three interleaved pairs: 36.2/38.4/39.3 s -> 31.4/32.9/33.1 s). Over more data the
# optimising compiler pays off: an 80,000-order lake (24 MB) took 101 s with the quick
# compiler alone against 59 s. The room for compiled code is raised with it, as that
# compiler fills the default. The app's long-lived session keeps the default; the tests'
# sessions (many small lakes) take the quick compiler (tests/conftest.py).
SHORT_RUN_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=256m"
SHORT_RUN_BYTES = 6 * 1024 * 1024  # about 20,000 generated orders
SNAPSHOT_PARTITIONS = "2"  # Delta log replay: a run on a very small lake takes 1 (runner)
# Silver's refine persists every Bronze row with its fate (pipeline/silver/refine.py) and
# reads it back for the counts and each write. Compressing that cache costs more CPU than
# it saves: a JVM profile of a 1,000,000-order refine put 19 % of its samples in building
# the cache, half of them gathering the compression statistics (a boxed hash map per
# column). Uncompressed, Silver's full recompute at 1M took 4-5 % less, with the same
# peak (the heap is capped; a cache that does not fit spills to disk): docs/decisions.md.
CACHE_COMPRESSED = "false"
# HotSpot compiles no method of more than 8,000 bytes of bytecode (its HugeMethodLimit): it
# interprets it, many times slower. Spark's whole-stage code generation writes one method
# per stage and only gives up on one above this limit, whose default (65535) is Java's
# own maximum; Silver's parsing of an order line (four numbers, each checked, trimmed and
# cast) makes a stage beyond 8,000 bytes. At 8,000, as Spark's documentation advises on
# HotSpot, that stage runs as its operators' separate generated code, which is compiled:
# the four numbers of 2.96M Bronze order lines parsed in 5.3 JVM CPU seconds instead of
# 24.1; a warm 1M Silver+Gold recompute 92.6-102.3 -> 81.6-87.5 s (docs/decisions.md).
# Small lakes run without generated code (pipeline/runner.py), where it changes nothing.
HUGE_METHOD_LIMIT = "8000"
# Spark keeps the classes it generated and compiled in a cache keyed by their source, so a
# query it has planned before reuses its compiled class and the JIT's work on it. The cache
# holds 100 classes by default; one 1,000,000-order run generates about 500 (an increment
# 110 more), so each run evicted the last one's and compiled all of them again: Janino's
# compile on the driver, then HotSpot's compilers from scratch on the new classes, 30-38
# CPU seconds of every warm 1M run. With room for several runs' worth, a warm 1M full run
# compiled 8 classes instead of 522: 101.8 -> 81.6 s, its increment 50.0 -> 39.5 s
# (docs/decisions.md), with the same peak memory.
CODEGEN_CACHE_ENTRIES = "2048"
# Parquet dictionary-encodes every column by default: it hashes each value into the
# column's dictionary until the first page shows the dictionary does not pay, then
# re-encodes those values plain. For a column whose values are (nearly) all different that
# work buys nothing, in every file of every write; a JVM flight recording of a warm
# 1,000,000-order run put 8 % of its samples in Parquet's dictionaries. These columns are
# identifiers, hashes and event times, nearly unique per row in every table that has them:
# Spark writes them plain from the start. Low-cardinality columns (status, country,
# category, product_id...) keep their dictionaries. Warm 1M full runs 2-3 of a session:
# 84.1/77.6 -> 80.0/76.5 s, 157.9/144.5 -> 149.9/141.2 JVM CPU s, lake 325 -> 320 MB
# (docs/decisions.md).
PLAIN_COLUMNS = (
    "order_id",
    "customer_id",
    "customer_key",
    "order_ts",
    "updated_at",
    "email",
    "valid_from",
    "_raw",
    "_record_id",
    "record_id",
    "record_key",
    "raw_record",
    "_row_hash",
)


def _base_config(shuffle_partitions: int, short_run: bool = False) -> dict[str, str]:
    return {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        "spark.default.parallelism": str(shuffle_partitions),
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.adaptive.coalescePartitions.enabled": "true",
        "spark.sql.files.maxPartitionBytes": str(64 * 1024 * 1024),
        "spark.sql.inMemoryColumnarStorage.compressed": CACHE_COMPRESSED,
        "spark.sql.codegen.hugeMethodLimit": HUGE_METHOD_LIMIT,
        "spark.sql.codegen.cache.maxEntries": CODEGEN_CACHE_ENTRIES,
        "spark.sql.execution.replaceHashWithSortAgg": SORTED_AGGREGATION,
        "spark.databricks.delta.snapshotPartitions": SNAPSHOT_PARTITIONS,
        "spark.databricks.delta.optimizeWrite.enabled": "false",
        "spark.databricks.delta.autoCompact.enabled": "false",
        "spark.databricks.delta.stalenessLimit": "0",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        "spark.databricks.delta.retentionDurationCheck.enabled": "true",
        "spark.sql.streaming.stateStore.providerClass": (
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
        ),
        "spark.ui.showConsoleProgress": "false",
        "spark.ui.enabled": spark_settings().ui_enabled,
        "spark.ui.port": spark_settings().ui_port,
        "spark.ui.host": "127.0.0.1",
        "spark.driver.host": spark_settings().driver_host,
        "spark.driver.bindAddress": spark_settings().driver_bind,
        "spark.sql.warehouse.dir": str(CACHE_DIR / "spark-warehouse"),
        "spark.driver.extraJavaOptions": " ".join(
            filter(None, [f"-Dderby.system.home={CACHE_DIR / 'derby'}", _jvm_options(short_run)])
        ),
        # A cluster's executors (local mode has none: its tasks run in the driver's JVM).
        "spark.executor.extraJavaOptions": _jvm_options(short_run, class_archive=False),
        "spark.log.level": "WARN",
        **{f"spark.hadoop.parquet.enable.dictionary#{c}": "false" for c in PLAIN_COLUMNS},
    }


# An aggregation whose rows already come sorted by its grouping keys reads each key's rows
# in a run (a sort aggregation) instead of hashing every key. Spark leaves this off by
# default; it changes a plan only where the sort is already there. Silver's key check is
# such an aggregation (pipeline/silver/refine.py: stored_key): at 1,000,000 orders,
# silver.order_items from its refine's cache, warm, medians of five alternated passes,
# 3.68 -> 2.38 CPU s (docs/decisions.md, "Quality").
SORTED_AGGREGATION = "true"
# The garbage collector for the driver: the throughput collector. A run is batch work on
# a small heap (2 GB), where G1's concurrent bookkeeping costs CPU the two cores need for
# Spark. Warm 10,000-order runs, two sessions each way, runs 2-4 of each: median
# 16.3 -> 14.3 s full, 15.6 -> 12.5 s incremental, 28.8 -> 24.3 JVM CPU seconds a full run
# (docs/decisions.md, "Run shape"). It keeps the heap a large run grew committed until
# it is told to resize on an explicit collection, which the runner asks for after a
# large run (pipeline/runner.py: return_heap).
GC_JVM_OPTIONS = "-XX:+UseParallelGC -XX:+UseAdaptiveSizePolicyWithSystemGC"


def _jvm_options(short_run: bool = False, class_archive: bool = True) -> str:
    """SHOPLAKE_JVM_OPTIONS, plus the class-data-sharing archive when one was built for
    this JVM and these jars (``pipeline.jvm``): a fresh process loads Spark's classes
    from it instead of from the jars. ``short_run``: ``SHORT_RUN_JVM_OPTIONS``, unless
    SHOPLAKE_JVM_OPTIONS chooses the compiler itself; ``GC_JVM_OPTIONS`` unless it
    chooses the collector.

    A cluster's executors get all of these options except the archive
    (``class_archive=False``): it holds the driver's class path, not an executor's. A
    short run's executor is as short-lived as its driver: on the test suite's standalone
    cluster (one 1-core worker, 200 orders, `run all`, alternated) the run took 71.6/71.2 s
    with the executor's default compilers and 56.3/55.2 s with the quick one and this
    collector."""
    chosen = spark_settings().jvm_options
    options = [chosen]
    if not re.search(r"-XX:\+Use\w*GC\b", chosen):
        options.append(GC_JVM_OPTIONS)
    if short_run and "TieredStopAtLevel" not in chosen:
        options.append(SHORT_RUN_JVM_OPTIONS)
    archive = jvm.class_archive() if class_archive else None
    if archive is not None:
        options.append(f"-XX:SharedArchiveFile={archive} -Xlog:cds=off -Xlog:cds+dynamic=off")
    return " ".join(filter(None, options))


def get_spark(app_name: str = "shoplake", short_run: bool = False) -> SparkSession:
    """Return the process's SparkSession, creating it on first use.

    ``short_run``: the process runs one small lake and exits (``SHORT_RUN_JVM_OPTIONS``).
    """
    with _lock:
        active = SparkSession.getActiveSession()
        if active is not None:
            return active
        cfg = settings()
        if cfg.spark_remote:
            # Spark Connect: the server owns the jars and the Delta configuration.
            return SparkSession.builder.remote(cfg.spark_remote).appName(app_name).getOrCreate()
        _check_java()
        jvm.fetch("spark")
        master = cfg.spark_master or spark_settings().local_master
        local = master.startswith("local")
        partitions = spark_settings().partitions(local)
        builder = SparkSession.builder.master(master).appName(app_name)
        for key, value in _base_config(partitions, short_run).items():
            builder = builder.config(key, value)
        builder = builder.config("spark.jars", ",".join(jvm.jars("spark")))
        builder = builder.config(
            # 2g: a 1,000,000-order run peaks at 3.2 GB for the whole process tree (JVM
            # included) and takes ~10 % longer than with 3g, which peaks at 7 GB.
            "spark.driver.memory",
            spark_settings().driver_memory,
        )
        for key, value in spark_settings().extra_conf.items():
            builder = builder.config(key, value)
        session = builder.getOrCreate()
        session.sparkContext.setLogLevel("ERROR")
        return session
