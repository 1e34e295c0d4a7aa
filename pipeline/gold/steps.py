"""Gold steps: each table recomputed from Silver and replaced in one Delta commit."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline import lake
from pipeline.gold import category_sales, customer_rfm, daily_sales, revenue_anomalies
from pipeline.quality.expectations import RuleCount
from pipeline.registry import Context, Step, StepOutcome


def _grain_check(df: DataFrame, grain: list[str]) -> tuple[int, int]:
    row = df.agg(
        F.count(F.lit(1)).alias("rows"), F.count_distinct(*[F.col(c) for c in grain]).alias("keys")
    ).first()
    return int(row["rows"]), int(row["rows"]) - int(row["keys"])


def _write(ctx: Context, table: str, df: DataFrame, grain: list[str], rows_in: int) -> StepOutcome:
    lake.overwrite(df, "gold", table)
    written = lake.read(ctx.spark, "gold", table)
    rows, duplicate_keys = _grain_check(written, grain)
    out = StepOutcome(rows_in=rows_in, rows_out=rows)
    out.add_checks("gold", table, [RuleCount("grain_unique", "fail", rows, duplicate_keys)])
    if "net_revenue" in written.columns:
        negative = written.filter(F.col("net_revenue") < 0).count()
        out.add_checks("gold", table, [RuleCount("no_negative_revenue", "fail", rows, negative)])
    return out


def _silver(ctx: Context, table: str) -> DataFrame:
    return lake.read(ctx.spark, "silver", table)


def run_daily_sales(ctx: Context) -> StepOutcome:
    orders = _silver(ctx, "orders")
    fact = _silver(ctx, "fact_sales")
    out = _write(ctx, "daily_sales", daily_sales.build(orders, fact), ["order_date"], orders.count())
    gold_total = lake.read(ctx.spark, "gold", "daily_sales").agg(F.sum("net_revenue")).first()[0]
    silver_total = fact.filter(F.col("is_revenue_bearing")).agg(F.sum("line_net")).first()[0]
    same = (gold_total or 0) == (silver_total or 0)
    out.add_checks("gold", "daily_sales", [RuleCount("net_revenue_reconciles_with_silver", "fail", 1, 0 if same else 1)])
    return out


def run_category_sales(ctx: Context) -> StepOutcome:
    fact = _silver(ctx, "fact_sales")
    return _write(ctx, "category_sales", category_sales.build(fact), ["month", "category"], fact.count())


def run_customer_rfm(ctx: Context) -> StepOutcome:
    orders = _silver(ctx, "orders")
    fact = _silver(ctx, "fact_sales")
    return _write(ctx, "customer_rfm", customer_rfm.build(orders, fact), ["customer_id"], orders.count())


def run_revenue_anomalies(ctx: Context) -> StepOutcome:
    daily = lake.read(ctx.spark, "gold", "daily_sales")
    return _write(ctx, "revenue_anomalies", revenue_anomalies.build(daily), ["order_date"], daily.count())


STEPS = [
    Step("gold.daily_sales", "gold", ("silver.orders", "silver.fact_sales"), ("gold.daily_sales",), run_daily_sales),
    Step("gold.category_sales", "gold", ("silver.fact_sales",), ("gold.category_sales",), run_category_sales),
    Step("gold.customer_rfm", "gold", ("silver.orders", "silver.fact_sales"), ("gold.customer_rfm",), run_customer_rfm),
    Step("gold.revenue_anomalies", "gold", ("gold.daily_sales",), ("gold.revenue_anomalies",), run_revenue_anomalies),
]
