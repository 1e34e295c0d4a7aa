"""Every setting ShopLake reads from the environment, in one place.

Defaults suit a laptop: a local Spark, a lake under ./lake and a local Kafka
broker on 127.0.0.1:9092. Secrets (Kafka SASL passwords) are read here too and
never logged.
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
    )


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
