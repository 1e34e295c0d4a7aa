"""gold.category_sales: month x category over revenue-bearing lines (docs/contract.md §5).

gross_margin sums line_net - line_cost over the lines whose cost is known
(line_cost not null); a cell without any such line has a null margin, so the
Unknown category (products not in the catalogue) never shows an invented one.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from pipeline.gold import sales_cells

MONEY = "decimal(18,2)"


def build(fact_sales: DataFrame) -> DataFrame:
    revenue_lines = fact_sales.filter(F.col("is_revenue_bearing")).select(
        F.trunc("order_date", "month").alias("month"),
        "category",
        "first_in_category",
        "quantity",
        "line_net",
        F.when(F.col("line_cost").isNotNull(), F.col("line_net") - F.col("line_cost")).alias(
            "line_margin"
        ),
    )
    per_category = revenue_lines.groupBy("month", "category").agg(
        sales_cells.distinct_orders("first_in_category"),
        F.sum("quantity").alias("units"),
        F.sum("line_net").alias("net_revenue"),
        F.sum("line_margin").alias("gross_margin"),  # sum() skips nulls; all null -> null
    )
    month_total = F.sum("net_revenue").over(Window.partitionBy("month"))
    return per_category.select(
        F.col("month"),
        F.col("category"),
        F.col("orders").cast("long").alias("orders"),
        F.col("units").cast("long").alias("units"),
        F.col("net_revenue").cast(MONEY).alias("net_revenue"),
        F.col("gross_margin").cast(MONEY).alias("gross_margin"),
        F.when(
            month_total != 0, F.col("net_revenue").cast("double") / month_total.cast("double")
        ).alias("revenue_share"),
    )
