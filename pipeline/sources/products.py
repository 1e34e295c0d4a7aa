"""Product catalogue, price changes and defective products (Parquet)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.sources import catalog as cat
from pipeline.sources import render as rd
from pipeline.sources.contract import (
    DAY,
    DEFECTS_BY_SOURCE,
    PRODUCT_ID_WIDTH,
    PRODUCT_SCHEMA,
    Rates,
    rate_count,
)
from pipeline.sources.model import (
    PRODUCT_STATE,
    Cols,
    Part,
    Plan,
    State,
    choose,
    concat_rows,
    distinct_instants,
    empty_rows,
    later_than,
    probs,
    take_rows,
    typed_rows,
)


def _make_products(rng: np.random.Generator, numbers: np.ndarray, t_ref: int) -> Cols:
    n = len(numbers)
    category = rng.choice(len(cat.CATEGORIES), n, p=probs(cat.CATEGORY_WEIGHTS))
    sub = cat.SUB_START[category] + np.floor(rng.random(n) * cat.SUB_COUNT[category]).astype(int)
    brand = cat.BRAND_START[category] + np.floor(rng.random(n) * cat.BRAND_COUNT[category]).astype(
        int
    )
    noun = cat.NOUN_START[sub] + np.floor(rng.random(n) * cat.NOUN_COUNT[sub]).astype(int)
    model = rng.integers(0, len(cat.MODEL_LETTERS), n) * 1000 + rng.integers(100, 1000, n)
    low = np.log(cat.CATEGORY_PRICE_LOW[category])
    high = np.log(cat.CATEGORY_PRICE_HIGH[category])
    price = np.exp(low + (high - low) * rng.random(n) ** 1.6)
    list_cents = np.floor(price).astype(np.int64) * 100 + 99
    cost = np.rint(list_cents * rng.uniform(0.35, 0.75, n)).astype(np.int64)
    cost = np.clip(cost, 1, list_cents - 1)
    return typed_rows(
        {
            "num": numbers,
            "cat": category,
            "sub": sub,
            "brand": brand,
            "noun": noun,
            "model": model,
            "list": list_cents,
            "cost": cost,
            "active": rng.random(n) >= 0.04,
            "updated": t_ref - rng.integers(DAY, 60 * DAY, n),
        },
        PRODUCT_STATE,
    )


def _product_table(p: Cols, *, null_id: bool = False) -> pa.Table:
    n = len(p["num"])
    letter = rd.text(cat.MODEL_LETTERS, p["model"] // 1000)
    name = pc.binary_join_element_wise(
        rd.text(cat.BRANDS, p["brand"]),
        rd.text(cat.NOUNS, p["noun"]),
        pc.binary_join_element_wise(letter, rd.integers(p["model"] % 1000), ""),
        " ",
    )
    return pa.table(
        [
            rd.const(None, n) if null_id else rd.ids("P", p["num"], PRODUCT_ID_WIDTH),
            name,
            rd.text(cat.CATEGORY_NAMES, p["cat"]),
            rd.text(cat.SUBCATEGORIES, p["sub"]),
            rd.text(cat.BRANDS, p["brand"]),
            pa.array(p["list"] / 100.0, pa.float64()),
            pa.array(p["cost"] / 100.0, pa.float64()),
            pa.array(p["active"], pa.bool_()),
            rd.timestamps(p["updated"]),
        ],
        schema=PRODUCT_SCHEMA,
    )


@dataclass
class PriceChanges:
    index: np.ndarray  # positions in state.products
    list: np.ndarray
    cost: np.ndarray
    updated: np.ndarray


def build_products(
    state: State, plan: Plan, rates: Rates, rng: np.random.Generator
) -> tuple[Part, PriceChanges]:
    src = "products"
    catalogue = empty_rows(PRODUCT_STATE)
    if plan.catalogue:
        numbers = state.next_product + np.arange(plan.catalogue)
        state.next_product += plan.catalogue
        catalogue = _make_products(rng, numbers, plan.t0)
        state.products = concat_rows(state.products, catalogue)

    # price changes: a new version with a later updated_at
    rate = rates(src, "superseded_versions")
    k = rate_count(rate, len(state.products["num"]))
    if rate > 0:
        k = max(k, plan.min_product_changes)
    eligible = np.flatnonzero(state.products["updated"] < plan.t1 - 120)
    index = choose(rng, eligible, k)
    old = take_rows(state.products, index)
    factor = rng.uniform(0.85, 1.2, len(index))
    new_list = np.maximum(np.floor(old["list"] / 100 * factor).astype(np.int64), 0) * 100 + 99
    new_list = np.where(new_list == old["list"], new_list + 100, new_list)
    new_cost = np.clip(
        np.rint(old["cost"] * new_list / old["list"]).astype(np.int64), 1, new_list - 1
    )
    updated = later_than(rng, old["updated"], plan.t0, plan.t1)
    changes = PriceChanges(index, new_list, new_cost, updated)
    changed = dict(old, list=new_list, cost=new_cost, updated=updated)
    changed = take_rows(changed, np.argsort(updated, kind="stable"))
    clean = concat_rows(catalogue, changed)
    n_clean = len(clean["num"])

    # defects: extra products nothing refers to
    counts = {r: rate_count(rates(src, r), n_clean) for r in DEFECTS_BY_SOURCE[src]}
    k_dup = min(counts["exact_duplicates"], n_clean)
    clean_table = _product_table(clean)
    tables = [clean_table]
    missing = _make_products(rng, np.zeros(counts["missing_key"], dtype=np.int64), plan.t0)
    missing["updated"] = distinct_instants(rng, plan.t0, plan.t1, counts["missing_key"])
    tables.append(_product_table(missing, null_id=True))
    for rule, column in (("negative_list_price", "list"), ("negative_unit_cost", "cost")):
        k_rule = counts[rule]
        numbers = state.next_product + np.arange(k_rule)
        state.next_product += k_rule
        bad = _make_products(rng, numbers, plan.t0)
        bad["updated"] = plan.t0 + rng.integers(0, plan.t1 - plan.t0, k_rule)
        bad[column] = -bad[column]
        tables.append(_product_table(bad))
    dup_index = choose(rng, np.arange(n_clean), k_dup)
    tables.append(clean_table.take(pa.array(dup_index, pa.int64())))
    table = pa.concat_tables(tables)
    table = table.take(pa.array(rd.arrangement(n_clean, table.num_rows - n_clean, rng)))

    defects = {r: 0 for r in DEFECTS_BY_SOURCE[src]}
    defects.update(
        missing_key=counts["missing_key"],
        negative_list_price=counts["negative_list_price"],
        negative_unit_cost=counts["negative_unit_cost"],
        exact_duplicates=k_dup,
        superseded_versions=len(index),
    )
    part = Part(
        rows=table.num_rows,
        defects=defects,
        new_keys=len(catalogue["num"]),
        updated_keys=len(index),
        table=table,
    )
    return part, changes


def apply_price_changes(state: State, changes: PriceChanges) -> None:
    state.products["list"][changes.index] = changes.list
    state.products["cost"][changes.index] = changes.cost
    state.products["updated"][changes.index] = changes.updated
