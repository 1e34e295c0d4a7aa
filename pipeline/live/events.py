"""Live order events as pure DataFrame transformations (docs/contract.md §5 and §6).

Long (~460 lines) on purpose: every rule of a live event lives here, beside the
others, so the stream, the crash tests and the contract cite one file.

parse_events   raw value -> typed columns (the contract schema, every field read as text
               first so the section 3 rules decide, not the JSON parser)
EXPECTATIONS   the validity rules of 'Live windows', run by pipeline.quality.expectations
event_totals   one row per valid event: its minute, units and net revenue (items exploded
               to lines with line_net); event_total_columns the same as expressions
minute_totals  minute_sales over an Arrow table of stored events (the stream's form)
minute_sales   the per-window aggregation of gold.live_sales_minute
minute_alerts  z-score and no-orders alerts over a zero-filled series of minutes

Nothing here reads or writes a table, so the stream, the tests and a batch
backfill share the same definitions.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal, localcontext

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from pipeline.quality.expectations import Expectation
from pipeline.silver.normalise import (
    MIN_TS,
    REVENUE_STATUSES,
    line_net,
    normalise_status,
    parse_decimal,
    parse_int,
    parse_timestamp,
)

WINDOW = "1 minute"
WINDOW_MICROS = 60_000_000
WATERMARK_SECONDS = 120
MAX_QUANTITY = 1000
MAX_UNIT_PRICE = 100000
Z_THRESHOLD = 3.0
BASELINE_MINUTES = 60
MIN_BASELINE_MINUTES = 10
NO_ORDER_MINUTES = 5
MONEY = T.DecimalType(18, 2)
_ARROW_MONEY = pa.decimal128(18, 2)
_CENT = Decimal("0.01")

# Every scalar is read as text: Spark keeps a JSON number's own text in a string
# field, so `2.5` stays "2.5" and the quantity rule (an integer) can reject it.
ITEM_SCHEMA = T.StructType(
    [
        T.StructField("product_id", T.StringType()),
        T.StructField("quantity", T.StringType()),
        T.StructField("unit_price", T.StringType()),
        T.StructField("discount_pct", T.StringType()),
    ]
)
EVENT_SCHEMA = T.StructType(
    [
        T.StructField("event_id", T.StringType()),
        T.StructField("order_id", T.StringType()),
        T.StructField("customer_id", T.StringType()),
        T.StructField("event_ts", T.StringType()),
        T.StructField("status", T.StringType()),
        T.StructField("channel", T.StringType()),
        T.StructField("country", T.StringType()),
        T.StructField("items", T.ArrayType(ITEM_SCHEMA)),
    ]
)

PARSED_COLUMNS = [
    "event_id",
    "order_id",
    "customer_id",
    "_event_ts",
    "_status",
    "channel",
    "country",
    "_items",
]


def _well_formed(condition: str) -> str:
    """A rule about a field is moot when the value is not JSON at all."""
    return f"(NOT _json_ok) OR ({condition})"


_HAS_ITEMS = "coalesce(size(_items), 0) >= 1"


def _each_item(condition: str) -> str:
    """Item rules judge every item; an event without items fails `no_items` only."""
    return _well_formed(f"NOT ({_HAS_ITEMS}) OR forall(_items, i -> {condition})")


EXPECTATIONS: list[Expectation] = [
    Expectation("malformed_record", "_json_ok", "quarantine", "the value is a JSON object"),
    Expectation(
        "missing_event_id",
        _well_formed("event_id IS NOT NULL AND trim(event_id) <> ''"),
        "quarantine",
        "event_id present",
    ),
    Expectation(
        "missing_order_id",
        _well_formed("order_id IS NOT NULL AND trim(order_id) <> ''"),
        "quarantine",
        "order_id present",
    ),
    Expectation(
        "invalid_event_ts",
        _well_formed("_event_ts IS NOT NULL"),
        "quarantine",
        "event_ts parses (section 3 formats)",
    ),
    Expectation(
        "event_ts_out_of_range",
        _well_formed(
            f"_event_ts IS NULL OR (_event_ts >= TIMESTAMP '{MIN_TS}' "
            "AND _event_ts <= _ingested_at + INTERVAL 1 DAY)"
        ),
        "quarantine",
        "event_ts not before 2000 nor more than a day after ingestion",
    ),
    Expectation(
        "invalid_status",
        _well_formed("_status IS NOT NULL"),
        "quarantine",
        "status normalises (section 3)",
    ),
    Expectation("no_items", _well_formed(_HAS_ITEMS), "quarantine", "at least one item"),
    Expectation(
        "invalid_quantity",
        _each_item(f"i.quantity BETWEEN 1 AND {MAX_QUANTITY}"),
        "quarantine",
        f"every quantity an integer 1..{MAX_QUANTITY}",
    ),
    Expectation(
        "invalid_unit_price",
        _each_item(f"i.unit_price > 0 AND i.unit_price <= {MAX_UNIT_PRICE}"),
        "quarantine",
        f"every unit_price > 0 and <= {MAX_UNIT_PRICE}",
    ),
    Expectation(
        "invalid_discount",
        _each_item("i.discount_pct BETWEEN 0 AND 100"),
        "quarantine",
        "every discount_pct 0..100 (missing means 0)",
    ),
]


def _typed_item(item: Column) -> Column:
    raw_discount = F.trim(item["discount_pct"])
    discount = F.when(raw_discount.isNull() | (raw_discount == ""), F.lit("0")).otherwise(
        raw_discount
    )
    return F.struct(
        item["product_id"].alias("product_id"),
        parse_int(item["quantity"]).alias("quantity"),
        parse_decimal(item["unit_price"], 18, 4).alias("unit_price"),
        parse_decimal(discount, 9, 4).alias("discount_pct"),
    )


def parse_columns(columns: list[str]) -> tuple[list[Column], list[Column]]:
    """parse_events' two projections, over a frame with `columns` and `value`.

    Built apart so that the stream makes them once: building these
    expressions costs over a thousand Py4J calls, more than a small
    micro-batch's own work.
    """
    value = F.col("value")
    json_ok = F.coalesce(
        F.ltrim(value).startswith("{") & F.try_parse_json(value).isNotNull(), F.lit(False)
    )
    parsed = F.from_json(value, EVENT_SCHEMA)
    first = [F.col("*"), json_ok.alias("_json_ok"), parsed.alias("_event")]
    second = [
        *[F.col(c) for c in columns],
        F.col("_json_ok"),
        F.col("_event.event_id").alias("event_id"),
        F.col("_event.order_id").alias("order_id"),
        F.col("_event.customer_id").alias("customer_id"),
        F.col("_event.event_ts").alias("event_ts_raw"),
        parse_timestamp(F.col("_event.event_ts")).alias("_event_ts"),
        F.col("_event.status").alias("status_raw"),
        normalise_status(F.col("_event.status")).alias("_status"),
        F.col("_event.channel").alias("channel"),
        F.col("_event.country").alias("country"),
        F.transform(F.col("_event.items"), _typed_item).alias("_items"),
    ]
    return first, second


def parse_events(raw: DataFrame) -> DataFrame:
    """Add the typed event columns to raw rows holding `value` (text) and `_ingested_at`."""
    first, second = parse_columns(raw.columns)
    return raw.select(*first).select(*second)


def event_id_of(value: Column) -> Column:
    """event_id straight from the raw text, for Bronze (no schema, never fails)."""
    return F.get_json_object(value, "$.event_id")


def first_per_event(valid: DataFrame, order: list[str]) -> tuple[DataFrame, DataFrame]:
    """Split valid events into the first delivery of each event_id and the repeats."""
    ranked = valid.withColumn(
        "_delivery",
        F.row_number().over(
            Window.partitionBy("event_id").orderBy(*[F.col(c).asc_nulls_last() for c in order])
        ),
    )
    first = ranked.filter(F.col("_delivery") == 1).drop("_delivery")
    repeats = ranked.filter(F.col("_delivery") > 1).drop("_delivery")
    return first, repeats


def event_lines(valid: DataFrame) -> DataFrame:
    """One row per item of a valid event, with its line_net (section 4 definition)."""
    return valid.select(
        F.col("event_id"), F.posexplode(F.col("_items")).alias("line_no", "item")
    ).select(
        F.col("event_id"),
        (F.col("line_no") + 1).alias("line_no"),
        F.col("item.product_id").alias("product_id"),
        F.col("item.quantity").alias("quantity"),
        F.col("item.unit_price").alias("unit_price"),
        F.col("item.discount_pct").alias("discount_pct"),
        line_net(
            F.col("item.quantity"), F.col("item.unit_price"), F.col("item.discount_pct")
        ).alias("line_net"),
    )


def minute_start(ts: Column) -> Column:
    """The start of the 1-minute tumbling window holding `ts` (F.window's start).

    F.window cannot serve here: Spark rewrites it with a filter that drops
    every row whose time is null, and the stream computes the totals in the
    same pass as Bronze and the quarantine, where such rows must stay.
    """
    micros = F.unix_micros(ts)
    return F.timestamp_micros(micros - F.pmod(micros, F.lit(WINDOW_MICROS)))


def event_total_columns(keep: list[str] | None = None) -> dict[str, Column]:
    """event_totals' columns by name, as expressions over parse_events' columns.

    The stream computes them in the same pass as the rules (guarded by
    validity), so that a micro-batch is one Spark job; event_totals applies them.
    """
    nets = F.transform(
        F.col("_items"),
        lambda i: line_net(i["quantity"], i["unit_price"], i["discount_pct"]),
    )
    net_revenue = F.aggregate(nets, F.lit(0).cast(MONEY), lambda acc, x: (acc + x).cast(MONEY))
    units = F.aggregate(
        F.transform(F.col("_items"), lambda i: i["quantity"].cast("long")),
        F.lit(0).cast("long"),
        lambda acc, x: acc + x,
    )
    return {
        "event_id": F.col("event_id"),
        "order_id": F.col("order_id"),
        "customer_id": F.col("customer_id"),
        "event_ts": F.col("_event_ts"),
        "window_start": minute_start(F.col("_event_ts")),
        "status": F.col("_status"),
        "is_revenue": F.col("_status").isin(*REVENUE_STATUSES),
        "channel": F.col("channel"),
        "country": F.col("country"),
        "lines": F.size(F.col("_items")),
        "units": units,
        "net_revenue": net_revenue,
        **{c: F.col(c) for c in keep or []},
    }


def event_totals(valid: DataFrame, keep: list[str] | None = None) -> DataFrame:
    """One row per valid event: who, when, its minute window, units and net revenue.

    The totals are the sums of event_lines' quantity and line_net, computed
    inside each row with array functions (the same line_net expression), so a
    micro-batch needs no shuffle to total its events. `keep` names lineage
    columns of `valid` to carry along (record id, batch).
    """
    return valid.select(*[c.alias(name) for name, c in event_total_columns(keep).items()])


def minute_sales(events: DataFrame) -> DataFrame:
    """gold.live_sales_minute rows from distinct valid events (event_totals' shape).

    orders counts revenue-bearing events; units and net_revenue sum theirs; a
    minute with only pending/cancelled/returned events has orders 0 and a null
    average.
    """
    revenue = F.col("is_revenue")
    agg = events.groupBy("window_start").agg(
        F.sum(revenue.cast("long")).alias("orders"),
        F.sum(F.when(revenue, F.col("units")).otherwise(F.lit(0))).cast("long").alias("units"),
        F.coalesce(F.sum(F.when(revenue, F.col("net_revenue"))), F.lit(0).cast(MONEY))
        .cast(MONEY)
        .alias("net_revenue"),
    )
    return agg.select(
        F.col("window_start"),
        (F.col("window_start") + F.expr(f"INTERVAL {WINDOW}")).alias("window_end"),
        F.col("orders"),
        F.col("units"),
        F.col("net_revenue"),
        F.when(F.col("orders") > 0, F.round(F.col("net_revenue") / F.col("orders"), 2))
        .cast(MONEY)
        .alias("avg_order_value"),
    )


def minute_totals(events: pa.Table) -> pa.Table:
    """minute_sales over an Arrow table of distinct valid events, without a Spark job.

    The same definitions as minute_sales, for the stream, which recomputes a
    few minutes per micro-batch and would pay more for a Spark job's start than
    for the sums: Arrow's decimal sums are exact, and avg_order_value is the
    exact quotient rounded half up to cents. Spark's decimal division keeps 22
    digits before its round, so the two agree for any realistic order count.
    """
    if events.num_rows == 0:
        return pa.table(
            {
                "window_start": pa.array([], pa.timestamp("us", tz="UTC")),
                "window_end": pa.array([], pa.timestamp("us", tz="UTC")),
                "orders": pa.array([], pa.int64()),
                "units": pa.array([], pa.int64()),
                "net_revenue": pa.array([], _ARROW_MONEY),
                "avg_order_value": pa.array([], _ARROW_MONEY),
            }
        )
    revenue = pc.fill_null(events["is_revenue"], False)
    frame = pa.table(
        {
            "window_start": events["window_start"],
            "orders": pc.cast(revenue, pa.int64()),
            "units": pc.if_else(revenue, pc.cast(events["units"], pa.int64()), 0),
            "net_revenue": pc.if_else(
                revenue, events["net_revenue"], pa.scalar(None, events["net_revenue"].type)
            ),
        }
    )
    grouped = (
        frame.group_by("window_start", use_threads=False)
        .aggregate([("orders", "sum"), ("units", "sum"), ("net_revenue", "sum")])
        .sort_by("window_start")
    )
    orders = grouped["orders_sum"].cast(pa.int64())
    nets = pc.fill_null(grouped["net_revenue_sum"], pa.scalar(Decimal(0), _ARROW_MONEY))
    nets = nets.cast(_ARROW_MONEY)  # raises on overflow, as Spark's ANSI cast does
    with localcontext() as exact:
        exact.prec = 60  # the quotient exact to far below a cent before the one rounding
        averages = [
            (net / count).quantize(_CENT, rounding=ROUND_HALF_UP) if count else None
            for net, count in zip(nets.to_pylist(), orders.to_pylist(), strict=True)
        ]
    starts = grouped["window_start"]
    return pa.table(
        {
            "window_start": starts,
            "window_end": pc.add(starts, pa.scalar(dt.timedelta(minutes=1), pa.duration("us"))),
            "orders": orders,
            "units": grouped["units_sum"].cast(pa.int64()),
            "net_revenue": nets,
            "avg_order_value": pa.array(averages, _ARROW_MONEY),
        }
    )


def zero_filled(minutes: DataFrame, first: Column, last: Column) -> DataFrame:
    """Every minute from `first` to `last` (literal timestamps), missing minutes as 0."""
    spine = minutes.sparkSession.range(1).select(
        F.explode(F.sequence(first, last, F.expr("INTERVAL 1 MINUTE"))).alias("window_start")
    )
    return spine.join(minutes, on="window_start", how="left").select(
        F.col("window_start"),
        F.coalesce(F.col("orders"), F.lit(0)).cast("long").alias("orders"),
        F.coalesce(F.col("net_revenue"), F.lit(0).cast(MONEY)).cast(MONEY).alias("net_revenue"),
    )


def minute_alerts(
    series: DataFrame,
    evaluate_from: Column,
    z_threshold: float = Z_THRESHOLD,
    baseline_minutes: int = BASELINE_MINUTES,
    min_baseline: int = MIN_BASELINE_MINUTES,
    no_order_minutes: int = NO_ORDER_MINUTES,
) -> DataFrame:
    """gold.live_alerts rows for the minutes of `series` at or after `evaluate_from`.

    `series` is zero-filled and starts at least `baseline_minutes` before
    `evaluate_from` (or at the first minute ever). A metric alerts when its
    |z| against the trailing hour (mean, sample std of the minutes before,
    at least `min_baseline` of them) exceeds the threshold; 'no_orders' fires
    once, on the minute that completes `no_order_minutes` minutes without an
    order after a minute with orders.
    """
    ordered = Window.orderBy("window_start")
    trailing = ordered.rowsBetween(-baseline_minutes, -1)
    recent = ordered.rowsBetween(-(no_order_minutes - 1), 0)
    stats = series.select(
        "*",
        F.count(F.lit(1)).over(trailing).alias("_n"),
        F.avg(F.col("orders").cast("double")).over(trailing).alias("_orders_mean"),
        F.stddev_samp(F.col("orders").cast("double")).over(trailing).alias("_orders_std"),
        F.avg(F.col("net_revenue").cast("double")).over(trailing).alias("_revenue_mean"),
        F.stddev_samp(F.col("net_revenue").cast("double")).over(trailing).alias("_revenue_std"),
        F.max("orders").over(recent).alias("_recent_max_orders"),
        F.lag("orders", no_order_minutes).over(ordered).alias("_orders_before_gap"),
    ).filter(F.col("window_start") >= evaluate_from)

    def z_alerts(metric: str, value: Column, mean: str, std: str) -> DataFrame:
        z = F.when((F.col(std).isNotNull()) & (F.col(std) > 0), (value - F.col(mean)) / F.col(std))
        scored = stats.select(
            F.col("window_start"),
            F.lit(metric).alias("metric"),
            value.alias("value"),
            F.round(F.col(mean), 4).alias("baseline"),
            F.round(z, 4).alias("z_score"),
            F.col("_n"),
        )
        return scored.filter(
            (F.col("_n") >= min_baseline) & (F.abs(F.col("z_score")) > z_threshold)
        ).select(
            "window_start",
            "metric",
            "value",
            "baseline",
            "z_score",
            F.when(F.col("z_score") > 0, F.lit("spike")).otherwise(F.lit("drop")).alias("kind"),
        )

    revenue = z_alerts(
        "net_revenue", F.col("net_revenue").cast("double"), "_revenue_mean", "_revenue_std"
    )
    orders = z_alerts("orders", F.col("orders").cast("double"), "_orders_mean", "_orders_std")
    no_orders = stats.filter(
        (F.col("_recent_max_orders") == 0) & (F.col("_orders_before_gap") > 0)
    ).select(
        F.col("window_start"),
        F.lit("orders").alias("metric"),
        F.lit(0.0).alias("value"),
        F.round(F.col("_orders_mean"), 4).alias("baseline"),
        F.lit(None).cast("double").alias("z_score"),
        F.lit("no_orders").alias("kind"),
    )
    return revenue.unionByName(orders).unionByName(no_orders)
