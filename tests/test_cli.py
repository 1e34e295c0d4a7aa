"""`python -m pipeline`: readable errors and exit codes, as a script or a scheduler sees them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str, lake_root: Path, env: dict | None = None, timeout: int = 300):
    base = {**os.environ, "SHOPLAKE_LAKE": str(lake_root), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_every_verb_has_help(tmp_path):
    for verb in ("generate", "run", "quality", "bench"):
        done = _cli(verb, "--help", lake_root=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "usage:" in done.stdout


def test_generate_prints_a_summary_and_writes_manifests(tmp_path):
    done = _cli("generate", "--orders", "200", "--batches", "2", "--seed", "3", lake_root=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("generated 2 batch(es)")
    manifests = sorted((tmp_path / "landing" / "_manifests").glob("batch-*.json"))
    assert [json.loads(p.read_text())["batch_id"] for p in manifests] == [
        "batch-000001",
        "batch-000002",
    ]


def test_bad_arguments_exit_non_zero(tmp_path):
    done = _cli("generate", "--orders", "0", lake_root=tmp_path)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("error:")


def test_missing_java_is_named(tmp_path):
    bare_path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if not (Path(p) / "java").exists()
    )
    done = _cli("run", "all", lake_root=tmp_path, env={"PATH": bare_path, "JAVA_HOME": ""})
    assert done.returncode == 1
    assert "Java 17 or newer is required" in done.stderr
    assert "Traceback" not in done.stderr


def test_empty_landing_zone_exits_one_with_a_hint(tmp_path):
    done = _cli("run", "all", lake_root=tmp_path)
    assert done.returncode == 1, done.stdout
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: run") and "generate data" in last
    assert "Traceback" not in done.stderr


def test_an_unknown_target_is_named_with_the_choices(tmp_path):
    done = _cli("run", "gold.nothing", lake_root=tmp_path)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert "unknown target 'gold.nothing'" in last and "gold.revenue_anomalies" in last
    assert "Traceback" not in done.stderr


def test_corrupt_table_is_reported_by_name(populated_lake, tmp_path):
    copy = tmp_path / "lake"
    shutil.copytree(populated_lake, copy)
    log = copy / "silver" / "orders" / "_delta_log"
    for entry in log.glob("*.json"):
        entry.write_text("{not json")
    for entry in log.glob("*.checkpoint*"):
        entry.unlink()
    done = _cli("run", "gold", lake_root=copy)
    assert done.returncode == 1
    assert "silver.orders" in done.stderr
    assert "Traceback" not in done.stderr
