"""Delta table I/O: where tables live and the few ways ShopLake writes them.

Long (~400 lines): every write and every read of the Delta log the steps use, in one place.

Every write is one Delta commit, so a reader sees the table before or after
a step, never half of it.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from pipeline.config import settings

# Which step the current thread works for (set by pipeline.runner), and the Delta
# commits each step made: the bench reports them, since a run's floor is its commits.
current_step: contextvars.ContextVar[str] = contextvars.ContextVar("current_step", default="")
# Whether this thread's whole-table writes commit through delta-rs (``arrow_target``);
# set by pipeline.runner for the steps of a run on a small lake.
small_writes: contextvars.ContextVar[bool] = contextvars.ContextVar("small_writes", default=False)
commits: Counter[str] = Counter()
_commits_lock = threading.Lock()
_table_locks: dict[str, threading.RLock] = {}
_table_locks_guard = threading.Lock()


@contextmanager
def table_lock(layer: str, table: str) -> Iterator[None]:
    """Serialise this process's writes to one table, and count the commit.

    Independent steps run in threads (pipeline.runner) and some share a table
    (every Silver step writes its own part of silver.quarantine; the state and
    log tables take rows from several steps). Delta would let most of these
    commits race and retry; a lock per table makes them simply take turns, and
    a write that reads the table first (``sync``'s checksum, a MERGE) reads the
    version it commits on. Reentrant: such a write may first commit a property
    under the lock it holds (``declare_stats``, when delta-rs created the table).
    """
    location = path(layer, table)
    with _table_locks_guard:
        lock = _table_locks.setdefault(location, threading.RLock())
    with lock:
        yield


def count_commit() -> None:
    with _commits_lock:
        commits[current_step.get() or "-"] += 1


@contextmanager
def writing(layer: str, table: str) -> Iterator[None]:
    """One commit to the table, under its lock (``table_lock``)."""
    with table_lock(layer, table):
        yield
    count_commit()


class CorruptTableError(RuntimeError):
    pass


def path(layer: str, table: str) -> str:
    return settings().table_path(layer, table)


def exists(spark: SparkSession, layer: str, table: str) -> bool:
    """Whether the table has a commit: a local table's log is listed, a remote one asked
    of Spark (``isDeltaTable`` loads the table's snapshot in the JVM, a call per question:
    about a second of a warm 10,000-order run's step threads)."""
    local = local_location(layer, table)
    if local is None:
        return DeltaTable.isDeltaTable(spark, path(layer, table))
    return has_commit(Path(local))


def has_commit(folder: Path) -> bool:
    """A commit file (``<20-digit version>.json``) or a checkpoint in the folder's Delta log."""
    try:
        names = os.listdir(folder / "_delta_log")
    except (FileNotFoundError, NotADirectoryError):
        return False
    return any(
        name[:20].isdigit() and (name[20:] == ".json" or name[20:].startswith(".checkpoint."))
        for name in names
    )


def read(spark: SparkSession, layer: str, table: str) -> DataFrame:
    """The table's current version; on a small lake its Parquet files as delta-rs lists them.

    ``listed_files_frame`` says why and where; elsewhere Spark's Delta reader.
    """
    location = path(layer, table)
    try:
        # Both read the transaction log now, so a corrupt table fails here, by name.
        listed = listed_files_frame(spark, layer, table)
        return listed if listed is not None else DeltaTable.forPath(spark, location).toDF()
    except Exception as exc:  # Spark and delta-rs raise many types; name the table in any case
        raise CorruptTableError(
            f"cannot read Delta table {layer}.{table} at {location}: {str(exc).splitlines()[0]}"
        ) from exc


GLOB_CHARACTERS = frozenset("*?[]{}\\")


def listed_files_frame(spark: SparkSession, layer: str, table: str) -> DataFrame | None:
    """The table's current version as a plain Parquet read of the files delta-rs lists.

    On a small lake (``small_writes``, where delta-rs commits the whole-table
    writes too) Spark's Delta reader spends about half a second of the driver
    per table read planning the scan (``PrepareDeltaScan``: a Spark job that
    replays the log, another that lists the files), whatever the rows; delta-rs
    reads the log in milliseconds, and Spark then reads those Parquet files
    with the table's schema as any Parquet. Warm 10,000-order full runs,
    alternated: 10.2 -> 7.7 s, 77 -> 38 Spark jobs (docs/decisions.md, "Run
    shape"). None (Spark's Delta reader) for a remote or large lake, a missing
    or empty table, one that may hold deletion vectors or maps column names, and
    a folder whose name Spark would read as a glob pattern.
    """
    from pyspark.sql.pandas.types import from_arrow_schema

    local = arrow_target(layer, table)
    if local is None or GLOB_CHARACTERS & set(local):
        return None
    rust = rust_table_at(local)
    if rust is None or has_deletion_vectors(rust):
        return None
    if rust.metadata().configuration.get("delta.columnMapping.mode", "none") != "none":
        return None
    files = rust.file_uris()
    if not files:
        return None
    schema = from_arrow_schema(pa.schema(rust.schema().to_arrow()))
    reader = spark.read.schema(schema)
    if rust.metadata().partition_columns:  # their values are in the folder names
        reader = reader.option("basePath", local)
    return reader.parquet(*files).select(*schema.names)


def read_version(spark: SparkSession, layer: str, table: str, version: int) -> DataFrame:
    """The table as it was at a Delta version (time travel)."""
    return spark.read.format("delta").option("versionAsOf", version).load(path(layer, table))


def version_unreadable() -> tuple[type[BaseException], ...]:
    """What reading an earlier version raises when VACUUM removed its files or the log
    expired it: a missing file (pyarrow), delta-rs's errors, Spark's (converted by
    PySpark, or as the JVM threw them). A caller that can do without the version
    catches these and nothing else, so a mistake in its own code still surfaces."""
    from deltalake.exceptions import DeltaError
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    return (OSError, DeltaError, PySparkException, Py4JJavaError)


def read_or_none(spark: SparkSession, layer: str, table: str) -> DataFrame | None:
    return read(spark, layer, table) if exists(spark, layer, table) else None


def overwrite(
    df: DataFrame, layer: str, table: str, partition_by: Sequence[str] = ()
) -> pa.Table | None:
    """Replace the table with ``df``; the rows as Arrow when they went through delta-rs
    (``arrow_target``), so a caller can count them without reading the table back."""
    writer = df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    local = arrow_target(layer, table)
    if local is None:
        writer = _with_stats(writer, df, layer, table, partition_by)
    with writing(layer, table):
        if local is None:
            writer.save(path(layer, table))
            return None
        data = df.toArrow()
        write_arrow(local, data, "overwrite", partition_by)
        return data


def overwrite_arrow(data: pa.Table, layer: str, table: str) -> None:
    """Replace a local table with rows already collected (``arrow_target`` said where)."""
    local = local_location(layer, table)
    if local is None:
        raise ValueError(f"{layer}.{table} is not a local table: write it with Spark")
    with writing(layer, table):
        write_arrow(local, data, "overwrite")


def arrow_target(layer: str, table: str) -> str | None:
    """Where a whole-table write goes through delta-rs instead of Spark's writer, or None.

    On a small lake (``small_writes``, set by the runner) every table is a few
    thousand rows: Spark's Delta overwrite of one costs 0.6-0.9 s, mostly
    replaying the log to list the files it replaces and a write job, where
    collecting the rows as Arrow and committing them with delta-rs (as the live
    stream does) takes a few hundredths. Spark still computes every row; the
    tables stay ordinary Delta tables both engines read and write. A remote
    root, or a lake above the size, is written by Spark.
    """
    return local_location(layer, table) if small_writes.get() else None


def spark_writes_only() -> bool:
    """``SHOPLAKE_WRITER=spark``: every whole-table write by Spark's Delta writer."""
    return settings().writer == "spark"


COLLECT_ROWS = 300_000  # a Gold table this small is collected at any lake size


def collect_target(layer: str, table: str) -> str | None:
    """``arrow_target``, widened to the tables small enough to collect on a large lake.

    A table whose rows follow the calendar (``Table.by_calendar``: daily_sales,
    category_sales, revenue_anomalies, silver.dim_date) or whose last version held at most
    COLLECT_ROWS rows is computed by Spark, collected as Arrow, checked there
    and committed by delta-rs. On the 1,000,000-order lake that took 0.5-1.9 s
    where Spark's staged checks and Delta writer took 1.1-3.1 s (daily_sales
    3.1 -> 1.8 s, customer_rfm's 228,000 rows 3.9 -> 2.1 s, warm, one at a
    time; docs/decisions.md "Run shape"). Above the size the rows would weigh
    on the driver (2,000,000 rows of product_sales: about 900 MB more in the
    Python process), so Spark writes them. ``SHOPLAKE_WRITER=spark`` keeps every
    write on Spark; a remote root has no local path.
    """
    local = arrow_target(layer, table)
    if local is not None or spark_writes_only():
        return local
    from pipeline import catalog

    if not catalog.table(layer, table).by_calendar:
        rows = logged_row_count(layer, table)
        if rows is None or rows > COLLECT_ROWS:
            return None
    return local_location(layer, table)


def local_location(layer: str, table: str) -> str | None:
    """The table's folder on this machine; None under a remote root."""
    from pipeline import storage

    local = storage.local_path(path(layer, table))
    return None if local is None else str(local)


def nullable_type(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return pa.list_(pa.field("element", nullable_type(kind.value_type), nullable=True))
    if pa.types.is_map(kind):
        value = pa.field("value", nullable_type(kind.item_type), nullable=True)
        return pa.map_(kind.key_type, value)
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, nullable_type(f.type), True) for f in kind])
    return kind


def nullable(table: pa.Table) -> pa.Table:
    """Spark marks computed columns NOT NULL; a Delta table must not inherit that
    (Spark's own writer stores every column nullable, and a later write may hold nulls)."""
    schema = pa.schema([pa.field(f.name, nullable_type(f.type), True) for f in table.schema])
    return table.cast(schema)


def write_arrow(
    location: str,
    data: pa.Table,
    mode: str,
    partition_by: Sequence[str] = (),
    predicate: str | None = None,
    commit_properties: object = None,
) -> None:
    """One delta-rs commit of Arrow rows. ``overwrite`` replaces the schema too (as
    Spark's ``overwriteSchema``) unless ``predicate`` replaces a part (``replaceWhere``);
    ``append`` adds new columns (``mergeSchema``). An existing table keeps its partitioning."""
    from deltalake import write_deltalake

    target = rust_table_at(location)
    if target is not None:
        partition_by = list(target.metadata().partition_columns)
    if mode == "append":
        schema_mode = "merge"
    else:
        schema_mode = None if predicate else "overwrite"
    write_deltalake(
        target if target is not None else location,
        nullable(data),
        mode=mode,  # type: ignore[arg-type]
        partition_by=list(partition_by) or None,
        predicate=predicate,
        schema_mode=schema_mode,  # type: ignore[arg-type]
        commit_properties=commit_properties,  # type: ignore[arg-type]
    )


def rust_table_at(location: str, version: int | None = None):
    from deltalake import DeltaTable as RustTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return RustTable(location, version=version)
    except TableNotFoundError:
        return None


def has_deletion_vectors(rust) -> bool:
    """Whether a delta-rs table may hold deletion vectors (then its reads and file
    statistics would still count the deleted rows)."""
    features = rust.protocol().writer_features or []
    return (
        rust.metadata().configuration.get(DELETION_VECTORS) == "true"
        or "deletionVectors" in features
    )


def text_field(column: str) -> pc.Expression:
    """A string column in a ``local_rows`` filter.

    A table's files written by Spark store strings, those written by delta-rs
    string views; pyarrow cannot compare the two kinds in its row-group
    statistics ("no kernel matching input types"), so the filter reads the
    column as plain strings and skips no row group by its statistics.
    """
    return pc.field(column).cast(pa.string())


def local_rows(
    layer: str,
    table: str,
    where: pc.Expression | None,
    columns: Sequence[str] | None = None,
    version: int | None = None,
) -> pa.Table | None:
    """The rows where ``where`` holds (None: every row), read by delta-rs: no Spark job.

    For a few keys' rows of a large table (an increment's touched records):
    pyarrow reads the key column, and the other columns only of the row
    groups that match. None for a remote root, a missing table, or one with
    deletion vectors (Spark reads those).
    """
    local = local_location(layer, table)
    rust = None if local is None else rust_table_at(local, version)
    if rust is None or has_deletion_vectors(rust):
        return None
    # one batch in flight: with pyarrow's default read-ahead (16 batches of 4 files)
    # fetching order items' 29,000 touched rows at 1,000,000 orders raised the
    # process's peak by 170-190 MB and took longer (0.51-0.84 s against 0.40-0.42 s)
    scanner = rust.to_pyarrow_dataset().scanner(
        columns=list(columns) if columns is not None else None,
        filter=where,
        batch_readahead=1,
        fragment_readahead=1,
    )
    found = scanner.to_table()
    pa.default_memory_pool().release_unused()
    return found


def append_rows(
    spark: SparkSession, rows: Sequence[Sequence[object]], schema, layer: str, table: str
) -> None:
    """Append a few Python rows (the run's logs and state): by delta-rs to a local table
    (milliseconds, no Spark job), by Spark's writer to a remote one."""
    if not rows:
        return
    local = local_location(layer, table)
    if local is None:
        append(rows_frame(spark, rows, schema), layer, table)
        return
    with writing(layer, table):
        write_arrow(local, arrow_rows(rows, schema), "append")


def append(df: DataFrame, layer: str, table: str, partition_by: Sequence[str] = ()) -> None:
    writer = df.write.format("delta").mode("append").option("mergeSchema", "true")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer = _with_stats(writer, df, layer, table, partition_by)
    with writing(layer, table):
        writer.save(path(layer, table))


def latest_version(spark: SparkSession, layer: str, table: str) -> int | None:
    """The table's newest Delta version; a local table's read from its log by delta-rs."""
    from deltalake import DeltaTable as RustTable
    from deltalake.exceptions import TableNotFoundError

    from pipeline import storage

    local = storage.local_path(path(layer, table))
    if local is None:
        return version(spark, layer, table)
    try:
        return int(RustTable(str(local)).version())
    except TableNotFoundError:
        return None


def _rust_table(layer: str, table: str):
    """The table opened by delta-rs when it is local and exists, else None."""
    local = local_location(layer, table)
    return None if local is None else rust_table_at(local)


def file_stats(layer: str, table: str):
    """The table's data files with their statistics (delta-rs add actions), or None.

    Reading them costs a log replay in Rust, no Spark job: what a step needs to
    know about a small bookkeeping question (how many rows, which source files)
    is often already there. None for a remote root, a missing table, or one
    with deletion vectors (the statistics then count deleted rows too).
    """
    rust = _rust_table(layer, table)
    if rust is None or rust.metadata().configuration.get(DELETION_VECTORS) == "true":
        return None
    import pyarrow as pa

    return pa.table(rust.get_add_actions(flatten=True))  # delta-rs gives an arro3 table


def distinct_values(spark: SparkSession, layer: str, table: str, column: str) -> set[str]:
    """The distinct values of a string column, from the file statistics when every file
    holds one value (Bronze: a data file never mixes landing files), else by Spark."""
    stats = file_stats(layer, table)
    if stats is not None and {f"min.{column}", f"max.{column}"} <= set(stats.column_names):
        lows = stats.column(f"min.{column}").to_pylist()
        highs = stats.column(f"max.{column}").to_pylist()
        # string statistics are cut at 32 characters: only a short value is exact
        if all(
            lo is not None and lo == hi and len(lo) < 32 for lo, hi in zip(lows, highs, strict=True)
        ):
            return set(lows)
    df = read(spark, layer, table).select(column).distinct()
    return {r[0] for r in df.collect()}


def column_where_in(layer: str, table: str, column: str, where_in: tuple[str, Sequence[str]]):
    """``column`` of the rows whose ``where_in[0]`` is one of ``where_in[1]``, read by delta-rs
    (a pyarrow ChunkedArray; no Spark job); None when the table is not local."""
    rust = _rust_table(layer, table)
    if rust is None:
        return None
    name, values = where_in
    found = rust.to_pyarrow_table(columns=[column], filters=[(name, "in", sorted(values))])
    return found.column(column)


def rows(
    spark: SparkSession, layer: str, table: str, columns: Sequence[str], where: tuple[str, str]
) -> list[dict]:
    """The rows of a small table where ``column == value``: by delta-rs when local."""
    from pyspark.sql import functions as F

    column, value = where
    rust = _rust_table(layer, table)
    if rust is not None:
        present = [c for c in columns if c in rust.schema().to_arrow().names]
        found = rust.to_pyarrow_table(columns=present, filters=[(column, "=", value)])
        return [{c: r.get(c) for c in columns} for r in found.to_pylist()]
    df = read(spark, layer, table)
    present = [c for c in columns if c in df.columns]
    selected = df.filter(F.col(column) == value).select(*present)
    return [{c: r.asDict().get(c) for c in columns} for r in selected.collect()]


def logged_row_count(
    layer: str, table: str, partition: tuple[str, str] | None = None
) -> int | None:
    """Rows in the table (or in one partition, ``(column, value)``) from the record
    counts in its log, without a Spark job; None where the log cannot say exactly
    (``file_stats``: a remote or missing table, deletion vectors, a file without a count)."""
    stats = file_stats(layer, table)
    if stats is None:
        return None
    counts = stats.column("num_records").to_pylist()
    if partition is not None:
        column, value = f"partition.{partition[0]}", partition[1]
        if column not in stats.column_names:
            return None
        keys = stats.column(column).to_pylist()
        counts = [n for n, key in zip(counts, keys, strict=True) if key == value]
    if any(n is None for n in counts):
        return None
    return int(sum(counts))


def row_count(spark: SparkSession, layer: str, table: str) -> int:
    """Rows in the table: a local table's from the record counts in its log (no Spark job)."""
    logged = logged_row_count(layer, table)
    return logged if logged is not None else read(spark, layer, table).count()


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
    compare: bool = True,
) -> bool:
    """Make the table (or the part ``scope`` selects) equal ``df``; True when it wrote.

    ``compare=False`` skips the checksum when the caller knows the rows changed
    (two aggregation jobs saved).

    Rows carry ``_row_hash``. When the target already holds the same rows (an
    order-independent checksum of the hashes agrees) nothing is written, so a
    rerun commits nothing. Otherwise the rows are replaced in one overwrite
    commit (``replaceWhere`` for a scope, e.g. one source's partition of the
    quarantine): for a whole recompute that is a single write job, where a
    MERGE would add a join and a second scan. ``keys`` must be unique in
    ``df``; large tables that change a little use ``upsert`` instead.
    """
    with table_lock(layer, table):
        wrote = _sync(df, layer, table, scope, partition_by, compare)
    if wrote:
        count_commit()
    return wrote


def _sync(
    df: DataFrame,
    layer: str,
    table: str,
    scope: str | None,
    partition_by: Sequence[str],
    compare: bool,
) -> bool:
    from pyspark.sql import functions as F

    hashed = with_row_hash(df)
    spark = df.sparkSession
    where = scope.replace("TARGET.", "") if scope else None
    present = exists(spark, layer, table)
    if present:
        target = read(spark, layer, table)
        if set(target.columns) != set(hashed.columns):
            if scope is not None:
                raise CorruptTableError(f"{layer}.{table} has an unexpected schema")
        else:
            mine = target.filter(F.expr(where)) if where else target
            if compare and _checksum(mine) == _checksum(hashed):
                return False
    local = arrow_target(layer, table)
    if local is not None:
        has_table = rust_table_at(local) is not None
        predicate = where if where and has_table else None
        write_arrow(local, hashed.toArrow(), "overwrite", partition_by, predicate=predicate)
        return True
    writer = _with_stats(
        hashed.write.format("delta").mode("overwrite"), hashed, layer, table, partition_by, present
    )
    if where and present:
        writer = writer.option("replaceWhere", where)
    else:
        writer = writer.option("overwriteSchema", "true")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(path(layer, table))
    return True


def with_row_hash(df: DataFrame) -> DataFrame:
    """``df`` plus ``_row_hash`` over all its columns: how ``sync`` and ``upsert`` see a
    row change."""
    from pyspark.sql import functions as F

    return df.withColumn("_row_hash", F.xxhash64(*[F.col(c) for c in df.columns]))


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
    if _table_properties(spark, location).get(DELETION_VECTORS) == "true":
        return
    quoted = location.replace("`", "``")
    with writing(layer, table):
        spark.sql(f"ALTER TABLE delta.`{quoted}` SET TBLPROPERTIES ('{DELETION_VECTORS}' = 'true')")


STATS_COLUMNS = "delta.dataSkippingStatsColumns"


def stats_columns(
    layer: str, table: str, columns: Sequence[str] | None = None, partition_by: Sequence[str] = ()
) -> str | None:
    """The catalog's statistics columns of the table (those ``columns`` hold), as
    Delta lists them; None for a table the catalog does not declare (Delta's default)."""
    from pipeline import catalog

    try:
        declared = catalog.table(layer, table).stats_columns
    except catalog.UnknownTableError:
        return None
    kept = [c for c in declared if (columns is None or c in columns) and c not in partition_by]
    return ",".join(kept) or None


def _with_stats(
    writer,
    df: DataFrame,
    layer: str,
    table: str,
    partition_by: Sequence[str] = (),
    present: bool | None = None,
):
    """Spark's writer keeping statistics of the catalog's columns only
    (``catalog.Table.stats_columns``): a new table gets the property with its
    first commit, an existing one from ``declare_stats``. ``present``: whether the
    table exists, when the caller has asked already."""
    wanted = stats_columns(layer, table, df.columns, partition_by)
    if wanted is None:
        return writer
    if present is None:
        present = exists(df.sparkSession, layer, table)
    if present:
        declare_stats(df.sparkSession, layer, table)
        return writer
    return writer.option(STATS_COLUMNS, wanted)


def declare_stats(spark: SparkSession, layer: str, table: str) -> None:
    """Set the table's statistics columns where it has other ones (one commit, once).

    A table written before this setting existed, or created by delta-rs, keeps
    Delta's default until then: a write's option only applies to a new table.
    """
    location = path(layer, table)
    columns, properties = _columns_and_properties(spark, location)
    wanted = stats_columns(layer, table, columns)
    if wanted is None or properties.get(STATS_COLUMNS) == wanted:
        return
    quoted = location.replace("`", "``")
    with writing(layer, table):
        spark.sql(
            f"ALTER TABLE delta.`{quoted}` SET TBLPROPERTIES ('{STATS_COLUMNS}' = '{wanted}')"
        )


def _columns_and_properties(spark: SparkSession, location: str) -> tuple[list[str], dict]:
    """The table's top-level columns and properties from one read of its log
    (a local table's by delta-rs, without a Spark job)."""
    from pipeline import storage

    local = storage.local_path(location)
    if local is not None:
        found = rust_table_at(str(local))
        return [f.name for f in found.schema().fields], dict(found.metadata().configuration)
    target = DeltaTable.forPath(spark, location)
    return target.toDF().columns, target.detail().first()["properties"] or {}


def _table_properties(spark: SparkSession, location: str) -> dict[str, str]:
    """The table's properties; a local table's from its log by delta-rs, without a Spark job."""
    return _columns_and_properties(spark, location)[1]


# The largest table (data files) a MERGE commits by delta-rs: 1,000,000 orders' largest,
# silver.fact_sales, is 69 MB; its MERGEs raised the bench's peak by about half a GB.
RUST_MERGE_MAX_BYTES = 256 * 1024 * 1024


def merge_target(layer: str, table: str):
    """The delta-rs table a MERGE into the table is committed through instead of
    Spark, or None.

    An increment's change set is small next to the table (a 1 % append at
    1,000,000 orders: some ten thousand rows). Spark still computes it; merged
    by delta-rs into a local table it took 0.7 s (silver.orders, 1M rows),
    1.0 s (order_items, 2.6M) and 0.2 s (customers, 250k), where Spark's own
    MERGE took 2.9, 3.3 and 1.5 s in a warm session (docs/decisions.md, "Run
    shape"). Not for a remote root, ``SHOPLAKE_WRITER=spark``, a table with
    deletion vectors (an older lake's: Spark keeps merging into it), or one
    whose data files exceed ``RUST_MERGE_MAX_BYTES`` (delta-rs rewrites the
    files it touches in memory; a 1 % change touches nearly all of them).
    """
    if settings().writer == "spark":
        return None
    local = local_location(layer, table)
    found = None if local is None else rust_table_at(local)
    if found is None:
        return None
    if has_deletion_vectors(found):
        return None
    # delta-rs rewrites every file a MERGE touches in memory: a large table stays Spark's
    sizes = pa.table(found.get_add_actions(flatten=True)).column("size_bytes").to_pylist()
    return found if sum(s or 0 for s in sizes) <= RUST_MERGE_MAX_BYTES else None


def _merge(
    source: DataFrame,
    layer: str,
    table: str,
    keys: Sequence[str],
    on_first: str | None,
    delete_when: str | None,
    update_when: str | None,
    insert_when: str,
    deletion_vectors: bool = True,
) -> None:
    """One MERGE of ``source`` (alias ``s``) into the table (alias ``t``), by delta-rs
    where ``merge_target`` allows, else by Spark; the same clauses either way.

    Rows match on every key, null equal to null (``on_first`` goes before the
    keys); a matched row is deleted where ``delete_when``, else updated with all
    of the source's columns where ``update_when``; an unmatched row is inserted
    where ``insert_when``. The conditions are plain SQL both engines read.
    ``deletion_vectors``: a Spark MERGE gives the table them (``use_deletion_vectors``).
    """
    rust = merge_target(layer, table)
    if rust is None and deletion_vectors:
        use_deletion_vectors(source.sparkSession, layer, table)
    declare_stats(source.sparkSession, layer, table)
    columns = [c for c in source.columns if c != DELETE]
    if rust is not None:
        equal = [f'(s."{k}" IS NOT DISTINCT FROM t."{k}")' for k in keys]
        values = {c: f's."{c}"' for c in columns}
        data = nullable(source.toArrow())
        with writing(layer, table):
            rust.update_incremental()  # the version the lock lets this MERGE commit on
            merger = rust.merge(data, " AND ".join(filter(None, [on_first, *equal])), "s", "t")
            if delete_when:
                merger = merger.when_matched_delete(predicate=delete_when)
            if update_when:
                merger = merger.when_matched_update(updates=values, predicate=update_when)
            merger.when_not_matched_insert(updates=values, predicate=insert_when).execute()
        return
    on = " AND ".join(filter(None, [on_first, *[f"t.`{k}` <=> s.`{k}`" for k in keys]]))
    spark_values = {f"`{c}`": f"s.`{c}`" for c in columns}
    target = DeltaTable.forPath(source.sparkSession, path(layer, table))
    builder = target.alias("t").merge(source.alias("s"), on)
    if delete_when:
        builder = builder.whenMatchedDelete(condition=delete_when)
    if update_when:
        builder = builder.whenMatchedUpdate(condition=update_when, set=spark_values)
    builder = builder.whenNotMatchedInsert(condition=insert_when, values=spark_values)
    with writing(layer, table):
        builder.execute()


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
    ``deletion_vectors``: see ``use_deletion_vectors`` (a Spark MERGE only).
    """
    from pyspark.sql import functions as F

    columns = [c for c in df.columns if c != DELETE]
    hashed = df.select(
        *columns,
        F.xxhash64(*[F.col(c) for c in columns]).alias("_row_hash"),
        F.col(DELETE),
    )
    _merge(
        hashed,
        layer,
        table,
        keys,
        f"({scope.replace('TARGET.', 't.')})" if scope else None,
        delete_when=f"s.{DELETE}",
        update_when=f"NOT s.{DELETE} AND t._row_hash <> s._row_hash",
        insert_when=f"NOT s.{DELETE}",
        deletion_vectors=deletion_vectors,
    )


def replace_groups(df: DataFrame, layer: str, table: str, groups: DataFrame) -> None:
    """Replace every row of the given groups with ``df``'s rows, in one MERGE.

    ``groups`` holds the group key columns (one row per group); ``df`` the new
    rows of those groups (a group may have several, or none left). A delete
    row per group removes its old rows; only delete rows can match, so the new
    rows are always inserts. A Spark MERGE gives the table deletion vectors
    (``use_deletion_vectors``).
    """
    from pyspark.sql import functions as F

    keys = groups.columns
    deletes = groups.select(*keys, F.lit(True).alias(DELETE))
    changes = df.withColumn(DELETE, F.lit(False)).unionByName(deletes, allowMissingColumns=True)
    _merge(
        changes,
        layer,
        table,
        keys,
        f"s.{DELETE}",
        delete_when=f"s.{DELETE}",  # only delete rows can match
        update_when=None,
        insert_when=f"NOT s.{DELETE}",
    )


def rows_frame(spark: SparkSession, rows: Sequence[Sequence[object]], schema) -> DataFrame:
    """A small DataFrame of Python rows, sent to the JVM as one Arrow batch.

    Arrow needs no Python worker and one round trip; building the rows from
    literal expressions took Py4J calls per value (a run's two log tables:
    3.8 s that way against 0.08 s this way, in a warm session).
    """
    return spark.createDataFrame(arrow_rows(rows, schema), schema=schema)


def arrow_frame(spark: SparkSession, data: pa.Table, schema) -> DataFrame:
    """A DataFrame of Arrow rows read in Python, as one batch.

    PySpark 4.2's ``createDataFrame`` loses the batches that follow an empty
    one (a delta-rs read of a table whose first file has no match gives
    ``[3, 0, 1]`` rows and Spark saw 3), so the chunks are combined first.
    Columns are taken by the schema's names, not by position.
    """
    return spark.createDataFrame(data.select(schema.names).combine_chunks(), schema=schema)


def arrow_rows(rows: Sequence[Sequence[object]], schema) -> pa.Table:
    """Python rows in a Spark schema's column order, as Arrow (timestamps in UTC)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    names = [f.name for f in schema.fields]
    return pa.Table.from_pylist(
        [dict(zip(names, row, strict=True)) for row in rows],
        schema=to_arrow_schema(schema, timezone="UTC"),
    )
