"""JVM artifacts: fetched once from Maven Central into .cache/jars, then offline.

Resolution uses the Apache Ivy jar that ships inside pyspark, so a machine
needs nothing but Python and Java (no Maven, no network at Spark start).
Spark gets its extra jars through ``spark.jars`` (they also reach the
executors of a cluster); the Kafka broker runs from its own folder. Setup
also builds a class-data-sharing archive of Spark's classes
(``build_class_archive``), which every later Spark JVM maps at its start.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline.config import CACHE_DIR

SPARK_VERSION = "4.2.0"
DELTA_VERSION = "4.4.0"
KAFKA_VERSION = "4.1.1"

GROUPS: dict[str, list[tuple[str, str, str]]] = {
    "spark": [
        ("io.delta", "delta-spark_4.2_2.13", DELTA_VERSION),
        ("org.apache.spark", "spark-sql-kafka-0-10_2.13", SPARK_VERSION),
    ],
    "kafka": [("org.apache.kafka", "kafka_2.13", KAFKA_VERSION)],
}


def _pyspark_modules() -> list[str]:
    """Artifact names of the jars pyspark ships: a second copy only causes trouble."""
    import pyspark

    folder = Path(pyspark.__file__).parent / "jars"
    names = set()
    for jar in folder.glob("*.jar"):
        match = re.match(r"^(.*?)-\d[\w.\-]*\.jar$", jar.name)
        if match:
            names.add(match.group(1))
    return sorted(names)


def jar_dir(group: str) -> Path:
    return CACHE_DIR / "jars" / group


def _stamp(group: str) -> Path:
    return jar_dir(group) / ".complete"


def is_fetched(group: str) -> bool:
    return _stamp(group).exists()


def _ivy_jar() -> str:
    import pyspark

    found = glob.glob(os.path.join(os.path.dirname(pyspark.__file__), "jars", "ivy-*.jar"))
    if not found:
        raise RuntimeError("pyspark ships no Ivy jar; cannot fetch JVM artifacts")
    return found[0]


def _ivy_xml(group: str) -> str:
    deps = "\n".join(
        f'    <dependency org="{o}" name="{n}" rev="{v}" conf="default->default(*)"/>'
        for o, n, v in GROUPS[group]
    )
    excludes = ""
    if group == "spark":
        excludes = "\n".join(f'    <exclude module="{m}"/>' for m in _pyspark_modules())
    return f"""<ivy-module version="2.0">
  <info organisation="shoplake" module="{group}-deps"/>
  <configurations><conf name="default"/></configurations>
  <dependencies>
{deps}
{excludes}
  </dependencies>
</ivy-module>
"""


def fetch(group: str, quiet: bool = True) -> Path:
    """Resolve one group into its jar folder; a no-op once it is complete."""
    target = jar_dir(group)
    if is_fetched(group):
        return target
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise RuntimeError("Java 17+ is required: install a JDK and put `java` on PATH")
    java = (
        os.path.join(os.environ["JAVA_HOME"], "bin", "java")
        if os.environ.get("JAVA_HOME")
        else "java"
    )
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        ivy_file = Path(tmp) / "ivy.xml"
        ivy_file.write_text(_ivy_xml(group))
        cmd = [
            java,
            f"-Divy.cache.dir={CACHE_DIR / 'ivy'}",
            "-jar",
            _ivy_jar(),
            "-ivy",
            str(ivy_file),
            "-confs",
            "default",
            "-retrieve",
            str(target / "[organisation]_[artifact]-[revision](-[classifier]).[ext]"),
        ]
        done = subprocess.run(cmd, capture_output=quiet, text=True)
    if done.returncode != 0:
        detail = (done.stdout or "")[-2000:] + (done.stderr or "")[-2000:]
        raise RuntimeError(
            f"could not fetch the {group} JVM artifacts from Maven Central:\n{detail}"
        )
    _stamp(group).write_text("ok\n")
    return target


def class_archive() -> Path | None:
    """The class-data-sharing archive for this JVM and pyspark, if one has been built."""
    path = _archive_path()
    return path if path.exists() else None


def _archive_path() -> Path:
    import pyspark

    java_home = os.environ.get("JAVA_HOME") or str(Path(shutil.which("java") or "java").resolve())
    where = hashlib.sha1(f"{java_home}|{pyspark.__file__}".encode()).hexdigest()[:10]
    key = re.sub(r"[^A-Za-z0-9]+", "-", f"{pyspark.__version__}-{where}")
    return CACHE_DIR / "jvm" / f"classes-{key}.jsa"


# The run whose loaded classes go into the archive: small, so that it is quick, but
# through every layer, so that it loads what any run loads (Delta, Parquet, the app's
# readers). A larger run adds classes only for compiled code, which the archive skips.
ARCHIVE_ORDERS = 300


def build_class_archive(quiet: bool = True) -> Path:
    """Build the class-data-sharing archive of Spark's classes (``make`` setup, once).

    A fresh JVM spends seconds loading and verifying the ~19,000 classes a run
    uses from Spark's jars; mapped from an archive they are ready at once. A
    fresh ``python -m pipeline run all`` at 10,000 orders, interleaved pairs:
    52.9/55.2 s -> 44.8/43.1 s; a session's start 7.5 -> 4.5 s (docs/
    decisions.md, "Run shape"). The archive is made in two steps, as the JDK
    does it: a small ``run all`` in a new process lists the classes it loads
    (``-XX:DumpLoadedClassList``), then ``java -Xshare:dump`` writes them with
    the class path that process was launched with. Classes of the jars Spark
    adds at run time (``spark.jars``: Delta, Kafka) load as before. The JVM
    checks the archive against its class path at each start and ignores it
    when they differ, so a stale archive costs nothing but its benefit.
    """
    target = _archive_path()
    if target.exists():
        return target
    fetch("spark")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shoplake-archive-") as tmp:
        classes = Path(tmp) / "classes.lst"
        command = _list_loaded_classes(Path(tmp), classes)
        classpath = command[command.index("-cp") + 1]
        modules = [a for a in command if a.startswith("--add-modules")]
        partial = target.with_suffix(".jsa.partial")
        dump = [
            command[0],
            "-Xshare:dump",
            f"-XX:SharedClassListFile={classes}",
            f"-XX:SharedArchiveFile={partial}",
            "-Xlog:cds=off",
            "-Xlog:cds+dynamic=off",
            "-Xlog:gc+verify=off",
            "-cp",
            classpath,
            *modules,
        ]
        done = subprocess.run(dump, capture_output=quiet, text=True)
        if done.returncode != 0 or not partial.exists():
            detail = ((done.stdout or "") + (done.stderr or ""))[-2000:]
            raise RuntimeError(f"java -Xshare:dump failed:\n{detail}")
        partial.replace(target)
    return target


def _list_loaded_classes(tmp: Path, classes: Path) -> list[str]:
    """Run a small lake through ``python -m pipeline run all``, listing the classes its
    JVM loads; return that JVM's command line (Spark's launcher prints it)."""
    from pipeline.cli import run_all_in_new_process
    from pipeline.config import PROJECT_ROOT
    from pipeline.sources.generate import generate

    lake = tmp / "lake"
    generate(lake, orders=ARCHIVE_ORDERS, batches=2, seed=3)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK_", "SHOPLAKE_"))}
    env.update(
        SHOPLAKE_LAKE=str(lake),
        SHOPLAKE_CACHE=str(CACHE_DIR),
        SHOPLAKE_SPARK_UI="false",
        SHOPLAKE_JVM_OPTIONS=f"-XX:DumpLoadedClassList={classes}",
        SPARK_PRINT_LAUNCH_COMMAND="1",
    )
    done = run_all_in_new_process(env, PROJECT_ROOT)
    launched = [
        line.split("Spark Command: ", 1)[1]
        for line in done.stderr.splitlines()
        if line.startswith("Spark Command: ")
    ]
    if done.returncode != 0 or not launched or not classes.exists():
        detail = (done.stdout + done.stderr)[-2000:]
        raise RuntimeError(f"the run that lists Spark's classes failed:\n{detail}")
    return shlex.split(launched[0])


def jars(group: str) -> list[str]:
    return sorted(str(p) for p in jar_dir(group).glob("*.jar"))


def main(argv: list[str]) -> int:
    """``python -m pipeline.jvm [spark] [kafka]``: fetch the jars;
    ``python -m pipeline.jvm archive``: build the class-data-sharing archive."""
    if argv == ["archive"]:
        print(f"class-data-sharing archive: {build_class_archive()}")
        return 0
    groups = argv or list(GROUPS)
    for group in groups:
        path = fetch(group, quiet=True)
        print(f"{group}: {len(jars(group))} jars in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
