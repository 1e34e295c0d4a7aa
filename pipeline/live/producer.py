"""Generated order events (docs/contract.md §6), published to Kafka or a drop folder.

Long (~580 lines): the event generator, its shop catalogue and the two sinks share
the seeded random stream that makes a run reproducible.

Every message is one of: a fresh valid event, a malformed one (unparseable
JSON, no event_id, an unknown status, bad items) or a duplicate (an earlier
valid event re-sent with the same event_id). What was sent is returned, so a
test can compute the expected live windows independently of Spark.

Events are orders of the same shop as the batch data (issue 16), so live and
batch figures compare: products and their list prices, customers and their
countries come from the lake's own silver.products and silver.customers when
it has them, else from the landing zone's product files, else from the
generator's catalogue (pipeline/sources); basket sizes, quantities, discounts,
channels and the status mix use the generator's weights (sources/catalog.py).

The content (ids, statuses, items, which messages are malformed or repeated)
depends only on the seed and the catalogue; event_ts is the wall clock at sending time (minus a
small seeded jitter, so events arrive a little out of order, well inside the
2-minute watermark), because the live query's watermark follows event time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from pipeline import storage
from pipeline.config import settings
from pipeline.live import paths
from pipeline.live.health import producer_heartbeat
from pipeline.sources import catalog as cat

MALFORMED_KINDS = ("unparseable", "missing_event_id", "bad_status", "bad_items")
# raw spelling -> canonical status (section 3); the producer spells them many ways
STATUS_SPELLINGS: list[tuple[str, str]] = [
    ("paid", "processing"),
    ("Processing", "processing"),
    ("confirmed", "processing"),
    ("shipped", "shipped"),
    ("In Transit", "shipped"),
    ("dispatched", "shipped"),
    ("delivered", "delivered"),
    ("COMPLETE", "delivered"),
    ("pending", "pending"),
    ("cancelled", "cancelled"),
    ("refunded", "returned"),
]
DISCOUNT_CHANCE = 0.22  # the generator's share of discounted lines on an ordinary day
TOPIC_PARTITIONS = 2
FILE_CHUNK = 500


@dataclass
class ProduceResult:
    target: str
    destination: str
    sent: int = 0  # messages written, of every kind
    valid: int = 0  # distinct valid events
    duplicates: int = 0
    malformed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MALFORMED_KINDS, 0))
    events: list[dict] = field(default_factory=list)  # the distinct valid events, as sent
    elapsed_seconds: float = 0.0

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())


# ---------------------------------------------------------------- generation


def _status_weights() -> list[float]:
    """Each spelling's weight: its canonical status's batch share, split among its spellings."""
    share = dict(zip(cat.STATUSES, cat.STATUS_WEIGHTS, strict=True))
    spellings: dict[str, int] = {}
    for _, canonical in STATUS_SPELLINGS:
        spellings[canonical] = spellings.get(canonical, 0) + 1
    return [share[canonical] / spellings[canonical] for _, canonical in STATUS_SPELLINGS]


STATUS_WEIGHTS = _status_weights()


@dataclass(frozen=True)
class ShopCatalogue:
    """What live orders are drawn from: the batch shop's products, prices and customers."""

    source: str  # silver | landing | generator
    product_ids: tuple[str, ...]
    prices: tuple[str, ...]  # list price as decimal text
    popularity: tuple[float, ...]  # cumulative weights (random.choices cum_weights)
    customer_ids: tuple[str, ...]
    countries: tuple[str, ...]  # the customer's country, "" when unknown


def _popularity(product_ids: list[str]) -> list[float]:
    """The generator's fixed heavy-tailed popularity of a product number (sources/items.py)."""
    import numpy as np

    from pipeline.sources.items import _popularity as weight_of

    numbers = np.array(
        [int(p[1:]) if p[1:].isdigit() else i for i, p in enumerate(product_ids)], dtype=np.int64
    )
    return list(np.cumsum(weight_of(numbers)))


def _price_text(value: object) -> str | None:
    try:
        price = Decimal(str(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    except (ArithmeticError, ValueError):
        return None
    return f"{price}" if Decimal("0") < price <= Decimal("100000") else None


def _catalogue(source: str, products: dict[str, str], customers: dict[str, str]) -> ShopCatalogue:
    ids = sorted(products)
    people = sorted(customers)
    return ShopCatalogue(
        source=source,
        product_ids=tuple(ids),
        prices=tuple(products[p] for p in ids),
        popularity=tuple(_popularity(ids)),
        customer_ids=tuple(people),
        countries=tuple(customers[c] for c in people),
    )


def _silver_catalogue() -> tuple[dict[str, str], dict[str, str]]:
    from pipeline.read import read_arrow

    products: dict[str, str] = {}
    table = read_arrow("silver", "products", ["product_id", "list_price", "is_active"])
    if table is not None:
        for row in table.to_pylist():
            price = _price_text(row["list_price"])
            if row["product_id"] and price and row["is_active"] is not False:
                products[str(row["product_id"])] = price
    customers: dict[str, str] = {}
    table = read_arrow("silver", "customers", ["customer_id", "country"])
    if table is not None:
        for row in table.to_pylist():
            if row["customer_id"]:
                customers[str(row["customer_id"])] = str(row["country"] or "")
    return products, customers


def _landing_catalogue() -> tuple[dict[str, str], dict[str, str]]:
    """Products (Parquet) and customers (JSON Lines) as landed; bad records are skipped."""
    import pyarrow.parquet as pq

    root = Path(settings().lake) / "landing"
    products: dict[str, str] = {}
    for path in sorted((root / "products").glob("[!_.]*.parquet")):
        try:
            rows = pq.read_table(path, columns=["product_id", "list_price", "is_active"])
        except Exception:  # an unreadable file: the other files remain
            continue
        for row in rows.to_pylist():
            pid, price = row["product_id"], _price_text(row["list_price"])
            if isinstance(pid, str) and pid.startswith("P") and price:
                if row["is_active"] is False:
                    products.pop(pid, None)
                else:
                    products[pid] = price
    customers: dict[str, str] = {}
    for path in sorted((root / "customers").glob("[!_.]*.jsonl")):
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                cid = record.get("customer_id") if isinstance(record, dict) else None
                if isinstance(cid, str) and cid.startswith("C"):
                    customers[cid] = str(record.get("country") or "")
    return products, customers


def _generator_catalogue(products: int = 50, customers: int = 2500) -> ShopCatalogue:
    """The generator's own catalogue (a fixed seed) for a lake without any data yet.

    Sized like the default demo lake (10,000 orders: 50 products, 2,500 customers).
    """
    import numpy as np

    from pipeline.sources.contract import CUSTOMER_ID_WIDTH, PRODUCT_ID_WIDTH, WINDOW_END
    from pipeline.sources.products import _make_products

    rng = np.random.default_rng(20_240_601)
    made = _make_products(rng, np.arange(1, products + 1, dtype=np.int64), WINDOW_END)
    items = {
        f"P{int(n):0{PRODUCT_ID_WIDTH}d}": f"{Decimal(int(c)) / 100:.2f}"
        for n, c, active in zip(made["num"], made["list"], made["active"], strict=True)
        if active
    }
    weights = np.asarray(cat.COUNTRY_WEIGHTS) / np.sum(cat.COUNTRY_WEIGHTS)
    country = rng.choice(len(cat.COUNTRIES), customers, p=weights)
    people = {
        f"C{i + 1:0{CUSTOMER_ID_WIDTH}d}": cat.COUNTRIES[int(c)] for i, c in enumerate(country)
    }
    return _catalogue("generator", items, people)


def shop_catalogue() -> ShopCatalogue:
    """The shop live orders come from: Silver, else the landing zone, else the generator."""
    fallback = _generator_catalogue()
    for source, load in (("silver", _silver_catalogue), ("landing", _landing_catalogue)):
        try:
            products, customers = load()
        except Exception:  # an unreadable table: try the next source
            continue
        if products:
            if not customers:
                customers = dict(zip(fallback.customer_ids, fallback.countries, strict=True))
            return _catalogue(source, products, customers)
    return fallback


class EventFactory:
    """Seeded generator of order events and their malformed variants."""

    def __init__(self, seed: int | None, catalogue: ShopCatalogue | None = None):
        self.rng = random.Random(seed)
        self.shop = catalogue or shop_catalogue()
        self._lines = list(range(1, len(cat.LINES_WEIGHTS) + 1))
        self._quantities = list(range(1, len(cat.QUANTITY_WEIGHTS) + 1))

    def _id(self, prefix: str) -> str:
        return f"{prefix}-{uuid.UUID(int=self.rng.getrandbits(128)).hex[:16]}"

    def _item(self) -> dict:
        shop = self.shop
        k = self.rng.choices(range(len(shop.product_ids)), cum_weights=shop.popularity)[0]
        discount = 0
        if self.rng.random() < DISCOUNT_CHANCE:
            discount = self.rng.choices(cat.DISCOUNTS, weights=cat.DISCOUNT_WEIGHTS)[0]
        return {
            "product_id": shop.product_ids[k],
            "quantity": self.rng.choices(self._quantities, weights=cat.QUANTITY_WEIGHTS)[0],
            "unit_price": shop.prices[k],
            "discount_pct": str(discount),
        }

    def valid(self, now: dt.datetime, jitter_seconds: float) -> dict:
        ts = now - dt.timedelta(seconds=self.rng.uniform(0, jitter_seconds))
        status = self.rng.choices(STATUS_SPELLINGS, weights=STATUS_WEIGHTS)[0][0]
        k = self.rng.randrange(len(self.shop.customer_ids))
        country = (
            self.shop.countries[k]
            or self.rng.choices(cat.COUNTRIES, weights=cat.COUNTRY_WEIGHTS)[0]
        )
        lines = self.rng.choices(self._lines, weights=cat.LINES_WEIGHTS)[0]
        return {
            "event_id": self._id("ev"),
            "order_id": self._id("o"),
            "customer_id": self.shop.customer_ids[k],
            "event_ts": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
            "status": status,
            "channel": self.rng.choices(cat.CHANNELS, weights=cat.CHANNEL_WEIGHTS)[0],
            "country": country,
            "items": [self._item() for _ in range(lines)],
        }

    def malformed(self, now: dt.datetime, jitter_seconds: float) -> tuple[str, str, bytes]:
        """(kind, key, value) of a message the live query must quarantine."""
        kind = self.rng.choice(MALFORMED_KINDS)
        event = self.valid(now, jitter_seconds)
        if kind == "unparseable":
            text = json.dumps(event)
            return kind, event["order_id"], text[: self.rng.randint(5, len(text) - 2)].encode()
        if kind == "missing_event_id":
            event.pop("event_id")
        elif kind == "bad_status":
            event["status"] = self.rng.choice(("teleported", "unknown", "", "lost in space"))
        else:
            flaw = self.rng.choice(("empty", "quantity", "fraction", "price", "discount", "none"))
            item = event["items"][0]
            if flaw == "empty":
                event["items"] = []
            elif flaw == "quantity":
                item["quantity"] = self.rng.choice((0, -2, 1001))
            elif flaw == "fraction":
                item["quantity"] = 2.5
            elif flaw == "price":
                item["unit_price"] = self.rng.choice(("0", "-5.00", "250000.00", "abc"))
            elif flaw == "discount":
                item["discount_pct"] = self.rng.choice(("150", "-5"))
            else:
                event.pop("items")
        return kind, event["order_id"], json.dumps(event).encode()


# ---------------------------------------------------------------- sinks


class _KafkaSink:
    """An idempotent producer that rides out a broker restart without loss, doubles or stall.

    Messages sent while no broker answers wait in the producer's buffer (up to
    kafka-python's 120 s delivery timeout). Retries are left unbounded within that
    timeout: a broker shutting down answers NotLeaderForPartition, and a fixed
    count of retries 100 ms apart can run out before the partition is back; the
    producer is idempotent (asked for explicitly, so a conflicting setting raises
    instead of silently turning it off), so a retry never writes a message twice.
    The reconnect backoff is capped at 1 s, as in the Java client:
    kafka-python's 30 s cap left the producer idle for up to ~35 s after the
    broker was back (tests/test_live_crash.py).
    """

    def __init__(self, topic: str):
        from kafka import KafkaProducer

        from pipeline.live.broker import client_options

        self.topic = topic
        ensure_topic(topic)
        self.producer = KafkaProducer(
            **client_options(),
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            reconnect_backoff_max_ms=1000,
            client_id="shoplake-producer",
        )
        self.futures: list = []

    def send(self, key: str, value: bytes) -> None:
        self.futures.append(self.producer.send(self.topic, key=key.encode(), value=value))
        if len(self.futures) >= 2000:
            self.flush()

    def flush(self) -> None:
        self.producer.flush(timeout=60)
        for future in self.futures:
            future.get(timeout=60)  # raises if a message was not acknowledged
        self.futures.clear()

    def close(self) -> None:
        self.flush()
        self.producer.close(timeout=10)


class _FileSink:
    """JSON-lines files, each written under a hidden name then renamed (atomic)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lines: list[bytes] = []
        self.seq = 0
        self.tag = uuid.uuid4().hex[:6]

    def send(self, key: str, value: bytes) -> None:
        self.lines.append(value.replace(b"\n", b" "))
        if len(self.lines) >= FILE_CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self.lines:
            return
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        name = f"events-{stamp}-{self.tag}-{self.seq:06d}.jsonl"
        self.seq += 1
        tmp = self.folder / f".{name}.tmp"
        with open(tmp, "wb") as handle:
            handle.write(b"\n".join(self.lines) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.folder / name)
        self.lines.clear()

    def close(self) -> None:
        self.flush()


def drop_folder() -> Path:
    """The query's drop folder (pipeline.live.paths), which the file sink writes as files."""
    local = storage.local_path(paths.drop_folder())
    if local is None:
        raise ValueError("the file drop target needs a local lake folder")
    return local


def ensure_topic(topic: str, partitions: int = TOPIC_PARTITIONS) -> bool:
    """Create the topic if it does not exist; True when it was created now."""
    from kafka import KafkaAdminClient
    from kafka.errors import TopicAlreadyExistsError

    from pipeline.live.broker import client_options, quiet_client_logs

    with quiet_client_logs():  # the client logs its whole config, secrets included
        admin = KafkaAdminClient(**client_options(), client_id="shoplake-admin")
    try:
        if topic in set(admin.list_topics()):
            return False
        replication = 1 if settings().uses_local_broker else -1
        try:
            admin.create_topics(
                {topic: {"num_partitions": partitions, "replication_factor": replication}},
                wait_for_metadata=True,
            )
        except TopicAlreadyExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(Exception):
            admin.close()


# ---------------------------------------------------------------- produce


def produce(
    events: int | None = 100,
    rate: float | None = None,
    malformed: float = 0.0,
    duplicates: float = 0.0,
    seed: int | None = None,
    target: str = "kafka",
    topic: str | None = None,
    jitter_seconds: float = 5.0,
    stop: threading.Event | None = None,
    progress: Callable[[ProduceResult], None] | None = None,
    keep_events: bool = True,
    on_send: Callable[[dict, float], None] | None = None,
    catalogue: ShopCatalogue | None = None,
) -> ProduceResult:
    """Send `events` messages (None: until `stop` is set) at `rate` per second (None: at once).

    A share `duplicates` of messages repeats an earlier valid event and a share
    `malformed` is invalid; the rest are fresh valid events.
    """
    if target not in ("kafka", "files"):
        raise ValueError(f"unknown target {target!r}: use kafka or files")
    if not 0 <= malformed <= 1 or not 0 <= duplicates <= 1 or malformed + duplicates > 1:
        raise ValueError("malformed and duplicates are shares between 0 and 1 (sum at most 1)")
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive")
    factory = EventFactory(seed, catalogue)
    decide = random.Random(None if seed is None else seed + 7919)
    topic = topic or settings().topic
    if target == "kafka":
        sink: _KafkaSink | _FileSink = _KafkaSink(topic)
        destination = f"{settings().bootstrap_servers}/{topic}"
    else:
        sink = _FileSink(drop_folder())
        destination = str(sink.folder)
    result = ProduceResult(target=target, destination=destination)
    sent_valid: list[dict] = []
    started = time.monotonic()
    last_report = started
    last_file_flush = started
    i = 0
    beat = producer_heartbeat(
        {"kind": "producer", "target": target, "rate": rate, "destination": destination},
        lambda: {"sent": result.sent},
    )
    with contextlib.suppress(OSError):  # the status display must never stop the producer
        beat.start()
    try:
        while events is None or i < events:
            if stop is not None and stop.is_set():
                break
            if rate is not None:
                due = started + i / rate
                delay = due - time.monotonic()
                if delay > 0:
                    if stop is not None:
                        if stop.wait(delay):
                            break
                    else:
                        time.sleep(delay)
            now = dt.datetime.now(dt.UTC)
            draw = decide.random()
            if draw < duplicates and sent_valid:
                event = decide.choice(sent_valid)
                sink.send(event["order_id"], json.dumps(event).encode())
                result.duplicates += 1
            elif draw < duplicates + malformed:
                kind, key, value = factory.malformed(now, jitter_seconds)
                sink.send(key, value)
                result.malformed[kind] += 1
            else:
                event = factory.valid(now, jitter_seconds)
                sink.send(event["order_id"], json.dumps(event).encode())
                if keep_events or len(sent_valid) < 1000:
                    sent_valid.append(event)
                elif decide.random() < 0.01:  # bounded memory for endless runs
                    sent_valid[decide.randrange(len(sent_valid))] = event
                result.valid += 1
                if keep_events:
                    result.events.append(event)
                if on_send is not None:
                    on_send(event, time.time())
            result.sent += 1
            i += 1
            tick = time.monotonic()
            if rate is not None and isinstance(sink, _FileSink) and tick - last_file_flush >= 1:
                sink.flush()  # a file a second keeps the drop folder near real time
                last_file_flush = tick
            if progress is not None and tick - last_report >= 1:
                result.elapsed_seconds = tick - started
                progress(result)
                last_report = tick
    finally:
        beat.stop()
        sink.close()
    result.elapsed_seconds = time.monotonic() - started
    return result


class BackgroundProducer:
    """A producer thread for the Live page: runs until stopped."""

    def __init__(self, **kwargs):
        self.stop_event = threading.Event()
        self.result: ProduceResult | None = None
        self.error: str | None = None
        self.live = ProduceResult(target=kwargs.get("target", "kafka"), destination="")
        kwargs.setdefault("events", None)
        kwargs["keep_events"] = False
        kwargs["stop"] = self.stop_event
        kwargs["progress"] = self._progress
        self.thread = threading.Thread(
            target=self._run, kwargs=kwargs, name="shoplake-producer", daemon=True
        )

    def _progress(self, result: ProduceResult) -> None:
        self.live = result

    def _run(self, **kwargs) -> None:
        try:
            self.result = produce(**kwargs)
            self.live = self.result
        except Exception as exc:  # reported on the page, never raised into Streamlit
            self.error = f"{type(exc).__name__}: {exc}"

    def start(self) -> BackgroundProducer:
        self.thread.start()
        return self

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def stop(self, timeout: float = 30.0) -> ProduceResult | None:
        self.stop_event.set()
        self.thread.join(timeout)
        return self.result


_background: BackgroundProducer | None = None
_background_lock = threading.Lock()


def start_background(**kwargs) -> BackgroundProducer:
    """At most one background producer per process; starting twice returns the running one."""
    global _background
    with _background_lock:
        if _background is not None and _background.running:
            return _background
        _background = BackgroundProducer(**kwargs).start()
        return _background


def background() -> BackgroundProducer | None:
    return _background


def stop_background() -> ProduceResult | None:
    with _background_lock:
        if _background is None:
            return None
        return _background.stop()
