"""gold.daily_sales: one row per order_date on which any order exists (docs/contract.md §5)."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline.silver.normalise import REVENUE_STATUSES

MONEY = "decimal(18,2)"


def build(orders: DataFrame, fact_sales: DataFrame) -> DataFrame:
    is_revenue = F.col("status").isin(*REVENUE_STATUSES)
    per_day = orders.groupBy("order_date").agg(
        F.count(F.when(is_revenue, F.col("order_id"))).alias("orders"),
        F.count_distinct(F.when(is_revenue, F.col("customer_id"))).alias("customers"),
        F.count(F.when(F.col("status") == "cancelled", F.lit(1))).alias("cancelled_orders"),
        F.count(F.when(F.col("status") == "returned", F.lit(1))).alias("returned_orders"),
    )
    lines = (
        fact_sales.filter(F.col("is_revenue_bearing"))
        .groupBy("order_date")
        .agg(
            F.sum("quantity").alias("units"),
            F.sum("line_gross").alias("gross_revenue"),
            F.sum("line_net").alias("net_revenue"),
        )
    )
    first_orders = (
        orders.filter(is_revenue & F.col("customer_id").isNotNull())
        .groupBy("customer_id")
        .agg(F.min("order_date").alias("order_date"))
        .groupBy("order_date")
        .agg(F.count(F.lit(1)).alias("new_customers"))
    )
    joined = per_day.join(lines, on="order_date", how="left").join(
        first_orders, on="order_date", how="left"
    )
    net = F.coalesce(F.col("net_revenue"), F.lit(0)).cast(MONEY)
    return joined.select(
        F.col("order_date"),
        F.col("orders").cast("long").alias("orders"),
        F.coalesce(F.col("units"), F.lit(0)).cast("long").alias("units"),
        F.coalesce(F.col("gross_revenue"), F.lit(0)).cast(MONEY).alias("gross_revenue"),
        net.alias("net_revenue"),
        F.when(F.col("orders") > 0, F.round(net / F.col("orders"), 2))
        .cast(MONEY)
        .alias("avg_order_value"),
        F.col("customers").cast("long").alias("customers"),
        F.coalesce(F.col("new_customers"), F.lit(0)).cast("long").alias("new_customers"),
        F.col("cancelled_orders").cast("long").alias("cancelled_orders"),
        F.col("returned_orders").cast("long").alias("returned_orders"),
    )
