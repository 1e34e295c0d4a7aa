"""A lake root given as a URL: every location is built by string, and the batch run works on one.

Cloud storage is out of reach here, so the URL code path runs end to end on a
``file://`` root: Spark, delta-rs and pyarrow.fs all take it as a URL, and
nothing on the way goes through pathlib. The joining for ``s3a://`` and
``abfss://`` roots is checked as strings, and the remote-only branches (the
run lock in the state folder, generating into a staging folder and copying
it up) are run by making a ``file://`` URL look remote.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from deltalake import DeltaTable

from pipeline import storage

S3 = "s3a://bucket/shoplake"
ADLS = "abfss://container@account.dfs.core.windows.net/shoplake"


# ---------------------------------------------------------------- joining, as strings


@pytest.mark.parametrize(
    ("root", "want"),
    [
        (S3, "s3a://bucket/shoplake/gold/daily_sales"),
        (S3 + "/", "s3a://bucket/shoplake/gold/daily_sales"),
        ("s3a://bucket", "s3a://bucket/gold/daily_sales"),
        (ADLS, ADLS + "/gold/daily_sales"),
        (
            "abfss://container@account.dfs.core.windows.net/",
            "abfss://container@account.dfs.core.windows.net/gold/daily_sales",
        ),
        ("gs://bucket/lake", "gs://bucket/lake/gold/daily_sales"),
        ("hdfs://namenode:8020/shoplake", "hdfs://namenode:8020/shoplake/gold/daily_sales"),
        ("file:///tmp/lake", "file:///tmp/lake/gold/daily_sales"),
        ("file:///", "file:///gold/daily_sales"),
        ("/tmp/lake", "/tmp/lake/gold/daily_sales"),
    ],
)
def test_join_keeps_scheme_and_authority(root: str, want: str) -> None:
    assert storage.join(root, "gold", "daily_sales") == want
    assert storage.join(root, "gold/", "/daily_sales") == want


@pytest.mark.parametrize("root", [S3, ADLS])
def test_every_location_is_built_from_a_url_root(
    root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline import lake, read
    from pipeline.config import settings
    from pipeline.live import stream

    monkeypatch.setenv("SHOPLAKE_LAKE", root)
    monkeypatch.setenv("SHOPLAKE_TOPIC", "orders")
    cfg = settings()
    assert cfg.lake == root  # not resolved as a local path
    assert cfg.landing == f"{root}/landing"
    assert cfg.table_path("silver", "fact_sales") == f"{root}/silver/fact_sales"
    assert lake.path("bronze", "orders") == f"{root}/bronze/orders"
    assert read.table_path("gold", "customer_rfm") == f"{root}/gold/customer_rfm"
    assert stream.table_path(stream.GOLD) == f"{root}/gold/live_sales_minute"
    assert stream.checkpoint_root("kafka") == f"{root}/_checkpoints/live/kafka/orders"
    assert stream.drop_folder() == f"{root}/stream_drop"
    assert storage.local_path(root) is None
    with pytest.raises(ValueError, match="not a local folder"):
        cfg.lake_path  # noqa: B018


def test_local_path_of_paths_and_file_urls(tmp_path: Path) -> None:
    assert storage.local_path(str(tmp_path)) == tmp_path
    assert storage.local_path(tmp_path.as_uri()) == tmp_path
    assert storage.local_path("file://localhost/tmp/a%20b") == Path("/tmp/a b")
    assert storage.local_path("file://otherhost/tmp/x") is None
    assert storage.local_path(S3) is None


def test_runner_names_tables_under_a_url_root(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.runner import _message

    monkeypatch.setenv("SHOPLAKE_LAKE", S3)
    text = f"[DELTA_MISSING] {S3}/silver/fact_sales is not a Delta table"
    assert _message(RuntimeError(text)) == "[DELTA_MISSING] silver.fact_sales is not a Delta table"


# ---------------------------------------------------------------- the run lock


def test_run_lock_of_a_remote_root_is_a_local_file_keyed_by_the_url(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pipeline import runner

    monkeypatch.setattr(runner, "CACHE_DIR", tmp_path / "state")
    monkeypatch.setenv("SHOPLAKE_LAKE", S3)
    with runner.run_lock():
        locks = list((tmp_path / "state" / "locks").iterdir())
        assert len(locks) == 1 and locks[0].name.endswith(".run.lock")
        assert locks[0].name.startswith("s3a_bucket_shoplake-")
        with pytest.raises(runner.RunInProgressError):
            with runner.run_lock():
                pass
        monkeypatch.setenv("SHOPLAKE_LAKE", ADLS)  # another lake: its own lock
        with runner.run_lock():
            assert len(list((tmp_path / "state" / "locks").iterdir())) == 2
        monkeypatch.setenv("SHOPLAKE_LAKE", S3)
    with runner.run_lock():  # released
        pass


def test_run_lock_of_a_file_url_lives_in_the_lake(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pipeline import runner

    lake = tmp_path / "lake"
    monkeypatch.setattr(runner, "CACHE_DIR", tmp_path / "state")
    monkeypatch.setenv("SHOPLAKE_LAKE", lake.as_uri())
    with runner.run_lock():
        assert (lake / ".run.lock").is_file()
        with pytest.raises(runner.RunInProgressError):
            with runner.run_lock():
                pass
    assert not (tmp_path / "state").exists()


# ---------------------------------------------------------------- files under a URL


def test_storage_lists_reads_and_removes_under_a_file_url(tmp_path: Path) -> None:
    folder = tmp_path / "landing" / "orders"
    folder.mkdir(parents=True)
    (folder / "batch-000002.csv").write_text("b\n")
    (folder / "batch-000001.csv.gz").write_bytes(gzip.compress(b"order_id\n1\n"))
    (folder / "_manifest.json").write_text("{}")
    (folder / ".part.csv").write_text("x")
    (folder / "nested").mkdir()
    url = storage.join(tmp_path.as_uri(), "landing", "orders")

    found = storage.list_files(url)
    assert [f.name for f in found] == ["batch-000001.csv.gz", "batch-000002.csv"]
    first = found[0]
    assert isinstance(first, storage.StoredFile)
    assert str(first) == f"{url}/batch-000001.csv.gz" and first.suffix == ".gz"
    assert storage.size_and_mtime(first)[0] == (folder / "batch-000001.csv.gz").stat().st_size
    with storage.open_binary(first, gunzip=True) as handle:
        assert handle.read() == b"order_id\n1\n"
    with storage.open_binary(found[1]) as handle:
        assert handle.read() == b"b\n"
    truncated = folder / "batch-000003.csv.gz"
    truncated.write_bytes(gzip.compress(b"x" * 1000)[:-12])
    with pytest.raises(EOFError), storage.open_binary(storage.list_files(url)[2], True) as h:
        h.read()

    assert storage.list_files(storage.join(url, "missing")) == []
    assert storage.remove_tree(url) is True
    assert not folder.exists()
    assert storage.remove_tree(url) is False


def test_generate_on_a_remote_root_stages_and_copies_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The generator writes locally; a remote lake gets the same files, copied up."""
    from pipeline.demo import generate_demo
    from pipeline.sources.generate import generate
    from tests.conftest import look_remote

    look_remote(monkeypatch, tmp_path / "state")
    remote, local = tmp_path / "remote", tmp_path / "local"
    monkeypatch.setenv("SHOPLAKE_LAKE", remote.as_uri())
    options = dict(orders=80, seed=5, defect_rate=0.05)

    def files(root: Path) -> dict[str, bytes]:
        landing = root / "landing"
        return {
            str(p.relative_to(landing)): p.read_bytes() for p in landing.rglob("*") if p.is_file()
        }

    (remote / "landing" / "orders").mkdir(parents=True)
    (remote / "landing" / "orders" / "batch-000009.csv").write_text("stale\n")
    generate_demo(batches=2, **options)
    generate(local, batches=2, **options)
    assert files(remote) == files(local)  # the stale file went with the old landing zone

    generate_demo(batches=1, append=True, **options)
    generate(local, batches=1, append=True, **options)
    assert files(remote) == files(local)
    assert "orders/batch-000003.csv" in files(remote)
    assert len(list((tmp_path / "state" / "locks").iterdir())) == 1


# ---------------------------------------------------------------- the batch run on file://


def test_bronze_run_on_a_file_url_lake_lists_logs_and_resets(
    spark, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """generate + run bronze through the command line with SHOPLAKE_LAKE=file:///...:
    every landing file is found and logged by its URL, a rerun reads nothing again,
    and a fresh generate removes the batch tables through the URL. (The whole
    pipeline on a file:// root, with Gold equal to the reference, runs on the
    standalone cluster in tests/test_cluster.py.)"""
    from pipeline import read
    from pipeline.cli import main

    root = tmp_path / "lake"
    monkeypatch.setenv("SHOPLAKE_LAKE", root.as_uri())
    generate = ["generate", "--orders", "200", "--batches", "2", "--seed", "3"]
    assert main(generate) == 0
    assert main(["run", "bronze"]) == 0

    log = DeltaTable(str(root / "bronze" / "_ingested_files")).to_pyarrow_table().to_pylist()
    assert len(log) == 8 and {r["status"] for r in log} == {"ingested"}
    assert read.landing_files() == {
        s: 2 for s in ("orders", "order_items", "customers", "products")
    }
    landed = sum(1 for _ in (root / "landing" / "orders").iterdir())
    orders = read.read_arrow("bronze", "orders")
    assert landed == 2 and orders.num_rows > 200

    bronze_version = read.table_version("bronze", "orders")
    assert main(["run", "bronze"]) == 0  # every landing file is known by its URL: none reread
    assert read.table_version("bronze", "orders") == bronze_version

    assert main(generate) == 0  # fresh demo data: the batch tables go, the run history stays
    assert not (root / "bronze" / "orders").exists()
    assert (root / "gold" / "pipeline_runs" / "_delta_log").is_dir()
