"""Steps (1) and (3) of docs/contract.md §3: exact duplicates and one version per key.

Pure DataFrame -> DataFrame functions. They mark rows instead of dropping
them, so the caller can count every row's fate and keep the reconciliation
identity exact.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

IS_DUPLICATE = "_is_duplicate"
VERSION_FATE = "_version_fate"  # survivor | superseded | conflict


def mark_exact_duplicates(
    df: DataFrame, raw_columns: Sequence[str], group: Column | None = None
) -> DataFrame:
    """Rows equal in every raw column (and raw line) to an earlier one are duplicates.

    The first copy (earliest batch, then record id) is kept. Null equals null
    here, as a reader of the two lines would say. ``group`` (a function of the
    raw columns, e.g. the trimmed key) leads the partitioning: it does not
    change which rows are equal, but lets a DataFrame already partitioned by it
    skip a shuffle.
    """
    lead = [group] if group is not None else []
    by_value = Window.partitionBy(*lead, *[F.col(c) for c in raw_columns]).orderBy(
        F.col("_batch_id"), F.col("_record_id")
    )
    return df.withColumn(IS_DUPLICATE, F.row_number().over(by_value) > 1)


def mark_versions(
    df: DataFrame, key: Sequence[str], updated_at: Column, eligible: Column | None = None
) -> DataFrame:
    """The latest updated_at wins (unparseable counts as oldest), then the later batch.

    When two different records tie on both, no version can be chosen: every
    record of that key is a conflict. Only ``eligible`` rows (default: all)
    compete; the others are ranked after them and get no version fate, so the
    caller can mark every row in one pass instead of splitting and uniting.

    One window over the ranked key: two competing records tie for first exactly when
    the second in that order competes and ties the first, so the first and second
    rows' values, seen from every row, decide a conflict without a second window
    counting the leaders (BENCHMARKS.md, #14 sixteenth session).
    """
    competes = F.coalesce(eligible, F.lit(False)) if eligible is not None else F.lit(True)
    batch = F.col("_batch_id")
    ordered = Window.partitionBy(*[F.col(k) for k in key]).orderBy(
        competes.desc(), updated_at.desc_nulls_last(), batch.desc()
    )
    whole_key = ordered.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    ranked = df.select(
        "*",
        competes.alias("_competes"),
        F.rank().over(ordered).alias("_version_rank"),
        F.first(updated_at).over(whole_key).alias("_first_updated"),
        F.first(batch).over(whole_key).alias("_first_batch"),
        F.nth_value(competes, 2).over(whole_key).alias("_second_competes"),
        F.nth_value(updated_at, 2).over(whole_key).alias("_second_updated"),
        F.nth_value(batch, 2).over(whole_key).alias("_second_batch"),
    )
    tie_for_first = (
        F.coalesce(F.col("_second_competes"), F.lit(False))
        & F.col("_second_updated").eqNullSafe(F.col("_first_updated"))
        & F.col("_second_batch").eqNullSafe(F.col("_first_batch"))
    )
    fate = (
        F.when(~F.col("_competes"), F.lit(None).cast("string"))
        .when(tie_for_first, F.lit("conflict"))
        .when(F.col("_version_rank") == 1, F.lit("survivor"))
        .otherwise(F.lit("superseded"))
    )
    return ranked.select(*[F.col(c) for c in df.columns], fate.alias(VERSION_FATE))
