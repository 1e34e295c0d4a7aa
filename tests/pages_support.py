"""Helpers for the page tests: a synthetic lake, AppTest drivers, number parsing.

The synthetic lake writes the Silver and Gold tables the pages read, with
delta-rs and the contract's column types (DECIMAL(18,2) money, dates,
timestamps), derived from one synthetic fact table by the contract's
definitions. It builds a 1,000,000-order lake in seconds, so page timings can
be measured at the size the performance target names without running Spark;
the pipeline-built lake (generator + runner) is used for the end-to-end tests.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline import catalog

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / "Home.py"
PAGE_FILES = {
    "home": "pages/1_Overview.py",
    "generate": "pages/2_Generate.py",
    "pipeline": "pages/3_Pipeline.py",
    "quality": "pages/4_Quality.py",
    "sales": "pages/5_Sales.py",
    "customers": "pages/6_Customers.py",
    "anomalies": "pages/7_Anomalies.py",
    "live": "pages/8_Live.py",
    "import": "pages/9_Import.py",
}
MONEY = pa.decimal128(18, 2)
CATEGORIES = [
    "Electronics",
    "Home",
    "Garden",
    "Fashion",
    "Sports",
    "Toys",
    "Beauty",
    "Books",
    "Grocery",
    "Automotive",
]
COUNTRIES = ["DE", "FR", "NL", "ES", "IT", "BE", "AT", "PL"]
CHANNELS = ["web", "mobile", "marketplace", "store"]
STATUSES = ["pending", "processing", "shipped", "delivered", "cancelled", "returned"]
STATUS_P = [0.04, 0.10, 0.15, 0.59, 0.07, 0.05]
REVENUE = {"processing", "shipped", "delivered"}
HOSTILE_ERROR = "![x](http://example.invalid/x.png) <b>boom</b> :red[alert]"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_number(text: str) -> float:
    """'1,234.50' -> 1234.5 (the pages format numbers with thousands separators)."""
    cleaned = re.sub(r"[^0-9.\-]", "", str(text))
    return float(cleaned)


def metric(at: object, label: str) -> str:
    """The value of the st.metric with this label on an AppTest page."""
    for m in at.metric:  # type: ignore[attr-defined]
        if m.label == label:
            return str(m.value)
    labels = [m.label for m in at.metric]  # type: ignore[attr-defined]
    raise AssertionError(f"no metric {label!r}; metrics: {labels}")


def _money(values: np.ndarray) -> pa.Array:
    return pa.array(np.round(values, 2)).cast(MONEY)


def _write(lake: Path, layer: str, table: str, data: pa.Table) -> None:
    from deltalake import write_deltalake

    write_deltalake(str(lake / layer / table), data, mode="overwrite")


def _ntile(values: pd.Series, ids: pd.Series, ascending: bool) -> np.ndarray:
    """Spark's ntile(5) over values (ties broken by id)."""
    order = pd.DataFrame({"v": values.to_numpy(), "id": ids.to_numpy()})
    order = order.sort_values(["v", "id"], ascending=[ascending, True])
    n = len(order)
    rank = np.empty(n, dtype=np.int64)
    rank[order.index.to_numpy()] = np.arange(n)
    base, extra = divmod(n, 5)
    big = extra * (base + 1)
    return np.where(rank < big, rank // (base + 1), extra + (rank - big) // max(base, 1)) + 1


def _sales_rows(fact: pa.Table) -> tuple[list[dict], list[dict]]:
    """Orders and lines as tests/reference.py's Sales functions take them (every order of
    the synthetic lake has lines, so the fact table holds them all)."""
    order_keys = ("order_id", "order_date", "country", "channel", "status")
    line_keys = ("order_id", "product_id", "product_name", "category", "quantity")
    line_keys += ("line_gross", "line_net", "line_cost")
    rows = fact.select([*order_keys, *line_keys[1:]]).to_pylist()
    orders = {r["order_id"]: {k: r[k] for k in order_keys} for r in rows}
    return list(orders.values()), [{k: r[k] for k in line_keys} for r in rows]


def sales_gold_tables(orders: list[dict], lines: list[dict]) -> dict[str, pa.Table]:
    """gold.sales_cells, sales_orders and product_sales by tests/reference.py's reading of
    the contract, as Arrow tables of the catalog's schemas (for delta-rs)."""
    from tests import reference

    cells = [
        dict(zip(("order_date", "category", "country", "channel", "status"), k, strict=True))
        | dict(v, is_revenue_bearing=k[4] in REVENUE)
        for k, v in reference.sales_cells(orders, lines).items()
    ]
    per_order = [
        dict(
            zip(("order_date", "country", "channel", "status"), k[:4], strict=True),
            categories=list(k[4]),
            is_revenue_bearing=k[3] in REVENUE,
            orders=n,
        )
        for k, n in reference.sales_orders(orders, lines).items()
    ]
    products = [
        dict(zip(("order_date", "product_id", "country", "channel", "status"), k, strict=True)) | v
        for k, v in reference.product_sales(orders, lines).items()
    ]
    out = {}
    for name, table_rows in (
        ("sales_cells", cells),
        ("sales_orders", per_order),
        ("product_sales", products),
    ):
        schema = catalog.arrow_schema("gold", name)
        out[name] = pa.Table.from_pylist(
            [{c: r.get(c) for c in schema.names} for r in table_rows], schema=schema
        )
    return out


def write_synthetic_lake(lake: Path, orders: int = 5_000, seed: int = 7) -> dict[str, int]:
    """Write silver.fact_sales, silver.quarantine and the Gold tables for `orders` orders."""
    rng = np.random.default_rng(seed)
    end = dt.date(2025, 6, 30)
    span = 730
    customers = max(orders // 5, 10)
    products = 400

    order_day = np.sort(rng.integers(0, span, orders))
    # a spike and a drop for the anomaly page
    order_cust = rng.integers(0, customers, orders)
    order_country = rng.integers(0, len(COUNTRIES), orders)
    order_channel = rng.integers(0, len(CHANNELS), orders)
    order_status = rng.choice(len(STATUSES), orders, p=STATUS_P)
    n_lines = rng.integers(1, 5, orders)
    line_order = np.repeat(np.arange(orders), n_lines)
    line_no = np.concatenate([np.arange(1, k + 1) for k in n_lines]) if orders else np.array([])
    n = len(line_order)
    prod_cat = rng.integers(0, len(CATEGORIES), products)
    prod_price = np.round(rng.uniform(3, 400, products), 2)
    prod_cost = np.round(prod_price * rng.uniform(0.3, 0.8, products), 2)
    line_prod = rng.integers(0, products, n)
    qty = rng.integers(1, 6, n)
    price = prod_price[line_prod]
    disc = rng.choice([0, 0, 0, 5, 10, 20], n).astype(float)
    gross = np.round(qty * price + 1e-9, 2)
    net = np.round(qty * price * (1 - disc / 100) + 1e-9, 2)
    cost = np.round(qty * prod_cost[line_prod] + 1e-9, 2)
    # a visible spike: one day near the end sells ten times more
    spike_day = span - 20
    spike = order_day[line_order] == spike_day
    net = np.where(spike, net * 10, net)
    gross = np.where(spike, gross * 10, gross)

    dates = np.array(end - dt.timedelta(days=span - 1), dtype="datetime64[D]") + order_day
    status = np.array(STATUSES, dtype=object)[order_status]
    revenue_order = np.isin(order_status, [1, 2, 3])
    order_ids = np.char.add("O", np.char.zfill(np.arange(orders).astype(str), 9))
    cust_ids = np.char.add("C", np.char.zfill(order_cust.astype(str), 7))
    prod_ids = np.char.add("P", np.char.zfill(np.arange(products).astype(str), 5))
    ts = dates[line_order].astype("datetime64[us]") + rng.integers(0, 86_400, n).astype(
        "timedelta64[s]"
    )
    fact = pa.table(
        {
            "order_id": pa.array(order_ids[line_order]),
            "line_no": pa.array(line_no.astype(np.int32)),
            "order_date": pa.array(dates[line_order]),
            "order_ts": pa.array(ts).cast(pa.timestamp("us", tz="UTC")),
            "status": pa.array(status[line_order]),
            "is_revenue_bearing": pa.array(revenue_order[line_order]),
            "customer_id": pa.array(cust_ids[line_order]),
            "product_id": pa.array(prod_ids[line_prod]),
            "product_name": pa.array(np.char.add("Product ", prod_ids[line_prod])),
            "category": pa.array(np.array(CATEGORIES, dtype=object)[prod_cat[line_prod]]),
            "channel": pa.array(np.array(CHANNELS, dtype=object)[order_channel[line_order]]),
            "country": pa.array(np.array(COUNTRIES, dtype=object)[order_country[line_order]]),
            "quantity": pa.array(qty.astype(np.int32)),
            "unit_price": pa.array(price).cast(pa.decimal128(18, 4)),
            "discount_pct": pa.array(disc).cast(pa.decimal128(5, 2)),
            "line_gross": _money(gross),
            "line_net": _money(net),
            "line_cost": _money(cost),
        }
    )
    _write(lake, "silver", "fact_sales", fact)
    for table, data in sales_gold_tables(*_sales_rows(fact)).items():
        _write(lake, "gold", table, data)

    # ---- gold.daily_sales (every line is valid here, so orders = orders with lines)
    lines = pd.DataFrame(
        {
            "order": line_order,
            "date": dates[line_order],
            "rev": revenue_order[line_order],
            "qty": qty,
            "gross": np.rint(gross * 100).astype(np.int64),
            "net": np.rint(net * 100).astype(np.int64),
            "cost": np.rint(cost * 100).astype(np.int64),
            "cat": prod_cat[line_prod],
        }
    )
    odf = pd.DataFrame(
        {
            "order": np.arange(orders),
            "date": dates,
            "cust": cust_ids,
            "rev": revenue_order,
            "status": status,
        }
    )
    rl = lines[lines["rev"]]
    day_lines = rl.groupby("date")[["qty", "gross", "net"]].sum()
    ro = odf[odf["rev"]]
    first_order = ro.groupby("cust")["date"].min()
    day = pd.DataFrame(index=pd.Index(np.unique(dates), name="date"))
    day["orders"] = ro.groupby("date").size()
    day["customers"] = ro.groupby("date")["cust"].nunique()
    day["new_customers"] = first_order.value_counts()
    day["cancelled_orders"] = odf[odf["status"] == "cancelled"].groupby("date").size()
    day["returned_orders"] = odf[odf["status"] == "returned"].groupby("date").size()
    day = day.join(day_lines).fillna(0)
    day_orders = day["orders"].astype(np.int64).to_numpy()
    day_net = day["net"].to_numpy() / 100
    aov = np.where(day_orders > 0, np.round(day_net / np.maximum(day_orders, 1), 2), np.nan)
    daily = pa.table(
        {
            "order_date": pa.array(day.index.to_numpy().astype("datetime64[D]")),
            "orders": pa.array(day_orders),
            "units": pa.array(day["qty"].astype(np.int64).to_numpy()),
            "gross_revenue": _money(day["gross"].to_numpy() / 100),
            "net_revenue": _money(day_net),
            "avg_order_value": pa.array(aov, from_pandas=True).cast(MONEY),
            "customers": pa.array(day["customers"].astype(np.int64).to_numpy()),
            "new_customers": pa.array(day["new_customers"].astype(np.int64).to_numpy()),
            "cancelled_orders": pa.array(day["cancelled_orders"].astype(np.int64).to_numpy()),
            "returned_orders": pa.array(day["returned_orders"].astype(np.int64).to_numpy()),
        }
    )
    _write(lake, "gold", "daily_sales", daily)

    # ---- gold.category_sales
    rl = rl.assign(month=rl["date"].to_numpy().astype("datetime64[M]"))
    cat = rl.groupby(["month", "cat"]).agg(
        orders=("order", "nunique"), units=("qty", "sum"), net=("net", "sum"), cost=("cost", "sum")
    )
    cat = cat.reset_index()
    month_total = cat.groupby("month")["net"].transform("sum")
    category_sales = pa.table(
        {
            "month": pa.array(cat["month"].to_numpy().astype("datetime64[D]")),
            "category": pa.array(np.array(CATEGORIES, dtype=object)[cat["cat"].to_numpy()]),
            "orders": pa.array(cat["orders"].to_numpy().astype(np.int64)),
            "units": pa.array(cat["units"].to_numpy().astype(np.int64)),
            "net_revenue": _money(cat["net"].to_numpy() / 100),
            "gross_margin": _money((cat["net"] - cat["cost"]).to_numpy() / 100),
            "revenue_share": pa.array((cat["net"] / month_total).to_numpy()),
        }
    )
    _write(lake, "gold", "category_sales", category_sales)

    # ---- gold.customer_rfm
    as_of = dates.max() + np.timedelta64(1, "D")
    order_net = rl.groupby("order")["net"].sum()
    ro = ro.assign(net=ro["order"].map(order_net).fillna(0))
    cust = ro.groupby("cust").agg(
        last=("date", "max"), frequency=("order", "count"), m=("net", "sum")
    )
    cust = cust.reset_index()
    recency = (as_of - cust["last"].to_numpy().astype("datetime64[D]")).astype(np.int64)
    cust["recency"] = recency
    r = _ntile(cust["recency"], cust["cust"], ascending=False)
    f = _ntile(cust["frequency"], cust["cust"], ascending=True)
    m = _ntile(cust["m"], cust["cust"], ascending=True)
    segment = np.select(
        [
            (r == 5) & (f >= 4),
            np.isin(r, [3, 4]) & (f >= 4),
            (r >= 4) & np.isin(f, [2, 3]),
            (r == 5) & (f == 1),
            (r == 4) & (f == 1),
            (r == 3) & (f == 3),
            (r == 3) & (f <= 2),
            (r <= 2) & (f == 5),
            (r <= 2) & np.isin(f, [3, 4]),
        ],
        [
            "champions",
            "loyal",
            "potential_loyalists",
            "new_customers",
            "promising",
            "need_attention",
            "about_to_sleep",
            "cant_lose",
            "at_risk",
        ],
        "hibernating",
    )
    rfm = pa.table(
        {
            "customer_id": pa.array(cust["cust"].to_numpy()),
            "last_order_date": pa.array(cust["last"].to_numpy().astype("datetime64[D]")),
            "recency_days": pa.array(recency.astype(np.int32)),
            "frequency": pa.array(cust["frequency"].to_numpy().astype(np.int64)),
            "monetary": _money(cust["m"].to_numpy() / 100),
            "r_score": pa.array(r.astype(np.int32)),
            "f_score": pa.array(f.astype(np.int32)),
            "m_score": pa.array(m.astype(np.int32)),
            "rfm_segment": pa.array(segment),
            "as_of_date": pa.array(np.full(len(cust), as_of, dtype="datetime64[D]")),
        }
    )
    _write(lake, "gold", "customer_rfm", rfm)

    # ---- gold.revenue_anomalies (the method of tests/reference.py, the contract's)
    from tests.reference import revenue_anomalies

    cal = pd.date_range(dates.min(), dates.max(), freq="D")
    index = cal.to_numpy().astype("datetime64[D]")
    rev = (day["net"] / 100).reindex(index, fill_value=0)
    n_orders = day["orders"].reindex(index, fill_value=0).astype(np.int64)
    scored = revenue_anomalies(
        [(d.date(), Decimal(f"{v:.2f}")) for d, v in zip(cal, rev.to_numpy(), strict=True)],
        [int(v) for v in n_orders.to_numpy()],
    )
    rows = [scored[d.date()] for d in cal]
    anomalies = pa.table(
        {
            "order_date": pa.array(index),
            "net_revenue": _money(rev.to_numpy()),
            **{
                col: pa.array([r[col] for r in rows], pa.decimal128(18, 2))
                for col in ("expected_revenue", "lower_bound", "upper_bound")
            },
            "score": pa.array([r["score"] for r in rows], pa.float64()),
            "is_anomaly": pa.array([r["is_anomaly"] for r in rows]),
            "direction": pa.array([r["direction"] for r in rows], type=pa.string()),
        }
    )
    _write(lake, "gold", "revenue_anomalies", anomalies)

    # ---- runs, quality, quarantine
    now = dt.datetime(2025, 7, 1, 8, 0, tzinfo=dt.UTC)
    steps = ["bronze.orders", "silver.orders", "silver.order_items", "gold.daily_sales"]
    run_rows = []
    dq_rows = []
    for i, run_id in enumerate(["20250701T080000-aaaaaa", "20250701T090000-bbbbbb"]):
        t0 = now + dt.timedelta(hours=i)
        for j, step in enumerate(steps):
            rows_in = orders + 100 * (j + 1)
            out = orders if step.startswith("silver") else rows_in
            quarantined = 60 if step.startswith("silver") else 0
            run_rows.append(
                {
                    "run_id": run_id,
                    "step": step,
                    "started_at": t0 + dt.timedelta(seconds=10 * j),
                    "finished_at": t0 + dt.timedelta(seconds=10 * j + 7),
                    "status": "succeeded",
                    "rows_in": rows_in,
                    "rows_out": out,
                    "rows_quarantined": quarantined,
                    "error": None,
                }
            )
        for table, rule, action, failed in [
            ("orders", "valid_status", "quarantine", 40 - 10 * i),
            ("orders", "order_id_present", "quarantine", 20),
            ("order_items", "quantity_in_range", "quarantine", 35),
            ("customers", "valid_email", "warn", 12),
            ("daily_sales", "orders_non_negative", "fail", 0),
        ]:
            checked = orders
            layer = "gold" if table == "daily_sales" else "silver"
            dq_rows.append(
                {
                    "run_id": run_id,
                    "layer": layer,
                    "table": table,
                    "rule": rule,
                    "action": action,
                    "rows_checked": checked,
                    "rows_failed": failed,
                    "pass_rate": 1 - failed / checked,
                    "checked_at": t0 + dt.timedelta(minutes=1),
                }
            )
    # an earlier failed run whose error text is hostile Markdown: it must be shown inert
    failed = now - dt.timedelta(hours=1)
    run_rows.insert(
        0,
        {
            "run_id": "20250701T070000-ffffff",
            "step": "silver.orders",
            "started_at": failed,
            "finished_at": failed + dt.timedelta(seconds=3),
            "status": "failed",
            "rows_in": 10,
            "rows_out": 0,
            "rows_quarantined": 0,
            "error": HOSTILE_ERROR,
        },
    )
    ts_type = pa.timestamp("us", tz="UTC")
    # the runner's schemas (pipeline/catalog.py); reconciliation stays null here
    runs = pa.Table.from_pylist(run_rows, schema=catalog.arrow_schema("gold", "pipeline_runs"))
    _write(lake, "gold", "pipeline_runs", runs)
    dq = pa.Table.from_pylist(dq_rows, schema=catalog.arrow_schema("gold", "dq_results"))
    _write(lake, "gold", "dq_results", dq)
    q_rules = [["valid_status"], ["order_id_present", "valid_status"], ["quantity_in_range"]]
    quarantine = pa.table(
        {
            "source_table": pa.array(["orders", "orders", "order_items"] * 20),
            "record_key": pa.array([f"K{i}" for i in range(60)]),
            "rules": pa.array(q_rules * 20, type=pa.list_(pa.string())),
            # hostile text must be shown as text, never as HTML
            "raw_record": pa.array(
                ['{"status": "<b>weird</b><script>alert(1)</script>"}'] * 60, type=pa.string()
            ),
            "batch_id": pa.array(["batch-000001"] * 60),
            "quarantined_at": pa.array([now] * 60, type=ts_type),
        }
    )
    _write(lake, "silver", "quarantine", quarantine)

    # ---- the live tables: 30 one-minute windows that ended half an hour ago (a stale stream)
    t_end = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(minutes=30)
    starts = [t_end - dt.timedelta(minutes=30 - i) for i in range(30)]
    live_orders = rng.integers(5, 40, 30)
    live_net = np.round(live_orders * rng.uniform(40, 90, 30), 2)
    live = pa.table(
        {
            "window_start": pa.array(starts, type=ts_type),
            "window_end": pa.array([s + dt.timedelta(minutes=1) for s in starts], type=ts_type),
            "orders": pa.array(live_orders.astype(np.int64)),
            "units": pa.array((live_orders * 2).astype(np.int64)),
            "net_revenue": _money(live_net),
            "avg_order_value": _money(np.round(live_net / live_orders, 2)),
        }
    )
    _write(lake, "gold", "live_sales_minute", live)
    alerts = pa.table(
        {
            "window_start": pa.array(starts[5:8], type=ts_type),
            "metric": pa.array(["net_revenue", "orders", "net_revenue"]),
            "value": pa.array([9_000.0, 2.0, 10.0]),
            "baseline": pa.array([1_500.0, 20.0, 1_500.0]),
            "z_score": pa.array([5.2, -3.4, -3.1]),
            "kind": pa.array(["spike", "drop", "drop"]),
        }
    )
    _write(lake, "gold", "live_alerts", alerts)
    return {"orders": orders, "lines": n, "customers": len(cust)}
