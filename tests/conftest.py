"""Shared fixtures: one SparkSession per test process, and seeded lakes.

Lakes live in temporary folders; SHOPLAKE_LAKE points at the one a test uses
(pipeline.config reads the environment on every call).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("SHOPLAKE_SPARK_UI", "false")
os.environ.setdefault("SHOPLAKE_SHUFFLE_PARTITIONS", "2")

POPULATED = dict(orders=1500, batches=3, seed=11, defect_rate=0.03)


@contextmanager
def lake_at(path: Path) -> Iterator[Path]:
    previous = os.environ.get("SHOPLAKE_LAKE")
    os.environ["SHOPLAKE_LAKE"] = str(path)
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop("SHOPLAKE_LAKE", None)
        else:
            os.environ["SHOPLAKE_LAKE"] = previous


def look_remote(monkeypatch: pytest.MonkeyPatch, state: Path) -> None:
    """Make ``file://`` lake roots look remote (the code paths of a cloud lake, run on local
    files): ``storage.local_path`` gives no folder for them, and the run lock, which a remote
    lake keeps in the state folder, goes to ``state``."""
    from pipeline import runner, storage

    real_local_path = storage.local_path

    def remote_file_urls(location: str | Path) -> Path | None:
        return None if str(location).startswith("file:") else real_local_path(location)

    monkeypatch.setattr(storage, "local_path", remote_file_urls)
    monkeypatch.setattr(runner, "CACHE_DIR", state)


# The files that take longest (each a few minutes of pipeline runs) go first, so that
# under `make test`'s workers (pytest-xdist, --dist loadfile) no long file starts last
# while the others idle. Within a file the order is unchanged.
LONGEST_FIRST = (  # seconds per file in one `make test` (three workers, --durations=0)
    "test_writers.py",  # 347
    "test_cluster.py",  # 241
    "test_incremental.py",  # 213
    "test_pages.py",  # 187
    "test_live_crash.py",  # 170
    "test_anomalies.py",  # 142
    "test_crash.py",  # 141
    "test_browser.py",  # 138
    "test_corpus.py",  # 116
    "test_pipeline.py",  # 115
    "test_live.py",  # 102
    "test_cli.py",  # 86
    "test_merge_engines.py",  # 70
    "test_import.py",  # 59
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def spark():
    from pipeline.spark import get_spark

    # Lakes here are small and the session long: the quick compiler alone (pipeline/spark.py).
    # Two runs of `make test`, one after the other: 10 min 35 s with it, 15 min 18 s without.
    session = get_spark("shoplake-tests", short_run=True)
    yield session


@pytest.fixture(scope="session")
def populated_lake(spark, tmp_path_factory, worker_id: str) -> Path:
    """A lake built by the generator and one full run: read-only for the tests that share it.

    Under `make test`'s workers it is built once, not once per worker: the first worker
    that needs it builds it in the folder the workers share, holding a lock; the others
    wait for the lock and read the same files (pytest-xdist's recipe for a session
    fixture shared by workers). A build that fails leaves no marker: the next one retries.
    """
    if worker_id == "master":  # one process: nothing to share
        root = tmp_path_factory.mktemp("populated_lake")
        _populate(spark, root)
        return root
    shared = tmp_path_factory.getbasetemp().parent  # this test session's, not an older one's
    root, built = shared / "populated_lake", shared / "populated_lake.built"
    with open(shared / "populated_lake.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        if not built.exists():
            shutil.rmtree(root, ignore_errors=True)
            _populate(spark, root)
            built.touch()
    return root


def _populate(spark, root: Path) -> None:
    from pipeline.runner import run
    from pipeline.sources.generate import generate

    with lake_at(root):
        generate(root, **POPULATED)
        result = run("all", spark=spark)
        assert result.ok, result.error


@pytest.fixture()
def use_lake(populated_lake) -> Iterator[Path]:
    with lake_at(populated_lake) as root:
        yield root


@pytest.fixture()
def empty_lake(tmp_path) -> Iterator[Path]:
    with lake_at(tmp_path / "lake") as root:
        yield root


@pytest.fixture()
def topic(monkeypatch: pytest.MonkeyPatch) -> str:
    """A topic of its own per test: the checkpoint and the expected tables start empty."""
    name = f"orders_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("SHOPLAKE_TOPIC", name)
    return name
