"""Bronze: land each new file once, as raw strings, with where it came from.

The ingest log (``bronze._ingested_files``) remembers which files were read,
so a daily run costs the new batch, not the history. A file is recorded in
the log only after its rows are committed; a crash in between is repaired on
the next run by looking for the file's rows in the Bronze table itself, so
a file is never read twice and never lost. An unreadable file is logged by
name with the reason, and the rest of the batch is still ingested.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline import lake
from pipeline.config import settings
from pipeline.contract import SOURCES, Source

LOG_TABLE = "_ingested_files"

LOG_SCHEMA = T.StructType(
    [
        T.StructField("source", T.StringType()),
        T.StructField("file", T.StringType()),
        T.StructField("batch_id", T.StringType()),
        T.StructField("size_bytes", T.LongType()),
        T.StructField("modified_at", T.TimestampType()),
        T.StructField("rows", T.LongType()),
        T.StructField("unparseable_rows", T.LongType()),
        T.StructField("missing_columns", T.ArrayType(T.StringType())),
        T.StructField("extra_columns", T.ArrayType(T.StringType())),
        T.StructField("status", T.StringType()),
        T.StructField("error", T.StringType()),
        T.StructField("run_id", T.StringType()),
        T.StructField("ingested_at", T.TimestampType()),
    ]
)


@dataclass
class FileInfo:
    path: Path
    size: int
    modified_at: dt.datetime
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def batch_id(self) -> str:
        return self.path.name.split(".")[0]


@dataclass
class IngestResult:
    source: str
    files: int
    rows: int
    unparseable: int
    unreadable: list[str]


def landing_files(source: Source) -> list[Path]:
    """Files of one source in batch order; names starting with _ or . are not data."""
    folder = settings().landing / source.name
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(("_", ".")))


def _file_info(p: Path) -> FileInfo:
    stat = p.stat()
    return FileInfo(p, stat.st_size, dt.datetime.fromtimestamp(stat.st_mtime, tz=dt.UTC))


def _csv_header(p: Path) -> list[str]:
    with open(p, encoding="utf-8-sig", errors="replace", newline="") as handle:
        first = handle.readline()
    row = next(csv.reader(io.StringIO(first)), [])
    return [c.strip() for c in row]


def _as_text_lines(spark: SparkSession, info: FileInfo, source: Source) -> DataFrame:
    """A file whose shape is unusable: every line kept as raw text, to be quarantined."""
    lines = spark.read.text(str(info.path)).select(F.col("value").alias("_raw"))
    if source.fmt == "csv":
        lines = lines.offset(1)  # the (unusable) header
    return lines.select(*[F.lit(None).cast("string").alias(c) for c in source.columns], "_raw")


def _read_csv(spark: SparkSession, info: FileInfo, source: Source) -> DataFrame:
    header = _csv_header(info.path)
    known = [c for c in header if c in source.columns]
    info.missing = [c for c in source.columns if c not in header]
    info.extra = [c for c in header if c not in source.columns]
    if not any(k in known for k in source.key):
        info.error = f"header names none of the key columns {list(source.key)}: {header[:10]}"
        return _as_text_lines(spark, info, source)
    file_cols = [f"_c{i}" if c not in source.columns else c for i, c in enumerate(header)]
    schema = T.StructType(
        [T.StructField(c, T.StringType()) for c in file_cols]
        + [T.StructField("_raw", T.StringType())]
    )
    df = (
        spark.read.schema(schema)
        .option("header", True)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", "_raw")
        .option("encoding", "UTF-8")
        .option("multiLine", False)
        .csv(str(info.path))
    )
    return df.select(
        *[F.col(c) if c in known else F.lit(None).cast("string").alias(c) for c in source.columns],
        F.col("_raw"),
    )


def _read_json(spark: SparkSession, info: FileInfo, source: Source) -> DataFrame:
    schema = T.StructType(
        [T.StructField(c, T.StringType()) for c in source.columns]
        + [T.StructField("_raw", T.StringType())]
    )
    return (
        spark.read.schema(schema)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", "_raw")
        .json(str(info.path))
    )


def _read_parquet(spark: SparkSession, info: FileInfo, source: Source) -> DataFrame:
    df = spark.read.parquet(str(info.path))
    names = df.columns  # reads the footer now: a truncated file fails here, by name
    info.missing = [c for c in source.columns if c not in names]
    info.extra = [c for c in names if c not in source.columns]
    return df.select(
        *[
            F.col(c).cast("string").alias(c) if c in names else F.lit(None).cast("string").alias(c)
            for c in source.columns
        ],
        F.lit(None).cast("string").alias("_raw"),
    )


READERS = {"csv": _read_csv, "json": _read_json, "parquet": _read_parquet}


def read_file(spark: SparkSession, info: FileInfo, source: Source, ingested_at: dt.datetime):
    raw = READERS[source.fmt](spark, info, source)
    return raw.select(
        *source.columns,
        "_raw",
        F.lit(info.path.name).alias("_source_file"),
        F.lit(info.batch_id).alias("_batch_id"),
        F.lit(ingested_at).cast("timestamp").alias("_ingested_at"),
        F.concat(F.lit(info.path.name + ":"), F.monotonically_increasing_id().cast("string")).alias(
            "_record_id"
        ),
    )


def _logged_files(spark: SparkSession, source: Source) -> dict[str, tuple[str, int]]:
    log = lake.read_or_none(spark, "bronze", LOG_TABLE)
    if log is None:
        return {}
    rows = (
        log.filter(F.col("source") == source.name).select("file", "status", "size_bytes").collect()
    )
    return {r["file"]: (r["status"], r["size_bytes"]) for r in rows}


def _already_in_bronze(spark: SparkSession, source: Source, names: list[str]) -> set[str]:
    bronze = lake.read_or_none(spark, "bronze", source.name)
    if bronze is None or not names:
        return set()
    found = bronze.filter(F.col("_source_file").isin(names)).select("_source_file").distinct()
    return {r[0] for r in found.collect()}


def _log_rows(
    spark: SparkSession,
    source: Source,
    entries: list[tuple[FileInfo, int, int, str, str | None]],
    run_id: str,
    now: dt.datetime,
) -> None:
    if not entries:
        return
    rows = [
        (
            source.name,
            info.path.name,
            info.batch_id,
            info.size,
            info.modified_at,
            n_rows,
            n_bad,
            info.missing,
            info.extra,
            status,
            error,
            run_id,
            now,
        )
        for info, n_rows, n_bad, status, error in entries
    ]
    lake.append(lake.rows_frame(spark, rows, LOG_SCHEMA), "bronze", LOG_TABLE)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]


def ingest_source(spark: SparkSession, source_name: str, run_id: str) -> IngestResult:
    """Append the source's new landing files to its Bronze table."""
    source = SOURCES[source_name]
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    logged = _logged_files(spark, source)
    candidates = []
    for p in landing_files(source):
        info = _file_info(p)
        previous = logged.get(p.name)
        if previous is None:
            candidates.append(info)
        elif previous[0] == "unreadable" and previous[1] != info.size:
            candidates.append(info)  # replaced by a new copy: try again
    if not candidates:
        return IngestResult(source.name, 0, 0, 0, [])

    # Repair after a crash between the Bronze commit and the log commit.
    committed = _already_in_bronze(spark, source, [c.path.name for c in candidates])
    repaired = [
        (c, -1, -1, "ingested", "recovered after an interrupted run")
        for c in candidates
        if c.path.name in committed
    ]
    _log_rows(spark, source, repaired, run_id, now)
    candidates = [c for c in candidates if c.path.name not in committed]

    frames: list[tuple[FileInfo, DataFrame]] = []
    failed: list[tuple[FileInfo, int, int, str, str | None]] = []
    for info in candidates:
        try:
            frames.append((info, read_file(spark, info, source, now)))
        except Exception as exc:  # an unreadable file must not stop the batch
            failed.append((info, 0, 0, "unreadable", f"{info.path.name}: {_short(exc)}"))

    entries = list(failed)
    rows = bad = 0
    if frames:
        written = _write_frames(spark, source, frames)
        for info, result in written:
            if isinstance(result, Exception):
                entries.append((info, 0, 0, "unreadable", f"{info.path.name}: {_short(result)}"))
            else:
                n_rows, n_bad = result
                rows += n_rows
                bad += n_bad
                entries.append((info, n_rows, n_bad, "ingested", info.error))
    _log_rows(spark, source, entries, run_id, now)
    unreadable = [e[4] or e[0].path.name for e in entries if e[3] == "unreadable"]
    return IngestResult(source.name, len(candidates), rows, bad, unreadable)


def _count_by_file(df: DataFrame) -> dict[str, tuple[int, int]]:
    counts = df.groupBy("_source_file").agg(
        F.count(F.lit(1)).alias("rows"), F.count("_raw").alias("bad")
    )
    return {r["_source_file"]: (int(r["rows"]), int(r["bad"])) for r in counts.collect()}


def _write_frames(
    spark: SparkSession, source: Source, frames: list[tuple[FileInfo, DataFrame]]
) -> list[tuple[FileInfo, tuple[int, int] | Exception]]:
    """One commit for the whole batch; on failure, file by file to isolate the bad one."""
    union = frames[0][1]
    for _, df in frames[1:]:
        union = union.unionByName(df)
    try:
        staged = union.persist()
        counts = _count_by_file(staged)
        lake.append(staged, "bronze", source.name)
        staged.unpersist()
        return [(info, counts.get(info.path.name, (0, 0))) for info, _ in frames]
    except Exception:
        union.unpersist()
    return [_try_single(spark, source, frame) for frame in frames]


def _try_single(spark: SparkSession, source: Source, frame: tuple[FileInfo, DataFrame]):
    info, df = frame
    try:
        staged = df.persist()
        counts = _count_by_file(staged)
        lake.append(staged, "bronze", source.name)
        staged.unpersist()
        return info, counts.get(info.path.name, (0, 0))
    except Exception as exc:
        df.unpersist()
        return info, exc
