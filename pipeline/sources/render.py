"""Vectorised text rendering and atomic file writing for the demo generator.

Everything here works on whole columns with pyarrow compute kernels, because
a per-row Python loop cannot render millions of lines in the time budget.
Readers of the landing zone must never see a half-written file, so every
file is written under a hidden name and renamed into place.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

CANONICAL_TS = "%Y-%m-%d %H:%M:%S"

# Alternative, valid timestamp renderings (docs/contract.md §3), by code.
TS_FORMATS = (
    "iso_t_z",  # 2025-07-01T10:00:00Z
    "iso_fraction",  # 2025-07-01 10:00:00.123456
    "iso_t_fraction_z",  # 2025-07-01T10:00:00.123Z
    "offset_plus",  # 2025-07-01T12:00:00+02:00
    "offset_minus",  # 2025-07-01T05:00:00-05:00
    "date",  # 2025-07-01
    "us_date",  # 07/01/2025
    "eu_date",  # 01-07-2025
    "compact_date",  # 20250701
    "long_date",  # July 1, 2025
    "epoch_seconds",  # 1751364000
)


def text(values: Sequence[str], index: np.ndarray) -> pa.Array:
    """values[index] as an arrow string array."""
    if len(index) == 0:
        return pa.array([], pa.string())
    return pa.array(list(values), pa.string()).take(pa.array(np.asarray(index, dtype=np.int64)))


def const(value: str | None, n: int) -> pa.Array:
    return pa.array([value] * n, pa.string()) if n < 64 else pa.repeat(value, n).cast(pa.string())


def integers(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(np.asarray(values, dtype=np.int64)), pa.string())


def ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """'O' + zero-padded number, e.g. O00000042."""
    padded = pc.utf8_lpad(integers(numbers), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, padded, "")


def money(cents: np.ndarray) -> pa.Array:
    """Positive integer cents -> '12.50'."""
    cents = np.asarray(cents, dtype=np.int64)
    whole = integers(cents // 100)
    frac = pc.utf8_lpad(integers(cents % 100), width=2, padding="0")
    return pc.binary_join_element_wise(whole, frac, ".")


def _timestamps(epoch: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(epoch, dtype=np.int64), pa.timestamp("s"))


def timestamps(epoch: np.ndarray, fmt: str = CANONICAL_TS) -> pa.Array:
    """UTC epoch seconds -> text with a strftime format (C locale)."""
    if fmt == CANONICAL_TS:  # arrow's own cast renders exactly this, ten times faster
        return pc.cast(_timestamps(epoch), pa.string())
    return pc.strftime(_timestamps(epoch), format=fmt, locale="C")


def dates(epoch: np.ndarray) -> pa.Array:
    """UTC epoch seconds -> 'YYYY-MM-DD'."""
    days = np.floor_divide(np.asarray(epoch, dtype=np.int64), 86_400).astype(np.int32)
    return pc.cast(pa.array(days, pa.int32()).cast(pa.date32()), pa.string())


def _one_format(epoch: np.ndarray, code: int) -> pa.Array:
    name = TS_FORMATS[code]
    # a deterministic sub-second part, so the same input renders the same bytes
    fraction = (np.asarray(epoch, dtype=np.int64) * 7919 + 12345) % 1_000_000
    if name == "iso_t_z":
        return timestamps(epoch, "%Y-%m-%dT%H:%M:%SZ")
    if name == "iso_fraction":
        frac = pc.utf8_lpad(integers(fraction), width=6, padding="0")
        return pc.binary_join_element_wise(timestamps(epoch), frac, ".")
    if name == "iso_t_fraction_z":
        frac = pc.utf8_lpad(integers(fraction // 1000), width=3, padding="0")
        whole = timestamps(epoch, "%Y-%m-%dT%H:%M:%S")
        return pc.binary_join_element_wise(whole, ".", frac, "Z", "")
    if name == "offset_plus":
        return timestamps(np.asarray(epoch) + 7200, "%Y-%m-%dT%H:%M:%S+02:00")
    if name == "offset_minus":
        return timestamps(np.asarray(epoch) - 18000, "%Y-%m-%dT%H:%M:%S-05:00")
    if name == "date":
        return timestamps(epoch, "%Y-%m-%d")
    if name == "us_date":
        return timestamps(epoch, "%m/%d/%Y")
    if name == "eu_date":
        return timestamps(epoch, "%d-%m-%Y")
    if name == "compact_date":
        return timestamps(epoch, "%Y%m%d")
    if name == "long_date":
        ts = _timestamps(epoch)
        month = pc.strftime(ts, format="%B", locale="C")
        day = pc.cast(pc.day(ts), pa.string())
        year = pc.strftime(ts, format="%Y", locale="C")
        return pc.binary_join_element_wise(month, " ", day, ", ", year, "")
    if name == "epoch_seconds":
        return integers(epoch)
    raise ValueError(name)


def mixed_timestamps(epoch: np.ndarray, codes: np.ndarray) -> pa.Array:
    """Render each timestamp with its own TS_FORMATS code."""
    epoch = np.asarray(epoch, dtype=np.int64)
    codes = np.asarray(codes)
    if len(epoch) == 0:
        return pa.array([], pa.string())
    order = np.argsort(codes, kind="stable")
    pieces = []
    for code in np.unique(codes):
        pieces.append(_one_format(epoch[order][codes[order] == code], int(code)))
    rendered = pa.concat_arrays([p.cast(pa.string()) for p in pieces])
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return rendered.take(pa.array(inverse))


def scatter(base: pa.Array, index: np.ndarray, values: pa.Array) -> pa.Array:
    """A copy of base with base[index] = values."""
    if len(index) == 0:
        return base
    n = len(base)
    source = np.arange(n, dtype=np.int64)
    source[np.asarray(index, dtype=np.int64)] = n + np.arange(len(index))
    return pa.concat_arrays([base.cast(pa.string()), values.cast(pa.string())]).take(
        pa.array(source)
    )


def _csv_field(column: pa.Array) -> pa.Array:
    """Quote a field only when it holds a comma or a quote (RFC 4180)."""
    column = column.cast(pa.string())
    needs = pc.or_(
        pc.match_substring(column, ","),
        pc.match_substring(column, '"'),
    )
    if not pc.any(needs).as_py():
        return column
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(column, '"', '""'), '"', "")
    return pc.if_else(needs, quoted, column)


def csv_lines(columns: Sequence[pa.Array]) -> pa.Array:
    """One CSV line per row (no newline); nulls become empty fields."""
    fields = [_csv_field(c) for c in columns]
    return pc.binary_join_element_wise(
        *fields, ",", null_handling="replace", null_replacement=""
    ).cast(pa.string())


def raw_lines(columns: Sequence[pa.Array]) -> pa.Array:
    """Comma-joined values without any quoting (malformed-line shapes)."""
    return pc.binary_join_element_wise(*columns, ",").cast(pa.string())


def json_lines(keys: Sequence[str], columns: Sequence[pa.Array]) -> pa.Array:
    """One JSON object per row, every value a JSON string or null.

    Values must not need escaping (the generator's vocabularies contain no
    quote, backslash or control character; non-ASCII letters stay UTF-8).
    """
    parts: list[Any] = []
    for i, (key, column) in enumerate(zip(keys, columns, strict=True)):
        column = column.cast(pa.string())
        value = pc.if_else(
            pc.is_null(column),
            "null",
            pc.binary_join_element_wise('"', column, '"', ""),
        )
        parts.append(("{" if i == 0 else ", ") + json.dumps(key) + ": ")
        parts.append(value)
    parts.append("}")
    return pc.binary_join_element_wise(*parts, "").cast(pa.string())


def arrangement(n_fixed: int, n_inserted: int, rng: np.random.Generator) -> np.ndarray:
    """Take-indices that keep rows 0..n_fixed-1 in order and scatter the
    n_inserted rows that follow them at random positions."""
    keys = np.concatenate(
        [np.arange(n_fixed, dtype=float), rng.uniform(-0.5, max(n_fixed, 1) - 0.5, n_inserted)]
    )
    return np.argsort(keys, kind="stable")


def _atomic(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp")


def write_lines(path: Path, header: str | None, lines: pa.Array) -> None:
    """Write header + lines, each ending in '\\n', atomically (UTF-8)."""
    tmp = _atomic(path)
    with open(tmp, "wb") as fh:
        if header is not None:
            fh.write(header.encode() + b"\n")
        if len(lines):
            joined = pc.binary_join_element_wise(
                lines.cast(pa.large_string()),
                pa.scalar("", pa.large_string()),
                pa.scalar("\n", pa.large_string()),
            )
            offsets = np.frombuffer(joined.buffers()[1], dtype=np.int64)
            start = offsets[joined.offset]
            end = offsets[joined.offset + len(joined)]
            fh.write(memoryview(joined.buffers()[2])[start:end])
    os.replace(tmp, path)


def write_parquet(path: Path, table: pa.Table) -> None:
    tmp = _atomic(path)
    pq.write_table(table, tmp, compression="snappy")
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    tmp = _atomic(path)
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)
