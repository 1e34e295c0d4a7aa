"""The foreachBatch writer of the one live query: each micro-batch exactly once.

Long (~420 lines): the seven steps of one micro-batch and the state that makes a
replay change nothing read best in one class.

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
and per-phase timers): Spark's one job (pipeline.live.plan: Kafka fetch, JSON
parsing, rules, totals) is most of it; the Delta commits (pipeline.live.delta_io)
take 10-40 ms each, the stored-ids and minute look-ups 10-20 ms each.

Watermark (docs/contract.md §5, live windows): max event_ts of the valid events of
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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline import catalog
from pipeline.live import events as ev
from pipeline.live import hooks
from pipeline.live.arrow_rules import (
    UTC_TS,
    dq_table,
    first_deliveries,
    rule_counts,
    unprefixed,
)
from pipeline.live.delta_io import (
    commit_append,
    commit_upsert,
    delta_table,
    query_arrow,
    read_arrow,
    sql_ts,
)
from pipeline.live.errors import STOP_MESSAGE, StreamError, StreamStopped
from pipeline.live.kafka_source import RAW_COLUMNS
from pipeline.live.paths import TABLES, checkpoint_root, table_path
from pipeline.live.plan import (
    BRONZE_COLUMNS,
    EPOCH,
    LINEAGE_COLUMNS,
    QUARANTINE_PREFIX,
    FramePlan,
    batch_frame,
    batch_ts,
    ts_column,
)
from pipeline.quality.expectations import RuleCount

MAINTENANCE_EVERY = 500  # batches between compactions of the live tables
WATERMARK = dt.timedelta(seconds=ev.WATERMARK_SECONDS)
MAX_ALERT_SPAN = dt.timedelta(days=1)

STATE_SCHEMA = pa.schema(
    [
        ("app_id", pa.string()),
        ("batch_id", pa.int64()),
        ("max_event_ts", UTC_TS),
        ("prev_max_event_ts", UTC_TS),
        ("updated_at", UTC_TS),
    ]
)
GOLD_COLUMNS = list(catalog.columns("gold", "live_sales_minute"))
ALERT_COLUMNS = list(catalog.columns("gold", "live_alerts"))


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _floor_minute(ts: dt.datetime) -> dt.datetime:
    return ts.replace(second=0, microsecond=0)


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


class BatchWriter:
    """The foreachBatch function: one micro-batch, written so that a replay changes nothing."""

    def __init__(
        self,
        source: str,
        fault: Callable[[str, int], None] | None = None,
        on_report: Callable[[BatchReport], None] | None = None,
    ):
        self.source = source
        # after each step (pipeline.live.hooks): tests raise or block there; none in production
        self.fault = fault or hooks.installed()
        self.on_report = on_report
        self.app_id = ""
        self._app_ready = threading.Event()
        self.paths = {name: table_path(t) for name, t in TABLES.items()}
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
                raise StreamStopped(STOP_MESSAGE) from None
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
                batch_ts(now).alias("_ingested_at"),
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
        quarantined = unprefixed(
            frame.filter(pc.is_valid(frame[QUARANTINE_PREFIX + "source_table"])),
            QUARANTINE_PREFIX,
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
        where = f"WHERE event_ts > {sql_ts(watermark - WATERMARK)}" if watermark else ""
        ids = query_arrow(self.paths["store"], f"SELECT event_id FROM t {where}")
        return pa.array([], pa.string()) if ids is None else ids["event_id"].combine_chunks()

    def _upsert_minutes(self, windows: list[int]) -> None:
        """Recompute the touched minutes from the store; windows as epoch microseconds."""
        low = EPOCH + dt.timedelta(microseconds=windows[0])
        high = EPOCH + dt.timedelta(microseconds=windows[-1])
        stored = query_arrow(
            self.paths["store"],
            "SELECT window_start, is_revenue, units, net_revenue FROM t "
            f"WHERE window_start >= {sql_ts(low)} AND window_start <= {sql_ts(high)}",
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
            f"WHERE window_start >= {sql_ts(series_start)} "
            f"AND window_start <= {sql_ts(last_closed)}",
        )
        series = ev.zero_filled(
            spark.createDataFrame(minutes), ts_column(series_start), ts_column(last_closed)
        )
        alerts = ev.minute_alerts(series, ts_column(first_eval)).select(*ALERT_COLUMNS).toArrow()
        commit_upsert(self.paths["alerts"], alerts, ["window_start", "metric", "kind"])
        return alerts.num_rows

    def _maintain(self) -> None:
        """Compact the small files many micro-batches leave behind.

        The state table is rewritten by nearly every batch and read only by this
        writer, so its old files are removed at once; the other tables keep
        Delta's default retention for their readers.
        """
        for name in ("bronze", "store", "gold", "alerts"):
            target = delta_table(self.paths[name])
            if target is not None:
                with contextlib.suppress(Exception):
                    target.optimize.compact()
        state = delta_table(self.state_path)
        if state is not None:
            with contextlib.suppress(Exception):
                state.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
                state.cleanup_metadata()
