"""The table catalog: every table of the lake declared once (docs/contract.md §4, §7).

Long (~740 lines) on purpose: one line per column of every table; look-ups and schemas at the end.

Each ``Table`` says its layer, name, grain (the columns that identify a row),
its columns with their Spark SQL types, what writes it and of which kind it
is. Every list of tables is derived from here: the app's readable tables
(``pipeline.read.TABLES``), the demo reset (``pipeline.demo.BATCH_TABLES``),
the steps' outputs (``outputs_of``), the bench's compared tables, the live
query's tables, the tests' lists, and the schema of the run records that both
the runner and the live query write (``spark_schema`` / ``arrow_schema``).

No Spark import at module level: the pages and pipeline.read use it without a JVM.

Kinds:
- ``batch``: built from the landing files by exactly one batch step (``writer``).
- ``bookkeeping``: a batch step's state, committed by the runner at the run's end.
- ``live``: written by the live query (``writer`` = ``live``).
- ``history``: the run records (gold.pipeline_runs, gold.dq_results), kept by a demo reset.
- ``shared``: silver.quarantine, appended to by each Silver refine step and the live query.

A new table: add it here, write it in its step (whose outputs come from here),
and it is readable by the pages, reset by the demo and checked by
tests/test_catalog.py against a real run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pipeline.contract import BRONZE_META, SOURCES

LAYERS = ("bronze", "silver", "gold")
KINDS = ("batch", "bookkeeping", "live", "history", "shared")
LIVE = "live"  # the writer name of the live query
RUNNER = "runner"  # the writer name of the runner (run records, deferred bookkeeping)

# Machine identifiers and change hashes: written, but not among the columns a page reads.
INTERNAL_COLUMNS = frozenset({"_row_hash", "_record_id", "record_id"})

# gold.customer_rfm.rfm_segment: (segment, r scores, f scores), in the contract's order.
RFM_SEGMENTS: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = (
    ("champions", (5,), (4, 5)),
    ("loyal", (3, 4), (4, 5)),
    ("potential_loyalists", (4, 5), (2, 3)),
    ("new_customers", (5,), (1,)),
    ("promising", (4,), (1,)),
    ("need_attention", (3,), (3,)),
    ("about_to_sleep", (3,), (1, 2)),
    ("cant_lose", (1, 2), (5,)),
    ("at_risk", (1, 2), (3, 4)),
    ("hibernating", (1, 2), (1, 2)),
)
RFM_SEGMENT_NAMES: tuple[str, ...] = tuple(name for name, _, _ in RFM_SEGMENTS)


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # a Spark SQL type name: string, int, bigint, double, decimal(18,2), array<string>

    @property
    def internal(self) -> bool:
        return self.name in INTERNAL_COLUMNS


@dataclass(frozen=True)
class Table:
    layer: str
    name: str
    grain: tuple[str, ...]
    columns: tuple[Column, ...]
    kind: str
    writers: tuple[str, ...]  # step names, RUNNER or LIVE; one step for a batch table
    description: str = ""
    stats: tuple[str, ...] | None = None  # see stats_columns; None: the grain's
    # Rows grow with the calendar (a row per day, or per month and category), not
    # with the orders: small at any lake size, so its writes collect the rows
    # (pipeline.lake.collect_target).
    by_calendar: bool = False

    @property
    def stats_columns(self) -> tuple[str, ...]:
        """The columns whose per-file statistics (min, max, nulls) a reader uses.

        Spark's Delta writer computes them for every row it writes, by default
        for the first 32 columns: a tenth of the CPU of a 1,000,000-order run
        (docs/decisions.md, "Run shape"). Only these are kept: the grain's
        (key look-ups, date ranges), or what the table declares (Bronze's
        ``_source_file``, which tells the files a landing file went to, and
        ``_raw``, whose null count is the rows that did not parse). Row counts
        are always kept. Nested types have no statistics.
        """
        wanted = self.grain if self.stats is None else self.stats
        types = {c.name: c.type for c in self.columns}
        return tuple(c for c in wanted if c in types and not types[c].endswith(">"))

    @property
    def ref(self) -> str:
        """``layer.name``, as Step.inputs and Step.outputs name tables."""
        return f"{self.layer}.{self.name}"

    @property
    def key(self) -> tuple[str, str]:
        return (self.layer, self.name)

    @property
    def writer(self) -> str:
        """The one writer of a batch, bookkeeping or live table."""
        if len(self.writers) != 1:
            raise ValueError(f"{self.ref} has several writers: {', '.join(self.writers)}")
        return self.writers[0]

    @property
    def names(self) -> tuple[str, ...]:
        """Every column the writer produces, in order."""
        return tuple(c.name for c in self.columns)

    @property
    def public(self) -> tuple[str, ...]:
        """The columns a reader gets by default (no machine ids or change hashes)."""
        return tuple(c.name for c in self.columns if not c.internal)


def _cols(*specs: str) -> tuple[Column, ...]:
    """Columns from ``"name type"`` strings: compact, and one line per column."""
    return tuple(Column(*spec.split(" ", 1)) for spec in specs)


def _batch(
    layer: str,
    name: str,
    grain: tuple[str, ...],
    step: str,
    *cols: str,
    doc: str = "",
    stats: tuple[str, ...] | None = None,
    by_calendar: bool = False,
):
    return Table(layer, name, grain, _cols(*cols), "batch", (step,), doc, stats, by_calendar)


MONEY = "decimal(18,2)"
PRICE = "decimal(18,4)"
_LINEAGE = ("batch_id string", "source_file string", "ingested_at timestamp", "record_id string")
_HASH = "_row_hash bigint"
_BRONZE_META_TYPES = {"_ingested_at": "timestamp"}

# ------------------------------------------------------------------------------------ Bronze

_BRONZE = tuple(
    _batch(
        "bronze",
        source.name,
        ("_record_id",),
        f"bronze.{source.name}",
        *[f"{c} string" for c in source.columns],
        *[f"{c} {_BRONZE_META_TYPES.get(c, 'string')}" for c in BRONZE_META],
        doc=f"landing/{source.name} as raw strings plus lineage, append-only",
        stats=("_source_file", "_raw"),
    )
    for source in SOURCES.values()
)

_BRONZE_STATE = Table(
    "bronze",
    "_ingested_files",
    ("source", "file", "run_id"),
    _cols(
        "source string",
        "file string",
        "batch_id string",
        "size_bytes bigint",
        "modified_at timestamp",
        "rows bigint",
        "unparseable_rows bigint",
        "missing_columns array<string>",
        "extra_columns array<string>",
        "status string",
        "error string",
        "run_id string",
        "ingested_at timestamp",
    ),
    "bookkeeping",
    (RUNNER,),
    "the ingest log: which landing files were read (rows deferred by the Bronze steps)",
)

_BRONZE_LIVE = Table(
    "bronze",
    "order_events",
    ("_record_id",),
    _cols(
        "value string",
        "key string",
        "topic string",
        "partition int",
        "offset bigint",
        "kafka_timestamp timestamp",
        "source_file string",
        "event_id string",
        "_record_id string",
        "_batch_id string",
        "_ingested_at timestamp",
    ),
    "live",
    (LIVE,),
    "every raw record of the live stream",
)

# ------------------------------------------------------------------------------------ Silver

# The attributes a source table and its dimension share.
_PRODUCT = (
    "product_id string",
    "name string",
    "category string",
    "subcategory string",
    "brand string",
    f"list_price {PRICE}",
    f"unit_cost {PRICE}",
    "is_active boolean",
)
_CUSTOMER = (
    "customer_id string",
    "name string",
    "email string",
    "signup_date date",
    "country string",
    "city string",
    "segment string",
)

_SILVER = (
    _batch(
        "silver",
        "orders",
        ("order_id",),
        "silver.orders",
        "order_id string",
        "customer_id string",
        "order_ts timestamp",
        "order_date date",
        "status string",
        "channel string",
        "payment_method string",
        "country string",
        "updated_at timestamp",
        *_LINEAGE,
        _HASH,
    ),
    _batch(
        "silver",
        "order_items",
        ("order_id", "line_no"),
        "silver.order_items",
        "order_id string",
        "line_no int",
        "product_id string",
        "quantity int",
        f"unit_price {PRICE}",
        "discount_pct decimal(9,4)",
        *_LINEAGE,
        _HASH,
    ),
    _batch(
        "silver",
        "customers",
        ("customer_id",),
        "silver.customers",
        *_CUSTOMER,
        "updated_at timestamp",
        *_LINEAGE,
        _HASH,
    ),
    _batch(
        "silver",
        "products",
        ("product_id",),
        "silver.products",
        *_PRODUCT,
        "updated_at timestamp",
        *_LINEAGE,
        _HASH,
    ),
    _batch(
        "silver",
        "dim_customer",
        ("customer_id", "valid_from"),
        "silver.customers",
        *_CUSTOMER,
        "valid_from timestamp",
        "valid_to timestamp",
        "batch_id string",
        "is_current boolean",
        doc="SCD type 2",
    ),
    _batch(
        "silver",
        "dim_product",
        ("product_id",),
        "silver.products",
        *_PRODUCT,
        doc="current version of each product plus the unknown member (cost null)",
    ),
    _batch(
        "silver",
        "fact_sales",
        ("order_id", "line_no"),
        "silver.fact_sales",
        "order_id string",
        "line_no int",
        "order_date date",
        "order_ts timestamp",
        "status string",
        "is_revenue_bearing boolean",
        "customer_id string",
        "customer_key string",
        "product_id string",
        "product_key string",
        "product_name string",
        "category string",
        "channel string",
        "country string",
        "quantity int",
        f"unit_price {PRICE}",
        "discount_pct decimal(9,4)",
        f"line_gross {MONEY}",
        f"line_net {MONEY}",
        f"line_cost {MONEY}",
        "first_in_category boolean",
        "first_for_product boolean",
        doc="one row per order line, with net revenue and cost",
    ),
    _batch(
        "silver",
        "dim_date",
        ("date",),
        "silver.fact_sales",
        "date date",
        "year int",
        "quarter int",
        "month int",
        "day int",
        "day_name string",
        "day_of_week int",
        "is_weekend boolean",
        "week_start date",
        "month_start date",
        by_calendar=True,
    ),
)

_SILVER_STATE = (
    Table(
        "silver",
        "_refine_state",
        ("source_table", "run_id"),
        _cols(
            "source_table string",
            "run_id string",
            "mode string",
            "files array<string>",
            "upstream_files array<string>",
            "counts map<string,bigint>",
            "fingerprint string",
            "refined_at timestamp",
            "versions map<string,bigint>",
        ),
        "bookkeeping",
        (RUNNER,),
        "one row per refine or build: the files it read, its counts, the versions it saw",
    ),
    Table(
        "silver",
        "_touched_keys",
        ("source_table", "run_id", "key"),
        _cols("source_table string", "run_id string", "key string"),
        "bookkeeping",
        (RUNNER,),
        "which keys a refine changed (key null: all of them)",
    ),
)

_QUARANTINE = Table(
    "silver",
    "quarantine",
    ("source_table", "record_id"),
    _cols(
        "source_table string",
        "record_key string",
        "rules array<string>",
        "raw_record string",
        "batch_id string",
        "quarantined_at timestamp",
        "source_file string",
        "record_id string",
        _HASH,
    ),
    "shared",
    (*(f"silver.{s}" for s in SOURCES), LIVE),
    "records that failed a quarantine rule, with the rule names; partitioned by source_table",
    stats=("record_id",),  # a partition column has no file statistics
)

_SILVER_LIVE = Table(
    "silver",
    "order_events",
    ("event_id",),
    _cols(
        "event_id string",
        "order_id string",
        "customer_id string",
        "event_ts timestamp",
        "window_start timestamp",
        "status string",
        "is_revenue boolean",
        "channel string",
        "country string",
        "lines int",
        "units bigint",
        f"net_revenue {MONEY}",
        "_record_id string",
        "_batch_id string",
        "_ingested_at timestamp",
    ),
    "live",
    (LIVE,),
    "first delivery of each valid event (also the stream's dedup state)",
)

# -------------------------------------------------------------------------------------- Gold

_GOLD = (
    _batch(
        "gold",
        "daily_sales",
        ("order_date",),
        "gold.daily_sales",
        "order_date date",
        "orders bigint",
        "units bigint",
        f"gross_revenue {MONEY}",
        f"net_revenue {MONEY}",
        f"avg_order_value {MONEY}",
        "customers bigint",
        "new_customers bigint",
        "cancelled_orders bigint",
        "returned_orders bigint",
        by_calendar=True,
    ),
    _batch(
        "gold",
        "category_sales",
        ("month", "category"),
        "gold.category_sales",
        "month date",
        "category string",
        "orders bigint",
        "units bigint",
        f"net_revenue {MONEY}",
        f"gross_margin {MONEY}",
        "revenue_share double",
        by_calendar=True,
    ),
    _batch(
        "gold",
        "customer_rfm",
        ("customer_id",),
        "gold.customer_rfm",
        "customer_id string",
        "last_order_date date",
        "recency_days int",
        "frequency bigint",
        f"monetary {MONEY}",
        "r_score int",
        "f_score int",
        "m_score int",
        "rfm_segment string",
        "as_of_date date",
    ),
    _batch(
        "gold",
        "revenue_anomalies",
        ("order_date",),
        "gold.revenue_anomalies",
        "order_date date",
        f"net_revenue {MONEY}",
        f"expected_revenue {MONEY}",
        f"lower_bound {MONEY}",
        f"upper_bound {MONEY}",
        "score double",
        "is_anomaly boolean",
        "direction string",
        by_calendar=True,
    ),
)

# The Sales page's filterable Gold (pipeline/gold/sales_cells.py): a step each.
_SALES = (
    _batch(
        "gold",
        "sales_cells",
        ("order_date", "category", "country", "channel", "status"),
        "gold.sales_cells",
        "order_date date",
        "category string",
        "country string",
        "channel string",
        "status string",
        "is_revenue_bearing boolean",
        "orders bigint",
        "units bigint",
        f"gross_revenue {MONEY}",
        f"net_revenue {MONEY}",
        f"cost {MONEY}",
        f"costed_net_revenue {MONEY}",
        "lines bigint",
    ),
    _batch(
        "gold",
        "sales_orders",
        ("order_date", "country", "channel", "status", "categories"),
        "gold.sales_orders",
        "order_date date",
        "country string",
        "channel string",
        "status string",
        "categories array<string>",
        "is_revenue_bearing boolean",
        "orders bigint",
    ),
    _batch(
        "gold",
        "product_sales",
        ("order_date", "product_id", "country", "channel", "status"),
        "gold.product_sales",
        "order_date date",
        "product_id string",
        "product_name string",
        "category string",
        "country string",
        "channel string",
        "status string",
        "orders bigint",
        "units bigint",
        f"net_revenue {MONEY}",
        f"cost {MONEY}",
        f"costed_net_revenue {MONEY}",
    ),
)

_RUN_RECORDS = (
    Table(
        "gold",
        "dq_results",
        ("run_id", "layer", "table", "rule"),
        _cols(
            "run_id string",
            "layer string",
            "table string",
            "rule string",
            "action string",
            "rows_checked bigint",
            "rows_failed bigint",
            "pass_rate double",
            "checked_at timestamp",
        ),
        "history",
        (RUNNER, LIVE),
        "each rule's counts per run (batch) and per micro-batch (live)",
    ),
    Table(
        "gold",
        "pipeline_runs",
        ("run_id", "step"),
        _cols(
            "run_id string",
            "step string",
            "started_at timestamp",
            "finished_at timestamp",
            "status string",
            "rows_in bigint",
            "rows_out bigint",
            "rows_quarantined bigint",
            "error string",
            "reconciliation map<string,bigint>",
        ),
        "history",
        (RUNNER,),
        "one row per step and run; reconciliation = the step's fate counters",
    ),
)

_GOLD_LIVE = (
    Table(
        "gold",
        "live_sales_minute",
        ("window_start",),
        _cols(
            "window_start timestamp",
            "window_end timestamp",
            "orders bigint",
            "units bigint",
            f"net_revenue {MONEY}",
            f"avg_order_value {MONEY}",
        ),
        "live",
        (LIVE,),
        "1-minute tumbling windows of the live stream",
    ),
    Table(
        "gold",
        "live_alerts",
        ("window_start", "metric", "kind"),
        _cols(
            "window_start timestamp",
            "metric string",
            "value double",
            "baseline double",
            "z_score double",
            "kind string",
        ),
        "live",
        (LIVE,),
        "minutes whose orders or revenue left their trailing baseline",
    ),
)

CATALOG: tuple[Table, ...] = (
    *_BRONZE,
    _BRONZE_STATE,
    _BRONZE_LIVE,
    *_SILVER[:4],
    _QUARANTINE,
    *_SILVER[4:],
    *_SILVER_STATE,
    _SILVER_LIVE,
    *_GOLD,
    *_SALES,
    *_RUN_RECORDS,
    *_GOLD_LIVE,
)

_BY_KEY: dict[tuple[str, str], Table] = {t.key: t for t in CATALOG}
assert len(_BY_KEY) == len(CATALOG), "a table is declared twice"


class UnknownTableError(KeyError):
    """A table that the catalog does not declare."""


# --------------------------------------------------------------------------------- look-ups


def table(layer: str, name: str) -> Table:
    try:
        return _BY_KEY[(layer, name)]
    except KeyError:
        raise UnknownTableError(f"unknown table {layer}.{name}") from None


def table_of(ref: str) -> Table:
    """The table named ``layer.name``."""
    layer, _, name = ref.partition(".")
    return table(layer, name)


def ref(layer: str, name: str) -> str:
    """``layer.name`` of a declared table (a misspelt name fails on import, not at run time)."""
    return table(layer, name).ref


def refs(*names: str) -> tuple[str, ...]:
    """Step inputs/outputs: each ``layer.name`` checked against the catalog."""
    return tuple(table_of(name).ref for name in names)


def tables(layer: str | None = None, kind: str | Iterable[str] | None = None) -> list[Table]:
    """Declared tables in catalog order (Bronze, Silver, Gold), optionally of one layer/kind."""
    kinds = (kind,) if isinstance(kind, str) else tuple(kind) if kind is not None else KINDS
    return [t for t in CATALOG if (layer is None or t.layer == layer) and t.kind in kinds]


def columns(layer: str, name: str, *, internal: bool = True) -> tuple[str, ...]:
    """The table's column names; ``internal=False`` leaves out machine ids and hashes."""
    found = table(layer, name)
    return found.names if internal else found.public


def outputs_of(step: str) -> tuple[str, ...]:
    """The tables a step writes (its Step.outputs), as ``layer.name``."""
    refs = tuple(t.ref for t in CATALOG if t.kind == "batch" and t.writers == (step,))
    if not refs:
        raise UnknownTableError(f"the catalog has no table written by step {step}")
    return refs


# ---------------------------------------------------------------------------------- schemas


def _split_top(text: str) -> list[str]:
    """``a,map<b,c>`` -> [a, map<b,c>]: commas outside angle brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"<": 1, ">": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _parse(name: str, simple: dict[str, Any], decimal: Any, array: Any, mapping: Any) -> Any:
    """A catalog type name as one engine's type, given that engine's constructors."""
    if name in simple:
        return simple[name]
    if name.startswith("decimal("):
        precision, scale = name[len("decimal(") : -1].split(",")
        return decimal(int(precision), int(scale))
    if name.startswith("array<"):
        return array(_parse(name[len("array<") : -1], simple, decimal, array, mapping))
    if name.startswith("map<"):
        key, value = _split_top(name[len("map<") : -1])
        parts = [_parse(part, simple, decimal, array, mapping) for part in (key, value)]
        return mapping(*parts)
    raise ValueError(f"unknown column type {name!r}")


def _spark_type(name: str) -> Any:
    from pyspark.sql import types as T

    simple = {
        "string": T.StringType(),
        "int": T.IntegerType(),
        "bigint": T.LongType(),
        "double": T.DoubleType(),
        "boolean": T.BooleanType(),
        "date": T.DateType(),
        "timestamp": T.TimestampType(),
    }
    return _parse(name, simple, T.DecimalType, T.ArrayType, T.MapType)


def _arrow_type(name: str) -> Any:
    import pyarrow as pa

    simple = {
        "string": pa.string(),
        "int": pa.int32(),
        "bigint": pa.int64(),
        "double": pa.float64(),
        "boolean": pa.bool_(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }
    return _parse(name, simple, pa.decimal128, pa.list_, pa.map_)


def spark_schema(layer: str, name: str) -> Any:
    """The table's columns as a Spark StructType (every field nullable, as Spark writes them)."""
    from pyspark.sql import types as T

    return T.StructType(
        [T.StructField(c.name, _spark_type(c.type)) for c in table(layer, name).columns]
    )


def arrow_schema(layer: str, name: str) -> Any:
    """The table's columns as pyarrow types (timestamps: UTC microseconds, as Delta stores them)."""
    import pyarrow as pa

    return pa.schema([(c.name, _arrow_type(c.type)) for c in table(layer, name).columns])
