"""The landing-zone contract of docs/contract.md §2: sources, formats, columns, keys."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    name: str
    fmt: str  # csv | json | parquet
    extension: str
    columns: tuple[str, ...]
    key: tuple[str, ...]


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "orders",
            "csv",
            ".csv",
            (
                "order_id",
                "customer_id",
                "order_ts",
                "status",
                "channel",
                "payment_method",
                "country",
                "updated_at",
            ),
            ("order_id",),
        ),
        Source(
            "order_items",
            "csv",
            ".csv",
            ("order_id", "line_no", "product_id", "quantity", "unit_price", "discount_pct"),
            ("order_id", "line_no"),
        ),
        Source(
            "customers",
            "json",
            ".jsonl",
            (
                "customer_id",
                "name",
                "email",
                "signup_date",
                "country",
                "city",
                "segment",
                "updated_at",
            ),
            ("customer_id",),
        ),
        Source(
            "products",
            "parquet",
            ".parquet",
            (
                "product_id",
                "name",
                "category",
                "subcategory",
                "brand",
                "list_price",
                "unit_cost",
                "is_active",
                "updated_at",
            ),
            ("product_id",),
        ),
    )
}

# Columns every Bronze table adds to the raw source columns.
RAW_LINE = "_raw"  # the text of a line that could not be parsed (else null)
BRONZE_META = ("_raw", "_source_file", "_batch_id", "_ingested_at", "_record_id")

UNKNOWN_CUSTOMER = "UNKNOWN"
UNKNOWN_PRODUCT = "UNKNOWN"
UNKNOWN_CATEGORY = "Unknown"
