"""Time and peak memory of one `pipeline import` of a large flat export.

    .venv/bin/python scripts/bench_import.py [--lines 1000000] [--workdir DIR]

Writes a seeded flat export in the generic preset's layout (about 2.5 lines
per order, unpadded M/D/YYYY dates, quoted product names with commas and
quotes), then runs `python -m pipeline import` on it in a child process
against a fresh lake, and prints the wall time and the child's peak resident
memory (getrusage of the children: the importer and the DuckDB it runs
in-process). Nothing is asserted: the figures go into the report by hand.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parent.parent


def _pick(values: list[str], index: np.ndarray) -> pa.Array:
    return pa.array(values, pa.string()).take(pa.array(index))


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    text = pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, text, "")


def write_export(path: Path, lines: int, seed: int = 7) -> dict[str, int]:
    """A flat export of `lines` order lines; returns what it holds."""
    rng = np.random.default_rng(seed)
    orders = max(1, int(lines / 2.5))
    customers = max(1, orders // 4)
    products = 5000
    line_order = np.sort(rng.integers(0, orders, lines))
    order_customer = rng.integers(0, customers, orders)
    order_day = rng.integers(0, 730, orders)  # two years from 2024-01-01
    dates = (np.datetime64("2024-01-01") + order_day.astype("timedelta64[D]")).astype(object)
    date_text = [f"{d.month}/{d.day}/{d.year}" for d in dates]
    statuses = ["delivered", "Shipped", "processing", "cancelled", "returned", "pending"]
    order_status = rng.choice(len(statuses), orders, p=[0.6, 0.15, 0.1, 0.07, 0.05, 0.03])
    product = rng.integers(0, products, lines)
    price_cents = rng.integers(199, 50000, products)
    categories = ["Furniture", "Office Supplies", "Technology", "Garden", "Toys"]
    names = [f'Item {i}, model "{i % 97}"' for i in range(products)]
    countries = ["DE", "FR", "US", "GB", "SE", "ES"]
    cust = order_customer[line_order]
    table = pa.table(
        {
            "Order ID": _ids("S-", line_order, 7),
            "Order Date": _pick(date_text, line_order),
            "Status": _pick(statuses, order_status[line_order]),
            "Customer ID": _ids("K-", cust, 6),
            "Customer Name": pc.binary_join_element_wise("Customer ", _ids("", cust, 6), ""),
            "Email": pc.binary_join_element_wise(_ids("k", cust, 6), "@example.com", ""),
            "Country": _pick(countries, cust % len(countries)),
            "City": _pick(["Köln", "Besançon", "Austin", "Leeds", "Malmö"], cust % 5),
            "Segment": _pick(["consumer", "corporate", "home office"], cust % 3),
            "Channel": _pick(["web", "mobile", "store"], line_order % 3),
            "Payment Method": _pick(["card", "paypal", "invoice"], line_order % 3),
            "Product ID": _ids("P-", product, 5),
            "Product Name": _pick(names, product),
            "Category": _pick(categories, product % len(categories)),
            "Sub-Category": _pick(["A", "B", "C"], product % 3),
            "Brand": _pick(["Acme", "Globex", "Initech"], product % 3),
            "Quantity": pc.cast(pa.array(rng.integers(1, 6, lines)), pa.string()),
            "Unit Price": pc.cast(pa.array(price_cents[product] / 100), pa.string()),
            "Discount": _pick(["0", "5", "10", "12.5", ""], rng.integers(0, 5, lines)),
            "Unit Cost": pc.cast(pa.array(np.round(price_cents[product] * 0.6) / 100), pa.string()),
        }
    )
    pacsv.write_csv(table, path)
    return {"lines": lines, "orders": int(np.unique(line_order).size), "products": products}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/shoplake-bench-import"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    export = args.workdir / f"export-{args.lines}.csv"
    if not export.exists():
        started = time.perf_counter()
        held = write_export(export, args.lines)
        print(
            f"wrote {export} ({export.stat().st_size / 1e6:.0f} MB, {held}) "
            f"in {time.perf_counter() - started:.1f}s"
        )
    lake = args.workdir / "lake"
    subprocess.run(["rm", "-rf", str(lake)], check=True)
    env = {"SHOPLAKE_LAKE": str(lake), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "pipeline", "import", str(export), "--mapping", "generic"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
        return done.returncode
    summary = done.stdout.strip().splitlines()[-1]
    result = {
        "lines": args.lines,
        "file_mb": round(export.stat().st_size / 1e6, 1),
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(peak_mb),
        "summary": summary,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
