"""Synthetic daily sales series with labelled anomaly days, to measure the detector.

Generating a lake of 200+ orders a day for several years and running the
pipeline over it would take minutes per measurement; gold.revenue_anomalies
only reads daily_sales (order_date, orders, net_revenue), so the measurement
script and the tests build those columns directly, thousands of days at once.

A day's expected orders follow the generator's weekly rhythm (weekend uplift),
optional growth and a holiday season; orders are Poisson (optionally
over-dispersed: a gamma-Poisson mixture), order values log-normal with mean
``order_value`` (sigma sets how heavy the tail is). Anomaly days multiply the
day's expected orders: a drop by ``drop_factor`` (<= 0.4 of normal), a spike by
``spike_factor`` (>= 2.5); a factor pair (lo, hi) draws uniformly in between.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
from pyspark.sql import DataFrame, SparkSession

from pipeline.sources import catalog as cat

Factor = float | tuple[float, float]


@dataclass(frozen=True)
class Series:
    order_date: list[dt.date]
    orders: np.ndarray  # int64
    net_revenue: np.ndarray  # float, rounded to cents
    kind: np.ndarray  # "", "drop" or "spike" per day
    factor: np.ndarray  # the multiplier applied to the day's normal volume


def _factor(rng: np.random.Generator, spec: Factor, n: int) -> np.ndarray:
    if isinstance(spec, tuple):
        return rng.uniform(spec[0], spec[1], n)
    return np.full(n, float(spec))


def daily_series(
    days: int,
    orders_per_day: float,
    seed: int,
    *,
    value_sigma: float = 1.0,
    order_value: float = 100.0,
    overdispersion: float | None = None,
    growth: float = 0.25,
    holiday: float = 0.30,
    anomaly_rate: float = 0.03,
    drop_factor: Factor = (0.0, 0.4),
    spike_factor: Factor = (2.5, 5.0),
    warm_up: int = 60,
    start: dt.date = dt.date(2020, 1, 6),
) -> Series:
    """``days`` days from ``start``; each day after ``warm_up`` is a drop day with
    probability ``anomaly_rate``, a spike day with the same probability."""
    rng = np.random.default_rng(seed)
    d = np.arange(days)
    weekday = (start.weekday() + d) % 7  # 0 = Monday, as cat.WEEKDAY_FACTORS
    normal = orders_per_day * np.asarray(cat.WEEKDAY_FACTORS)[weekday]
    normal = normal * (1.0 + growth * d / 365.0)
    normal = normal * (1.0 + holiday * np.exp(-((((d % 365) - 160) / 18.0) ** 2)))
    normal = normal * rng.lognormal(0.0, 0.05, days)
    roll = rng.random(days)
    kind = np.full(days, "", dtype=object)
    kind[roll < anomaly_rate] = "drop"
    kind[(roll >= anomaly_rate) & (roll < 2 * anomaly_rate)] = "spike"
    kind[:warm_up] = ""
    factor = np.ones(days)
    factor[kind == "drop"] = _factor(rng, drop_factor, int((kind == "drop").sum()))
    factor[kind == "spike"] = _factor(rng, spike_factor, int((kind == "spike").sum()))
    rate = normal * factor
    if overdispersion:
        rate = rng.gamma(overdispersion, rate / overdispersion)
    orders = rng.poisson(rate).astype(np.int64)
    mu = np.log(order_value) - value_sigma**2 / 2
    values = rng.lognormal(mu, value_sigma, int(orders.sum()))
    owner = np.repeat(d, orders)
    revenue = np.round(np.bincount(owner, weights=values, minlength=days), 2)
    dates = [start + dt.timedelta(days=int(i)) for i in d]
    return Series(dates, orders, revenue, kind, factor)


# The shops the measurement script and the tests score (name -> daily_series arguments).
SHOPS: dict[str, dict] = {
    "dense": dict(orders_per_day=200, value_sigma=1.0),
    "dense_heavy_tail": dict(orders_per_day=200, value_sigma=1.2),
    "sparse": dict(orders_per_day=3, value_sigma=1.5, growth=0.0, anomaly_rate=0.0),
    "sparse_overdispersed": dict(
        orders_per_day=2, value_sigma=2.0, overdispersion=2.0, growth=0.0, anomaly_rate=0.0
    ),
}


def as_daily_sales(spark: SparkSession, series: Series) -> DataFrame:
    """The series as gold.daily_sales' columns that revenue_anomalies reads."""
    rows = [
        (day, int(n), Decimal(f"{revenue:.2f}"))
        for day, n, revenue in zip(
            series.order_date, series.orders, series.net_revenue, strict=True
        )
    ]
    return spark.createDataFrame(rows, "order_date date, orders long, net_revenue decimal(18,2)")


@dataclass(frozen=True)
class Outcome:
    """How a detector's flags compare with the series' labels, over scored days."""

    scored: int  # days with a band
    ordinary: int
    false_flags: int  # ordinary days flagged
    drops: int
    drops_found: int  # labelled drops flagged as drops
    spikes: int
    spikes_found: int  # labelled spikes flagged as spikes

    @property
    def false_flag_rate(self) -> float:
        return self.false_flags / self.ordinary if self.ordinary else 0.0

    @property
    def drop_recall(self) -> float | None:
        return self.drops_found / self.drops if self.drops else None

    @property
    def spike_recall(self) -> float | None:
        return self.spikes_found / self.spikes if self.spikes else None


def outcome(series: Series, rows: list[dict]) -> Outcome:
    """rows: gold.revenue_anomalies rows of the series (any order)."""
    by_day = {r["order_date"]: r for r in rows}
    scored = ordinary = false_flags = drops = drops_found = spikes = spikes_found = 0
    for day, kind in zip(series.order_date, series.kind, strict=True):
        row = by_day[day]
        if row["lower_bound"] is None:
            continue
        scored += 1
        if kind == "drop":
            drops += 1
            drops_found += row["direction"] == "drop"
        elif kind == "spike":
            spikes += 1
            spikes_found += row["direction"] == "spike"
        else:
            ordinary += 1
            false_flags += bool(row["is_anomaly"])
    return Outcome(scored, ordinary, false_flags, drops, drops_found, spikes, spikes_found)
