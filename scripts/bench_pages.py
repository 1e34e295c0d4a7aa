"""Per-page script time and the app process's memory, with Streamlit's AppTest.

Runs every page on the lake SHOPLAKE_LAKE points at. The dashboard target is
"every page's script under 1 second once the SparkSession exists": the first
run of each page warms its caches (as a visitor's first view after a pipeline
run would), the reruns that follow are what a person waits for afterwards, so
``page_seconds()`` (used by ``make bench``, pipeline/bench/harness.py) returns
the median rerun per page.

``--json FILE`` also writes, per page, the first-visit seconds and the peak
RSS so far, and the process's peak RSS after every page was visited
(``getrusage(RUSAGE_SELF).ru_maxrss``). AppTest runs the pages in this very
process, so that peak is the Streamlit process's own memory: the pages read
Delta with delta-rs and start no JVM. A watcher thread looks for java
descendants of this process (and libjvm mapped into it) for the whole run and
reports what it saw. A measuring script: it asserts nothing about the figures.

``--root DIR`` runs the pages of another checkout (e.g. a git worktree of an
older commit, with PYTHONPATH=DIR so that its ``pipeline`` is imported).
Pages are visited in PAGES order, each in a fresh AppTest session (Home.py,
then a switch to the page); Streamlit's caches are per process, so a page's
first visit may find tables an earlier page already read, as a person
browsing the app would.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = {
    "home": "pages/1_Overview.py",
    "generate": "pages/2_Generate.py",
    "pipeline": "pages/3_Pipeline.py",
    "quality": "pages/4_Quality.py",
    "sales": "pages/5_Sales.py",
    "customers": "pages/6_Customers.py",
    "anomalies": "pages/7_Anomalies.py",
    "live": "pages/8_Live.py",
    "import": "pages/9_Import.py",
}
DEFAULT_PAGE = "pages/1_Overview.py"  # what Home.py draws before any switch


def peak_rss_mb() -> float:
    """This process's peak resident set so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float | None:
    """This process's resident set now (VmRSS), None where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process below `pid`, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent:
                frontier.append(child)
                try:
                    cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
                except OSError:
                    cmd = b""
                found.append((child, cmd.decode(errors="replace").strip()))
    return found


def _libjvm_mapped() -> bool:
    try:
        return "libjvm" in Path("/proc/self/maps").read_text()
    except OSError:
        return False


class JvmWatch:
    """Samples this process's descendants in a thread, remembering any java process."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.samples = 0
        self.children: dict[int, str] = {}
        self.java: dict[int, str] = {}
        self.libjvm = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="jvm-watch", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        for pid, cmd in _descendants(os.getpid()):
            self.children[pid] = cmd[:200]
            if "java" in cmd.split(" ", 1)[0] or "java " in cmd:
                self.java[pid] = cmd[:200]
        self.libjvm = self.libjvm or _libjvm_mapped()
        self.samples += 1

    def __enter__(self) -> JvmWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def report(self) -> dict:
        return {
            "samples": self.samples,
            "interval_s": self.interval,
            "java_descendants": [{"pid": p, "cmd": c} for p, c in sorted(self.java.items())],
            "other_descendants": [
                {"pid": p, "cmd": c} for p, c in sorted(self.children.items()) if p not in self.java
            ],
            "libjvm_mapped": self.libjvm,
            "pyspark_imported": "pyspark" in sys.modules,
        }


def visit_pages(
    repeats: int = 3, timeout: float = 120.0, root: Path = ROOT, pages: dict[str, str] = PAGES
) -> dict[str, dict]:
    """Each page visited once (first visit) and rerun `repeats` times, in PAGES order.

    first_visit_s is the run that first drew the page in this process: for the
    default page the landing run of Home.py, for the others the switch to it.
    """
    from streamlit.testing.v1 import AppTest

    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    out: dict[str, dict] = {}
    for name, path in pages.items():
        at = AppTest.from_file(str(root / "Home.py"), default_timeout=timeout)
        started = time.perf_counter()
        at.run()
        landing = time.perf_counter() - started
        started = time.perf_counter()
        at.switch_page(path).run()  # warm-up: caches filled
        switched = time.perf_counter() - started
        if at.exception:
            raise RuntimeError(f"page {name} raised: {at.exception[0].value}")
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            at.run()
            samples.append(time.perf_counter() - started)
        out[name] = {
            "first_visit_s": landing if path == DEFAULT_PAGE and not out else switched,
            "landing_s": landing,
            "switch_s": switched,
            "rerun_s": samples,
            "median_rerun_s": statistics.median(samples),
            "peak_rss_mb_after": peak_rss_mb(),
        }
    return out


def page_seconds(repeats: int = 3, timeout: float = 120.0) -> dict[str, float]:
    """Median rerun seconds per page (after one warm-up run)."""
    return {name: r["median_rerun_s"] for name, r in visit_pages(repeats, timeout).items()}


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def measure(repeats: int, timeout: float, root: Path) -> dict:
    """Timings, memory and the JVM watch, as the JSON report."""
    load_before = os.getloadavg()
    started_at = dt.datetime.now(dt.UTC)
    # the imports the pages need, so that the baseline is the app before any page ran
    import streamlit.testing.v1  # noqa: F401

    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import pipeline.read

    baseline = peak_rss_mb()
    with JvmWatch() as watch:
        pages = visit_pages(repeats, timeout, root)
    end_rss = current_rss_mb()
    return {
        "started_at": started_at.isoformat(timespec="seconds"),
        "seconds": round((dt.datetime.now(dt.UTC) - started_at).total_seconds(), 1),
        "root": str(root),
        "commit": _git(root, "rev-parse", "--short", "HEAD"),
        "uncommitted_files": len((_git(root, "status", "--porcelain") or "").splitlines()),
        "pipeline_module": pipeline.read.__file__,
        "lake": os.environ.get("SHOPLAKE_LAKE", str(root / "lake")),
        "repeats": repeats,
        "python_pid": os.getpid(),
        "cpu_count": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "baseline_peak_rss_mb": round(baseline, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_mb_at_end": None if end_rss is None else round(end_rss, 1),
        "jvm": watch.report(),
        "pages": {
            name: {
                k: [round(x, 3) for x in v] if isinstance(v, list) else round(v, 3)
                for k, v in r.items()
            }
            for name, r in pages.items()
        },
        "page_seconds_max": round(max(r["median_rerun_s"] for r in pages.values()), 3),
        "first_visit_seconds_max": round(max(r["first_visit_s"] for r in pages.values()), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the full report to this file")
    parser.add_argument("--repeats", type=int, default=3, help="reruns per page (default 3)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per page run")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose pages run")
    args = parser.parse_args(argv)
    if args.json is None:
        timings = page_seconds(args.repeats, args.timeout)
        print(json.dumps({"pages": timings, "page_seconds_max": max(timings.values())}, indent=2))
        return 0
    report = measure(args.repeats, args.timeout, args.root.resolve())
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    summary = {
        name: (r["first_visit_s"], r["median_rerun_s"]) for name, r in report["pages"].items()
    }
    print(json.dumps({"peak_rss_mb": report["peak_rss_mb"], "pages": summary}, indent=2))
    print(f"java descendants seen: {len(report['jvm']['java_descendants'])}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
