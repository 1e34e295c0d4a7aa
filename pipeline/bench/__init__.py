"""Benchmarks: ShopLake's Spark pipeline against a DuckDB baseline doing the same work.

The command line (`python -m pipeline bench [--quick]`, `make bench`) lands
here; the harness does the measuring in worker processes so that this entry
point stays free of Spark and DuckDB imports until a benchmark really runs.
"""

from __future__ import annotations

import argparse


def main(args: argparse.Namespace) -> int:
    from pipeline.bench.harness import plan_for, run_bench

    return run_bench(plan=plan_for(args))
