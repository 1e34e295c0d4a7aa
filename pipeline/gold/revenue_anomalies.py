"""gold.revenue_anomalies: each day's net revenue against what its own history predicts.

docs/contract.md §5 judges the method by results (drops found as surely as
spikes, few false flags on dense and on sparse shops, weekly seasonality and
earlier anomalies harmless, no look-ahead). The method, for every calendar day
t from the first to the last order_date (days without sales count as 0), using
only days before t:

1. Seasonal norm M: the median net revenue of the same weekday over the
   previous ``WEEKS`` (8) weeks; at least ``MIN_WEEKS`` (4) of them, else no
   expectation. A median of 8 ignores up to 3 odd weeks, so a spike or an
   outage does not move next week's expectation, and Saturdays are compared
   with Saturdays (weekly seasonality is expected, not flagged).
2. Order unit c: the median average order value (net revenue / orders) of the
   previous ``UNIT_DAYS`` (28) days, at least one cent. Revenue is compared on
   the scale ln(revenue + c): for a dense shop that is the plain log ratio; for
   a shop of a few orders a day one order more or less is a modest step, and a
   day without sales is not infinitely far from normal (the band's floor for
   tiny volumes).
3. Level: the median residual ln(x + c) - ln(M + c) of the previous
   ``LEVEL_DAYS`` (14) days, so a holiday season or a growth spurt moves the
   expectation within two weeks instead of eight; a median, so up to 6 odd
   days of those 14 do not move it. expected_revenue E = (M + c)·e^level - c,
   at least 0.
4. Spread s: 1.4826 × the median |residual| ln(x + c) - ln(E + c) of the
   previous ``SPREAD_DAYS`` (56) days (a robust standard deviation: one spike
   cannot widen it), at least ``MIN_SPREAD`` (0.15); needs ``MIN_RESIDUALS``
   (14) residuals, else no band (the first ~6 weeks have none).
5. Band: ln(x + c) within ln(E + c) ± ``K``·s (K = 3.5), i.e.
   lower_bound = max(0, (E + c)·e^(-K·s) - c), upper_bound = (E + c)·e^(K·s) - c,
   rounded to cents. It is multiplicative, so a fall to 40 % is as far below
   as a rise to 250 % is above. score = residual / s (signed; |score| > K is
   outside); is_anomaly = net_revenue outside [lower_bound, upper_bound];
   direction spike or drop.

Measured with ``scripts/measure_anomalies.py`` (this builder on seeded
synthetic shops of pipeline.sources.daily_series: weekend uplift, +25 %/year
growth, a +30 % holiday season, 3 % drop and 3 % spike days; seeds 1 and 2,
2,878 scored days each; "threshold" = every drop at exactly 40 % and every
spike at exactly 250 % of normal, the hardest case; "range" = 0-40 % and
250-500 %):

- dense, 200 orders/day, order values log-normal sigma 1.0 (CV 1.3; the demo
  generator's orders have CV 1.4): drops found 98.8 % / 100 % and spikes
  100 % / 100 % at the threshold, 100 % over the range; 0.0 % of ordinary
  days flagged;
- dense with a heavier tail (sigma 1.2, CV 1.8): at the threshold drops
  93.9 % / 100 %, spikes 98.7 % / 95.2 %; over the range 98.9-100 %; 0.0 %
  flagged;
- sparse, 3 orders/day, sigma 1.5 (5 % of days without sales): 0.3 % / 0.1 %
  of days flagged;
- sparse over-dispersed, 2 orders/day, sigma 2.0, gamma-Poisson (24 % of days
  without sales): 0.9 % / 0.8 % flagged.

``tests/test_anomalies.py`` asserts the contract's criteria on seeded series.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window, WindowSpec
from pyspark.sql import functions as F

from pipeline import catalog

WEEKS = 8
MIN_WEEKS = 4
UNIT_DAYS = 28
LEVEL_DAYS = 14
SPREAD_DAYS = 56
MIN_RESIDUALS = 14
MIN_SPREAD = 0.15
K = 3.5
MAD_TO_SD = 1.4826
MIN_UNIT = 0.01
MONEY = "decimal(18,2)"


def _calendar(daily_sales: DataFrame) -> DataFrame:
    """Every day from the first to the last order_date; days without sales are 0."""
    bounds = daily_sales.agg(F.min("order_date").alias("lo"), F.max("order_date").alias("hi"))
    calendar = bounds.select(F.explode(F.sequence("lo", "hi")).alias("order_date"))
    sales = daily_sales.select("order_date", "orders", "net_revenue")
    return calendar.join(sales, on="order_date", how="left").select(
        F.col("order_date"),
        F.coalesce(F.col("net_revenue"), F.lit(0)).cast(MONEY).alias("net_revenue"),
        F.coalesce(F.col("orders"), F.lit(0)).cast("long").alias("orders"),
    )


def _median(values: Column, window: WindowSpec) -> Column:
    """Exact median of the non-null values in a window frame (null when there are none).

    Spark's median() takes no window frame, so the frame's values are collected
    (a few dozen at most) and the middle one or two of the sorted list are read.
    """
    ordered = F.array_sort(F.collect_list(values).over(window))
    n = F.size(ordered)
    low = F.get(ordered, ((n - 1) / 2).cast("int"))
    high = F.get(ordered, (n / 2).cast("int"))
    return F.when(n > 0, (low + high) / 2)


def _money(value: Column) -> Column:
    return F.round(value, 2).cast(MONEY)


def build(daily_sales: DataFrame) -> DataFrame:
    """daily_sales (order_date, orders, net_revenue) -> one scored row per calendar day."""
    days = _calendar(daily_sales)
    x = F.col("net_revenue").cast("double")
    # One partition on purpose for the day-ordered windows: a few hundred to a few
    # thousand days. Frames end at -1: a day never sees itself or later days.
    same_weekday = (
        Window.partitionBy(F.dayofweek("order_date")).orderBy("order_date").rowsBetween(-WEEKS, -1)
    )
    by_day = Window.orderBy("order_date")
    unit_days = by_day.rowsBetween(-UNIT_DAYS, -1)
    level_days = by_day.rowsBetween(-LEVEL_DAYS, -1)
    spread_days = by_day.rowsBetween(-SPREAD_DAYS, -1)

    with_norm = days.select(
        "order_date",
        "net_revenue",
        x.alias("_x"),
        F.when(F.count(x).over(same_weekday) >= MIN_WEEKS, _median(x, same_weekday)).alias("_norm"),
        _median(F.when(F.col("orders") > 0, x / F.col("orders")), unit_days).alias("_aov"),
    )
    # greatest() skips nulls: the null checks keep "no history" null rather than 0
    with_unit = with_norm.select(
        "order_date",
        "net_revenue",
        "_x",
        "_norm",
        F.when(F.col("_aov").isNotNull(), F.greatest(F.col("_aov"), F.lit(MIN_UNIT))).alias(
            "_unit"
        ),
    )
    log_x = F.log(F.col("_x") + F.col("_unit"))
    with_raw = with_unit.select(
        "order_date",
        "net_revenue",
        "_x",
        "_norm",
        "_unit",
        (log_x - F.log(F.col("_norm") + F.col("_unit"))).alias("_raw_residual"),
    )
    level = F.coalesce(_median(F.col("_raw_residual"), level_days), F.lit(0.0))
    expected = F.when(
        F.col("_raw_residual").isNotNull(),
        F.greatest(
            F.exp(F.log(F.col("_norm") + F.col("_unit")) + level) - F.col("_unit"), F.lit(0.0)
        ),
    )
    with_expected = with_raw.select(
        "order_date", "net_revenue", "_x", "_unit", expected.alias("_expected")
    )
    with_residual = with_expected.select(
        "order_date",
        "net_revenue",
        "_unit",
        "_expected",
        (log_x - F.log(F.col("_expected") + F.col("_unit"))).alias("_residual"),
    )
    spread = F.when(
        F.count("_residual").over(spread_days) >= MIN_RESIDUALS,
        F.greatest(
            F.lit(MAD_TO_SD) * _median(F.abs(F.col("_residual")), spread_days),
            F.lit(MIN_SPREAD),
        ),
    )
    with_spread = with_residual.select(
        "order_date", "net_revenue", "_unit", "_expected", "_residual", spread.alias("_spread")
    )
    base = F.col("_expected") + F.col("_unit")
    width = F.lit(K) * F.col("_spread")
    scored = with_spread.select(
        F.col("order_date"),
        F.col("net_revenue"),
        _money(F.col("_expected")).alias("expected_revenue"),
        _money(
            F.when(
                base.isNotNull() & width.isNotNull(),
                F.greatest(base * F.exp(-width) - F.col("_unit"), F.lit(0.0)),
            )
        ).alias("lower_bound"),
        _money(base * F.exp(width) - F.col("_unit")).alias("upper_bound"),
        (F.col("_residual") / F.col("_spread")).alias("score"),
    )
    spike = F.col("net_revenue") > F.col("upper_bound")
    drop = F.col("net_revenue") < F.col("lower_bound")
    flagged = scored.select(
        "*",
        F.coalesce(spike | drop, F.lit(False)).alias("is_anomaly"),
        F.when(spike, F.lit("spike")).when(drop, F.lit("drop")).alias("direction"),
    )
    return flagged.select(*[F.col(c) for c in catalog.columns("gold", "revenue_anomalies")])
