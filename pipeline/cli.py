"""`python -m pipeline ...`: the same verbs the pages use (docs/contract.md §1)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path


class CliError(RuntimeError):
    """A failure with a message meant for the person at the terminal."""


def run_all_in_new_process(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """``python -m pipeline run all`` in a process of its own, as a scheduler starts it
    (its own JVM, its own compiler choice); output captured for the caller."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "all"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )


def _progress(message: str, fraction: float) -> None:
    width = 24
    filled = int(width * max(0.0, min(1.0, fraction)))
    print(
        f"\r[{'#' * filled}{'.' * (width - filled)}] {fraction:4.0%} {message:<40}",
        end="",
        file=sys.stderr,
        flush=True,
    )
    if fraction >= 1.0:
        print(file=sys.stderr)


def cmd_generate(args: argparse.Namespace) -> int:
    from pipeline.demo import generate_demo

    started = time.perf_counter()
    manifests = generate_demo(
        orders=args.orders,
        batches=args.batches,
        seed=args.seed,
        defect_rate=args.defect_rate,
        append=args.append,
        progress=_progress,
        promotions=args.promotions,
        outages=args.outages,
    )
    rows = {}
    for m in manifests:
        for source, n in m.get("rows", {}).items():
            rows[source] = rows.get(source, 0) + n
    summary = ", ".join(f"{k} {v:,}" for k, v in rows.items())
    print(
        f"generated {len(manifests)} batch(es) in {time.perf_counter() - started:.1f}s: {summary}"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.registry import steps_for
    from pipeline.runner import landing_bytes, run
    from pipeline.spark import SHORT_RUN_BYTES, get_spark

    try:
        steps_for(args.layer)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    started = time.perf_counter()
    spark = get_spark(short_run=landing_bytes() < SHORT_RUN_BYTES)  # runs once and exits
    result = run(args.layer, spark=spark, progress=_progress, full_refresh=args.full_refresh)
    header = ("step", "status", "rows in", "rows out", "quarantined", "seconds")
    print("{:<26}{:<11}{:>12}{:>12}{:>13}{:>9}".format(*header))
    for s in result.steps:
        print(
            f"{s.step:<26}{s.status:<11}{s.rows_in:>12,}{s.rows_out:>12,}"
            f"{s.rows_quarantined:>13,}{s.seconds:>9.1f}"
        )
        for note in s.notes:
            print(f"    note: {note}")
    elapsed = time.perf_counter() - started
    if not result.ok:
        raise CliError(f"run {result.run_id} failed after {elapsed:.1f}s: {result.error}")
    total_q = sum(s.rows_quarantined for s in result.steps)
    print(
        f"run {result.run_id} succeeded in {elapsed:.1f}s: {len(result.steps)} steps, "
        f"{total_q:,} rows quarantined"
    )
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    from pipeline.quality.report import print_report

    return print_report(as_json=args.json)


def cmd_import(args: argparse.Namespace) -> int:
    from pipeline.imports import import_file

    report = import_file(args.file, args.mapping, batch=args.batch, progress=_progress)
    conflicts = ", ".join(
        f"{source} {c['keys']:,}" for source, c in report.conflicts.items() if c.get("keys")
    )
    print(f"encoding {report.encoding or 'xlsx'}, delimiter {report.delimiter!r}")
    if conflicts:
        print(f"conflicting lines (the later line wins): {conflicts}")
    if report.unmapped_columns:
        print(f"unmapped columns: {', '.join(report.unmapped_columns)}")
    if report.missing_columns:
        print(f"mapped columns not in the file (left blank): {', '.join(report.missing_columns)}")
    for field, n in report.dates_not_matching_format.items():
        print(f"{field}: {n:,} values did not match the date format (passed on as written)")
    if report.inexact_amounts:
        print(f"{report.inexact_amounts:,} line totals not reproducible to the cent")
    for reason, n in report.rejected_by_reason.items():
        print(f"rejected ({reason}): {n:,}")
    print(f"report: {report.report_file}")
    print(report.summary())
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from pipeline.bench import main as bench_main

    return bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description="ShopLake lakehouse")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write seeded demo data to the landing zone")
    gen.add_argument("--orders", type=int, default=10_000, help="orders to generate")
    gen.add_argument("--batches", type=int, default=3, help="landing batches")
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--defect-rate", type=float, default=0.02, help="share of each defect, 0..1")
    gen.add_argument("--append", action="store_true", help="add one batch after the existing ones")
    gen.add_argument(
        "--promotions",
        type=int,
        default=None,
        help="labelled promotion days (revenue spikes); default: 5 in a new lake, 0 on append",
    )
    gen.add_argument(
        "--outages",
        type=int,
        default=None,
        help="labelled outage days (revenue drops); default: 2 in a new lake, 0 on append",
    )
    gen.set_defaults(func=cmd_generate)

    run = sub.add_parser("run", help="run a layer of the pipeline, all, or one table's lineage")
    run.add_argument(
        "layer",
        nargs="?",
        default="all",
        metavar="TARGET",
        help="bronze, silver, gold, all (the default), or a step such as gold.daily_sales "
        "(it runs with the steps it reads from)",
    )
    run.add_argument(
        "--full-refresh",
        action="store_true",
        help="recompute Silver customers, orders and items from all of Bronze",
    )
    run.set_defaults(func=cmd_run)

    quality = sub.add_parser("quality", help="print the latest quality report")
    quality.add_argument("--json", action="store_true", help="machine-readable output")
    quality.set_defaults(func=cmd_quality)

    imp = sub.add_parser(
        "import",
        help="import a flat line-level export (CSV or .xlsx) as one landing batch",
        description="Split a flat export (one row per order line) into the four landing "
        "files of one batch, by a mapping file or a preset (README 'Bring your own data').",
    )
    imp.add_argument("file", help="the export: .csv (any common delimiter/encoding) or .xlsx")
    imp.add_argument(
        "--mapping",
        required=True,
        help="a mapping file (TOML) or a preset: generic, shopify",
    )
    imp.add_argument("--batch", help="the batch name (default: the next batch-NNNNNN_import)")
    imp.set_defaults(func=cmd_import)

    bench = sub.add_parser("bench", help="run the benchmarks (bench/results/latest.json)")
    bench.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    from pipeline.bench.harness import add_plan_options

    add_plan_options(bench)
    bench.set_defaults(func=cmd_bench)

    try:
        from pipeline.live.cli import add_commands
    except ImportError:
        pass
    else:
        add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every failure ends as one readable line and exit code 1
        print(f"error: {_describe(exc)}", file=sys.stderr)
        return 1


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    first = text.splitlines()[0]
    return first if isinstance(exc, CliError) else f"{first}"


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["main", "build_parser", "json"]
