"""Silver steps: refine each source from Bronze, then apply it with MERGE.

Long (~690 lines): the full and the incremental path of every source and of the
fact table, whose bookkeeping must agree, kept side by side.

Products (small) are recomputed from the whole Bronze history and replaced
only when their rows changed. Customers, orders and order items refine only
the keys new Bronze files touch
(pipeline/silver/incremental.py) and apply that change set; the first run, a
rule change or ``run --full-refresh`` recomputes them from all of Bronze.
Both ways are exact by construction and idempotent: a rerun writes nothing.
Order matters: customers and products before orders, orders before items
(the orphan rule reads silver.orders).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from types import ModuleType

import pyarrow as pa
import pyarrow.compute as pc
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline import catalog, lake
from pipeline.contract import SOURCES, UNKNOWN_CUSTOMER, Source
from pipeline.quality.checks import arrow_table_checks, table_checks
from pipeline.quality.expectations import Expectation, RuleCount
from pipeline.quality.scores import SUMMARY_RULE
from pipeline.registry import Context, Step, StepOutcome, raise_on_fail
from pipeline.silver import customers, incremental, model, order_items, orders, products
from pipeline.silver.refine import (
    FAILING,
    FATE,
    VERSION_KEY,
    Refined,
    expectations_enabled,
    quarantine_rows,
    refine,
)
from pipeline.silver.versions import IS_DUPLICATE, mark_exact_duplicates

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


FATE_KEYS = ("bronze", "silver", "quarantined", "duplicate", "superseded")


def _outcome(
    source: Source,
    counts: dict[str, int],
    rules: list[RuleCount],
    bronze_rows: int,
    checked: dict[str, int] | None = None,
) -> StepOutcome:
    """Rows, the cumulative reconciliation and the fate checks of one Silver table.

    ``counts`` are cumulative (all of Bronze); ``checked`` are the fates of the
    records this run judged (the same on a full recompute). The rule rows are
    over the checked records, so the quality score is this run's; the
    ``records_failing_any_rule`` row gives the score its exact numerator (a
    record that failed two rules counts once: docs/quality.md).
    """
    checked = checked or counts
    out = StepOutcome(
        rows_in=counts["bronze"],
        rows_out=counts["silver"],
        rows_quarantined=counts["quarantined"],
        reconciliation={k: counts[k] for k in FATE_KEYS},
    )
    balanced = bronze_rows == counts["bronze"] == sum(counts[k] for k in FATE_KEYS[1:])
    out.add_checks(
        "silver",
        source.name,
        [
            *rules,
            RuleCount("exact_duplicates", "warn", checked["bronze"], checked["duplicate"]),
            RuleCount("superseded_versions", "warn", checked["checked"], checked["superseded"]),
            RuleCount(SUMMARY_RULE, "summary", checked["checked"], checked[FAILING]),
            RuleCount("reconciliation", "fail", 1, 0 if balanced else 1),
        ],
    )
    return out


def _apply(
    ctx: Context, module: ModuleType, refined: Refined, silver: DataFrame, compare: bool = True
) -> StepOutcome:
    """Check first, then write: a fail rule leaves the Silver tables as they were.

    ``compare``: leave a table alone when its rows are the same (``lake.sync``);
    pointless when new Bronze files were refined.
    """
    source = module.SOURCE
    counts = refined.counts
    out = _outcome(source, counts, refined.rules, counts["bronze"])
    if not compare and lake.arrow_target("silver", source.name) is not None:
        # a small lake: the rows are collected once, checked in Arrow, committed by delta-rs
        rows = lake.with_row_hash(silver).toArrow()
        checks = arrow_table_checks(rows, source.key, module.COLUMNS)
        out.add_checks("silver", source.name, checks)
        raise_on_fail(out)
        lake.overwrite_arrow(rows, "silver", source.name)
    else:
        out.add_checks("silver", source.name, table_checks(silver, source.key, module.COLUMNS))
        raise_on_fail(out)
        lake.sync(silver, "silver", source.name, keys=source.key, compare=compare)
    lake.sync(
        quarantine_rows(refined, source, module.record_key()),
        "silver",
        QUARANTINE,
        keys=("source_table", "record_id"),
        scope=_scope(source),
        partition_by=("source_table",),
        compare=compare,
    )
    return out


def _scope(source: Source) -> str:
    return f"TARGET.source_table = '{source.name}'"


def _refine(
    ctx: Context,
    module: ModuleType,
    typed: Callable[[DataFrame], DataFrame],
    bronze: DataFrame | None = None,
) -> Refined:
    return refine(
        bronze if bronze is not None else _bronze(ctx, module.SOURCE.name),
        module.SOURCE,
        typed,
        module.EXPECTATIONS,
        updated_at=F.col("_updated_at") if module is not order_items else F.lit(None),
        version_key=[F.trim(F.col("order_id")), F.col("_line_no")]
        if module is order_items
        else None,
    )


def run_products(ctx: Context) -> StepOutcome:
    """Products are few: whenever new files arrive they are recomputed from all of Bronze."""
    return _refine_incrementally(
        ctx,
        products,
        products.typed,
        group=F.trim(F.col("product_id")),
        then=_dim_product,
        always_full=True,
        derived=("dim_product",),
    )


def _dim_product(ctx: Context, refined: Refined, full: bool) -> None:
    lake.overwrite(
        model.dim_product(lake.read(ctx.spark, "silver", "products")), "silver", "dim_product"
    )


def run_customers(ctx: Context) -> StepOutcome:
    return _refine_incrementally(
        ctx,
        customers,
        customers.typed,
        group=F.trim(F.col("customer_id")),
        then=_dim_customer,
        derived=("dim_customer",),
    )


def _dim_customer(ctx: Context, refined: Refined, full: bool) -> None:
    """SCD2 history of the refined customers: all of it, or the touched customers' rows."""
    versions = refined.fated.filter(F.col(FATE).isin("silver", "superseded"))
    history = model.dim_customer(customers.to_silver(versions))
    if full:
        lake.overwrite(history, "silver", "dim_customer")
        return
    touched = _touched_groups(refined).select(F.col("key").alias("customer_id"))
    known = history.filter(F.col("customer_id") != UNKNOWN_CUSTOMER)
    lake.replace_groups(known, "silver", "dim_customer", touched)


def run_orders(ctx: Context) -> StepOutcome:
    return _refine_incrementally(ctx, orders, orders.typed, group=F.trim(F.col("order_id")))


def run_order_items(ctx: Context) -> StepOutcome:
    order_keys = lake.read(ctx.spark, "silver", "orders").select("order_id")
    return _refine_incrementally(
        ctx,
        order_items,
        lambda df: order_items.typed(df, order_keys),
        group=F.trim(F.col("order_id")),
        upstream=orders,
    )


def _refine_incrementally(
    ctx: Context,
    module: ModuleType,
    typed: Callable[[DataFrame], DataFrame],
    group: Column,
    upstream: ModuleType | None = None,
    then: Callable[[Context, Refined, bool], None] | None = None,
    always_full: bool = False,
    derived: tuple[str, ...] = (),
) -> StepOutcome:
    """Refine the Bronze files Silver has not seen (pipeline/silver/incremental.py).

    ``group`` is a prefix of the version key; every record of a touched group
    is refined again. ``upstream`` is the source whose new records also touch
    this one's groups (orders for order items: the orphan rule). ``then``
    maintains the ``derived`` tables from the refined records (full: all of
    them). With nothing new the step reads no data and writes nothing. With
    new files a small table (``incremental.recompute_below``) or an
    ``always_full`` one is recomputed from all of Bronze: below that size a
    recompute's few overwrites cost less than the incremental path's MERGEs
    and checks, and it gives the same rows.
    """
    spark = ctx.spark
    source = module.SOURCE
    bronze = _bronze(ctx, source.name)
    above = _bronze(ctx, upstream.SOURCE.name) if upstream else None
    rules_fp = incremental.fingerprint(
        module.EXPECTATIONS,
        *([upstream.EXPECTATIONS] if upstream else []),
        [] if expectations_enabled() else [Expectation("off", "true", "warn")],
    )
    state = incremental.read_state(spark, source.name)
    plan = incremental.make_plan(
        state,
        incremental.files_in(spark, source.name),
        incremental.files_in(spark, upstream.SOURCE.name) if upstream else (),
        rules_fp,
        all(lake.exists(spark, "silver", t) for t in (source.name, *derived)),
        ctx.full_refresh or incremental.full_refresh_requested(),
    )
    # A recompute chosen for cost, not for correctness: the keys the new files touch are
    # the only ones whose rows can change, and the steps downstream need only those.
    by_choice = False
    if not plan.full and not plan.nothing_new:
        if always_full:
            plan, by_choice = replace(plan, full=True, reason="new files"), True
        elif lake.row_count(spark, "bronze", source.name) < incremental.recompute_below():
            plan, by_choice = replace(plan, full=True, reason="new files in a small table"), True
    if plan.full:
        refined = _refine(ctx, module, typed, bronze)
        new_data = bool(plan.new_files or plan.new_upstream_files)
        try:
            silver_rows = module.to_silver(refined.silver())
            out = _apply(ctx, module, refined, silver_rows, compare=not new_data)
            if then:
                then(ctx, refined, True)
            out.notes.append(f"full recompute: {plan.reason}")
            keys = None
            if module is products:
                keys = []  # fact_sales compares the products' rows itself
            elif by_choice:
                keys = _new_groups(source, upstream, bronze, above, plan, group)
            _record_refine(ctx, source, keys, True, refined.counts, rules_fp, plan)
            return out
        finally:
            refined.release()
    assert state is not None
    if plan.nothing_new:
        # Nothing was checked, so nothing is recorded in gold.dq_results: the quality
        # scores keep showing the last run that judged records of this table.
        counts = state.counts
        out = StepOutcome(
            rows_in=counts["bronze"],
            rows_out=counts["silver"],
            rows_quarantined=counts["quarantined"],
            reconciliation={k: counts[k] for k in FATE_KEYS},
        )
        out.notes.append("no new Bronze files: Silver unchanged")
        return out

    new_rows = incremental.from_files(bronze, plan.new_files)
    groups = new_rows.select(group.alias("_group"))
    if above is not None and plan.new_upstream_files:
        from_above = incremental.from_files(above, plan.new_upstream_files)
        groups = groups.unionByName(from_above.select(group.alias("_group")))
    small = new_rows.count() < incremental.BROADCAST_LIMIT
    touched = incremental.touched(bronze, group, groups, small).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    refined = _refine(ctx, module, typed, touched)
    try:
        old_rows = touched.filter(~F.col("_source_file").isin(sorted(plan.new_files)))
        counts = incremental.combine(
            state.counts,
            _stored_fates(spark, source, old_rows, state.versions),
            {k: refined.counts[k] for k in FATE_KEYS},
        )
        counts["checked"] = refined.counts["checked"]
        bronze_rows = lake.row_count(spark, "bronze", source.name)
        out = _outcome(source, counts, refined.rules, bronze_rows, refined.counts)
        out.notes.append(
            f"incremental: {len(plan.new_files)} new file(s); refined {refined.counts['bronze']:,}"
            " Bronze records of the keys they touch"
        )
        raise_on_fail(out)
        lake.upsert(_silver_changes(module, refined), "silver", source.name, keys=source.key)
        lake.upsert(
            _quarantine_changes(module, refined),
            "silver",
            QUARANTINE,
            keys=("source_table", "record_id"),
            scope=_scope(source),
            deletion_vectors=False,  # delta-rs deletes from it (pipeline/demo.py)
        )
        if then:
            then(ctx, refined, False)
        groups = _touched_groups(refined).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            keys = [r["key"] for r in groups.collect()]
            # The MERGE left every other key as it was: the table checks read the touched keys.
            written = lake.read(spark, "silver", source.name)
            in_groups = written.join(
                F.broadcast(groups) if small else groups,
                on=written[source.key[0]] == groups["key"],
                how="left_semi",
            )
            checks = table_checks(in_groups, source.key, module.COLUMNS)
        finally:
            groups.unpersist()
        out.add_checks("silver", source.name, checks)
        stored = _stored_counts(spark, source)
        matches = stored == (counts["silver"], counts["quarantined"])
        out.add_checks(
            "silver",
            source.name,
            [RuleCount("reconciliation_stored", "fail", 1, 0 if matches else 1)],
        )
        # A mismatch leaves a state that forces the next run to recompute everything.
        _record_refine(ctx, source, keys, False, counts, rules_fp if matches else "", plan)
        return out
    finally:
        refined.release()
        touched.unpersist()


def _new_groups(
    source: Source,
    upstream: ModuleType | None,
    bronze: DataFrame,
    above: DataFrame | None,
    plan: incremental.Plan,
    group: Column,
) -> list[str]:
    """The groups (the first key column, trimmed) of the records in the plan's new files.

    Read by delta-rs where the lake is local (a few files' one column: no
    Spark job), else by Spark. ``group`` is always ``trim(<first key>)``, and
    Spark's trim removes spaces only, as ``utf8_trim(characters=" ")`` does.
    """
    import pyarrow.compute as pc

    column = source.key[0]
    wanted = [(source.name, plan.new_files)]
    if upstream is not None and plan.new_upstream_files:
        wanted.append((upstream.SOURCE.name, plan.new_upstream_files))
    found: set[str] = set()
    for name, files in wanted:
        values = lake.column_where_in("bronze", name, column, ("_source_file", files))
        if values is None:
            return _new_groups_by_spark(bronze, above, plan, group)
        found.update(pc.utf8_trim(values.drop_null(), characters=" ").to_pylist())
    return sorted(found)


def _new_groups_by_spark(
    bronze: DataFrame, above: DataFrame | None, plan: incremental.Plan, group: Column
) -> list[str]:
    new_rows = incremental.from_files(bronze, plan.new_files).select(group.alias("key"))
    if above is not None and plan.new_upstream_files:
        from_above = incremental.from_files(above, plan.new_upstream_files)
        new_rows = new_rows.unionByName(from_above.select(group.alias("key")))
    return [r["key"] for r in new_rows.dropna().distinct().collect()]


def _record_refine(
    ctx: Context,
    source: Source,
    keys: list[str] | None,
    full: bool,
    counts: dict[str, int],
    rules_fp: str,
    plan: incremental.Plan,
) -> None:
    """The refine's touched keys and state, for the steps after it and for the next run.

    Committed by the runner at the end of the run (``Context.defer``), with the
    Delta versions the refine left its tables at (``_stored_fates`` reads them).
    """
    ctx.touched[source.name] = keys
    ctx.defer(
        "silver",
        incremental.TOUCHED_TABLE,
        incremental.TOUCHED_SCHEMA,
        incremental.touched_rows(source.name, ctx.run_id, keys),
    )
    versions = {
        "silver": lake.latest_version(ctx.spark, "silver", source.name),
        QUARANTINE: lake.latest_version(ctx.spark, "silver", QUARANTINE),
    }
    row = incremental.state_row(
        source.name,
        ctx.run_id,
        full,
        counts,
        rules_fp,
        *plan.covered,
        versions={k: v for k, v in versions.items() if v is not None},
    )
    ctx.defer("silver", incremental.STATE_TABLE, incremental.STATE_SCHEMA, [row])


def _touched_groups(refined: Refined) -> DataFrame:
    """The first key column of every refined record: the group the step touched."""
    return (
        refined.fated.filter(F.col(FATE) != "duplicate")
        .select(F.col(f"{VERSION_KEY}0").alias("key"))
        .dropna()
        .distinct()
    )


def _stored_fates(
    spark: SparkSession, source: Source, old_rows: DataFrame, versions: dict[str, int] | None
) -> dict[str, int]:
    """What the already-refined records of the touched keys were before this run.

    Silver and quarantine are read back by record id, as the last recorded
    refine left them (``versions``; a table without one is read as it is now);
    an exact duplicate stays one (its earlier twin has its key, so it is among
    these rows); the rest had been superseded.
    """

    def as_recorded(table: str) -> DataFrame:
        version = (versions or {}).get("silver" if table == source.name else table)
        if version is None:
            return lake.read(spark, "silver", table)
        return lake.read_version(spark, "silver", table, version)

    ids = old_rows.select(F.col("_record_id").alias("record_id"))
    silver_ids = as_recorded(source.name).select(
        F.col("record_id"), F.lit("silver").alias("_table")
    )
    quarantine_ids = (
        as_recorded(QUARANTINE)
        .filter(F.col("source_table") == source.name)
        .select(F.col("record_id"), F.lit("quarantined").alias("_table"))
    )
    # one job for both tables: each Spark job costs a few tenths of a second to start
    stored = silver_ids.unionByName(quarantine_ids).join(ids, on="record_id", how="left_semi")
    found = {r["_table"]: int(r["count"]) for r in stored.groupBy("_table").count().collect()}
    marked = mark_exact_duplicates(old_rows, [*source.columns, "_raw"])
    row = marked.agg(
        F.count(F.lit(1)).alias("rows"), F.sum(F.col(IS_DUPLICATE).cast("int")).alias("dup")
    ).first()
    total, duplicate = int(row["rows"] or 0), int(row["dup"] or 0)
    silver, quarantined = found.get("silver", 0), found.get("quarantined", 0)
    return {
        "bronze": total,
        "silver": silver,
        "quarantined": quarantined,
        "duplicate": duplicate,
        "superseded": total - silver - quarantined - duplicate,
    }


def _stored_counts(spark: SparkSession, source: Source) -> tuple[int, int]:
    """Rows of the source in Silver and in quarantine now: from the tables' logs where
    they count exactly (``lake.logged_row_count``: a full scan saved), else in one job."""
    logged = (
        lake.logged_row_count("silver", source.name),
        lake.logged_row_count("silver", QUARANTINE, ("source_table", source.name)),
    )
    if None not in logged:
        return logged  # type: ignore[return-value]
    silver = lake.read(spark, "silver", source.name).select(F.lit("silver").alias("_table"))
    quarantine = (
        lake.read(spark, "silver", QUARANTINE)
        .filter(F.col("source_table") == source.name)
        .select(F.lit(QUARANTINE).alias("_table"))
    )
    found = {
        r["_table"]: int(r["count"])
        for r in silver.unionByName(quarantine).groupBy("_table").count().collect()
    }
    return found.get("silver", 0), found.get(QUARANTINE, 0)


def _silver_changes(module: ModuleType, refined: Refined) -> DataFrame:
    """Survivors of the touched keys, and a delete for each touched key left without one."""
    key = list(module.SOURCE.key)
    survivors = module.to_silver(refined.silver())
    key_columns = [F.col(f"{VERSION_KEY}{i}").alias(k) for i, k in enumerate(key)]
    refined_keys = (
        refined.fated.filter(F.col(FATE) != "duplicate")
        .select(*key_columns)
        .dropna(how="any")
        .distinct()
    )
    gone = refined_keys.join(survivors.select(*key), on=key, how="left_anti")
    return survivors.withColumn(lake.DELETE, F.lit(False)).unionByName(
        gone.withColumn(lake.DELETE, F.lit(True)), allowMissingColumns=True
    )


def _quarantine_changes(module: ModuleType, refined: Refined) -> DataFrame:
    """Quarantined touched records in; touched records no longer quarantined out."""
    source = module.SOURCE
    kept = quarantine_rows(refined, source, module.record_key())
    released = refined.fated.filter(F.col(FATE) != "quarantined").select(
        F.lit(source.name).alias("source_table"),
        F.col("_record_id").alias("record_id"),
    )
    return kept.withColumn(lake.DELETE, F.lit(False)).unionByName(
        released.withColumn(lake.DELETE, F.lit(True)), allowMissingColumns=True
    )


def run_model(ctx: Context) -> StepOutcome:
    """fact_sales and dim_date, plus the referential checks that keep orphans visible.

    fact_sales is rebuilt only for the orders whose lines can have changed:
    orders and items the Silver steps touched since the last build, orders of
    touched customers (known or not decides customer_key), and orders with a
    line of a product whose row changed. A Silver full recompute, a missing
    table or ``--full-refresh`` rebuild it all.
    """
    spark = ctx.spark
    silver_orders = lake.read(spark, "silver", "orders")
    silver_items = lake.read(spark, "silver", "order_items")
    silver_customers = lake.read(spark, "silver", "customers")
    dim_products = lake.read(spark, "silver", "dim_product").filter(
        F.col("product_id") != "UNKNOWN"
    )
    note, built = _build_fact(ctx, silver_orders, silver_items, dim_products, silver_customers)
    dates = model.dim_date(spark, silver_orders)
    if lake.collect_target("silver", "dim_date") is not None:  # a row a day: collected
        lake.overwrite_arrow(dates.toArrow(), "silver", "dim_date")
    else:
        lake.overwrite(dates, "silver", "dim_date")

    refs = _fact_refs(built) if built is not None else _fact_refs_by_spark(spark)
    with ctx.lock:  # what Gold's revenue tables must sum to (gold/steps.py)
        ctx.silver_net_revenue = refs["net_revenue"] or 0
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
    out = StepOutcome(rows_in=lines, rows_out=lines, notes=[note])
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


def _fact_refs(fact: pa.Table) -> dict[str, object]:
    """``_fact_refs_by_spark`` on the rows just written, already in memory (a small lake)."""
    revenue = pc.filter(
        fact.column("line_net"), pc.fill_null(fact.column("is_revenue_bearing"), False)
    )
    unknown = pc.sum(pc.equal(fact.column("product_key"), "UNKNOWN")).as_py()
    return {
        "lines": fact.num_rows,
        "unknown_product": unknown,
        "net_revenue": pc.sum(revenue).as_py(),
    }


def _fact_refs_by_spark(spark: SparkSession) -> dict[str, object]:
    """Lines, lines of an unknown product and revenue-bearing net revenue, in one job."""
    written = lake.read(spark, "silver", "fact_sales")
    return (
        written.agg(
            F.count(F.lit(1)).alias("lines"),
            F.sum((F.col("product_key") == "UNKNOWN").cast("int")).alias("unknown_product"),
            F.sum(F.when(F.col("is_revenue_bearing"), F.col("line_net"))).alias("net_revenue"),
        )
        .first()
        .asDict()
    )


FACT_STATE = "fact_sales"


def _build_fact(
    ctx: Context,
    orders_: DataFrame,
    items: DataFrame,
    dim_products: DataFrame,
    customers_: DataFrame,
) -> tuple[str, pa.Table | None]:
    """The build's note, and its rows when a full rebuild wrote them through delta-rs."""
    spark = ctx.spark
    built = None
    state = incremental.read_state(spark, FACT_STATE)
    products_version = lake.latest_version(spark, "silver", "products") or 0
    earlier = incremental.touched_since(spark, state.run_id) if state else None
    reason = ""
    if ctx.full_refresh or incremental.full_refresh_requested():
        reason = "full refresh requested"
    elif any(keys is None for keys in ctx.touched.values()):
        reason = "a Silver table was recomputed"
    elif state is None or earlier is None or not lake.exists(spark, "silver", "fact_sales"):
        reason = "first build"
    elif set(catalog.columns("silver", "fact_sales")) - set(_silver_columns(spark, "fact_sales")):
        reason = "the table lacks columns this version adds"
    elif lake.row_count(spark, "bronze", "order_items") < incremental.recompute_below():
        reason = "a small table (a rebuild costs less than a MERGE)"
    elif earlier.filter(F.col("key").isNull()).limit(1).count():
        reason = "a Silver table was recomputed"
    changed_products = None
    if not reason:
        changed_products = _changed_products(spark, state.counts.get("products_version"))
        if changed_products is None:
            reason = "the products' earlier version is gone"
    if reason:
        fact = model.fact_sales(orders_, items, dim_products, customers_)
        built = lake.overwrite(fact, "silver", "fact_sales")
        note = f"full rebuild: {reason}"
    else:
        # this run's keys are in memory (committed at the run's end), earlier runs' in the table
        this_run = [
            (name, ctx.run_id, key) for name, keys in ctx.touched.items() for key in keys or ()
        ]
        touched = earlier.unionByName(lake.rows_frame(spark, this_run, incremental.TOUCHED_SCHEMA))
        by_order = touched.filter(F.col("source_table").isin("orders", "order_items")).select(
            F.col("key").alias("order_id")
        )
        by_customer = orders_.join(
            touched.filter(F.col("source_table") == "customers").select(
                F.col("key").alias("customer_id")
            ),
            on="customer_id",
            how="left_semi",
        ).select("order_id")
        by_product = items.join(changed_products, on="product_id", how="left_semi").select(
            "order_id"
        )
        affected = by_order.unionByName(by_customer).unionByName(by_product).distinct()
        affected = affected.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            n = affected.count()
            if n:
                fact = model.fact_sales(
                    orders_.join(affected, on="order_id", how="left_semi"),
                    items.join(affected, on="order_id", how="left_semi"),
                    dim_products,
                    customers_,
                )
                lake.replace_groups(fact, "silver", "fact_sales", affected)
        finally:
            affected.unpersist()
        note = f"incremental: lines of {n:,} order(s) rebuilt"
    state_row = incremental.state_row(
        FACT_STATE, ctx.run_id, bool(reason), {"products_version": products_version}, ""
    )
    ctx.defer("silver", incremental.STATE_TABLE, incremental.STATE_SCHEMA, [state_row])
    return note, built


def _silver_columns(spark: SparkSession, table: str) -> list[str]:
    """The stored table's columns (an older lake's fact_sales lacks the order flags)."""
    return lake.read(spark, "silver", table).columns


def _changed_products(spark: SparkSession, since: int | None) -> DataFrame | None:
    """product_ids whose silver.products row differs from the one at version ``since``."""
    now = lake.read(spark, "silver", "products").select("product_id", "_row_hash")
    if since is None:
        return None
    try:
        then = lake.read_version(spark, "silver", "products", since).select(
            "product_id", "_row_hash"
        )
        then.limit(1).count()
    except Exception:  # vacuumed or unreadable: rebuild everything rather than guess
        return None
    return (
        now.exceptAll(then)
        .select("product_id")
        .unionByName(then.exceptAll(now).select("product_id"))
        .distinct()
    )


STEPS = [
    Step(
        "silver.products",
        "silver",
        catalog.refs("bronze.products"),
        catalog.outputs_of("silver.products"),
        run_products,
    ),
    Step(
        "silver.customers",
        "silver",
        catalog.refs("bronze.customers"),
        catalog.outputs_of("silver.customers"),
        run_customers,
    ),
    Step(
        "silver.orders",
        "silver",
        catalog.refs("bronze.orders"),
        catalog.outputs_of("silver.orders"),
        run_orders,
    ),
    Step(
        "silver.order_items",
        "silver",
        catalog.refs("bronze.order_items", "silver.orders"),
        catalog.outputs_of("silver.order_items"),
        run_order_items,
    ),
    Step(
        "silver.fact_sales",
        "silver",
        catalog.refs(
            "silver.orders", "silver.order_items", "silver.dim_product", "silver.customers"
        ),
        catalog.outputs_of("silver.fact_sales"),
        run_model,
    ),
]
assert {s.name.split(".")[1] for s in STEPS[:4]} == set(SOURCES)
