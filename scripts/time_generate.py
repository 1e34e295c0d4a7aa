"""Time the demo generator at benchmark scale (default: 1,000,000 orders).

Usage: .venv/bin/python scripts/time_generate.py [--orders N] [--batches B] [--lake DIR]
Prints the wall time of a full generation and of one appended 1 % batch.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.sources.generate import generate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--lake", default=None, help="default: a temporary folder")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="shoplake-time-") as tmp:
        lake = Path(args.lake or tmp)
        start = time.perf_counter()
        manifests = generate(lake, orders=args.orders, batches=args.batches, seed=args.seed)
        full = time.perf_counter() - start
        rows = {s: sum(m["rows"][s] for m in manifests) for s in manifests[0]["rows"]}
        size = sum(p.stat().st_size for p in (lake / "landing").rglob("*") if p.is_file())
        print(f"generate {args.orders:,} orders in {args.batches} batches: {full:.1f} s")
        print("  rows written: " + ", ".join(f"{s}={n:,}" for s, n in rows.items()))
        print(f"  landing size: {size / 1e6:.0f} MB")

        start = time.perf_counter()
        (appended,) = generate(lake, orders=max(1, args.orders // 100), seed=args.seed, append=True)
        step = time.perf_counter() - start
        print(f"append {appended['batch_id']} ({args.orders // 100:,} orders): {step:.1f} s")


if __name__ == "__main__":
    main()
