"""The one live Structured Streaming query, exactly once end to end.

Source: Kafka (Spark's own kafka source) or the drop folder <lake>/stream_drop
(JSON lines). Sink: ``foreachBatch``, where each micro-batch writes, in order,

1. bronze.order_events   every raw record                  append, idempotent by batch
2. silver.quarantine     invalid events with their rules   append, idempotent by batch
3. gold.dq_results       the event rules' counts           append, idempotent by batch
4. silver.order_events   first delivery of each valid event MERGE, insert-only on event_id
5. gold.live_sales_minute the minutes this batch touched    MERGE on window_start,
                                                            recomputed from step 4
6. gold.live_alerts      minutes the watermark closed      MERGE, recomputed from step 5
7. the query's watermark state                            overwrite, idempotent by batch

Why this is exact. Spark's checkpoint (<lake>/_checkpoints/live/<source>/spark)
replays a micro-batch whose commit it did not record, with the same offsets or
files. Appends carry Delta's ``txnAppId`` (the query id, stable across
restarts) and ``txnVersion`` (the batch id), so Delta skips an append it
already committed. The event store MERGE inserts only event_ids it does not
hold, so a replay inserts nothing twice, and the gold tables are recomputed
from the store, not incremented, so writing them again gives the same rows.
The watermark a batch uses is kept with the id of the batch that moved it,
so a replayed batch sees the watermark it saw the first time.

Watermark (DESIGN.md 'Live windows'): max event_ts of valid events seen in
earlier batches minus 2 minutes. An event older than that is late: it stays in
Bronze, is counted by the dq rule `within_watermark` and is not aggregated, as
Spark's own watermark would drop it; so a closed minute never changes again,
and alerts are evaluated once per minute, when it closes. Duplicates are found
against the store's events newer than the watermark minus 2 minutes (the state
``dropDuplicatesWithinWatermark`` would hold), so the lookup stays bounded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.streaming import StreamingQuery

from pipeline.config import kafka_security_options, settings
from pipeline.live import events as ev
from pipeline.quality.expectations import (
    QUARANTINE_RULES,
    RuleCount,
    count_failures,
    flag,
    is_quarantined,
)

SOURCES = ("kafka", "files")
QUERY_PREFIX = "shoplake_live_"
DEFAULT_TRIGGER_SECONDS = 1.0
DEFAULT_MAX_OFFSETS = 20000
DEFAULT_MAX_FILES = 50
WATERMARK = dt.timedelta(seconds=ev.WATERMARK_SECONDS)
MAX_ALERT_SPAN = dt.timedelta(days=1)

BRONZE = ("bronze", "order_events")
STORE = ("silver", "order_events")
QUARANTINE = ("silver", "quarantine")
DQ = ("gold", "dq_results")
GOLD = ("gold", "live_sales_minute")
ALERTS = ("gold", "live_alerts")

DQ_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType()),
        T.StructField("layer", T.StringType()),
        T.StructField("table", T.StringType()),
        T.StructField("rule", T.StringType()),
        T.StructField("action", T.StringType()),
        T.StructField("rows_checked", T.LongType()),
        T.StructField("rows_failed", T.LongType()),
        T.StructField("pass_rate", T.DoubleType()),
        T.StructField("checked_at", T.TimestampType()),
    ]
)
ALERT_SCHEMA = T.StructType(
    [
        T.StructField("window_start", T.TimestampType()),
        T.StructField("metric", T.StringType()),
        T.StructField("value", T.DoubleType()),
        T.StructField("baseline", T.DoubleType()),
        T.StructField("z_score", T.DoubleType()),
        T.StructField("kind", T.StringType()),
    ]
)
GOLD_SCHEMA = T.StructType(
    [
        T.StructField("window_start", T.TimestampType()),
        T.StructField("window_end", T.TimestampType()),
        T.StructField("orders", T.LongType()),
        T.StructField("units", T.LongType()),
        T.StructField("net_revenue", ev.MONEY),
        T.StructField("avg_order_value", ev.MONEY),
    ]
)


class StreamError(RuntimeError):
    """The live query could not start or failed; the message says why."""


# ---------------------------------------------------------------- locations


def table_path(layer_table: tuple[str, str]) -> str:
    return settings().table_path(*layer_table)


def checkpoint_root(source: str) -> str:
    return f"{settings().lake.rstrip('/')}/_checkpoints/live/{source}"


def drop_folder() -> str:
    return f"{settings().lake.rstrip('/')}/stream_drop"


def _resolve_source(source: str | None) -> str:
    chosen = source or settings().stream_source
    if chosen not in SOURCES:
        raise StreamError(f"unknown stream source {chosen!r}: use kafka or files")
    return chosen


# ---------------------------------------------------------------- source


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
    if "://" not in folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
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


# ---------------------------------------------------------------- batch writer


@dataclass
class BatchReport:
    batch_id: int
    rows: int = 0
    quarantined: int = 0
    duplicates: int = 0
    late: int = 0
    inserted: int = 0
    windows: int = 0
    alerts: int = 0
    watermark: dt.datetime | None = None
    seconds: float = 0.0
    finished_at: float = 0.0


def _is_delta(spark: SparkSession, path: str) -> bool:
    try:
        return DeltaTable.isDeltaTable(spark, path)
    except Exception:
        return False


def _ensure_table(spark: SparkSession, path: str, schema: T.StructType) -> None:
    if not _is_delta(spark, path):
        spark.createDataFrame([], schema).write.format("delta").mode("append").save(path)


def _floor_minute(ts: dt.datetime) -> dt.datetime:
    return ts.replace(second=0, microsecond=0)


# Instants cross between Python and Spark as epoch microseconds: a naive datetime
# would be read in the Python process's local zone, whatever Spark's session says.
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _micros(ts: dt.datetime) -> int:
    return (ts - _EPOCH) // dt.timedelta(microseconds=1)


def _from_micros(value: int | None) -> dt.datetime | None:
    return None if value is None else _EPOCH + dt.timedelta(microseconds=int(value))


def _ts(ts: dt.datetime) -> Column:
    return F.timestamp_micros(F.lit(_micros(ts)))


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class BatchWriter:
    """The foreachBatch function: one micro-batch, written so that a replay changes nothing.

    Spark replays at most one batch, the first one of a run (the batch that was
    in flight when the previous run stopped). So the first batch of each run
    asks every append table whether its rows for this batch label are already
    committed; later batches of the run are new for certain and append
    directly. The event store needs no check: rows whose event_id it holds are
    not appended again, so a replayed batch finds its own events there.
    """

    def __init__(self, source: str, fault: Callable[[str, int], None] | None = None):
        self.source = source
        self.fault = fault
        self.app_id: str | None = None
        self._app_ready = threading.Event()
        self.paths = {name: table_path(t) for name, t in _TABLES.items()}
        self.reports: list[BatchReport] = []
        self.watermark: dt.datetime | None = None
        self.lock = threading.Lock()
        self._first_of_run = True
        self._max_event_ts: dt.datetime | None = None
        self._known_tables: set[str] = set()

    def set_app_id(self, query_id: str) -> None:
        """Called after every (re)start: the next batch may be a replay."""
        self.app_id = query_id.replace("-", "")[:8]
        self._first_of_run = True
        self._app_ready.set()

    def _hook(self, step: str, batch_id: int) -> None:
        if self.fault is not None:
            self.fault(step, batch_id)

    def _label(self, batch_id: int) -> str:
        return f"live-{self.source}-{self.app_id}-{batch_id:06d}"

    # -------------------------------------------------------- idempotency helpers

    def _exists(self, spark: SparkSession, name: str) -> bool:
        if name in self._known_tables:
            return True
        found = _is_delta(spark, self.paths[name])
        if found:
            self._known_tables.add(name)
        return found

    def _committed(self, spark: SparkSession, name: str, column: str, label: str) -> bool:
        """Did an earlier attempt of this batch commit its rows to this table?"""
        if not self._exists(spark, name):
            return False
        rows = spark.read.format("delta").load(self.paths[name])
        return bool(rows.filter(F.col(column) == label).limit(1).count())

    def _append(
        self, spark: SparkSession, df: DataFrame, name: str, column: str, label: str
    ) -> None:
        if self._first_of_run and self._committed(spark, name, column, label):
            return
        df.write.format("delta").mode("append").option("mergeSchema", "true").save(self.paths[name])
        self._known_tables.add(name)

    def _max_from_store(self, spark: SparkSession, label: str) -> dt.datetime | None:
        """Max event_ts of the events earlier batches inserted (this batch's excluded)."""
        if not self._exists(spark, "store"):
            return None
        store = spark.read.format("delta").load(self.paths["store"])
        value = (
            store.filter(F.col("_batch_id") != label)
            .agg(F.max(F.unix_micros("event_ts")))
            .first()[0]
        )
        return _from_micros(value)

    # -------------------------------------------------------- the batch

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        if not self._app_ready.wait(120):
            raise StreamError("the live query started without an id")
        started = time.monotonic()
        spark = batch.sparkSession
        report = BatchReport(batch_id=batch_id)
        now = _utcnow()
        label = self._label(batch_id)
        if self._first_of_run:
            max_before = self._max_from_store(spark, label)
        else:
            max_before = self._max_event_ts
        watermark = max_before - WATERMARK if max_before is not None else None

        record_id = F.when(
            F.col("topic").isNotNull(),
            F.concat_ws("/", F.col("topic"), F.col("partition"), F.col("offset")),
        ).otherwise(
            F.concat(
                F.col("source_file"),
                F.lit(":"),
                F.monotonically_increasing_id().cast("string"),
            )
        )
        raw = batch.select(
            *[F.col(c) for c in RAW_COLUMNS],
            ev.event_id_of(F.col("value")).alias("event_id"),
            record_id.alias("_record_id"),
            F.lit(label).alias("_batch_id"),
            _ts(now).alias("_ingested_at"),
        ).persist()
        try:
            report.rows = raw.count()
            if report.rows:
                self._append(spark, raw, "bronze", "_batch_id", label)
                self._hook("bronze", batch_id)
                parsed = flag(ev.parse_events(raw.drop("event_id")), ev.EXPECTATIONS).persist()
                try:
                    max_after = self._process(
                        spark, parsed, batch_id, label, now, watermark, max_before, report
                    )
                finally:
                    parsed.unpersist()
                self._max_event_ts = max_after
            else:
                self._max_event_ts = max_before
            self._first_of_run = False
        finally:
            raw.unpersist()
            report.seconds = time.monotonic() - started
            report.finished_at = time.time()
            with self.lock:
                self.reports = [*self.reports[-199:], report]

    def _process(
        self,
        spark: SparkSession,
        parsed: DataFrame,
        batch_id: int,
        label: str,
        now: dt.datetime,
        watermark: dt.datetime | None,
        max_before: dt.datetime | None,
        report: BatchReport,
    ) -> dt.datetime | None:
        """Steps 2-6 of the module docstring; returns the max event_ts after this batch."""
        rules = count_failures(parsed, ev.EXPECTATIONS)
        quarantined = parsed.filter(is_quarantined())
        report.quarantined = quarantined.count()
        if report.quarantined:
            self._append(spark, quarantine_rows(quarantined), "quarantine", "batch_id", label)
        self._hook("quarantine", batch_id)

        valid = parsed.filter(~is_quarantined())
        first, _ = ev.first_per_event(valid, ["partition", "offset", "_record_id"])
        events = ev.event_totals(first, keep=["_record_id", "_batch_id", "_ingested_at"])
        late = F.col("event_ts") < _ts(watermark) if watermark else F.lit(False)
        flagged = events.withColumn("_late", late)
        if self._exists(spark, "store"):
            # the state dropDuplicatesWithinWatermark would hold: events newer than
            # the watermark minus its delay (Delta skips older files by their stats)
            seen = spark.read.format("delta").load(self.paths["store"])
            if watermark is not None:
                seen = seen.filter(F.col("event_ts") > _ts(watermark - WATERMARK))
            flagged = flagged.join(
                seen.select("event_id").distinct().withColumn("_seen", F.lit(True)),
                "event_id",
                "left",
            )
        else:
            flagged = flagged.withColumn("_seen", F.lit(None).cast("boolean"))
        flagged = flagged.persist()
        try:
            totals = flagged.agg(
                F.count(F.lit(1)).alias("distinct"),
                F.sum(F.col("_late").cast("int")).alias("late"),
                F.sum((~F.col("_late") & F.col("_seen").isNotNull()).cast("int")).alias("seen"),
                F.max(F.when(~F.col("_late"), F.unix_micros("event_ts"))).alias("max_us"),
                F.collect_set(F.when(~F.col("_late"), F.unix_micros("window_start"))).alias(
                    "windows"
                ),
            ).first()
            n_valid = report.rows - report.quarantined
            distinct = int(totals["distinct"] or 0)
            seen_count = int(totals["seen"] or 0)
            report.late = int(totals["late"] or 0)
            report.duplicates = (n_valid - distinct) + seen_count
            report.inserted = distinct - report.late - seen_count
            windows = sorted(totals["windows"] or [])

            dq = _dq_rows(spark, label, now, rules, n_valid, distinct, report)
            self._append(spark, dq, "dq", "run_id", label)
            self._hook("dq", batch_id)

            if report.inserted:
                new = flagged.filter(~F.col("_late") & F.col("_seen").isNull())
                new.drop("_late", "_seen").write.format("delta").mode("append").save(
                    self.paths["store"]
                )
                self._known_tables.add("store")
            self._hook("store", batch_id)
        finally:
            flagged.unpersist()

        # windows holds every minute an on-time event of this batch falls in, also
        # those of repeats: on a replay they are this batch's own, already stored
        report.windows = len(windows)
        if windows:
            self._merge_gold(spark, windows)
        self._hook("gold", batch_id)

        candidates = [t for t in (max_before, _from_micros(totals["max_us"])) if t is not None]
        max_after = max(candidates) if candidates else None
        new_watermark = max_after - WATERMARK if max_after is not None else None
        if new_watermark is not None and new_watermark != watermark:
            report.alerts = self._evaluate_alerts(spark, watermark, new_watermark)
        self._hook("alerts", batch_id)
        report.watermark = new_watermark
        self.watermark = new_watermark
        return max_after

    # -------------------------------------------------------- merges

    def _merge_gold(self, spark: SparkSession, windows: list[int]) -> None:
        """windows: the touched minutes as epoch microseconds."""
        store = spark.read.format("delta").load(self.paths["store"])
        starts = F.unix_micros("window_start")
        touched = store.filter(
            (F.col("window_start") >= F.timestamp_micros(F.lit(windows[0])))
            & (F.col("window_start") <= F.timestamp_micros(F.lit(windows[-1])))
            & starts.isin(*windows)
        )
        fresh = ev.minute_sales(touched)
        if not self._exists(spark, "gold"):
            _ensure_table(spark, self.paths["gold"], GOLD_SCHEMA)
        (
            DeltaTable.forPath(spark, self.paths["gold"])
            .alias("t")
            .merge(fresh.alias("s"), "t.window_start = s.window_start")
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
            .execute()
        )

    def _evaluate_alerts(
        self, spark: SparkSession, old: dt.datetime | None, new: dt.datetime
    ) -> int:
        """Alerts for the minutes that closed between the old and the new watermark."""
        if not _is_delta(spark, self.paths["gold"]):
            return 0
        last_closed = _floor_minute(new) - dt.timedelta(minutes=1)
        gold = spark.read.format("delta").load(self.paths["gold"])
        first_ever = _from_micros(gold.agg(F.min(F.unix_micros("window_start"))).first()[0])
        if first_ever is None:
            return 0
        first_eval = _floor_minute(old) if old is not None else first_ever
        first_eval = max(first_eval, first_ever, last_closed - MAX_ALERT_SPAN)
        if first_eval > last_closed:
            return 0
        series_start = max(first_ever, first_eval - dt.timedelta(minutes=ev.BASELINE_MINUTES))
        minutes = gold.filter(
            (F.col("window_start") >= _ts(series_start))
            & (F.col("window_start") <= _ts(last_closed))
        )
        series = ev.zero_filled(minutes, _ts(series_start), _ts(last_closed))
        alerts = ev.minute_alerts(series, _ts(first_eval)).persist()
        try:
            found = alerts.count()
            if not found:
                return 0
            _ensure_table(spark, self.paths["alerts"], ALERT_SCHEMA)
            self._merge_alerts(spark, alerts)
        finally:
            alerts.unpersist()
        return found

    def _merge_alerts(self, spark: SparkSession, alerts: DataFrame) -> None:
        frame = alerts.select(*[F.col(f.name).cast(f.dataType) for f in ALERT_SCHEMA.fields])
        (
            DeltaTable.forPath(spark, self.paths["alerts"])
            .alias("t")
            .merge(
                frame.alias("s"),
                "t.window_start = s.window_start AND t.metric = s.metric AND t.kind = s.kind",
            )
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
            .execute()
        )


_TABLES = {
    "bronze": BRONZE,
    "store": STORE,
    "quarantine": QUARANTINE,
    "dq": DQ,
    "gold": GOLD,
    "alerts": ALERTS,
}


def quarantine_rows(quarantined: DataFrame) -> DataFrame:
    """silver.quarantine's shape (DESIGN.md section 4) for invalid events."""
    key = F.coalesce(F.col("event_id"), F.col("order_id"), F.col("_record_id"))
    return quarantined.select(
        F.lit("order_events").alias("source_table"),
        key.alias("record_key"),
        F.col(QUARANTINE_RULES).alias("rules"),
        F.col("value").alias("raw_record"),
        F.col("_batch_id").alias("batch_id"),
        F.col("_ingested_at").alias("quarantined_at"),
        F.coalesce(F.col("source_file"), F.col("topic")).alias("source_file"),
        F.col("_record_id").alias("record_id"),
    )


def _dq_rows(
    spark: SparkSession,
    run_id: str,
    now: dt.datetime,
    rules: list[RuleCount],
    n_valid: int,
    distinct: int,
    report: BatchReport,
) -> DataFrame:
    counts = [*rules]
    counts.append(RuleCount("unique_event_id", "warn", n_valid, report.duplicates))
    counts.append(RuleCount("within_watermark", "warn", distinct, report.late))
    rows = [
        (
            run_id,
            "live",
            "order_events",
            c.rule,
            c.action,
            int(c.rows_checked),
            int(c.rows_failed),
            float(c.pass_rate),
            now,
        )
        for c in counts
    ]
    return spark.createDataFrame(rows, DQ_SCHEMA)


# ---------------------------------------------------------------- query lifecycle


class _ProcessLock:
    """A lock file per checkpoint, so two processes never run the same query."""

    def __init__(self, root: str):
        self.handle = None
        self.path = None if "://" in root else Path(root) / ".lock"

    def acquire(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StreamError(
                f"the live query on this checkpoint already runs in {holder}; stop it first"
            ) from None
        import os

        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self.handle = handle

    def release(self) -> None:
        if self.handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.handle, fcntl.LOCK_UN)
                self.handle.close()
            self.handle = None


@dataclass
class LiveQuery:
    source: str
    query: StreamingQuery
    writer: BatchWriter
    lock: _ProcessLock
    available_now: bool
    started_at: float = field(default_factory=time.time)
    restarts: int = 0
    stop_requested: bool = False
    error: str | None = None
    supervisor: threading.Thread | None = None


def _start_query(
    spark: SparkSession,
    source: str,
    available_now: bool,
    trigger_seconds: float,
    max_per_batch: int | None,
    fault: Callable[[str, int], None] | None,
    writer: BatchWriter | None = None,
) -> tuple[StreamingQuery, BatchWriter]:
    writer = writer or BatchWriter(source, fault)
    checkpoint = f"{checkpoint_root(source)}/spark"
    stream = read_source(spark, source, max_per_batch)
    write = (
        stream.writeStream.queryName(f"{QUERY_PREFIX}{source}")
        .option("checkpointLocation", checkpoint)
        .foreachBatch(writer)
    )
    if available_now:
        write = write.trigger(availableNow=True)
    else:
        write = write.trigger(processingTime=f"{trigger_seconds} seconds")
    try:
        query = write.start()
    except Exception as exc:
        raise StreamError(f"could not start the live query: {_short(exc)}") from exc
    writer.set_app_id(str(query.id))
    return query, writer


def _short(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("StreamError:", "BrokerError:", "Exception:", "Error:"):
        for line in text.splitlines():
            if marker in line and "Traceback" not in line:
                return line.strip()[:500]
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:500]


_current: LiveQuery | None = None
_lock = threading.Lock()


def _active_live_query(spark: SparkSession) -> StreamingQuery | None:
    for query in spark.streams.active:
        if (query.name or "").startswith(QUERY_PREFIX):
            return query
    return None


def start_background(
    spark: SparkSession,
    source: str | None = None,
    available_now: bool = False,
    trigger_seconds: float = DEFAULT_TRIGGER_SECONDS,
    max_per_batch: int | None = None,
    max_restarts: int = 20,
    fault: Callable[[str, int], None] | None = None,
) -> dict[str, Any]:
    """Start the live query in this process unless one already runs; returns status()."""
    global _current
    chosen = _resolve_source(source)
    with _lock:
        if _current is not None and not _current.stop_requested and _alive(_current):
            return status()
        if _active_live_query(spark) is not None:
            return status()
        lock = _ProcessLock(checkpoint_root(chosen))
        lock.acquire()
        try:
            query, writer = _start_query(
                spark, chosen, available_now, trigger_seconds, max_per_batch, fault
            )
        except Exception:
            lock.release()
            raise
        live = LiveQuery(chosen, query, writer, lock, available_now)
        live.supervisor = threading.Thread(
            target=_supervise,
            args=(spark, live, trigger_seconds, max_per_batch, max_restarts),
            name="shoplake-live-supervisor",
            daemon=True,
        )
        _current = live
        live.supervisor.start()
    return status()


def _alive(live: LiveQuery) -> bool:
    return live.query.isActive or (
        live.supervisor is not None and live.supervisor.is_alive() and not live.stop_requested
    )


def _supervise(
    spark: SparkSession,
    live: LiveQuery,
    trigger_seconds: float,
    max_per_batch: int | None,
    max_restarts: int,
) -> None:
    """Restart the query after a failure (a broker restart, a lost connection)."""
    backoff = 2.0
    while not live.stop_requested:
        try:
            live.query.awaitTermination()
        except Exception as exc:
            live.error = _short(exc)
        if live.stop_requested:
            break
        failure = live.query.exception()
        if failure is None:
            break  # availableNow finished
        live.error = _short(failure)
        if live.restarts >= max_restarts:
            break
        time.sleep(backoff)
        backoff = min(backoff * 2, 30.0)
        if live.stop_requested:
            break
        try:
            live.query, _ = _start_query(
                spark,
                live.source,
                live.available_now,
                trigger_seconds,
                max_per_batch,
                live.writer.fault,
                live.writer,
            )
            live.restarts += 1
        except Exception as exc:
            live.error = _short(exc)
            live.restarts += 1
    live.lock.release()


def stop(timeout: float = 120.0) -> dict[str, Any]:
    """Stop the live query of this process (a batch in flight finishes first)."""
    with _lock:
        live = _current
        if live is None:
            return status()
        live.stop_requested = True
        with contextlib.suppress(Exception):
            live.query.stop()
        if live.supervisor is not None:
            live.supervisor.join(timeout)
        live.lock.release()
    return status()


def wait(timeout: float | None = None) -> bool:
    """Wait for the background query to end (availableNow); True if it ended."""
    live = _current
    if live is None:
        return True
    if live.supervisor is not None:
        live.supervisor.join(timeout)
        return not live.supervisor.is_alive()
    return True


def _progress_dict(query: StreamingQuery | None) -> dict[str, Any] | None:
    if query is None:
        return None
    progress = query.lastProgress
    if progress is None:
        return None
    return json.loads(progress.json()) if hasattr(progress, "json") else dict(progress)


def consumer_lag(progress: dict[str, Any] | None, timeout: float = 3.0) -> int | None:
    """End offsets of the topic minus the offsets the query has processed."""
    if not progress or not progress.get("sources"):
        return None
    end = progress["sources"][0].get("endOffset")
    if isinstance(end, str):
        with contextlib.suppress(ValueError):
            end = json.loads(end)
    if not isinstance(end, dict):
        return None
    processed = {(t, int(p)): int(o) for t, parts in end.items() for p, o in parts.items()}
    latest = topic_end_offsets(sorted({t for t, _ in processed}), timeout)
    if latest is None:
        return None
    return sum(max(0, latest.get(tp, 0) - processed.get(tp, 0)) for tp in latest)


def topic_end_offsets(topics: list[str], timeout: float = 3.0) -> dict[tuple[str, int], int] | None:
    from kafka import KafkaConsumer, TopicPartition

    from pipeline.live.broker import client_options

    try:
        consumer = KafkaConsumer(
            **client_options(),
            client_id="shoplake-lag",
            request_timeout_ms=int(timeout * 1000) + 1000,
            api_version_auto_timeout_ms=int(timeout * 1000),
        )
    except Exception:
        return None
    try:
        parts = []
        for topic in topics:
            for p in consumer.partitions_for_topic(topic) or []:
                parts.append(TopicPartition(topic, p))
        if not parts:
            return {}
        ends = consumer.end_offsets(parts, timeout_ms=int(timeout * 1000))
        return {(tp.topic, tp.partition): int(o) for tp, o in ends.items()}
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            consumer.close()


def status(with_lag: bool = True) -> dict[str, Any]:
    """What the page and the CLI show about the live query."""
    live = _current
    out: dict[str, Any] = {
        "active": False,
        "source": None,
        "query_id": None,
        "available_now": None,
        "restarts": 0,
        "error": None,
        "batches": 0,
        "last_batch_id": None,
        "input_rows_per_second": None,
        "processed_rows_per_second": None,
        "batch_duration_ms": None,
        "watermark": None,
        "last_batch_age_seconds": None,
        "consumer_lag": None,
    }
    if live is None:
        return out
    out.update(
        active=bool(live.query.isActive),
        source=live.source,
        query_id=str(live.query.id),
        available_now=live.available_now,
        restarts=live.restarts,
        error=live.error,
    )
    with live.writer.lock:
        reports = list(live.writer.reports)
    out["batches"] = len(reports)
    if reports:
        last = reports[-1]
        out["last_batch_id"] = last.batch_id
        out["last_batch_age_seconds"] = round(time.time() - last.finished_at, 1)
        out["last_batch_rows"] = last.rows
    if live.writer.watermark is not None:
        out["watermark"] = live.writer.watermark.strftime("%Y-%m-%d %H:%M:%S UTC")
    progress = _progress_dict(live.query)
    if progress:
        out["input_rows_per_second"] = _round(progress.get("inputRowsPerSecond"))
        out["processed_rows_per_second"] = _round(progress.get("processedRowsPerSecond"))
        out["batch_duration_ms"] = (progress.get("durationMs") or {}).get("triggerExecution")
        if live.source == "kafka" and with_lag:
            out["consumer_lag"] = consumer_lag(progress)
    return out


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)


# ---------------------------------------------------------------- foreground (CLI)


@dataclass
class RunSummary:
    source: str
    batches: int
    rows: int
    quarantined: int
    duplicates: int
    late: int
    inserted: int
    seconds: float

    def line(self) -> str:
        return (
            f"stream {self.source}: {self.batches} batches, {self.rows} records, "
            f"{self.inserted} new events, {self.duplicates} duplicates, "
            f"{self.quarantined} quarantined, {self.late} late in {self.seconds:.1f}s"
        )


def run_foreground(
    source: str | None = None,
    available_now: bool = True,
    seconds: float | None = None,
    spark: SparkSession | None = None,
    max_per_batch: int | None = None,
    trigger_seconds: float = DEFAULT_TRIGGER_SECONDS,
    progress: Callable[[BatchReport], None] | None = None,
    fault: Callable[[str, int], None] | None = None,
) -> RunSummary:
    """Run the query here until availableNow drains the source or `seconds` pass."""
    from pipeline.spark import get_spark

    chosen = _resolve_source(source)
    if not available_now and seconds is None:
        seconds = float("inf")
    spark = spark or get_spark()
    if _current is not None and _alive(_current):
        raise StreamError("the live query already runs in this process (the Live page?)")
    lock = _ProcessLock(checkpoint_root(chosen))
    lock.acquire()
    started = time.monotonic()
    try:
        query, writer = _start_query(
            spark, chosen, available_now, trigger_seconds, max_per_batch, fault
        )
        seen = 0
        deadline = started + seconds if seconds is not None else None
        try:
            while query.isActive:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                query.awaitTermination(min(1.0, remaining) if remaining is not None else 1.0)
                if progress is not None:
                    with writer.lock:
                        fresh = writer.reports[seen:]
                    for report in fresh:
                        progress(report)
                    seen += len(fresh)
        finally:
            if query.isActive:
                query.stop()
        failure = query.exception()
        if failure is not None:
            raise StreamError(f"the live query failed: {_short(failure)}")
        reports = list(writer.reports)
        if progress is not None:
            for report in reports[seen:]:
                progress(report)
    finally:
        lock.release()
    return RunSummary(
        source=chosen,
        batches=len(reports),
        rows=sum(r.rows for r in reports),
        quarantined=sum(r.quarantined for r in reports),
        duplicates=sum(r.duplicates for r in reports),
        late=sum(r.late for r in reports),
        inserted=sum(r.inserted for r in reports),
        seconds=time.monotonic() - started,
    )


# ---------------------------------------------------------------- dashboard reads


def read_table(layer_table: tuple[str, str]):
    """A small live table as pandas through delta-rs (no Spark job); None if absent."""
    from deltalake import DeltaTable as RsTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return RsTable(table_path(layer_table)).to_pandas()
    except (TableNotFoundError, FileNotFoundError, OSError):
        return None


def dashboard_snapshot(now: dt.datetime | None = None) -> dict[str, Any]:
    """KPIs for the Live page from gold.live_sales_minute and gold.live_alerts.

    'Last minute' is the previous complete wall-clock minute and 'last hour'
    the sixty minutes before now (event time, UTC).
    """
    import pandas as pd

    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    minutes = read_table(GOLD)
    alerts = read_table(ALERTS)
    if minutes is None:
        minutes = pd.DataFrame(columns=[f.name for f in GOLD_SCHEMA.fields])
    if alerts is None:
        alerts = pd.DataFrame(columns=[f.name for f in ALERT_SCHEMA.fields])
    minutes = minutes.sort_values("window_start").reset_index(drop=True)
    alerts = alerts.sort_values("window_start", ascending=False).reset_index(drop=True)
    for frame in (minutes, alerts):
        for column in ("window_start", "window_end"):
            if column in frame and len(frame):
                values = pd.to_datetime(frame[column], utc=True)
                frame[column] = values.dt.tz_convert(None)

    current = pd.Timestamp(now).floor("min")

    def totals(start: pd.Timestamp, end: pd.Timestamp) -> dict[str, Any]:
        rows = minutes[(minutes["window_start"] >= start) & (minutes["window_start"] < end)]
        orders = int(rows["orders"].sum()) if len(rows) else 0
        revenue = float(sum(rows["net_revenue"])) if len(rows) else 0.0
        return {
            "orders": orders,
            "net_revenue": round(revenue, 2),
            "avg_order_value": round(revenue / orders, 2) if orders else None,
        }

    last_order_minute = None
    with_orders = minutes[minutes["orders"] > 0] if len(minutes) else minutes
    if len(with_orders):
        last_order_minute = with_orders["window_start"].max().to_pydatetime()
    return {
        "now": now,
        "last_minute": totals(current - pd.Timedelta(minutes=1), current),
        "last_hour": totals(current - pd.Timedelta(minutes=60), current + pd.Timedelta(minutes=1)),
        "minutes": minutes,
        "alerts": alerts,
        "last_order_minute": last_order_minute,
    }
