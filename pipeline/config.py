"""Every setting ShopLake reads from the environment, in one place.

Defaults suit a laptop: a local Spark, a lake under ./lake and a local Kafka
broker on 127.0.0.1:9092. Secrets (Kafka SASL passwords) are read here too and
never logged. Each function reads the environment when called (tests change
it between calls); README.md "Configuration" lists every variable. Not read
here: JAVA_HOME (where Java is, for pipeline.jvm and the broker), the
variables the benchmark sets for its own child runs (pipeline/bench), and the
test-only SHOPLAKE_TEST_PAUSE_AFTER (tests/hooks_site).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline import storage

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("SHOPLAKE_CACHE", PROJECT_ROOT / ".cache"))

SOURCES = ("orders", "order_items", "customers", "products")


@dataclass(frozen=True)
class Settings:
    lake: str
    spark_master: str | None
    spark_remote: str | None
    kafka_bootstrap: str | None
    kafka_port: int
    topic: str
    stream_source: str
    currency: str = "USD"  # ISO 4217 code the dashboard writes money in (pipeline.formats)
    run_parallelism: int = 3  # steps of a run that may execute at once (pipeline.runner)
    incremental_min_rows: int = 200_000  # pipeline.silver.incremental.recompute_below
    codegen: str = "auto"  # whole-stage code generation: auto | on | off (pipeline.runner)
    writer: str = "auto"  # commits whole tables: auto | spark | delta-rs (pipeline.runner)

    @property
    def lake_path(self) -> Path:
        """The lake as a local folder (a path or a file:// URL); a remote root has none."""
        local = storage.local_path(self.lake)
        if local is None:
            raise ValueError(f"the lake root {self.lake} is not a local folder")
        return local

    @property
    def landing(self) -> str:
        """Built by string, like every lake location: the root may be a URL (pipeline/storage)."""
        return storage.join(self.lake, "landing")

    def table_path(self, layer: str, table: str) -> str:
        return storage.join(self.lake, layer, table)

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    @property
    def uses_local_broker(self) -> bool:
        return not self.kafka_bootstrap


def settings() -> Settings:
    """Read the environment now (tests change it between calls)."""
    lake = os.environ.get("SHOPLAKE_LAKE", str(PROJECT_ROOT / "lake"))
    if not storage.is_url(lake):
        lake = str(Path(lake).expanduser().resolve())
    return Settings(
        lake=lake,
        spark_master=os.environ.get("SPARK_MASTER") or None,
        spark_remote=os.environ.get("SPARK_REMOTE") or None,
        kafka_bootstrap=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
        kafka_port=int(os.environ.get("SHOPLAKE_KAFKA_PORT", "9092")),
        topic=os.environ.get("SHOPLAKE_TOPIC", "orders"),
        stream_source=os.environ.get("SHOPLAKE_STREAM_SOURCE", "kafka"),
        currency=_currency(os.environ.get("SHOPLAKE_CURRENCY", "USD")),
        run_parallelism=int(os.environ.get("SHOPLAKE_RUN_PARALLELISM", "3")),
        incremental_min_rows=int(os.environ.get("SHOPLAKE_INCREMENTAL_MIN_ROWS", "200000")),
        codegen=_choice("SHOPLAKE_CODEGEN", ("auto", "on", "off")),
        writer=_choice("SHOPLAKE_WRITER", ("auto", "spark", "delta-rs")),
    )


def _choice(name: str, allowed: tuple[str, ...]) -> str:
    value = os.environ.get(name, allowed[0]).strip().lower() or allowed[0]
    if value not in allowed:
        raise ValueError(f"{name}={value!r}: expected one of {', '.join(allowed)}")
    return value


def _currency(code: str) -> str:
    """SHOPLAKE_CURRENCY: a three-letter ISO 4217 code (USD, EUR, GBP ...)."""
    value = code.strip().upper() or "USD"
    if len(value) != 3 or not value.isalpha():
        raise ValueError(f"SHOPLAKE_CURRENCY={code!r}: use a three-letter ISO 4217 code like EUR")
    return value


def kafka_security_options() -> dict[str, str]:
    """SASL/SSL settings for an external cluster, from the environment.

    KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME,
    KAFKA_SASL_PASSWORD. Values are secrets: callers must not print them.
    """
    out: dict[str, str] = {}
    for key in ("SECURITY_PROTOCOL", "SASL_MECHANISM", "SASL_USERNAME", "SASL_PASSWORD"):
        value = os.environ.get(f"KAFKA_{key}")
        if value:
            out[key.lower()] = value
    return out


# ----------------------------------------------------------------------------- Spark


@dataclass(frozen=True)
class SparkSettings:
    """The SparkSession's knobs (pipeline.spark); SPARK_MASTER/SPARK_REMOTE are in Settings."""

    ui_enabled: str  # SHOPLAKE_SPARK_UI: "false" where a second app would clash on the port
    ui_port: str  # SHOPLAKE_SPARK_UI_PORT
    driver_host: str  # SHOPLAKE_DRIVER_HOST: the address executors reach the driver on
    driver_bind: str  # SHOPLAKE_DRIVER_BIND: the address the driver listens on
    local_master: str  # SHOPLAKE_LOCAL_MASTER: the master when SPARK_MASTER is unset
    driver_memory: str  # SHOPLAKE_DRIVER_MEMORY
    shuffle_partitions: int | None  # SHOPLAKE_SHUFFLE_PARTITIONS; None: by master
    extra_conf: dict[str, str]  # SHOPLAKE_SPARK_CONF: "key=value;key=value", applied last
    jvm_options: str  # SHOPLAKE_JVM_OPTIONS: added to the driver JVM's options

    def partitions(self, local: bool) -> int:
        """Shuffle partitions: the setting, else 4 on a local master and 32 on a cluster."""
        if self.shuffle_partitions is not None:
            return self.shuffle_partitions
        return 4 if local else 32


def spark_settings() -> SparkSettings:
    partitions = os.environ.get("SHOPLAKE_SHUFFLE_PARTITIONS")
    return SparkSettings(
        ui_enabled=os.environ.get("SHOPLAKE_SPARK_UI", "true"),
        ui_port=os.environ.get("SHOPLAKE_SPARK_UI_PORT", "4040"),
        driver_host=os.environ.get("SHOPLAKE_DRIVER_HOST", "127.0.0.1"),
        driver_bind=os.environ.get("SHOPLAKE_DRIVER_BIND", "127.0.0.1"),
        local_master=os.environ.get("SHOPLAKE_LOCAL_MASTER", "local[2]"),
        driver_memory=os.environ.get("SHOPLAKE_DRIVER_MEMORY", "2g"),
        shuffle_partitions=int(partitions) if partitions else None,
        extra_conf=_pairs(os.environ.get("SHOPLAKE_SPARK_CONF", "")),
        jvm_options=os.environ.get("SHOPLAKE_JVM_OPTIONS", "").strip(),
    )


def _pairs(text: str) -> dict[str, str]:
    """``key=value;key=value`` (SHOPLAKE_SPARK_CONF): any Spark or Delta setting."""
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"SHOPLAKE_SPARK_CONF: {item!r} is not key=value")
        out[key.strip()] = value.strip()
    return out


# ----------------------------------------------------------------------------- runs and checks


def full_refresh_requested() -> bool:
    """SHOPLAKE_FULL_REFRESH=1 (or true/yes/on): every run recomputes Silver in full."""
    return os.environ.get("SHOPLAKE_FULL_REFRESH", "").lower() in ("1", "true", "yes", "on")


def expectations_enabled() -> bool:
    """SHOPLAKE_EXPECTATIONS=off runs Silver without its rules, to measure their cost."""
    return os.environ.get("SHOPLAKE_EXPECTATIONS", "on").lower() not in ("off", "0", "false")


def freshness_days() -> int:
    """SHOPLAKE_FRESHNESS_DAYS: how old the newest record may be before freshness warns."""
    return int(os.environ.get("SHOPLAKE_FRESHNESS_DAYS", "400"))
