"""Demo data for the ShopLake landing zone: realistic, dirty, and exactly counted.

Why it is built this way:

- The Silver layer's quality report is checked against the manifest, so each
  defect is injected into a row of its own (one defect per row, clean rows
  carry none) and counted at the moment it is made. Rows that would trip a
  second rule are never produced: orders that Silver must quarantine are extra
  orders without items that are never updated; defective item lines hang off
  clean orders on line numbers no clean line uses; versions and duplicates are
  only ever made from clean rows.
- A million orders must be generated in well under two minutes on a laptop,
  so every column is drawn by numpy and rendered to text by pyarrow kernels
  for all rows at once; Python only loops over sources, rules and batches.
- Dates come from a fixed window (the 365 days ending 2026-06-30), never from
  the wall clock, so a seed and its arguments always give byte-identical files
  and the dashboard's numbers can be written into tests.
- Appending a batch must not regenerate history (it is the benchmark's "1 %
  incremental batch"), so the generator keeps a compact state of what it wrote
  (ids in use, the latest version of every record that may still change)
  in ``landing/_generator``; readers skip names starting with ``_``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.sources import catalog as cat
from pipeline.sources import render as rd
from pipeline.sources.contract import (
    DAY,
    DEFECT_NAMES,
    DEFECTS_BY_SOURCE,
    FILE_SUFFIX,
    INFORMATIONAL,
    MANIFEST_DIR,
    SOURCES,
    WINDOW_DAYS,
    WINDOW_START,
    Progress,
    Rates,
    utc_epoch,
)
from pipeline.sources.customers import build_customers
from pipeline.sources.items import build_items
from pipeline.sources.model import (
    Part,
    Plan,
    State,
    batch_name,
    choose,
    read_state,
    write_state,
)
from pipeline.sources.orders import build_orders
from pipeline.sources.products import apply_price_changes, build_products

__all__ = ["DEFECT_NAMES", "DEFECTS_BY_SOURCE", "INFORMATIONAL", "SOURCES", "generate"]


MAX_APPEND_DAYS = 7
# Random anomaly days fall this many days or more into the window: the detector
# draws a band after six weeks of history and needs a few more weeks to narrow it
# (gold.revenue_anomalies).
ANOMALY_HISTORY_DAYS = 56


def _day_weights(
    day_starts: np.ndarray, rng: np.random.Generator, promo: np.ndarray, outage: np.ndarray
) -> np.ndarray:
    """Expected relative volume per day: weekly rhythm (weekend uplift), growth,
    a holiday season, noise, and the labelled promotion and outage days."""
    day_index = day_starts // DAY
    weekday = (day_index + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    w = np.asarray(cat.WEEKDAY_FACTORS)[weekday]
    w = w * (1.0 + 0.25 * (day_starts - WINDOW_START) / (WINDOW_DAYS * DAY))
    holidays = utc_epoch("2025-12-12")
    w = w * (1.0 + 0.30 * np.exp(-(((day_starts - holidays) / (18 * DAY)) ** 2)))
    w = w * rng.lognormal(0.0, 0.05, len(day_starts))
    w = np.where(promo, w * cat.PROMO_FACTOR, w)
    return np.where(outage, w * cat.DROP_FACTOR, w)


def _check_count(name: str, value: int | None) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= WINDOW_DAYS
    ):
        raise ValueError(f"{name} must be an integer from 0 to {WINDOW_DAYS}, got {value!r}")


def _anomaly_days(
    day_starts: np.ndarray, promotions: int, outages: int, rng: np.random.Generator, first: int
) -> tuple[np.ndarray, np.ndarray]:
    """(promotion mask, outage mask) over day_starts: the catalogue's fixed days
    first (so the default lake always has the same labelled days), then seeded
    random days from position ``first`` on (earlier days have no history to
    judge them by), never two anomalies on one day."""
    promo = np.zeros(len(day_starts), dtype=bool)
    outage = np.zeros(len(day_starts), dtype=bool)
    for mask, fixed, k in ((promo, cat.PROMO_DAYS, promotions), (outage, cat.DROP_DAYS, outages)):
        fixed_days = np.isin(day_starts, [utc_epoch(d) for d in fixed]) & ~promo & ~outage
        chosen = np.flatnonzero(fixed_days)[:k]
        mask[chosen] = True
        free = np.flatnonzero(~promo & ~outage)
        free = free[free >= first]
        extra = k - len(chosen)
        if extra > len(free):
            raise ValueError(
                f"{promotions} promotion and {outages} outage days do not fit in "
                f"{len(day_starts)} days"
            )
        mask[choose(rng, free, extra)] = True
    return promo, outage


def _initial_plans(
    orders: int, batches: int, seed: int, promotions: int, outages: int
) -> list[Plan]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    day_starts = WINDOW_START + np.arange(WINDOW_DAYS, dtype=np.int64) * DAY
    # a stream of its own: the labelled days do not shift any other draw
    pick = np.random.default_rng(np.random.SeedSequence([seed, 0, 1]))
    promo, outage = _anomaly_days(day_starts, promotions, outages, pick, ANOMALY_HISTORY_DAYS)
    weights = _day_weights(day_starts, rng, promo, outage)
    counts = rng.multinomial(orders, weights / weights.sum())

    n_customers = max(20, orders // 4)
    n_inside = int(round(0.4 * n_customers))
    before = WINDOW_START - rng.integers(DAY, 3 * 365 * DAY, n_customers - n_inside)
    inside = WINDOW_START + rng.integers(0, WINDOW_DAYS * DAY, n_inside)
    signups = np.sort(np.concatenate([before, inside]))
    catalogue = int(min(5000, max(50, orders // 200)))

    plans = []
    for number, days in enumerate(np.array_split(np.arange(WINDOW_DAYS), batches), start=1):
        t0 = int(WINDOW_START + days[0] * DAY)
        t1 = int(WINDOW_START + (days[-1] + 1) * DAY)
        low = -np.inf if number == 1 else t0
        plans.append(
            Plan(
                number=number,
                t0=t0,
                t1=t1,
                day_counts=counts[days],
                promo=promo[days],
                signups=signups[(signups >= low) & (signups < t1)],
                catalogue=catalogue if number == 1 else 0,
                min_product_changes=0 if number == 1 else 1,
                outage=outage[days],
            )
        )
    return plans


def _append_plan(
    state: State, orders: int, seed: int, rates: Rates, promotions: int, outages: int
) -> Plan:
    number = state.batch + 1
    rng = np.random.default_rng(np.random.SeedSequence([seed, number, 0]))
    # the days the usual volume needs, but at most a week: appends must not run
    # far past the fixed window (Silver quarantines orders dated in the future)
    days = min(MAX_APPEND_DAYS, max(1, int(round(orders / max(state.daily_rate, 1e-9)))))
    t0 = state.window_end
    t1 = t0 + days * DAY
    day_starts = t0 + np.arange(days, dtype=np.int64) * DAY
    pick = np.random.default_rng(np.random.SeedSequence([seed, number, 0, 1]))
    promo, outage = _anomaly_days(day_starts, promotions, outages, pick, 0)
    weights = _day_weights(day_starts, rng, promo, outage)
    counts = rng.multinomial(orders, weights / weights.sum())
    n_new_customers = max(1, int(round(orders * 0.1)))
    signups = np.sort(t0 + rng.integers(0, t1 - t0, n_new_customers))
    updates = orders // 2 if rates("orders", "superseded_versions") > 0 else 0
    return Plan(
        number=number,
        t0=t0,
        t1=t1,
        day_counts=counts,
        promo=promo,
        signups=signups,
        order_updates=updates,
        update_earlier_only=True,
        min_product_changes=1,
        outage=outage,
    )


# --------------------------------------------------------------------------- batches


def _build_batch(
    state: State, plan: Plan, rates: Rates, seed: int, report: Callable[[str, float], None]
) -> dict[str, Part]:
    streams = np.random.SeedSequence([seed, plan.number]).spawn(4)
    rngs = [np.random.default_rng(s) for s in streams]
    report("building products", 0.0)
    products, changes = build_products(state, plan, rates, rngs[0])
    report("building customers", 0.1)
    customers = build_customers(state, plan, rates, rngs[1])
    report("building orders", 0.25)
    orders, new_orders = build_orders(state, plan, rates, rngs[2])
    report("building order items", 0.45)
    items = build_items(state, plan, rates, rngs[3], new_orders, changes)
    apply_price_changes(state, changes)
    state.batch = plan.number
    state.window_end = max(state.window_end, plan.t1)
    state.check_ranges()
    return {"orders": orders, "order_items": items, "customers": customers, "products": products}


def _write_batch(
    landing: Path,
    plan: Plan,
    parts: dict[str, Part],
    state: State,
    parameters: dict[str, Any],
    mode: str,
    report: Callable[[str, float], None],
    save_state: bool,
) -> dict[str, Any]:
    batch_id = batch_name(plan.number)
    files = {}
    for i, source in enumerate(SOURCES):
        report(f"writing {source}", 0.7 + 0.07 * i)
        part = parts[source]
        name = f"{batch_id}.{FILE_SUFFIX[source]}"
        path = landing / source / name
        if part.table is not None:
            rd.write_parquet(path, part.table)
        else:
            assert part.lines is not None
            rd.write_lines(path, part.header, part.lines)
        files[source] = name
    if save_state:
        report("saving generator state", 0.98)
        write_state(landing, state)
    manifest = {
        "batch_id": batch_id,
        "batch_number": plan.number,
        "mode": mode,
        "seed": state.seed,
        "window": {
            "start": datetime.fromtimestamp(plan.t0, UTC).strftime(rd.CANONICAL_TS),
            "end": datetime.fromtimestamp(plan.t1, UTC).strftime(rd.CANONICAL_TS),
        },
        "files": files,
        "rows": {s: parts[s].rows for s in SOURCES},
        "defects": {s: parts[s].defects for s in SOURCES},
        "informational": {"orders": list(INFORMATIONAL)},
        "new_keys": {s: parts[s].new_keys for s in SOURCES},
        "updated_keys": {s: parts[s].updated_keys for s in SOURCES},
        "parameters": parameters,
        "anomalies": _labelled_days(plan),
        "generator": state.counters(),
    }
    rd.write_json(landing / MANIFEST_DIR / f"{batch_id}.json", manifest)
    return manifest


def _labelled_days(plan: Plan) -> list[dict[str, Any]]:
    """The batch's injected anomaly days, for the Anomalies page and the tests:
    date, kind (promotion or outage), the direction a detector should report,
    and the factor applied to the day's usual order volume."""
    out = []
    outage = plan.outage if plan.outage is not None else np.zeros(len(plan.promo), dtype=bool)
    for i in np.flatnonzero(plan.promo | outage):
        day = datetime.fromtimestamp(plan.t0 + int(i) * DAY, UTC).strftime("%Y-%m-%d")
        if plan.promo[i]:
            out.append(dict(date=day, kind="promotion", direction="spike", factor=cat.PROMO_FACTOR))
        else:
            out.append(dict(date=day, kind="outage", direction="drop", factor=cat.DROP_FACTOR))
    return out


def _existing_manifests(landing: Path) -> list[dict[str, Any]]:
    folder = landing / MANIFEST_DIR
    paths = sorted(folder.glob("batch-*.json")) if folder.exists() else []
    return [json.loads(p.read_text(encoding="utf-8")) for p in paths]


def generate(
    lake: str | Path,
    orders: int = 10_000,
    batches: int = 3,
    seed: int = 42,
    defect_rate: float = 0.02,
    rates: dict[str, float] | None = None,
    append: bool = False,
    progress: Progress | None = None,
    promotions: int | None = None,
    outages: int | None = None,
) -> list[dict[str, Any]]:
    """Write demo batches into ``<lake>/landing`` and return their manifests.

    Without ``append`` the landing folder is cleared and ``batches`` batches
    are written, splitting ``orders`` new orders chronologically over the 365
    days ending 2026-06-30. With ``append`` one batch is added after the last
    one: ``orders`` new orders on the days that follow, status updates of about
    ``orders // 2`` earlier orders, and a few customer and price changes.
    ``defect_rate`` is the default rate of every defect, ``rates`` overrides
    single ones (see ``DEFECT_NAMES``); ``defect_rate=0`` writes clean data.
    ``progress(message, fraction)`` is called as work proceeds.

    Labelled anomalies: ``promotions`` days get PROMO_FACTOR times the usual
    orders (a spike), ``outages`` days DROP_FACTOR times (a drop); normal days
    follow a weekly rhythm with a weekend uplift. None means the catalogue's
    fixed days (5 promotions, 2 outages) for a new lake and none in an append;
    a count takes the fixed days first, then seeded random days. Each batch's
    manifest lists its days under ``anomalies`` (date, kind, direction, factor).
    """
    if isinstance(orders, bool) or not isinstance(orders, int) or orders < 1:
        raise ValueError(f"orders must be a positive integer, got {orders!r}")
    if isinstance(batches, bool) or not isinstance(batches, int) or not 1 <= batches <= WINDOW_DAYS:
        raise ValueError(f"batches must be an integer from 1 to {WINDOW_DAYS}, got {batches!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    _check_count("promotions", promotions)
    _check_count("outages", outages)
    effective = Rates(defect_rate, rates)
    landing = Path(lake) / "landing"
    tell: Progress = progress or (lambda message, fraction: None)
    parameters = {
        "orders": orders,
        "batches": 1 if append else batches,
        "defect_rate": float(defect_rate),
        "rates": effective.table(),
        "promotions": promotions,
        "outages": outages,
    }

    if append:
        existing = _existing_manifests(landing)
        if not existing:
            raise ValueError(f"nothing to append to in {landing}; run generate without append")
        state = read_state(landing, existing[-1], seed)
        plan = _append_plan(state, orders, seed, effective, promotions or 0, outages or 0)

        def step(message: str, fraction: float) -> None:
            tell(f"{batch_name(plan.number)}: {message}", fraction)

        parts = _build_batch(state, plan, effective, seed, step)
        manifest = _write_batch(landing, plan, parts, state, parameters, "append", step, True)
        tell("done", 1.0)
        return [manifest]

    if landing.exists():
        shutil.rmtree(landing)
    landing.mkdir(parents=True)
    state = State(seed=seed, daily_rate=orders / WINDOW_DAYS)
    manifests = []
    plans = _initial_plans(
        orders,
        batches,
        seed,
        len(cat.PROMO_DAYS) if promotions is None else promotions,
        len(cat.DROP_DAYS) if outages is None else outages,
    )
    for k, plan in enumerate(plans):

        def step(message: str, fraction: float, k: int = k, plan: Plan = plan) -> None:
            tell(f"{batch_name(plan.number)}: {message}", (k + fraction) / len(plans))

        parts = _build_batch(state, plan, effective, seed, step)
        last = k == len(plans) - 1
        manifests.append(
            _write_batch(landing, plan, parts, state, parameters, "initial", step, save_state=last)
        )
    tell("done", 1.0)
    return manifests
