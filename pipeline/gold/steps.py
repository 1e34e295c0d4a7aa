"""Gold steps: each table recomputed from Silver, checked, then replaced in one Delta commit."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline import catalog, lake
from pipeline.gold import (
    category_sales,
    customer_rfm,
    daily_sales,
    revenue_anomalies,
    sales_cells,
)
from pipeline.quality.expectations import RuleCount
from pipeline.registry import Context, Step, StepOutcome, raise_on_fail


def _checks(df: DataFrame, grain: list[str], reconcile_with: object = None) -> list[RuleCount]:
    """Grain uniqueness and no negative revenue, in one aggregation.

    ``reconcile_with``: Silver's net revenue, which the table's must sum to.
    """
    aggs = [
        F.count(F.lit(1)).alias("rows"),
        F.count_distinct(F.struct(*[F.col(c) for c in grain])).alias("keys"),
    ]
    if "net_revenue" in df.columns:
        aggs.append(F.count(F.when(F.col("net_revenue") < 0, 1)).alias("negative"))
        aggs.append(F.sum("net_revenue").alias("net_revenue"))
    row = df.agg(*aggs).first()
    rows = int(row["rows"])
    out = [RuleCount("grain_unique", "fail", rows, rows - int(row["keys"]))]
    if "net_revenue" in df.columns:
        out.append(RuleCount("no_negative_revenue", "fail", rows, int(row["negative"])))
    if reconcile_with is not None:
        same = (row["net_revenue"] or 0) == reconcile_with
        out.append(RuleCount("net_revenue_reconciles_with_silver", "fail", 1, 0 if same else 1))
    return out


def _arrow_checks(
    data: pa.Table, grain: list[str], reconcile_with: object = None
) -> list[RuleCount]:
    """``_checks`` on rows already collected (a small lake): no Spark job."""
    rows = data.num_rows
    keys = _distinct(data.select(grain)) if rows else 0
    out = [RuleCount("grain_unique", "fail", rows, rows - keys)]
    if "net_revenue" in data.column_names:
        revenue = data.column("net_revenue")
        negative = pc.sum(pc.less(revenue, 0)).as_py() or 0
        out.append(RuleCount("no_negative_revenue", "fail", rows, int(negative)))
        if reconcile_with is not None:
            same = (pc.sum(revenue).as_py() or 0) == reconcile_with
            out.append(RuleCount("net_revenue_reconciles_with_silver", "fail", 1, 0 if same else 1))
    return out


def _distinct(keys: pa.Table) -> int:
    """Distinct rows; a list column (sales_orders' category set) compared as joined text."""
    columns = [pc.binary_join(c, "\x1f") if pa.types.is_list(c.type) else c for c in keys.columns]
    named = pa.table(columns, names=keys.column_names)
    return named.group_by(keys.column_names).aggregate([]).num_rows


def _publish(
    table: str, df: DataFrame, grain: list[str], rows_in: int, reconcile_with: object = None
) -> StepOutcome:
    """Check, then replace the table: two jobs (the checks, the write) on the staged rows.

    On a small lake, or for a table small at any size (``lake.collect_target``),
    the rows are collected once, checked in Arrow and committed by delta-rs: one job.
    """
    if lake.collect_target("gold", table) is not None:
        data = df.toArrow()
        out = StepOutcome(rows_in=rows_in, rows_out=data.num_rows)
        out.add_checks("gold", table, _arrow_checks(data, grain, reconcile_with))
        raise_on_fail(out)
        lake.overwrite_arrow(data, "gold", table)
        return out
    staged = df.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        checks = _checks(staged, grain, reconcile_with)
        out = StepOutcome(rows_in=rows_in, rows_out=checks[0].rows_checked)
        out.add_checks("gold", table, checks)
        raise_on_fail(out)
        lake.overwrite(staged, "gold", table)
        return out
    finally:
        staged.unpersist()


def _silver(ctx: Context, table: str) -> DataFrame:
    return lake.read(ctx.spark, "silver", table)


def silver_net_revenue(ctx: Context) -> object:
    """Silver's revenue-bearing net revenue, which each revenue table must sum to.

    silver.fact_sales' step leaves it on the context (one aggregation it runs
    anyway); a Gold run on its own counts it once (``Context.silver_net_revenue``).
    """
    with ctx.lock:
        if ctx.silver_net_revenue is None:
            fact = _silver(ctx, "fact_sales")
            total = fact.filter(F.col("is_revenue_bearing")).agg(F.sum("line_net")).first()[0]
            ctx.silver_net_revenue = total or 0
        return ctx.silver_net_revenue


def run_daily_sales(ctx: Context) -> StepOutcome:
    orders = _silver(ctx, "orders")
    fact = _silver(ctx, "fact_sales")
    return _publish(
        "daily_sales",
        daily_sales.build(orders, fact),
        ["order_date"],
        lake.row_count(ctx.spark, "silver", "orders"),
        reconcile_with=silver_net_revenue(ctx),
    )


def run_category_sales(ctx: Context) -> StepOutcome:
    fact = _silver(ctx, "fact_sales")
    rows_in = lake.row_count(ctx.spark, "silver", "fact_sales")
    return _publish("category_sales", category_sales.build(fact), ["month", "category"], rows_in)


def run_customer_rfm(ctx: Context) -> StepOutcome:
    orders = _silver(ctx, "orders")
    fact = _silver(ctx, "fact_sales")
    rows_in = lake.row_count(ctx.spark, "silver", "orders")
    return _publish("customer_rfm", customer_rfm.build(orders, fact), ["customer_id"], rows_in)


def run_revenue_anomalies(ctx: Context) -> StepOutcome:
    daily = lake.read(ctx.spark, "gold", "daily_sales")
    rows_in = lake.row_count(ctx.spark, "gold", "daily_sales")
    return _publish("revenue_anomalies", revenue_anomalies.build(daily), ["order_date"], rows_in)


def run_sales_cells(ctx: Context) -> StepOutcome:
    """The Sales page's cells (pipeline/gold/sales_cells.py); their revenue is Silver's."""
    fact = _silver(ctx, "fact_sales")
    return _publish(
        "sales_cells",
        sales_cells.build_cells(fact),
        sales_cells.CELL_GRAIN,
        lake.row_count(ctx.spark, "silver", "fact_sales"),
        reconcile_with=silver_net_revenue(ctx),
    )


def run_sales_orders(ctx: Context) -> StepOutcome:
    """Orders by category set: exact distinct order counts for any category filter."""
    orders = _silver(ctx, "orders")
    fact = _silver(ctx, "fact_sales")
    return _publish(
        "sales_orders",
        sales_cells.build_orders(orders, fact),
        sales_cells.ORDER_GRAIN,
        lake.row_count(ctx.spark, "silver", "orders"),
    )


def run_product_sales(ctx: Context) -> StepOutcome:
    fact = _silver(ctx, "fact_sales")
    return _publish(
        "product_sales",
        sales_cells.build_products(fact),
        sales_cells.PRODUCT_GRAIN,
        lake.row_count(ctx.spark, "silver", "fact_sales"),
        reconcile_with=silver_net_revenue(ctx),
    )


STEPS = [
    Step(
        "gold.daily_sales",
        "gold",
        catalog.refs("silver.orders", "silver.fact_sales"),
        catalog.outputs_of("gold.daily_sales"),
        run_daily_sales,
    ),
    Step(
        "gold.category_sales",
        "gold",
        catalog.refs("silver.fact_sales"),
        catalog.outputs_of("gold.category_sales"),
        run_category_sales,
    ),
    Step(
        "gold.customer_rfm",
        "gold",
        catalog.refs("silver.orders", "silver.fact_sales"),
        catalog.outputs_of("gold.customer_rfm"),
        run_customer_rfm,
    ),
    Step(
        "gold.revenue_anomalies",
        "gold",
        catalog.refs("gold.daily_sales"),
        catalog.outputs_of("gold.revenue_anomalies"),
        run_revenue_anomalies,
    ),
    Step(
        "gold.sales_cells",
        "gold",
        catalog.refs("silver.fact_sales"),
        catalog.outputs_of("gold.sales_cells"),
        run_sales_cells,
    ),
    Step(
        "gold.sales_orders",
        "gold",
        catalog.refs("silver.orders", "silver.fact_sales"),
        catalog.outputs_of("gold.sales_orders"),
        run_sales_orders,
    ),
    Step(
        "gold.product_sales",
        "gold",
        catalog.refs("silver.fact_sales"),
        catalog.outputs_of("gold.product_sales"),
        run_product_sales,
    ),
]
