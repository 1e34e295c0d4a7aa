"""The live stream: rules, windows, exactly-once delivery, broker restarts, the page.

Long (~460 lines): the stream's tests share one broker fixture and lake helpers.

The end-to-end tests produce events (with malformed ones and re-sent
duplicates), run the one streaming query with availableNow semantics, and
compare gold.live_sales_minute with an independent Python computation over
what the producer sent (tests/live_support.py). They use small event counts
so the whole module stays within a few minutes.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from pipeline import catalog
from tests.live_support import (
    assert_exact,
    expected_minutes,
    gold_minutes,
    kafka_broker,  # noqa: F401  (session fixture)
    table_rows,
    wait_for,
)
from tests.test_catalog import assert_written_columns

ROOT = Path(__file__).resolve().parent.parent


class SimulatedCrashError(RuntimeError):
    pass


# ---------------------------------------------------------------- pure transformations


def test_event_rules_and_totals(spark) -> None:
    """Each malformation fails its own rule; totals equal the exploded lines' sums."""
    from pyspark.sql import functions as F

    from pipeline.live import events as ev
    from pipeline.quality.expectations import QUARANTINE_RULES, flag

    good = (
        '{"event_id":"e1","order_id":"o1","event_ts":"2025-03-01T10:00:30.500Z",'
        '"status":" In Transit ","items":['
        '{"quantity":2,"unit_price":"10.125","discount_pct":"12.5"},'
        '{"quantity":"1","unit_price":5,"discount_pct":null}]}'
    )
    cases = {
        "good": good,
        "truncated": good[:40],
        "no_event_id": good.replace('"event_id":"e1",', ""),
        "bad_ts": good.replace("2025-03-01T10:00:30.500Z", "yesterday"),
        "old_ts": good.replace("2025-03-01T10:00:30.500Z", "1999-12-31"),
        "bad_status": good.replace(" In Transit ", "teleported"),
        "no_items": good.split(',"items"')[0] + ',"items":[]}',
        "fraction": good.replace('"quantity":2', '"quantity":2.5'),
        "price": good.replace('"unit_price":5', '"unit_price":0'),
        "discount": good.replace('"discount_pct":"12.5"', '"discount_pct":"150"'),
    }
    raw = spark.createDataFrame(list(cases.items()), "case string, value string").withColumn(
        "_ingested_at", F.current_timestamp()
    )
    flagged = {
        r["case"]: r[QUARANTINE_RULES]
        for r in flag(ev.parse_events(raw), ev.EXPECTATIONS).collect()
    }
    assert flagged == {
        "good": [],
        "truncated": ["malformed_record"],
        "no_event_id": ["missing_event_id"],
        "bad_ts": ["invalid_event_ts"],
        "old_ts": ["event_ts_out_of_range"],
        "bad_status": ["invalid_status"],
        "no_items": ["no_items"],
        "fraction": ["invalid_quantity"],
        "price": ["invalid_unit_price"],
        "discount": ["invalid_discount"],
    }

    valid = ev.parse_events(raw.filter(F.col("case") == "good"))
    lines = ev.event_lines(valid).collect()
    # 2 * 10.125 * 0.875 = 17.71875 -> 17.72 (half up); 1 * 5 * 1 = 5.00
    assert [r["line_net"] for r in lines] == [Decimal("17.72"), Decimal("5.00")]
    total = ev.event_totals(valid).first()
    assert (total["units"], total["net_revenue"], total["is_revenue"]) == (
        3,
        Decimal("22.72"),
        True,
    )
    window = ev.event_totals(valid).select(F.date_format("window_start", "yyyy-MM-dd HH:mm"))
    assert window.first()[0] == "2025-03-01 10:00"
    minute = ev.minute_sales(ev.event_totals(valid)).first()
    assert (minute["orders"], minute["units"], minute["avg_order_value"]) == (
        1,
        3,
        Decimal("22.72"),
    )


def test_minute_alerts_spike_and_silence(spark) -> None:
    """A revenue spike against a quiet hour alerts once; five empty minutes alert once."""
    from pyspark.sql import functions as F

    from pipeline.live import events as ev

    start = dt.datetime(2025, 3, 1, 9, 0)
    rows = []
    for i in range(30):
        orders, revenue = 10 + i % 3, Decimal(100 + (i % 3) * 5)
        if i == 20:
            revenue = Decimal(5000)  # the spike
        if i >= 24:
            continue  # silence from minute 24: no rows at all, the series fills in zeros
        rows.append((start + dt.timedelta(minutes=i), orders, revenue))
    minutes = spark.createDataFrame(
        rows, "window_start timestamp, orders long, net_revenue decimal(18,2)"
    )
    series = ev.zero_filled(minutes, F.lit(start), F.lit(start + dt.timedelta(minutes=29)))
    alerts = ev.minute_alerts(series, F.lit(start)).collect()
    found = {(a["window_start"], a["metric"], a["kind"]) for a in alerts}
    assert (start + dt.timedelta(minutes=20), "net_revenue", "spike") in found
    assert (start + dt.timedelta(minutes=28), "orders", "no_orders") in found
    assert sum(1 for a in alerts if a["kind"] == "no_orders") == 1
    assert all(abs(a["z_score"]) > 3 for a in alerts if a["kind"] != "no_orders")


def test_one_pass_batch_frame_equals_the_dataframe_functions(spark) -> None:
    """The stream's one Spark job plus Arrow steps give what the DataFrame functions give.

    Rules, quarantine rows (with their hash), first deliveries and minute totals,
    on a batch with malformed records, a re-sent event and an item too large for
    the money type (quarantined, and it must not fail the batch).
    """
    from pyspark.sql import functions as F

    from pipeline.live import arrow_rules, plan
    from pipeline.live import events as ev
    from pipeline.quality.expectations import count_failures, flag, is_quarantined

    def event(event_id: str, ts: str, status: str = "shipped", **item: object) -> str:
        line = {"quantity": 2, "unit_price": "10.125", "discount_pct": "12.5", **item}
        return (
            f'{{"event_id":"{event_id}","order_id":"o-{event_id}","event_ts":"{ts}",'
            f'"status":"{status}","items":[{_json(line)}]}}'
        )

    values = [
        event("e1", "2025-03-01T10:00:30.500Z"),
        event("e2", "2025-03-01T10:00:59.999Z", unit_price="0.015", quantity=3),
        event("e3", "2025-03-01T10:01:00Z", status="cancelled"),
        event("e1", "2025-03-01T10:00:30.500Z"),  # re-sent: the first offset wins
        event("e4", "2025-03-01T10:02:10Z", quantity=999999999, unit_price="99999999999999"),
        event("e5", "yesterday"),
        event("e6", "2025-03-01T10:02:10Z", discount_pct="150"),
        '{"event_id": "e7", "order_id"',
        "not json",
        event("e8", "2025-03-01T10:02:10Z", status="Delivered", quantity=1),
    ]
    rows = [(v, "k", "orders", i % 2, 100 + i, None, None) for i, v in enumerate(values)]
    kafka = spark.createDataFrame(
        rows,
        "value string, key string, topic string, partition int, offset long, "
        "kafka_timestamp timestamp, source_file string",
    )
    now = dt.datetime(2025, 3, 1, 10, 5, tzinfo=dt.UTC)
    raw = kafka.select(
        *[F.col(c) for c in plan.RAW_COLUMNS],
        F.concat_ws("/", "topic", "partition", "offset").alias("_record_id"),
        F.lit("live-kafka-test-000001").alias("_batch_id"),
        plan.batch_ts(now).alias("_ingested_at"),
    )
    frame = plan.batch_frame(raw).toArrow()
    assert frame.num_rows == len(values), "every record stays for Bronze"

    flagged = flag(ev.parse_events(raw), ev.EXPECTATIONS)
    expected_counts = count_failures(flagged, ev.EXPECTATIONS)
    assert arrow_rules.rule_counts(frame, ev.EXPECTATIONS) == expected_counts
    assert {c.rule: c.rows_failed for c in expected_counts if c.rows_failed} == {
        "malformed_record": 2,
        "invalid_event_ts": 1,
        "invalid_quantity": 1,
        "invalid_unit_price": 1,
        "invalid_discount": 1,
    }

    def rows_of(table, key: str) -> list[dict]:
        return sorted(table.to_pylist(), key=lambda r: str(r[key]))

    quarantined = arrow_rules.unprefixed(
        frame.filter(frame["_q_source_table"].is_valid()), plan.QUARANTINE_PREFIX
    )
    expected_quarantine = plan.quarantine_rows(flagged.filter(is_quarantined())).toArrow()
    assert rows_of(quarantined, "record_id") == rows_of(expected_quarantine, "record_id")

    valid = flagged.filter(~is_quarantined())
    first, _ = ev.first_per_event(valid, ["partition", "offset", "_record_id"])
    expected_events = ev.event_totals(first, keep=plan.LINEAGE_COLUMNS).toArrow()
    events = arrow_rules.first_deliveries(frame)
    assert events.column_names == expected_events.column_names
    assert rows_of(events, "event_id") == rows_of(expected_events, "event_id")
    assert [r["_record_id"] for r in rows_of(events, "event_id")][0] == "orders/0/100"

    minutes = ev.minute_totals(events)
    expected_minutes = ev.minute_sales(ev.event_totals(first)).toArrow()
    assert rows_of(minutes, "window_start") == rows_of(
        expected_minutes.select(minutes.column_names), "window_start"
    )
    assert [r["orders"] for r in rows_of(minutes, "window_start")] == [2, 0, 1]


def _json(value: dict) -> str:
    import json

    return json.dumps(value)


# ---------------------------------------------------------------- end to end


@pytest.mark.kafka
@pytest.mark.usefixtures("kafka_broker")
def test_kafka_exactly_once_across_stop_crash_and_restart(
    spark, empty_lake: Path, topic: str
) -> None:
    from pipeline.live import producer, stream

    first = producer.produce(events=240, malformed=0.1, duplicates=0.15, seed=101)
    # 1. stop mid-stream: a graceful stop after the first micro-batch
    stream.start_background(spark, source="kafka", available_now=True, max_per_batch=50)
    wait_for(lambda: stream.status()["batches"] >= 1, 240, "the first micro-batch")
    stream.stop()
    assert not stream.status()["active"]
    assert len(table_rows(empty_lake, "bronze", "order_events")) < first.sent

    # 2. a crash after the event store was written, before the gold tables
    crashed: list[int] = []

    def crash_once(step: str, batch_id: int) -> None:
        if step == "store" and not crashed:
            crashed.append(batch_id)
            raise SimulatedCrashError("simulated crash between two writes")

    with pytest.raises(stream.StreamError, match="SimulatedCrashError"):
        stream.run_foreground("kafka", available_now=True, max_per_batch=80, fault=crash_once)
    assert crashed

    # 3. more events arrive while the query is down; a restart finishes exactly
    second = producer.produce(events=120, malformed=0.1, duplicates=0.2, seed=102)
    summary = stream.run_foreground("kafka", available_now=True, max_per_batch=200)
    assert summary.batches >= 1
    assert_exact(
        empty_lake,
        first.events + second.events,
        sent=first.sent + second.sent,
        malformed=first.malformed_total + second.malformed_total,
        duplicates=first.duplicates + second.duplicates,
    )
    # 4. running again finds nothing new and changes nothing
    before = gold_minutes(empty_lake)
    again = stream.run_foreground("kafka", available_now=True)
    assert again.rows == 0 and gold_minutes(empty_lake) == before


@pytest.mark.kafka
def test_query_recovers_from_a_broker_restart(
    spark, empty_lake: Path, topic: str, request: pytest.FixtureRequest
) -> None:
    from pipeline.live import broker, producer, stream

    home = request.getfixturevalue("kafka_broker").home
    sent = producer.produce(events=60, seed=201).events
    stream.start_background(spark, source="kafka", trigger_seconds=1.0)
    try:
        wait_for(lambda: gold_minutes(empty_lake) == expected_minutes(sent), 240, "first events")
        broker.stop(home=home)
        assert not broker.status(home=home).running
        broker.start(home=home)
        sent += producer.produce(events=60, seed=202).events
        wait_for(
            lambda: gold_minutes(empty_lake) == expected_minutes(sent),
            240,
            "the events sent after the broker restart",
        )
        status = stream.status()
        assert status["active"], status
        wait_for(lambda: stream.status()["consumer_lag"] == 0, 60, "zero consumer lag")
    finally:
        stream.stop()


def test_file_drop_source_is_exact(spark, empty_lake: Path) -> None:
    from pipeline.live import producer, stream

    first = producer.produce(events=200, malformed=0.1, duplicates=0.15, seed=301, target="files")
    stream.run_foreground("files", available_now=True)
    second = producer.produce(events=100, malformed=0.1, duplicates=0.2, seed=302, target="files")
    summary = stream.run_foreground("files", available_now=True)
    assert summary.rows == second.sent
    assert not list((empty_lake / "stream_drop").glob(".*.tmp")), "files are renamed into place"
    assert_exact(
        empty_lake,
        first.events + second.events,
        sent=first.sent + second.sent,
        malformed=first.malformed_total + second.malformed_total,
        duplicates=first.duplicates + second.duplicates,
    )
    live = [t.ref for t in catalog.tables(kind="live") if t.name != "live_alerts"]  # none fired
    assert_written_columns(empty_lake, [*live, "silver.quarantine", "gold.dq_results"])


def test_cli_verbs(
    spark, empty_lake: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.live import broker, cli

    monkeypatch.setenv("SHOPLAKE_KAFKA_PORT", str(broker.free_port()))
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)

    assert cli.main(["produce", "--events", "50", "--target", "files", "--seed", "7"]) == 0
    assert "produced 50 messages" in capsys.readouterr().out
    assert cli.main(["stream", "run", "--source", "files", "--available-now"]) == 0
    assert "50 records" in capsys.readouterr().out
    # no broker listens on that port: a readable failure
    assert cli.main(["produce", "--events", "5"]) == 1
    assert "cannot reach Kafka" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        cli.main(["produce", "--malformed", "2"])
    assert usage.value.code == 2


# ---------------------------------------------------------------- the page


@pytest.mark.kafka
def test_live_page_starts_and_stops_everything(
    spark, empty_lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    from pipeline.live import broker, producer, stream

    monkeypatch.setenv("SHOPLAKE_STREAM_SOURCE", "files")
    monkeypatch.setenv("SHOPLAKE_KAFKA_PORT", str(broker.free_port()))
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    producer.produce(events=40, seed=401, target="files")

    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=240)
    at.run()
    at.switch_page("pages/8_Live.py").run()
    assert not at.exception, [e.value for e in at.exception]

    try:
        at.button(key="live_broker_start").click().run()
        notice = at.session_state["live_notice"] if "live_notice" in at.session_state else None
        assert broker.status().healthy, notice  # the page's own message, when it failed
        at.button(key="live_broker_stop").click().run()
        assert not broker.status().running

        at.radio(key="live_producer_target").set_value("files").run()
        at.button(key="live_producer_start").click().run()
        assert producer.background() is not None and producer.background().running
        at.button(key="live_producer_stop").click().run()
        assert not producer.background().running

        at.button(key="live_query_start").click().run()
        assert stream.status()["active"]
        wait_for(lambda: stream.status()["batches"] >= 1, 240, "a batch started from the page")
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        labels = {m.label for m in at.metric}
        assert {"Orders, last hour", "Query", "Consumer lag (offsets)"} <= labels
        at.button(key="live_query_stop").click().run()
        assert not stream.status()["active"]
        assert not at.exception, [e.value for e in at.exception]
    finally:
        stream.stop()
        producer.stop_background()
        broker.stop()


# ---------------------------------------------------------------- issue 16: realism, status


def _aov(events: list[dict]) -> Decimal:
    windows = expected_minutes(events).values()
    orders = sum(w[0] for w in windows)
    return sum((w[2] for w in windows), Decimal(0)) / orders


def test_live_orders_come_from_the_batch_shop(
    use_lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Live AOV within 25 % of the batch AOV; products and customers are the lake's own."""
    from deltalake import DeltaTable

    from pipeline.live import producer

    now = dt.datetime.now(dt.UTC)
    factory = producer.EventFactory(17)
    assert factory.shop.source == "silver"
    events = [factory.valid(now, 0) for _ in range(4000)]
    daily = DeltaTable(str(use_lake / "gold" / "daily_sales")).to_pandas()
    batch = daily["net_revenue"].sum() / Decimal(int(daily["orders"].sum()))
    live = _aov(events)
    assert abs(live / batch - 1) <= Decimal("0.25"), (live, batch)
    products = set(DeltaTable(str(use_lake / "silver" / "products")).to_pandas()["product_id"])
    customers = set(DeltaTable(str(use_lake / "silver" / "customers")).to_pandas()["customer_id"])
    assert {i["product_id"] for e in events for i in e["items"]} <= products
    assert {e["customer_id"] for e in events} <= customers
    baskets = [len(e["items"]) for e in events]
    assert max(baskets) == 5 and 2.2 < sum(baskets) / len(baskets) < 2.9  # the generator's 1..5

    # a lake without data: the generator's own catalogue (no batch to compare with)
    monkeypatch.setenv("SHOPLAKE_LAKE", str(tmp_path / "bare"))
    bare = producer.EventFactory(17)
    assert bare.shop.source == "generator"
    event = bare.valid(now, 0)
    assert event["customer_id"].startswith("C") and len(event["customer_id"]) == 8
    assert all(
        i["product_id"].startswith("P") and len(i["product_id"]) == 7 for i in event["items"]
    )


def test_home_says_stopped_right_after_the_query_stops(
    spark,
    empty_lake: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 16.1: status from the running query itself, the same on Home, Live and the CLI."""
    from streamlit.testing.v1 import AppTest

    from pipeline.live import cli, health, producer, stream

    monkeypatch.setenv("SHOPLAKE_STREAM_SOURCE", "files")
    producer.produce(events=40, seed=402, target="files")

    def home() -> str:
        at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=120)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return " ".join(e.value for e in [*at.success, *at.info, *at.warning])

    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=240)
    at.run()
    at.switch_page("pages/8_Live.py").run()
    try:
        at.button(key="live_query_start").click().run()
        wait_for(lambda: stream.status()["batches"] >= 1, 240, "a batch started from the page")
        assert health.live_status(check_broker=False).running
        assert "Stream running" in home()
        assert cli.main(["stream", "status"]) == 0  # the command line says the same
        assert "Stream running: query on files" in capsys.readouterr().out
        at.run()
        assert {m.label: m.value for m in at.metric}["Query"] == "running"
        at.button(key="live_query_stop").click().run()
        assert not at.exception, [e.value for e in at.exception]
        shown = home()
        assert "Stream stopped" in shown and "Stream running" not in shown, shown
        assert {m.label: m.value for m in at.metric}["Query"] == "stopped"
        assert cli.main(["stream", "status"]) == 3
        assert "Stream stopped" in capsys.readouterr().out
    finally:
        stream.stop()


# ---------------------------------------------------------------- the page's reads


def _one_minute(lake: Path, start: pd.Timestamp, orders: int) -> None:
    """Append one row to gold.live_sales_minute (a new Delta version)."""
    import pyarrow as pa
    from deltalake import write_deltalake

    ts = pa.timestamp("us", tz="UTC")
    money = pa.decimal128(18, 2)
    row = pa.table(
        {
            "window_start": pa.array([start], ts),
            "window_end": pa.array([start + pd.Timedelta(minutes=1)], ts),
            "orders": pa.array([orders], pa.int64()),
            "units": pa.array([2 * orders], pa.int64()),
            "net_revenue": pa.array([Decimal("10.00") * orders], money),
            "avg_order_value": pa.array([Decimal("10.00")], money),
        }
    )
    write_deltalake(str(lake / "gold" / "live_sales_minute"), row, mode="append")


def test_live_page_reads_through_the_pages_cached_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Live page reads its Gold tables with pipeline.read, once per Delta version."""
    from streamlit.testing.v1 import AppTest

    from pipeline import read
    from tests.pages_support import HOME, PAGE_FILES, metric

    lake = tmp_path / "lake"
    monkeypatch.setenv("SHOPLAKE_LAKE", str(lake))
    now = pd.Timestamp.now(tz="UTC").floor("min")
    _one_minute(lake, now - pd.Timedelta(minutes=10), orders=3)
    calls: list[tuple[str, str]] = []
    real = read.read_table

    def counting(layer: str, table: str, columns=None) -> pd.DataFrame:
        calls.append((layer, table))
        return real(layer, table, columns)

    monkeypatch.setattr(read, "read_table", counting)
    at = AppTest.from_file(str(HOME), default_timeout=120)
    at.run()
    at.switch_page(PAGE_FILES["live"]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert metric(at, "Orders, last hour") == "3"
    assert {("gold", "live_sales_minute"), ("gold", "live_alerts")} <= set(calls)

    seen = len(calls)
    at.run()  # no new commit: both tables come from the cache
    assert ("gold", "live_sales_minute") not in calls[seen:]
    assert metric(at, "Orders, last hour") == "3"

    _one_minute(lake, now - pd.Timedelta(minutes=5), orders=4)
    seen = len(calls)
    at.run()  # a new version is read again
    assert calls[seen:].count(("gold", "live_sales_minute")) == 1
    assert metric(at, "Orders, last hour") == "7"


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch) -> None:
    """Kafka's storage tool reads a cluster id that starts with '-' as an option (one
    random id in 64 does, and a suite run's broker once failed so): it is drawn again."""
    import uuid

    from pipeline.live import broker

    dash = uuid.UUID(bytes=b"\xf8" + bytes(15))  # base64 of 0xf8...: '-' first
    plain = uuid.UUID(bytes=bytes(range(16)))
    drawn = iter([dash, dash, plain])
    monkeypatch.setattr(broker.uuid, "uuid4", lambda: next(drawn))
    got = broker._kafka_cluster_uuid()
    assert got == "AAECAwQFBgcICQoLDA0ODw"
    assert not got.startswith("-")
