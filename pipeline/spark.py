"""The one SparkSession factory.

Local by default (``local[*]``), sized for a small machine; ``SPARK_MASTER``
points it at a cluster and ``SPARK_REMOTE`` makes it a Spark Connect client.
Delta Lake and the Kafka connector come from the jars fetched by
``pipeline.jvm`` (no network at start-up).
"""

from __future__ import annotations

import os
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


def _base_config(shuffle_partitions: int) -> dict[str, str]:
    return {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        "spark.default.parallelism": str(shuffle_partitions),
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.adaptive.coalescePartitions.enabled": "true",
        "spark.sql.files.maxPartitionBytes": str(64 * 1024 * 1024),
        "spark.databricks.delta.snapshotPartitions": "2",
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
            filter(None, [f"-Dderby.system.home={CACHE_DIR / 'derby'}", _jvm_options()])
        ),
        "spark.log.level": "WARN",
    }


def _jvm_options() -> str:
    """SHOPLAKE_JVM_OPTIONS, plus the class-data-sharing archive when one was built for
    this JVM and these jars (``pipeline.jvm``): a fresh process loads Spark's classes
    from it instead of from the jars."""
    options = [spark_settings().jvm_options]
    archive = jvm.class_archive()
    if archive is not None:
        options.append(f"-XX:SharedArchiveFile={archive} -Xlog:cds=off -Xlog:cds+dynamic=off")
    return " ".join(filter(None, options))


def get_spark(app_name: str = "shoplake") -> SparkSession:
    """Return the process's SparkSession, creating it on first use."""
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
        for key, value in _base_config(partitions).items():
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
