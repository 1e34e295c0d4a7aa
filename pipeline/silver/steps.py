"""Silver steps: refine each source from all of Bronze, then apply it with MERGE.

Silver is recomputed from the whole Bronze history and applied as a MERGE
(only changed rows are rewritten): exact by construction, idempotent, and a
rerun writes nothing new. Order matters: customers and products before
orders, orders before items (the orphan rule reads silver.orders).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from pipeline import lake
from pipeline.contract import SOURCES
from pipeline.quality.checks import table_checks
from pipeline.quality.expectations import RuleCount
from pipeline.registry import Context, Step, StepOutcome, raise_on_fail
from pipeline.silver import customers, model, order_items, orders, products
from pipeline.silver.refine import Refined, quarantine_rows, refine

QUARANTINE = "quarantine"


class EmptyLakeError(RuntimeError):
    pass


def _bronze(ctx: Context, source: str) -> DataFrame:
    df = lake.read_or_none(ctx.spark, "bronze", source)
    if df is None:
        raise EmptyLakeError(
            f"bronze.{source} does not exist yet: generate data and run the bronze layer first"
        )
    return df


def _apply(ctx: Context, module: ModuleType, refined: Refined, silver: DataFrame) -> StepOutcome:
    """Check first, then write: a fail rule leaves the Silver tables as they were."""
    source = module.SOURCE
    counts = refined.counts
    out = StepOutcome(
        rows_in=counts["bronze"],
        rows_out=counts["silver"],
        rows_quarantined=counts["quarantined"],
        reconciliation={
            k: counts[k] for k in ("bronze", "silver", "quarantined", "duplicate", "superseded")
        },
    )
    balanced = counts["bronze"] == (
        counts["silver"] + counts["quarantined"] + counts["duplicate"] + counts["superseded"]
    )
    out.add_checks(
        "silver",
        source.name,
        [
            *refined.rules,
            RuleCount("exact_duplicates", "warn", counts["bronze"], counts["duplicate"]),
            RuleCount("superseded_versions", "warn", counts["checked"], counts["superseded"]),
            RuleCount("reconciliation", "fail", 1, 0 if balanced else 1),
        ],
    )
    out.add_checks("silver", source.name, table_checks(silver, source.key, module.COLUMNS))
    raise_on_fail(out)
    lake.sync(silver, "silver", source.name, keys=source.key)
    lake.sync(
        quarantine_rows(refined, source, module.record_key()),
        "silver",
        QUARANTINE,
        keys=("source_table", "record_id"),
        scope=f"TARGET.source_table = '{source.name}'",
        partition_by=("source_table",),
    )
    return out


def _refine(ctx: Context, module: ModuleType, typed: Callable[[DataFrame], DataFrame]) -> Refined:
    return refine(
        _bronze(ctx, module.SOURCE.name),
        module.SOURCE,
        typed,
        module.EXPECTATIONS,
        updated_at=F.col("_updated_at") if module is not order_items else F.lit(None),
        version_key=[F.trim(F.col("order_id")), F.col("_line_no")]
        if module is order_items
        else None,
    )


def run_products(ctx: Context) -> StepOutcome:
    refined = _refine(ctx, products, products.typed)
    try:
        silver = products.to_silver(refined.silver())
        out = _apply(ctx, products, refined, silver)
        lake.overwrite(
            model.dim_product(lake.read(ctx.spark, "silver", "products")), "silver", "dim_product"
        )
        return out
    finally:
        refined.release()


def run_customers(ctx: Context) -> StepOutcome:
    refined = _refine(ctx, customers, customers.typed)
    try:
        out = _apply(ctx, customers, refined, customers.to_silver(refined.silver()))
        versions = refined.fated.filter(F.col("_fate").isin("silver", "superseded"))
        lake.overwrite(model.dim_customer(customers.to_silver(versions)), "silver", "dim_customer")
        return out
    finally:
        refined.release()


def run_orders(ctx: Context) -> StepOutcome:
    refined = _refine(ctx, orders, orders.typed)
    try:
        return _apply(ctx, orders, refined, orders.to_silver(refined.silver()))
    finally:
        refined.release()


def run_order_items(ctx: Context) -> StepOutcome:
    order_keys = lake.read(ctx.spark, "silver", "orders").select("order_id")
    refined = _refine(ctx, order_items, lambda df: order_items.typed(df, order_keys))
    try:
        return _apply(ctx, order_items, refined, order_items.to_silver(refined.silver()))
    finally:
        refined.release()


def run_model(ctx: Context) -> StepOutcome:
    """fact_sales and dim_date, plus the referential checks that keep orphans visible."""
    spark = ctx.spark
    silver_orders = lake.read(spark, "silver", "orders")
    silver_items = lake.read(spark, "silver", "order_items")
    silver_customers = lake.read(spark, "silver", "customers")
    dim_products = lake.read(spark, "silver", "dim_product").filter(
        F.col("product_id") != "UNKNOWN"
    )
    fact = model.fact_sales(silver_orders, silver_items, dim_products, silver_customers)
    lake.overwrite(fact, "silver", "fact_sales")
    lake.overwrite(model.dim_date(spark, silver_orders), "silver", "dim_date")

    written = lake.read(spark, "silver", "fact_sales")
    refs = written.agg(
        F.count(F.lit(1)).alias("lines"),
        F.sum((F.col("product_key") == "UNKNOWN").cast("int")).alias("unknown_product"),
    ).first()
    order_refs = (
        silver_orders.join(
            silver_customers.select(F.col("customer_id").alias("_c")),
            on=silver_orders["customer_id"] == F.col("_c"),
            how="left",
        )
        .agg(
            F.count(F.lit(1)).alias("orders"),
            F.sum(F.col("_c").isNull().cast("int")).alias("orphan_customer"),
        )
        .first()
    )
    lines = int(refs["lines"] or 0)
    out = StepOutcome(rows_in=lines, rows_out=lines)
    out.add_checks(
        "silver",
        "orders",
        [
            RuleCount(
                "orphan_customer",
                "warn",
                int(order_refs["orders"] or 0),
                int(order_refs["orphan_customer"] or 0),
            )
        ],
    )
    out.add_checks(
        "silver",
        "order_items",
        [RuleCount("unknown_product", "warn", lines, int(refs["unknown_product"] or 0))],
    )
    return out


STEPS = [
    Step(
        "silver.products",
        "silver",
        ("bronze.products",),
        ("silver.products", "silver.dim_product"),
        run_products,
    ),
    Step(
        "silver.customers",
        "silver",
        ("bronze.customers",),
        ("silver.customers", "silver.dim_customer"),
        run_customers,
    ),
    Step("silver.orders", "silver", ("bronze.orders",), ("silver.orders",), run_orders),
    Step(
        "silver.order_items",
        "silver",
        ("bronze.order_items", "silver.orders"),
        ("silver.order_items",),
        run_order_items,
    ),
    Step(
        "silver.fact_sales",
        "silver",
        ("silver.orders", "silver.order_items", "silver.dim_product", "silver.customers"),
        ("silver.fact_sales", "silver.dim_date"),
        run_model,
    ),
]
assert {s.name.split(".")[1] for s in STEPS[:4]} == set(SOURCES)
