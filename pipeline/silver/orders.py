"""silver.orders: one row per order, its latest valid version.

Rules beside the logic: the expectations below are the only place the
order rules of docs/contract.md §3 are stated.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline.contract import SOURCES
from pipeline.quality.expectations import (
    Expectation,
    only_well_formed,
    record_rules,
    updated_at_rules,
)
from pipeline.silver.normalise import (
    normalise_status,
    parse_timestamp,
    timestamp_in_future,
    timestamp_out_of_range,
    timestamp_too_old,
)
from pipeline.silver.refine import lineage_columns, stored_key

SOURCE = SOURCES["orders"]

EXPECTATIONS = [
    *record_rules("order_id IS NOT NULL", "order_id present"),
    Expectation(
        "unparseable_order_ts",
        only_well_formed("_order_ts IS NOT NULL"),
        "quarantine",
        "order_ts in an accepted format",
    ),
    Expectation(
        "order_ts_too_old",
        only_well_formed("_order_ts IS NULL OR NOT _order_ts_too_old"),
        "quarantine",
        "order_ts on or after 2000-01-01",
    ),
    Expectation(
        "order_ts_in_future",
        only_well_formed("_order_ts IS NULL OR NOT _order_ts_in_future"),
        "quarantine",
        "order_ts at most one day after ingestion",
    ),
    Expectation(
        "unknown_status",
        only_well_formed("_status IS NOT NULL"),
        "quarantine",
        "status normalises to one of the six statuses",
    ),
    *updated_at_rules(),
]

COLUMNS = [
    "order_id",
    "customer_id",
    "order_ts",
    "order_date",
    "status",
    "channel",
    "payment_method",
    "country",
    "updated_at",
]


def typed(df: DataFrame) -> DataFrame:
    """Parsed helper columns the rules and the Silver columns need."""
    order_ts = parse_timestamp(F.col("order_ts"))
    updated_at = parse_timestamp(F.col("updated_at"))
    return df.select(
        "*",
        order_ts.alias("_order_ts"),
        updated_at.alias("_updated_at"),
        normalise_status(F.col("status")).alias("_status"),
    ).select(
        "*",
        timestamp_too_old(F.col("_order_ts")).alias("_order_ts_too_old"),
        timestamp_in_future(F.col("_order_ts"), F.col("_ingested_at")).alias("_order_ts_in_future"),
        timestamp_out_of_range(F.col("_updated_at"), F.col("_ingested_at")).alias(
            "_updated_at_out_of_range"
        ),
    )


def to_silver(survivors: DataFrame) -> DataFrame:
    return survivors.select(
        stored_key(0).alias("order_id"),
        F.trim(F.col("customer_id")).alias("customer_id"),
        F.col("_order_ts").alias("order_ts"),
        F.to_date(F.col("_order_ts")).alias("order_date"),
        F.col("_status").alias("status"),
        F.lower(F.trim(F.col("channel"))).alias("channel"),
        F.lower(F.trim(F.col("payment_method"))).alias("payment_method"),
        F.upper(F.trim(F.col("country"))).alias("country"),
        F.col("_updated_at").alias("updated_at"),
        *lineage_columns(),
    )


def record_key() -> F.Column:
    return F.col("order_id")
