"""Configuration is read in pipeline/config.py only, and the README lists every variable."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PREFIXES = ("SHOPLAKE_", "SPARK_", "KAFKA_")
CONFIG = ROOT / "pipeline" / "config.py"
# the benchmark sets and restores variables for the runs it starts (its own knobs)
BENCH = ROOT / "pipeline" / "bench"


def _env_reads(path: Path) -> list[tuple[int, str]]:
    """(line, name) of every os.environ.get / os.getenv / os.environ[...] read of a constant."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        name = None
        if isinstance(node, ast.Call) and node.args:
            func = ast.unparse(node.func)
            if func in ("os.environ.get", "os.getenv", "environ.get", "getenv"):
                name = node.args[0]
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            if ast.unparse(node.value) in ("os.environ", "environ"):
                name = node.slice
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            found.append((node.lineno, name.value))
        elif isinstance(name, ast.JoinedStr):  # f"KAFKA_{key}"
            found.append((node.lineno, ast.unparse(name)))
    return found


def _app_files() -> list[Path]:
    files = [ROOT / "Home.py", *sorted((ROOT / "pages").glob("*.py"))]
    files += [p for p in sorted((ROOT / "pipeline").rglob("*.py")) if BENCH not in p.parents]
    return files


def test_settings_are_read_in_config_only() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line} {name}"
        for path in _app_files()
        if path != CONFIG
        for line, name in _env_reads(path)
        if name.lstrip("f'\"").startswith(PREFIXES)
    ]
    assert not offenders, offenders


def test_readme_lists_every_variable_config_reads() -> None:
    names = {name for _, name in _env_reads(CONFIG) if name.startswith(PREFIXES)}
    names |= {
        f"KAFKA_{k}" for k in re.findall(r'"(SECURITY_PROTOCOL|SASL_\w+)"', CONFIG.read_text())
    }
    assert {"SHOPLAKE_LAKE", "SPARK_MASTER", "SHOPLAKE_FRESHNESS_DAYS"} <= names  # the scan works
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    table = {m for m in re.findall(r"`([A-Z][A-Z0-9_]+)`", section) if m.startswith(PREFIXES)}
    assert not names - table, sorted(names - table)
