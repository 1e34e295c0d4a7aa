"""The generator's state between batches, the plan of one batch, and the
vectorised sampling helpers the table builders share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.sources import catalog as cat
from pipeline.sources import render as rd
from pipeline.sources.contract import (
    FORMAT_VERSION,
    ORPHAN_CUSTOMER_BASE,
    ORPHAN_ORDER_BASE,
    STATE_DIR,
    UNKNOWN_PRODUCT_BASE,
    WINDOW_START,
)

# --------------------------------------------------------------------------- state

ORDER_STATE = {
    "num": np.int64,
    "cust": np.int64,
    "ts": np.int64,
    "status": np.int8,
    "channel": np.int8,
    "payment": np.int8,
    "country": np.int8,
    "updated": np.int64,
}
CUSTOMER_STATE = {
    "num": np.int64,
    "signup": np.int64,
    "first": np.int16,
    "last": np.int16,
    "sep": np.int8,
    "domain": np.int8,
    "country": np.int8,
    "city": np.int16,
    "segment": np.int8,
    "updated": np.int64,
    "updatable": np.bool_,
}
PRODUCT_STATE = {
    "num": np.int64,
    "cat": np.int8,
    "sub": np.int16,
    "brand": np.int16,
    "noun": np.int16,
    "model": np.int32,
    "list": np.int64,
    "cost": np.int64,
    "active": np.bool_,
    "updated": np.int64,
}
Cols = dict[str, np.ndarray]


def empty_rows(spec: dict[str, Any]) -> Cols:
    return {k: np.zeros(0, dtype=t) for k, t in spec.items()}


def typed_rows(cols: Cols, spec: dict[str, Any]) -> Cols:
    return {k: np.asarray(cols[k], dtype=t) for k, t in spec.items()}


def take_rows(cols: Cols, index: np.ndarray) -> Cols:
    return {k: v[index] for k, v in cols.items()}


def concat_rows(a: Cols, b: Cols) -> Cols:
    return {k: np.concatenate([a[k], b[k]]) for k in a}


@dataclass
class State:
    """What the generator has written so far (enough to append a batch)."""

    seed: int
    batch: int = 0
    window_end: int = WINDOW_START
    daily_rate: float = 1.0
    next_order: int = 1
    next_customer: int = 1
    next_product: int = 1
    next_orphan_order: int = 1
    next_orphan_customer: int = 1
    next_unknown_product: int = 1
    #: latest version of every clean order that may still change status
    orders: Cols = field(default_factory=lambda: empty_rows(ORDER_STATE))
    #: every clean customer, in number order (= signup order), latest version
    customers: Cols = field(default_factory=lambda: empty_rows(CUSTOMER_STATE))
    #: every catalogue product, latest version
    products: Cols = field(default_factory=lambda: empty_rows(PRODUCT_STATE))

    def counters(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "window_end_epoch": self.window_end,
            "daily_rate": self.daily_rate,
            "next_order_number": self.next_order,
            "next_customer_number": self.next_customer,
            "next_product_number": self.next_product,
            "max_order_number": self.next_order - 1,
            "max_customer_number": self.next_customer - 1,
            "max_product_number": self.next_product - 1,
            "orphan_orders_used": self.next_orphan_order - 1,
            "orphan_customers_used": self.next_orphan_customer - 1,
            "unknown_products_used": self.next_unknown_product - 1,
        }

    def check_ranges(self) -> None:
        if (
            self.next_order >= ORPHAN_ORDER_BASE
            or self.next_customer >= ORPHAN_CUSTOMER_BASE
            or self.next_product >= UNKNOWN_PRODUCT_BASE
        ):
            raise ValueError("id space exhausted: generate a new lake instead of appending")


def state_path(landing: Path, batch: int, entity: str) -> Path:
    return landing / STATE_DIR / f"state-{batch_name(batch)}-{entity}.parquet"


def write_state(landing: Path, state: State) -> None:
    folder = landing / STATE_DIR
    keep = set()
    for entity, cols in (
        ("orders", state.orders),
        ("customers", state.customers),
        ("products", state.products),
    ):
        path = state_path(landing, state.batch, entity)
        rd.write_parquet(path, pa.table({k: pa.array(v) for k, v in cols.items()}))
        keep.add(path.name)
    for old in folder.glob("state-*.parquet"):
        if old.name not in keep:
            old.unlink()


def read_state(landing: Path, manifest: dict[str, Any], seed: int) -> State:
    gen = manifest.get("generator") or {}
    if gen.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{manifest.get('batch_id')} was not written by this generator; "
            "run generate without append first"
        )
    batch = int(manifest["batch_number"])
    state = State(
        seed=seed,
        batch=batch,
        window_end=int(gen["window_end_epoch"]),
        daily_rate=float(gen["daily_rate"]),
        next_order=int(gen["next_order_number"]),
        next_customer=int(gen["next_customer_number"]),
        next_product=int(gen["next_product_number"]),
        next_orphan_order=int(gen["orphan_orders_used"]) + 1,
        next_orphan_customer=int(gen["orphan_customers_used"]) + 1,
        next_unknown_product=int(gen["unknown_products_used"]) + 1,
    )
    for entity, spec in (
        ("orders", ORDER_STATE),
        ("customers", CUSTOMER_STATE),
        ("products", PRODUCT_STATE),
    ):
        path = state_path(landing, batch, entity)
        if not path.exists():
            raise ValueError(f"generator state {path} is missing; run generate without append")
        table = pq.read_table(path)
        setattr(state, entity, {k: np.array(table[k].to_numpy(), dtype=t) for k, t in spec.items()})
    return state


@dataclass
class Plan:
    """One batch: its time slice and how much of everything it carries."""

    number: int
    t0: int
    t1: int
    day_counts: np.ndarray  # new orders per day, days starting at t0
    promo: np.ndarray  # per day: promotion day (more orders, more discounts)
    signups: np.ndarray  # sorted signup instants of the batch's new customers
    catalogue: int = 0  # products to create
    order_updates: int | None = None  # None: from the superseded_versions rate
    update_earlier_only: bool = False  # versions only of orders from earlier batches
    min_product_changes: int = 0
    outage: np.ndarray | None = None  # per day: outage day (labelled drop); None: none


def batch_name(number: int) -> str:
    return f"batch-{number:06d}"


# --------------------------------------------------------------------------- helpers


def probs(weights: tuple[float, ...]) -> np.ndarray:
    return cat.probabilities(weights)


def weighted_sample(rng: np.random.Generator, weights: np.ndarray, k: int) -> np.ndarray:
    """k distinct positions, drawn with probability proportional to weights
    (Efraimidis-Spirakis keys: one vectorised pass, any population size)."""
    n = len(weights)
    if k <= 0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    if k >= n:
        return np.arange(n, dtype=np.int64)
    keys = np.log(1.0 - rng.random(n)) / weights
    return np.sort(np.argpartition(-keys, k - 1)[:k])


def choose(rng: np.random.Generator, population: np.ndarray, k: int) -> np.ndarray:
    """k distinct members of population (fewer if it is smaller), sorted."""
    k = min(k, len(population))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.sort(rng.choice(population, k, replace=False))


def distinct_instants(rng: np.random.Generator, t0: int, t1: int, k: int) -> np.ndarray:
    """k different seconds in [t0, t1), so rows built on them never coincide."""
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    return t0 + np.sort(rng.choice(t1 - t0, k, replace=False)).astype(np.int64)


def later_than(rng: np.random.Generator, previous: np.ndarray, t0: int, t1: int) -> np.ndarray:
    """A new updated_at after previous (by a minute at least) inside [t0, t1)."""
    lo = np.maximum(previous + 60, t0)
    return (lo + np.floor((t1 - lo) * rng.random(len(lo)) ** 2)).astype(np.int64)


def cumcount(sorted_groups: np.ndarray) -> np.ndarray:
    """0, 1, 2 ... within runs of equal values of a sorted array."""
    n = len(sorted_groups)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.r_[True, sorted_groups[1:] != sorted_groups[:-1]]
    first = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    return np.arange(n) - first


def text_by_group(
    rng: np.random.Generator, options: tuple[tuple[str, ...], ...], groups: np.ndarray
) -> pa.Array:
    """For each row, one of options[group] at random."""
    flat = [v for opts in options for v in opts]
    start = np.cumsum([0] + [len(o) for o in options[:-1]])
    count = np.array([len(o) for o in options])
    pick = start[groups] + np.floor(rng.random(len(groups)) * count[groups]).astype(np.int64)
    return rd.text(flat, pick)


def pick_text(rng: np.random.Generator, values: tuple[str, ...], n: int) -> pa.Array:
    return rd.text(values, rng.integers(0, len(values), n))


@dataclass
class Part:
    """One source's file content for one batch."""

    rows: int
    defects: dict[str, int]
    new_keys: int
    updated_keys: int
    lines: pa.Array | None = None  # csv / jsonl
    header: str | None = None
    table: pa.Table | None = None  # parquet


def arrange_lines(clean: pa.Array, inserted: list[pa.Array], rng: np.random.Generator) -> pa.Array:
    extra = pa.concat_arrays([a.cast(pa.string()) for a in inserted]) if inserted else None
    n_extra = len(extra) if extra is not None else 0
    order = rd.arrangement(len(clean), n_extra, rng)
    allrows = pa.concat_arrays([clean, extra]) if extra is not None else clean
    return allrows.take(pa.array(order))
