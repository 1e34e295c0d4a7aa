"""ShopLake on a real Spark standalone cluster, and as a Spark Connect thin client.

One module-wide start of each (pipeline/cluster.py): a master with one worker
(1 core, 1g) and a Spark Connect server carrying the Delta jars, both bound to
127.0.0.1 on free ports, logs under the test's temporary folder, stopped by a
finalizer even when a test fails. The batch pipeline runs in a subprocess
with SPARK_MASTER pointing at the cluster, so its tasks (and Delta's code,
shipped to the executor by spark.jars) run in the worker's executor; its lake
root is a file:// URL (the URL code path a shared-storage lake takes), and its
Gold tables are compared with the independent plain-Python reference. The live
query runs there too, reading the session's local Kafka broker.

The worker has one core and an application holds it until it ends, so the
applications run one after another: every subprocess is waited for, the
master must list no active application before the next one starts, and the
Connect server runs its own work in local mode.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from deltalake import DeltaTable

from pipeline.cluster import ConnectServer, StandaloneCluster
from pipeline.config import PROJECT_ROOT
from tests import reference
from tests.live_support import (
    expected_minutes,
    gold_minutes,
    kafka_broker,  # noqa: F401  (session fixture)
    table_rows,
)

pytestmark = pytest.mark.cluster

GENERATE = ["generate", "--orders", "200", "--batches", "2", "--seed", "3"]


def _env(lake: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("SPARK_MASTER", "SPARK_REMOTE"):
        env.pop(key, None)
    env.update(
        SHOPLAKE_LAKE=str(lake),
        SHOPLAKE_SPARK_UI="false",
        SHOPLAKE_SHUFFLE_PARTITIONS="2",
        SHOPLAKE_DRIVER_MEMORY="1g",
        PYSPARK_PYTHON=sys.executable,
        PYTHONPATH=str(PROJECT_ROOT),
    )
    env.update(extra)
    return env


def _cli(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Both started at once (their JVMs boot in parallel), both stopped at the end."""
    logs = tmp_path_factory.mktemp("cluster-logs")
    cluster = StandaloneCluster(logs / "standalone", workers=1, cores=1, memory="1g")
    # The Connect server runs its own work in local mode: on the cluster it would hold the
    # worker's only core and the pipeline's application would wait for it.
    server = ConnectServer(logs / "connect", master="local[1]")
    try:
        cluster.launch()
        server.launch()
        cluster.wait_ready()
        server.wait_ready()
        yield cluster, server
    finally:
        server.stop()
        cluster.stop()
    assert not cluster.daemons and server.daemon is None


@pytest.fixture(scope="module")
def cluster_lake(servers, tmp_path_factory) -> Path:
    """Generated, then the whole batch pipeline run against the standalone cluster."""
    cluster, _ = servers
    lake = tmp_path_factory.mktemp("cluster_lake")
    env = _env(lake, SHOPLAKE_LAKE=lake.as_uri(), SPARK_MASTER=cluster.url)
    cluster.wait_idle()
    made = _cli(GENERATE, env)
    assert made.returncode == 0, made.stderr[-3000:]
    ran = _cli(["run", "all"], env)
    assert ran.returncode == 0, (ran.stdout[-3000:], ran.stderr[-3000:])
    assert "succeeded" in ran.stdout
    return lake


def _connect(url: str):
    """A new Connect session, straight from the Connect builder: pyspark's generic builder
    refuses while this test process holds a classic session, and sets
    SPARK_CONNECT_MODE_ENABLED in os.environ for the rest of the process."""
    from pyspark.sql.connect.session import SparkSession as RemoteSparkSession

    return RemoteSparkSession.builder.remote(url).create()


def _gold(lake: Path, table: str) -> list[dict]:
    return DeltaTable(str(lake / "gold" / table)).to_pyarrow_table().to_pylist()


def test_pipeline_runs_on_the_cluster_and_matches_the_reference(servers, cluster_lake):
    cluster, _ = servers
    # It really ran there: the master saw our application finish on its worker's executor.
    apps = cluster.status().get("completedapps", [])
    assert any(a["name"] == "shoplake" and a["cores"] == 1 for a in apps), apps
    assert cluster.healthy()
    # A short run's executor compiles as its driver does (pipeline/spark.py: _jvm_options).
    ran = next(a["id"] for a in apps if a["name"] == "shoplake")
    launched = "".join(p.read_text() for p in cluster.log_dir.glob(f"worker-0/{ran}/*/stderr"))
    command = [line for line in launched.splitlines() if "Spark Executor Command" in line]
    assert command and '"-XX:TieredStopAtLevel=1"' in command[0], command

    expected = reference.compute(cluster_lake / "landing")
    daily = {r["order_date"]: r for r in _gold(cluster_lake, "daily_sales")}
    assert daily and set(daily) == set(expected.daily_sales)
    for day, want in expected.daily_sales.items():
        for column in reference.DAILY_COLUMNS:
            assert daily[day][column] == want[column], (day, column)

    categories = {(r["month"], r["category"]): r for r in _gold(cluster_lake, "category_sales")}
    assert categories and set(categories) == set(expected.category_sales)
    for key, want in expected.category_sales.items():
        got = categories[key]
        for column in ("orders", "units", "net_revenue", "gross_margin"):
            assert got[column] == want[column], (key, column)
        assert math.isclose(got["revenue_share"], want["revenue_share"], rel_tol=1e-9)


@pytest.mark.kafka
def test_live_query_runs_on_the_cluster_reading_the_local_broker(
    servers, request, tmp_path, monkeypatch
):
    """`stream run --available-now` with SPARK_MASTER=the cluster: the Kafka source reads
    the local broker from the worker's executor, and gold.live_sales_minute is exact."""
    from pipeline.live import producer

    cluster, _ = servers
    broker = request.getfixturevalue("kafka_broker")  # the session's local broker
    topic = f"orders_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("SHOPLAKE_TOPIC", topic)
    sent = producer.produce(events=150, malformed=0.1, duplicates=0.15, seed=811)
    assert sent.events and sent.duplicates and sent.malformed_total

    lake = tmp_path / "live_lake"
    env = _env(
        lake,
        SHOPLAKE_LAKE=lake.as_uri(),
        SPARK_MASTER=cluster.url,
        SHOPLAKE_TOPIC=topic,
        SHOPLAKE_KAFKA_PORT=str(broker.port),
    )
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    cluster.wait_idle()  # one application at a time on the worker's single core
    before = {a["id"] for a in cluster.status().get("completedapps", [])}
    ran = _cli(["stream", "run", "--source", "kafka", "--available-now"], env)
    assert ran.returncode == 0, (ran.stdout[-3000:], ran.stderr[-3000:])

    finished = [a for a in cluster.status().get("completedapps", []) if a["id"] not in before]
    assert [(a["name"], a["cores"]) for a in finished] == [("shoplake", 1)], finished
    assert gold_minutes(lake) == expected_minutes(sent.events)
    stored = [r["event_id"] for r in table_rows(lake, "silver", "order_events")]
    assert len(stored) == len(set(stored)) == len(sent.events)
    assert len(table_rows(lake, "bronze", "order_events")) == sent.sent
    quarantined = [
        r for r in table_rows(lake, "silver", "quarantine") if r["source_table"] == "order_events"
    ]
    assert len(quarantined) == sent.malformed_total
    assert sent.sent == len(stored) + len(quarantined) + sent.duplicates


def test_connect_client_reads_gold_through_the_server(servers, cluster_lake):
    _, server = servers
    assert server.healthy()
    spark = _connect(server.url)
    try:
        assert spark.conf.get("spark.sql.extensions") == "io.delta.sql.DeltaSparkSessionExtension"
        remote = spark.read.format("delta").load(str(cluster_lake / "gold" / "daily_sales"))
        got = {r["order_date"]: (r["orders"], r["net_revenue"]) for r in remote.collect()}
        want = {
            r["order_date"]: (r["orders"], r["net_revenue"])
            for r in _gold(cluster_lake, "daily_sales")
        }
        assert got and got == want
        # Plain DataFrame work is fine on a thin client: aggregate on the server.
        total = remote.groupBy().sum("orders").collect()[0][0]
        assert total == sum(v[0] for v in want.values())
    finally:
        spark.stop()


def test_connect_client_writes_and_merges_delta_with_sql(servers, tmp_path):
    """Delta writes through the data-source API and MERGE through SQL need no DeltaTable."""
    _, server = servers
    spark = _connect(server.url)
    target = str(tmp_path / "merged")
    try:
        spark.createDataFrame([(1, "a"), (2, "b")], "id INT, v STRING").write.format("delta").save(
            target
        )
        spark.createDataFrame([(2, "B"), (3, "c")], "id INT, v STRING").createOrReplaceTempView(
            "updates"
        )
        spark.sql(
            f"MERGE INTO delta.`{target}` t USING updates u ON t.id = u.id "
            "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
        ).collect()
    finally:
        spark.stop()
    rows = sorted(DeltaTable(target).to_pyarrow_table().to_pylist(), key=lambda r: r["id"])
    assert rows == [{"id": 1, "v": "a"}, {"id": 2, "v": "B"}, {"id": 3, "v": "c"}]
    assert DeltaTable(target).version() == 1


def test_connect_session_lacks_what_the_pipeline_needs(servers, cluster_lake, monkeypatch):
    """The two classic-only features the batch run uses, each failing as documented."""
    from delta.tables import DeltaTable as SparkDeltaTable

    _, server = servers
    spark = _connect(server.url)
    try:
        # 1. sparkContext (runner: setJobGroup; progress display: statusTracker) is JVM-only.
        with pytest.raises(Exception, match="JVM_ATTRIBUTE_NOT_SUPPORTED"):
            spark.sparkContext  # noqa: B018
        # 2. delta.tables.DeltaTable on a Connect session sends Delta's own plan extension,
        #    which the server can only run with the Delta Connect server plugin. delta-spark
        #    picks its Connect client when SPARK_CONNECT_MODE_ENABLED is set, as pyspark's
        #    builder does for the app's SPARK_REMOTE session.
        monkeypatch.setenv("SPARK_CONNECT_MODE_ENABLED", "1")
        with pytest.raises(Exception, match="NO_HANDLER_FOR_EXTENSION"):
            SparkDeltaTable.forPath(
                spark, str(cluster_lake / "gold" / "daily_sales")
            ).toDF().count()
    finally:
        spark.stop()


def test_pipeline_run_through_connect_fails_with_a_readable_message(servers, tmp_path):
    _, server = servers
    lake = tmp_path / "lake"
    env = _env(lake, SPARK_REMOTE=server.url)
    made = _cli(GENERATE, env)  # plain Python: works without Spark
    assert made.returncode == 0, made.stderr[-3000:]
    ran = _cli(["run", "all"], env, timeout=120)
    assert ran.returncode == 1
    assert "error:" in ran.stderr and "sparkContext" in ran.stderr, ran.stderr[-2000:]
    assert "Traceback" not in ran.stderr
    assert not (lake / "silver").exists()  # nothing was half-refined


def test_a_master_answering_html_before_json_is_waited_for() -> None:
    """The master's web UI once answered its JSON path with the HTML page while starting
    (a suite's cluster fixture failed on it): waiting treats that as not ready yet, and
    still gives up, with the daemons' logs, if it never turns into JSON."""
    import json

    from pipeline.cluster import ClusterError, _wait

    answers = iter(["<!DOCTYPE html><html>", "<!DOCTYPE html><html>", '{"status": "ALIVE"}'])

    def status() -> bool:
        return json.loads(next(answers)).get("status") == "ALIVE"

    _wait("spark master", status, [], timeout=10)
    assert next(answers, None) is None  # asked until the JSON came
    with pytest.raises(ClusterError, match="spark master not healthy"):
        _wait("spark master", lambda: json.loads("<html>"), [], timeout=0.5)
