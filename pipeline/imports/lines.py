"""Export lines onto the landing fields: one spill row per line, or a reject with its reason.

Each chunk of records becomes an Arrow table with one row per line and one
column per landing field (order header, item, customer and product fields
side by side; blank is null), numbered by `seq` in file order, so that the
per-key resolution (pipeline.imports.resolve) can pick the latest non-blank
value of every field. Values are trimmed. Dates with a `format` hint become
ISO 8601 UTC; dates without one, and statuses, are passed on for Silver's
§3 rules (docs/contract.md) to judge. A line is rejected (kept in the rejects file with
its line number and reason, never dropped) only when it cannot be placed at
all: a malformed record, no order id, or amounts that give no unit price.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa

from pipeline.imports.mapping import FIELDS, FieldSpec, Mapping, column_key, value_key
from pipeline.imports.money import LineError, clean_number, line_amounts
from pipeline.imports.reading import Chunk

PREFIX = {"orders": "o_", "order_items": "i_", "customers": "c_", "products": "p_"}
NUMERIC = frozenset(
    {
        ("order_items", "quantity"),
        ("order_items", "price"),
        ("order_items", "discount"),
        ("order_items", "line_no"),
        ("products", "list_price"),
        ("products", "unit_cost"),
    }
)
# spill column of each landing field: the keys are plain, the rest prefixed by source
ITEM_OUT = {"price": "unit_price", "discount": "discount_pct"}
_ISO_LIKE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?")
_DATE_CACHE_LIMIT = 100_000
_WHOLE = re.compile(r"(?<=\d)\.0+$")


def spill_name(source: str, name: str) -> str:
    if (source, name) == ("orders", "order_id"):
        return "order_id"
    if (source, name) == ("orders", "customer_id"):
        return "customer_id"
    if (source, name) == ("order_items", "product_id"):
        return "product_id"
    return PREFIX[source] + ITEM_OUT.get(name, name)


SPILL_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("line", pa.int64()),
        *[(spill_name(s, n), pa.string()) for s, names in FIELDS.items() for n in names],
    ]
)


MALFORMED, NO_ORDER_ID, NO_UNIT_PRICE = (
    "malformed record",
    "no order id",
    "amounts give no unit price",
)


@dataclass
class Reject:
    line: int
    kind: str  # MALFORMED, NO_ORDER_ID or NO_UNIT_PRICE: what the report counts
    reason: str  # the line's own reason, for the rejects file
    fields: list[str]


@dataclass
class Plan:
    """The mapping bound to one export's header: column positions per field."""

    mapping: Mapping
    header: list[str]
    positions: dict[tuple[str, str], list[int]]
    rule_positions: list[list[int | None]]
    missing: list[str]  # mapped columns the export lacks
    unmapped: list[str]  # export columns the mapping does not read
    now: str  # the import's time: updated_at where the export gives none


def bind(mapping: Mapping, header: list[str], now: str) -> Plan:
    """Where each mapped column sits in `header`; the required ones must be there."""
    index: dict[str, int] = {}
    for i, name in enumerate(header):
        index.setdefault(column_key(name), i)
    positions = {
        key: [index[column_key(c)] for c in spec.columns if column_key(c) in index]
        for key, spec in mapping.fields.items()
    }
    rule_positions = [
        [index.get(column_key(column)) for column, _ in rule.when] for rule in mapping.status_rules
    ]
    wanted = mapping.columns()
    missing = [c for c in wanted if column_key(c) not in index]
    required_missing = sorted(c for c in mapping.required_columns() if column_key(c) not in index)
    if required_missing:
        raise LookupError(
            f"the export has no column {', '.join(map(repr, required_missing))} "
            f"(mapping {mapping.origin}; its columns: {', '.join(header)})"
        )
    used = {column_key(c) for c in wanted}
    unmapped = [h for h in header if column_key(h) not in used and h.strip()]
    return Plan(mapping, header, positions, rule_positions, missing, unmapped, now)


@dataclass
class Mapped:
    """One chunk mapped: the spill rows and the lines that could not be placed."""

    table: pa.Table
    rejects: list[Reject] = field(default_factory=list)
    inexact: int = 0
    dates_unmatched: Counter = field(default_factory=Counter)


class LineMapper:
    """Maps chunks in order; keeps the date caches and the running line number."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.seq = 0
        self._date_cache: dict[tuple[str, str], str | None] = {}

    def _values(self, columns: list[tuple[str, ...]], key: tuple[str, str], n: int) -> list:
        spec: FieldSpec = self.plan.mapping.fields.get(key, FieldSpec())
        where = self.plan.positions.get(key, [])
        default = spec.default if spec.default not in ("",) else None
        if not where:
            return [default] * n
        if len(where) == 1:
            return [v.strip() or default for v in columns[where[0]]]
        out = []
        for values in zip(*(columns[i] for i in where), strict=True):
            out.append(next((v.strip() for v in values if v.strip()), default))
        return out

    def _date(self, value: str | None, fmt: str, counter: Counter, name: str) -> str | None:
        if value is None:
            return None
        cache_key = (fmt, value)
        if cache_key in self._date_cache:
            parsed = self._date_cache[cache_key]
        else:
            try:
                stamp = dt.datetime.strptime(value, fmt)
                if stamp.tzinfo is not None:
                    stamp = stamp.astimezone(dt.UTC).replace(tzinfo=None)
                parsed = stamp.strftime("%Y-%m-%dT%H:%M:%S")
                if stamp.microsecond:
                    parsed += f".{stamp.microsecond:06d}"
                parsed += "Z"
            except ValueError:
                parsed = None
            if len(self._date_cache) >= _DATE_CACHE_LIMIT:
                self._date_cache.clear()
            self._date_cache[cache_key] = parsed
        if parsed is None:
            if not _ISO_LIKE.match(value):  # a spreadsheet cell's date is already ISO
                counter[name] += 1
            return value
        return parsed

    def _statuses(self, rows: list[list[str]], fallback: list) -> list:
        rules = self.plan.mapping.status_rules
        if not rules:
            return fallback
        out = []
        for row, default in zip(rows, fallback, strict=True):
            status = default
            for rule, where in zip(rules, self.plan.rule_positions, strict=True):
                matched = True
                for (_, values), i in zip(rule.when, where, strict=True):
                    cell = value_key(row[i]) if i is not None else ""
                    if not cell or (values is not None and cell not in values):
                        matched = False
                        break
                if matched:
                    status = rule.status
                    break
            out.append(status)
        return out

    def map(self, chunk: Chunk) -> Mapped:
        plan, mapping = self.plan, self.plan.mapping
        rejects = [
            Reject(line, MALFORMED, f"{MALFORMED}: {why}", row)
            for line, row, why in chunk.malformed
        ]
        rows, n = chunk.rows, len(chunk.rows)
        columns = list(zip(*rows, strict=True)) if rows else [()] * len(plan.header)
        out: dict[str, list] = {}
        unmatched: Counter = Counter()
        for source, names in FIELDS.items():
            for name in names:
                key = (source, name)
                values = self._values(columns, key, n)
                spec = mapping.fields.get(key)
                if key in NUMERIC:
                    sep = mapping.decimal_separator
                    values = [None if v is None else clean_number(v, sep) for v in values]
                if key == ("order_items", "quantity"):  # 2.0 from a spreadsheet is 2
                    values = [_WHOLE.sub("", v) if v else v for v in values]
                if spec is not None and spec.format:
                    label = f"{source}.{name}"
                    values = [self._date(v, spec.format, unmatched, label) for v in values]
                if name == "updated_at":  # versions: the import's time unless the export says
                    values = [v or plan.now for v in values]
                out[spill_name(source, name)] = values
        out["o_status"] = self._statuses(rows, out["o_status"])

        keep = [True] * n
        inexact = 0
        price_kind, discount_kind = mapping.price_kind, mapping.discount_kind
        quantity, price = out["i_quantity"], out["i_unit_price"]
        discount = out["i_discount_pct"]
        for i in range(n):
            if out["order_id"][i] is None:
                keep[i] = False
                rejects.append(Reject(chunk.lines[i], NO_ORDER_ID, NO_ORDER_ID, rows[i]))
                continue
            try:
                unit, pct, exact = line_amounts(
                    quantity[i] or "", price[i] or "", discount[i] or "", price_kind, discount_kind
                )
            except LineError as exc:
                keep[i] = False
                rejects.append(Reject(chunk.lines[i], NO_UNIT_PRICE, str(exc), rows[i]))
                continue
            price[i], discount[i] = unit or None, pct or None
            inexact += not exact
        kept = [i for i in range(n) if keep[i]]
        seqs = list(range(self.seq, self.seq + len(kept)))
        self.seq += len(kept)
        arrays = {
            "seq": pa.array(seqs, pa.int64()),
            "line": pa.array([chunk.lines[i] for i in kept], pa.int64()),
        }
        for name in SPILL_SCHEMA.names[2:]:
            values = out[name]
            arrays[name] = pa.array(
                values if len(kept) == n else [values[i] for i in kept], pa.string()
            )
        rejects.sort(key=lambda r: r.line)
        return Mapped(pa.table(arrays, schema=SPILL_SCHEMA), rejects, inexact, unmatched)
