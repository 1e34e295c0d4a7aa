"""The live verbs of `python -m pipeline`: kafka, produce, stream.

``add_commands(subparsers)`` registers them on the main parser; every verb
sets ``func(args) -> int`` (the exit code). Progress goes to stderr, the
one-line summary to stdout, and a failure is one readable line on stderr
with a non-zero exit code.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return EXIT_FAILED


def _guard(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn known failures into one line and an exit code instead of a traceback."""

    def wrapped(args: argparse.Namespace) -> int:
        from pipeline.live.broker import BrokerError
        from pipeline.live.errors import StreamError  # no Spark import for the kafka verbs

        try:
            return run(args)
        except KeyboardInterrupt:
            _progress("interrupted")
            return EXIT_INTERRUPTED
        except (BrokerError, StreamError, ValueError) as exc:
            return _fail(str(exc))

    return wrapped


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("a share is a number between 0 and 1")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


# ---------------------------------------------------------------- kafka


def _kafka(args: argparse.Namespace) -> int:
    from pipeline.live import broker

    if args.action == "start":
        _progress("starting the local Kafka broker (KRaft, single node)...")
        started = time.monotonic()
        st = broker.start()
        print(
            f"kafka {st.message}: {st.bootstrap_servers} (pid {st.pid}) "
            f"in {time.monotonic() - started:.1f}s"
            if st.mode == "local"
            else f"kafka: {st.message}"
        )
        return EXIT_OK if st.healthy else EXIT_FAILED
    if args.action == "stop":
        st = broker.stop()
        print(f"kafka {st.message}" if st.mode == "local" else f"kafka: {st.message}")
        return EXIT_OK
    st = broker.status()
    where = f"{st.bootstrap_servers} ({st.mode})"
    state = "healthy" if st.healthy else ("starting" if st.running else "not reachable")
    print(f"kafka {where}: {state}" + (f", pid {st.pid}" if st.pid else ""))
    return EXIT_OK if st.healthy else 3


# ---------------------------------------------------------------- produce


def _require_kafka() -> None:
    from pipeline.config import settings
    from pipeline.live import broker

    if not broker.is_healthy(timeout=5.0):
        hint = (
            "start it with `python -m pipeline kafka start`"
            if settings().uses_local_broker
            else "check KAFKA_BOOTSTRAP_SERVERS and the credentials"
        )
        raise broker.BrokerError(
            f"cannot reach Kafka at {settings().bootstrap_servers}: {hint} "
            "(or use --target files / --source files)"
        )


def _produce(args: argparse.Namespace) -> int:
    from pipeline.live import producer

    if args.target == "kafka":
        _require_kafka()
    total = args.events or None
    label = f"{args.events}" if args.events else "unlimited"

    def show(result: producer.ProduceResult) -> None:
        _progress(
            f"  sent {result.sent}/{label} ({result.malformed_total} malformed, "
            f"{result.duplicates} duplicates) in {result.elapsed_seconds:.0f}s"
        )

    _progress(
        f"producing {label} events to {args.target}"
        + (f" at {args.rate:g}/s" if args.rate else " as fast as possible")
    )
    result = producer.produce(
        events=total,
        rate=args.rate,
        malformed=args.malformed,
        duplicates=args.duplicates,
        seed=args.seed,
        target=args.target,
        progress=show,
        keep_events=False,
    )
    print(
        f"produced {result.sent} messages to {result.destination}: {result.valid} valid, "
        f"{result.duplicates} duplicates, {result.malformed_total} malformed "
        f"in {result.elapsed_seconds:.1f}s"
    )
    return EXIT_OK


# ---------------------------------------------------------------- stream


def _stream_run(args: argparse.Namespace) -> int:
    from pipeline.config import settings
    from pipeline.live import stream

    source = args.source or settings().stream_source
    if source == "kafka":
        _require_kafka()
    if not args.available_now and args.seconds is None:
        _progress("running until interrupted (Ctrl-C stops after the batch in flight)")
    _progress(f"starting the live query on {source}...")

    def show(report: stream.BatchReport) -> None:
        _progress(
            f"  batch {report.batch_id}: {report.rows} records, {report.inserted} new events, "
            f"{report.duplicates} duplicates, {report.quarantined} quarantined, "
            f"{report.late} late, {report.alerts} alerts in {report.seconds:.1f}s"
        )

    summary = stream.run_foreground(
        source=source,
        available_now=args.available_now,
        seconds=args.seconds,
        max_per_batch=args.max_per_batch,
        progress=show,
    )
    print(summary.line())
    return EXIT_OK


def _stream_status(args: argparse.Namespace) -> int:
    """The same status line as the pages (pipeline.live.health): exit 0 running, 3 not."""
    from pipeline.live import health

    live = health.live_status()
    print(f"{live.headline}: {live.detail()}")
    return EXIT_OK if live.running else 3


# ---------------------------------------------------------------- registration


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `kafka`, `produce` and `stream` on the main parser's subparsers."""
    kafka = subparsers.add_parser(
        "kafka",
        help="start, stop or check the local Kafka broker",
        description="The local single-node KRaft broker (data under <lake>/_kafka). "
        "When KAFKA_BOOTSTRAP_SERVERS is set the local broker is not used. "
        "`status` exits 0 when the broker answers and 3 when it does not.",
    )
    kafka.add_argument("action", choices=("start", "stop", "status"))
    kafka.set_defaults(func=_guard(_kafka))

    produce = subparsers.add_parser(
        "produce",
        help="publish generated order events",
        description="Publish generated order events (docs/contract.md §6) to Kafka or to "
        "the drop folder <lake>/stream_drop, with a share of malformed and duplicate ones.",
    )
    produce.add_argument(
        "--events", type=_count, default=1000, help="messages to send; 0 = until Ctrl-C"
    )
    produce.add_argument(
        "--rate", type=_positive, default=None, help="messages per second (default: at once)"
    )
    produce.add_argument("--malformed", type=_share, default=0.05, help="share of invalid events")
    produce.add_argument(
        "--duplicates", type=_share, default=0.05, help="share of re-sent event_ids"
    )
    produce.add_argument("--seed", type=int, default=None, help="seed for repeatable content")
    produce.add_argument("--target", choices=("kafka", "files"), default="kafka")
    produce.set_defaults(func=_guard(_produce))

    stream = subparsers.add_parser(
        "stream",
        help="run the live streaming query",
        description="The live Structured Streaming query: Bronze, quarantine, dq results "
        "and the live Gold tables, exactly once (checkpoints under <lake>/_checkpoints/live).",
    )
    verbs = stream.add_subparsers(dest="stream_action", required=True, metavar="run|status")
    run = verbs.add_parser(
        "run",
        help="run the query",
        description="Run the live query in the foreground.",
    )
    run.add_argument(
        "--source", choices=("kafka", "files"), default=None, help="default: SHOPLAKE_STREAM_SOURCE"
    )
    run.add_argument(
        "--available-now",
        action="store_true",
        help="process everything already there, then stop (deterministic; for tests)",
    )
    run.add_argument(
        "--for", dest="seconds", type=_positive, default=None, help="stop after SECONDS"
    )
    run.add_argument(
        "--max-per-batch",
        type=int,
        default=None,
        help="records (kafka) or files (files) per micro-batch",
    )
    run.set_defaults(func=_guard(_stream_run))
    status = verbs.add_parser(
        "status",
        help="is the live stream running?",
        description="Whether the live query and producers run (in any process: their "
        "heartbeats) and the broker answers; exit 0 when the query runs, 3 when not.",
    )
    status.set_defaults(func=_guard(_stream_status))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.live.cli")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
