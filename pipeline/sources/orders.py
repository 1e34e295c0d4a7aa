"""New orders, status updates and defective order lines (CSV)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.sources import catalog as cat
from pipeline.sources import render as rd
from pipeline.sources.contract import (
    CUSTOMER_ID_WIDTH,
    DAY,
    DEFECTS_BY_SOURCE,
    FUTURE_START,
    ORDER_COLUMNS,
    ORDER_ID_WIDTH,
    ORPHAN_CUSTOMER_BASE,
    TOO_OLD_START,
    Rates,
    rate_count,
)
from pipeline.sources.model import (
    ORDER_STATE,
    Cols,
    Part,
    Plan,
    State,
    arrange_lines,
    choose,
    concat_rows,
    distinct_instants,
    later_than,
    pick_text,
    probs,
    take_rows,
    text_by_group,
    typed_rows,
    weighted_sample,
)


def _pick_customers(state: State, ts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions in state.customers of customers who signed up before ts.

    Customers are in signup order, so the eligible ones are a prefix. A third
    of the picks snap to every tenth customer: a loyal core with many orders,
    which gives the RFM segments something to separate."""
    eligible = np.searchsorted(state.customers["signup"], ts, side="left")
    if len(ts) and eligible.min() == 0:
        raise RuntimeError("an order precedes every customer's signup")
    index = np.floor(eligible * rng.random(len(ts))).astype(np.int64)
    loyal = rng.random(len(ts)) < 0.3
    index[loyal] -= index[loyal] % 10
    return index


def _random_orders(state: State, rng: np.random.Generator, ts: np.ndarray, t1: int) -> Cols:
    n = len(ts)
    who = _pick_customers(state, ts, rng)
    own_country = state.customers["country"][who]
    other = rng.choice(len(cat.COUNTRIES), n, p=probs(cat.COUNTRY_WEIGHTS))
    return typed_rows(
        {
            "num": np.zeros(n, dtype=np.int64),
            "cust": state.customers["num"][who],
            "ts": ts,
            "status": rng.choice(len(cat.STATUSES), n, p=probs(cat.STATUS_WEIGHTS)),
            "channel": rng.choice(len(cat.CHANNELS), n, p=probs(cat.CHANNEL_WEIGHTS)),
            "payment": rng.choice(len(cat.PAYMENTS), n, p=probs(cat.PAYMENT_WEIGHTS)),
            "country": np.where(rng.random(n) < 0.9, own_country, other),
            "updated": np.minimum(ts + rng.integers(60, 2 * 3600, n), t1 - 1),
        },
        ORDER_STATE,
    )


def _order_columns(
    o: Cols,
    *,
    null_id: bool = False,
    order_ts: pa.Array | None = None,
    status: pa.Array | None = None,
) -> list[pa.Array]:
    n = len(o["num"])
    return [
        rd.const(None, n) if null_id else rd.ids("O", o["num"], ORDER_ID_WIDTH),
        rd.ids("C", o["cust"], CUSTOMER_ID_WIDTH),
        order_ts if order_ts is not None else rd.timestamps(o["ts"]),
        status if status is not None else rd.text(cat.STATUSES, o["status"]),
        rd.text(cat.CHANNELS, o["channel"]),
        rd.text(cat.PAYMENTS, o["payment"]),
        rd.text(cat.COUNTRIES, o["country"]),
        rd.timestamps(o["updated"]),
    ]


@dataclass
class NewOrders:
    numbers: np.ndarray
    ts: np.ndarray
    promo: np.ndarray


def build_orders(
    state: State, plan: Plan, rates: Rates, rng: np.random.Generator
) -> tuple[Part, NewOrders]:
    src = "orders"
    n = int(plan.day_counts.sum())
    day = np.repeat(np.arange(len(plan.day_counts)), plan.day_counts)
    hour = rng.choice(24, n, p=probs(cat.HOUR_WEIGHTS))
    ts = np.sort(plan.t0 + day * DAY + hour * 3600 + rng.integers(0, 3600, n))
    day_of = (ts - plan.t0) // DAY
    new = _random_orders(state, rng, ts, plan.t1)
    new["num"] = state.next_order + np.arange(n)
    state.next_order += n

    counts = {r: rate_count(rates(src, r), n) for r in DEFECTS_BY_SOURCE[src]}
    # orphan customers, other timestamp formats and status spellings go to
    # different orders, which are then never updated nor duplicated
    shuffled = rng.permutation(n)
    k_orphan = min(counts["orphan_customer"], n)
    k_mixed = min(counts["mixed_timestamp_format"], n - k_orphan)
    k_variant = min(counts["status_variant"], n - k_orphan - k_mixed)
    orphan = np.sort(shuffled[:k_orphan])
    mixed = np.sort(shuffled[k_orphan : k_orphan + k_mixed])
    variant = np.sort(shuffled[k_orphan + k_mixed : k_orphan + k_mixed + k_variant])
    plain = np.ones(n, dtype=bool)
    plain[shuffled[: k_orphan + k_mixed + k_variant]] = False
    new["cust"][orphan] = ORPHAN_CUSTOMER_BASE + state.next_orphan_customer + np.arange(k_orphan)
    state.next_orphan_customer += k_orphan
    state.orders = concat_rows(
        state.orders, take_rows(new, np.flatnonzero(plain & (new["status"] <= cat.DELIVERED)))
    )

    # status updates of earlier (or this batch's) orders: new clean versions
    rate = rates(src, "superseded_versions")
    k_updates = plan.order_updates if plan.order_updates is not None else rate_count(rate, n)
    if rate == 0:
        k_updates = 0
    so = state.orders
    eligible = np.flatnonzero(
        so["updated"] < (plan.t0 if plan.update_earlier_only else plan.t1 - 120)
    )
    age = np.maximum(plan.t1 - so["ts"][eligible], 0)
    weight = np.exp(-age / (45 * DAY)) * np.where(
        so["status"][eligible] == cat.DELIVERED, 0.25, 1.0
    )
    index = eligible[weighted_sample(rng, weight + 1e-12, k_updates)]
    u = take_rows(so, index)
    roll = rng.random(len(index))
    step = np.where(u["status"] == cat.DELIVERED, cat.RETURNED, u["status"] + 1)
    cancel = ((u["status"] == cat.PENDING) | (u["status"] == cat.PROCESSING)) & (roll < 0.1)
    u["status"] = np.where(cancel, cat.CANCELLED, step).astype(np.int8)
    u["updated"] = later_than(rng, u["updated"], plan.t0, plan.t1)
    so["status"][index] = u["status"]
    so["updated"][index] = u["updated"]
    state.orders = take_rows(so, np.flatnonzero(so["status"] <= cat.DELIVERED))

    # clean rows: new orders and new versions, by updated_at
    order_ts = rd.timestamps(new["ts"])
    if k_mixed:
        codes = rng.integers(0, len(rd.TS_FORMATS), k_mixed)
        order_ts = rd.scatter(order_ts, mixed, rd.mixed_timestamps(new["ts"][mixed], codes))
    status = rd.text(cat.STATUSES, new["status"])
    if k_variant:
        status = rd.scatter(
            status, variant, text_by_group(rng, cat.STATUS_VARIANTS, new["status"][variant])
        )
    new_lines = rd.csv_lines(_order_columns(new, order_ts=order_ts, status=status))
    update_lines = rd.csv_lines(_order_columns(u))
    by_time = np.argsort(np.concatenate([new["updated"], u["updated"]]), kind="stable")
    clean = pa.concat_arrays([new_lines, update_lines]).take(pa.array(by_time))
    dup_pool = np.flatnonzero(np.concatenate([plain, np.ones(len(index), dtype=bool)])[by_time])

    # extra orders Silver must quarantine: no items, never updated
    inserted = []
    k_missing = counts["missing_key"]
    updated = distinct_instants(rng, plan.t0, plan.t1, k_missing)
    missing = _random_orders(state, rng, updated - rng.integers(60, 2 * 3600, k_missing), plan.t1)
    missing["updated"] = updated
    inserted.append(rd.csv_lines(_order_columns(missing, null_id=True)))

    def extra(k: int) -> Cols:
        o = _random_orders(state, rng, plan.t0 + rng.integers(0, plan.t1 - plan.t0, k), plan.t1)
        o["num"] = state.next_order + np.arange(k)
        state.next_order += k
        return o

    k = counts["unparseable_order_ts"]
    bad_ts = pick_text(rng, cat.UNPARSEABLE_TIMESTAMPS, k)
    inserted.append(rd.csv_lines(_order_columns(extra(k), order_ts=bad_ts)))
    k = counts["order_ts_in_future"]
    o = extra(k)
    o["ts"] = FUTURE_START + rng.integers(0, 364 * DAY, k)
    inserted.append(rd.csv_lines(_order_columns(o)))
    k = counts["order_ts_too_old"]
    o = extra(k)
    o["ts"] = TOO_OLD_START + rng.integers(0, 3650 * DAY, k)
    inserted.append(rd.csv_lines(_order_columns(o)))
    k = counts["unknown_status"]
    bad_status = pick_text(rng, cat.UNKNOWN_STATUSES, k)
    inserted.append(rd.csv_lines(_order_columns(extra(k), status=bad_status)))
    k = counts["malformed_record"]
    cols = _order_columns(extra(k))
    inserted.append(rd.raw_lines(cols[:3]))  # order_id,customer_id,order_ts: 3 of 8 fields

    dup_index = choose(rng, dup_pool, counts["exact_duplicates"])
    inserted.append(clean.take(pa.array(dup_index, pa.int64())))
    lines = arrange_lines(clean, inserted, rng)

    defects = {r: 0 for r in DEFECTS_BY_SOURCE[src]}
    defects.update(
        {
            r: counts[r]
            for r in (
                "missing_key",
                "unparseable_order_ts",
                "order_ts_in_future",
                "order_ts_too_old",
                "unknown_status",
                "malformed_record",
            )
        }
    )
    defects.update(
        orphan_customer=k_orphan,
        exact_duplicates=len(dup_index),
        superseded_versions=len(index),
        mixed_timestamp_format=k_mixed,
        status_variant=k_variant,
    )
    part = Part(
        rows=len(lines),
        defects=defects,
        new_keys=n,
        updated_keys=len(index),
        lines=lines,
        header=",".join(ORDER_COLUMNS),
    )
    return part, NewOrders(new["num"], ts, plan.promo[day_of] if n else np.zeros(0, dtype=bool))
