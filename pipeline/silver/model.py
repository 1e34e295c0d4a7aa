"""The dimensional model: dim_customer (SCD type 2), dim_product, dim_date, fact_sales.

Orphans are kept, never lost: an order whose customer is unknown and an item
whose product is unknown join to the unknown member of the dimension. The
unknown product's unit_cost is null (its cost is not known, not zero), as is a
known product's missing unit_cost, so their lines carry a null line_cost and
never invent a margin (docs/contract.md §3 and §5).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from pipeline.contract import UNKNOWN_CATEGORY, UNKNOWN_CUSTOMER, UNKNOWN_PRODUCT
from pipeline.silver.normalise import REVENUE_STATUSES, line_cost, line_gross, line_net

EPOCH = "1970-01-01 00:00:00"


def dim_customer(versions: DataFrame) -> DataFrame:
    """Every valid version of a customer, in the order the version rule ranks them.

    versions: silver.customers' columns for survivors and superseded versions.
    The newest version (the one in silver.customers) is the current one.
    """
    valid_from = F.coalesce(F.col("updated_at"), F.lit(EPOCH).cast("timestamp"))
    ordered = Window.partitionBy("customer_id").orderBy(
        F.col("updated_at").asc_nulls_first(), F.col("batch_id").asc(), F.col("record_id").asc()
    )
    history = versions.select(
        "customer_id",
        "name",
        "email",
        "signup_date",
        "country",
        "city",
        "segment",
        valid_from.alias("valid_from"),
        F.lead(valid_from).over(ordered).alias("valid_to"),
        F.col("batch_id"),
    ).withColumn("is_current", F.col("valid_to").isNull())
    unknown = history.sparkSession.range(1).select(
        F.lit(UNKNOWN_CUSTOMER).alias("customer_id"),
        F.lit("Unknown customer").alias("name"),
        F.lit(None).cast("string").alias("email"),
        F.lit(None).cast("date").alias("signup_date"),
        F.lit(None).cast("string").alias("country"),
        F.lit(None).cast("string").alias("city"),
        F.lit(None).cast("string").alias("segment"),
        F.lit(EPOCH).cast("timestamp").alias("valid_from"),
        F.lit(None).cast("timestamp").alias("valid_to"),
        F.lit(None).cast("string").alias("batch_id"),
        F.lit(True).alias("is_current"),
    )
    return history.unionByName(unknown)


def dim_product(products: DataFrame) -> DataFrame:
    """Current products plus the unknown member; an unknown cost stays null."""
    current = products.select(
        "product_id",
        "name",
        F.coalesce(F.col("category"), F.lit(UNKNOWN_CATEGORY)).alias("category"),
        "subcategory",
        "brand",
        "list_price",
        F.col("unit_cost").cast("decimal(18,4)").alias("unit_cost"),
        "is_active",
    )
    unknown = current.sparkSession.range(1).select(
        F.lit(UNKNOWN_PRODUCT).alias("product_id"),
        F.lit("Unknown product").alias("name"),
        F.lit(UNKNOWN_CATEGORY).alias("category"),
        F.lit(None).cast("string").alias("subcategory"),
        F.lit(None).cast("string").alias("brand"),
        F.lit(None).cast("decimal(18,4)").alias("list_price"),
        F.lit(None).cast("decimal(18,4)").alias("unit_cost"),
        F.lit(None).cast("boolean").alias("is_active"),
    )
    return current.unionByName(unknown)


def dim_date(spark: SparkSession, orders: DataFrame) -> DataFrame:
    bounds = orders.agg(F.min("order_date").alias("lo"), F.max("order_date").alias("hi"))
    days = bounds.select(F.explode(F.sequence(F.col("lo"), F.col("hi"))).alias("date"))
    return days.select(
        F.col("date"),
        F.year("date").alias("year"),
        F.quarter("date").alias("quarter"),
        F.month("date").alias("month"),
        F.dayofmonth("date").alias("day"),
        F.date_format("date", "EEEE").alias("day_name"),
        F.dayofweek("date").alias("day_of_week"),
        F.dayofweek("date").isin(1, 7).alias("is_weekend"),
        F.trunc("date", "week").alias("week_start"),
        F.trunc("date", "month").alias("month_start"),
    )


def fact_sales(
    orders: DataFrame, items: DataFrame, products: DataFrame, customers: DataFrame
) -> DataFrame:
    """One row per order line with its money; every item has an order (orphans are quarantined).

    line_cost is null when the product or its unit_cost is unknown.
    """
    product = products.select(
        F.col("product_id").alias("_product_id"),
        F.col("name").alias("product_name"),
        F.col("category").alias("_category"),
        F.col("unit_cost").alias("_unit_cost"),
    )
    known_customers = customers.select(F.col("customer_id").alias("_customer_id")).distinct()
    lines = items.join(
        orders.drop("batch_id", "source_file", "ingested_at", "record_id", "updated_at"),
        on="order_id",
        how="inner",
    )
    with_product = lines.join(product, on=lines["product_id"] == product["_product_id"], how="left")
    with_customer = with_product.join(
        known_customers,
        on=with_product["customer_id"] == known_customers["_customer_id"],
        how="left",
    )
    priced = with_customer.select(
        F.col("order_id"),
        F.col("line_no"),
        F.col("order_date"),
        F.col("order_ts"),
        F.col("status"),
        F.col("status").isin(*REVENUE_STATUSES).alias("is_revenue_bearing"),
        F.col("customer_id"),
        F.when(F.col("_customer_id").isNotNull(), F.col("customer_id"))
        .otherwise(F.lit(UNKNOWN_CUSTOMER))
        .alias("customer_key"),
        F.col("product_id"),
        F.when(F.col("_product_id").isNotNull(), F.col("product_id"))
        .otherwise(F.lit(UNKNOWN_PRODUCT))
        .alias("product_key"),
        F.coalesce(F.col("product_name"), F.lit("Unknown product")).alias("product_name"),
        F.coalesce(F.col("_category"), F.lit(UNKNOWN_CATEGORY)).alias("category"),
        F.col("channel"),
        F.col("country"),
        F.col("quantity"),
        F.col("unit_price"),
        F.col("discount_pct"),
        line_gross(F.col("quantity"), F.col("unit_price")).alias("line_gross"),
        line_net(F.col("quantity"), F.col("unit_price"), F.col("discount_pct")).alias("line_net"),
        line_cost(F.col("quantity"), F.col("_unit_cost")).alias("line_cost"),
    )
    return with_order_flags(priced)


def with_order_flags(lines: DataFrame) -> DataFrame:
    """``first_in_category`` and ``first_for_product``: true on one line of each order per
    category, and per product (its lowest product_id, then line_no).

    Gold sums them instead of counting distinct orders per cell, which cost its
    aggregations 2-3x as much at 1,000,000 orders (pipeline/gold/sales_cells.py:
    ``distinct_orders``). A product has one category, so both windows share one
    sort, within the partitions by order_id the items' join already made.
    """
    by_category = Window.partitionBy(F.col("order_id"), F.col("category")).orderBy(
        F.col("product_id"), F.col("line_no")
    )
    by_product = Window.partitionBy(
        F.col("order_id"), F.col("category"), F.col("product_id")
    ).orderBy(F.col("line_no"))
    return lines.select(
        "*",
        (F.row_number().over(by_category) == 1).alias("first_in_category"),
        (F.row_number().over(by_product) == 1).alias("first_for_product"),
    )
