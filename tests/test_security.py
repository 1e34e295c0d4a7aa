"""The app's security defaults, checked so a later change cannot quietly drop them.

The dashboard holds business data and can start jobs: it must listen on the
loopback interface only, keep Streamlit's XSRF protection, never render data as
raw HTML, never open files a visitor names, and never print a Kafka password.
"""

from __future__ import annotations

import ast
import ipaddress
import logging
import os
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APP_FILES = [ROOT / "Home.py", *sorted((ROOT / "pages").glob("*.py"))]
SERVER_START_SECONDS = 120


def _parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _dotted(node: ast.AST) -> str:
    """`st.components.v1.html` for an attribute chain, '' for anything else."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _is_static_text(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _calls(path: Path) -> Iterator[ast.Call]:
    yield from (n for n in ast.walk(_parsed(path)) if isinstance(n, ast.Call))


# ------------------------------------------------------------------ configuration


def test_streamlit_config_listens_on_localhost_with_xsrf() -> None:
    server = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())["server"]
    assert server["address"] == "localhost"
    assert server["enableXsrfProtection"] is True
    assert server.get("enableCORS", True) is True


def test_make_run_passes_localhost_too() -> None:
    """`make run` must not override the config with a public address."""
    run_lines = [
        line for line in (ROOT / "Makefile").read_text().splitlines() if "streamlit run" in line
    ]
    assert run_lines, "the Makefile has no streamlit run line"
    for line in run_lines:
        assert "--server.address localhost" in line, line
        assert "0.0.0.0" not in line and "enableXsrfProtection false" not in line


# ------------------------------------------------------------------ the running server


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def app_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One `streamlit run Home.py` for the module, with the repository's own config."""
    port = _free_port()
    folder = tmp_path_factory.mktemp("security_app")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_SERVER_")}
    env.update(SHOPLAKE_LAKE=str(folder / "lake"), STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    log_path = folder / "streamlit.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "Home.py", "--server.port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while not _healthy(port):
            assert proc.poll() is None, f"streamlit exited: {log_path.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"no answer: {log_path.read_text()[-2000:]}"
            time.sleep(0.5)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


def _own_addresses() -> set[str]:
    """This machine's non-loopback IPv4 addresses (no packet is sent to find them)."""
    found: set[str] = set()
    try:
        found.update(
            i[4][0] for i in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
        )
    except OSError:
        pass  # an unresolvable host name: the routing table may still know an address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET: connect() on UDP only picks a route
            found.add(s.getsockname()[0])
        except OSError:
            pass  # no route at all: then only loopback exists
    return {a for a in found if not ipaddress.ip_address(a).is_loopback}


def _listening(port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Local addresses of the TCP sockets listening on ``port`` (Linux /proc/net)."""
    out = []
    for name, width in (("tcp", 8), ("tcp6", 32)):
        table = Path("/proc/net") / name
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            hex_ip, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port or len(hex_ip) != width:
                continue
            # each 32-bit word is in host (little-endian) order
            raw = b"".join(bytes.fromhex(hex_ip[i : i + 8])[::-1] for i in range(0, width, 8))
            out.append(ipaddress.ip_address(raw))
    return out


def test_app_listens_only_on_loopback(app_port: int) -> None:
    for address in _own_addresses():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(3)
            assert s.connect_ex((address, app_port)) != 0, f"the app answers on {address}"
    if Path("/proc/net/tcp").exists():
        listening = _listening(app_port)
        assert listening, "the app's listening socket was not found"
        for address in listening:
            mapped = getattr(address, "ipv4_mapped", None)
            assert (mapped or address).is_loopback, f"the app listens on {address}"


# ------------------------------------------------------------------ what pages render and read

HTML_SINKS = {"st.html", "html", "components.html", "components.v1.html", "st.components.v1.html"}


def test_no_page_renders_data_as_raw_html() -> None:
    """unsafe_allow_html, st.html and components.html only ever get static markup."""
    offenders = []
    for path in APP_FILES:
        for call in _calls(path):
            unsafe = any(
                k.arg == "unsafe_allow_html"
                and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                for k in call.keywords
            )
            sink = _dotted(call.func) in HTML_SINKS
            if (unsafe or sink) and not (call.args and _is_static_text(call.args[0])):
                offenders.append(f"{path.name}:{call.lineno}")
    assert not offenders, offenders


FILE_READERS = {"open", "io.open", "os.open", "Path", "pathlib.Path", "os.listdir", "os.scandir"}
FILE_METHODS = {"read_text", "read_bytes", "open", "iterdir", "glob", "rglob"}
DATA_READERS = ("pd.read_", "pq.read_", "pa.parquet.read_", "DeltaTable", "duckdb.")


def test_no_page_opens_files_itself() -> None:
    """Pages read through pipeline.read (contract tables under the lake root only).

    The one path a page may build is its own location (``Path(__file__)``).
    """
    offenders = []
    for path in APP_FILES:
        for call in _calls(path):
            name = _dotted(call.func)
            own_file = bool(call.args) and _dotted(call.args[0]) == "__file__"
            if name in FILE_READERS and not own_file:
                offenders.append(f"{path.name}:{call.lineno} {name}")
            elif name.startswith(DATA_READERS):
                offenders.append(f"{path.name}:{call.lineno} {name}")
            elif (
                isinstance(call.func, ast.Attribute)
                and call.func.attr in FILE_METHODS
                and "__file__" not in ast.unparse(call.func.value)
                and not name.startswith(("st.", "re."))
            ):
                offenders.append(f"{path.name}:{call.lineno} {ast.unparse(call.func)}")
    assert not offenders, offenders


@pytest.mark.parametrize(
    ("layer", "table"),
    [("gold", "../../../etc/passwd"), ("gold", "/etc"), ("landing", "orders"), ("../x", "y")],
)
def test_reads_reach_contract_tables_only(layer: str, table: str) -> None:
    """What a page can read: a contract table under the lake root, nothing a visitor names."""
    from pipeline import read

    with pytest.raises(read.UnknownTableError):
        read.table_path(layer, table)
    with pytest.raises(read.UnknownTableError):
        read.read_table(layer, table)


# ------------------------------------------------------------------ secrets


@pytest.fixture()
def kafka_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    """SASL settings for an external cluster that is not there (a closed local port)."""
    secret = f"pw-{uuid.uuid4().hex}"
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{_free_port()}")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "shoplake")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", secret)
    return secret


def test_kafka_status_command_never_prints_the_password(kafka_secret: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "kafka", "status"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert "invalid choice" not in output, output  # the verb exists (docs/contract.md §1)
    assert "external" in output or "unreachable" in output, output
    assert kafka_secret not in output


def test_kafka_status_never_logs_the_password(
    kafka_secret: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """Even with every logger at DEBUG (kafka-python's included) the secret stays out."""
    from pipeline.config import settings
    from pipeline.live import broker

    caplog.set_level(logging.DEBUG)
    status = broker.status(timeout=1.0)
    print(status, status.as_dict(), settings())
    assert status.mode == "external" and not status.healthy
    captured = capsys.readouterr()
    assert kafka_secret not in captured.out + captured.err
    assert kafka_secret not in caplog.text


def test_topic_creation_never_logs_the_password(
    kafka_secret: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The producer's admin client is built from the same settings: same rule."""
    from kafka.errors import KafkaError

    from pipeline.live import broker, producer

    settings_with_password = broker.client_options
    monkeypatch.setattr(  # give up on the absent cluster quickly
        broker,
        "client_options",
        lambda: {**settings_with_password(), "bootstrap_timeout_ms": 1000},
    )
    caplog.set_level(logging.DEBUG)
    with pytest.raises(KafkaError):
        producer.ensure_topic("orders")
    assert kafka_secret not in caplog.text
