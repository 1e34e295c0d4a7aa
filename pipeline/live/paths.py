"""Where the live query keeps its tables, checkpoints and drop folder.

Light on purpose (no Spark import): the pages and pipeline.live.health ask
for these locations without starting a JVM.
"""

from __future__ import annotations

import re

from pipeline import catalog
from pipeline.config import settings
from pipeline.live.errors import StreamError

SOURCES = ("kafka", "files")

# The live query's tables, by role (declared in pipeline/catalog.py: a misspelt one fails here).
BRONZE = catalog.table("bronze", "order_events").key
STORE = catalog.table("silver", "order_events").key
QUARANTINE = catalog.table("silver", "quarantine").key
DQ = catalog.table("gold", "dq_results").key
GOLD = catalog.table("gold", "live_sales_minute").key
ALERTS = catalog.table("gold", "live_alerts").key
TABLES = {
    "bronze": BRONZE,
    "store": STORE,
    "quarantine": QUARANTINE,
    "dq": DQ,
    "gold": GOLD,
    "alerts": ALERTS,
}


def table_path(layer_table: tuple[str, str]) -> str:
    return settings().table_path(*layer_table)


def checkpoint_root(source: str) -> str:
    """Per source, and per topic for Kafka: a checkpoint's offsets belong to one topic."""
    root = f"{settings().lake.rstrip('/')}/_checkpoints/live/{source}"
    if source == "kafka":
        root += "/" + re.sub(r"[^A-Za-z0-9._-]", "_", settings().topic)
    return root


def drop_folder() -> str:
    return f"{settings().lake.rstrip('/')}/stream_drop"


def resolve_source(source: str | None) -> str:
    """The source asked for, or SHOPLAKE_STREAM_SOURCE; kafka or files."""
    chosen = source or settings().stream_source
    if chosen not in SOURCES:
        raise StreamError(f"unknown stream source {chosen!r}: use kafka or files")
    return chosen
