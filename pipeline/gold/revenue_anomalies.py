"""gold.revenue_anomalies: daily net revenue against its trailing 28-day baseline."""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

BASELINE_DAYS = 28
Z_THRESHOLD = 3.0


def build(daily_sales: DataFrame) -> DataFrame:
    bounds = daily_sales.agg(F.min("order_date").alias("lo"), F.max("order_date").alias("hi"))
    calendar = bounds.select(F.explode(F.sequence("lo", "hi")).alias("order_date"))
    days = calendar.join(
        daily_sales.select("order_date", "net_revenue"), on="order_date", how="left"
    ).select(
        "order_date",
        F.coalesce(F.col("net_revenue"), F.lit(0)).cast("decimal(18,2)").alias("net_revenue"),
    )
    # One partition on purpose: a few hundred days, ordered by date.
    trailing = Window.orderBy("order_date").rowsBetween(-BASELINE_DAYS, -1)
    x = F.col("net_revenue").cast("double")
    with_stats = days.select(
        "order_date",
        "net_revenue",
        F.count(x).over(trailing).alias("_n"),
        F.avg(x).over(trailing).alias("_mean"),
        F.stddev_samp(x).over(trailing).alias("_std"),
    )
    full = F.col("_n") == BASELINE_DAYS
    mean = F.when(full, F.col("_mean"))
    std = F.when(full, F.col("_std"))
    z = F.when(std.isNotNull() & (std != 0), (x - mean) / std)
    scored = with_stats.select(
        "order_date",
        "net_revenue",
        mean.alias("baseline_mean"),
        std.alias("baseline_std"),
        z.alias("z_score"),
    )
    is_anomaly = F.coalesce(F.abs(F.col("z_score")) >= Z_THRESHOLD, F.lit(False))
    return scored.select(
        "*",
        is_anomaly.alias("is_anomaly"),
        F.when(is_anomaly & (F.col("z_score") > 0), F.lit("spike"))
        .when(is_anomaly, F.lit("drop"))
        .alias("direction"),
    )
