"""Shared fixtures: one SparkSession per test process, and seeded lakes.

Lakes live in temporary folders; SHOPLAKE_LAKE points at the one a test uses
(pipeline.config reads the environment on every call).
"""

from __future__ import annotations

import os
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


# The files that take longest (each a few minutes of pipeline runs) go first, so that
# under `make test`'s two workers (pytest-xdist, --dist loadfile) no long file starts
# last while the other worker idles. Within a file the order is unchanged.
LONGEST_FIRST = (  # seconds per file in one `make test` (three workers, --durations=0)
    "test_incremental.py",  # 342
    "test_cluster.py",  # 334
    "test_live_crash.py",  # 222
    "test_writers.py",  # 219
    "test_anomalies.py",  # 210
    "test_pages.py",  # 194
    "test_pipeline.py",  # 138
    "test_browser.py",  # 135
    "test_crash.py",  # 127
    "test_cli.py",  # 125
    "test_live.py",  # 118
    "test_corpus.py",  # 114
    "test_quality.py",  # 60
    "test_import.py",  # 58
    "test_bench.py",  # 33
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
def populated_lake(spark, tmp_path_factory) -> Path:
    """A lake built by the generator and one full run: read-only for the tests that share it."""
    from pipeline.runner import run
    from pipeline.sources.generate import generate

    root = tmp_path_factory.mktemp("populated_lake")
    with lake_at(root):
        generate(root, **POPULATED)
        result = run("all", spark=spark)
        assert result.ok, result.error
    return root


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
