"""Crash safety: a run killed at any layer leaves a lake that the next run makes whole.

`python -m pipeline run all` is started on a small lake and its whole process
group (Python and the JVM, as a power cut would) is SIGKILLed at a point inside
each layer, chosen by watching the lake for the commit that marks it:

- bronze: right after bronze.orders' data commit, before its ingest-log entry
  (the window the ingest log's repair exists for);
- silver: right after silver.orders is merged, before its quarantine rows;
- gold: right after gold.daily_sales is replaced, before the other Gold tables.

After the three kills one more run must leave Bronze, Silver and Gold equal to
those of an uninterrupted run on the same landing files (the ingest log and
the run history are compared by their meaning, not their timestamps). While
that run rewrites gold.daily_sales a reader polls it with delta-rs and must
always see the whole table.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from deltalake import DeltaTable
from pyspark.sql import SparkSession

from pipeline import catalog
from pipeline.read import delta_arrow
from pipeline.runner import RunResult, run
from pipeline.sources.generate import generate
from tests.conftest import lake_at

ROOT = Path(__file__).resolve().parent.parent
SMALL = dict(orders=40, batches=2, seed=7, defect_rate=0.05)
KILL_POINTS = [
    ("bronze", "bronze/orders/_delta_log/00000000000000000000.json"),
    ("silver", "silver/orders/_delta_log/00000000000000000000.json"),
    ("gold", "gold/daily_sales/_delta_log/00000000000000000000.json"),
]
SUBPROCESS_SECONDS = 900
# Run bookkeeping, compared separately below; and the values that name the moment of ingestion.
BOOKKEEPING = {f"{t.layer}/{t.name}" for t in catalog.tables(kind=("bookkeeping", "history"))}
VOLATILE = {"_ingested_at", "_record_id", "ingested_at", "quarantined_at", "record_id", "_row_hash"}


def _run_and_kill(lake: Path, trigger: Path, log: Path) -> int:
    """Start a full run in its own process group; SIGKILL the group once ``trigger`` exists."""
    assert not trigger.exists(), f"{trigger} exists before the run that should create it"
    env = {
        **os.environ,
        "SHOPLAKE_LAKE": str(lake),
        "SHOPLAKE_SPARK_UI": "false",
        "SHOPLAKE_SHUFFLE_PARTITIONS": "2",
        "SHOPLAKE_DRIVER_MEMORY": "1g",
    }
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "run", "all"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own group: the JVM dies with it
        )
    deadline = time.monotonic() + SUBPROCESS_SECONDS
    try:
        while not trigger.exists():
            if proc.poll() is not None:
                raise AssertionError(f"the run ended before {trigger}: {log.read_text()[-3000:]}")
            assert time.monotonic() < deadline, f"no {trigger} after {SUBPROCESS_SECONDS}s"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    return proc.returncode


def _rows(path: Path) -> Counter[str]:
    """A Delta table's rows without ingestion times and ids, as a multiset of JSON texts."""
    table = delta_arrow(str(path))
    columns = [c for c in table.column_names if c not in VOLATILE]
    return Counter(
        json.dumps(row, default=str, sort_keys=True) for row in table.select(columns).to_pylist()
    )


def _tables(lake: Path) -> list[str]:
    return sorted(
        f"{layer}/{p.name}"
        for layer in ("bronze", "silver", "gold")
        if (lake / layer).is_dir()
        for p in (lake / layer).iterdir()
        if (p / "_delta_log").is_dir()
    )


def _meaning_of_bookkeeping(lake: Path) -> dict[str, Counter[str]]:
    """The ingest log and run history, reduced to what must not depend on a crash."""
    log = DeltaTable(str(lake / "bronze/_ingested_files")).to_pyarrow_table()
    files = Counter(
        f"{r['source']}/{r['file']}:{r['status']}"
        for r in log.select(["source", "file", "status"]).to_pylist()
    )
    return {"ingested files": files}


class GoldPoller(threading.Thread):
    """Reads a Gold table with delta-rs over and over, remembering every version and content."""

    def __init__(self, path: Path):
        super().__init__(name="gold-poller", daemon=True)
        self.path = path
        self.stop = threading.Event()
        self.reads: list[tuple[int, Counter[str]]] = []
        self.errors: list[str] = []

    def read_once(self) -> None:
        table = DeltaTable(str(self.path))
        rows = table.to_pyarrow_table().to_pylist()
        self.reads.append(
            (table.version(), Counter(json.dumps(r, default=str, sort_keys=True) for r in rows))
        )

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.read_once()
            except Exception as exc:  # noqa: BLE001 - any failed read is a finding, kept
                self.errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.05)


def test_killed_runs_leave_a_lake_the_next_run_makes_whole(
    spark: SparkSession, tmp_path: Path
) -> None:
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    generate(reference, **SMALL)
    generate(crashed, **SMALL)

    # The uninterrupted run goes in a thread while the killed runs use their own JVMs.
    uninterrupted: list[RunResult | BaseException] = []

    def reference_run() -> None:
        try:
            with lake_at(reference):
                uninterrupted.append(run("all", spark=spark))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread below
            uninterrupted.append(exc)

    worker = threading.Thread(target=reference_run, name="reference-run")
    worker.start()
    try:
        log = tmp_path / "killed-runs.log"
        for layer, marker in KILL_POINTS:
            code = _run_and_kill(crashed, crashed / marker, log)
            assert code == -signal.SIGKILL, (layer, code, log.read_text()[-3000:])
    finally:
        worker.join(timeout=SUBPROCESS_SECONDS)
    assert not worker.is_alive(), "the uninterrupted run did not finish"
    result = uninterrupted[0]
    assert isinstance(result, RunResult) and result.ok, result

    # The crashed lake holds Gold from the killed run; a reader polls it during recovery.
    poller = GoldPoller(crashed / "gold" / "daily_sales")
    poller.read_once()
    poller.start()
    try:
        with lake_at(crashed):
            recovery = run("all", spark=spark)
    finally:
        poller.stop.set()
        poller.join(timeout=60)
    poller.read_once()
    assert recovery.ok, recovery.error

    tables = _tables(reference)
    assert _tables(crashed) == tables
    for name in tables:
        if name in BOOKKEEPING:
            continue
        want, got = _rows(reference / name), _rows(crashed / name)
        assert got == want, (name, list((got - want).items())[:3], list((want - got).items())[:3])
    assert _meaning_of_bookkeeping(crashed) == _meaning_of_bookkeeping(reference)

    expected_daily = _rows(reference / "gold" / "daily_sales")
    assert not poller.errors, poller.errors[:3]
    assert len(poller.reads) >= 3
    assert len({version for version, _ in poller.reads}) >= 2, "the reader never saw a rewrite"
    for version, rows in poller.reads:
        assert rows == expected_daily, f"version {version}: a partial or different table"
