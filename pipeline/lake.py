"""Delta table I/O: where tables live and the few ways ShopLake writes them.

Every write is one Delta commit, so a reader sees the table before or after
a step, never half of it.
"""

from __future__ import annotations

from collections.abc import Sequence

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

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


def read_version(spark: SparkSession, layer: str, table: str, version: int) -> DataFrame:
    """The table as it was at a Delta version (time travel)."""
    return spark.read.format("delta").option("versionAsOf", version).load(path(layer, table))


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
) -> bool:
    """Make the table (or the part ``scope`` selects) equal ``df``; True when it wrote.

    Rows carry ``_row_hash``. When the target already holds the same rows (an
    order-independent checksum of the hashes agrees) nothing is written, so a
    rerun commits nothing. Otherwise the rows are replaced in one overwrite
    commit (``replaceWhere`` for a scope, e.g. one source's partition of the
    quarantine): for a whole recompute that is a single write job, where a
    MERGE would add a join and a second scan. ``keys`` must be unique in
    ``df``; large tables that change a little use ``upsert`` instead.
    """
    from pyspark.sql import functions as F

    hashed = df.withColumn("_row_hash", F.xxhash64(*[F.col(c) for c in df.columns]))
    spark = df.sparkSession
    where = scope.replace("TARGET.", "") if scope else None
    if exists(spark, layer, table):
        target = DeltaTable.forPath(spark, path(layer, table)).toDF()
        if set(target.columns) != set(hashed.columns):
            if scope is not None:
                raise CorruptTableError(f"{layer}.{table} has an unexpected schema")
        else:
            mine = target.filter(F.expr(where)) if where else target
            if _checksum(mine) == _checksum(hashed):
                return False
    writer = hashed.write.format("delta").mode("overwrite")
    if where and exists(spark, layer, table):
        writer = writer.option("replaceWhere", where)
    else:
        writer = writer.option("overwriteSchema", "true")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(path(layer, table))
    return True


def _checksum(df: DataFrame) -> tuple[int, int, int]:
    """Row count and two sums over the row hashes: equal sets of rows agree."""
    from pyspark.sql import functions as F

    h = F.col("_row_hash").cast("decimal(38,0)")
    row = df.agg(
        F.count(F.lit(1)).alias("n"),
        F.sum(h).alias("s"),
        F.sum(F.xxhash64(F.col("_row_hash")).cast("decimal(38,0)")).alias("s2"),
    ).first()
    return int(row["n"]), int(row["s"] or 0), int(row["s2"] or 0)


DELETE = "_delete"
DELETION_VECTORS = "delta.enableDeletionVectors"


def use_deletion_vectors(spark: SparkSession, layer: str, table: str) -> None:
    """Let MERGEs into the table mark replaced rows instead of rewriting their files.

    Without deletion vectors a MERGE copies every file holding a matched row;
    a day's changes are spread over the whole key range, so an increment of 1 %
    rewrote nearly the whole table. With them it writes the changed rows and a
    small bitmap per touched file. Set once per table (one commit); an
    overwrite keeps it. Readers outside Spark must apply them:
    ``pipeline.read.delta_arrow`` does. Not for ``silver.quarantine``, which
    delta-rs also deletes from (``pipeline.demo``).
    """
    location = path(layer, table)
    properties = DeltaTable.forPath(spark, location).detail().first()["properties"] or {}
    if properties.get(DELETION_VECTORS) == "true":
        return
    quoted = location.replace("`", "``")
    spark.sql(f"ALTER TABLE delta.`{quoted}` SET TBLPROPERTIES ('{DELETION_VECTORS}' = 'true')")


def upsert(
    df: DataFrame,
    layer: str,
    table: str,
    keys: Sequence[str],
    scope: str | None = None,
    deletion_vectors: bool = True,
) -> None:
    """Apply a change set with one MERGE: rows update or insert, ``_delete`` rows remove.

    ``df`` holds the table's columns plus a boolean ``_delete``; a delete row
    needs only its key. The row hash matches ``sync``'s, so an unchanged row is
    left alone and applying the same change set twice changes nothing.
    ``deletion_vectors``: see ``use_deletion_vectors``.
    """
    from pyspark.sql import functions as F

    if deletion_vectors:
        use_deletion_vectors(df.sparkSession, layer, table)

    columns = [c for c in df.columns if c != DELETE]
    hashed = df.select(
        *columns,
        F.xxhash64(*[F.col(c) for c in columns]).alias("_row_hash"),
        F.col(DELETE),
    )
    target = DeltaTable.forPath(df.sparkSession, path(layer, table))
    on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    if scope:
        on = f"({scope.replace('TARGET.', 't.')}) AND {on}"
    values = {f"`{c}`": f"s.`{c}`" for c in [*columns, "_row_hash"]}
    (
        target.alias("t")
        .merge(hashed.alias("s"), on)
        .whenMatchedDelete(condition=f"s.{DELETE}")
        .whenMatchedUpdate(condition=f"NOT s.{DELETE} AND t._row_hash <> s._row_hash", set=values)
        .whenNotMatchedInsert(condition=f"NOT s.{DELETE}", values=values)
        .execute()
    )


def replace_groups(df: DataFrame, layer: str, table: str, groups: DataFrame) -> None:
    """Replace every row of the given groups with ``df``'s rows, in one MERGE.

    ``groups`` holds the group key columns (one row per group); ``df`` the new
    rows of those groups (a group may have several, or none left). A delete
    row per group removes its old rows; only delete rows can match, so the new
    rows are always inserts. The table gets deletion vectors (``use_deletion_vectors``).
    """
    from pyspark.sql import functions as F

    use_deletion_vectors(df.sparkSession, layer, table)
    keys = groups.columns
    deletes = groups.select(*keys, F.lit(True).alias(DELETE))
    changes = df.withColumn(DELETE, F.lit(False)).unionByName(deletes, allowMissingColumns=True)
    target = DeltaTable.forPath(df.sparkSession, path(layer, table))
    on = " AND ".join([f"s.{DELETE}", *[f"t.`{k}` <=> s.`{k}`" for k in keys]])
    values = {f"`{c}`": f"s.`{c}`" for c in df.columns}
    (
        target.alias("t")
        .merge(changes.alias("s"), on)
        .whenMatchedDelete()
        .whenNotMatchedInsert(condition=f"NOT s.{DELETE}", values=values)
        .execute()
    )


def rows_frame(spark: SparkSession, rows: Sequence[Sequence[object]], schema) -> DataFrame:
    """A small DataFrame of Python rows, sent to the JVM as one Arrow batch.

    Arrow needs no Python worker and one round trip; building the rows from
    literal expressions took Py4J calls per value (a run's two log tables:
    3.8 s that way against 0.08 s this way, in a warm session).
    """
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    names = [f.name for f in schema.fields]
    table = pa.Table.from_pylist(
        [dict(zip(names, row, strict=True)) for row in rows],
        schema=to_arrow_schema(schema, timezone="UTC"),
    )
    return spark.createDataFrame(table, schema=schema)
