"""Measure gold.revenue_anomalies on seeded synthetic shops: recall and false flags.

Runs the pure Spark builder (pipeline.gold.revenue_anomalies.build) on daily
series built by pipeline.sources.daily_series (weekend uplift, growth, a
holiday season, labelled drop and spike days), so many years of days cost
seconds, and prints one line per shop and factor mode:

- ``threshold``: every drop day at exactly 40 % and every spike at exactly
  250 % of normal, the hardest case docs/contract.md (revenue_anomalies) asks for;
- ``range``: drops uniform in 0..40 %, spikes in 250..500 %.

Usage: .venv/bin/python scripts/measure_anomalies.py [--days 2920] [--seeds 1 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("SHOPLAKE_SPARK_UI", "false")
os.environ.setdefault("SHOPLAKE_SHUFFLE_PARTITIONS", "2")

from pipeline.gold import revenue_anomalies  # noqa: E402
from pipeline.sources.daily_series import SHOPS, as_daily_sales, daily_series, outcome  # noqa: E402
from pipeline.spark import get_spark  # noqa: E402

MODES = {"threshold": dict(drop_factor=0.4, spike_factor=2.5), "range": {}}


def _pct(value: float | None) -> str:
    return "    -" if value is None else f"{100 * value:5.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=2920, help="days per shop (default 8 years)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    spark = get_spark("shoplake-measure-anomalies")
    print(
        f"{'shop':<22}{'mode':<11}{'seed':>5}{'scored':>8}{'flag% ord':>10}"
        f"{'drop rec%':>10}{'spike rec%':>11}{'drops':>7}{'spikes':>7}{'zero days':>10}"
    )
    for shop, options in SHOPS.items():
        for mode, factors in MODES.items():
            if mode == "threshold" and not options.get("anomaly_rate", 0.03):
                continue  # a shop without labelled anomalies is measured once
            for seed in args.seeds:
                series = daily_series(args.days, seed=seed, **{**options, **factors})
                started = time.perf_counter()
                frame = revenue_anomalies.build(as_daily_sales(spark, series))
                rows = [r.asDict() for r in frame.collect()]
                result = outcome(series, rows)
                zero = float((series.net_revenue == 0).mean())
                print(
                    f"{shop:<22}{mode:<11}{seed:>5}{result.scored:>8}"
                    f"{_pct(result.false_flag_rate):>10}{_pct(result.drop_recall):>10}"
                    f"{_pct(result.spike_recall):>11}{result.drops:>7}{result.spikes:>7}"
                    f"{_pct(zero):>10}   ({time.perf_counter() - started:.1f}s)"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
