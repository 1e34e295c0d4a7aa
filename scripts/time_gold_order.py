"""Time ``run gold`` on an existing lake with the steps started in declaration order
and largest first (``runner.largest_first``), alternated in one warm session.

For BENCHMARKS.md ("Large Gold tables checked within their write; largest steps
first"): on a large lake more Gold steps are ready than may run, and the order
they start in decides whether the longest ends the run alone.

    PYTHONPATH=. python scripts/time_gold_order.py /path/to/lake --pairs 4

The lake's Gold tables are rewritten with the same rows.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lake", type=Path, help="a lake after a run")
    parser.add_argument("--pairs", type=int, default=4)
    args = parser.parse_args()
    os.environ["SHOPLAKE_LAKE"] = str(args.lake)

    from pipeline import runner
    from pipeline.spark import get_spark

    spark = get_spark("time-gold-order")
    largest_first = runner.largest_first
    orders = {"declared": lambda steps: list(steps), "largest first": largest_first}
    for _ in range(args.pairs):
        for name, order in orders.items():
            runner.largest_first = order
            started: list[str] = []

            def tell(message: str, fraction: float, started: list[str] = started) -> None:
                if message.endswith(" ..."):
                    started.append(message.removesuffix(" ...").removeprefix("gold."))

            began = time.perf_counter()
            result = runner.run("gold", spark=spark, progress=tell)
            seconds = time.perf_counter() - began
            print(f"{name:<14} {seconds:6.1f} s {result.status}: {', '.join(started)}", flush=True)
    runner.largest_first = largest_first


if __name__ == "__main__":
    main()
