"""Reading a flat export in chunks: CSV (any common delimiter and encoding) or .xlsx.

- Encoding: a BOM decides (UTF-8 or UTF-16); otherwise the whole file is
  checked as UTF-8 in blocks (one fast pass, bounded memory); text that is not
  UTF-8 is Windows-1252, as spreadsheets on Windows save it (Latin-1 when it
  holds bytes Windows-1252 leaves undefined, so no byte is ever refused).
- Delimiter: the one of `, ; TAB |` whose split of the header names the most
  columns the mapping reads (then the most columns), unless the mapping fixes it.
- CSV follows RFC 4180 (quoted delimiters, doubled quotes, line breaks in
  quotes). A record with more fields than the header, or fewer, is malformed:
  it is kept, with its line number, for the rejects file. Blank lines are not
  records.
- .xlsx is read row by row (openpyxl's read-only mode); cell values become the
  text a CSV export would hold (dates as ISO 8601, 2.0 as 2).
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.imports.mapping import DELIMITERS, Mapping, column_key

CHUNK_ROWS = 20_000
_BLOCK = 1 << 22
_XLSX_SUFFIXES = (".xlsx", ".xlsm")

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class ExportError(ValueError):
    """The export cannot be read; the message names the file and the problem."""


@dataclass
class Chunk:
    rows: list[list[str]]  # well-formed records, as many fields as the header
    lines: list[int]  # the line (CSV) or row (.xlsx) each record starts on
    malformed: list[tuple[int, list[str], str]] = field(default_factory=list)  # line, fields, why
    blank: int = 0  # blank lines skipped


@dataclass
class Export:
    """An open export: its header, how it was read, and its records in chunks."""

    path: Path
    header: list[str]
    encoding: str | None  # None for .xlsx
    delimiter: str | None  # None for .xlsx
    sheet: str | None
    chunks: Iterator[Chunk]
    done: Callable[[], float] = lambda: 0.0  # the share of the file read so far


def detect_encoding(path: Path) -> str:
    """UTF-8 (with or without BOM), UTF-16 by BOM, else Windows-1252 (or Latin-1)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16"
        fh.seek(0)
        for encoding in ("utf-8", "cp1252"):
            decoder = codecs.getincrementaldecoder(encoding)()
            try:
                while block := fh.read(_BLOCK):
                    decoder.decode(block)
                decoder.decode(b"", final=True)
                return encoding
            except UnicodeDecodeError:
                fh.seek(0)
    return "latin-1"


def _split_header(line: str, delimiter: str) -> list[str]:
    return next(csv.reader([line], delimiter=delimiter), [])


def sniff_delimiter(first_line: str, wanted: list[str]) -> str:
    """The delimiter whose split of the header names the most wanted columns, then most fields."""
    keys = {column_key(c) for c in wanted}

    def score(delimiter: str) -> tuple[int, int]:
        names = _split_header(first_line, delimiter)
        return sum(column_key(n) in keys for n in names), len(names)

    return max(DELIMITERS, key=score)


def open_export(path: str | Path, mapping: Mapping, chunk_rows: int = CHUNK_ROWS) -> Export:
    """Open `path` for reading in chunks of `chunk_rows` records."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ExportError(f"{path}: empty file")
    suffix = path.suffix.lower()
    if suffix == ".xls":
        raise ExportError(f"{path}: .xls (Excel 97-2003) is not supported; save it as .xlsx or CSV")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if suffix in _XLSX_SUFFIXES or magic == b"PK\x03\x04":
        return _open_xlsx(path, mapping, chunk_rows)
    return _open_csv(path, mapping, chunk_rows)


def _open_csv(path: Path, mapping: Mapping, chunk_rows: int) -> Export:
    encoding = mapping.encoding or detect_encoding(path)
    raw = open(path, "rb")  # noqa: SIM115 - closed by the chunk generator
    handle = io.TextIOWrapper(raw, encoding=encoding, errors="strict", newline="")
    size = max(1, path.stat().st_size)
    try:
        first = handle.readline()
        while first and not first.strip():
            first = handle.readline()
        if not first.strip():
            raise ExportError(f"{path}: no header line")
        delimiter = mapping.delimiter or sniff_delimiter(first.lstrip("\ufeff"), mapping.columns())
        handle.seek(0)
    except UnicodeDecodeError as exc:
        handle.close()
        raise ExportError(
            f"{path}: not {encoding} text ({exc.reason} at byte {exc.start})"
        ) from exc
    except BaseException:
        handle.close()
        raise
    reader = csv.reader(handle, delimiter=delimiter, quotechar='"', doublequote=True, strict=False)
    records = _csv_records(path, handle, reader)
    try:
        header = _header(records)
    except BaseException:
        records.close()
        raise
    if header is None:
        records.close()
        raise ExportError(f"{path}: no header line")
    return Export(
        path=path,
        header=[v.lstrip("\ufeff") for v in header],
        encoding=encoding,
        delimiter=delimiter,
        sheet=None,
        chunks=_chunked(records, len(header), chunk_rows, padded=False),
        done=lambda: min(1.0, raw.tell() / size) if not raw.closed else 1.0,
    )


def _csv_records(path: Path, handle: io.TextIOBase, reader) -> Iterator[tuple[int, list[str]]]:
    """(the line a record starts on, its fields); the file is closed when they end."""
    with handle:
        end = reader.line_num
        try:
            for row in reader:
                start, end = end + 1, reader.line_num
                yield start, row
        except UnicodeDecodeError as exc:
            raise ExportError(
                f"{path}: not {handle.encoding} text after line {end} ({exc.reason})"
            ) from exc
        except csv.Error as exc:
            raise ExportError(f"{path}: line {end + 1}: {exc}") from exc


def _header(records: Iterator[tuple[int, list[str]]], trim: bool = False) -> list[str] | None:
    """The first record that is not blank (`trim`: without its empty trailing cells, as a
    spreadsheet's used range may hold them; a CSV header keeps them, its lines have them)."""
    for _, row in records:
        if any(v.strip() for v in row):
            while trim and row and not row[-1].strip():
                row = row[:-1]
            return row
    return None


def _chunked(
    records: Iterator[tuple[int, list[str]]], width: int, chunk_rows: int, padded: bool
) -> Iterator[Chunk]:
    """Records in chunks: blank ones counted, ones that do not fit the header kept as malformed.

    `padded`: a spreadsheet row leaves out its empty trailing cells, so a short
    row is padded and only a value beyond the header's columns is malformed.
    """
    chunk = Chunk(rows=[], lines=[])
    try:
        for line, row in records:
            if not any(v.strip() for v in row):
                chunk.blank += 1
                continue
            if padded and not any(v.strip() for v in row[width:]):
                row = row[:width] + [""] * (width - len(row))
            if len(row) == width:
                chunk.rows.append(row)
                chunk.lines.append(line)
            else:
                why = (
                    f"values beyond the header's {width} columns"
                    if padded
                    else f"{len(row)} fields where the header has {width}"
                )
                chunk.malformed.append((line, row, why))
            if len(chunk.rows) + len(chunk.malformed) >= chunk_rows:
                yield chunk
                chunk = Chunk(rows=[], lines=[])
        if chunk.rows or chunk.malformed or chunk.blank:
            yield chunk
    finally:
        records.close()  # type: ignore[attr-defined]


def cell_text(value: object) -> str:
    """A spreadsheet cell as the text a CSV export of it would hold."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.isoformat()
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return format(value, ".15g")  # Excel's own precision: 0.1 + 0.2 is 0.3
    return str(value)


def _open_xlsx(path: Path, mapping: Mapping, chunk_rows: int) -> Export:
    import zipfile

    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise ExportError(f"{path}: not a readable .xlsx workbook ({exc})") from exc
    names = book.sheetnames
    if mapping.sheet is not None and mapping.sheet not in names:
        book.close()
        raise ExportError(f"{path}: no sheet {mapping.sheet!r} (sheets: {', '.join(names)})")
    sheet = mapping.sheet or names[0]
    records = _xlsx_records(book, book[sheet].iter_rows(values_only=True))
    header = _header(records, trim=True)
    if header is None:
        records.close()
        raise ExportError(f"{path}: sheet {sheet!r} has no header row")
    return Export(
        path=path,
        header=header,
        encoding=None,
        delimiter=None,
        sheet=sheet,
        chunks=_chunked(records, len(header), chunk_rows, padded=True),
    )


def _xlsx_records(book, rows) -> Iterator[tuple[int, list[str]]]:
    """(row number, cell texts); the workbook is closed when they end."""
    try:
        for number, values in enumerate(rows, start=1):
            yield number, [cell_text(v) for v in values]
    finally:
        book.close()
