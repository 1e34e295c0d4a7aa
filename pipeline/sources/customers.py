"""Customers, their changes and defective customer records (JSON Lines)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.sources import catalog as cat
from pipeline.sources import render as rd
from pipeline.sources.contract import (
    CUSTOMER_COLUMNS,
    CUSTOMER_ID_WIDTH,
    DAY,
    DEFECTS_BY_SOURCE,
    Rates,
    rate_count,
)
from pipeline.sources.model import (
    CUSTOMER_STATE,
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
    typed_rows,
)


def _make_customers(
    rng: np.random.Generator, numbers: np.ndarray, signups: np.ndarray, t1: int
) -> Cols:
    n = len(numbers)
    country = rng.choice(len(cat.COUNTRIES), n, p=probs(cat.COUNTRY_WEIGHTS))
    city = cat.CITY_START[country] + np.floor(rng.random(n) * cat.CITY_COUNT[country]).astype(int)
    return typed_rows(
        {
            "num": numbers,
            "signup": signups,
            "first": rng.integers(0, len(cat.FIRST_NAMES), n),
            "last": rng.integers(0, len(cat.LAST_NAMES), n),
            "sep": rng.integers(0, len(cat.EMAIL_SEPARATORS), n),
            "domain": rng.choice(len(cat.EMAIL_DOMAINS), n, p=probs(cat.EMAIL_DOMAIN_WEIGHTS)),
            "country": country,
            "city": city,
            "segment": rng.choice(len(cat.SEGMENTS), n, p=probs(cat.SEGMENT_WEIGHTS)),
            "updated": np.minimum(signups + rng.integers(0, 3600, n), t1 - 1),
            "updatable": np.ones(n, dtype=bool),
        },
        CUSTOMER_STATE,
    )


_FIRST_DISPLAY = tuple(f for f, _ in cat.FIRST_NAMES)
_FIRST_ASCII = tuple(a for _, a in cat.FIRST_NAMES)
_LAST_DISPLAY = tuple(f for f, _ in cat.LAST_NAMES)
_LAST_ASCII = tuple(a for _, a in cat.LAST_NAMES)


def _email_local(c: Cols) -> pa.Array:
    return pc.binary_join_element_wise(
        rd.text(_FIRST_ASCII, c["first"]),
        rd.text(cat.EMAIL_SEPARATORS, c["sep"]),
        rd.text(_LAST_ASCII, c["last"]),
        rd.integers(c["num"]),
        "",
    )


def _customer_columns(
    c: Cols,
    *,
    null_id: bool = False,
    email: pa.Array | None = None,
    signup_date: pa.Array | None = None,
) -> list[pa.Array]:
    n = len(c["num"])
    if email is None:
        email = pc.binary_join_element_wise(
            _email_local(c), rd.text(cat.EMAIL_DOMAINS, c["domain"]), "@"
        )
    name = pc.binary_join_element_wise(
        rd.text(_FIRST_DISPLAY, c["first"]), rd.text(_LAST_DISPLAY, c["last"]), " "
    )
    return [
        rd.const(None, n) if null_id else rd.ids("C", c["num"], CUSTOMER_ID_WIDTH),
        name,
        email,
        signup_date if signup_date is not None else rd.dates(c["signup"]),
        rd.text(cat.COUNTRIES, c["country"]),
        rd.text(cat.CITY_NAMES, c["city"]),
        rd.text(cat.SEGMENTS, c["segment"]),
        rd.timestamps(c["updated"]),
    ]


def _invalid_emails(rng: np.random.Generator, c: Cols) -> pa.Array:
    """Addresses no sensible e-mail rule accepts: no '@', nothing before or
    after it, or a space inside."""
    n = len(c["num"])
    local = _email_local(c)
    domain = rd.text(cat.EMAIL_DOMAINS, c["domain"])
    shapes = [
        pc.binary_join_element_wise(local, "@", ""),  # bob@
        pc.binary_join_element_wise(local, domain, "."),  # no-at-sign.com
        pc.binary_join_element_wise(  # a b@x.com
            rd.text(_FIRST_ASCII, c["first"]), rd.text(_LAST_ASCII, c["last"]), " "
        ),
        pc.binary_join_element_wise("@", domain, ""),  # @example.com
    ]
    shapes[2] = pc.binary_join_element_wise(shapes[2], domain, "@")
    kind = rng.integers(0, len(shapes), n)
    out = shapes[0]
    for k in range(1, len(shapes)):
        out = pc.if_else(pa.array(kind == k), shapes[k], out)
    return out


def build_customers(state: State, plan: Plan, rates: Rates, rng: np.random.Generator) -> Part:
    src = "customers"
    n = len(plan.signups)
    numbers = state.next_customer + np.arange(n)
    state.next_customer += n
    new = _make_customers(rng, numbers, plan.signups, plan.t1)
    k_invalid = min(rate_count(rates(src, "invalid_email"), n), n)
    invalid = choose(rng, np.arange(n), k_invalid)
    new["updatable"][invalid] = False
    state.customers = concat_rows(state.customers, new)

    # new versions: moved city, changed segment or changed e-mail
    rate = rates(src, "superseded_versions")
    k_versions = rate_count(rate, n)
    eligible = np.flatnonzero(
        state.customers["updatable"] & (state.customers["updated"] < plan.t1 - 120)
    )
    index = choose(rng, eligible, k_versions)
    v = take_rows(state.customers, index)
    kind = rng.integers(0, 3, len(index))
    local = v["city"] - cat.CITY_START[v["country"]]
    count = cat.CITY_COUNT[v["country"]]
    moved = (
        cat.CITY_START[v["country"]]
        + (local + 1 + np.floor(rng.random(len(index)) * (count - 1)).astype(int)) % count
    )
    v["city"] = np.where(kind == 0, moved, v["city"]).astype(np.int16)
    n_seg = len(cat.SEGMENTS)
    new_segment = (v["segment"] + 1 + rng.integers(0, n_seg - 1, len(index))) % n_seg
    v["segment"] = np.where(kind == 1, new_segment, v["segment"]).astype(np.int8)
    n_sep, n_dom = len(cat.EMAIL_SEPARATORS), len(cat.EMAIL_DOMAINS)
    v["sep"] = np.where(kind == 2, (v["sep"] + 1) % n_sep, v["sep"]).astype(np.int8)
    v["domain"] = np.where(
        kind == 2, (v["domain"] + rng.integers(0, n_dom, len(index))) % n_dom, v["domain"]
    ).astype(np.int8)
    v["updated"] = later_than(rng, v["updated"], plan.t0, plan.t1)
    for key in ("city", "segment", "sep", "domain", "updated"):
        state.customers[key][index] = v[key]

    # clean rows: the batch's new customers and the new versions, by updated_at
    valid_new = np.ones(n, dtype=bool)
    valid_new[invalid] = False
    new_cols = _customer_columns(new)
    if k_invalid:
        new_cols[2] = rd.scatter(
            new_cols[2], invalid, _invalid_emails(rng, take_rows(new, invalid))
        )
    version_cols = _customer_columns(v)
    columns = [
        pa.concat_arrays([a.cast(pa.string()), b.cast(pa.string())])
        for a, b in zip(new_cols, version_cols, strict=True)
    ]
    updated_all = np.concatenate([new["updated"], v["updated"]])
    order = np.argsort(updated_all, kind="stable")
    clean = rd.json_lines(CUSTOMER_COLUMNS, columns).take(pa.array(order))
    dup_pool = np.flatnonzero(np.concatenate([valid_new, np.ones(len(index), dtype=bool)])[order])

    # extra customers that no order refers to
    counts = {r: rate_count(rates(src, r), n) for r in DEFECTS_BY_SOURCE[src]}
    inserted = []
    k_missing = counts["missing_key"]
    updated = distinct_instants(rng, plan.t0, plan.t1, k_missing)
    signup = updated - rng.integers(DAY, 30 * DAY, k_missing)
    missing = _make_customers(rng, rng.integers(1, 100_000, k_missing), signup, plan.t1)
    missing["updated"] = updated
    inserted.append(rd.json_lines(CUSTOMER_COLUMNS, _customer_columns(missing, null_id=True)))

    k_bad_date = counts["unparseable_signup_date"]
    numbers = state.next_customer + np.arange(k_bad_date)
    state.next_customer += k_bad_date
    bad = _make_customers(
        rng, numbers, plan.t0 + rng.integers(0, plan.t1 - plan.t0, k_bad_date), plan.t1
    )
    cols = _customer_columns(bad, signup_date=pick_text(rng, cat.UNPARSEABLE_DATES, k_bad_date))
    inserted.append(rd.json_lines(CUSTOMER_COLUMNS, cols))

    k_malformed = counts["malformed_record"]
    numbers = state.next_customer + np.arange(k_malformed)
    state.next_customer += k_malformed
    broken = _make_customers(
        rng, numbers, plan.t0 + rng.integers(0, plan.t1 - plan.t0, k_malformed), plan.t1
    )
    inserted.append(_malformed_json(rng, _customer_columns(broken)))

    dup_index = choose(rng, dup_pool, counts["exact_duplicates"])
    inserted.append(clean.take(pa.array(dup_index, pa.int64())))
    lines = arrange_lines(clean, inserted, rng)

    defects = {r: 0 for r in DEFECTS_BY_SOURCE[src]}
    defects.update(
        missing_key=k_missing,
        invalid_email=k_invalid,
        unparseable_signup_date=k_bad_date,
        malformed_record=k_malformed,
        exact_duplicates=len(dup_index),
        superseded_versions=len(index),
    )
    return Part(rows=len(lines), defects=defects, new_keys=n, updated_keys=len(index), lines=lines)


def _malformed_json(rng: np.random.Generator, columns: list[pa.Array]) -> pa.Array:
    """Broken JSON Lines that no JSON parser accepts (never valid JSON of another shape)."""
    n = len(columns[0])
    cid, name, email = columns[0], columns[1], columns[2]
    shapes = [
        # truncated after a key: {"customer_id": "C0000012", "name":
        pc.binary_join_element_wise('{"customer_id": "', cid, '", "name": ', ""),
        # closing brace missing
        pc.binary_join_element_wise(
            '{"customer_id": "', cid, '", "name": "', name, '", "email": "', email, '"', ""
        ),
        # comma missing between members
        pc.binary_join_element_wise('{"customer_id": "', cid, '" "name": "', name, '"}', ""),
    ]
    kind = rng.integers(0, len(shapes), n)
    out = shapes[0]
    for k in range(1, len(shapes)):
        out = pc.if_else(pa.array(kind == k), shapes[k], out)
    return out.cast(pa.string())
