"""The live stream under real failures: a killed process, a broker outage, load.

- The query's process (Python and its JVM) is SIGKILLed twice while a
  micro-batch is in flight, at points found by watching the lake: right after
  the batch's Bronze commit, and right after its event-store commit (before
  Gold). A restart replays the batch from Spark's checkpoint and must leave the
  live tables exact.
- The broker is stopped for a few seconds while the query runs and a producer
  keeps sending; after the broker is back nothing is lost or doubled and the
  query is still running.
- A few thousand events with malformed and re-sent ones, produced while the
  query runs, end exact.

"Exact" is tests.live_support.assert_exact: Gold equals an independent
computation over what the producer sent, Bronze holds every message once, and
quarantine, duplicates and the dq counts reconcile.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipeline.live import broker, producer, stream
from tests.live_support import (
    assert_exact,
    expected_minutes,
    gold_minutes,
    kafka_broker,  # noqa: F401  (session fixture)
    table_rows,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent
HOOKS_SITE = Path(__file__).resolve().parent / "hooks_site"
SUBPROCESS_SECONDS = 300

pytestmark = pytest.mark.kafka


def _processed() -> int:
    """Records of the background query's finished micro-batches (every write of theirs done)."""
    return sum(r.rows for r in stream.reports() if not r.failed)


def _labelled(lake: Path, layer: str, table: str, column: str, batch_id: int) -> int:
    """Rows a table holds from micro-batch `batch_id` (its label ends with the batch id)."""
    suffix = f"-{batch_id:06d}"
    return sum(1 for r in table_rows(lake, layer, table) if r[column].endswith(suffix))


# ---------------------------------------------------------------- a killed process


def _hooks_pythonpath() -> str:
    """tests/hooks_site first (its sitecustomize), then the repository, then what was set."""
    parts = [str(HOOKS_SITE), str(ROOT), os.environ.get("PYTHONPATH", "")]
    return os.pathsep.join(p for p in parts if p)


def test_pause_hook_is_installed_only_by_the_test_site() -> None:
    """The subprocess gets the commit hook from tests/hooks_site; a plain one gets none."""
    probe = "from pipeline.live import hooks; print(hooks.installed() is not None)"
    hooked = {**os.environ, "PYTHONPATH": _hooks_pythonpath(), "SHOPLAKE_TEST_PAUSE_AFTER": "dq:2"}
    plain = {**os.environ, "SHOPLAKE_TEST_PAUSE_AFTER": "dq:2"}
    for env, expected in ((hooked, "True"), (plain, "False")):
        out = subprocess.run(
            [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == expected, (expected, out.stdout, out.stderr)


def _spawn_stream(log: Path, max_per_batch: int, pause_after: str) -> subprocess.Popen:
    """`python -m pipeline stream run` in its own process group (the JVM dies with it).

    ``pause_after`` (step:batch) holds the process right after that commit, so the
    SIGKILL lands there for certain instead of racing the next commit: the
    test-only tests/hooks_site/sitecustomize.py installs that commit hook
    (pipeline.live.hooks) at the subprocess's start-up.
    """
    env = {
        **os.environ,
        "SHOPLAKE_DRIVER_MEMORY": "1g",
        "SHOPLAKE_SPARK_UI": "false",
        "PYTHONPATH": _hooks_pythonpath(),
        "SHOPLAKE_TEST_PAUSE_AFTER": pause_after,
    }
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline",
                "stream",
                "run",
                "--source",
                "kafka",
                "--available-now",
                "--max-per-batch",
                str(max_per_batch),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _kill_when(proc: subprocess.Popen, trigger: Path, log: Path) -> None:
    """SIGKILL the whole process group the moment `trigger` (a Delta commit file) exists."""

    def reached() -> bool:
        if trigger.exists():
            return True
        if proc.poll() is not None:
            raise AssertionError(
                f"the stream ended (exit {proc.returncode}) before {trigger}:\n"
                + log.read_text(errors="replace")[-3000:]
            )
        return False

    try:
        wait_for(reached, SUBPROCESS_SECONDS, f"{trigger}", every=0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode}, not a kill"


def _batch_in_flight(checkpoint: Path) -> int:
    """The batch Spark had planned (offsets written) but not committed when the process died."""
    planned = max(int(p.name) for p in (checkpoint / "offsets").iterdir() if p.name.isdigit())
    assert not (checkpoint / "commits" / str(planned)).exists(), "no batch was in flight"
    return planned


def _commit_file(lake: Path, layer: str, table: str, version: int) -> Path:
    return lake / layer / table / "_delta_log" / f"{version:020d}.json"


def test_sigkill_mid_batch_then_restart_is_exact(
    spark, empty_lake: Path, topic: str, request: pytest.FixtureRequest
) -> None:
    request.getfixturevalue("kafka_broker")
    first = producer.produce(events=400, malformed=0.1, duplicates=0.15, seed=501)
    checkpoint = Path(stream.checkpoint_root("kafka")) / "spark"
    log = empty_lake.parent / "stream.log"

    # 1. killed right after batch 1's Bronze commit, before its dq results and event store
    proc = _spawn_stream(log, max_per_batch=40, pause_after="bronze:1")
    _kill_when(proc, _commit_file(empty_lake, "bronze", "order_events", 1), log)
    batch = _batch_in_flight(checkpoint)
    assert batch == 1
    assert _labelled(empty_lake, "bronze", "order_events", "_batch_id", batch) > 0
    assert _labelled(empty_lake, "gold", "dq_results", "run_id", batch) == 0
    assert _labelled(empty_lake, "silver", "order_events", "_batch_id", batch) == 0

    # 2. a restarted process replays batch 1; killed again right after batch 3's store
    #    commit, before its Gold minutes and Spark's commit
    proc = _spawn_stream(log, max_per_batch=40, pause_after="store:3")
    _kill_when(proc, _commit_file(empty_lake, "silver", "order_events", 3), log)
    batch = _batch_in_flight(checkpoint)
    assert batch == 3
    assert _labelled(empty_lake, "silver", "order_events", "_batch_id", batch) > 0
    records = [r["_record_id"] for r in table_rows(empty_lake, "bronze", "order_events")]
    assert len(records) == len(set(records)), "the replayed batch 1 was written once"
    committed = sum(
        _labelled(empty_lake, "bronze", "order_events", "_batch_id", b) for b in range(batch)
    )

    # 3. more events while the query is down; a restart in this process finishes exactly
    second = producer.produce(events=100, malformed=0.1, duplicates=0.2, seed=502)
    summary = stream.run_foreground("kafka", available_now=True, max_per_batch=200)
    assert summary.rows == first.sent + second.sent - committed, "batch 3 replayed, 0-2 not"
    assert_exact(
        empty_lake,
        first.events + second.events,
        sent=first.sent + second.sent,
        malformed=first.malformed_total + second.malformed_total,
        duplicates=first.duplicates + second.duplicates,
    )


# ---------------------------------------------------------------- a broker outage


def _in_topic(topic: str) -> int:
    """Messages the broker has acknowledged: the sum of the topic's end offsets."""
    ends = stream.topic_end_offsets([topic], timeout=2.0)
    return sum(ends.values()) if ends else 0


class _ProducerThread(threading.Thread):
    """producer.produce at a steady rate in a thread, counting what it has handed to Kafka."""

    def __init__(self, **kwargs):
        super().__init__(name="h7-producer", daemon=True)
        self.kwargs = kwargs
        self.valid_sent = 0
        self.live: producer.ProduceResult | None = None  # produce()'s own, updated as it goes
        self.result: producer.ProduceResult | None = None
        self.error: BaseException | None = None

    def _count(self, event: dict, at: float) -> None:
        self.valid_sent += 1

    def _progress(self, result: producer.ProduceResult) -> None:
        self.live = result

    def run(self) -> None:
        try:
            self.result = producer.produce(
                **self.kwargs, on_send=self._count, progress=self._progress
            )
        except BaseException as exc:  # re-raised by the test through `error`
            self.error = exc


def test_broker_down_for_seconds_loses_and_doubles_nothing(
    spark, empty_lake: Path, topic: str, request: pytest.FixtureRequest
) -> None:
    """Unlike test_live's immediate restart: seconds of outage, with sends in flight."""
    home = request.getfixturevalue("kafka_broker").home
    first = producer.produce(events=80, malformed=0.1, duplicates=0.2, seed=601)
    stream.start_background(spark, source="kafka", trigger_seconds=1.0, max_per_batch=50)
    try:
        wait_for(lambda: _processed() >= first.sent, 240, "the first events")
        assert gold_minutes(empty_lake) == expected_minutes(first.events)
        during = _ProducerThread(events=300, rate=20, malformed=0.1, duplicates=0.2, seed=602)
        during.start()
        wait_for(lambda: during.valid_sent >= 10, 60, "the producer under way", every=0.1)
        broker.stop(home=home)
        assert not broker.status(home=home).running
        down_at = during.valid_sent
        # the producer keeps sending into its buffer while no broker answers (~3 s)
        wait_for(
            lambda: during.valid_sent >= down_at + 50 or not during.is_alive(),
            60,
            "sends while the broker is down",
            every=0.1,
        )
        assert during.error is None, during.error
        assert during.valid_sent >= down_at + 50
        assert not broker.is_healthy(timeout=1.0), "the broker must really be down"
        assert broker.start(home=home).healthy
        # what the producer buffered during the outage reaches the topic promptly
        # (kafka-python's default 30 s reconnect backoff used to idle it for up to ~35 s)
        assert during.live is not None
        handed = during.live.sent
        wait_for(
            lambda: _in_topic(topic) >= first.sent + handed,
            10,
            "the messages buffered during the outage in the topic",
            every=0.5,
        )
        during.join(180)
        assert not during.is_alive() and during.error is None, during.error
        assert during.result is not None and during.result.sent == 300
        after = producer.produce(events=80, malformed=0.1, duplicates=0.2, seed=603)

        runs = [first, during.result, after]
        events = [e for r in runs for e in r.events]
        sent = sum(r.sent for r in runs)
        wait_for(lambda: _processed() >= sent, 240, "every event sent around the outage")
        status = stream.status()
        assert status["active"], status
        wait_for(lambda: stream.status()["consumer_lag"] == 0, 60, "zero consumer lag")
    finally:
        stream.stop()
    assert_exact(
        empty_lake,
        events,
        sent=sent,
        malformed=sum(r.malformed_total for r in runs),
        duplicates=sum(r.duplicates for r in runs),
    )


# ---------------------------------------------------------------- load


def test_malformed_and_duplicates_under_load_are_exact(
    spark, empty_lake: Path, topic: str, request: pytest.FixtureRequest
) -> None:
    """4000 messages at 400/s into a running query: many batches, duplicates across them."""
    request.getfixturevalue("kafka_broker")
    stream.start_background(spark, source="kafka", trigger_seconds=0.5, max_per_batch=500)
    try:
        sent = producer.produce(events=4000, rate=400, malformed=0.05, duplicates=0.1, seed=701)
        assert sent.malformed_total > 100 and sent.duplicates > 200
        wait_for(lambda: _processed() >= sent.sent, 240, "all 4000 messages")
        status = stream.status()
        assert status["active"] and status["restarts"] == 0, status
        assert status["batches"] >= 8, "the load was spread over many micro-batches"
    finally:
        stream.stop()
    assert_exact(
        empty_lake,
        sent.events,
        sent=sent.sent,
        malformed=sent.malformed_total,
        duplicates=sent.duplicates,
    )
