"""gold.sales_cells, gold.sales_orders, gold.product_sales: the Sales page's filterable Gold.

The Sales page filters by dates, category, country, channel and status, and
shows totals, a trend, per-category/country/channel breakdowns, category shares
per month and top products. Instead of loading silver.fact_sales into the app
(docs/contract.md §1: the dashboard reads Gold only), Spark pre-aggregates
three tables whose rows the app only filters and sums:

- ``sales_cells`` (order_date x category x country x channel x status): lines
  summed per cell. Money, units and cost come from revenue-bearing lines only
  (other statuses carry zeros and a null cost, so they still count their
  ``orders`` and ``lines``). ``orders`` = distinct orders with at least one
  line in the cell's category; every order has one date, country, channel and
  status, so summing ``orders`` over those dimensions is exact, but not over
  several categories (an order may span them): that is what sales_orders is for.
- ``sales_orders`` (order_date x country x channel x status x ``categories``):
  orders counted per the sorted set of categories they have lines in (empty for
  an order whose items were all quarantined). Filtering by a category selection
  keeps the rows whose set overlaps it, so distinct order counts are exact for
  any selection; without a category filter every order counts, as in
  gold.daily_sales (orders with or without valid items).
- ``product_sales`` (order_date x product x country x channel x status,
  revenue-bearing lines only): for top products; product_name and category are
  the product's current ones (as in fact_sales), so they do not split the grain.

Each builder groups by the table's grain alone and returns ``grain.CONFLICT``
beside its columns: the keys whose dependent columns (``is_revenue_bearing``)
disagree, which the grain rule counts and the step drops before writing
(pipeline/gold/grain.py). product_sales checks its names per product: a
product whose lines disagree on ``product_name`` or ``category`` marks every
row of that product, so the rule fails wherever grouping with the names would
have split a key (and also when the lines disagree on different days, which
fact_sales' current names never do).

Margin follows docs/contract.md §5: ``cost`` sums the line costs that are known
and ``costed_net_revenue`` the net revenue of those same lines, both null when
no line of the cell has a known cost; margin = costed_net_revenue - cost, null
when none is known. Null country or channel become ``Unknown``, like a null
category, so that every order can be selected. ``is_revenue_bearing`` (a
function of status) is carried so the app never needs its own list of
revenue-bearing statuses.

Size, measured on tests/pages_support.py's 1,000,000-order synthetic lake (2.5M
lines spread evenly over 730 days, 10 categories, 8 countries, 4 channels, 6
statuses: a pessimistic spread): sales_cells 0.83M rows, sales_orders 0.92M
(little below one row per order: the category set splits most cells),
product_sales 1.97M; reading them raised the app's peak memory from 120 MB to
about 700 MB (strings as categoricals; BENCHMARKS.md, "The app's own memory"),
in about 4 s once per run, in the background (pipeline/read.py:prefetch_sales).
A real shop's skew (a few countries and channels carry most orders) makes them
smaller.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipeline.contract import UNKNOWN_CATEGORY
from pipeline.gold.grain import CONFLICT, by_grain
from pipeline.silver.normalise import REVENUE_STATUSES

MONEY = "decimal(18,2)"
CELL_GRAIN = ["order_date", "category", "country", "channel", "status"]
ORDER_GRAIN = ["order_date", "country", "channel", "status", "categories"]
PRODUCT_GRAIN = ["order_date", "product_id", "country", "channel", "status"]


def _known(name: str) -> Column:
    """A dimension value, `Unknown` when missing, so a filter can still pick it."""
    return F.coalesce(F.col(name), F.lit(UNKNOWN_CATEGORY)).alias(name)


def distinct_orders(first_line: str) -> Column:
    """Distinct orders of a cell, as the count of the lines that stand for their order
    (silver.fact_sales' ``first_in_category`` / ``first_for_product``): exact, since a
    cell holds all of an order's lines of its category (or product) or none, and
    2-3x cheaper than counting distinct order ids at 1,000,000 orders."""
    return F.count(F.when(F.col(first_line), F.lit(1))).alias("orders")


def _money_sums(revenue: Column) -> list[Column]:
    """Units, revenue and known-cost sums over the lines for which `revenue` holds."""
    costed = revenue & F.col("line_cost").isNotNull()
    return [
        F.sum(F.when(revenue, F.col("quantity"))).alias("units"),
        F.sum(F.when(revenue, F.col("line_gross"))).alias("gross_revenue"),
        F.sum(F.when(revenue, F.col("line_net"))).alias("net_revenue"),
        F.sum(F.when(costed, F.col("line_cost"))).alias("cost"),
        F.sum(F.when(costed, F.col("line_net"))).alias("costed_net_revenue"),
    ]


def build_cells(fact_sales: DataFrame) -> DataFrame:
    """Lines per day x category x country x channel x status (see the module docstring)."""
    lines = fact_sales.select(
        F.col("order_date"),
        _known("category"),
        _known("country"),
        _known("channel"),
        F.col("status"),
        F.col("first_in_category"),
        F.col("is_revenue_bearing"),
        F.col("quantity"),
        F.col("line_gross"),
        F.col("line_net"),
        F.col("line_cost"),
    )
    cells = by_grain(
        lines,
        CELL_GRAIN,
        ["is_revenue_bearing"],
        distinct_orders("first_in_category"),
        *_money_sums(F.col("is_revenue_bearing")),
        F.count(F.lit(1)).alias("lines"),
    )
    return cells.select(
        *[F.col(c) for c in CELL_GRAIN],
        F.col("is_revenue_bearing"),
        F.col(CONFLICT),
        F.col("orders").cast("long").alias("orders"),
        F.coalesce(F.col("units"), F.lit(0)).cast("long").alias("units"),
        F.coalesce(F.col("gross_revenue"), F.lit(0)).cast(MONEY).alias("gross_revenue"),
        F.coalesce(F.col("net_revenue"), F.lit(0)).cast(MONEY).alias("net_revenue"),
        F.col("cost").cast(MONEY).alias("cost"),
        F.col("costed_net_revenue").cast(MONEY).alias("costed_net_revenue"),
        F.col("lines").cast("long").alias("lines"),
    )


def build_orders(orders: DataFrame, fact_sales: DataFrame) -> DataFrame:
    """Orders per day x country x channel x status x the set of categories they have lines in."""
    category_sets = (
        fact_sales.filter(F.col("first_in_category"))  # one line per order and category
        .groupBy("order_id")
        .agg(F.array_sort(F.collect_list(F.col("category"))).alias("category_set"))
    )
    order_rows = orders.select(
        F.col("order_id"),
        F.col("order_date"),
        _known("country"),
        _known("channel"),
        F.col("status"),
        F.col("status").isin(*REVENUE_STATUSES).alias("is_revenue_bearing"),
    )
    with_sets = order_rows.join(category_sets, on="order_id", how="left")
    no_category = F.array().cast("array<string>")
    keyed = with_sets.select(
        F.col("order_date"),
        F.col("country"),
        F.col("channel"),
        F.col("status"),
        F.col("is_revenue_bearing"),
        F.coalesce(F.col("category_set"), no_category).alias("categories"),
    )
    counted = by_grain(
        keyed, ORDER_GRAIN, ["is_revenue_bearing"], F.count(F.lit(1)).alias("orders")
    )
    return counted.select(
        *[F.col(c) for c in ORDER_GRAIN],
        F.col("is_revenue_bearing"),
        F.col(CONFLICT),
        F.col("orders").cast("long").alias("orders"),
    )


def build_products(fact_sales: DataFrame) -> DataFrame:
    """Revenue-bearing lines per day x product x country x channel x status."""
    lines = fact_sales.filter(F.col("is_revenue_bearing")).select(
        F.col("order_date"),
        F.col("product_id"),
        F.col("product_name"),
        _known("category"),
        _known("country"),
        _known("channel"),
        F.col("status"),
        F.col("first_for_product"),
        F.col("quantity"),
        F.col("line_gross"),
        F.col("line_net"),
        F.col("line_cost"),
    )
    # product_name and category depend on product_id alone (pipeline/gold/grain.py): they
    # are checked and taken per product (one row each: 5,000 at 1,000,000 orders), then
    # broadcast to the sums.
    # Carried through the grain's aggregation instead, their min and max doubled the
    # bytes it shuffles (1,000,000 orders, warm, noop sink: 6.8-7.8 s -> 5.4-7.3 s).
    names = by_grain(
        lines.select(F.col("product_id"), F.col("product_name"), F.col("category")),
        ["product_id"],
        ["product_name", "category"],
    )
    # The grain is nearly one group per line (2.08M groups from 2.6M lines at 1,000,000
    # orders, as a product sold on a day in one country and channel seldom sells twice):
    # a partial aggregation before the shuffle reduces nothing there and shuffles wider
    # buffers than the lines. Shuffled by the grain first, they are aggregated once
    # (warm, noop sink, five alternated passes: medians 10.12 -> 9.28 CPU s, the same
    # rows; sales_cells and sales_orders, whose groups are fewer, gained nothing).
    by_key = lines.repartition(*[F.col(c) for c in PRODUCT_GRAIN])
    sums = by_key.groupBy(*[F.col(c) for c in PRODUCT_GRAIN]).agg(
        distinct_orders("first_for_product"), *_money_sums(F.lit(True))
    )
    same_product = F.col("s.product_id").eqNullSafe(F.col("n.product_id"))
    per_product = sums.alias("s").join(F.broadcast(names.alias("n")), same_product, how="left")
    return per_product.select(
        F.col("s.order_date").alias("order_date"),
        F.col("s.product_id").alias("product_id"),
        F.col("n.product_name").alias("product_name"),
        F.col("n.category").alias("category"),
        F.col("s.country").alias("country"),
        F.col("s.channel").alias("channel"),
        F.col("s.status").alias("status"),
        F.col(f"n.{CONFLICT}").alias(CONFLICT),
        F.col("orders").cast("long").alias("orders"),
        F.col("units").cast("long").alias("units"),
        F.col("net_revenue").cast(MONEY).alias("net_revenue"),
        F.col("cost").cast(MONEY).alias("cost"),
        F.col("costed_net_revenue").cast(MONEY).alias("costed_net_revenue"),
    )
