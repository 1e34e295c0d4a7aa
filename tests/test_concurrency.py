"""Two runs pressed at once on one lake: one runs, the other is told a run is in progress.

Two browser sessions, or the app and a cron job, can ask for a run at the same
moment. Interleaved writes would corrupt the ingest log and the tables, so the
runner holds an exclusive lock on the lake for the whole run.
"""

from __future__ import annotations

import threading
from pathlib import Path

from pyspark.sql import SparkSession

from pipeline import lake
from pipeline.contract import SOURCES
from pipeline.runner import RunInProgressError, RunResult, run, run_lock
from tests.conftest import lake_at
from tests.corpus_builder import baseline


def _race(spark: SparkSession) -> list[RunResult | BaseException]:
    """Start two runs released by one barrier; return what each thread got."""
    start = threading.Barrier(2)
    outcomes: list[RunResult | BaseException] = []
    guard = threading.Lock()

    def attempt() -> None:
        start.wait()
        try:
            outcome: RunResult | BaseException = run("bronze", spark=spark)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread to assert on
            outcome = exc
        with guard:
            outcomes.append(outcome)

    threads = [threading.Thread(target=attempt, name=f"run-{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=900)
    assert not any(t.is_alive() for t in threads), "a run never finished"
    return outcomes


def test_two_simultaneous_runs_one_runs_one_is_refused(spark: SparkSession, tmp_path: Path):
    root = tmp_path / "lake"
    name, data = baseline()["orders"]  # one file keeps the winning run short
    (root / "landing" / "orders").mkdir(parents=True)
    (root / "landing" / "orders" / name).write_bytes(data)

    with lake_at(root):
        outcomes = _race(spark)

        refused = [o for o in outcomes if isinstance(o, RunInProgressError)]
        ran = [o for o in outcomes if isinstance(o, RunResult)]
        assert (len(ran), len(refused)) == (1, 1), outcomes
        assert ran[0].ok, ran[0].error
        assert "in progress" in str(refused[0])

        # Intact: the file ingested exactly once, by the one run, and recorded once.
        assert lake.read(spark, "bronze", "orders").count() == 4
        log = [r.asDict() for r in lake.read(spark, "bronze", "_ingested_files").collect()]
        assert [(r["file"], r["status"], r["rows"], r["run_id"]) for r in log] == [
            (name, "ingested", 4, ran[0].run_id)
        ]
        runs = lake.read(spark, "gold", "pipeline_runs").select("run_id", "status").collect()
        assert sorted(tuple(r) for r in runs) == [(ran[0].run_id, "succeeded")] * len(SOURCES)

        # The lock was released with the run: the next one may start.
        with run_lock():
            pass
