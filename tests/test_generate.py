"""The demo generator: determinism, exact manifests, clean data, appends.

The defect counts are re-derived from the files by an independent reader
written here from the data contract (docs/contract.md §2 and §3), not from the
generator's code, and compared with the manifests rule by rule.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.sources import DEFECT_NAMES, DEFECTS_BY_SOURCE
from pipeline.sources.generate import generate

ORDER_COLUMNS = [
    "order_id",
    "customer_id",
    "order_ts",
    "status",
    "channel",
    "payment_method",
    "country",
    "updated_at",
]
ITEM_COLUMNS = ["order_id", "line_no", "product_id", "quantity", "unit_price", "discount_pct"]
CUSTOMER_COLUMNS = [
    "customer_id",
    "name",
    "email",
    "signup_date",
    "country",
    "city",
    "segment",
    "updated_at",
]
STATUS_MAP = {
    **dict.fromkeys(["pending", "new", "created"], "pending"),
    **dict.fromkeys(["processing", "paid", "confirmed"], "processing"),
    **dict.fromkeys(["shipped", "dispatched", "in transit"], "shipped"),
    **dict.fromkeys(["delivered", "complete", "completed", "fulfilled"], "delivered"),
    **dict.fromkeys(["cancelled", "canceled", "void"], "cancelled"),
    **dict.fromkeys(["returned", "refunded", "return"], "returned"),
}
CANONICAL_TS = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
OLDEST = datetime(2000, 1, 1, tzinfo=UTC)
INGESTED = datetime(2026, 11, 1, tzinfo=UTC)  # any day after the data window


def parse_ts(text: str | None) -> datetime | None:
    """The timestamp formats of docs/contract.md §3; None when unparseable."""
    if text is None:
        return None
    try:
        if ISO.match(text):
            value = datetime.fromisoformat(text)
        elif re.fullmatch(r"\d{10}", text):
            return datetime.fromtimestamp(int(text), UTC)
        elif re.fullmatch(r"\d{8}", text):
            value = datetime.strptime(text, "%Y%m%d")
        elif re.fullmatch(r"\d{1,2}/\d{1,2}/\d{4}", text):  # month, day may be unpadded
            value = datetime.strptime(text, "%m/%d/%Y")
        elif re.fullmatch(r"\d{1,2}-\d{1,2}-\d{4}", text):
            value = datetime.strptime(text, "%d-%m-%Y")
        elif re.fullmatch(r"[A-Z][a-z]+ \d{1,2}, \d{4}", text):
            value = datetime.strptime(text, "%B %d, %Y")
        else:
            return None
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def is_int_between(text: str, low: int, high: int) -> bool:
    return bool(re.fullmatch(r"-?\d+", text)) and low <= int(text) <= high


def is_number_between(text: str, low: float, high: float, *, low_open: bool = False) -> bool:
    if not re.fullmatch(r"-?\d+(\.\d+)?", text):
        return False
    value = float(text)
    return (value > low if low_open else value >= low) and value <= high


def read_csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def batches(landing: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((landing / "_manifests").glob("*.json"))]


def audit(landing: Path) -> dict[str, dict[str, dict[str, int]]]:
    """Count every rule per batch and source from the files alone, and check
    that no row breaks more than one rule."""
    manifests = batches(landing)
    found: dict[str, dict[str, dict[str, int]]] = {}
    # raw rows per batch
    raw: dict[str, dict[str, list[Any]]] = defaultdict(dict)
    for m in manifests:
        b = m["batch_id"]
        for source in ("orders", "order_items"):
            header, rows = read_csv_rows(landing / source / m["files"][source])
            assert header == (ORDER_COLUMNS if source == "orders" else ITEM_COLUMNS)
            raw[b][source] = rows
        raw[b]["customers"] = (
            (landing / "customers" / m["files"]["customers"]).read_text("utf-8").splitlines()
        )
        table = pq.read_table(landing / "products" / m["files"]["products"])
        raw[b]["products"] = table.to_pylist()
        found[b] = {s: Counter() for s in DEFECTS_BY_SOURCE}

    def dedup(b: str, source: str, rows: list[Any], key=lambda r: tuple(r)) -> list[Any]:
        seen: set[Any] = set()
        out = []
        for row in rows:
            k = key(row)
            if k in seen:
                found[b][source]["exact_duplicates"] += 1
            else:
                seen.add(k)
                out.append(row)
        return out

    def failed(b: str, source: str, rules: list[str]) -> None:
        assert len(rules) <= 1, f"{b} {source}: a row breaks {rules}"
        for r in rules:
            found[b][source][r] += 1

    # products and customers first: the keys other sources refer to
    product_ids: set[str] = set()
    product_versions: list[tuple[str, str, str]] = []
    for b in raw:
        for p in dedup(b, "products", raw[b]["products"], key=lambda r: tuple(r.values())):
            rules = []
            if not p["product_id"]:
                rules.append("missing_key")
            if p["list_price"] is not None and p["list_price"] < 0:
                rules.append("negative_list_price")
            if p["unit_cost"] is not None and p["unit_cost"] < 0:
                rules.append("negative_unit_cost")
            failed(b, "products", rules)
            if not rules:
                product_ids.add(p["product_id"])
                product_versions.append((p["product_id"], p["updated_at"], b))
                assert 0 < p["unit_cost"] < p["list_price"]

    customer_ids: set[str] = set()
    customer_versions: list[tuple[str, str, str]] = []
    for b in raw:
        for line in dedup(b, "customers", raw[b]["customers"], key=lambda r: r):
            try:
                c = json.loads(line)
            except json.JSONDecodeError:
                failed(b, "customers", ["malformed_record"])
                continue
            assert list(c) == CUSTOMER_COLUMNS
            assert all(v is None or isinstance(v, str) for v in c.values())
            rules = []
            if not c["customer_id"]:
                rules.append("missing_key")
            if parse_ts(c["signup_date"]) is None:
                rules.append("unparseable_signup_date")
            if not EMAIL.match(c["email"] or ""):
                rules.append("invalid_email")  # a warning: the customer is kept
            failed(b, "customers", rules)
            if not set(rules) - {"invalid_email"}:
                customer_ids.add(c["customer_id"])
                customer_versions.append((c["customer_id"], c["updated_at"], b))

    order_ids: set[str] = set()
    order_versions: list[tuple[str, str, str]] = []
    quarantined_orders: set[str] = set()
    for b in raw:
        for row in dedup(b, "orders", raw[b]["orders"]):
            if len(row) != len(ORDER_COLUMNS):
                failed(b, "orders", ["malformed_record"])
                quarantined_orders.add(row[0])
                continue
            r = dict(zip(ORDER_COLUMNS, row, strict=True))
            rules = []
            if not r["order_id"]:
                rules.append("missing_key")
            ts = parse_ts(r["order_ts"])
            if ts is None:
                rules.append("unparseable_order_ts")
            elif ts < OLDEST:
                rules.append("order_ts_too_old")
            elif ts > INGESTED:
                rules.append("order_ts_in_future")
            elif not CANONICAL_TS.match(r["order_ts"]):
                rules.append("mixed_timestamp_format")
            status = STATUS_MAP.get(r["status"].strip().lower())
            if status is None:
                rules.append("unknown_status")
            elif status != r["status"]:
                rules.append("status_variant")
            if r["customer_id"] not in customer_ids:
                rules.append("orphan_customer")
            failed(b, "orders", rules)
            quarantine = set(rules) - {
                "orphan_customer",
                "mixed_timestamp_format",
                "status_variant",
            }
            if quarantine:
                quarantined_orders.add(r["order_id"])
            else:
                assert CANONICAL_TS.match(r["updated_at"])
                order_ids.add(r["order_id"])
                order_versions.append((r["order_id"], r["updated_at"], b))
    # a quarantined order is an extra order: never given a clean version
    assert not (quarantined_orders - {""}) & order_ids

    lines_of: dict[str, list[int]] = defaultdict(list)
    clean_lines_of: dict[str, list[int]] = defaultdict(list)
    for b in raw:
        for row in dedup(b, "order_items", raw[b]["order_items"]):
            if len(row) != len(ITEM_COLUMNS):
                failed(b, "order_items", ["malformed_record"])
                continue
            r = dict(zip(ITEM_COLUMNS, row, strict=True))
            rules = []
            if not r["order_id"] or not r["line_no"]:
                rules.append("missing_key")
            elif r["order_id"] not in order_ids:
                rules.append("orphan_item")
            if not is_int_between(r["quantity"], 1, 1000):
                rules.append("invalid_quantity")
            if not is_number_between(r["unit_price"], 0, 100000, low_open=True):
                rules.append("invalid_unit_price")
            if not is_number_between(r["discount_pct"], 0, 100):
                rules.append("invalid_discount")
            if r["product_id"] not in product_ids:
                rules.append("unknown_product")  # a warning: the line is kept
            failed(b, "order_items", rules)
            if not set(rules) - {"unknown_product"}:
                lines_of[r["order_id"]].append(int(r["line_no"]))
            if not rules:
                clean_lines_of[r["order_id"]].append(int(r["line_no"]))
    # every clean order has lines 1..k, and defective lines use other numbers
    assert set(lines_of) == order_ids
    assert all(len(set(v)) == len(v) for v in lines_of.values())
    assert all(sorted(v) == list(range(1, len(v) + 1)) for v in clean_lines_of.values())
    assert all(1 <= len(v) <= 5 for v in clean_lines_of.values())

    for source, versions in (
        ("orders", order_versions),
        ("customers", customer_versions),
        ("products", product_versions),
    ):
        latest: dict[str, str] = {}
        # superseded in a batch = its versions that replace an older one
        for key, updated, b in sorted(versions, key=lambda v: (v[1], v[2])):
            if key in latest:
                assert updated > latest[key], f"{source} {key}: conflicting versions"
                found[b][source]["superseded_versions"] += 1
            latest[key] = updated
    return {b: {s: dict(c) for s, c in per.items()} for b, per in found.items()}


def assert_manifests_match(landing: Path) -> None:
    counted = audit(landing)
    for m in batches(landing):
        for source, rules in DEFECTS_BY_SOURCE.items():
            assert set(m["defects"][source]) == set(rules)
            for rule in rules:
                got = counted[m["batch_id"]][source].get(rule, 0)
                assert got == m["defects"][source][rule], (m["batch_id"], source, rule)


def digest(landing: Path) -> dict[str, str]:
    return {
        str(p.relative_to(landing)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(landing.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lake = tmp_path_factory.mktemp("dirty")
    generate(lake, orders=3000, batches=3, seed=7, defect_rate=0.03)
    return lake / "landing"


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lake = tmp_path_factory.mktemp("clean")
    generate(lake, orders=2000, batches=2, seed=3, defect_rate=0)
    return lake / "landing"


def test_layout_and_rows_match_files(dirty: Path) -> None:
    manifests = batches(dirty)
    assert [m["batch_id"] for m in manifests] == ["batch-000001", "batch-000002", "batch-000003"]
    for m in manifests:
        b = m["batch_id"]
        assert m["files"] == {
            "orders": f"{b}.csv",
            "order_items": f"{b}.csv",
            "customers": f"{b}.jsonl",
            "products": f"{b}.parquet",
        }
        for source in ("orders", "order_items"):
            data = (dirty / source / m["files"][source]).read_bytes()
            assert data.endswith(b"\n") and b"\n\n" not in data
            assert m["rows"][source] == data.count(b"\n") - 1
        text = (dirty / "customers" / m["files"]["customers"]).read_text("utf-8")
        assert m["rows"]["customers"] == text.count("\n")
        assert (
            m["rows"]["products"] == pq.read_metadata(dirty / "products" / f"{b}.parquet").num_rows
        )
    # no temporary files left behind
    assert not [p for p in dirty.rglob(".*")]


def test_product_schema(dirty: Path) -> None:
    schema = pq.read_schema(dirty / "products" / "batch-000001.parquet")
    assert [(f.name, str(f.type)) for f in schema] == [
        ("product_id", "string"),
        ("name", "string"),
        ("category", "string"),
        ("subcategory", "string"),
        ("brand", "string"),
        ("list_price", "double"),
        ("unit_cost", "double"),
        ("is_active", "bool"),
        ("updated_at", "string"),
    ]


def test_defects_recounted_from_files(dirty: Path) -> None:
    assert_manifests_match(dirty)
    totals = Counter()
    for m in batches(dirty):
        for source, rules in m["defects"].items():
            totals.update({f"{source}.{r}": n for r, n in rules.items()})
    # every defect kind actually occurs at this size
    assert all(totals[f"{s}.{r}"] > 0 for s, rules in DEFECTS_BY_SOURCE.items() for r in rules)


def test_pandas_recount(dirty: Path) -> None:
    """A second, coarser recount with pandas on the last batch."""
    m = batches(dirty)[-1]
    orders = pd.read_csv(
        dirty / "orders" / m["files"]["orders"],
        dtype=str,
        keep_default_na=False,
        on_bad_lines="skip",
    )
    # pandas pads short (malformed) lines with empty fields instead of rejecting them
    short = orders["updated_at"] == ""
    assert short.sum() == m["defects"]["orders"]["malformed_record"]
    orders = orders[~short]
    known = orders["status"].str.strip().str.lower().isin(STATUS_MAP)
    assert (~known).sum() == m["defects"]["orders"]["unknown_status"]
    assert orders.duplicated().sum() == m["defects"]["orders"]["exact_duplicates"]
    assert (orders["order_id"] == "").sum() == m["defects"]["orders"]["missing_key"]

    items = pd.read_csv(
        dirty / "order_items" / m["files"]["order_items"],
        dtype=str,
        keep_default_na=False,
        on_bad_lines="skip",
    )
    assert len(items) == m["rows"]["order_items"]
    short = items["discount_pct"] == ""
    assert short.sum() == m["defects"]["order_items"]["malformed_record"]
    items = items[~short]
    assert items.duplicated().sum() == m["defects"]["order_items"]["exact_duplicates"]
    orphans = items["order_id"].str.startswith("O9")
    assert orphans.sum() == m["defects"]["order_items"]["orphan_item"]


def test_clean_data_has_no_defects(clean: Path) -> None:
    assert_manifests_match(clean)
    for m in batches(clean):
        assert all(n == 0 for rules in m["defects"].values() for n in rules.values())
        orders = pd.read_csv(clean / "orders" / m["files"]["orders"], dtype=str)
        assert not orders.isna().any().any()
        assert orders["order_ts"].str.fullmatch(CANONICAL_TS.pattern).all()
        assert orders["status"].isin(set(STATUS_MAP.values())).all()
        assert orders["order_id"].is_unique
        assert len(orders) == m["new_keys"]["orders"]
        items = pd.read_csv(clean / "order_items" / m["files"]["order_items"], dtype=str)
        assert not items.isna().any().any()
        assert items["unit_price"].str.fullmatch(r"\d+\.\d{2}").all()
        assert items["quantity"].astype(int).between(1, 5).all()
        assert items["discount_pct"].isin(["0", "5", "10", "15", "20", "25"]).all()
        customers = pd.read_json(
            clean / "customers" / m["files"]["customers"], lines=True, dtype=str
        )
        assert not customers.isna().any().any()
        assert customers["email"].str.match(EMAIL.pattern).all()


def test_clean_data_is_consistent(clean: Path) -> None:
    landing = clean
    ms = batches(landing)
    orders = pd.concat(
        pd.read_csv(landing / "orders" / m["files"]["orders"], dtype=str) for m in ms
    )
    items = pd.concat(
        pd.read_csv(landing / "order_items" / m["files"]["order_items"], dtype=str) for m in ms
    )
    customers = pd.concat(
        pd.read_json(landing / "customers" / m["files"]["customers"], lines=True, dtype=str)
        for m in ms
    )
    products = pd.concat(pd.read_parquet(landing / "products" / m["files"]["products"]) for m in ms)
    assert set(items["order_id"]) == set(orders["order_id"])
    assert set(items["product_id"]) <= set(products["product_id"])
    assert set(orders["customer_id"]) <= set(customers["customer_id"])
    # signup before the first order; orders inside the fixed window
    first = orders.groupby("customer_id")["order_ts"].min()
    signup = customers.groupby("customer_id")["signup_date"].min()
    assert (signup.reindex(first.index) <= first.str[:10]).all()
    assert orders["order_ts"].min() >= "2025-07-01" and orders["order_ts"].max() < "2026-07-01"
    # line numbers 1..k per order
    k = items.groupby("order_id")["line_no"].agg(lambda s: sorted(map(int, s)))
    assert all(v == list(range(1, len(v) + 1)) for v in k)
    # batches are time slices: new orders of batch 2 come after those of batch 1
    first_batch = pd.read_csv(landing / "orders" / ms[0]["files"]["orders"], dtype=str)
    second = pd.read_csv(landing / "orders" / ms[1]["files"]["orders"], dtype=str)
    assert first_batch["order_ts"].max() < second["order_ts"].min()


def test_status_mix_and_volume_shape(tmp_path: Path) -> None:
    generate(tmp_path, orders=20000, batches=1, seed=11, defect_rate=0)
    orders = pd.read_csv(tmp_path / "landing" / "orders" / "batch-000001.csv", dtype=str)
    share = orders["status"].value_counts(normalize=True)
    assert 0.03 < share["cancelled"] < 0.08 and 0.015 < share["returned"] < 0.06
    assert share["delivered"] > 0.5 and share["pending"] > 0.03
    per_day = orders["order_ts"].str[:10].value_counts()
    median = per_day.median()
    assert per_day["2025-11-28"] > 2.5 * median  # promotion day
    assert per_day.get("2025-09-16", 0) < 0.3 * median  # outage day
    items = pd.read_csv(tmp_path / "landing" / "order_items" / "batch-000001.csv", dtype=str)
    assert 2.3 < len(items) / len(orders) < 2.8


def test_deterministic(tmp_path: Path) -> None:
    args = dict(orders=1500, batches=2, defect_rate=0.05)
    generate(tmp_path / "a", seed=5, **args)
    generate(tmp_path / "b", seed=5, **args)
    generate(tmp_path / "c", seed=6, **args)
    a = digest(tmp_path / "a" / "landing")
    assert a == digest(tmp_path / "b" / "landing")
    c = digest(tmp_path / "c" / "landing")
    assert a.keys() == c.keys()
    assert a["orders/batch-000001.csv"] != c["orders/batch-000001.csv"]


def test_regenerate_clears_only_landing(tmp_path: Path) -> None:
    (tmp_path / "silver").mkdir()
    (tmp_path / "silver" / "keep.txt").write_text("x")
    generate(tmp_path, orders=500, batches=3, seed=1)
    generate(tmp_path, orders=500, batches=2, seed=1)
    assert (tmp_path / "silver" / "keep.txt").exists()
    assert sorted(p.name for p in (tmp_path / "landing" / "orders").iterdir()) == [
        "batch-000001.csv",
        "batch-000002.csv",
    ]


def test_append_adds_one_batch(tmp_path: Path) -> None:
    generate(tmp_path, orders=3000, batches=3, seed=9, defect_rate=0.03)
    landing = tmp_path / "landing"
    before = digest(landing)
    (m,) = generate(tmp_path, orders=300, seed=9, defect_rate=0.03, append=True)
    assert m["batch_id"] == "batch-000004" and m["mode"] == "append"
    after = digest(landing)
    data_before = {k: v for k, v in before.items() if not k.startswith("_")}
    assert {k: after[k] for k in data_before} == data_before
    assert {k for k in after if not k.startswith("_")} - set(data_before) == {
        "orders/batch-000004.csv",
        "order_items/batch-000004.csv",
        "customers/batch-000004.jsonl",
        "products/batch-000004.parquet",
    }
    assert m["new_keys"]["orders"] == 300
    assert m["defects"]["orders"]["superseded_versions"] == 150
    assert m["updated_keys"]["customers"] > 0 and m["updated_keys"]["products"] > 0
    assert_manifests_match(landing)

    # the new batch continues the timeline and the id sequences
    old = pd.concat(
        pd.read_csv(landing / "orders" / f"batch-00000{i}.csv", dtype=str, on_bad_lines="skip")
        for i in (1, 2, 3)
    )
    new = pd.read_csv(landing / "orders" / "batch-000004.csv", dtype=str, on_bad_lines="skip")
    new = new.dropna(subset=["order_id"])
    updates = new[new["order_id"].isin(set(old["order_id"]))]
    fresh = new[~new["order_id"].isin(set(old["order_id"]))]
    assert (updates["updated_at"] >= "2026-07-01").all()
    assert updates["order_id"].nunique() == 150

    def valid(ts: pd.Series) -> list[datetime]:
        parsed = [parse_ts(t) for t in ts.dropna()]
        return [t for t in parsed if t is not None and OLDEST <= t <= INGESTED]

    assert min(valid(fresh["order_ts"])) >= datetime(2026, 7, 1, tzinfo=UTC)
    assert max(valid(old["order_ts"])) < datetime(2026, 7, 1, tzinfo=UTC)
    assert fresh["order_id"].dropna().min() > old["order_id"].dropna().max()

    # and a second append goes on from there
    (m5,) = generate(tmp_path, orders=300, seed=9, append=True)
    assert m5["batch_id"] == "batch-000005"
    assert m5["window"]["start"] == m["window"]["end"]
    assert_manifests_match(landing)


def test_new_ids_unique_across_batches(dirty: Path) -> None:
    seen: dict[str, set[str]] = defaultdict(set)
    for m in batches(dirty):
        ids: dict[str, set[str]] = {}
        _, rows = read_csv_rows(dirty / "orders" / m["files"]["orders"])
        ids["orders"] = {r[0] for r in rows if r[0]}
        customers = []
        for line in (dirty / "customers" / m["files"]["customers"]).read_text("utf-8").splitlines():
            try:
                customers.append(json.loads(line)["customer_id"])
            except json.JSONDecodeError:
                customers.append(re.search(r'"(C\d{7})"', line).group(1))
        ids["customers"] = {c for c in customers if c}
        products = pq.read_table(dirty / "products" / m["files"]["products"]).column("product_id")
        ids["products"] = {p for p in products.to_pylist() if p}
        _, item_rows = read_csv_rows(dirty / "order_items" / m["files"]["order_items"])
        ids["items"] = {(r[0], r[1]) for r in item_rows if r[0] and len(r) > 1 and r[1]}
        for kind in ("customers", "products", "items"):
            # a record seen in an earlier batch comes back only as a new version
            versions = seen[kind] & ids[kind]
            assert len(versions) <= m["updated_keys"].get(
                {"items": "order_items"}.get(kind, kind), 0
            )
        old_orders = seen["orders"] & ids["orders"]
        assert len(old_orders) <= m["updated_keys"]["orders"]
        for kind, values in ids.items():
            seen[kind] |= values


def test_rates_and_arguments(tmp_path: Path) -> None:
    assert "missing_key" in DEFECT_NAMES and "orphan_item" in DEFECT_NAMES
    with pytest.raises(ValueError, match="unknown defect rate"):
        generate(tmp_path, orders=100, rates={"bogus": 0.1})
    with pytest.raises(ValueError):
        generate(tmp_path, orders=100, defect_rate=2)
    with pytest.raises(ValueError, match="nothing to append"):
        generate(tmp_path / "empty", orders=100, append=True)
    (m,) = generate(
        tmp_path,
        orders=2000,
        batches=1,
        defect_rate=0,
        rates={"unknown_status": 0.1, "order_items.missing_key": 0.05},
    )
    assert m["defects"]["orders"]["unknown_status"] == 200
    assert m["defects"]["order_items"]["missing_key"] > 0
    assert m["defects"]["customers"]["missing_key"] == 0
    assert sum(m["defects"]["orders"].values()) == 200
    assert_manifests_match(tmp_path / "landing")


def test_progress_reports_fractions(tmp_path: Path) -> None:
    seen: list[tuple[str, float]] = []
    generate(tmp_path, orders=300, batches=2, progress=lambda msg, f: seen.append((msg, f)))
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and 0 <= fractions[0] and fractions[-1] == 1.0
    assert all(isinstance(msg, str) and msg for msg, _ in seen)


def test_tiny_and_single_batch(tmp_path: Path) -> None:
    (m,) = generate(tmp_path, orders=1, batches=1, seed=2)
    assert m["new_keys"]["orders"] == 1
    assert_manifests_match(tmp_path / "landing")
    ms = generate(tmp_path, orders=40, batches=12, seed=2, defect_rate=0.2)
    assert len(ms) == 12
    assert_manifests_match(tmp_path / "landing")


def test_csv_quoting_is_standard(dirty: Path) -> None:
    """Fields with a comma (the 'MMMM d, yyyy' format) are quoted; malformed
    lines never contain a quote, so a reader keeps them on one line."""
    for m in batches(dirty):
        text = (dirty / "orders" / m["files"]["orders"]).read_text("utf-8")
        rows = list(csv.reader(io.StringIO(text)))
        assert len(rows) == text.count("\n")
        for line in text.splitlines():
            if line.count(",") < 7:
                assert '"' not in line and line.count(",") == 2


@pytest.mark.parametrize("seed", [1, 2])
def test_extreme_rates_stay_exact(tmp_path: Path, seed: int) -> None:
    """High rates crowd many defects onto few rows; counts must stay exact."""
    rates = {"superseded_versions": 1.0, "unknown_product": 1.0, "missing_key": 0.3}
    generate(tmp_path, orders=600, batches=4, seed=seed, defect_rate=0.25, rates=rates)
    generate(tmp_path, orders=200, seed=seed, defect_rate=0.25, rates=rates, append=True)
    assert_manifests_match(tmp_path / "landing")


# ------------------------------------------------------------------ labelled anomalies


def _orders_per_day(landing: Path, manifests: list[dict]) -> pd.Series:
    orders = pd.concat(
        pd.read_csv(landing / "orders" / m["files"]["orders"], dtype=str) for m in manifests
    )
    return orders["order_ts"].str[:10].value_counts()


def test_labelled_anomalies_in_the_manifest(tmp_path: Path) -> None:
    ms = generate(tmp_path, orders=40_000, batches=2, seed=4, defect_rate=0)
    labels = [a for m in ms for a in m["anomalies"]]
    # the default: the catalogue's fixed days, each in the manifest of its batch
    assert sorted((a["date"], a["kind"]) for a in labels) == [
        ("2025-08-29", "promotion"),
        ("2025-09-16", "outage"),
        ("2025-11-28", "promotion"),
        ("2025-12-01", "promotion"),
        ("2026-02-17", "outage"),
        ("2026-03-20", "promotion"),
        ("2026-05-12", "promotion"),
    ]
    for m in ms:
        for a in m["anomalies"]:
            assert m["window"]["start"][:10] <= a["date"] < m["window"]["end"][:10]
            assert a["direction"] == {"promotion": "spike", "outage": "drop"}[a["kind"]]
    per_day = _orders_per_day(tmp_path / "landing", ms)
    labelled = {a["date"] for a in labels}
    normal = per_day[~per_day.index.isin(labelled)]
    median = normal.median()
    for a in labels:  # an outage day falls to <= 40 % of normal, a promotion day >= 250 %
        if a["kind"] == "outage":
            assert per_day.get(a["date"], 0) <= 0.4 * median, a
        else:
            assert per_day[a["date"]] >= 2.5 * median, a
    # weekly rhythm of normal days: a weekend uplift, Saturday well above Tuesday
    weekday = pd.to_datetime(normal.index).dayofweek
    by_weekday = normal.groupby(weekday).mean()
    assert by_weekday[5] > 1.25 * by_weekday[1]
    assert normal.max() < 2.0 * median, "no unlabelled promotion-sized day"


def test_anomaly_counts_are_options(tmp_path: Path) -> None:
    ms = generate(tmp_path / "a", orders=3000, batches=3, seed=8, promotions=9, outages=4)
    labels = [a for m in ms for a in m["anomalies"]]
    assert sum(a["kind"] == "promotion" for a in labels) == 9
    assert sum(a["kind"] == "outage" for a in labels) == 4
    assert len({a["date"] for a in labels}) == 13, "one anomaly per day at most"
    assert min(a["date"] for a in labels) >= "2025-08-26", "eight weeks of history first"
    assert ms[0]["parameters"]["promotions"] == 9 and ms[0]["parameters"]["outages"] == 4
    again = generate(tmp_path / "b", orders=3000, batches=3, seed=8, promotions=9, outages=4)
    assert [m["anomalies"] for m in again] == [m["anomalies"] for m in ms]
    assert digest(tmp_path / "a" / "landing") == digest(tmp_path / "b" / "landing")
    none = generate(tmp_path / "c", orders=3000, batches=1, seed=8, promotions=0, outages=0)
    assert none[0]["anomalies"] == []
    (appended,) = generate(tmp_path / "a", orders=300, seed=8, append=True)
    assert appended["anomalies"] == [], "an append injects none unless asked"
    (appended,) = generate(tmp_path / "a", orders=300, seed=8, append=True, outages=1)
    assert [a["kind"] for a in appended["anomalies"]] == ["outage"]
    with pytest.raises(ValueError, match="promotions must be an integer"):
        generate(tmp_path / "d", orders=100, promotions=-1)
    with pytest.raises(ValueError, match="do not fit"):
        generate(tmp_path / "d", orders=100, promotions=300, outages=100)
