"""Time a full run and then a 1 % increment on a copy of a lake's landing files, in one session.

For side-by-side comparisons of two checkouts (BENCHMARKS.md, below the kept
marker): run it once per checkout, one after the other, with that checkout
first on PYTHONPATH, e.g.

    PYTHONPATH=/path/to/checkout python scripts/full_then_increment.py \\
        /path/to/lake/landing --append 10000

Prints each run's seconds and every step's seconds, Spark jobs, commits and
notes. The copy is made under a temporary folder and removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("landing", type=Path, help="a lake's landing folder (generated)")
    parser.add_argument("--append", type=int, default=10_000, help="orders appended")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="shoplake-fi-"))
    try:
        shutil.copytree(args.landing, root / "landing")
        os.environ["SHOPLAKE_LAKE"] = str(root)
        from pipeline import runner
        from pipeline.sources.generate import generate
        from pipeline.spark import get_spark

        spark = get_spark("full-then-increment")
        for phase in ("full", "increment"):
            if phase == "increment":
                generate(root, orders=args.append, seed=args.seed, append=True)
            started = time.perf_counter()
            result = runner.run("all", spark=spark)
            seconds = time.perf_counter() - started
            print(f"{phase}: {seconds:.1f} s, {result.status}", result.error or "")
            for s in result.steps:
                print(
                    f"  {s.step:<24} {s.seconds:7.2f} s {s.spark_jobs:4d} jobs "
                    f"{s.delta_commits} commits  {'; '.join(s.notes)}"
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
