"""Hostile landing files, built at test time (nothing large is committed).

One clean baseline batch (``batch-000001``) gives the hostile records something
to refer to (items need their order in Silver). Every hostile file belongs to
one batch, ``batch-000002``, named ``batch-000002.<case>.<ext>``: so all of them
are ingested by one run, and "the other files of the batch" of an unreadable
file are all the rest. Keys are unique per case, so no record of one case is a
duplicate or an older version of another, and every Bronze row of a case's
file must end in Silver or in quarantine.

Each case states what its file must end as (``Expect``); ``tests/test_corpus.py``
checks it. The decisions behind the expectations are documented in
``pipeline/bronze/ingest.py``.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.contract import SOURCES

BASE_BATCH = "batch-000001"
HOSTILE_BATCH = "batch-000002"
MB = 1_000_000

ORDER_COLS = list(SOURCES["orders"].columns)
ITEM_COLS = list(SOURCES["order_items"].columns)
PRODUCT_COLS = list(SOURCES["products"].columns)

MALFORMED = frozenset({"malformed_record"})


@dataclass(frozen=True)
class Expect:
    """What one hostile file must end as."""

    status: str = "ingested"  # its row in bronze._ingested_files
    bronze: int = 0  # rows it adds to Bronze
    silver: int = 0  # of those, rows in Silver
    quarantined: int = 0  # of those, rows in silver.quarantine
    rules: frozenset[str] = frozenset()  # exactly the rules its quarantined rows name
    note: str | None = None  # text the ingest log's error column must contain
    silver_values: dict[str, dict[str, str | None]] = field(default_factory=dict)  # as text
    missing: tuple[str, ...] | None = None  # the log's missing_columns, when it matters
    extra: tuple[str, ...] | None = None  # the log's extra_columns, when it matters


@dataclass(frozen=True)
class Case:
    name: str
    source: str
    suffix: str
    content: Callable[[], bytes]
    expect: Expect

    @property
    def file_name(self) -> str:
        return f"{HOSTILE_BATCH}.{self.name}{self.suffix}"


# ------------------------------------------------------------------ writers


def csv_bytes(
    header: Sequence[str], rows: Sequence[Sequence[str]], sep: str = ",", eol: str = "\n"
) -> bytes:
    """RFC 4180 text, quoting only where needed (as the generator and spreadsheets do)."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=sep, lineterminator=eol, quoting=csv.QUOTE_MINIMAL)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def order(
    order_id: str,
    status: str = "shipped",
    order_ts: str = "2025-03-05T10:00:00Z",
    updated_at: str | None = None,
    channel: str = "web",
    country: str = "DE",
) -> list[str]:
    """A valid order row in contract column order."""
    return [
        order_id,
        "C-BASE-1",
        order_ts,
        status,
        channel,
        "card",
        country,
        updated_at if updated_at is not None else order_ts,
    ]


def item(line_no: int, quantity: str = "1", unit_price: str = "9.99", discount: str = "0"):
    """A line of O-BASE-1 (an order in Silver), in contract column order."""
    return ["O-BASE-1", str(line_no), "P-BASE-1", quantity, unit_price, discount]


def customer(customer_id: str, **changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "customer_id": customer_id,
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "signup_date": "2024-05-01",
        "country": "GB",
        "city": "London",
        "segment": "consumer",
        "updated_at": "2025-03-01T00:00:00Z",
    }
    row.update(changes)
    return row


def jsonl(*records: object) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")


def product_table(ids: Sequence[str], **columns: pa.Array | list) -> pa.Table:
    """Products with string columns unless a case overrides one (or drops it with None)."""
    n = len(ids)
    data: dict[str, pa.Array | list] = {
        "product_id": list(ids),
        "name": [f"Product {i}" for i in ids],
        "category": ["Books"] * n,
        "subcategory": ["Novels"] * n,
        "brand": ["Acme"] * n,
        "list_price": ["12.50"] * n,
        "unit_cost": ["7.00"] * n,
        "is_active": ["true"] * n,
        "updated_at": ["2025-03-01T00:00:00Z"] * n,
    }
    for name, values in columns.items():
        if values is None:
            data.pop(name)
        else:
            data[name] = values
    return pa.table(data)


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


# ------------------------------------------------------------------ baseline


def baseline() -> dict[str, tuple[str, bytes]]:
    """Clean batch 1: orders O-BASE-1..4 with items, their customers and products."""
    orders = [
        order("O-BASE-1", "shipped", "2025-03-01T10:00:00Z"),
        order("O-BASE-2", "delivered", "2025-03-02T11:00:00Z"),
        order("O-BASE-3", "processing", "2025-03-03T12:00:00Z"),
        order("O-BASE-4", "cancelled", "2025-03-04T13:00:00Z"),
    ]
    items = [
        ["O-BASE-1", "1", "P-BASE-1", "2", "10.00", "0"],
        ["O-BASE-1", "2", "P-BASE-2", "1", "5.50", "10"],
        ["O-BASE-2", "1", "P-BASE-1", "1", "10.00", "0"],
        ["O-BASE-3", "1", "P-BASE-2", "3", "5.50", "0"],
        ["O-BASE-4", "1", "P-BASE-1", "1", "10.00", "0"],
    ]
    return {
        "orders": (f"{BASE_BATCH}.csv", csv_bytes(ORDER_COLS, orders)),
        "order_items": (f"{BASE_BATCH}.csv", csv_bytes(ITEM_COLS, items)),
        "customers": (f"{BASE_BATCH}.jsonl", jsonl(customer("C-BASE-1"), customer("C-BASE-2"))),
        "products": (
            f"{BASE_BATCH}.parquet",
            parquet_bytes(product_table(["P-BASE-1", "P-BASE-2"])),
        ),
    }


# ------------------------------------------------------------------ cases


def _orders_cases() -> list[Case]:
    two = [order("{k}-1"), order("{k}-2", "delivered")]

    def rows(key: str) -> list[list[str]]:
        return [[v.replace("{k}", key) for v in row] for row in two]

    valid_gz = gzip_bytes(csv_bytes(ORDER_COLS, rows("O-GZ")))
    reordered = list(reversed(ORDER_COLS))
    bad_utf8 = (
        csv_bytes(ORDER_COLS, [])
        + b"O-U8-1,C-BASE-1,2025-03-05T10:00:00Z,shipped,web,card,D\xffE,2025-03-05\n"
        + b"O-U8-2,C-BASE-1,2025-03-05T10:00:00Z,ship\xc3ped,web,card,DE,2025-03-05\n"
        + b"O-U8-3,C-BASE-1,2025-03-05T10:00:00Z,shipped,web,card,DE,2025-03-05\n"
    )
    far_dates = [
        order("O-FD-1", order_ts="0001-01-01", updated_at=""),
        order("O-FD-2", order_ts="1899-12-31T23:59:59Z", updated_at=""),
        order("O-FD-3", order_ts="9999-12-31T23:59:59Z", updated_at=""),
        order("O-FD-4", order_ts="2999-01-01", updated_at=""),
        order("O-FD-5", order_ts="9999999999", updated_at=""),
        order("O-FD-6", order_ts="+10000-01-01T00:00:00Z", updated_at=""),
        order("O-FD-7", updated_at="0001-01-01T00:00:00Z"),
    ]
    spreadsheet_dates = [
        order("O-SD-1", order_ts="7/8/2025", updated_at="7/8/2025"),  # MM/dd/yyyy unpadded
        order("O-SD-2", order_ts="8-7-2025", updated_at="08-7-2025"),  # dd-MM-yyyy unpadded
        order("O-SD-3", order_ts="12/1/2025", updated_at=""),
        order("O-SD-4", order_ts="13/8/2025", updated_at=""),  # near misses: month 13,
        order("O-SD-5", order_ts="7/32/2025", updated_at=""),  # day 32,
        order("O-SD-6", order_ts="7/8/25", updated_at=""),  # a two-digit year,
        order("O-SD-7", order_ts="007/8/2025", updated_at=""),  # a three-digit month
    ]
    header = ",".join(ORDER_COLS)
    return [
        Case(
            "orders-spreadsheet-dates",
            "orders",
            ".csv",
            lambda: csv_bytes(ORDER_COLS, spreadsheet_dates),
            Expect(
                bronze=7,
                silver=3,
                quarantined=4,
                rules=frozenset({"unparseable_order_ts"}),
                silver_values={
                    "O-SD-1": {
                        "order_ts": "2025-07-08 00:00:00",
                        "updated_at": "2025-07-08 00:00:00",
                    },
                    "O-SD-2": {
                        "order_ts": "2025-07-08 00:00:00",
                        "updated_at": "2025-07-08 00:00:00",
                    },
                    "O-SD-3": {"order_ts": "2025-12-01 00:00:00"},
                },
            ),
        ),
        Case(
            "orders-semicolon-delimiter",
            "orders",
            ".csv",
            lambda: csv_bytes(ORDER_COLS, rows("O-SC"), sep=";"),
            Expect(bronze=2, silver=2, note="delimiter ';'"),
        ),
        Case(
            "orders-unknown-delimiter",
            "orders",
            ".csv",
            lambda: csv_bytes(ORDER_COLS, rows("O-UD"), sep="^"),
            Expect(bronze=2, quarantined=2, rules=MALFORMED, note="none of the source's columns"),
        ),
        Case(
            "orders-missing-columns",
            "orders",
            ".csv",
            lambda: csv_bytes(
                ORDER_COLS[:4] + ORDER_COLS[6:7], [r[:4] + r[6:7] for r in rows("O-MC")]
            ),
            Expect(
                bronze=2,
                silver=2,
                missing=("channel", "payment_method", "updated_at"),
                silver_values={"O-MC-1": {"channel": None, "country": "DE"}},
            ),
        ),
        Case(
            "orders-missing-key-column",
            "orders",
            ".csv",
            lambda: csv_bytes(ORDER_COLS[1:], [r[1:] for r in rows("O-MK")]),
            Expect(bronze=2, quarantined=2, rules=frozenset({"missing_key"})),
        ),
        Case(
            "orders-extra-columns",
            "orders",
            ".csv",
            lambda: csv_bytes(
                [*ORDER_COLS, "coupon_code", "gift_note"],
                [[*r, "SPRING", "for you, with love"] for r in rows("O-EC")],
            ),
            Expect(bronze=2, silver=2, extra=("coupon_code", "gift_note")),
        ),
        Case(
            "orders-reordered-columns",
            "orders",
            ".csv",
            lambda: csv_bytes(reordered, [list(reversed(r)) for r in rows("O-RO")]),
            Expect(
                bronze=2,
                silver=2,
                silver_values={"O-RO-2": {"status": "delivered", "country": "DE"}},
            ),
        ),
        Case(
            "orders-upper-case-header",
            "orders",
            ".csv",
            lambda: csv_bytes([f" {c.upper()} " for c in ORDER_COLS], rows("O-UC")),
            Expect(bronze=2, silver=2),
        ),
        Case(
            "orders-repeated-column",
            "orders",
            ".csv",
            lambda: csv_bytes([*ORDER_COLS, "status"], [[*r, "garbage"] for r in rows("O-RC")]),
            Expect(
                bronze=2,
                silver=2,
                extra=("status (repeated)",),
                silver_values={"O-RC-1": {"status": "shipped"}},
            ),
        ),
        Case(
            "orders-header-only",
            "orders",
            ".csv",
            lambda: (header + "\n").encode(),
            Expect(bronze=0),
        ),
        Case(
            "orders-empty-file",
            "orders",
            ".csv",
            lambda: b"",
            Expect(status="unreadable", note="empty file"),
        ),
        Case(
            "orders-truncated-gzip",
            "orders",
            ".csv.gz",
            lambda: valid_gz[: len(valid_gz) // 2],
            Expect(status="unreadable", note="truncated gzip"),
        ),
        Case(
            "orders-zip-archive",
            "orders",
            ".csv.zip",
            lambda: b"PK\x03\x04" + b"\x00" * 60,
            Expect(status="unreadable", note=".zip compression is not supported"),
        ),
        Case("orders-gzip", "orders", ".csv.gz", lambda: valid_gz, Expect(bronze=2, silver=2)),
        Case(
            "orders-invalid-utf8",
            "orders",
            ".csv",
            lambda: bad_utf8,
            Expect(bronze=3, silver=1, quarantined=2, rules=MALFORMED),
        ),
        Case(
            "orders-utf8-bom",
            "orders",
            ".csv",
            lambda: b"\xef\xbb\xbf" + csv_bytes(ORDER_COLS, rows("O-BOM")),
            Expect(bronze=2, silver=2),
        ),
        Case(
            "orders-crlf-line-ends",
            "orders",
            ".csv",
            lambda: csv_bytes(ORDER_COLS, rows("O-CR"), eol="\r\n"),
            Expect(
                bronze=2,
                silver=2,
                silver_values={"O-CR-2": {"updated_at": "2025-03-05 10:00:00"}},
            ),
        ),
        Case(
            "orders-quotes-and-newlines",
            "orders",
            ".csv",
            lambda: csv_bytes(
                ORDER_COLS,
                [
                    order("O-QN-1", channel='web\nshop "beta"\r\nline 3'),
                    order("O-QN-2", country="D,E"),
                    order("O-QN-3"),
                ],
            ),
            Expect(
                bronze=3,
                silver=3,
                silver_values={
                    "O-QN-1": {"channel": 'web\nshop "beta"\r\nline 3'},
                    "O-QN-2": {"country": "D,E"},
                },
            ),
        ),
        Case(
            "orders-malformed-lines",
            "orders",
            ".csv",
            lambda: (
                csv_bytes(ORDER_COLS, [order("O-ML-1")])
                + b"O-ML-2,C-BASE-1,2025-03-05T10:00:00Z\n"
                + b"O-ML-3,C-BASE-1,2025-03-05T10:00:00Z,shipped,web,card,DE,2025-03-05,surplus\n"
            ),
            Expect(bronze=3, silver=1, quarantined=2, rules=MALFORMED),
        ),
        Case(
            # RFC 4180 has no way to tell an unclosed quote from a long quoted field:
            # the rest of the file becomes one malformed record, kept as raw text.
            "orders-unclosed-quote",
            "orders",
            ".csv",
            lambda: (
                csv_bytes(ORDER_COLS, [])
                + b'O-UQ-1,C-BASE-1,"2025-03-05T10:00:00Z,shipped,web,card,DE,2025-03-05\n'
                + b"O-UQ-2,C-BASE-1,2025-03-05T10:00:00Z,shipped,web,card,DE,2025-03-05\n"
            ),
            Expect(bronze=1, quarantined=1, rules=MALFORMED),
        ),
        Case(
            "orders-1mb-fields",
            "orders",
            ".csv",
            lambda: csv_bytes(
                ORDER_COLS,
                [order("O-MB-1", channel="x" * MB), order("O-MB-2", status="s" * MB)],
            ),
            Expect(bronze=2, silver=1, quarantined=1, rules=frozenset({"unknown_status"})),
        ),
        Case(
            "orders-far-past-and-future-dates",
            "orders",
            ".csv",
            lambda: csv_bytes(ORDER_COLS, far_dates),
            Expect(
                bronze=7,
                quarantined=7,
                rules=frozenset(
                    {
                        "order_ts_too_old",
                        "order_ts_in_future",
                        "unparseable_order_ts",
                        "updated_at_out_of_range",
                    }
                ),
            ),
        ),
        Case(
            "orders-whitespace-around-values",
            "orders",
            ".csv",
            lambda: csv_bytes(
                ORDER_COLS,
                [order("O-WS-1", "\tShipped\u00a0", " 2025-03-05T10:00:00Z\t", "\u20032025-03-05")],
            ),
            Expect(bronze=1, silver=1, silver_values={"O-WS-1": {"status": "shipped"}}),
        ),
        Case(
            "orders-glob-chars-[1]-in-name",
            "orders",
            ".csv",
            lambda: csv_bytes(ORDER_COLS, rows("O-GL")),
            Expect(bronze=2, silver=2),
        ),
    ]


def _item_cases() -> list[Case]:
    return [
        Case(
            "items-thousands-separators",
            "order_items",
            ".csv",
            lambda: csv_bytes(
                ITEM_COLS,
                [
                    item(101, unit_price="1,234.50"),
                    item(102, unit_price="1.234,50"),
                    item(103, quantity="1,000"),
                    item(104, unit_price="1234.50"),
                ],
            ),
            Expect(
                bronze=4,
                silver=1,
                quarantined=3,
                rules=frozenset({"invalid_unit_price", "invalid_quantity"}),
            ),
        ),
        Case(
            "items-nan-and-infinity",
            "order_items",
            ".csv",
            lambda: csv_bytes(
                ITEM_COLS,
                [
                    item(111, unit_price="NaN"),
                    item(112, unit_price="Infinity"),
                    item(113, unit_price="-Infinity"),
                    item(114, unit_price="1e400"),
                    item(115, quantity="NaN"),
                    item(116, discount="NaN"),
                ],
            ),
            Expect(
                bronze=6,
                quarantined=6,
                rules=frozenset({"invalid_unit_price", "invalid_quantity", "invalid_discount"}),
            ),
        ),
        Case(
            "items-reordered-and-extra-columns",
            "order_items",
            ".csv",
            lambda: csv_bytes(
                [*reversed(ITEM_COLS), "warehouse"],
                [[*reversed(item(121, "3", "2.25")), "W1"]],
            ),
            Expect(
                bronze=1,
                silver=1,
                extra=("warehouse",),
                silver_values={"O-BASE-1#121": {"quantity": "3", "unit_price": "2.2500"}},
            ),
        ),
        Case(
            "items-header-only",
            "order_items",
            ".csv",
            lambda: csv_bytes(ITEM_COLS, []),
            Expect(bronze=0),
        ),
    ]


def _customer_cases() -> list[Case]:
    array = json.dumps([customer("C-AR-1"), customer("C-AR-2")], indent=2).encode()
    return [
        Case(
            "customers-json-array",
            "customers",
            ".json",
            lambda: array,
            Expect(bronze=2, silver=2, note="JSON array"),
        ),
        Case(
            "customers-truncated-json-array",
            "customers",
            ".json",
            lambda: array[: len(array) // 2],
            Expect(bronze=1, quarantined=1, rules=MALFORMED),
        ),
        Case(
            "customers-nested-values",
            "customers",
            ".jsonl",
            lambda: jsonl(
                customer("C-NV-1", name={"first": "Ada", "last": "Lovelace"}),
                customer("C-NV-2", email=["ada@example.com"]),
                customer("C-NV-3", signup_date={"date": "2024-05-01"}),
                customer({"id": "C-NV-4"}),
                customer("C-NV-5", segment=5, country=True, city=None),
                customer("C-NV-6"),
                customer("C-NV-7", loyalty={"tier": "gold", "since": [2021]}),  # not a column
            ),
            Expect(
                bronze=7,
                silver=3,
                quarantined=4,
                rules=MALFORMED,
                silver_values={"C-NV-5": {"segment": "5", "country": "TRUE", "city": None}},
            ),
        ),
        Case(
            "customers-not-objects",
            "customers",
            ".jsonl",
            lambda: (
                json.dumps([customer("C-NO-1")])
                + "\n"
                + '"just a string"\n42\nnull\n'
                + json.dumps(customer("C-NO-2"))
                + " trailing text\n"
                + json.dumps(customer("C-NO-3"))
                + ",\n"
                + '{"customer_id": "C-NO-4", "name": NaN}\n'
                + '{"customer_id": "C-NO-5", "customer_id": "C-NO-6"}\n'
                + json.dumps(customer("C-NO-7"))
                + "\n"
            ).encode(),
            Expect(bronze=9, silver=1, quarantined=8, rules=MALFORMED),
        ),
        Case(
            "customers-utf8-bom-and-blank-lines",
            "customers",
            ".jsonl",
            lambda: (
                b"\xef\xbb\xbf"
                + jsonl(customer("C-BOM-1"))
                + b"\n  \n"
                + jsonl(customer("C-BOM-2"))
            ),
            Expect(bronze=2, silver=2),
        ),
        Case(
            "customers-invalid-utf8",
            "customers",
            ".jsonl",
            lambda: b'{"customer_id": "C-IU-1", "name": "Jos\xe9"}\n' + jsonl(customer("C-IU-2")),
            Expect(bronze=2, silver=1, quarantined=1, rules=MALFORMED),
        ),
        Case(
            "customers-1mb-name",
            "customers",
            ".jsonl",
            lambda: jsonl(customer("C-MB-1", name="n" * MB)),
            Expect(bronze=1, silver=1),
        ),
        Case(
            "customers-far-past-and-future-dates",
            "customers",
            ".jsonl",
            lambda: jsonl(
                customer("C-FD-1", signup_date="0001-01-01"),
                customer("C-FD-2", signup_date="3000-01-01"),
                customer("C-FD-3", updated_at="9999-12-31T23:59:59Z"),
            ),
            Expect(
                bronze=3,
                quarantined=3,
                rules=frozenset({"signup_date_out_of_range", "updated_at_out_of_range"}),
            ),
        ),
        Case(
            "customers-empty-file",
            "customers",
            ".jsonl",
            lambda: b"",
            Expect(status="unreadable", note="empty file"),
        ),
        Case(
            "customers-gzip",
            "customers",
            ".jsonl.gz",
            lambda: gzip_bytes(jsonl(customer("C-GZ-1"))),
            Expect(bronze=1, silver=1),
        ),
    ]


def _product_cases() -> list[Case]:
    good = parquet_bytes(product_table(["P-TR-1", "P-TR-2"]))
    ts = pa.timestamp("us", tz="UTC")
    return [
        Case(
            "products-truncated-parquet",
            "products",
            ".parquet",
            lambda: good[: len(good) // 2],
            Expect(status="unreadable", note="is not a Parquet file"),
        ),
        Case(
            "products-not-parquet",
            "products",
            ".parquet",
            lambda: csv_bytes(PRODUCT_COLS, [["P-NP-1"] + [""] * 8]),
            Expect(status="unreadable", note="is not a Parquet file"),
        ),
        Case(
            "products-wrong-column-types",
            "products",
            ".parquet",
            lambda: parquet_bytes(
                product_table(
                    ["P-WT-1", "P-WT-2"],
                    list_price=pa.array([19.99, 5.0], pa.float64()),
                    unit_cost=pa.array([Decimal("7.25"), Decimal("2.00")], pa.decimal128(9, 2)),
                    is_active=pa.array([True, False]),
                    updated_at=pa.array([dt.datetime(2025, 3, 1, 12, tzinfo=dt.UTC)] * 2, ts),
                    category=pa.array([1, 2], pa.int64()),
                )
            ),
            Expect(
                bronze=2,
                silver=2,
                silver_values={
                    "P-WT-1": {
                        "list_price": "19.9900",
                        "unit_cost": "7.2500",
                        "is_active": "true",
                        "updated_at": "2025-03-01 12:00:00",
                        "category": "1",
                    },
                    "P-WT-2": {"is_active": "false"},
                },
            ),
        ),
        Case(
            # Not a number is not a price: an unparseable price must not pass as "absent".
            "products-nan-infinity-and-text-prices",
            "products",
            ".parquet",
            lambda: parquet_bytes(
                product_table(
                    ["P-NI-1", "P-NI-2", "P-NI-3", "P-NI-4"],
                    list_price=["NaN", "Infinity", "-Infinity", "1,299.00"],
                )
            ),
            Expect(bronze=4, quarantined=4, rules=frozenset({"invalid_list_price"})),
        ),
        Case(
            "products-nested-column",
            "products",
            ".parquet",
            lambda: parquet_bytes(
                product_table(
                    ["P-NC-1", "P-NC-2"],
                    name=pa.array([{"en": "Pen", "de": "Stift"}, {"en": "Ink", "de": "Tinte"}]),
                )
            ),
            Expect(bronze=2, quarantined=2, rules=MALFORMED, note="nested values"),
        ),
        Case(
            "products-missing-and-extra-columns",
            "products",
            ".parquet",
            lambda: parquet_bytes(
                product_table(
                    ["P-ME-1"], subcategory=None, brand=None, unit_cost=None, color=["red"]
                )
            ),
            Expect(
                bronze=1,
                silver=1,
                missing=("subcategory", "brand", "unit_cost"),
                extra=("color",),
                silver_values={"P-ME-1": {"unit_cost": None, "brand": None}},
            ),
        ),
        Case(
            "products-zero-rows",
            "products",
            ".parquet",
            lambda: parquet_bytes(product_table([])),
            Expect(bronze=0),
        ),
        Case(
            "products-invalid-utf8-binary",
            "products",
            ".parquet",
            lambda: parquet_bytes(
                product_table(["P-IB-1", "P-IB-2"], name=pa.array([b"Caf\xe9", b"Cafe"]))
            ),
            Expect(bronze=2, silver=1, quarantined=1, rules=MALFORMED),
        ),
        Case(
            "products-far-past-and-future-timestamps",
            "products",
            ".parquet",
            lambda: parquet_bytes(
                product_table(
                    ["P-FT-1", "P-FT-2"],
                    updated_at=pa.array(
                        [
                            dt.datetime(1, 1, 1, tzinfo=dt.UTC),
                            dt.datetime(2999, 1, 1, tzinfo=dt.UTC),
                        ],
                        ts,
                    ),
                )
            ),
            Expect(bronze=2, quarantined=2, rules=frozenset({"updated_at_out_of_range"})),
        ),
    ]


CASES: list[Case] = [*_orders_cases(), *_item_cases(), *_customer_cases(), *_product_cases()]


def silver_key(source: str, row: dict[str, object]) -> str:
    """How Expect.silver_values names a Silver row."""
    if source == "order_items":
        return f"{row['order_id']}#{row['line_no']}"
    return str(row[SOURCES[source].key[0]])


def build_landing(lake: Path) -> list[Case]:
    """Write the baseline batch and every hostile file under ``<lake>/landing``."""
    names = [c.file_name for c in CASES]
    assert len(set(names)) == len(names), "case names must be unique"
    for source, (name, data) in baseline().items():
        folder = lake / "landing" / source
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    for case in CASES:
        (lake / "landing" / case.source / case.file_name).write_bytes(case.content())
    return CASES
