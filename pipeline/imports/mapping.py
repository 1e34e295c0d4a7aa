"""The mapping file of `pipeline import`: which export column feeds which landing field.

A mapping is TOML (read with tomllib). One table per landing source names its
fields; a field is given as

    field = "Column"                          one column of the export
    field = ["Lineitem sku", "Lineitem name"] the first of these that is not blank
    field = { value = "web" }                 a constant for every line
    field = { column = "Status", default = "delivered" }   a column, the constant when blank
    field = { column = "Order Date", format = "%m/%d/%Y" } a date read with a strptime hint
    price = { column = "Sales", is = "line_net" }          unit | line_gross | line_net
    discount = { column = "Discount", is = "fraction" }    percent | fraction | amount

The keys are implied once: order_items and orders share orders.order_id,
customers are keyed by orders.customer_id and products by order_items.product_id.
`[file]` may fix the delimiter, encoding, .xlsx sheet and decimal separator;
`[[status_rules]]` derive the status from several columns (the first rule
whose `when` matches wins; a value list matches any of its values, case- and
space-insensitively, and "*" matches any non-blank value).

Column names are matched without regard to case and outer spaces. A mapped
column the export lacks is an error for the required fields (orders.order_id,
orders.order_ts, order_items.quantity, order_items.price) and is reported and
left blank for the others.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pipeline.contract import SOURCES

PRESET_DIR = Path(__file__).with_name("presets")

# The landing fields a mapping may fill: the contract's columns (pipeline/contract.py),
# each key named once (orders.order_id, orders.customer_id, order_items.product_id), and
# the item's price and discount as the export states them (pipeline/imports/money.py).
FIELDS: dict[str, tuple[str, ...]] = {
    "orders": SOURCES["orders"].columns,
    "order_items": ("product_id", "quantity", "price", "discount", "line_no"),
    "customers": tuple(c for c in SOURCES["customers"].columns if c != "customer_id"),
    "products": tuple(c for c in SOURCES["products"].columns if c != "product_id"),
}
REQUIRED = (("orders", "order_id"), ("orders", "order_ts"), ("order_items", "quantity"))
REQUIRED_ONE_OF = (("order_items", "price"),)
DATE_FIELDS = frozenset(
    {
        ("orders", "order_ts"),
        ("orders", "updated_at"),
        ("customers", "signup_date"),
        ("customers", "updated_at"),
        ("products", "updated_at"),
    }
)
PRICE_KINDS = ("unit", "line_gross", "line_net")
DISCOUNT_KINDS = ("percent", "fraction", "amount")
STATUSES = ("pending", "processing", "shipped", "delivered", "cancelled", "returned")
_SPEC_KEYS = {"column", "columns", "value", "default", "format", "is"}
_FILE_KEYS = {"delimiter", "encoding", "sheet", "decimal_separator"}
DELIMITERS = (",", ";", "\t", "|")


class MappingError(ValueError):
    """The mapping file is not usable; the message names the file and the key."""


def column_key(name: str) -> str:
    """How column names are compared: case-insensitively, outer spaces (and a BOM) ignored."""
    return re.sub(r"\s+", " ", name.replace("\ufeff", "")).strip().casefold()


def value_key(value: str) -> str:
    """How status values are compared: case- and space-insensitively."""
    return re.sub(r"\s+", " ", value).strip().casefold()


@dataclass(frozen=True)
class FieldSpec:
    """Where one landing field comes from."""

    columns: tuple[str, ...] = ()
    default: str | None = None  # the constant (alone, or when the columns are blank)
    format: str | None = None  # strptime hint of a date field
    kind: str | None = None  # price: unit|line_gross|line_net; discount: percent|fraction|amount


@dataclass(frozen=True)
class StatusRule:
    when: tuple[tuple[str, frozenset[str] | None], ...]  # (column, values; None = any non-blank)
    status: str


@dataclass(frozen=True)
class Mapping:
    origin: str  # the preset name or the file it came from, for messages
    fields: dict[tuple[str, str], FieldSpec]
    status_rules: tuple[StatusRule, ...] = ()
    delimiter: str | None = None
    encoding: str | None = None
    sheet: str | None = None
    decimal_separator: str = "."
    description: str = ""

    def spec(self, source: str, name: str) -> FieldSpec | None:
        return self.fields.get((source, name))

    @property
    def price_kind(self) -> str:
        spec = self.spec("order_items", "price")
        return (spec.kind if spec else None) or "unit"

    @property
    def discount_kind(self) -> str:
        spec = self.spec("order_items", "discount")
        return (spec.kind if spec else None) or "percent"

    def columns(self) -> list[str]:
        """Every export column the mapping reads, in mapping order (no repeats)."""
        names: list[str] = []
        for spec in self.fields.values():
            names.extend(spec.columns)
        for rule in self.status_rules:
            names.extend(column for column, _ in rule.when)
        return list(dict.fromkeys(names))

    def required_columns(self) -> set[str]:
        """Columns without which the export cannot be imported (all of a required field's)."""
        keys = [*REQUIRED, *REQUIRED_ONE_OF]
        return {
            c
            for k in keys
            if (spec := self.fields.get(k)) is not None and spec.default is None
            for c in spec.columns
        }


def presets() -> list[str]:
    """The preset names shipped with ShopLake (files in pipeline/imports/presets)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_mapping(spec: str | Path) -> Mapping:
    """A preset by name (`generic`, `shopify`) or a mapping file by path."""
    text_spec = str(spec)
    if text_spec in presets():
        path = PRESET_DIR / f"{text_spec}.toml"
        return parse_mapping(path.read_text(encoding="utf-8"), origin=f"preset {text_spec}")
    path = Path(text_spec)
    if not path.is_file():
        known = ", ".join(presets())
        raise MappingError(f"{path}: no such mapping file (presets: {known})")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"{path}: cannot read the mapping ({exc})") from exc
    return parse_mapping(text, origin=str(path))


def preset_text(name: str) -> str:
    return (PRESET_DIR / f"{name}.toml").read_text(encoding="utf-8")


def parse_mapping(text: str, origin: str = "mapping") -> Mapping:
    """Parse and check a mapping; every problem is a MappingError naming `origin` and the key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"{origin}: not valid TOML ({exc})") from exc

    def fail(key: str, problem: str) -> MappingError:
        return MappingError(f"{origin}: {key}: {problem}")

    known = {*FIELDS, "file", "status_rules", "description"}
    for key in data:
        if key not in known:
            raise fail(key, f"unknown section (expected one of {', '.join(sorted(known))})")
    fields: dict[tuple[str, str], FieldSpec] = {}
    for source, names in FIELDS.items():
        table = data.get(source, {})
        if not isinstance(table, dict):
            raise fail(source, "must be a table of fields")
        for name, raw in table.items():
            key = f"{source}.{name}"
            if name not in names:
                implied = {"order_items.order_id", "customers.customer_id", "products.product_id"}
                hint = (
                    " (keys are given once: orders.order_id, orders.customer_id, "
                    "order_items.product_id)"
                    if key in implied
                    else f" (fields: {', '.join(names)})"
                )
                raise fail(key, "unknown field" + hint)
            fields[(source, name)] = _field_spec(raw, key, fail, (source, name))
    for source, name in REQUIRED + REQUIRED_ONE_OF:
        if (source, name) not in fields:
            raise fail(f"{source}.{name}", "is required")

    file_opts = data.get("file", {})
    if not isinstance(file_opts, dict):
        raise fail("file", "must be a table")
    for key in file_opts:
        if key not in _FILE_KEYS:
            raise fail(f"file.{key}", f"unknown option (options: {', '.join(sorted(_FILE_KEYS))})")
    delimiter = file_opts.get("delimiter")
    if delimiter is not None and (not isinstance(delimiter, str) or len(delimiter) != 1):
        raise fail("file.delimiter", "must be one character")
    encoding = file_opts.get("encoding")
    if encoding is not None:
        import codecs

        try:
            codecs.lookup(str(encoding))
        except LookupError as exc:
            raise fail("file.encoding", f"unknown encoding {encoding!r}") from exc
    decimal = file_opts.get("decimal_separator", ".")
    if decimal not in (".", ","):
        raise fail("file.decimal_separator", 'must be "." or ","')
    sheet = file_opts.get("sheet")

    rules = []
    raw_rules = data.get("status_rules", [])
    if not isinstance(raw_rules, list):
        raise fail("status_rules", "must be an array of tables ([[status_rules]])")
    for i, rule in enumerate(raw_rules, start=1):
        rules.append(_status_rule(rule, f"status_rules[{i}]", fail))
    description = data.get("description", "")
    return Mapping(
        origin=origin,
        fields=fields,
        status_rules=tuple(rules),
        delimiter=delimiter,
        encoding=str(encoding) if encoding else None,
        sheet=str(sheet) if sheet is not None else None,
        decimal_separator=decimal,
        description=str(description),
    )


def _text(value: object, key: str, fail) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise fail(key, f"must be text, got {type(value).__name__}")
    return str(value)


def _field_spec(raw: object, key: str, fail, where: tuple[str, str]) -> FieldSpec:
    if isinstance(raw, str):
        spec = FieldSpec(columns=(raw,))
    elif isinstance(raw, list):
        if not raw or not all(isinstance(c, str) for c in raw):
            raise fail(key, "a list must name one or more columns")
        spec = FieldSpec(columns=tuple(raw))
    elif isinstance(raw, dict):
        for option in raw:
            if option not in _SPEC_KEYS:
                raise fail(f"{key}.{option}", f"unknown option ({', '.join(sorted(_SPEC_KEYS))})")
        if "value" in raw and ("column" in raw or "columns" in raw or "default" in raw):
            raise fail(key, "a constant `value` cannot also have columns or a default")
        columns = raw.get("columns", raw.get("column", ()))
        if isinstance(columns, str):
            columns = (columns,)
        if not isinstance(columns, list | tuple) or not all(isinstance(c, str) for c in columns):
            raise fail(key, "column(s) must be text")
        constant = raw.get("value", raw.get("default"))
        spec = FieldSpec(
            columns=tuple(columns),
            default=None if constant is None else _text(constant, key, fail),
            format=None if raw.get("format") is None else _text(raw["format"], key, fail),
            kind=None if raw.get("is") is None else _text(raw["is"], key, fail),
        )
    else:
        raise fail(key, "must be a column name, a list of names or a table")
    if not spec.columns and spec.default is None:
        raise fail(key, "names no column and no value")
    if spec.format is not None and where not in DATE_FIELDS:
        raise fail(key, "`format` is for date fields only")
    if spec.kind is not None:
        allowed = {"price": PRICE_KINDS, "discount": DISCOUNT_KINDS}.get(where[1])
        if where[0] != "order_items" or allowed is None:
            raise fail(key, "`is` is for order_items.price and order_items.discount only")
        if spec.kind not in allowed:
            raise fail(key, f"`is` must be one of {', '.join(allowed)}")
    return spec


def _status_rule(raw: object, key: str, fail) -> StatusRule:
    if not isinstance(raw, dict) or set(raw) != {"when", "status"}:
        raise fail(key, "needs exactly `when` (a table of column = values) and `status`")
    status = raw["status"]
    if status not in STATUSES:
        raise fail(f"{key}.status", f"must be one of {', '.join(STATUSES)}")
    when = raw["when"]
    if not isinstance(when, dict) or not when:
        raise fail(f"{key}.when", "must name at least one column")
    conditions = []
    for column, values in when.items():
        if values == "*":
            conditions.append((column, None))
            continue
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise fail(f"{key}.when.{column}", 'must be a value, a list of values or "*"')
        conditions.append((column, frozenset(value_key(v) for v in values)))
    return StatusRule(when=tuple(conditions), status=status)
