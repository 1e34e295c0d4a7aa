"""Column normalisation rules of docs/contract.md §3, as Spark column expressions.

They are built-in functions only (no UDFs), so Spark can optimise them, and the
batch Silver step and the live stream share them.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

MIN_TS = "2000-01-01 00:00:00"

# Leading and trailing whitespace of any kind (tab, CR, no-break space, ...), not only
# the ASCII space that F.trim removes: a value typed or exported with a stray tab
# still parses, as Python's str.strip() (and tests/reference.py) would have it.
_OUTER_WHITESPACE = r"(?U)^\s+|\s+$"

# raw pattern -> Spark datetime pattern (None: ISO 8601, parsed by the cast rules)
_TS_FORMATS: list[tuple[str, str | None]] = [
    (
        r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}(:?\d{2})?)?$",
        None,
    ),
    (r"^\d{4}-\d{2}-\d{2}$", "yyyy-MM-dd"),
    # month and day with or without a leading zero (7/8/2014, as spreadsheets write them);
    # the one-letter patterns parse one or two digits, the regex keeps it to two at most
    (r"^\d{1,2}/\d{1,2}/\d{4}$", "M/d/yyyy"),
    (r"^\d{1,2}-\d{1,2}-\d{4}$", "d-M-yyyy"),
    (r"^\d{8}$", "yyyyMMdd"),
    (r"^[A-Za-z]+ \d{1,2}, \d{4}$", "MMMM d, yyyy"),
]

STATUS_SYNONYMS: dict[str, str] = {
    "pending": "pending",
    "new": "pending",
    "created": "pending",
    "processing": "processing",
    "paid": "processing",
    "confirmed": "processing",
    "shipped": "shipped",
    "dispatched": "shipped",
    "in transit": "shipped",
    "delivered": "delivered",
    "complete": "delivered",
    "completed": "delivered",
    "fulfilled": "delivered",
    "cancelled": "cancelled",
    "canceled": "cancelled",
    "void": "cancelled",
    "returned": "returned",
    "refunded": "returned",
    "return": "returned",
}
REVENUE_STATUSES = ("processing", "shipped", "delivered")
STATUSES = ("pending", "processing", "shipped", "delivered", "cancelled", "returned")


# What ``(?U)\s`` matches in Java's regex: the Unicode White_Space characters.
WHITESPACE = tuple(
    chr(c)
    for c in (
        *range(0x09, 0x0E),
        0x20,
        0x85,
        0xA0,
        0x1680,
        *range(0x2000, 0x200B),
        0x2028,
        0x2029,
        0x202F,
        0x205F,
        0x3000,
    )
)

_WHITESPACE_TEXT = "".join(WHITESPACE)
_FIRST_BEYOND_ASCII = min(c for c in WHITESPACE if c > " ")  # U+0085


def strip(raw: Column) -> Column:
    """The text without outer whitespace of any kind.

    The regex runs only on a value whose first or last character may be
    whitespace: nearly every value has none, and a regex replacement of each of
    order items' four parsed fields cost more than their parsing (1,000,000
    orders, 3M items, warm: 6.5-7.8 s -> 3.9-5.1 s; BENCHMARKS.md). ``_edge`` says
    which; it may say yes too often (the regex then changes nothing), never too
    seldom (tests/test_normalise.py tries every character).
    """
    edge = _edge(F.substring(raw, 1, 1)) | _edge(F.substring(raw, -1, 1))
    return F.when(edge, F.regexp_replace(raw, _OUTER_WHITESPACE, "")).otherwise(raw)


def _edge(char: Column) -> Column:
    """Whether ``char`` (one character, or empty) may be whitespace.

    Text compares by code point: the ASCII whitespace is at or below the space,
    the rest from U+0085 on, where the character is looked up in one literal of
    them all. A set of 25 literals (``isin``) evaluated as fast but took about a
    hundred calls into the JVM to build, each time: 0.85 s of a warm 10k Silver
    refine; the literal alone, searched for every value, cost 1 s more per 12M
    values (both measured side by side, BENCHMARKS.md).
    """
    beyond_ascii = (char >= F.lit(_FIRST_BEYOND_ASCII)) & F.lit(_WHITESPACE_TEXT).contains(char)
    return (char <= F.lit(" ")) | beyond_ascii


def parse_timestamp(raw: Column) -> Column:
    """UTC timestamp from any accepted format, or null when none matches."""
    value = strip(raw)
    # "+0200" -> "+02:00" and "+02" -> "+02:00": the cast rules want a colon. Only an
    # ISO value (the first format) is parsed from ``iso``, and its offset's sign comes
    # after the date: without a sign there, the two regexes would change nothing.
    colon = F.regexp_replace(value, r"([+-]\d{2}):?(\d{2})$", "$1:$2")
    colon = F.regexp_replace(colon, r"([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?[+-]\d{2})$", "$1:00")
    time_part = F.substring(value, 12, 100)  # an ISO value is 32 characters at most
    iso = F.when(time_part.contains("+") | time_part.contains("-"), colon).otherwise(value)
    parsed: Column | None = None
    for pattern, fmt in _TS_FORMATS:
        if fmt is None:
            candidate = F.try_to_timestamp(iso)
        else:
            candidate = F.try_to_timestamp(value, F.lit(fmt))
        branch = F.when(value.rlike(pattern), candidate)
        parsed = branch if parsed is None else parsed.when(value.rlike(pattern), candidate)
    epoch = F.timestamp_seconds(value.try_cast("bigint"))
    return parsed.when(value.rlike(r"^\d{10}$"), epoch)  # type: ignore[union-attr]


def timestamp_too_old(ts: Column) -> Column:
    return ts < F.lit(MIN_TS).cast("timestamp")


def timestamp_in_future(ts: Column, ingested_at: Column) -> Column:
    return ts > ingested_at + F.expr("INTERVAL 1 DAY")


def timestamp_out_of_range(ts: Column, ingested_at: Column) -> Column:
    return timestamp_too_old(ts) | timestamp_in_future(ts, ingested_at)


def normalise_status(raw: Column) -> Column:
    """Canonical status, or null for anything unknown."""
    lowered = F.lower(strip(raw))
    mapping = F.create_map(*[F.lit(x) for pair in STATUS_SYNONYMS.items() for x in pair])
    # A synonym holds single spaces only, so collapsing the inner whitespace (a regex)
    # matters only for a value not found as it is.
    collapsed = F.regexp_replace(lowered, r"(?U)\s+", " ")
    return F.coalesce(F.element_at(mapping, lowered), F.element_at(mapping, collapsed))


def parse_int(raw: Column) -> Column:
    """Integer only when the text is a whole number (2.5 or 1e3 are not quantities)."""
    value = strip(raw)
    return F.when(value.rlike(r"^[+-]?\d{1,9}$"), value.try_cast("int"))


def parse_decimal(raw: Column, precision: int = 18, scale: int = 4) -> Column:
    """A plain or scientific decimal; thousands separators, NaN and Infinity are not numbers."""
    value = strip(raw)
    return F.when(
        value.rlike(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,3})?$"),
        value.try_cast(f"decimal({precision},{scale})"),
    )


def line_gross(quantity: Column, unit_price: Column) -> Column:
    return F.round(quantity * unit_price, 2).cast("decimal(18,2)")


def line_net(quantity: Column, unit_price: Column, discount_pct: Column) -> Column:
    """round(q * p * (1 - d/100), 2), half up (Spark's decimal rounding is HALF_UP)."""
    return F.round(quantity * unit_price * (F.lit(100) - discount_pct) / F.lit(100), 2).cast(
        "decimal(18,2)"
    )


def line_cost(quantity: Column, unit_cost: Column) -> Column:
    return F.round(quantity * unit_cost, 2).cast("decimal(18,2)")


EMAIL_PATTERN = r"^[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}$"


def valid_email(raw: Column) -> Column:
    return F.coalesce(F.trim(raw).rlike(EMAIL_PATTERN), F.lit(False))
