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
    return _refine_incrementally(
        ctx,
        order_items,
        lambda df: order_items.typed(df, _order_keys(ctx.spark, None)),
        group=F.trim(F.col("order_id")),
        upstream=orders,
        typed_for=lambda groups: lambda df: order_items.typed(df, _order_keys(ctx.spark, groups)),
    )


def _order_keys(spark: SparkSession, groups: pa.Array | None) -> DataFrame:
    """silver.orders' order ids for the orphan rule: on a local lake, when an increment's
    groups are known, only theirs, read by delta-rs (not a distinct over every order)."""
    stored = lake.read(spark, "silver", "orders").select("order_id")
    if groups is not None:
        local = lake.local_rows(
            "silver", "orders", lake.text_field("order_id").isin(groups), ["order_id"]
        )
        if local is not None:
            return lake.arrow_frame(spark, local, stored.schema)
    return stored


def _refine_incrementally(
    ctx: Context,
    module: ModuleType,
    typed: Callable[[DataFrame], DataFrame],
    group: Column,
    upstream: ModuleType | None = None,
    then: Callable[[Context, Refined, bool], None] | None = None,
    always_full: bool = False,
    derived: tuple[str, ...] = (),
    typed_for: Callable[[pa.Array], Callable[[DataFrame], DataFrame]] | None = None,
) -> StepOutcome:
    """Refine the Bronze files Silver has not seen (pipeline/silver/incremental.py).

    ``group`` is a prefix of the version key; every record of a touched group
    is refined again. ``upstream`` is the source whose new records also touch
    this one's groups (orders for order items: the orphan rule). ``then``
    maintains the ``derived`` tables from the refined records (full: all of
    them). ``typed_for(groups)``: ``typed`` for an increment whose touched
    groups were read by delta-rs. With nothing new the step reads no data and
    writes nothing. With new files a small table (``incremental.recompute_below``) or an
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

    old_files = ~F.col("_source_file").isin(sorted(plan.new_files))
    groups = _new_groups_by_arrow(source, upstream, plan)
    local = _touched_by_arrow(source, groups)
    if local is not None:
        assert groups is not None
        if typed_for is not None:
            typed = typed_for(groups[0])
        # a local lake: the touched keys' records read by delta-rs (no scan of Bronze by Spark)
        small = True
        touched = lake.arrow_frame(spark, local, bronze.schema)
        old_ids = pc.filter(
            local.column("_record_id"),
            pc.invert(
                pc.is_in(
                    local.column("_source_file"), pa.array(sorted(plan.new_files), pa.string())
                )
            ),
        ).combine_chunks()
        found = _stored_by_arrow(source, old_ids, state.versions)
    else:
        new_rows = incremental.from_files(bronze, plan.new_files)
        groups = new_rows.select(group.alias("_group"))
        if above is not None and plan.new_upstream_files:
            from_above = incremental.from_files(above, plan.new_upstream_files)
            groups = groups.unionByName(from_above.select(group.alias("_group")))
        small = new_rows.count() < incremental.BROADCAST_LIMIT
        touched = incremental.touched(bronze, group, groups, small).persist(
            StorageLevel.MEMORY_AND_DISK
        )
        found = None
    refined = _refine(ctx, module, typed, touched)
    try:
        counts = incremental.combine(
            state.counts,
            _stored_fates(spark, source, touched.filter(old_files), state.versions, found),
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
            checks = _touched_checks(spark, module, keys, groups, small)
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
    Spark job), else by Spark.
    """
    local = _new_groups_by_arrow(source, upstream, plan)
    if local is None:
        return _new_groups_by_spark(bronze, above, plan, group)
    return local[0].to_pylist()


def _new_groups_by_arrow(
    source: Source, upstream: ModuleType | None, plan: incremental.Plan
) -> tuple[pa.Array, bool] | None:
    """The new files' groups, sorted, and whether a record among them has no key;
    None when Bronze is not local.

    A group is ``trim(<first key>)`` in the Spark path, and Spark's trim
    removes spaces only, as ``utf8_trim(characters=" ")`` does.
    """
    column = source.key[0]
    wanted = [(source.name, plan.new_files)]
    if upstream is not None and plan.new_upstream_files:
        wanted.append((upstream.SOURCE.name, plan.new_upstream_files))
    found: list[pa.ChunkedArray] = []
    keyless = False
    for name, files in wanted:
        if not files:  # order items touched only by new orders
            continue
        values = lake.column_where_in("bronze", name, column, ("_source_file", files))
        if values is None:
            return None
        keyless = keyless or values.null_count > 0
        found.append(pc.utf8_trim(values.drop_null(), characters=" "))
    groups = pc.unique(pa.chunked_array(found, type=pa.string()).combine_chunks())
    return groups.take(pc.array_sort_indices(groups)), keyless


# Above this many touched groups an increment's records are read by Spark, not collected.
ARROW_TOUCHED_GROUPS = 200_000


def _touched_by_arrow(source: Source, new: tuple[pa.Array, bool] | None) -> pa.Table | None:
    """``incremental.touched`` read by delta-rs: every Bronze record of a touched group.

    On a local lake an increment's groups are read from its new files
    (``new``: ``_new_groups_by_arrow``) and their records fetched by key, so
    Spark refines a small in-memory table instead of scanning all of Bronze
    (1,000,000 orders: 1.2M Bronze rows for some 20,000 touched). A record
    without a key touches every keyless record, as the Spark path's null-safe
    join does. None on a remote lake or when the increment touches more than
    ``ARROW_TOUCHED_GROUPS`` groups.
    """
    if new is None or len(new[0]) > ARROW_TOUCHED_GROUPS:
        return None
    groups, keyless = new
    column = lake.text_field(source.key[0])
    where = pc.utf8_trim(column, characters=" ").isin(groups)
    if keyless:
        where = where | column.is_null()
    return lake.local_rows("bronze", source.name, where)


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


def _stored_by_arrow(
    source: Source, ids: pa.Array, versions: dict[str, int] | None
) -> dict[str, int] | None:
    """``_stored_fates``' Silver and quarantine counts, read by delta-rs; None if not local."""
    versions = versions or {}
    wanted = lake.text_field("record_id").isin(ids)
    in_silver = lake.local_rows(
        "silver", source.name, wanted, ["record_id"], versions.get("silver")
    )
    in_quarantine = lake.local_rows(
        "silver",
        QUARANTINE,
        (lake.text_field("source_table") == source.name) & wanted,
        ["record_id"],
        versions.get(QUARANTINE),
    )
    if in_silver is None or in_quarantine is None:
        return None
    return {"silver": in_silver.num_rows, "quarantined": in_quarantine.num_rows}


def _stored_fates(
    spark: SparkSession,
    source: Source,
    old_rows: DataFrame,
    versions: dict[str, int] | None,
    found: dict[str, int] | None = None,
) -> dict[str, int]:
    """What the already-refined records of the touched keys were before this run.

    Silver and quarantine are read back by record id, as the last recorded
    refine left them (``versions``; a table without one is read as it is now);
    ``found``: those two counts already read (``_stored_by_arrow``). An exact
    duplicate stays one (its earlier twin has its key, so it is among these
    rows); the rest had been superseded.
    """
    if found is None:
        found = _stored_by_spark(spark, source, old_rows, versions)
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


def _stored_by_spark(
    spark: SparkSession, source: Source, old_rows: DataFrame, versions: dict[str, int] | None
) -> dict[str, int]:
    """How many of ``old_rows`` the recorded Silver and quarantine hold, in one Spark job."""

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
    return {"silver": found.get("silver", 0), "quarantined": found.get("quarantined", 0)}


def _touched_checks(
    spark: SparkSession, module: ModuleType, keys: list[str], groups: DataFrame, small: bool
) -> list[RuleCount]:
    """The table checks on the touched keys' rows as written: read by delta-rs and
    checked in Arrow on a local lake, else by Spark."""
    source = module.SOURCE
    first = source.key[0]
    # the checked columns only: lineage's record_id and _row_hash are two thirds of
    # order_items' bytes at 1,000,000 orders, and every touched row group is read
    checked = list(dict.fromkeys([*source.key, *module.COLUMNS]))
    written = lake.local_rows(
        "silver", source.name, lake.text_field(first).isin(pa.array(keys, pa.string())), checked
    )
    if written is not None:
        return arrow_table_checks(written, source.key, module.COLUMNS)
    table = lake.read(spark, "silver", source.name)
    in_groups = table.join(
        F.broadcast(groups) if small else groups,
        on=table[first] == groups["key"],
        how="left_semi",
    )
    return table_checks(in_groups, source.key, module.COLUMNS)


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
    kept = _model_kept(ctx)
    if kept is not None:
        return kept
    silver_orders = lake.read(spark, "silver", "orders")
    silver_items = lake.read(spark, "silver", "order_items")
    silver_customers = lake.read(spark, "silver", "customers")
    dim_products = lake.read(spark, "silver", "dim_product").filter(
        F.col("product_id") != "UNKNOWN"
    )
    note, built, (full, counts) = _build_fact(
        ctx, silver_orders, silver_items, dim_products, silver_customers
    )
    dates = model.dim_date(spark, _date_bounds(spark, silver_orders))
    if lake.collect_target("silver", "dim_date") is not None:  # a row a day: collected
        lake.overwrite_arrow(dates.toArrow(), "silver", "dim_date")
    else:
        lake.overwrite(dates, "silver", "dim_date")

    if built is None:
        built = lake.local_rows("silver", "fact_sales", None, list(FACT_REF_COLUMNS))
    refs = _fact_refs(built) if built is not None else _fact_refs_by_spark(spark)
    with ctx.lock:  # what Gold's revenue tables must sum to (gold/steps.py)
        ctx.silver_net_revenue = refs["net_revenue"] or 0
    order_refs = _orphan_customers(silver_orders, silver_customers)
    lines = int(refs["lines"] or 0)
    # the build's state, with the versions its tables were left at (``_model_kept``)
    state = incremental.state_row(
        FACT_STATE,
        ctx.run_id,
        full,
        {**counts, "lines": lines},
        "",
        versions=incremental.table_versions(spark, MODEL_TABLES),
    )
    ctx.defer("silver", incremental.STATE_TABLE, incremental.STATE_SCHEMA, [state])
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


# The tables fact_sales and dim_date are built from (silver.products: the changed products
# are read from it), and the two themselves.
MODEL_TABLES = tuple(
    f"silver.{t}"
    for t in ("orders", "order_items", "customers", "products", "dim_product")
    + ("fact_sales", "dim_date")
)


def _model_kept(ctx: Context) -> StepOutcome | None:
    """The step's outcome when nothing it reads or writes changed since its last build;
    None when it must build.

    Every table at the version the last build recorded, and no Silver step of
    this run touched a key (a MERGE that changed nothing commits nothing): the
    lines and the dates would come out as they are. A run with nothing new then
    leaves both tables, and the Gold built from them, without a job or a commit.
    Nothing is checked, as for a Silver table with no new files: the checks of
    the build that wrote the rows stand.
    """
    if ctx.full_refresh or incremental.full_refresh_requested():
        return None
    if any(keys is None or keys for keys in ctx.touched.values()):
        return None
    state = incremental.read_state(ctx.spark, FACT_STATE)
    if state is None or "lines" not in state.counts:
        return None
    if state.versions != incremental.table_versions(ctx.spark, MODEL_TABLES):
        return None
    lines = state.counts["lines"]
    return StepOutcome(rows_in=lines, rows_out=lines, notes=["inputs unchanged: not rebuilt"])


def _date_bounds(spark: SparkSession, orders_: DataFrame) -> DataFrame:
    """What ``model.dim_date`` reads of the orders, their first and last order_date: on a
    local lake two rows from the column read by delta-rs, else the orders themselves."""
    local = lake.local_rows("silver", "orders", None, ["order_date"])
    if local is None:
        return orders_
    bounds = pc.min_max(local.column("order_date"))
    dates = pa.array([bounds["min"].as_py(), bounds["max"].as_py()], pa.date32())
    schema = orders_.select("order_date").schema
    return lake.arrow_frame(spark, pa.table({"order_date": dates}), schema)


def _orphan_customers(orders_: DataFrame, customers_: DataFrame) -> dict[str, int]:
    """Orders, and those whose customer is not in silver.customers: by delta-rs on a
    local lake (two columns read, no join over every order), else in one Spark job."""
    stored = [lake.local_rows("silver", t, None, ["customer_id"]) for t in ("orders", "customers")]
    if stored[0] is not None and stored[1] is not None:
        ids, known = (t.column("customer_id").cast(pa.string()) for t in stored)
        found = pc.sum(pc.is_in(ids, value_set=known.combine_chunks().drop_null())).as_py()
        return {"orders": len(ids), "orphan_customer": len(ids) - int(found or 0)}
    return (
        orders_.join(
            customers_.select(F.col("customer_id").alias("_c")),
            on=orders_["customer_id"] == F.col("_c"),
            how="left",
        )
        .agg(
            F.count(F.lit(1)).alias("orders"),
            F.sum(F.col("_c").isNull().cast("int")).alias("orphan_customer"),
        )
        .first()
        .asDict()
    )


FACT_REF_COLUMNS = ("line_net", "is_revenue_bearing", "product_key")


def _fact_refs(fact: pa.Table) -> dict[str, object]:
    """``_fact_refs_by_spark`` on rows in memory: the rows a small lake's rebuild just
    wrote, or ``FACT_REF_COLUMNS`` of a local table read by delta-rs."""
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
) -> tuple[str, pa.Table | None, tuple[bool, dict[str, int]]]:
    """The build's note, its rows when a full rebuild wrote them through delta-rs, and
    its state: whether it rebuilt everything, and the versions it compared against."""
    spark = ctx.spark
    built = None
    state = incremental.read_state(spark, FACT_STATE)
    versions = {
        f"{table}_version": lake.latest_version(spark, "silver", table) or 0
        for table in ("products", "customers")
    }
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
    # this run's keys are in memory (committed at the run's end), earlier runs' in the table
    this_run = [(name, ctx.run_id, key) for name, keys in ctx.touched.items() for key in keys or ()]
    small = lake.row_count(spark, "bronze", "order_items") < incremental.recompute_below()
    # (a small table is rebuilt whole whenever something was touched: see below)
    if not reason and not small and earlier.filter(F.col("key").isNull()).limit(1).count():
        reason = "a Silver table was recomputed"
    changed_products = None
    if not reason:
        changed_products = _changed_products(spark, state.counts.get("products_version"))
        if changed_products is None:
            reason = "the products' earlier version is gone"
    if not reason and small and (changed_products or this_run or earlier.limit(1).count()):
        # with nothing touched since the last build there is nothing to rebuild
        reason = "a small table (a rebuild costs less than a MERGE)"
    if reason:
        fact = model.fact_sales(orders_, items, dim_products, customers_)
        built = lake.overwrite(fact, "silver", "fact_sales")
        note = f"full rebuild: {reason}"
    else:
        known_at = state.counts.get("customers_version")
        local = _affected_by_arrow(state.run_id, this_run, changed_products, known_at)
        if local is not None:
            n = len(local)
            if n:
                _rebuild_by_arrow(spark, local, orders_, items, dim_products, customers_)
            note = f"incremental: lines of {n:,} order(s) rebuilt"
        else:
            note = _rebuild_by_spark(
                spark,
                earlier,
                this_run,
                changed_products,
                known_at,
                orders_,
                items,
                dim_products,
                customers_,
            )
    return note, built, (bool(reason), versions)


def _affected_by_arrow(
    run_id: str,
    this_run: list[tuple[str, str, str]],
    changed_products: list[str],
    known_at: int | None,
) -> pa.Array | None:
    """The orders whose fact lines can have changed, read by delta-rs; None if not local.

    The same orders as ``_rebuild_by_spark``'s: those the Silver steps touched
    since the last build, the orders of the touched customers that became known
    or unknown since it (``_known_changed``) and those with a line of a changed
    product, found by key instead of by joins over every order and line.
    """
    earlier = lake.local_rows(
        "silver",
        incremental.TOUCHED_TABLE,
        lake.text_field("run_id") > run_id,
        ["source_table", "key"],
    )
    if earlier is None:
        return None
    source = pa.chunked_array(
        [earlier.column("source_table").cast(pa.string()), [r[0] for r in this_run]], pa.string()
    )
    keys = pa.chunked_array(
        [earlier.column("key").cast(pa.string()), [r[2] for r in this_run]], pa.string()
    )
    found = [pc.filter(keys, pc.is_in(source, pa.array(["orders", "order_items"])))]
    customers_ = _known_changed(
        pc.filter(keys, pc.equal(source, "customers")).combine_chunks(), known_at
    )
    if customers_ is None:
        return None
    products_ = pa.array(changed_products, pa.string())
    for table, column, wanted in (
        ("orders", "customer_id", customers_),
        ("order_items", "product_id", products_),
    ):
        if len(wanted):
            rows = lake.local_rows(
                "silver", table, lake.text_field(column).isin(wanted), ["order_id"]
            )
            if rows is None:
                return None
            found.append(rows.column("order_id").cast(pa.string()))
    return pc.unique(pa.chunked_array(found, pa.string()).combine_chunks().drop_null())


def _known_changed(touched: pa.Array, known_at: int | None) -> pa.Array | None:
    """The touched customers whose presence in silver.customers differs from the last
    build's (``known_at``, that table's version then); None if not local.

    A fact line reads its customer only as known or not (``customer_key``), so
    the orders of a customer whose city or segment changed keep their lines: a
    CRM export alone then leaves fact_sales, and the Gold built from it, as
    they are. Without that version (a lake built before it was recorded, or
    the version vacuumed) every touched customer counts.
    """
    everyone = touched.drop_null()
    wanted = lake.text_field("customer_id").isin(everyone)
    now = lake.local_rows("silver", "customers", wanted, ["customer_id"])
    if now is None:
        return None
    if known_at is None:
        return everyone
    try:
        then = lake.local_rows("silver", "customers", wanted, ["customer_id"], known_at)
    except lake.version_unreadable():  # that version is gone: every touched customer counts
        return everyone
    if then is None:
        return everyone
    ids = [t.column("customer_id").cast(pa.string()).combine_chunks() for t in (now, then)]
    became_known = pc.filter(ids[0], pc.invert(pc.is_in(ids[0], value_set=ids[1])))
    became_unknown = pc.filter(ids[1], pc.invert(pc.is_in(ids[1], value_set=ids[0])))
    return pa.concat_arrays([became_known, became_unknown])


def _rebuild_by_arrow(
    spark: SparkSession,
    affected: pa.Array,
    orders_: DataFrame,
    items: DataFrame,
    dim_products: DataFrame,
    customers_: DataFrame,
) -> None:
    """The affected orders' fact lines from their rows read by delta-rs, in one MERGE."""
    wanted = lake.text_field("order_id").isin(affected)
    their_orders = lake.local_rows("silver", "orders", wanted)
    their_items = lake.local_rows("silver", "order_items", wanted)
    assert their_orders is not None and their_items is not None  # _affected_by_arrow read them
    ids = pc.unique(their_orders.column("customer_id").cast(pa.string()).drop_null())
    their_customers = lake.local_rows(
        "silver", "customers", lake.text_field("customer_id").isin(ids), ["customer_id"]
    )
    assert their_customers is not None
    fact = model.fact_sales(
        lake.arrow_frame(spark, their_orders, orders_.schema),
        lake.arrow_frame(spark, their_items, items.schema),
        dim_products,
        lake.arrow_frame(spark, their_customers, customers_.select("customer_id").schema),
    )
    groups = lake.arrow_frame(
        spark, pa.table({"order_id": affected}), orders_.select("order_id").schema
    )
    lake.replace_groups(fact, "silver", "fact_sales", groups)


def _rebuild_by_spark(
    spark: SparkSession,
    earlier: DataFrame,
    this_run: list[tuple[str, str, str]],
    changed_products: list[str],
    known_at: int | None,
    orders_: DataFrame,
    items: DataFrame,
    dim_products: DataFrame,
    customers_: DataFrame,
) -> str:
    """The affected orders' fact lines, found and rebuilt by Spark (a remote lake)."""
    touched = earlier.unionByName(lake.rows_frame(spark, this_run, incremental.TOUCHED_SCHEMA))
    by_order = touched.filter(F.col("source_table").isin("orders", "order_items")).select(
        F.col("key").alias("order_id")
    )
    touched_customers = touched.filter(F.col("source_table") == "customers").select(
        F.col("key").alias("customer_id")
    )
    touched_customers = _known_changed_by_spark(spark, touched_customers, customers_, known_at)
    by_customer = orders_.join(touched_customers, on="customer_id", how="left_semi").select(
        "order_id"
    )
    changed = lake.arrow_frame(
        spark,
        pa.table({"product_id": pa.array(changed_products, pa.string())}),
        items.select("product_id").schema,
    )
    by_product = items.join(changed, on="product_id", how="left_semi").select("order_id")
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
    return f"incremental: lines of {n:,} order(s) rebuilt"


def _known_changed_by_spark(
    spark: SparkSession, touched: DataFrame, customers_: DataFrame, known_at: int | None
) -> DataFrame:
    """``_known_changed`` for a remote lake: the ``touched`` customers (a ``customer_id``
    column) that became known or unknown since version ``known_at`` of silver.customers.

    The difference is collected here (the customers of one increment's CRM files at
    most), so a version VACUUM has removed is found now, and every touched customer
    counts, instead of the step failing on a missing file later.
    """
    if known_at is None:
        return touched
    now = customers_.select("customer_id")
    try:
        then = lake.read_version(spark, "silver", "customers", known_at).select("customer_id")
        became = now.subtract(then).unionByName(then.subtract(now)).collect()
    except lake.version_unreadable():
        return touched
    ids = pa.table({"customer_id": pa.array([r["customer_id"] for r in became], pa.string())})
    changed = lake.arrow_frame(spark, ids, now.schema)
    return touched.join(changed, on="customer_id", how="left_semi")


def _silver_columns(spark: SparkSession, table: str) -> list[str]:
    """The stored table's columns (an older lake's fact_sales lacks the order flags)."""
    return lake.read(spark, "silver", table).columns


def _changed_products(spark: SparkSession, since: int | None) -> list[str] | None:
    """product_ids whose silver.products row differs from the one at version ``since``;
    None when that version cannot be read. By delta-rs on a local lake, else by Spark."""
    if since is None:
        return None
    columns = ["product_id", "_row_hash"]
    try:
        local = [lake.local_rows("silver", "products", None, columns, v) for v in (None, since)]
        if local[0] is not None and local[1] is not None:
            now, then = ({tuple(r.values()) for r in t.to_pylist()} for t in local)
            return sorted({product for product, _ in now ^ then})
        now_df = lake.read(spark, "silver", "products").select(*columns)
        then_df = lake.read_version(spark, "silver", "products", since).select(*columns)
        changed = now_df.exceptAll(then_df).unionByName(then_df.exceptAll(now_df))
        return sorted({r["product_id"] for r in changed.select("product_id").collect()})
    except lake.version_unreadable():  # vacuumed or expired: rebuild everything, not guess
        return None


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
