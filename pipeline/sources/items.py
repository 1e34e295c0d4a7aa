"""Order lines and defective item lines (CSV)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.sources import catalog as cat
from pipeline.sources import render as rd
from pipeline.sources.contract import (
    DEFECTS_BY_SOURCE,
    ITEM_COLUMNS,
    ORDER_ID_WIDTH,
    ORPHAN_ORDER_BASE,
    PRODUCT_ID_WIDTH,
    UNKNOWN_PRODUCT_BASE,
    Rates,
    rate_count,
)
from pipeline.sources.model import (
    Cols,
    Part,
    Plan,
    State,
    arrange_lines,
    choose,
    cumcount,
    pick_text,
    probs,
)
from pipeline.sources.orders import NewOrders
from pipeline.sources.products import PriceChanges


def _popularity(numbers: np.ndarray) -> np.ndarray:
    """A fixed heavy-tailed popularity per product number (same in every batch)."""
    h = (numbers.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(2**32)
    return 1.0 / (0.03 + h.astype(float) / 2**32)


def build_items(
    state: State,
    plan: Plan,
    rates: Rates,
    rng: np.random.Generator,
    orders: NewOrders,
    changes: PriceChanges,
) -> Part:
    src = "order_items"
    n = len(orders.numbers)
    lines_per_order = rng.choice(5, n, p=probs(cat.LINES_WEIGHTS)) + 1
    total = int(lines_per_order.sum())
    owner = np.repeat(np.arange(n), lines_per_order)
    starts = np.cumsum(lines_per_order) - lines_per_order
    line_no = np.arange(total) - np.repeat(starts, lines_per_order) + 1

    products = state.products
    sellable = np.flatnonzero(products["active"])
    weight = _popularity(products["num"][sellable])
    weight = weight / weight.sum()
    change_at = np.full(len(products["num"]), np.iinfo(np.int64).max)
    change_at[changes.index] = changes.updated
    new_price = products["list"].copy()
    new_price[changes.index] = changes.list

    def lines_for(k: int, ts: np.ndarray, promo: np.ndarray) -> Cols:
        """k valid item values: product, price in force at ts, quantity, discount."""
        product = sellable[rng.choice(len(sellable), k, p=weight)]
        price = np.where(ts >= change_at[product], new_price[product], products["list"][product])
        chance = np.where(promo, 0.55, 0.22)
        discount = np.where(
            rng.random(k) < chance,
            np.asarray(cat.DISCOUNTS)[
                rng.choice(len(cat.DISCOUNTS), k, p=probs(cat.DISCOUNT_WEIGHTS))
            ],
            0,
        )
        return {
            "product": products["num"][product],
            "price": price,
            "quantity": rng.choice(5, k, p=probs(cat.QUANTITY_WEIGHTS)) + 1,
            "discount": discount,
        }

    def columns(order_ids: pa.Array, line: pa.Array, v: Cols) -> list[pa.Array]:
        return [
            order_ids,
            line,
            rd.ids("P", v["product"], PRODUCT_ID_WIDTH),
            rd.integers(v["quantity"]),
            rd.money(v["price"]),
            rd.integers(v["discount"]),
        ]

    values = lines_for(total, orders.ts[owner], orders.promo[owner])
    clean = rd.csv_lines(
        columns(rd.ids("O", orders.numbers[owner], ORDER_ID_WIDTH), rd.integers(line_no), values)
    )

    counts = {r: rate_count(rates(src, r), total) for r in DEFECTS_BY_SOURCE[src]}
    inserted = []
    # defective lines on clean orders, on line numbers after the clean ones
    slot_rules = (
        "invalid_quantity",
        "invalid_unit_price",
        "invalid_discount",
        "unknown_product",
        "malformed_record",
    )
    if n == 0:
        counts.update({r: 0 for r in (*slot_rules, "missing_key")})
    kinds = np.repeat(np.arange(len(slot_rules)), [counts[r] for r in slot_rules])
    rng.shuffle(kinds)
    slot_order = np.sort(rng.integers(0, n, len(kinds))) if n else np.zeros(0, dtype=np.int64)
    slot_line = lines_per_order[slot_order] + 1 + cumcount(slot_order)
    v = lines_for(len(kinds), orders.ts[slot_order], orders.promo[slot_order])
    unknown = np.flatnonzero(kinds == 3)
    k_unknown = len(unknown)
    v["product"][unknown] = UNKNOWN_PRODUCT_BASE + state.next_unknown_product + np.arange(k_unknown)
    state.next_unknown_product += k_unknown
    cols = columns(
        rd.ids("O", orders.numbers[slot_order], ORDER_ID_WIDTH), rd.integers(slot_line), v
    )
    for kind_code, (column, bad_values) in enumerate(
        (
            (3, cat.INVALID_QUANTITIES),
            (4, cat.INVALID_UNIT_PRICES),
            (5, cat.INVALID_DISCOUNTS),
        )
    ):
        where = np.flatnonzero(kinds == kind_code)
        cols[column] = rd.scatter(cols[column], where, pick_text(rng, bad_values, len(where)))
    ok = np.flatnonzero(kinds != 4)
    inserted.append(rd.csv_lines(cols).take(pa.array(ok, pa.int64())))
    broken = np.flatnonzero(kinds == 4)
    inserted.append(rd.raw_lines([c.take(pa.array(broken, pa.int64())) for c in cols[:3]]))

    # missing keys: half without line_no (one per order), half without order_id
    k_missing = counts["missing_key"]
    k_no_line = min(k_missing - k_missing // 2, n)
    k_no_order = k_missing // 2
    who = choose(rng, np.arange(n), k_no_line)
    v = lines_for(k_no_line, orders.ts[who], orders.promo[who])
    inserted.append(
        rd.csv_lines(
            columns(rd.ids("O", orders.numbers[who], ORDER_ID_WIDTH), rd.const(None, k_no_line), v)
        )
    )
    at = plan.t0 + rng.integers(0, plan.t1 - plan.t0, k_no_order)
    v = lines_for(k_no_order, at, np.zeros(k_no_order, dtype=bool))
    # distinct (line_no, product) pairs, so these rows never duplicate each other
    spread = rng.permutation(len(sellable))
    i = np.arange(k_no_order)
    v["product"] = products["num"][sellable[spread[i % len(sellable)]]]
    inserted.append(
        rd.csv_lines(columns(rd.const(None, k_no_order), rd.integers(1 + i // len(sellable)), v))
    )

    # orphans: lines of orders that exist in no batch
    k_orphan = counts["orphan_item"]
    orphan_numbers = ORPHAN_ORDER_BASE + state.next_orphan_order + np.arange(k_orphan)
    state.next_orphan_order += k_orphan
    at = plan.t0 + rng.integers(0, plan.t1 - plan.t0, k_orphan)
    v = lines_for(k_orphan, at, np.zeros(k_orphan, dtype=bool))
    inserted.append(
        rd.csv_lines(
            columns(rd.ids("O", orphan_numbers, ORDER_ID_WIDTH), rd.integers(np.ones(k_orphan)), v)
        )
    )

    dup_index = choose(rng, np.arange(total), counts["exact_duplicates"])
    inserted.append(clean.take(pa.array(dup_index, pa.int64())))
    lines = arrange_lines(clean, inserted, rng)

    defects = {r: 0 for r in DEFECTS_BY_SOURCE[src]}
    defects.update({r: int((kinds == i).sum()) for i, r in enumerate(slot_rules)})
    defects.update(
        missing_key=k_no_line + k_no_order,
        orphan_item=k_orphan,
        exact_duplicates=len(dup_index),
    )
    return Part(
        rows=len(lines),
        defects=defects,
        new_keys=total + k_unknown,
        updated_keys=0,
        lines=lines,
        header=",".join(ITEM_COLUMNS),
    )
