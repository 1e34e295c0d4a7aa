"""A local single-node Kafka broker (KRaft), started from Apache Kafka's own jars.

Long (~550 lines): the broker's whole life cycle (start, probe, stop) and the client
settings every Kafka user here shares, kept together.

ShopLake runs ``kafka.Kafka`` in a detached Java process (its own session, so
it outlives the app or CLI that started it), with data and logs under
``<lake>/_kafka``. A pid file and a small state file say which process and
port belong to it, so ``start`` twice finds the running broker instead of
starting a second one, and ``stop`` ends exactly that process.

When ``KAFKA_BOOTSTRAP_SERVERS`` is set the local broker is not used: start and
stop do nothing and status reports on the external cluster.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline import jvm
from pipeline.config import settings

START_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 30.0
HEAP = "-Xmx512m"


class BrokerError(RuntimeError):
    """The broker could not be started, reached or stopped; the message says why."""


@dataclass
class BrokerStatus:
    mode: str  # local | external
    bootstrap_servers: str
    running: bool  # a local broker process is alive (always False for external)
    healthy: bool  # the cluster answers a metadata request
    pid: int | None = None
    port: int | None = None
    home: str | None = None
    cluster_id: str | None = None
    message: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- locations


def home_dir(home: Path | str | None = None) -> Path:
    """Where the local broker keeps everything: <lake>/_kafka unless told otherwise."""
    if home is not None:
        return Path(home)
    lake = settings().lake
    if "://" in lake:
        raise BrokerError(
            f"the lake {lake} is not a local folder: the local Kafka broker needs one; "
            "set KAFKA_BOOTSTRAP_SERVERS to use an external cluster"
        )
    return Path(lake) / "_kafka"


def _paths(home: Path) -> dict[str, Path]:
    return {
        "data": home / "data",
        "logs": home / "logs",
        "config": home / "server.properties",
        "log4j": home / "log4j2.properties",
        "pid": home / "broker.pid",
        "state": home / "broker.json",
        "lock": home / ".lock",
        "out": home / "logs" / "server.out",
    }


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    """One start/stop at a time per broker home, across processes."""
    home.mkdir(parents=True, exist_ok=True)
    with open(_paths(home)["lock"], "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------- processes

_children: dict[int, subprocess.Popen] = {}


def _alive(pid: int) -> bool:
    """True for a live process; a zombie child is reaped and counts as dead."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        _children.pop(pid, None)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[-1].split()
            if fields and fields[0] == "Z":
                return False
    return True


def _is_our_broker(pid: int, home: Path) -> bool:
    """Guard against pid reuse: the process must be kafka.Kafka with our config."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return _alive(pid)
    with contextlib.suppress(OSError):
        args = cmdline.read_bytes().split(b"\0")
        return b"kafka.Kafka" in args and str(_paths(home)["config"]).encode() in args
    return False


def _read_pid(home: Path) -> int | None:
    path = _paths(home)["pid"]
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _read_state(home: Path) -> dict:
    try:
        return json.loads(_paths(home)["state"].read_text())
    except (OSError, ValueError):
        return {}


def _running_pid(home: Path) -> int | None:
    pid = _read_pid(home)
    if pid is not None and _alive(pid) and _is_our_broker(pid, home):
        return pid
    return None


# ---------------------------------------------------------------- ports


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _accepts(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- health


def client_options() -> dict:
    """kafka-python connection settings, with SASL/SSL for an external cluster."""
    from pipeline.config import kafka_security_options

    opts: dict = {"bootstrap_servers": settings().bootstrap_servers.split(",")}
    sec = kafka_security_options()
    if "security_protocol" in sec:
        opts["security_protocol"] = sec["security_protocol"]
    if "sasl_mechanism" in sec:
        opts["sasl_mechanism"] = sec["sasl_mechanism"]
    if "sasl_username" in sec:
        opts["sasl_plain_username"] = sec["sasl_username"]
    if "sasl_password" in sec:
        opts["sasl_plain_password"] = sec["sasl_password"]
    return opts


@contextlib.contextmanager
def quiet_client_logs() -> Iterator[None]:
    """A probe of a broker that may be down: kafka-python would log every refusal as an error."""
    logger = logging.getLogger("kafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def cluster_id(timeout: float = 5.0) -> str | None:
    """The cluster id the configured bootstrap servers report, or None if unreachable."""
    with quiet_client_logs():
        return _cluster_id(timeout)


def _cluster_id(timeout: float) -> str | None:
    from kafka import KafkaAdminClient

    ms = int(timeout * 1000)
    try:
        admin = KafkaAdminClient(
            **client_options(),
            bootstrap_timeout_ms=ms,
            request_timeout_ms=ms,
            client_id="shoplake-health",
        )
    except Exception:
        return None
    try:
        described = admin.describe_cluster()
        return str(described.get("cluster_id") or "") or None
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            admin.close()


def is_healthy(timeout: float = 5.0) -> bool:
    host, _, port = settings().bootstrap_servers.split(",")[0].rpartition(":")
    if settings().uses_local_broker and not _accepts(host or "127.0.0.1", int(port)):
        return False
    return cluster_id(timeout) is not None


# ---------------------------------------------------------------- config


def _kafka_cluster_uuid() -> str:
    """Kafka's Uuid text form: 16 random bytes, URL-safe base64 without padding.

    Never one that starts with ``-`` (one in 64 do): Kafka's storage tool would
    read it as an option and fail ("argument --cluster-id/-t: expected one
    argument"), as Kafka's own ``Uuid.randomUuid`` avoids by drawing again.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _server_properties(home: Path, port: int, controller_port: int) -> str:
    p = _paths(home)
    return "\n".join(
        [
            "# Written by ShopLake (pipeline/live/broker.py) on every start.",
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={p['data']}",
            "num.partitions=1",
            "default.replication.factor=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "log.retention.hours=168",
            "log.segment.bytes=67108864",
            "num.network.threads=2",
            "num.io.threads=2",
            "background.threads=2",
            "num.recovery.threads.per.data.dir=1",
            "",
        ]
    )


_LOG4J = """# Minimal log4j2 configuration for ShopLake's local broker: INFO to one rolling file.
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {logs}/server.log
appender.file.filePattern = {logs}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 10MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
"""


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    return os.path.join(java_home, "bin", "java") if java_home else "java"


def _classpath() -> str:
    jvm.fetch("kafka")
    jars = jvm.jars("kafka")
    if not jars:
        raise BrokerError("no Kafka jars found: run `python -m pipeline.jvm kafka`")
    return os.pathsep.join(jars)


def _jvm_args(home: Path) -> list[str]:
    p = _paths(home)
    return [
        _java(),
        HEAP,
        "-Xms128m",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={p['log4j']}",
        f"-Dkafka.logs.dir={p['logs']}",
        "-cp",
        _classpath(),
    ]


def _format_storage(home: Path) -> str:
    """Format the log dir once; an already formatted dir keeps its cluster id."""
    p = _paths(home)
    meta = p["data"] / "meta.properties"
    if meta.exists():
        for line in meta.read_text().splitlines():
            if line.startswith("cluster.id="):
                return line.split("=", 1)[1].strip()
    cid = _kafka_cluster_uuid()
    cmd = [
        *_jvm_args(home),
        "kafka.tools.StorageTool",
        "format",
        "-t",
        cid,
        "-c",
        str(p["config"]),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        detail = (done.stdout + done.stderr).strip()[-1500:]
        raise BrokerError(f"formatting the Kafka storage in {p['data']} failed:\n{detail}")
    return cid


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------- verbs


def status(home: Path | str | None = None, timeout: float = 3.0) -> BrokerStatus:
    cfg = settings()
    if not cfg.uses_local_broker:
        healthy = is_healthy(timeout)
        return BrokerStatus(
            mode="external",
            bootstrap_servers=cfg.bootstrap_servers,
            running=False,
            healthy=healthy,
            message="external cluster " + ("reachable" if healthy else "unreachable"),
        )
    home_path = home_dir(home)
    pid = _running_pid(home_path)
    state = _read_state(home_path)
    port = int(state.get("port", cfg.kafka_port)) if pid else cfg.kafka_port
    healthy = False
    cid = None
    if pid:
        if port != cfg.kafka_port:
            msg = f"broker running on port {port} but SHOPLAKE_KAFKA_PORT is {cfg.kafka_port}"
            return BrokerStatus(
                "local",
                cfg.bootstrap_servers,
                True,
                False,
                pid,
                port,
                str(home_path),
                state.get("cluster_id"),
                msg,
            )
        cid = cluster_id(timeout)
        healthy = cid is not None
    message = (
        "running and healthy" if healthy else ("running, not answering yet" if pid else "stopped")
    )
    return BrokerStatus(
        mode="local",
        bootstrap_servers=cfg.bootstrap_servers,
        running=pid is not None,
        healthy=healthy,
        pid=pid,
        port=port if pid else None,
        home=str(home_path),
        cluster_id=cid or state.get("cluster_id"),
        message=message,
    )


def _wait_healthy(home: Path, pid: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            out = _tail(_paths(home)["out"]) or _tail(_paths(home)["logs"] / "server.log")
            raise BrokerError(f"the Kafka broker exited during start-up:\n{out}")
        cid = cluster_id(timeout=2.0)
        if cid is not None:
            return cid
        time.sleep(0.5)
    raise BrokerError(
        f"the Kafka broker did not answer within {timeout:.0f}s; see {_paths(home)['logs']}"
    )


def start(home: Path | str | None = None, timeout: float = START_TIMEOUT_SECONDS) -> BrokerStatus:
    """Start the local broker and wait until it answers; a running one is reused."""
    cfg = settings()
    if not cfg.uses_local_broker:
        st = status(home)
        st.message = "KAFKA_BOOTSTRAP_SERVERS is set: the local broker is not used"
        return st
    home_path = home_dir(home)
    with _locked(home_path):
        pid = _running_pid(home_path)
        if pid is not None:
            state = _read_state(home_path)
            if int(state.get("port", -1)) != cfg.kafka_port:
                raise BrokerError(
                    f"a local broker already runs on port {state.get('port')} (pid {pid}); "
                    "stop it first or set SHOPLAKE_KAFKA_PORT to that port"
                )
            _wait_healthy(home_path, pid, timeout)
            st = status(home_path)
            st.message = "already running"
            return st
        port = cfg.kafka_port
        if not port_is_free(port):
            raise BrokerError(
                f"port {port} on 127.0.0.1 is in use by another program; "
                "set SHOPLAKE_KAFKA_PORT to a free port"
            )
        controller_port = free_port()
        while controller_port == port:
            controller_port = free_port()
        p = _paths(home_path)
        p["data"].mkdir(parents=True, exist_ok=True)
        p["logs"].mkdir(parents=True, exist_ok=True)
        p["config"].write_text(_server_properties(home_path, port, controller_port))
        p["log4j"].write_text(_LOG4J.format(logs=p["logs"]))
        cid = _format_storage(home_path)
        with open(p["out"], "ab") as out:
            proc = subprocess.Popen(
                [*_jvm_args(home_path), "kafka.Kafka", str(p["config"])],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(home_path),
                start_new_session=True,
            )
        _children[proc.pid] = proc
        p["pid"].write_text(f"{proc.pid}\n")
        p["state"].write_text(
            json.dumps(
                {
                    "pid": proc.pid,
                    "port": port,
                    "controller_port": controller_port,
                    "cluster_id": cid,
                    "started_at": time.time(),
                }
            )
        )
        try:
            _wait_healthy(home_path, proc.pid, timeout)
        except BrokerError:
            _terminate(proc.pid)
            p["pid"].unlink(missing_ok=True)
            raise
        st = status(home_path)
        st.message = "started"
        return st


def _terminate(pid: int, timeout: float = STOP_TIMEOUT_SECONDS) -> bool:
    """SIGTERM (Kafka shuts down cleanly), SIGKILL after the timeout. True if it was clean."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(50):
        if not _alive(pid):
            break
        time.sleep(0.1)
    return False


def stop(home: Path | str | None = None, timeout: float = STOP_TIMEOUT_SECONDS) -> BrokerStatus:
    """Stop the local broker this home started; a no-op when none runs."""
    cfg = settings()
    if not cfg.uses_local_broker:
        st = status(home)
        st.message = "KAFKA_BOOTSTRAP_SERVERS is set: the local broker is not used"
        return st
    home_path = home_dir(home)
    with _locked(home_path):
        pid = _running_pid(home_path)
        if pid is None:
            _paths(home_path)["pid"].unlink(missing_ok=True)
            st = status(home_path)
            st.message = "not running"
            return st
        port = int(_read_state(home_path).get("port", cfg.kafka_port))
        clean = _terminate(pid, timeout)
        _paths(home_path)["pid"].unlink(missing_ok=True)
        deadline = time.monotonic() + 10
        while not port_is_free(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        st = status(home_path)
        st.message = "stopped" if clean else "stopped (killed after timeout)"
        return st
