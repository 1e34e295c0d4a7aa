"""gold.customer_rfm: recency, frequency, monetary scores and segments (docs/contract.md §5).

A customer appears once they have a revenue-bearing order; as_of_date comes
from the data (the day after the latest order_date), never the wall clock,
so the same lake always scores the same.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from pipeline import catalog
from pipeline.silver.normalise import REVENUE_STATUSES

# (segment, r scores, f scores): docs/contract.md §5's table, declared with the table's
# columns in pipeline/catalog.py (the pages read the names from there too).
SEGMENTS = catalog.RFM_SEGMENTS


def segment(r: Column, f: Column) -> Column:
    expr: Column | None = None
    for name, rs, fs in SEGMENTS:
        cond = r.isin(*rs) & f.isin(*fs)
        expr = F.when(cond, F.lit(name)) if expr is None else expr.when(cond, F.lit(name))
    return expr  # type: ignore[return-value]


def build(orders: DataFrame, fact_sales: DataFrame) -> DataFrame:
    as_of = orders.agg(F.date_add(F.max("order_date"), 1).alias("as_of_date"))
    revenue_orders = orders.filter(
        F.col("status").isin(*REVENUE_STATUSES) & F.col("customer_id").isNotNull()
    )
    per_customer = revenue_orders.groupBy("customer_id").agg(
        F.max("order_date").alias("last_order_date"),
        F.count(F.lit(1)).alias("frequency"),
    )
    money = (
        fact_sales.filter(F.col("is_revenue_bearing") & F.col("customer_id").isNotNull())
        .groupBy("customer_id")
        .agg(F.sum("line_net").alias("monetary"))
    )
    base = (
        per_customer.join(money, on="customer_id", how="left")
        .crossJoin(as_of)
        .select(
            "customer_id",
            "last_order_date",
            F.datediff(F.col("as_of_date"), F.col("last_order_date")).alias("recency_days"),
            F.col("frequency").cast("long").alias("frequency"),
            F.coalesce(F.col("monetary"), F.lit(0)).cast("decimal(18,2)").alias("monetary"),
            "as_of_date",
        )
    )
    by_recency = Window.orderBy(F.col("recency_days").desc(), F.col("customer_id").asc())
    by_frequency = Window.orderBy(F.col("frequency").asc(), F.col("customer_id").asc())
    by_monetary = Window.orderBy(F.col("monetary").asc(), F.col("customer_id").asc())
    scored = base.select(
        "*",
        F.ntile(5).over(by_recency).alias("r_score"),
        F.ntile(5).over(by_frequency).alias("f_score"),
        F.ntile(5).over(by_monetary).alias("m_score"),
    )
    segmented = scored.select("*", segment(F.col("r_score"), F.col("f_score")).alias("rfm_segment"))
    return segmented.select(*[F.col(c) for c in catalog.columns("gold", "customer_rfm")])
