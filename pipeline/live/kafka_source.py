"""The query's source: Spark's Kafka reader (with SASL/SSL) or the drop folder, one shape."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline import storage
from pipeline.config import kafka_security_options, settings
from pipeline.live.paths import drop_folder

DEFAULT_MAX_OFFSETS = 20000
DEFAULT_MAX_FILES = 50


def kafka_options() -> dict[str, str]:
    """Spark kafka source settings, with SASL/SSL for an external cluster."""
    cfg = settings()
    opts = {
        "kafka.bootstrap.servers": cfg.bootstrap_servers,
        # a broker restart must not fail the query: keep retrying offset look-ups
        "fetchOffset.numRetries": "60",
        "fetchOffset.retryIntervalMs": "1000",
        "kafka.request.timeout.ms": "20000",
        "kafka.default.api.timeout.ms": "30000",
    }
    sec = kafka_security_options()
    if "security_protocol" in sec:
        opts["kafka.security.protocol"] = sec["security_protocol"]
    if "sasl_mechanism" in sec:
        opts["kafka.sasl.mechanism"] = sec["sasl_mechanism"]
    if "sasl_username" in sec and "sasl_password" in sec:
        module = (
            "org.apache.kafka.common.security.plain.PlainLoginModule"
            if sec.get("sasl_mechanism", "PLAIN").upper() == "PLAIN"
            else "org.apache.kafka.common.security.scram.ScramLoginModule"
        )
        user = sec["sasl_username"].replace('"', '\\"')
        secret = sec["sasl_password"].replace('"', '\\"')
        opts["kafka.sasl.jaas.config"] = f'{module} required username="{user}" password="{secret}";'
    return opts


RAW_COLUMNS = ["value", "key", "topic", "partition", "offset", "kafka_timestamp", "source_file"]


def read_source(spark: SparkSession, source: str, max_per_batch: int | None = None) -> DataFrame:
    """The streaming DataFrame of raw records, one shape for both sources."""
    if source == "kafka":
        reader = spark.readStream.format("kafka")
        for key, value in kafka_options().items():
            reader = reader.option(key, value)
        raw = (
            reader.option("subscribe", settings().topic)
            .option("startingOffsets", "earliest")
            .option("maxOffsetsPerTrigger", str(max_per_batch or DEFAULT_MAX_OFFSETS))
            .load()
        )
        return raw.select(
            F.col("value").cast("string").alias("value"),
            F.col("key").cast("string").alias("key"),
            F.col("topic"),
            F.col("partition"),
            F.col("offset"),
            F.col("timestamp").alias("kafka_timestamp"),
            F.lit(None).cast("string").alias("source_file"),
        )
    folder = drop_folder()
    if (local := storage.local_path(folder)) is not None:
        local.mkdir(parents=True, exist_ok=True)
    raw = (
        spark.readStream.format("text")
        .option("maxFilesPerTrigger", str(max_per_batch or DEFAULT_MAX_FILES))
        .load(folder)
    )
    return raw.select(
        F.col("value"),
        F.lit(None).cast("string").alias("key"),
        F.lit(None).cast("string").alias("topic"),
        F.lit(None).cast("int").alias("partition"),
        F.lit(None).cast("long").alias("offset"),
        F.lit(None).cast("timestamp").alias("kafka_timestamp"),
        F.col("_metadata.file_path").alias("source_file"),
    )
