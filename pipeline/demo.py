"""Demo data for a person trying ShopLake: fresh data means a fresh batch lake.

Generating without ``append`` writes new files under the same batch names
(batch-000001 ...), so the batch tables built from the old files must go too;
otherwise Bronze would rightly treat the new files as already read. The live
stream's tables and the run and quality history are kept.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from pipeline.config import settings
from pipeline.contract import SOURCES
from pipeline.runner import run_lock

BATCH_TABLES = {
    "bronze": [*SOURCES, "_ingested_files"],
    "silver": [*SOURCES, "dim_customer", "dim_product", "dim_date", "fact_sales"],
    "gold": ["daily_sales", "category_sales", "customer_rfm", "revenue_anomalies"],
}


def reset_batch_tables() -> list[str]:
    """Drop every table built from landing files; returns what was removed."""
    cfg = settings()
    removed = []
    for layer, tables in BATCH_TABLES.items():
        for table in tables:
            path = cfg.lake_path / layer / table
            if path.exists():
                shutil.rmtree(path)
                removed.append(f"{layer}.{table}")
    quarantine = cfg.table_path("silver", "quarantine")
    try:
        names = ", ".join(f"'{s}'" for s in SOURCES)
        DeltaTable(quarantine).delete(f"source_table IN ({names})")
        removed.append("silver.quarantine (batch sources)")
    except TableNotFoundError:
        pass
    return removed


def generate_demo(
    orders: int = 10_000,
    batches: int = 3,
    seed: int = 42,
    defect_rate: float = 0.02,
    rates: dict[str, float] | None = None,
    append: bool = False,
    progress: Callable[[str, float], None] | None = None,
) -> list[dict]:
    from pipeline.sources.generate import generate

    with run_lock():
        if not append:
            reset_batch_tables()
        return generate(
            settings().lake,
            orders=orders,
            batches=batches,
            seed=seed,
            defect_rate=defect_rate,
            rates=rates,
            append=append,
            progress=progress,
        )
