"""Support for the live tests: a real local Kafka broker for the session, and an
independent computation of the live windows.

The broker runs from Apache Kafka's own jars on a free port, with its data in
a temporary folder, and is stopped when the session ends. The expected
windows are computed here in plain Python decimals from the events the
producer says it sent, without any ShopLake code, so a test compares the
stream against an independent oracle; `assert_exact` is the one check of the
live tables that tests/test_live.py and tests/test_live_crash.py share.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

REVENUE_SPELLINGS = {
    # raw spelling the producer uses -> revenue-bearing (docs/contract.md §3 and §5)
    "paid": True,
    "processing": True,
    "confirmed": True,
    "shipped": True,
    "in transit": True,
    "dispatched": True,
    "delivered": True,
    "complete": True,
    "pending": False,
    "cancelled": False,
    "refunded": False,
}
CENT = Decimal("0.01")


@dataclass(frozen=True)
class KafkaBroker:
    home: Path
    port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """The real local broker on a free port for the whole session, stopped at the end."""
    from pipeline.live import broker

    saved = {k: os.environ.get(k) for k in ("SHOPLAKE_KAFKA_PORT", "KAFKA_BOOTSTRAP_SERVERS")}
    os.environ.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    port = broker.free_port()
    os.environ["SHOPLAKE_KAFKA_PORT"] = str(port)
    home = tmp_path_factory.mktemp("kafka_broker")
    handle = KafkaBroker(home=home, port=port)
    try:
        status = broker.start(home=home)
        assert status.healthy, status
        yield handle
    finally:
        broker.stop(home=home)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ---------------------------------------------------------------- the oracle


def _minute(event_ts: str) -> dt.datetime:
    ts = dt.datetime.strptime(event_ts, "%Y-%m-%dT%H:%M:%S.%fZ")
    return ts.replace(second=0, microsecond=0)


def _line_net(item: dict) -> Decimal:
    quantity = Decimal(int(item["quantity"]))
    price = Decimal(str(item["unit_price"]))
    discount = Decimal(str(item["discount_pct"]))
    return (quantity * price * (100 - discount) / 100).quantize(CENT, rounding=ROUND_HALF_UP)


def expected_minutes(events: list[dict]) -> dict[dt.datetime, tuple]:
    """window_start -> (orders, units, net_revenue, avg_order_value) of distinct valid events."""
    seen: set[str] = set()
    totals: dict[dt.datetime, list] = {}
    for event in events:
        if event["event_id"] in seen:
            continue
        seen.add(event["event_id"])
        row = totals.setdefault(_minute(event["event_ts"]), [0, 0, Decimal("0.00")])
        if not REVENUE_SPELLINGS[event["status"].strip().lower()]:
            continue
        row[0] += 1
        row[1] += sum(int(i["quantity"]) for i in event["items"])
        row[2] += sum(_line_net(i) for i in event["items"])
    return {
        minute: (
            orders,
            units,
            net,
            (net / orders).quantize(CENT, rounding=ROUND_HALF_UP) if orders else None,
        )
        for minute, (orders, units, net) in totals.items()
    }


def gold_minutes(lake: Path) -> dict[dt.datetime, tuple]:
    """gold.live_sales_minute read with delta-rs, keyed like expected_minutes."""
    rows = table_rows(lake, "gold", "live_sales_minute")
    return {
        r["window_start"].astimezone(dt.UTC).replace(tzinfo=None): (
            r["orders"],
            r["units"],
            r["net_revenue"],
            r["avg_order_value"],
        )
        for r in rows
    }


def assert_exact(
    lake: Path, events: list[dict], sent: int, malformed: int, duplicates: int
) -> None:
    """Gold holds exactly the distinct valid events; nothing else was lost or doubled.

    Also the stream's reconciliation: bronze = stored + quarantined + duplicates + late.
    """
    assert gold_minutes(lake) == expected_minutes(events)
    stored = [r["event_id"] for r in table_rows(lake, "silver", "order_events")]
    assert len(stored) == len(set(stored)) == len({e["event_id"] for e in events})
    assert len(table_rows(lake, "bronze", "order_events")) == sent
    quarantined = [
        r for r in table_rows(lake, "silver", "quarantine") if r["source_table"] == "order_events"
    ]
    assert len(quarantined) == malformed
    dq = [r for r in table_rows(lake, "gold", "dq_results") if r["layer"] == "live"]
    checked = sum(r["rows_checked"] for r in dq if r["rule"] == "malformed_record")
    assert checked == sent, "every record checked exactly once"
    failed = {
        rule: sum(r["rows_failed"] for r in dq if r["rule"] == rule)
        for rule in ("unique_event_id", "within_watermark")
    }
    assert failed == {"unique_event_id": duplicates, "within_watermark": 0}
    assert sent == len(stored) + len(quarantined) + duplicates


def table_rows(lake: Path, layer: str, table: str) -> list[dict]:
    from deltalake import DeltaTable

    path = lake / layer / table
    if not (path / "_delta_log").exists():
        return []
    return DeltaTable(str(path)).to_pyarrow_table().to_pylist()


def wait_for(condition: Callable[[], bool], timeout: float, what: str, every: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
