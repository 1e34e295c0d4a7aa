"""Delta table I/O: where tables live and the few ways ShopLake writes them.

Every write is one Delta commit, so a reader sees the table before or after
a step, never half of it.
"""

from __future__ import annotations

from collections.abc import Sequence

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession

from pipeline.config import settings


class CorruptTableError(RuntimeError):
    pass


def path(layer: str, table: str) -> str:
    return settings().table_path(layer, table)


def exists(spark: SparkSession, layer: str, table: str) -> bool:
    return DeltaTable.isDeltaTable(spark, path(layer, table))


def read(spark: SparkSession, layer: str, table: str) -> DataFrame:
    location = path(layer, table)
    try:
        # forPath reads the transaction log now, so a corrupt table fails here, by name.
        return DeltaTable.forPath(spark, location).toDF()
    except Exception as exc:  # Spark raises many types; name the table in any case
        raise CorruptTableError(
            f"cannot read Delta table {layer}.{table} at {location}: {str(exc).splitlines()[0]}"
        ) from exc


def read_or_none(spark: SparkSession, layer: str, table: str) -> DataFrame | None:
    return read(spark, layer, table) if exists(spark, layer, table) else None


def overwrite(df: DataFrame, layer: str, table: str, partition_by: Sequence[str] = ()) -> None:
    writer = df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(path(layer, table))


def append(df: DataFrame, layer: str, table: str, partition_by: Sequence[str] = ()) -> None:
    writer = df.write.format("delta").mode("append").option("mergeSchema", "true")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(path(layer, table))


def version(spark: SparkSession, layer: str, table: str) -> int | None:
    if not exists(spark, layer, table):
        return None
    return int(DeltaTable.forPath(spark, path(layer, table)).history(1).first()["version"])


def sync(
    df: DataFrame,
    layer: str,
    table: str,
    keys: Sequence[str],
    scope: str | None = None,
    partition_by: Sequence[str] = (),
) -> None:
    """Make the table equal ``df`` with one MERGE: changed rows update, new insert, gone delete.

    Rows carry ``_row_hash`` so unchanged rows are left alone and a rerun
    rewrites nothing. ``scope`` (a SQL condition on the target) limits which
    target rows this source owns, so two writers can share a table.
    """
    from pyspark.sql import functions as F

    hashed = df.withColumn("_row_hash", F.xxhash64(*[F.col(c) for c in df.columns]))
    spark = df.sparkSession
    if not exists(spark, layer, table):
        overwrite(hashed, layer, table, partition_by)
        return
    target = DeltaTable.forPath(spark, path(layer, table))
    if set(target.toDF().columns) != set(hashed.columns):
        if scope is None:
            overwrite(hashed, layer, table, partition_by)
            return
        raise CorruptTableError(f"{layer}.{table} has an unexpected schema")
    on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    if scope:
        on = f"({scope.replace('TARGET.', 't.')}) AND {on}"
    merge = (
        target.alias("t")
        .merge(hashed.alias("s"), on)
        .whenMatchedUpdateAll(condition="t._row_hash <> s._row_hash")
        .whenNotMatchedInsertAll()
    )
    if scope:
        merge = merge.whenNotMatchedBySourceDelete(condition=scope.replace("TARGET.", "t."))
    else:
        merge = merge.whenNotMatchedBySourceDelete()
    merge.execute()


def _literal(value: object, dtype) -> Column:
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if value is None:
        return F.lit(None).cast(dtype)
    if isinstance(dtype, T.MapType):
        pairs = [
            c
            for k, v in value.items()
            for c in (_literal(k, dtype.keyType), _literal(v, dtype.valueType))
        ]
        return F.create_map(*pairs).cast(dtype) if pairs else F.lit(None).cast(dtype)
    if isinstance(dtype, T.ArrayType):
        items = [_literal(v, dtype.elementType) for v in value]
        return F.array(*items).cast(dtype) if items else F.array().cast(dtype)
    return F.lit(value).cast(dtype)


def rows_frame(spark: SparkSession, rows: Sequence[Sequence[object]], schema) -> DataFrame:
    """A small DataFrame of literal rows, built in the JVM (no Python worker to start)."""
    from pyspark.sql import functions as F

    structs = [
        F.struct(
            *[
                _literal(v, f.dataType).alias(f.name)
                for v, f in zip(row, schema.fields, strict=True)
            ]
        )
        for row in rows
    ]
    return (
        spark.range(1)
        .select(F.inline(F.array(*structs)))
        .select(*[F.col(f.name).cast(f.dataType) for f in schema.fields])
    )
