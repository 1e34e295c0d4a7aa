"""Stream benchmark: throughput and produce-to-visible latency of the live query.

    python scripts/bench_stream.py [--quick] [--max-per-batch N]
                                   [--warmup-events N] [--backlog-events N]   prints JSON

Also importable: ``bench_stream(quick=False) -> dict`` (what `python -m
pipeline bench` calls in a fresh process). Everything runs on a temporary
lake with the real local Kafka broker on a free port, and the one live query.

- stream_events_per_second: a backlog of events is produced first, then the
  query drains it with availableNow; the figure is records processed divided
  by the wall time from the first micro-batch's start to the last one's end.
  A query that drains a backlog at N events/s keeps up with any steady rate
  below N, since its batches grow with the backlog (up to maxOffsetsPerTrigger).
  The batches are as large as the query's own default maxOffsetsPerTrigger
  allows (what `stream run` and the Live page use); `--max-per-batch N` caps
  them lower (5,000 was this benchmark's cap before).
  Before the backlog, a warm-up topic of one full batch (20,000 events) is
  drained and not counted: Spark compiles the batch's projection on the first
  batch, and the JVM compiles its hot loops to machine code only after many
  rows, so a warm-up of a few hundred events left the first measured batches
  running interpreted code (measured side by side: 3,700-3,800 events/s that
  way, 4,800-6,700 after a full warm-up batch).
  A live query runs for hours, so the steady state is the rate it sustains.
  The backlog is three full batches (60,000 events). `--warmup-events` and
  `--backlog-events` set other sizes (500 and 30,000 were the earlier ones).
- stream_latency_p50/p95_seconds: the producer sends 200 events/second while
  the query runs with a 1-second trigger; an event's latency is the time from
  its send to the commit that made its minute visible in gold.live_sales_minute
  (the batch that stored it is read from silver.order_events). The first
  seconds (JIT warm-up) are left out.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RATE = 200.0
WARMUP_EVENTS = 20_000  # one batch of the query's default size
BACKLOG_EVENTS = 60_000


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def _throughput(spark, backlog: int, max_per_batch: int | None) -> dict:
    from pipeline.live import producer, stream

    producer.produce(events=backlog, malformed=0.02, duplicates=0.02, seed=11)
    reports: list[stream.BatchReport] = []
    summary = stream.run_foreground(
        "kafka",
        available_now=True,
        spark=spark,
        max_per_batch=max_per_batch,
        progress=reports.append,
    )
    busy = reports[-1].finished_at - reports[0].started_at if reports else 0.0
    return {
        "backlog_events": backlog,
        "max_per_batch": max_per_batch or stream.DEFAULT_MAX_OFFSETS,
        "batches": summary.batches,
        "records": summary.rows,
        "seconds": round(busy, 2),
        "events_per_second": round(summary.rows / busy, 1) if busy else None,
    }


def _stored_labels(path: str):
    """event_id and _batch_id of the store (two columns: the poll competes for the CPU)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(path).to_pyarrow_table(columns=["event_id", "_batch_id"])
    except TableNotFoundError:
        return None


def _latency(spark, seconds: float, warmup: float) -> dict:
    from pipeline.live import producer, stream

    sent_at: dict[str, float] = {}

    def remember(event: dict, when: float) -> None:
        sent_at[event["event_id"]] = when

    stream.start_background(spark, source="kafka", trigger_seconds=1.0)
    started = time.time()
    producer.produce(
        events=int(RATE * seconds),
        rate=RATE,
        seed=12,
        keep_events=False,
        on_send=remember,
        jitter_seconds=0.0,
    )
    deadline = time.time() + 120
    store_path = stream.table_path(stream.STORE)
    stored: dict[str, str] = {}
    while time.time() < deadline:
        table = _stored_labels(store_path)
        if table is not None:
            ids = table.column("event_id").to_pylist()
            labels = table.column("_batch_id").to_pylist()
            stored = dict(zip(ids, labels, strict=True))
        if all(event_id in stored for event_id in sent_at):
            break
        time.sleep(1)
    visible = {r.batch_id: r.visible_at for r in stream.reports() if r.visible_at}
    status = stream.status()
    stream.stop()
    latencies = []
    for event_id, when in sent_at.items():
        label = stored.get(event_id)
        if label is None or when < started + warmup:
            continue
        shown = visible.get(int(label.rsplit("-", 1)[-1]))
        if shown is not None:
            latencies.append(shown - when)
    return {
        "rate_per_second": RATE,
        "seconds": seconds,
        "events_sent": len(sent_at),
        "events_measured": len(latencies),
        "events_visible": sum(1 for e in sent_at if e in stored),
        "p50_seconds": round(_percentile(latencies, 0.5), 2) if latencies else None,
        "p95_seconds": round(_percentile(latencies, 0.95), 2) if latencies else None,
        "mean_seconds": round(statistics.fmean(latencies), 2) if latencies else None,
        "batches": status.get("batches"),
        "last_batch_duration_ms": status.get("batch_duration_ms"),
    }


def bench_stream(
    quick: bool = False,
    max_per_batch: int | None = None,
    warmup_events: int | None = None,
    backlog_events: int | None = None,
) -> dict:
    """Measure the live query on a temporary lake and a local broker; returns the figures.

    `max_per_batch` caps the backlog's micro-batches (None: the query's default).
    """
    if warmup_events is None:
        warmup_events = 2_000 if quick else WARMUP_EVENTS
    if backlog_events is None:
        backlog_events = 10_000 if quick else BACKLOG_EVENTS
    from pipeline.live import broker

    keys = ("SHOPLAKE_LAKE", "SHOPLAKE_KAFKA_PORT", "SHOPLAKE_TOPIC", "KAFKA_BOOTSTRAP_SERVERS")
    saved = {k: os.environ.get(k) for k in keys}
    lake = Path(tempfile.mkdtemp(prefix="shoplake-bench-stream-"))
    os.environ["SHOPLAKE_LAKE"] = str(lake)
    os.environ["SHOPLAKE_KAFKA_PORT"] = str(broker.free_port())
    os.environ.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    began = time.time()
    try:
        broker.start()
        from pipeline.spark import get_spark

        spark = get_spark()
        os.environ["SHOPLAKE_TOPIC"] = f"bench_warmup_{uuid.uuid4().hex[:6]}"
        warmed = _throughput(spark, warmup_events, max_per_batch)  # not counted: see the docstring
        os.environ["SHOPLAKE_TOPIC"] = f"bench_backlog_{uuid.uuid4().hex[:6]}"
        throughput = _throughput(spark, backlog_events, max_per_batch)
        throughput["warmup_events"] = warmed["records"]
        os.environ["SHOPLAKE_TOPIC"] = f"bench_latency_{uuid.uuid4().hex[:6]}"
        latency = _latency(spark, 30.0 if quick else 60.0, warmup=10.0)
    finally:
        broker.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(lake, ignore_errors=True)
    return {
        "stream_events_per_second": throughput["events_per_second"],
        "stream_latency_p50_seconds": latency["p50_seconds"],
        "stream_latency_p95_seconds": latency["p95_seconds"],
        "throughput": throughput,
        "latency": latency,
        "quick": quick,
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "elapsed_seconds": round(time.time() - began, 1),
    }


def _main(argv: list[str]) -> dict:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller backlog, 30 s of latency")
    parser.add_argument(
        "--max-per-batch", type=int, default=None, help="cap the backlog's micro-batches"
    )
    parser.add_argument(
        "--warmup-events", type=int, default=None, help="events drained before measuring"
    )
    parser.add_argument("--backlog-events", type=int, default=None, help="events measured")
    args = parser.parse_args(argv)
    return bench_stream(
        quick=args.quick,
        max_per_batch=args.max_per_batch,
        warmup_events=args.warmup_events,
        backlog_events=args.backlog_events,
    )


if __name__ == "__main__":
    print(json.dumps(_main(sys.argv[1:]), indent=2))
