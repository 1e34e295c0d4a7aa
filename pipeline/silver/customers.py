"""silver.customers (latest version per customer) and the versions behind dim_customer."""

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
    parse_timestamp,
    timestamp_out_of_range,
    valid_email,
)
from pipeline.silver.refine import lineage_columns, stored_key

SOURCE = SOURCES["customers"]

EXPECTATIONS = [
    *record_rules("customer_id IS NOT NULL", "customer_id"),
    Expectation(
        "unparseable_signup_date",
        only_well_formed("signup_date IS NULL OR _signup_date IS NOT NULL"),
        "quarantine",
        "signup_date in an accepted format (may be empty)",
    ),
    Expectation(
        "signup_date_out_of_range",
        only_well_formed("_signup_date IS NULL OR NOT _signup_date_out_of_range"),
        "quarantine",
        "signup_date between 2000-01-01 and one day after ingestion",
    ),
    Expectation(
        "invalid_email",
        "_raw IS NOT NULL OR email IS NULL OR _email_valid",
        "warn",
        "email looks like an address (else it becomes null; the customer is kept)",
    ),
    *updated_at_rules(),
]

COLUMNS = [
    "customer_id",
    "name",
    "email",
    "signup_date",
    "country",
    "city",
    "segment",
    "updated_at",
]


def _out_of_range(ts: F.Column) -> F.Column:
    return timestamp_out_of_range(ts, F.col("_ingested_at"))


def typed(df: DataFrame) -> DataFrame:
    parsed = df.select(
        "*",
        parse_timestamp(F.col("signup_date")).alias("_signup_date"),
        parse_timestamp(F.col("updated_at")).alias("_updated_at"),
        valid_email(F.col("email")).alias("_email_valid"),
    )
    return parsed.select(
        "*",
        _out_of_range(F.col("_signup_date")).alias("_signup_date_out_of_range"),
        _out_of_range(F.col("_updated_at")).alias("_updated_at_out_of_range"),
    )


def to_silver(rows: DataFrame) -> DataFrame:
    return rows.select(
        stored_key(0).alias("customer_id"),
        F.trim(F.col("name")).alias("name"),
        F.when(F.col("_email_valid"), F.lower(F.trim(F.col("email")))).alias("email"),
        F.to_date(F.col("_signup_date")).alias("signup_date"),
        F.upper(F.trim(F.col("country"))).alias("country"),
        F.trim(F.col("city")).alias("city"),
        F.lower(F.trim(F.col("segment"))).alias("segment"),
        F.col("_updated_at").alias("updated_at"),
        *lineage_columns(),
    )


def record_key() -> F.Column:
    return F.col("customer_id")
