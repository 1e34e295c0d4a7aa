"""The one live Structured Streaming query, exactly once end to end.

Source: Kafka (Spark's own kafka source) or the drop folder <lake>/stream_drop
(JSON lines). Sink: ``foreachBatch``. Spark parses and checks every record
and computes each valid event's totals (pipeline.live.events) in one job per
micro-batch (``batch_frame``, collected as Arrow); the small per-batch steps
on that table (rule counts, first delivery of each event_id, the touched
minutes' sums) are Arrow computations with the same definitions, tested
against the DataFrame functions. Each micro-batch then commits its results,
in this order:

1. bronze.order_events     every raw record                      append
2. silver.quarantine       invalid events with their rule names  append
3. gold.dq_results         the event rules' counts               append
4. silver.order_events     first delivery of each valid event    append (new event_ids only)
5. gold.live_sales_minute  the minutes this batch touched        MERGE on window_start,
                                                                 recomputed from step 4
6. gold.live_alerts        the minutes the watermark closed      MERGE, recomputed from step 5
7. the query's state       max event_ts so far                   overwrite

silver.order_events is the stream's Silver table: one row per distinct valid
event (its minute, units, net revenue, lineage). It is also the dedup state,
and it makes the stream reconcile like the batch tables: bronze records =
stored events + quarantined + duplicates + late (the last two counted per
batch in gold.dq_results as `unique_event_id` and `within_watermark`).

Why this is exact. Spark's checkpoint (<lake>/_checkpoints/live/kafka/<topic>/
spark, or .../live/files/spark) replays a micro-batch whose commit it did not
record, with the same offsets or files. Every append and the state overwrite
carry a Delta app transaction (app id = the query id, stable across restarts;
version = the batch id), and a table that already holds this batch's
transaction is not written again.
Step 4 also appends only event_ids the store does not hold, and steps 5-6
recompute their rows from the store rather than add to them, so running a
batch twice gives the same tables as running it once. The state row keeps
the max event_ts before and after the batch that wrote it, so a replayed
batch sees the watermark it saw the first time.

Where a micro-batch's time goes (2 cores, measured with scripts/bench_stream.py
and per-phase timers): Spark's one job (Kafka fetch, JSON parsing, rules,
totals) is most of it; the Delta commits take 10-40 ms each, the stored-ids
and minute look-ups 10-20 ms each. The column expressions are built once per
query (FramePlan) and the batch's ingestion time reaches Spark as a string,
so a batch neither makes thousands of Py4J calls nor recompiles its plan.

Why delta-rs commits the results. A micro-batch's outputs are small (at most
``maxOffsetsPerTrigger`` rows). Committing them through Spark's Delta writer
costs a few Spark jobs and a log replay per table (seconds per batch on a
small machine); the ``deltalake`` (delta-rs) writer commits the same Arrow
data, with the same app transactions, in milliseconds. The tables stay
ordinary Delta tables that Spark and delta-rs both read and write.

Watermark (DESIGN.md 'Live windows'): max event_ts of the valid events of
earlier batches minus 2 minutes. An older event is late: it stays in Bronze,
is counted by the dq rule `within_watermark` and is not aggregated, as Spark's
own watermark would drop it; so a closed minute never changes again, and its
alerts are evaluated once, when it closes. Duplicates are looked up among the
stored events newer than the watermark minus 2 minutes (the state that
``dropDuplicatesWithinWatermark`` would hold), so the lookup stays bounded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from pipeline import storage
from pipeline.config import CACHE_DIR, kafka_security_options, settings
from pipeline.live import events as ev
from pipeline.quality.expectations import (
    FAIL_RULES,
    QUARANTINE_RULES,
    WARN_RULES,
    Expectation,
    RuleCount,
    is_quarantined,
)

SOURCES = ("kafka", "files")
QUERY_PREFIX = "shoplake_live_"
DEFAULT_TRIGGER_SECONDS = 1.0
DEFAULT_MAX_OFFSETS = 20000
DEFAULT_MAX_FILES = 50
MAINTENANCE_EVERY = 500  # batches between compactions of the live tables
WATERMARK = dt.timedelta(seconds=ev.WATERMARK_SECONDS)
MAX_ALERT_SPAN = dt.timedelta(days=1)

BRONZE = ("bronze", "order_events")
STORE = ("silver", "order_events")
QUARANTINE = ("silver", "quarantine")
DQ = ("gold", "dq_results")
GOLD = ("gold", "live_sales_minute")
ALERTS = ("gold", "live_alerts")
_TABLES = {
    "bronze": BRONZE,
    "store": STORE,
    "quarantine": QUARANTINE,
    "dq": DQ,
    "gold": GOLD,
    "alerts": ALERTS,
}

UTC_TS = pa.timestamp("us", tz="UTC")
DQ_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("layer", pa.string()),
        ("table", pa.string()),
        ("rule", pa.string()),
        ("action", pa.string()),
        ("rows_checked", pa.int64()),
        ("rows_failed", pa.int64()),
        ("pass_rate", pa.float64()),
        ("checked_at", UTC_TS),
    ]
)
STATE_SCHEMA = pa.schema(
    [
        ("app_id", pa.string()),
        ("batch_id", pa.int64()),
        ("max_event_ts", UTC_TS),
        ("prev_max_event_ts", UTC_TS),
        ("updated_at", UTC_TS),
    ]
)
GOLD_COLUMNS = ["window_start", "window_end", "orders", "units", "net_revenue", "avg_order_value"]
ALERT_COLUMNS = ["window_start", "metric", "value", "baseline", "z_score", "kind"]


class StreamError(RuntimeError):
    """The live query could not start or failed; the message says why."""


class StreamStopped(RuntimeError):
    """A micro-batch cut short by stop(); the batch is replayed on the next start."""


# Spark decides whether a failed batch was "interrupted by stop" by a regex over
# the error text (StreamExecution.isInterruptionException); the long Py4J text of
# a real interruption overflows that regex's stack, so a stop says it briefly.
_STOP_MESSAGE = (
    "py4j.protocol.Py4JJavaError: An error occurred while calling foreachBatch.\n"
    ": java.lang.InterruptedException: stopped by ShopLake"
)


# ---------------------------------------------------------------- locations


def table_path(layer_table: tuple[str, str]) -> str:
    return settings().table_path(*layer_table)


def checkpoint_root(source: str) -> str:
    """Per source, and per topic for Kafka: a checkpoint's offsets belong to one topic."""
    root = f"{settings().lake.rstrip('/')}/_checkpoints/live/{source}"
    if source == "kafka":
        root += "/" + re.sub(r"[^A-Za-z0-9._-]", "_", settings().topic)
    return root


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


# ---------------------------------------------------------------- time helpers

# Instants cross between Python and Spark as epoch microseconds: a naive datetime
# would be read in the Python process's local zone, whatever Spark's session says.
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _micros(ts: dt.datetime) -> int:
    return (ts - _EPOCH) // dt.timedelta(microseconds=1)


def _ts(ts: dt.datetime) -> Column:
    return F.timestamp_micros(F.lit(_micros(ts)))


def _batch_ts(ts: dt.datetime) -> Column:
    """`ts` for every row of a micro-batch, without a timestamp literal in the plan.

    Spark compiles a timestamp literal into its generated code, so one that
    changes every micro-batch costs a new compilation of the batch's large
    projection each time (0.05-0.2 s); a string literal reaches the compiled
    code as a parameter instead. The always-true nondeterministic guard keeps
    the optimizer from folding the cast back into a timestamp literal.
    """
    text = F.when(F.spark_partition_id() >= 0, F.lit(str(_micros(ts))))
    return F.timestamp_micros(text.cast("long"))


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _floor_minute(ts: dt.datetime) -> dt.datetime:
    return ts.replace(second=0, microsecond=0)


# ---------------------------------------------------------------- Delta commits (delta-rs)


def _nullable_type(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return pa.list_(pa.field("element", _nullable_type(kind.value_type), nullable=True))
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, _nullable_type(f.type), True) for f in kind])
    return kind


def _nullable(table: pa.Table) -> pa.Table:
    """Spark marks computed columns NOT NULL; a Delta table must not inherit that."""
    schema = pa.schema([pa.field(f.name, _nullable_type(f.type), True) for f in table.schema])
    return table.cast(schema)


def _delta_table(path: str):
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(path)
    except TableNotFoundError:
        return None


def commit_append(
    path: str,
    table: pa.Table,
    app_id: str,
    version: int,
    mode: str = "append",
    partition_by: list[str] | None = None,
) -> bool:
    """Append (or overwrite) once per (app_id, version); False when already committed.

    `partition_by` applies when this write creates the table; an existing table
    keeps its own partitioning (silver.quarantine is shared with the batch steps).
    """
    from deltalake import CommitProperties, Transaction, write_deltalake

    target = _delta_table(path)
    if target is not None:
        done = target.transaction_version(app_id)
        if done is not None and done >= version:
            return False
        partition_by = list(target.metadata().partition_columns) or None
    write_deltalake(
        target if target is not None else path,
        _nullable(table),
        partition_by=partition_by,
        mode=mode,  # type: ignore[arg-type]
        schema_mode="merge" if mode == "append" else "overwrite",
        commit_properties=CommitProperties(
            app_transactions=[Transaction(app_id=app_id, version=version)]
        ),
    )
    return True


def commit_upsert(path: str, table: pa.Table, keys: list[str]) -> None:
    """MERGE rows by key: matched rows replaced, new ones inserted (idempotent)."""
    from deltalake import write_deltalake

    if table.num_rows == 0:
        return
    target = _delta_table(path)
    if target is None:
        write_deltalake(path, _nullable(table), mode="append")
        return
    predicate = " AND ".join(f"t.{k} = s.{k}" for k in keys)
    (
        target.merge(_nullable(table), predicate, source_alias="s", target_alias="t")
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )


def read_arrow(path: str) -> pa.Table | None:
    target = _delta_table(path)
    return None if target is None else target.to_pyarrow_table()


def _plain_type(kind: pa.DataType) -> pa.DataType:
    if kind == pa.string_view() or kind == pa.large_string():
        return pa.string()
    if kind == pa.binary_view() or kind == pa.large_binary():
        return pa.binary()
    return kind


def query_arrow(path: str, sql: str) -> pa.Table | None:
    """Run SQL over one Delta table (named `t`) in delta-rs, pruning files by their stats.

    Spark would first replay the table's log in a job of its own; after every
    micro-batch's commit that costs more than the query.
    """
    from deltalake import QueryBuilder

    target = _delta_table(path)
    if target is None:
        return None
    table = pa.table(QueryBuilder().register("t", target).execute(sql).read_all())
    schema = pa.schema([pa.field(f.name, _plain_type(f.type), True) for f in table.schema])
    return table.cast(schema)


def _sql_ts(ts: dt.datetime) -> str:
    return f"TIMESTAMP '{ts.astimezone(dt.UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}'"


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
    started_at: float = 0.0
    visible_at: float | None = None  # when this batch's minutes were committed to gold
    finished_at: float = 0.0
    failed: bool = False  # the attempt raised; Spark replays the batch on the next start


def quarantine_columns() -> dict[str, Column]:
    """silver.quarantine's columns (DESIGN.md section 4) over the flagged event rows."""
    key = F.coalesce(F.col("event_id"), F.col("order_id"), F.col("_record_id"))
    columns = {
        "source_table": F.lit("order_events"),
        "record_key": key,
        "rules": F.col(QUARANTINE_RULES),
        "raw_record": F.col("value"),
        "batch_id": F.col("_batch_id"),
        "quarantined_at": F.col("_ingested_at"),
        "source_file": F.coalesce(F.col("source_file"), F.col("topic")),
        "record_id": F.col("_record_id"),
    }
    # the batch steps keep the table in sync by this hash (pipeline.lake.sync): a table
    # the stream creates first must have the same columns
    columns["_row_hash"] = F.xxhash64(*columns.values())
    return columns


def quarantine_rows(quarantined: DataFrame) -> DataFrame:
    """silver.quarantine's shape (DESIGN.md section 4) for invalid events."""
    return quarantined.select(*[c.alias(name) for name, c in quarantine_columns().items()])


BRONZE_COLUMNS = [*RAW_COLUMNS, "event_id", "_record_id", "_batch_id", "_ingested_at"]
_QUARANTINE_PREFIX = "_q_"
_EVENT_PREFIX = "_e_"


LINEAGE_COLUMNS = ["_record_id", "_batch_id", "_ingested_at"]


_RULE_COLUMNS = {"quarantine": QUARANTINE_RULES, "warn": WARN_RULES, "fail": FAIL_RULES}


def _failed_rules(expectations: list[Expectation], action: str) -> Column:
    """One of `flag`'s arrays (the names of the failed rules of one action), as a Column.

    The same expression as pipeline.quality.expectations.flag builds, kept as a
    Column so that FramePlan builds it once (a test compares the two).
    """
    names = [F.when(~e.passed(), F.lit(e.name)) for e in expectations if e.action == action]
    if not names:
        return F.array().cast("array<string>")
    return F.filter(F.array(*names), lambda name: name.isNotNull())


class FramePlan:
    """batch_frame's column expressions, built once per query.

    Building them costs thousands of Py4J calls (about 0.4 s on a 2-core
    machine); a micro-batch that reuses them makes a handful. Columns are
    unresolved expressions, so one set serves every batch's DataFrame.
    """

    def __init__(self) -> None:
        self.parse = ev.parse_columns([*RAW_COLUMNS, *LINEAGE_COLUMNS])
        bad = is_quarantined()
        self.output = [
            *[F.col(c) for c in RAW_COLUMNS],
            ev.event_id_of(F.col("value")).alias("_bronze_event_id"),
            *[F.col(c) for c in LINEAGE_COLUMNS],
            F.col(QUARANTINE_RULES),
            F.col(WARN_RULES),
            F.col(FAIL_RULES),
            *[
                F.when(bad, c).alias(_QUARANTINE_PREFIX + name)
                for name, c in quarantine_columns().items()
            ],
            *[
                F.when(~bad, c).alias(_EVENT_PREFIX + name)
                for name, c in ev.event_total_columns(LINEAGE_COLUMNS).items()
            ],
        ]

        self.flags = [
            _failed_rules(ev.EXPECTATIONS, action).alias(column)
            for action, column in _RULE_COLUMNS.items()
        ]

    def apply(self, raw: DataFrame) -> DataFrame:
        first, second = self.parse
        parsed = raw.select(*first).select(*second)
        return parsed.select(F.col("*"), *self.flags).select(*self.output)


def batch_frame(raw: DataFrame, plan: FramePlan | None = None) -> DataFrame:
    """Everything a micro-batch writes, as one row per record, so one Spark job computes it.

    `raw` holds RAW_COLUMNS and LINEAGE_COLUMNS. The result has Bronze's
    columns (event_id under `_bronze_event_id`), the rule arrays of `flag`,
    the record's silver.quarantine row as `_q_*` columns (null for a valid
    event) and its event_totals row as `_e_*` columns (null for a quarantined
    one). A micro-batch used to run five Spark jobs over these (Bronze, rule
    counts, quarantine, events, minutes), each costing more in job start-up
    than in rows; the rest (counts, first delivery, minutes) is done on the
    collected Arrow data. The totals are guarded by validity: a quarantined
    item may not even fit the money type, and an ANSI cast would fail the batch.
    """
    return (plan or FramePlan()).apply(raw)


def _unprefixed(frame: pa.Table, prefix: str) -> pa.Table:
    names = [n for n in frame.column_names if n.startswith(prefix)]
    return frame.select(names).rename_columns([n[len(prefix) :] for n in names])


def rule_counts(frame: pa.Table, expectations: list[Expectation]) -> list[RuleCount]:
    """count_failures over batch_frame's collected rule arrays (no second Spark job)."""
    failed: dict[tuple[str, str], int] = {}
    for column in (QUARANTINE_RULES, WARN_RULES, FAIL_RULES):
        names = pc.list_flatten(frame[column])
        if len(names):
            for item in pc.value_counts(names).to_pylist():
                failed[(column, item["values"])] = int(item["counts"])
    action_column = _RULE_COLUMNS
    return [
        RuleCount(
            e.name, e.action, frame.num_rows, failed.get((action_column[e.action], e.name), 0)
        )
        for e in expectations
    ]


def first_deliveries(frame: pa.Table) -> pa.Table:
    """The event_totals rows of the valid records, first delivery of each event_id only.

    The first delivery is the lowest (partition, offset, record id), nulls last,
    as ev.first_per_event orders them.
    """
    valid = frame.filter(pc.is_valid(frame[_EVENT_PREFIX + "event_id"]))
    events = _unprefixed(valid, _EVENT_PREFIX)
    if events.num_rows == 0:
        return events
    keys = pa.table(
        {
            "event_id": events["event_id"],
            "partition": valid["partition"],
            "offset": valid["offset"],
            "_record_id": valid["_record_id"],
        }
    )
    order = pc.sort_indices(
        keys, sort_keys=[(name, "ascending") for name in keys.column_names], null_placement="at_end"
    )
    ids = pc.take(keys["event_id"], order).combine_chunks()
    first = pa.concat_arrays([pa.array([True]), pc.not_equal(ids[1:], ids[:-1])])
    return events.take(pc.filter(order, first))


def dq_table(run_id: str, now: dt.datetime, counts: list[RuleCount]) -> pa.Table:
    """gold.dq_results rows (layer 'live', table 'order_events') for one micro-batch."""
    rows = [
        {
            "run_id": run_id,
            "layer": "live",
            "table": "order_events",
            "rule": c.rule,
            "action": c.action,
            "rows_checked": int(c.rows_checked),
            "rows_failed": int(c.rows_failed),
            "pass_rate": float(c.pass_rate),
            "checked_at": now,
        }
        for c in counts
    ]
    return pa.Table.from_pylist(rows, schema=DQ_SCHEMA)


PAUSE_ENV = "SHOPLAKE_LIVE_PAUSE_AFTER"


def _pause_from_env() -> Callable[[str, int], None] | None:
    """``SHOPLAKE_LIVE_PAUSE_AFTER=bronze:1`` holds the process after that step's commit.

    For crash tests: a process held right after a commit is killed there for
    certain, where a kill timed from outside races the next commit (tens of ms).
    """
    wanted = os.environ.get(PAUSE_ENV, "")
    if ":" not in wanted:
        return None
    step, batch = wanted.rsplit(":", 1)

    def pause(at_step: str, batch_id: int) -> None:
        if at_step == step and batch_id == int(batch):
            time.sleep(3600)

    return pause


class BatchWriter:
    """The foreachBatch function: one micro-batch, written so that a replay changes nothing."""

    def __init__(
        self,
        source: str,
        fault: Callable[[str, int], None] | None = None,
        on_report: Callable[[BatchReport], None] | None = None,
    ):
        self.source = source
        # tests: called after each step, may raise to simulate a crash
        self.fault = fault or _pause_from_env()
        self.on_report = on_report
        self.app_id = ""
        self._app_ready = threading.Event()
        self.paths = {name: table_path(t) for name, t in _TABLES.items()}
        self.state_path = f"{checkpoint_root(source)}/state"
        self.reports: list[BatchReport] = []
        self.watermark: dt.datetime | None = None
        self._state: dict[str, Any] | None = None  # the state row, None: read the table
        self._plan: FramePlan | None = None
        self.lock = threading.Lock()
        self.stop_requested = threading.Event()
        self.idle = threading.Event()
        self.idle.set()

    def set_app_id(self, query_id: str) -> None:
        self.app_id = f"shoplake-live-{query_id}"
        self._state = None
        self._app_ready.set()

    def _hook(self, step: str, batch_id: int) -> None:
        if self.fault is not None:
            self.fault(step, batch_id)

    def _label(self, batch_id: int) -> str:
        return f"live-{self.source}-{self.app_id[-8:]}-{batch_id:06d}"

    def _append(self, name: str, table: pa.Table, batch_id: int) -> None:
        partitions = ["source_table"] if name == "quarantine" else None
        commit_append(self.paths[name], table, self.app_id, batch_id, partition_by=partitions)

    # -------------------------------------------------------- state

    def _max_before(self, batch_id: int) -> dt.datetime | None:
        """Max valid event_ts of the batches before this one (the same on a replay).

        The state row this writer last committed is kept in memory (it is the
        table's only writer while it holds the checkpoint lock); after a failure,
        or in a new process, it is read from the table.
        """
        if self._state is None:
            state = read_arrow(self.state_path)
            rows = state.to_pylist() if state is not None else []
            self._state = next((r for r in rows if r["app_id"] == self.app_id), {})
        row = self._state
        if not row or row["app_id"] != self.app_id:
            return None
        return row["prev_max_event_ts"] if row["batch_id"] >= batch_id else row["max_event_ts"]

    def _write_state(
        self, batch_id: int, max_after: dt.datetime | None, max_before: dt.datetime | None
    ) -> None:
        row = {
            "app_id": self.app_id,
            "batch_id": batch_id,
            "max_event_ts": max_after,
            "prev_max_event_ts": max_before,
            "updated_at": _utcnow(),
        }
        table = pa.Table.from_pylist([row], schema=STATE_SCHEMA)
        self._state = None
        if commit_append(self.state_path, table, self.app_id, batch_id, mode="overwrite"):
            self._state = table.to_pylist()[0]

    # -------------------------------------------------------- the batch

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        self.idle.clear()
        try:
            self._run_batch(batch, batch_id)
        except Exception:
            if self.stop_requested.is_set():
                raise StreamStopped(_STOP_MESSAGE) from None
            raise
        finally:
            self.idle.set()

    def _run_batch(self, batch: DataFrame, batch_id: int) -> None:
        if not self._app_ready.wait(120):
            raise StreamError("the live query started without an id")
        started = time.monotonic()
        report = BatchReport(batch_id=batch_id, started_at=time.time())
        now = _utcnow()
        label = self._label(batch_id)
        try:
            max_before = self._max_before(batch_id)
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
            # many small drop files arrive as as many partitions: a task each costs more
            # than the rows in it
            parallelism = max(1, batch.sparkSession.sparkContext.defaultParallelism)
            raw = batch.coalesce(parallelism).select(
                *[F.col(c) for c in RAW_COLUMNS],
                record_id.alias("_record_id"),
                F.lit(label).alias("_batch_id"),
                _batch_ts(now).alias("_ingested_at"),
            )
            # the batch's one Spark job; everything after works on this Arrow table
            if self._plan is None:
                self._plan = FramePlan()
            frame = batch_frame(raw, self._plan).toArrow()
            report.rows = frame.num_rows
            if report.rows:
                bronze = frame.select([*RAW_COLUMNS, "_bronze_event_id", *LINEAGE_COLUMNS])
                self._append("bronze", bronze.rename_columns(BRONZE_COLUMNS), batch_id)
                self._hook("bronze", batch_id)
                self._process(batch.sparkSession, frame, batch_id, label, now, max_before, report)
            if batch_id and batch_id % MAINTENANCE_EVERY == 0:
                self._maintain()
        except BaseException:
            report.failed = True
            self._state = None  # read the state table again: a commit may have landed
            raise
        finally:
            report.seconds = time.monotonic() - started
            report.finished_at = time.time()
            with self.lock:
                self.reports = [*self.reports[-199:], report]
            if self.on_report is not None:
                with contextlib.suppress(Exception):
                    self.on_report(report)

    def _process(
        self,
        spark: SparkSession,
        frame: pa.Table,
        batch_id: int,
        label: str,
        now: dt.datetime,
        max_before: dt.datetime | None,
        report: BatchReport,
    ) -> None:
        """Steps 2-7 of the module docstring, on batch_frame's collected rows."""
        watermark = max_before - WATERMARK if max_before is not None else None
        rules = rule_counts(frame, ev.EXPECTATIONS)
        quarantined = _unprefixed(
            frame.filter(pc.is_valid(frame[_QUARANTINE_PREFIX + "source_table"])),
            _QUARANTINE_PREFIX,
        )
        report.quarantined = quarantined.num_rows
        if report.quarantined:
            self._append("quarantine", quarantined, batch_id)
        self._hook("quarantine", batch_id)

        events = first_deliveries(frame)
        if watermark is not None and events.num_rows:
            late = pc.fill_null(pc.less(events["event_ts"], pa.scalar(watermark, UTC_TS)), False)
        else:
            late = pa.array([False] * events.num_rows, pa.bool_())
        on_time = events.filter(pc.invert(late))
        seen = pc.is_in(on_time["event_id"], value_set=self._stored_ids(watermark))
        fresh = on_time.filter(pc.invert(seen))
        n_valid = report.rows - report.quarantined
        report.late = events.num_rows - on_time.num_rows
        report.inserted = fresh.num_rows
        report.duplicates = n_valid - report.late - report.inserted

        checks = [
            *rules,
            RuleCount("unique_event_id", "warn", n_valid, report.duplicates),
            RuleCount("within_watermark", "warn", events.num_rows, report.late),
        ]
        self._append("dq", dq_table(label, now, checks), batch_id)
        self._hook("dq", batch_id)

        if fresh.num_rows:
            self._append("store", fresh, batch_id)
        self._hook("store", batch_id)

        # every minute an on-time event of this batch falls in, repeats included:
        # on a replay those are this batch's own events, already in the store
        windows = sorted(pc.unique(on_time["window_start"].cast(pa.int64())).to_pylist())
        report.windows = len(windows)
        if windows:
            self._upsert_minutes(windows)
            report.visible_at = time.time()
        self._hook("gold", batch_id)

        latest = pc.max(on_time["event_ts"]).as_py() if on_time.num_rows else None
        candidates = [t for t in (max_before, latest) if t is not None]
        max_after = max(candidates) if candidates else None
        new_watermark = max_after - WATERMARK if max_after is not None else None
        if new_watermark is not None and (
            watermark is None or _floor_minute(new_watermark) > _floor_minute(watermark)
        ):
            report.alerts = self._upsert_alerts(spark, watermark, new_watermark)
        self._hook("alerts", batch_id)
        if max_after != max_before:
            self._write_state(batch_id, max_after, max_before)
        self._hook("state", batch_id)
        report.watermark = new_watermark
        self.watermark = new_watermark

    def _stored_ids(self, watermark: dt.datetime | None) -> pa.Array:
        """event_ids the store holds within the dedup horizon (watermark minus its delay)."""
        where = f"WHERE event_ts > {_sql_ts(watermark - WATERMARK)}" if watermark else ""
        ids = query_arrow(self.paths["store"], f"SELECT event_id FROM t {where}")
        return pa.array([], pa.string()) if ids is None else ids["event_id"].combine_chunks()

    def _upsert_minutes(self, windows: list[int]) -> None:
        """Recompute the touched minutes from the store; windows as epoch microseconds."""
        low = _EPOCH + dt.timedelta(microseconds=windows[0])
        high = _EPOCH + dt.timedelta(microseconds=windows[-1])
        stored = query_arrow(
            self.paths["store"],
            "SELECT window_start, is_revenue, units, net_revenue FROM t "
            f"WHERE window_start >= {_sql_ts(low)} AND window_start <= {_sql_ts(high)}",
        )
        if stored is None or stored.num_rows == 0:
            return
        minutes = ev.minute_totals(stored).select(GOLD_COLUMNS)
        commit_upsert(self.paths["gold"], minutes, ["window_start"])

    def _upsert_alerts(self, spark: SparkSession, old: dt.datetime | None, new: dt.datetime) -> int:
        """Alerts for the minutes that closed between the old and the new watermark."""
        first = query_arrow(self.paths["gold"], "SELECT min(window_start) AS first FROM t")
        if first is None or first["first"][0].as_py() is None:
            return 0
        first_ever = first["first"][0].as_py()
        last_closed = _floor_minute(new) - dt.timedelta(minutes=1)
        first_eval = _floor_minute(old) if old is not None else first_ever
        first_eval = max(first_eval, first_ever, last_closed - MAX_ALERT_SPAN)
        if first_eval > last_closed:
            return 0
        series_start = max(first_ever, first_eval - dt.timedelta(minutes=ev.BASELINE_MINUTES))
        minutes = query_arrow(
            self.paths["gold"],
            "SELECT window_start, orders, net_revenue FROM t "
            f"WHERE window_start >= {_sql_ts(series_start)} "
            f"AND window_start <= {_sql_ts(last_closed)}",
        )
        series = ev.zero_filled(spark.createDataFrame(minutes), _ts(series_start), _ts(last_closed))
        alerts = ev.minute_alerts(series, _ts(first_eval)).select(*ALERT_COLUMNS).toArrow()
        commit_upsert(self.paths["alerts"], alerts, ["window_start", "metric", "kind"])
        return alerts.num_rows

    def _maintain(self) -> None:
        """Compact the small files many micro-batches leave behind.

        The state table is rewritten by nearly every batch and read only by this
        writer, so its old files are removed at once; the other tables keep
        Delta's default retention for their readers.
        """
        for name in ("bronze", "store", "gold", "alerts"):
            target = _delta_table(self.paths[name])
            if target is not None:
                with contextlib.suppress(Exception):
                    target.optimize.compact()
        state = _delta_table(self.state_path)
        if state is not None:
            with contextlib.suppress(Exception):
                state.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
                state.cleanup_metadata()


# ---------------------------------------------------------------- query lifecycle


class _ProcessLock:
    """A lock file per checkpoint, so two processes never run the same query."""

    def __init__(self, root: str):
        self.handle = None
        self.path = storage.lock_file(root, ".lock", CACHE_DIR / "locks")  # local, even for URLs

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
    on_report: Callable[[BatchReport], None] | None = None,
) -> tuple[StreamingQuery, BatchWriter]:
    writer = writer or BatchWriter(source, fault, on_report)
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


_EXC_LINE = re.compile(r"^([A-Za-z_][\w.$]*(?:Error|Exception|Stopped)): (.+)$")
_WRAPPERS = ("pyspark.", "py4j.", "org.apache.spark.sql.execution.streaming", "Caused by")


def _short(exc: BaseException) -> str:
    """The one line of a streaming failure a person needs: the root exception."""
    text = str(exc)
    found = [
        line.strip()
        for line in text.splitlines()
        if _EXC_LINE.match(line.strip()) and not line.strip().startswith(_WRAPPERS)
    ]
    if found:
        return found[-1][:500]
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


def _graceful_stop(query: StreamingQuery, writer: BatchWriter, timeout: float = 120.0) -> None:
    """Let the batch in flight finish, then stop: a clean stop replays nothing."""
    writer.stop_requested.set()
    writer.idle.wait(timeout)
    with contextlib.suppress(Exception):
        query.stop()


def stop(timeout: float = 120.0) -> dict[str, Any]:
    """Stop the live query of this process (a batch in flight finishes first)."""
    with _lock:
        live = _current
        if live is None:
            return status()
        live.stop_requested = True
        _graceful_stop(live.query, live.writer, timeout)
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


def reports() -> list[BatchReport]:
    """The recent micro-batch reports of the background query (the latest 200)."""
    live = _current
    if live is None:
        return []
    with live.writer.lock:
        return list(live.writer.reports)


def _progress_dict(query: StreamingQuery | None) -> dict[str, Any] | None:
    if query is None:
        return None
    progress = query.lastProgress
    if progress is None:
        return None
    text = getattr(progress, "json", None)  # a property in PySpark 4.2, a method before
    text = text() if callable(text) else text
    return json.loads(text) if isinstance(text, str) else dict(progress)


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
    from pipeline.live.broker import quiet_client_logs

    with quiet_client_logs():
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
            bootstrap_timeout_ms=int(timeout * 1000),
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
        reports = [r for r in live.writer.reports if not r.failed]
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
    done: list[BatchReport] = []

    def record(report: BatchReport) -> None:
        if not report.failed:
            done.append(report)
        if progress is not None:
            progress(report)

    try:
        query, writer = _start_query(
            spark, chosen, available_now, trigger_seconds, max_per_batch, fault, on_report=record
        )
        deadline = started + seconds if seconds is not None else None
        try:
            while query.isActive:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    query.awaitTermination(min(1.0, remaining) if remaining is not None else 1.0)
                except Exception:
                    break  # the query failed: reported below from query.exception()
        finally:
            if query.isActive:
                _graceful_stop(query, writer)
        failure = query.exception()
        if failure is not None:
            raise StreamError(f"the live query failed: {_short(failure)}")
    finally:
        lock.release()
    return RunSummary(
        source=chosen,
        batches=len(done),
        rows=sum(r.rows for r in done),
        quarantined=sum(r.quarantined for r in done),
        duplicates=sum(r.duplicates for r in done),
        late=sum(r.late for r in done),
        inserted=sum(r.inserted for r in done),
        seconds=time.monotonic() - started,
    )


# ---------------------------------------------------------------- dashboard reads


def read_table(layer_table: tuple[str, str]):
    """A small live table as pandas through delta-rs (no Spark job); None if absent."""
    table = read_arrow(table_path(layer_table))
    return None if table is None else table.to_pandas()


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
        minutes = pd.DataFrame(columns=GOLD_COLUMNS)
    if alerts is None:
        alerts = pd.DataFrame(columns=ALERT_COLUMNS)
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
