"""An independent, plain-Python reading of docs/contract.md §3 and §5.

It shares no code with pipeline/: it parses the landing files with the
standard library and pyarrow, applies the normalisation rules and computes
the Gold definitions with Decimal arithmetic, so the tests compare two
implementations of the same contract rather than the engine with itself.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path

import pyarrow.parquet as pq

COLUMNS = {
    "orders": [
        "order_id",
        "customer_id",
        "order_ts",
        "status",
        "channel",
        "payment_method",
        "country",
        "updated_at",
    ],
    "order_items": ["order_id", "line_no", "product_id", "quantity", "unit_price", "discount_pct"],
    "customers": [
        "customer_id",
        "name",
        "email",
        "signup_date",
        "country",
        "city",
        "segment",
        "updated_at",
    ],
    "products": [
        "product_id",
        "name",
        "category",
        "subcategory",
        "brand",
        "list_price",
        "unit_cost",
        "is_active",
        "updated_at",
    ],
}
KEYS = {
    "orders": ("order_id",),
    "order_items": ("order_id", "line_no"),
    "customers": ("customer_id",),
    "products": ("product_id",),
}
STATUS = {
    **dict.fromkeys(["pending", "new", "created"], "pending"),
    **dict.fromkeys(["processing", "paid", "confirmed"], "processing"),
    **dict.fromkeys(["shipped", "dispatched", "in transit"], "shipped"),
    **dict.fromkeys(["delivered", "complete", "completed", "fulfilled"], "delivered"),
    **dict.fromkeys(["cancelled", "canceled", "void"], "cancelled"),
    **dict.fromkeys(["returned", "refunded", "return"], "returned"),
}
REVENUE = {"processing", "shipped", "delivered"}
CENT = Decimal("0.01")
MIN_TS = dt.datetime(2000, 1, 1)


@dataclass
class Record:
    source: str
    batch: str
    seq: int
    values: dict[str, str | None]
    raw: str | None = None  # the line, when it could not be parsed


@dataclass
class Refined:
    rows: dict[tuple, dict] = field(default_factory=dict)  # key -> parsed surviving record
    versions: list[dict] = field(default_factory=list)  # all passing non-conflict versions
    quarantined: list[tuple[Record, list[str]]] = field(default_factory=list)
    duplicates: int = 0
    superseded: int = 0
    bronze: int = 0


# gold.daily_sales columns every comparison with this reference checks.
DAILY_COLUMNS = (
    "orders",
    "units",
    "customers",
    "new_customers",
    "cancelled_orders",
    "returned_orders",
    "gross_revenue",
    "net_revenue",
    "avg_order_value",
)


def _blank(v: object) -> str | None:
    if v is None:
        return None
    s = str(v)
    return None if s == "" else s


def read_landing(landing: Path) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {s: [] for s in COLUMNS}
    for source, cols in COLUMNS.items():
        folder = landing / source
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.iterdir() if not p.name.startswith(("_", "."))):
            batch = path.name.split(".")[0]
            if path.suffix == ".csv":
                lines = path.read_text(encoding="utf-8").splitlines()
                header = next(csv.reader([lines[0]]))
                for i, line in enumerate(lines[1:]):
                    fields = next(csv.reader([line]), [])
                    if len(fields) != len(header):
                        out[source].append(Record(source, batch, i, dict.fromkeys(cols), line))
                    else:
                        row = dict(zip(header, fields, strict=True))
                        vals = {c: _blank(row.get(c)) for c in cols}
                        out[source].append(Record(source, batch, i, vals))
            elif path.suffix == ".jsonl":
                for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
                    try:
                        obj = json.loads(line)
                        assert isinstance(obj, dict)
                    except (ValueError, AssertionError):
                        out[source].append(Record(source, batch, i, dict.fromkeys(cols), line))
                        continue
                    vals = {c: None if obj.get(c) is None else str(obj.get(c)) for c in cols}
                    out[source].append(Record(source, batch, i, vals))
            elif path.suffix == ".parquet":
                for i, row in enumerate(pq.read_table(path).to_pylist()):
                    vals = {}
                    for c in cols:
                        v = row.get(c)
                        vals[c] = (
                            None
                            if v is None
                            else (str(v).lower() if isinstance(v, bool) else str(v))
                        )
                    out[source].append(Record(source, batch, i, vals))
    return out


_ISO = re.compile(
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}(:?\d{2})?)?$"
)


def parse_ts(raw: str | None) -> dt.datetime | None:
    """UTC naive datetime, or None."""
    if raw is None:
        return None
    v = raw.strip()
    try:
        if _ISO.match(v):
            v2 = re.sub(r"([+-]\d{2})(\d{2})$", r"\1:\2", v)
            v2 = (
                re.sub(r"([+-]\d{2})$", r"\1:00", v2)
                if re.search(r"[T ][\d:.]+[+-]\d{2}$", v2)
                else v2
            )
            parsed = dt.datetime.fromisoformat(v2.replace("Z", "+00:00"))
            if parsed.tzinfo is not None:
                parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
            return parsed
        for pattern, fmt in (
            (r"^\d{4}-\d{2}-\d{2}$", "%Y-%m-%d"),
            (r"^\d{1,2}/\d{1,2}/\d{4}$", "%m/%d/%Y"),  # 7/8/2014 as well as 07/08/2014
            (r"^\d{1,2}-\d{1,2}-\d{4}$", "%d-%m-%Y"),
            (r"^\d{8}$", "%Y%m%d"),
            (r"^[A-Za-z]+ \d{1,2}, \d{4}$", "%B %d, %Y"),
        ):
            if re.match(pattern, v):
                return dt.datetime.strptime(v, fmt)
        if re.match(r"^\d{10}$", v):
            return dt.datetime.fromtimestamp(int(v), dt.UTC).replace(tzinfo=None)
    except ValueError:
        return None
    return None


def _int(raw: str | None) -> int | None:
    if raw is None or not re.match(r"^[+-]?\d{1,9}$", raw.strip()):
        return None
    return int(raw.strip())


def _dec(raw: str | None) -> Decimal | None:
    if raw is None:
        return None
    v = raw.strip()
    if not re.match(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,3})?$", v):
        return None
    try:
        return Decimal(v).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
    except InvalidOperation:
        return None


def _out_of_range(ts: dt.datetime | None, now: dt.datetime) -> bool:
    return ts is not None and (ts < MIN_TS or ts > now + dt.timedelta(days=1))


def check(source: str, r: Record, now: dt.datetime, order_ids: set[str]) -> tuple[list[str], dict]:
    """The rules a record fails, and its parsed values."""
    if r.raw is not None:
        return ["malformed_record"], {}
    v = r.values
    failed: list[str] = []
    p: dict = {"_batch": r.batch, "_seq": r.seq}
    updated = parse_ts(v.get("updated_at")) if "updated_at" in v else None
    p["updated_at"] = updated
    if source == "orders":
        ts = parse_ts(v["order_ts"])
        status = STATUS.get(re.sub(r"\s+", " ", (v["status"] or "").strip().lower()))
        if v["order_id"] is None:
            failed.append("missing_key")
        if ts is None:
            failed.append("unparseable_order_ts")
        elif ts < MIN_TS:
            failed.append("order_ts_too_old")
        elif ts > now + dt.timedelta(days=1):
            failed.append("order_ts_in_future")
        if status is None:
            failed.append("unknown_status")
        p.update(
            order_id=(v["order_id"] or "").strip(),
            customer_id=v["customer_id"].strip() if v["customer_id"] else None,
            order_ts=ts,
            status=status,
            country=v["country"].strip().upper() if v["country"] is not None else None,
            channel=v["channel"].strip().lower() if v["channel"] is not None else None,
        )
    elif source == "order_items":
        line_no, qty = _int(v["line_no"]), _int(v["quantity"])
        price = _dec(v["unit_price"])
        disc = _dec(v["discount_pct"] if v["discount_pct"] is not None else "0")
        if v["order_id"] is None or line_no is None:
            failed.append("missing_key")
        if qty is None or not 1 <= qty <= 1000:
            failed.append("invalid_quantity")
        if price is None or not (0 < price <= 100000):
            failed.append("invalid_unit_price")
        if disc is None or not (0 <= disc <= 100):
            failed.append("invalid_discount")
        if v["order_id"] is not None and v["order_id"].strip() not in order_ids:
            failed.append("orphan_item")
        p.update(
            order_id=(v["order_id"] or "").strip(),
            line_no=line_no,
            product_id=(v["product_id"] or "").strip(),
            quantity=qty,
            unit_price=price,
            discount_pct=disc,
        )
    elif source == "customers":
        signup = parse_ts(v["signup_date"])
        if v["customer_id"] is None:
            failed.append("missing_key")
        if v["signup_date"] is not None and signup is None:
            failed.append("unparseable_signup_date")
        if _out_of_range(signup, now):
            failed.append("signup_date_out_of_range")
        p.update(customer_id=(v["customer_id"] or "").strip())
    elif source == "products":
        lp, uc = _dec(v["list_price"]), _dec(v["unit_cost"])
        if v["product_id"] is None:
            failed.append("missing_key")
        if v["list_price"] is not None and lp is None:
            failed.append("invalid_list_price")
        if v["unit_cost"] is not None and uc is None:
            failed.append("invalid_unit_cost")
        if lp is not None and lp < 0:
            failed.append("negative_list_price")
        if uc is not None and uc < 0:
            failed.append("negative_unit_cost")
        p.update(
            product_id=(v["product_id"] or "").strip(),
            category=(v["category"] or "").strip() or "Unknown",
            unit_cost=uc,  # None: the cost is unknown, not zero
            name=v["name"],
            display_name=v["name"].strip() if v["name"] is not None else None,
        )
    if _out_of_range(updated, now):
        failed.append("updated_at_out_of_range")
    return failed, p


def refine(source: str, records: list[Record], now: dt.datetime, order_ids: set[str]) -> Refined:
    out = Refined(bronze=len(records))
    seen: set[tuple] = set()
    checked = []
    for r in sorted(records, key=lambda r: (r.batch, r.seq)):
        ident = (tuple(r.values[c] for c in COLUMNS[source]), r.raw)
        if ident in seen:
            out.duplicates += 1
            continue
        seen.add(ident)
        failed, parsed = check(source, r, now, order_ids)
        if failed:
            out.quarantined.append((r, failed))
        else:
            checked.append((r, parsed))
    by_key: dict[tuple, list] = defaultdict(list)
    for r, parsed in checked:
        by_key[
            tuple(r.values[k].strip() if r.values[k] else r.values[k] for k in KEYS[source])
        ].append((r, parsed))
    for key, group in by_key.items():

        def rank(item):  # newest first: parseable updated_at, then later batch
            ts = item[1].get("updated_at")
            return (ts is not None, ts or dt.datetime.min, item[0].batch)

        group.sort(key=rank, reverse=True)
        top = [g for g in group if rank(g) == rank(group[0])]
        if len(top) > 1:
            out.quarantined.extend((r, ["conflicting_versions"]) for r, _ in group)
            continue
        out.rows[key] = group[0][1]
        out.versions.extend(p for _, p in group)
        out.superseded += len(group) - 1
    return out


def line_amounts(
    q: int, price: Decimal, disc: Decimal, cost: Decimal | None
) -> tuple[Decimal, Decimal, Decimal | None]:
    """line_gross, line_net and line_cost (None when the unit cost is unknown)."""
    gross = (q * price).quantize(CENT, rounding=ROUND_HALF_UP)
    net = (q * price * (1 - disc / 100)).quantize(CENT, rounding=ROUND_HALF_UP)
    line_cost = None if cost is None else (q * cost).quantize(CENT, rounding=ROUND_HALF_UP)
    return gross, net, line_cost


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _cents(value: float) -> Decimal:
    return Decimal(repr(value)).quantize(CENT, rounding=ROUND_HALF_UP)


def revenue_anomalies(series: list[tuple[dt.date, Decimal]], orders: list[int]) -> dict:
    """The revenue_anomalies method as README (Gold) states it, one day at a time.

    series: (day, net revenue) for every calendar day in order; orders: that
    day's revenue-bearing orders. Everything a day uses lies strictly before it.
    """
    x = [float(v) for _, v in series]
    out: dict[dt.date, dict] = {}
    raw: list[float | None] = []  # ln(x + c) - ln(seasonal norm + c)
    residual: list[float | None] = []  # ln(x + c) - ln(expected + c)
    for t, (day, revenue) in enumerate(series):
        same_weekday = [x[t - 7 * w] for w in range(1, 9) if t - 7 * w >= 0]
        norm = _median(same_weekday) if len(same_weekday) >= 4 else None
        aov = _median([x[d] / orders[d] for d in range(max(0, t - 28), t) if orders[d] > 0])
        unit = None if aov is None else max(aov, 0.01)
        expected = r = None
        if norm is not None and unit is not None:
            raw.append(math.log(x[t] + unit) - math.log(norm + unit))
            level = _median([v for v in raw[max(0, t - 14) : t] if v is not None]) or 0.0
            expected = max(math.exp(math.log(norm + unit) + level) - unit, 0.0)
            r = math.log(x[t] + unit) - math.log(expected + unit)
        else:
            raw.append(None)
        residual.append(r)
        recent = [abs(v) for v in residual[max(0, t - 56) : t] if v is not None]
        lower = upper = score = None
        if r is not None and len(recent) >= 14:
            spread = max(1.4826 * statistics.median(recent), 0.15)
            base = expected + unit
            lower = _cents(max(base * math.exp(-3.5 * spread) - unit, 0.0))
            upper = _cents(base * math.exp(3.5 * spread) - unit)
            score = r / spread
        direction = None
        if lower is not None and revenue < lower:
            direction = "drop"
        elif upper is not None and revenue > upper:
            direction = "spike"
        out[day] = dict(
            net_revenue=revenue,
            expected_revenue=None if expected is None else _cents(expected),
            lower_bound=lower,
            upper_bound=upper,
            score=score,
            is_anomaly=direction is not None,
            direction=direction,
        )
    return out


def ntile(n_rows: int, buckets: int = 5) -> list[int]:
    """SQL ntile: the first (n mod b) buckets hold one row more."""
    base, extra = divmod(n_rows, buckets)
    out: list[int] = []
    for b in range(1, buckets + 1):
        out.extend([b] * (base + (1 if b <= extra else 0)))
    return out


SEGMENTS = [
    ("champions", {5}, {4, 5}),
    ("loyal", {3, 4}, {4, 5}),
    ("potential_loyalists", {4, 5}, {2, 3}),
    ("new_customers", {5}, {1}),
    ("promising", {4}, {1}),
    ("need_attention", {3}, {3}),
    ("about_to_sleep", {3}, {1, 2}),
    ("cant_lose", {1, 2}, {5}),
    ("at_risk", {1, 2}, {3, 4}),
    ("hibernating", {1, 2}, {1, 2}),
]


@dataclass
class Expected:
    refined: dict[str, Refined]
    daily_sales: dict[dt.date, dict]
    category_sales: dict[tuple[dt.date, str], dict]
    customer_rfm: dict[str, dict]
    revenue_anomalies: dict[dt.date, dict]


def compute(landing: Path, now: dt.datetime | None = None) -> Expected:
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    raw = read_landing(landing)
    refined = {s: refine(s, raw[s], now, set()) for s in ("products", "customers", "orders")}
    order_ids = {k[0] for k in refined["orders"].rows}
    refined["order_items"] = refine("order_items", raw["order_items"], now, order_ids)

    products = {k[0]: p for k, p in refined["products"].rows.items()}
    orders = {k[0]: p for k, p in refined["orders"].rows.items()}

    days: dict[dt.date, dict] = {}
    for o in orders.values():
        d = days.setdefault(
            o["order_ts"].date(),
            dict(
                orders=0,
                units=0,
                gross_revenue=Decimal(0),
                net_revenue=Decimal(0),
                customers=set(),
                new_customers=0,
                cancelled_orders=0,
                returned_orders=0,
            ),
        )
        if o["status"] in REVENUE:
            d["orders"] += 1
            if o["customer_id"] is not None:
                d["customers"].add(o["customer_id"])
        d["cancelled_orders"] += o["status"] == "cancelled"
        d["returned_orders"] += o["status"] == "returned"
    first: dict[str, dt.date] = {}
    for o in orders.values():
        if o["status"] in REVENUE and o["customer_id"] is not None:
            day = o["order_ts"].date()
            first[o["customer_id"]] = min(first.get(o["customer_id"], day), day)
    for day in first.values():
        days[day]["new_customers"] += 1

    categories: dict[tuple[dt.date, str], dict] = {}
    monetary: dict[str, Decimal] = defaultdict(Decimal)
    for item in refined["order_items"].rows.values():
        o = orders[item["order_id"]]
        if o["status"] not in REVENUE:
            continue
        product = products.get(item["product_id"])
        cost = product["unit_cost"] if product else None
        category = product["category"] if product else "Unknown"
        gross, net, line_cost = line_amounts(
            item["quantity"], item["unit_price"], item["discount_pct"], cost
        )
        day = days[o["order_ts"].date()]
        day["units"] += item["quantity"]
        day["gross_revenue"] += gross
        day["net_revenue"] += net
        month = o["order_ts"].date().replace(day=1)
        c = categories.setdefault(
            (month, category),
            dict(orders=set(), units=0, net_revenue=Decimal(0), gross_margin=None),
        )
        c["orders"].add(o["order_id"])
        c["units"] += item["quantity"]
        c["net_revenue"] += net
        if line_cost is not None:  # margin over the lines of known cost only
            c["gross_margin"] = (c["gross_margin"] or Decimal(0)) + net - line_cost
        if o["customer_id"] is not None:
            monetary[o["customer_id"]] += net
    for d in days.values():
        d["customers"] = len(d["customers"])
        d["avg_order_value"] = (
            (d["net_revenue"] / d["orders"]).quantize(CENT, rounding=ROUND_HALF_UP)
            if d["orders"]
            else None
        )
    month_total: dict[dt.date, Decimal] = defaultdict(Decimal)
    for (month, _), c in categories.items():
        month_total[month] += c["net_revenue"]
    for (month, _), c in categories.items():
        c["orders"] = len(c["orders"])
        c["revenue_share"] = (
            float(c["net_revenue"] / month_total[month]) if month_total[month] else None
        )

    as_of = max(o["order_ts"].date() for o in orders.values()) + dt.timedelta(days=1)
    per_customer: dict[str, dict] = {}
    for o in orders.values():
        if o["status"] in REVENUE and o["customer_id"] is not None:
            c = per_customer.setdefault(
                o["customer_id"], dict(last=o["order_ts"].date(), frequency=0)
            )
            c["frequency"] += 1
            c["last"] = max(c["last"], o["order_ts"].date())
    rfm = {
        cid: dict(
            last_order_date=c["last"],
            recency_days=(as_of - c["last"]).days,
            frequency=c["frequency"],
            monetary=monetary.get(cid, Decimal(0)),
            as_of_date=as_of,
        )
        for cid, c in per_customer.items()
    }
    for score, order_key in (
        ("r_score", lambda cid: (-rfm[cid]["recency_days"], cid)),
        ("f_score", lambda cid: (rfm[cid]["frequency"], cid)),
        ("m_score", lambda cid: (rfm[cid]["monetary"], cid)),
    ):
        ranked = sorted(rfm, key=order_key)
        for cid, bucket in zip(ranked, ntile(len(ranked)), strict=True):
            rfm[cid][score] = bucket
    for c in rfm.values():
        c["rfm_segment"] = next(
            name for name, rs, fs in SEGMENTS if c["r_score"] in rs and c["f_score"] in fs
        )

    lo, hi = min(days), max(days)
    calendar = [lo + dt.timedelta(days=i) for i in range((hi - lo).days + 1)]
    anomalies = revenue_anomalies(
        [(day, days[day]["net_revenue"] if day in days else Decimal(0)) for day in calendar],
        [days[day]["orders"] if day in days else 0 for day in calendar],
    )
    return Expected(refined, days, categories, rfm, anomalies)


# --------------------------------------------------------------------------- the Sales page
#
# gold.sales_cells, gold.sales_orders and gold.product_sales (docs/contract.md §4), and
# what the Sales page must show for a filter, computed here one order and one line at a
# time from Silver-shaped rows: orders as dicts (order_id, order_date, country, channel,
# status) and lines as dicts (order_id, product_id, product_name, category, quantity,
# line_gross, line_net, line_cost; money as Decimal, line_cost None when unknown).


def sales_rows(expected: Expected) -> tuple[list[dict], list[dict]]:
    """The orders and the order lines of the refined records, as Silver holds them."""
    products = {k[0]: p for k, p in expected.refined["products"].rows.items()}
    orders = [
        dict(
            order_id=o["order_id"],
            order_date=o["order_ts"].date(),
            country=o["country"],
            channel=o["channel"],
            status=o["status"],
        )
        for o in (p for k, p in expected.refined["orders"].rows.items())
    ]
    lines = []
    for item in expected.refined["order_items"].rows.values():
        product = products.get(item["product_id"])
        cost = product["unit_cost"] if product else None
        gross, net, line_cost = line_amounts(
            item["quantity"], item["unit_price"], item["discount_pct"], cost
        )
        lines.append(
            dict(
                order_id=item["order_id"],
                product_id=item["product_id"],
                product_name=(product or {}).get("display_name") or "Unknown product",
                category=product["category"] if product else "Unknown",
                quantity=item["quantity"],
                line_gross=gross,
                line_net=net,
                line_cost=line_cost,
            )
        )
    return orders, lines


def _dim(value: str | None) -> str:
    """A missing country or channel is selectable as `Unknown`."""
    return "Unknown" if value is None else value


def _add_money(acc: dict, line: dict, revenue: bool) -> None:
    acc["lines"] = acc.get("lines", 0) + 1
    if not revenue:
        return
    acc["units"] += line["quantity"]
    acc["gross_revenue"] += line["line_gross"]
    acc["net_revenue"] += line["line_net"]
    if line["line_cost"] is not None:  # margin over the lines of known cost only
        acc["cost"] = (acc["cost"] or Decimal(0)) + line["line_cost"]
        acc["costed_net_revenue"] = (acc["costed_net_revenue"] or Decimal(0)) + line["line_net"]


def _money_acc() -> dict:
    return dict(
        orders=set(),
        units=0,
        gross_revenue=Decimal(0),
        net_revenue=Decimal(0),
        cost=None,
        costed_net_revenue=None,
        lines=0,
    )


def sales_cells(orders: list[dict], lines: list[dict]) -> dict[tuple, dict]:
    """(order_date, category, country, channel, status) -> the cell's sums."""
    by_id = {o["order_id"]: o for o in orders}
    cells: dict[tuple, dict] = {}
    for line in lines:
        o = by_id[line["order_id"]]
        key = (o["order_date"], line["category"], _dim(o["country"]), _dim(o["channel"]))
        c = cells.setdefault((*key, o["status"]), _money_acc())
        c["orders"].add(o["order_id"])
        _add_money(c, line, o["status"] in REVENUE)
    for c in cells.values():
        c["orders"] = len(c["orders"])
    return cells


def sales_orders(orders: list[dict], lines: list[dict]) -> dict[tuple, int]:
    """(order_date, country, channel, status, sorted categories) -> orders."""
    sets: dict[str, set[str]] = defaultdict(set)
    for line in lines:
        sets[line["order_id"]].add(line["category"])
    out: dict[tuple, int] = defaultdict(int)
    for o in orders:
        categories = tuple(sorted(sets.get(o["order_id"], ())))
        key = (o["order_date"], _dim(o["country"]), _dim(o["channel"]), o["status"], categories)
        out[key] += 1
    return dict(out)


def product_sales(orders: list[dict], lines: list[dict]) -> dict[tuple, dict]:
    """(order_date, product_id, country, channel, status) -> revenue-bearing line sums."""
    by_id = {o["order_id"]: o for o in orders}
    out: dict[tuple, dict] = {}
    for line in lines:
        o = by_id[line["order_id"]]
        if o["status"] not in REVENUE:
            continue
        key = (o["order_date"], line["product_id"], _dim(o["country"]), _dim(o["channel"]))
        p = out.setdefault((*key, o["status"]), _money_acc())
        p.update(product_name=line["product_name"], category=line["category"])
        p["orders"].add(o["order_id"])
        _add_money(p, line, True)
    for p in out.values():
        p["orders"] = len(p["orders"])
    return out


def _margin(acc: dict) -> Decimal | None:
    if acc["cost"] is None:
        return None
    return acc["costed_net_revenue"] - acc["cost"]


def sales_view(
    orders: list[dict],
    lines: list[dict],
    start: dt.date,
    end: dt.date,
    categories: tuple[str, ...] = (),
    countries: tuple[str, ...] = (),
    channels: tuple[str, ...] = (),
    statuses: tuple[str, ...] = (),
) -> dict:
    """What the Sales page shows for a filter, straight from orders and lines.

    An order is in the filter when its date, country, channel and status are,
    and (with a category filter) it has a line in a chosen category; its lines
    in the chosen categories are the filter's lines. Orders, money and
    breakdowns count revenue-bearing orders; cancelled and returned count the
    orders of those statuses.
    """
    lines_of: dict[str, list[dict]] = defaultdict(list)
    for line in lines:
        lines_of[line["order_id"]].append(line)
    total = _money_acc()
    cancelled_returned = 0
    days: dict[dt.date, dict] = {}
    groups: dict[str, dict[str, dict]] = {"category": {}, "country": {}, "channel": {}}
    products: dict[str, dict] = {}
    months: dict[tuple[dt.date, str], dict] = {}
    for o in orders:
        if not start <= o["order_date"] <= end:
            continue
        if countries and _dim(o["country"]) not in countries:
            continue
        if channels and _dim(o["channel"]) not in channels:
            continue
        if statuses and o["status"] not in statuses:
            continue
        chosen = [
            ln for ln in lines_of[o["order_id"]] if not categories or ln["category"] in categories
        ]
        if categories and not chosen:
            continue
        day = days.setdefault(o["order_date"], dict(_money_acc(), cancelled_returned=0))
        if o["status"] in ("cancelled", "returned"):
            cancelled_returned += 1
            day["cancelled_returned"] += 1
        if o["status"] not in REVENUE:
            continue
        for acc in (total, day):
            acc["orders"].add(o["order_id"])
        for dimension, value in (("country", o["country"]), ("channel", o["channel"])):
            acc = groups[dimension].setdefault(_dim(value), _money_acc())
            acc["orders"].add(o["order_id"])
        for line in chosen:
            for acc in (
                total,
                day,
                groups["country"][_dim(o["country"])],
                groups["channel"][_dim(o["channel"])],
                groups["category"].setdefault(line["category"], _money_acc()),
                products.setdefault(
                    line["product_id"], dict(_money_acc(), product_name=line["product_name"])
                ),
                months.setdefault((o["order_date"].replace(day=1), line["category"]), _money_acc()),
            ):
                acc["orders"].add(o["order_id"])
                _add_money(acc, line, True)

    def summary(acc: dict) -> dict:
        return dict(
            orders=len(acc["orders"]),
            units=acc["units"],
            gross_revenue=acc["gross_revenue"],
            net_revenue=acc["net_revenue"],
            gross_margin=_margin(acc),
        )

    month_total: dict[dt.date, Decimal] = defaultdict(Decimal)
    for (month, _), acc in months.items():
        month_total[month] += acc["net_revenue"]
    top = sorted(
        (p for p in products.items() if p[1]["units"] > 0),
        key=lambda p: (-p[1]["net_revenue"], p[0]),
    )
    return dict(
        kpis=dict(summary(total), cancelled_returned=cancelled_returned),
        daily={
            d: dict(summary(acc), cancelled_returned=acc["cancelled_returned"])
            for d, acc in days.items()
        },
        groups={
            dimension: {name: summary(acc) for name, acc in accs.items()}
            for dimension, accs in groups.items()
        },
        top_products=[
            dict(summary(acc), product_id=pid, product_name=acc["product_name"]) for pid, acc in top
        ],
        months={
            key: dict(
                summary(acc),
                revenue_share=float(acc["net_revenue"] / month_total[key[0]])
                if month_total[key[0]]
                else 0.0,
            )
            for key, acc in months.items()
        },
    )
