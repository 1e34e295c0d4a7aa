"""JVM artifacts: fetched once from Maven Central into .cache/jars, then offline.

Resolution uses the Apache Ivy jar that ships inside pyspark, so a machine
needs nothing but Python and Java (no Maven, no network at Spark start).
Spark gets its extra jars through ``spark.jars`` (they also reach the
executors of a cluster); the Kafka broker runs from its own folder.
"""

from __future__ import annotations

import glob
import os
import re
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
    key = re.sub(r"[^A-Za-z0-9]+", "-", f"{java_home}-{pyspark.__version__}")[-80:]
    return CACHE_DIR / "jvm" / f"classes-{key}.jsa"


def jars(group: str) -> list[str]:
    return sorted(str(p) for p in jar_dir(group).glob("*.jar"))


def main(argv: list[str]) -> int:
    groups = argv or list(GROUPS)
    for group in groups:
        path = fetch(group, quiet=True)
        print(f"{group}: {len(jars(group))} jars in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
