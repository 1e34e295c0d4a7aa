"""silver.products: the latest valid version of each product."""

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
    parse_decimal,
    parse_timestamp,
    timestamp_out_of_range,
)
from pipeline.silver.refine import lineage_columns, stored_key

SOURCE = SOURCES["products"]

EXPECTATIONS = [
    *record_rules("product_id IS NOT NULL", "product_id"),
    Expectation(
        "invalid_list_price",
        only_well_formed("list_price IS NULL OR _list_price IS NOT NULL"),
        "quarantine",
        "list_price a plain number when present (not NaN, Infinity or 1,299.00)",
    ),
    Expectation(
        "invalid_unit_cost",
        only_well_formed("unit_cost IS NULL OR _unit_cost IS NOT NULL"),
        "quarantine",
        "unit_cost a plain number when present",
    ),
    Expectation(
        "negative_list_price",
        only_well_formed("_list_price IS NULL OR _list_price >= 0"),
        "quarantine",
        "list_price >= 0 when present",
    ),
    Expectation(
        "negative_unit_cost",
        only_well_formed("_unit_cost IS NULL OR _unit_cost >= 0"),
        "quarantine",
        "unit_cost >= 0 when present",
    ),
    *updated_at_rules(),
]

COLUMNS = ["product_id", "name", "category", "list_price", "unit_cost"]


def typed(df: DataFrame) -> DataFrame:
    updated_at = parse_timestamp(F.col("updated_at"))
    return df.select(
        "*",
        parse_decimal(F.col("list_price"), 18, 4).alias("_list_price"),
        parse_decimal(F.col("unit_cost"), 18, 4).alias("_unit_cost"),
        updated_at.alias("_updated_at"),
        timestamp_out_of_range(updated_at, F.col("_ingested_at")).alias("_updated_at_out_of_range"),
    )


def to_silver(survivors: DataFrame) -> DataFrame:
    active = F.lower(F.trim(F.col("is_active")))
    return survivors.select(
        stored_key(0).alias("product_id"),
        F.trim(F.col("name")).alias("name"),
        F.trim(F.col("category")).alias("category"),
        F.trim(F.col("subcategory")).alias("subcategory"),
        F.trim(F.col("brand")).alias("brand"),
        F.col("_list_price").alias("list_price"),
        F.col("_unit_cost").alias("unit_cost"),
        F.when(active.isin("true", "1", "yes", "y", "t"), F.lit(True))
        .when(active.isin("false", "0", "no", "n", "f"), F.lit(False))
        .alias("is_active"),
        F.col("_updated_at").alias("updated_at"),
        *lineage_columns(),
    )


def record_key() -> F.Column:
    return F.col("product_id")
