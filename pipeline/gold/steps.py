"""Gold steps: each table recomputed from Silver, checked, then replaced in one Delta commit.

A table whose inputs are as its last build left them is not recomputed
(``_when_inputs_changed``): a run with nothing new, or a CRM export that
changed no fact line, leaves Gold as it was in a few reads of Delta logs.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipeline import catalog, checked_write, lake
from pipeline.gold import (
    category_sales,
    customer_rfm,
    daily_sales,
    revenue_anomalies,
    sales_cells,
)
from pipeline.gold.grain import CONFLICT
from pipeline.quality.expectations import RuleCount
from pipeline.registry import Context, Step, StepOutcome, raise_on_fail
from pipeline.silver import incremental


def _metrics(df: DataFrame, grain: list[str]) -> list[Column]:
    """The checks' aggregates, for one aggregation or for the write's own job (``observe``).

    A table aggregated by its grain (``grain.CONFLICT`` beside its columns) is
    unique by construction: its grain rule counts the keys whose dependent
    columns disagree, without the distinct count's second shuffle.
    """
    if CONFLICT in df.columns:
        keys = F.count(F.when(F.col(CONFLICT), F.lit(1))).alias("conflicts")
    else:
        keys = F.count_distinct(F.struct(*[F.col(c) for c in grain])).alias("keys")
    metrics = [F.count(F.lit(1)).alias("rows"), keys]
    if "net_revenue" in df.columns:
        metrics.append(F.count(F.when(F.col("net_revenue") < 0, F.lit(1))).alias("negative"))
        metrics.append(F.sum("net_revenue").alias("net_revenue"))
    return metrics


def _rule_counts(values: Mapping[str, object], reconcile_with: object = None) -> list[RuleCount]:
    """Grain uniqueness, no negative revenue and, with ``reconcile_with`` (Silver's net
    revenue), the table's net revenue summing to it; from ``_metrics``' values."""
    rows = int(values["rows"])  # type: ignore[arg-type]
    if "conflicts" in values:
        repeated = int(values["conflicts"])  # type: ignore[arg-type]
    else:
        repeated = rows - int(values["keys"])  # type: ignore[arg-type]
    out = [RuleCount("grain_unique", "fail", rows, repeated)]
    if "negative" in values:
        out.append(RuleCount("no_negative_revenue", "fail", rows, int(values["negative"])))  # type: ignore[arg-type]
        if reconcile_with is not None:
            same = (values["net_revenue"] or 0) == reconcile_with
            out.append(RuleCount("net_revenue_reconciles_with_silver", "fail", 1, 0 if same else 1))
    return out


def _arrow_metrics(data: pa.Table, grain: list[str]) -> dict[str, object]:
    """``_metrics`` of rows already collected: no Spark job."""
    values: dict[str, object] = {"rows": data.num_rows}
    if CONFLICT in data.column_names:
        values["conflicts"] = pc.sum(data.column(CONFLICT)).as_py() or 0
    else:
        values["keys"] = _distinct(data.select(grain)) if data.num_rows else 0
    if "net_revenue" in data.column_names:
        revenue = data.column("net_revenue")
        values["negative"] = pc.sum(pc.less(revenue, 0)).as_py() or 0
        values["net_revenue"] = pc.sum(revenue).as_py()
    return values


def _distinct(keys: pa.Table) -> int:
    """Distinct rows; a list column (sales_orders' category set) compared as joined text."""
    columns = [pc.binary_join(c, "\x1f") if pa.types.is_list(c.type) else c for c in keys.columns]
    named = pa.table(columns, names=keys.column_names)
    return named.group_by(keys.column_names).aggregate([]).num_rows


def _publish(
    table: str, df: DataFrame, grain: list[str], rows_in: int, reconcile_with: object = None
) -> StepOutcome:
    """Check, then replace the table; a fail rule leaves it as it was.

    - A small lake, or a table small at any size (``lake.collect_target``): the
      rows are collected once, checked in Arrow and committed by delta-rs.
    - A large table aggregated by its grain (``grain.CONFLICT``) on a local lake:
      one Spark job writes the rows and gathers the checks, and delta-rs commits
      them if they pass (pipeline/checked_write.py).
    - Otherwise the rows are staged, checked in one aggregation, then written.
    """
    out = StepOutcome(rows_in=rows_in)

    def check(values: Mapping[str, object]) -> None:
        out.rows_out = int(values["rows"])  # type: ignore[arg-type]
        out.add_checks("gold", table, _rule_counts(values, reconcile_with))
        raise_on_fail(out)

    if lake.collect_target("gold", table) is not None:
        data = df.toArrow()
        check(_arrow_metrics(data, grain))
        if CONFLICT in data.column_names:
            data = data.drop_columns([CONFLICT])
        lake.overwrite_arrow(data, "gold", table)
        return out
    local = lake.local_location("gold", table)
    if CONFLICT in df.columns and local is not None and not lake.spark_writes_only():
        metrics = _metrics(df, grain)
        checked_write.overwrite_checked(df, "gold", table, metrics, check, drop=[CONFLICT])
        return out
    staged = df.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        check(staged.agg(*_metrics(staged, grain)).first().asDict())
        lake.overwrite(staged.drop(CONFLICT), "gold", table)
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


# The code a Gold table's rows follow: any change to it rebuilds every Gold table once.
LOGIC_FILES = (
    *sorted(Path(__file__).parent.glob("*.py")),
    Path(catalog.__file__),
    Path(__file__).parent.parent / "contract.py",
    Path(__file__).parent.parent / "silver" / "normalise.py",
)


@functools.cache
def logic_fingerprint() -> str:
    digest = hashlib.sha256()
    for file in LOGIC_FILES:
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def _when_inputs_changed(
    name: str, inputs: tuple[str, ...], build: Callable[[Context], StepOutcome]
) -> Callable[[Context], StepOutcome]:
    """``build``, unless the table and its inputs are at the versions its last build left.

    The last build's versions, counts and code (``logic_fingerprint``) are a
    state row (silver._refine_state, source ``gold.<table>``), committed with
    the run's bookkeeping at its end: a build killed or failed before that
    leaves the old row, so the next run builds again. Skipped, the step checks
    nothing (the checks of the build that wrote the rows stand, as for a Silver
    table with no new files). ``run --full-refresh`` always builds.
    """
    refs = (*inputs, name)

    def run(ctx: Context) -> StepOutcome:
        spark = ctx.spark
        seen = incremental.table_versions(spark, refs)
        state = incremental.read_state(spark, name)
        forced = ctx.full_refresh or incremental.full_refresh_requested()
        if (
            not forced
            and state is not None
            and state.fingerprint == logic_fingerprint()
            and state.versions == seen
        ):
            return StepOutcome(
                rows_in=state.counts.get("rows_in", 0),
                rows_out=state.counts.get("rows_out", 0),
                notes=["inputs unchanged: not recomputed"],
            )
        out = build(ctx)
        built = {**seen, **incremental.table_versions(spark, (name,))}
        counts = {"rows_in": out.rows_in, "rows_out": out.rows_out}
        row = incremental.state_row(
            name, ctx.run_id, True, counts, logic_fingerprint(), versions=built
        )
        ctx.defer("silver", incremental.STATE_TABLE, incremental.STATE_SCHEMA, [row])
        return out

    return run


def _step(name: str, inputs: tuple[str, ...], build: Callable[[Context], StepOutcome]) -> Step:
    refs = catalog.refs(*inputs)
    return Step(
        name, "gold", refs, catalog.outputs_of(name), _when_inputs_changed(name, refs, build)
    )


STEPS = [
    _step("gold.daily_sales", ("silver.orders", "silver.fact_sales"), run_daily_sales),
    _step("gold.category_sales", ("silver.fact_sales",), run_category_sales),
    _step("gold.customer_rfm", ("silver.orders", "silver.fact_sales"), run_customer_rfm),
    _step("gold.revenue_anomalies", ("gold.daily_sales",), run_revenue_anomalies),
    _step("gold.sales_cells", ("silver.fact_sales",), run_sales_cells),
    _step("gold.sales_orders", ("silver.orders", "silver.fact_sales"), run_sales_orders),
    _step("gold.product_sales", ("silver.fact_sales",), run_product_sales),
]
