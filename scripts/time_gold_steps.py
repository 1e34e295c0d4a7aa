"""Time Gold steps alone on an existing lake, with the lake's writers and with delta-rs.

For the per-step figures in BENCHMARKS.md ("Small steps and small Gold tables
of a large lake"): each step is run a few times in one warm session, one at a
time, in each of ``--modes``: ``lake``, as the lake's size decides (on a large
lake a step still collects its rows where ``lake.collect_target`` says so, and a
large Sales table is checked within its write, pipeline/checked_write.py);
``delta-rs``, every whole-table write collected and committed by delta-rs;
``spark``, every write by Spark's staged check and Delta writer
(``SHOPLAKE_WRITER=spark``).

    PYTHONPATH=. python scripts/time_gold_steps.py /path/to/lake \\
        --steps daily_sales,customer_rfm --repeats 3 --modes lake,delta-rs

The lake's Gold tables are rewritten with the same rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lake", type=Path, help="a lake after a run")
    parser.add_argument("--steps", default="daily_sales,category_sales,revenue_anomalies")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", default="lake,delta-rs", help="lake, delta-rs, spark")
    args = parser.parse_args()
    os.environ["SHOPLAKE_LAKE"] = str(args.lake)

    from pipeline import lake, runner
    from pipeline.gold import steps as gold
    from pipeline.registry import Context
    from pipeline.spark import get_spark

    spark = get_spark("time-gold-steps")
    landing = runner.landing_bytes()
    runner._compile_or_interpret(spark, landing)
    for name in args.steps.split(","):
        for mode in args.modes.split(","):
            if mode == "spark":
                os.environ["SHOPLAKE_WRITER"] = "spark"
            else:
                os.environ.pop("SHOPLAKE_WRITER", None)
            small = (runner.small_writes(landing) and mode != "spark") or mode == "delta-rs"
            lake.small_writes.set(small)
            ctx = Context(spark, "time-gold-steps", dt.datetime.now(dt.UTC), small_writes=small)
            seconds = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                getattr(gold, f"run_{name}")(ctx)
                seconds.append(time.perf_counter() - started)
            print(f"{name:<20} {mode:<9} " + " ".join(f"{s:6.2f}" for s in seconds), flush=True)


if __name__ == "__main__":
    main()
