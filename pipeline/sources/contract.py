"""The landing-zone data contract as the generator writes it (docs/contract.md §2),
and the defect rates it is asked for.

Each batch writes ``<source>/batch-NNNNNN.<csv|jsonl|parquet>`` and then
``_manifests/batch-NNNNNN.json``: the manifest appears last, so a batch with a
manifest is complete. The manifest holds ``batch_id``, ``batch_number``,
``mode`` (initial/append), ``seed``, ``window`` (start, exclusive end),
``files`` (source -> file name inside ``<source>/``), ``rows`` (physical data
rows per file: lines without the header, or Parquet rows), ``defects``
(source -> rule -> exact count, every key of DEFECTS_BY_SOURCE present),
``new_keys`` / ``updated_keys`` (keys first seen / given a new version in the
batch), ``parameters``, ``anomalies`` (the batch's labelled days: date, kind
promotion/outage, the direction a detector should report, spike/drop, and the
factor applied to the day's usual orders) and ``generator`` (counters for
appends).

Counting conventions, for the Silver layer:

- Each defective row breaks exactly one rule; clean rows break none.
- ``exact_duplicates``: extra copies of a clean row within the same file.
- ``superseded_versions``: rows of this batch that replace an older version of
  the same key (strictly later updated_at; never a tie).
- Malformed CSV lines have 3 comma-separated fields (orders: order_id,
  customer_id, order_ts; items: order_id, line_no, product_id) and never a
  quote character. Malformed JSON lines are truncated after ``"name": ``, lack
  the closing brace, or lack a comma between members.
- A missing key is an empty CSV field (order_id; for items either order_id or
  line_no) or a JSON/Parquet null.
- Orphans use reserved ids the sequences never reach: orders O9xxxxxxx,
  customers C99xxxxx, products P9xxxxx.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime

import pyarrow as pa

from pipeline.contract import SOURCES as SOURCES_CONTRACT

SOURCES = ("orders", "order_items", "customers", "products")

#: Manifest defect keys per source (the Silver quality rule names).
DEFECTS_BY_SOURCE: dict[str, tuple[str, ...]] = {
    "orders": (
        "missing_key",
        "unparseable_order_ts",
        "order_ts_in_future",
        "order_ts_too_old",
        "unknown_status",
        "orphan_customer",
        "malformed_record",
        "exact_duplicates",
        "superseded_versions",
        "mixed_timestamp_format",
        "status_variant",
    ),
    "order_items": (
        "missing_key",
        "invalid_quantity",
        "invalid_unit_price",
        "invalid_discount",
        "orphan_item",
        "unknown_product",
        "malformed_record",
        "exact_duplicates",
    ),
    "customers": (
        "missing_key",
        "invalid_email",
        "unparseable_signup_date",
        "malformed_record",
        "exact_duplicates",
        "superseded_versions",
    ),
    "products": (
        "missing_key",
        "negative_list_price",
        "negative_unit_cost",
        "exact_duplicates",
        "superseded_versions",
    ),
}
#: Informational counts: valid data, not defects (Silver normalises them).
INFORMATIONAL = ("mixed_timestamp_format", "status_variant")
#: Keys accepted in ``rates`` (a key applies to every source that has it;
#: "source.rule", e.g. "orders.missing_key", overrides it for one source).
DEFECT_NAMES: list[str] = list(
    dict.fromkeys(r for rules in DEFECTS_BY_SOURCE.values() for r in rules)
)

FILE_SUFFIX = {"orders": "csv", "order_items": "csv", "customers": "jsonl", "products": "parquet"}
# The landing columns are the project's contract (pipeline/contract.py), stated once.
ORDER_COLUMNS = SOURCES_CONTRACT["orders"].columns
ITEM_COLUMNS = SOURCES_CONTRACT["order_items"].columns
CUSTOMER_COLUMNS = SOURCES_CONTRACT["customers"].columns
PRODUCT_SCHEMA = pa.schema(
    [
        ("product_id", pa.string()),
        ("name", pa.string()),
        ("category", pa.string()),
        ("subcategory", pa.string()),
        ("brand", pa.string()),
        ("list_price", pa.float64()),
        ("unit_cost", pa.float64()),
        ("is_active", pa.bool_()),
        ("updated_at", pa.string()),
    ]
)

DAY = 86_400


def utc_epoch(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp())


WINDOW_DAYS = 365
WINDOW_END = utc_epoch("2026-07-01")  # exclusive: the last day is 2026-06-30
WINDOW_START = WINDOW_END - WINDOW_DAYS * DAY  # 2025-07-01
FUTURE_START = utc_epoch("2099-01-01")
TOO_OLD_START = utc_epoch("1990-01-01")

# Reserved id ranges that the normal sequences never reach, so orphans stay orphans
# after any number of appends.
ORDER_ID_WIDTH = 8  # O00000001
CUSTOMER_ID_WIDTH = 7  # C0000001
PRODUCT_ID_WIDTH = 6  # P000001
ORPHAN_ORDER_BASE = 90_000_000
ORPHAN_CUSTOMER_BASE = 9_900_000
UNKNOWN_PRODUCT_BASE = 900_000

STATE_DIR = "_generator"
MANIFEST_DIR = "_manifests"
FORMAT_VERSION = 1

Progress = Callable[[str, float], None]

# --------------------------------------------------------------------------- rates


class Rates:
    def __init__(self, default: float, overrides: dict[str, float] | None) -> None:
        _check_rate("defect_rate", default)
        self.default = float(default)
        self.overrides: dict[str, float] = {}
        for key, value in (overrides or {}).items():
            source, _, rule = key.rpartition(".")
            if (
                source
                and (source not in DEFECTS_BY_SOURCE or rule not in DEFECTS_BY_SOURCE[source])
            ) or (not source and rule not in DEFECT_NAMES):
                raise ValueError(
                    f"unknown defect rate {key!r}; use one of {DEFECT_NAMES} "
                    "or 'source.rule' (e.g. 'orders.missing_key')"
                )
            _check_rate(key, value)
            self.overrides[key] = float(value)

    def __call__(self, source: str, rule: str) -> float:
        return self.overrides.get(f"{source}.{rule}", self.overrides.get(rule, self.default))

    def table(self) -> dict[str, dict[str, float]]:
        return {s: {r: self(s, r) for r in rules} for s, rules in DEFECTS_BY_SOURCE.items()}


def _check_rate(name: str, value: float) -> None:
    if not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}")


def rate_count(rate: float, base: int) -> int:
    """How many rows a rate asks for (half rounds up)."""
    return int(math.floor(rate * base + 0.5))
