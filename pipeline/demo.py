"""Demo data for a person trying ShopLake: fresh data means a fresh batch lake.

Generating without ``append`` writes new files under the same batch names
(batch-000001 ...), so the batch tables built from the old files must go too;
otherwise Bronze would rightly treat the new files as already read. The live
stream's tables and the run and quality history are kept.

The generator writes local files. A lake in a local folder (a path or a
``file://`` URL) gets them in place; for any other URL root they are written
to a local staging folder and copied up (pipeline/storage), the landing zone
replaced as a whole, or, with ``append``, the new batch added after the
manifests and generator state copied down.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from pipeline import catalog, storage
from pipeline.config import settings
from pipeline.contract import SOURCES
from pipeline.runner import run_lock

# Every table built from landing files and the batch steps' bookkeeping (pipeline/catalog.py).
BATCH_TABLES = {
    layer: [t.name for t in catalog.tables(layer, ("batch", "bookkeeping"))]
    for layer in catalog.LAYERS
}


def reset_batch_tables() -> list[str]:
    """Drop every table built from landing files; returns what was removed."""
    cfg = settings()
    removed = []
    for layer, tables in BATCH_TABLES.items():
        for table in tables:
            if storage.remove_tree(cfg.table_path(layer, table)):
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
    promotions: int | None = None,
    outages: int | None = None,
) -> list[dict]:
    from pipeline.sources.contract import MANIFEST_DIR, STATE_DIR
    from pipeline.sources.generate import generate

    options = dict(
        orders=orders,
        batches=batches,
        seed=seed,
        defect_rate=defect_rate,
        rates=rates,
        append=append,
        progress=progress,
        promotions=promotions,
        outages=outages,
    )
    lake = settings().lake
    with run_lock():
        if not append:
            reset_batch_tables()
        local = storage.local_path(lake)
        if local is not None:
            return generate(local, **options)
        landing = storage.join(lake, "landing")
        with tempfile.TemporaryDirectory(prefix="shoplake-landing-") as staging:
            staged = Path(staging) / "landing"
            if append:
                for folder in (MANIFEST_DIR, STATE_DIR):
                    storage.copy_tree(storage.join(landing, folder), staged / folder)
            else:
                storage.remove_tree(landing)
            manifests = generate(staging, **options)
            storage.copy_tree(staged, landing)
            if append:  # the generator keeps the latest state only; so does the lake
                kept = {p.name for p in (staged / STATE_DIR).iterdir()}
                for old in storage.list_files(storage.join(landing, STATE_DIR)):
                    if old.name not in kept:
                        storage.remove_file(str(old))
        return manifests
