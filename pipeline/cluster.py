"""A local Spark standalone cluster and a Spark Connect server, as plain processes.

Long (~420 lines): two servers' whole life cycle (start, wait, probe, stop), kept together.

For trying ShopLake against a real cluster on one machine (and for the
``cluster`` tests): a master and one worker started with the ``spark-class``
launcher that ships inside pyspark, and the Spark Connect server that ships
with it too (``spark-submit --class ...SparkConnectServer``), carrying the
Delta Lake jars and configuration so a thin client can read and write Delta
tables. Everything binds to 127.0.0.1 on free ports, logs to files under a
folder you choose, is health-checked before it is handed out, and is stopped
(the whole process group, TERM then KILL) by ``stop()``.

    with StandaloneCluster(log_dir) as cluster:      # SPARK_MASTER=cluster.url
        ...
    with ConnectServer(log_dir) as server:            # SPARK_REMOTE=server.url
        ...

``python -m pipeline.cluster up <log_dir>`` starts both in the foreground and
prints the two URLs; Ctrl-C stops them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import jvm
from pipeline.config import spark_settings
from pipeline.spark import _base_config

LOCALHOST = "127.0.0.1"


class ClusterError(RuntimeError):
    pass


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = LOCALHOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


@dataclass
class Daemon:
    """One JVM started by us: its own process group, output in one log file."""

    name: str
    cmd: list[str]
    log: Path
    env: dict[str, str]
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,  # its own group: stop() ends it and its children
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive:
            code = self.proc.returncode if self.proc else None
            raise ClusterError(
                f"{self.name} exited (code {code}); last lines of {self.log}:\n{_tail(self.log)}"
            )

    def stop(self, timeout: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)  # the group we created for this process only
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


def _env(log_dir: Path) -> dict[str, str]:
    home = spark_home()
    conf_dir = log_dir / "conf"  # empty: no stray spark-defaults / spark-env is picked up
    conf_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    for key in ("SPARK_MASTER", "SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED"):
        env.pop(key, None)  # the daemons are classic JVMs, whatever the caller's session is
    env.pop("PYSPARK_SUBMIT_ARGS", None)
    env.update(
        SPARK_HOME=str(home),
        SPARK_CONF_DIR=str(conf_dir),
        SPARK_LOG_DIR=str(log_dir),
        SPARK_LOCAL_IP=LOCALHOST,
        SPARK_LOCAL_DIRS=str(log_dir / "tmp"),
        SPARK_NO_DAEMONIZE="1",
        PYSPARK_PYTHON=env.get("PYSPARK_PYTHON", sys.executable),
    )
    return env


def _wait(what: str, check, daemons: list[Daemon], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for d in daemons:
            d.check_alive()
        try:
            if check():
                return
        except (OSError, ValueError):
            # Not up yet: the port refuses, or (seen once in a suite) the master's web UI
            # answers its JSON path with the HTML page while it is still mounting handlers.
            pass
        time.sleep(0.3)
    logs = "\n".join(f"--- {d.log}\n{_tail(d.log)}" for d in daemons)
    raise ClusterError(f"{what} not healthy after {timeout:.0f}s\n{logs}")


class StandaloneCluster:
    """A standalone master and ``workers`` workers on 127.0.0.1 (free ports)."""

    def __init__(
        self,
        log_dir: str | Path,
        workers: int = 1,
        cores: int = 1,
        memory: str = "1g",
        timeout: float = 60.0,
    ) -> None:
        self.log_dir = Path(log_dir).resolve()
        self.workers, self.cores, self.memory, self.timeout = workers, cores, memory, timeout
        self.port = 0
        self.webui_port = 0
        self.daemons: list[Daemon] = []

    @property
    def url(self) -> str:
        return f"spark://{LOCALHOST}:{self.port}"

    @property
    def webui(self) -> str:
        return f"http://{LOCALHOST}:{self.webui_port}"

    def status(self) -> dict:
        """The master's own view (its web UI's JSON): workers, cores, running apps."""
        with urllib.request.urlopen(f"{self.webui}/json/", timeout=2) as resp:
            return json.loads(resp.read())

    def alive_workers(self) -> int:
        state = self.status()
        return sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")

    def active_apps(self) -> list[dict]:
        return list(self.status().get("activeapps", []))

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait until no application runs: with one worker core, a second app would only queue.

        An application's driver can exit a moment before the master drops it from
        ``activeapps``; starting the next one before that makes it wait for the core.
        """
        _wait(
            "the cluster to be free of applications",
            lambda: not self.active_apps(),
            self.daemons,
            timeout,
        )

    def launch(self) -> StandaloneCluster:
        """Start the master's process and return at once (``wait_ready`` finishes the start)."""
        self.port, self.webui_port = free_port(), free_port()
        master = Daemon(
            "spark master",
            [
                str(spark_home() / "bin" / "spark-class"),
                "org.apache.spark.deploy.master.Master",
                "--host",
                LOCALHOST,
                "--port",
                str(self.port),
                "--webui-port",
                str(self.webui_port),
            ],
            self.log_dir / "master.log",
            _env(self.log_dir),
        )
        self.daemons.append(master)
        try:
            master.start()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self) -> StandaloneCluster:
        """Wait for the master, start the workers, wait until all are registered."""
        spark_class = str(spark_home() / "bin" / "spark-class")
        env = _env(self.log_dir)
        master = self.daemons[0]
        try:
            _wait(
                "spark master",
                lambda: self.status().get("status") == "ALIVE",
                [master],
                self.timeout,
            )
            for i in range(self.workers):
                work = self.log_dir / f"worker-{i}"
                worker = Daemon(
                    f"spark worker {i}",
                    [
                        spark_class,
                        "org.apache.spark.deploy.worker.Worker",
                        self.url,
                        "--cores",
                        str(self.cores),
                        "--memory",
                        self.memory,
                        "--host",
                        LOCALHOST,
                        "--port",
                        str(free_port()),
                        "--webui-port",
                        str(free_port()),
                        "--work-dir",
                        str(work),
                    ],
                    self.log_dir / f"worker-{i}.log",
                    env,
                )
                self.daemons.append(worker)
                worker.start()
            _wait(
                f"{self.workers} worker(s) registered with the master",
                lambda: self.alive_workers() >= self.workers,
                self.daemons,
                self.timeout,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def start(self) -> StandaloneCluster:
        return self.launch().wait_ready()

    def healthy(self) -> bool:
        try:
            return all(d.alive for d in self.daemons) and self.alive_workers() >= self.workers
        except OSError:
            return False

    def stop(self) -> None:
        for daemon in reversed(self.daemons):  # workers first, then the master
            daemon.stop()
        self.daemons.clear()

    def __enter__(self) -> StandaloneCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def connect_server_conf(port: int) -> dict[str, str]:
    """What the Connect server needs: Delta's extension and catalog, and where to listen."""
    conf = {
        k: v
        for k, v in _base_config(spark_settings().partitions(local=True)).items()
        if not k.startswith(("spark.ui.", "spark.driver.extraJavaOptions"))
    }
    conf.update(
        {
            "spark.connect.grpc.binding.address": LOCALHOST,
            "spark.connect.grpc.binding.port": str(port),
            "spark.ui.enabled": "false",
            "spark.jars": ",".join(jvm.jars("spark")),
        }
    )
    return conf


class ConnectServer:
    """The Spark Connect server from pyspark, with Delta, on 127.0.0.1 (a free port).

    ``master`` is where the server runs its work: ``local[1]`` by default, or a
    standalone cluster's URL.
    """

    def __init__(
        self,
        log_dir: str | Path,
        master: str = "local[1]",
        driver_memory: str = "1g",
        timeout: float = 90.0,
    ) -> None:
        self.log_dir = Path(log_dir).resolve()
        self.master, self.driver_memory, self.timeout = master, driver_memory, timeout
        self.port = 0
        self.daemon: Daemon | None = None

    @property
    def url(self) -> str:
        return f"sc://{LOCALHOST}:{self.port}"

    def command(self) -> list[str]:
        cmd = [
            str(spark_home() / "bin" / "spark-submit"),
            "--class",
            "org.apache.spark.sql.connect.service.SparkConnectServer",
            "--name",
            "shoplake-connect",
            "--master",
            self.master,
            "--driver-memory",
            self.driver_memory,
            "--driver-java-options",
            f"-Dderby.system.home={self.log_dir / 'derby'}",
        ]
        for key, value in connect_server_conf(self.port).items():
            cmd += ["--conf", f"{key}={value}"]
        return cmd

    def launch(self) -> ConnectServer:
        """Start the server's process and return at once (``wait_ready`` waits for it)."""
        jvm.fetch("spark")
        self.port = free_port()
        self.daemon = Daemon(
            "spark connect server", self.command(), self.log_dir / "connect.log", _env(self.log_dir)
        )
        try:
            self.daemon.start()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self) -> ConnectServer:
        """Wait until the server accepts connections (its gRPC port is bound)."""
        assert self.daemon is not None, "launch() first"
        try:
            _wait("spark connect server", lambda: port_open(self.port), [self.daemon], self.timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def start(self) -> ConnectServer:
        return self.launch().wait_ready()

    def healthy(self) -> bool:
        return self.daemon is not None and self.daemon.alive and port_open(self.port)

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None

    def __enter__(self) -> ConnectServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "up":
        print("usage: python -m pipeline.cluster up <log_dir>", file=sys.stderr)
        return 2
    log_dir = Path(argv[1])
    with StandaloneCluster(log_dir) as cluster:
        with ConnectServer(log_dir, master=cluster.url) as server:
            print(f"SPARK_MASTER={cluster.url}  (master UI {cluster.webui})")
            print(f"SPARK_REMOTE={server.url}")
            print(f"logs in {log_dir.resolve()}; Ctrl-C stops both")
            try:
                while cluster.healthy() and server.healthy():
                    time.sleep(2)
            except KeyboardInterrupt:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
