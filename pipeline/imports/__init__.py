"""`python -m pipeline import`: a flat line-level export into one landing batch.

mapping   the mapping file (TOML) and the presets shipped in presets/
reading   the export in chunks: CSV in any common delimiter and encoding, or .xlsx
money     unit price and discount from line totals, fractions and amounts
lines     export lines onto landing fields (one spill row per line) or rejects
resolve   one record per order, customer and product, conflicts counted (DuckDB)
writing   the batch's name and the atomic placing of its files
report    the counts an import reports

Memory stays bounded for any export size: records are read and mapped in
chunks, spilled to a Parquet file in the batch's work folder, and resolved
per key by DuckDB within a memory limit.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.imports.lines import SPILL_SCHEMA, LineMapper, Plan, Reject, bind
from pipeline.imports.mapping import (
    Mapping,
    MappingError,
    load_mapping,
    parse_mapping,
    preset_text,
    presets,
)
from pipeline.imports.reading import CHUNK_ROWS, Export, ExportError, open_export
from pipeline.imports.report import ImportReport
from pipeline.imports.resolve import Resolver
from pipeline.imports.writing import (
    REPORT_DIR,
    BatchError,
    Staging,
    choose_batch,
    landing_file,
    save_upload,
)
from pipeline.sources import render as rd

__all__ = [
    "BatchError",
    "ExportError",
    "ImportReport",
    "Mapping",
    "MappingError",
    "import_file",
    "load_mapping",
    "parse_mapping",
    "preset_text",
    "presets",
    "REPORT_DIR",
    "preview",
    "save_upload",
]

Progress = Callable[[str, float], None]
PREVIEW_COLUMNS = [
    "line",
    "order_id",
    "o_order_ts",
    "o_status",
    "customer_id",
    "product_id",
    "i_quantity",
    "i_unit_price",
    "i_discount_pct",
    "p_name",
    "p_category",
    "c_name",
    "o_country",
]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rejects_writer(path: Path, delimiter: str | None):
    handle = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed by the caller
    writer = csv.writer(handle)
    writer.writerow(["line", "reason", "record"])
    joiner = delimiter or ","

    def write(rejects: list[Reject]) -> None:
        for r in rejects:
            text = _join(r.fields, joiner)
            writer.writerow([r.line, r.reason, text])

    return handle, write


def _join(fields: list[str], delimiter: str) -> str:
    """The record as one line of the export's own CSV dialect (lossless for its fields)."""
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="").writerow(fields)
    return out.getvalue()


def _open(
    path: str | Path, mapping: Mapping | str | Path, chunk_rows: int
) -> tuple[Export, Plan, ImportReport]:
    """The export opened, the mapping bound to its header, and the report's first facts."""
    spec = mapping if isinstance(mapping, Mapping) else load_mapping(mapping)
    export = open_export(path, spec, chunk_rows)
    try:
        plan = bind(spec, export.header, _now())
    except LookupError as exc:
        export.chunks.close()
        raise ExportError(f"{path}: {exc}") from exc
    report = ImportReport(
        file=str(path),
        mapping=spec.origin,
        encoding=export.encoding,
        delimiter=export.delimiter,
        sheet=export.sheet,
        unmapped_columns=plan.unmapped,
        missing_columns=plan.missing,
    )
    return export, plan, report


def import_file(
    path: str | Path,
    mapping: Mapping | str | Path,
    batch: str | None = None,
    progress: Progress | None = None,
    wait_seconds: float = 600.0,
    chunk_rows: int = CHUNK_ROWS,
) -> ImportReport:
    """Import `path` as one landing batch of the configured lake; return the report.

    Raises MappingError, ExportError or BatchError (messages name the file and
    the problem); nothing is placed in the landing zone unless all four files
    and the report were written.
    """
    started = time.perf_counter()
    tell: Progress = progress or (lambda message, fraction: None)
    export, plan, report = _open(path, mapping, chunk_rows)

    from pipeline.config import settings

    name = choose_batch(settings().landing, batch)
    report.batch = name
    staging = Staging(name)
    try:
        _run(export, plan, staging, report, tell)
        report.seconds = round(time.perf_counter() - started, 2)
        report_name = f"{name}.json"
        report.report_file = staging.location(REPORT_DIR, report_name)
        rd.write_json(staging.hidden(REPORT_DIR, report_name), report.to_dict())
        tell("placing the batch", 0.97)
        staging.place(wait_seconds, tell)
    finally:
        export.chunks.close()
        staging.cleanup()
    tell("done", 1.0)
    return report


def _run(
    export: Export, plan: Plan, staging: Staging, report: ImportReport, tell: Progress
) -> None:
    """Read, map and spill every chunk; resolve per key; write the four files (hidden)."""
    mapper = LineMapper(plan)
    spill_path = staging.work / "lines.parquet"
    rejects_name = f"{staging.batch}.rejects.csv"
    rejects_path = staging.hidden(REPORT_DIR, rejects_name)
    handle, write_rejects = _rejects_writer(rejects_path, export.delimiter)
    reasons: Counter = Counter()
    unmatched: Counter = Counter()
    try:
        with pq.ParquetWriter(spill_path, SPILL_SCHEMA, compression="zstd") as spill:
            for chunk in export.chunks:
                mapped = mapper.map(chunk)
                report.rows_read += len(chunk.rows) + len(chunk.malformed)
                report.blank_lines += chunk.blank
                report.inexact_amounts += mapped.inexact
                unmatched.update(mapped.dates_unmatched)
                reasons.update(r.kind for r in mapped.rejects)
                write_rejects(mapped.rejects)
                if mapped.table.num_rows:
                    spill.write_table(mapped.table)
                tell(f"read {report.rows_read:,} rows", 0.75 * export.done())
    finally:
        handle.close()
    report.count_rejects(reasons)
    report.dates_not_matching_format = dict(unmatched)
    if report.rejected:
        report.rejects_file = staging.location(REPORT_DIR, rejects_name)
    else:
        staging.pending.remove((rejects_path, rejects_path.with_name(rejects_name)))
        rejects_path.unlink()
    if report.rows_read == report.rejected:
        reasons = ", ".join(f"{k} {v:,}" for k, v in report.rejected_by_reason.items())
        raise ExportError(
            f"{export.path}: no line could be imported ({report.rows_read:,} rows read"
            + (f"; rejected: {reasons})" if reasons else ")")
        )

    tell("resolving orders, customers and products", 0.8)
    resolver = Resolver(spill_path, staging.work)
    try:
        conflicts = resolver.resolve()
        report.orders = conflicts["orders"].pop("records")
        report.customers = conflicts["customers"].pop("records")
        report.products = conflicts["products"].pop("records")
        report.conflicts = conflicts
        tell("writing the landing files", 0.85)
        names = {source: landing_file(staging.batch, source) for source in SOURCES_ORDER}
        resolver.write_orders(staging.hidden("orders", names["orders"]))
        report.lines_imported = resolver.write_items(
            staging.hidden("order_items", names["order_items"])
        )
        resolver.write_customers(staging.hidden("customers", names["customers"]))
        products = resolver.products()
        rd.write_parquet(staging.hidden("products", names["products"]), products)
        report.files = {s: staging.location(s, n) for s, n in names.items()}
    finally:
        resolver.close()
    if report.lines_imported + report.rejected != report.rows_read:  # nothing lost, ever
        raise ExportError(
            f"{export.path}: {report.rows_read} rows read but {report.lines_imported} imported "
            f"and {report.rejected} rejected"
        )


SOURCES_ORDER = ("products", "customers", "orders", "order_items")


def preview(
    path: str | Path, mapping: Mapping | str | Path, rows: int = 20
) -> tuple[pa.Table, list[Reject], ImportReport]:
    """The first `rows` records mapped (landing field names), the rejects among them, and
    what the reader found (encoding, delimiter, unmapped and missing columns)."""
    export, plan, report = _open(path, mapping, rows)
    try:
        chunk = next(export.chunks, None)
    finally:
        export.chunks.close()
    if chunk is None:
        return SPILL_SCHEMA.empty_table().select(PREVIEW_COLUMNS), [], report
    mapped = LineMapper(plan).map(chunk)
    table = mapped.table.select(PREVIEW_COLUMNS)
    names = [c.removeprefix("o_").removeprefix("i_") for c in PREVIEW_COLUMNS]
    names = [
        {"p_name": "product_name", "p_category": "category", "c_name": "customer_name"}.get(c, n)
        for c, n in zip(PREVIEW_COLUMNS, names, strict=True)
    ]
    return table.rename_columns(names), mapped.rejects, report
