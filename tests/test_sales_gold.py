"""The Sales page's Gold (gold.sales_cells, sales_orders, product_sales) and its reader.

On the engine-built lake (conftest's `populated_lake`): the three tables Spark
wrote equal tests/reference.py's independent computation, and what
pipeline.read.SalesGold returns for a filter (KPIs, days, breakdowns, top
products, category shares) equals reference.sales_view, computed one order and
one line at a time from the landing files, for every kind of filter the page
offers.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import pandas as pd
import pytest

from pipeline import read
from pipeline.read import SalesFilter, delta_arrow
from tests import reference


@pytest.fixture(scope="module")
def rows(populated_lake) -> tuple[list[dict], list[dict]]:
    return reference.sales_rows(reference.compute(populated_lake / "landing"))


@pytest.fixture(scope="module")
def sales(populated_lake) -> read.SalesGold:
    from tests.conftest import lake_at

    with lake_at(populated_lake):
        return read.load_sales()


def _gold(lake, table: str) -> list[dict]:
    """A Gold table read with delta-rs, not through pipeline.read (decimals stay Decimal)."""
    return delta_arrow(str(lake / "gold" / table)).to_pylist()


def _cents(value: float | Decimal | None) -> int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return int((Decimal(str(value)) * 100).to_integral_value())


def test_sales_cells_match_reference(populated_lake, rows) -> None:
    want = reference.sales_cells(*rows)
    got = {
        (r["order_date"], r["category"], r["country"], r["channel"], r["status"]): r
        for r in _gold(populated_lake, "sales_cells")
    }
    assert set(got) == set(want)
    assert any(w["cost"] is None and w["units"] > 0 for w in want.values()), "unknown costs"
    assert any(k[4] == "cancelled" for k in want), "non-revenue statuses keep their cells"
    for key, w in want.items():
        g = got[key]
        for column in ("orders", "units", "gross_revenue", "net_revenue", "cost", "lines"):
            assert g[column] == w[column], (key, column, g[column], w[column])
        assert g["costed_net_revenue"] == w["costed_net_revenue"], key
        assert g["is_revenue_bearing"] == (key[4] in reference.REVENUE), key


@pytest.mark.parametrize(
    ("flag", "group"),
    [("first_in_category", "category"), ("first_for_product", "product_id")],
)
def test_fact_flags_stand_for_each_order_once(populated_lake, flag: str, group: str) -> None:
    """Gold counts an order once per category (product) by summing silver.fact_sales'
    flag: exactly one line of each order and category (product) carries it."""
    import pyarrow.compute as pc

    fact = delta_arrow(str(populated_lake / "silver" / "fact_sales"))
    flagged = fact.append_column("_flag", pc.cast(fact.column(flag), "int64"))
    per_group = flagged.group_by(["order_id", group]).aggregate(
        [("_flag", "sum"), ("_flag", "count")]
    )
    assert per_group.num_rows > 0
    assert set(per_group.column("_flag_sum").to_pylist()) == {1}
    assert max(per_group.column("_flag_count").to_pylist()) > 1, "a group of several lines"


def test_sales_orders_match_reference(populated_lake, rows) -> None:
    want = reference.sales_orders(*rows)
    got = {
        (r["order_date"], r["country"], r["channel"], r["status"], tuple(r["categories"])): r
        for r in _gold(populated_lake, "sales_orders")
    }
    assert set(got) == set(want)
    assert {k: g["orders"] for k, g in got.items()} == want
    assert any(len(k[4]) > 1 for k in want), "orders spanning several categories"
    assert sum(want.values()) == len(rows[0])


def test_product_sales_match_reference(populated_lake, rows) -> None:
    want = reference.product_sales(*rows)
    got = {
        (r["order_date"], r["product_id"], r["country"], r["channel"], r["status"]): r
        for r in _gold(populated_lake, "product_sales")
    }
    assert set(got) == set(want)
    for key, w in want.items():
        g = got[key]
        for column in ("product_name", "category", "orders", "units", "net_revenue", "cost"):
            assert g[column] == w[column], (key, column, g[column], w[column])
        assert g["costed_net_revenue"] == w["costed_net_revenue"], key


def _filters(rows: tuple[list[dict], list[dict]]) -> list[SalesFilter]:
    orders, lines = rows
    first = min(o["order_date"] for o in orders)
    last = max(o["order_date"] for o in orders)
    by_revenue: dict[str, Decimal] = {}
    for line in lines:
        by_revenue[line["category"]] = by_revenue.get(line["category"], 0) + line["line_net"]
    top2 = tuple(sorted(sorted(by_revenue, key=lambda c: -by_revenue[c])[:2]))
    countries = sorted({reference._dim(o["country"]) for o in orders})
    channels = sorted({reference._dim(o["channel"]) for o in orders})
    recent = last - dt.timedelta(days=89)
    return [
        SalesFilter(first, last),
        SalesFilter(recent, last),
        SalesFilter(first, last, categories=top2[:1]),
        SalesFilter(first, last, categories=top2),
        SalesFilter(first, last, categories=("Unknown",)),
        SalesFilter(recent, last, categories=top2, countries=tuple(countries[:2])),
        SalesFilter(first, last, channels=tuple(channels[:1])),
        SalesFilter(first, last, statuses=("delivered",)),
        SalesFilter(first, last, statuses=("cancelled", "returned"), categories=top2[1:]),
        SalesFilter(last + dt.timedelta(days=1), last + dt.timedelta(days=30)),
    ]


def test_reader_equals_reference_for_every_filter(rows, sales: read.SalesGold) -> None:
    for f in _filters(rows):
        want = reference.sales_view(
            *rows, f.start, f.end, f.categories, f.countries, f.channels, f.statuses
        )
        daily = read.sales_daily(sales, f)
        kpis = read.sales_kpis(daily)
        w = want["kpis"]
        assert kpis["orders"] == w["orders"], f
        assert kpis["units"] == w["units"], f
        assert _cents(kpis["net_revenue"]) == _cents(w["net_revenue"]), f
        assert _cents(kpis["gross_margin"]) == _cents(w["gross_margin"]), f
        assert kpis["cancelled_returned"] == w["cancelled_returned"], f
        # every day of the range is a row; days without orders are zeros
        assert len(daily) == (f.end - f.start).days + 1
        for row in daily.itertuples():
            day = want["daily"].get(row.order_date.date())
            if day is None:
                assert row.orders == 0 and row.net_revenue == 0, (f, row)
                continue
            assert row.orders == day["orders"], (f, row.order_date)
            assert _cents(row.gross_revenue) == _cents(day["gross_revenue"]), f
            assert _cents(row.gross_margin) == _cents(day["gross_margin"]), (f, row.order_date)
            assert row.cancelled_orders + row.returned_orders == day["cancelled_returned"]
        for dimension in ("category", "country", "channel"):
            shown = sales.by_dimension(f, dimension)
            expected = want["groups"][dimension]
            assert set(shown[dimension]) == set(expected), (f, dimension)
            for row in shown.to_dict("records"):
                w = expected[row[dimension]]
                assert row["orders"] == w["orders"], (f, dimension, row)
                assert row["units"] == w["units"], (f, dimension, row)
                assert _cents(row["net_revenue"]) == _cents(w["net_revenue"]), (f, row)
                assert _cents(row["gross_margin"]) == _cents(w["gross_margin"]), (f, row)
        top = sales.top_products(f, limit=15)
        expected_top = want["top_products"][:15]
        assert list(top["product_id"]) == [p["product_id"] for p in expected_top], f
        for row, w in zip(top.to_dict("records"), expected_top, strict=True):
            assert row["product_name"] == w["product_name"]
            assert (row["orders"], row["units"]) == (w["orders"], w["units"]), f
            assert _cents(row["net_revenue"]) == _cents(w["net_revenue"]), f
            assert _cents(row["gross_margin"]) == _cents(w["gross_margin"]), f
        months = sales.category_months(f)
        assert len(months) == len(want["months"]), f
        for row in months.to_dict("records"):
            w = want["months"][(row["month"].date(), row["category"])]
            assert _cents(row["net_revenue"]) == _cents(w["net_revenue"]), f
            assert _cents(row["gross_margin"]) == _cents(w["gross_margin"]), f
            assert math.isclose(row["revenue_share"], w["revenue_share"], abs_tol=1e-9), f


def test_reader_without_filter_equals_daily_sales(populated_lake, sales: read.SalesGold) -> None:
    """No filter: every day's numbers are gold.daily_sales' (orders without valid items too)."""
    gold = pd.DataFrame(_gold(populated_lake, "daily_sales"))
    f = SalesFilter(gold["order_date"].min(), gold["order_date"].max())
    assert (sales.min_date, sales.max_date) == (f.start, f.end)
    daily = read.sales_daily(sales, f).set_index("order_date")
    for row in gold.itertuples():
        got = daily.loc[pd.Timestamp(row.order_date)]
        assert got["orders"] == row.orders, row.order_date
        assert got["units"] == row.units
        assert _cents(got["net_revenue"]) == _cents(row.net_revenue)
        assert _cents(got["gross_revenue"]) == _cents(row.gross_revenue)
        assert got["cancelled_orders"] == row.cancelled_orders
        assert got["returned_orders"] == row.returned_orders


def test_reader_options_cover_every_order(rows, sales: read.SalesGold) -> None:
    orders, lines = rows
    assert sales.countries == sorted({reference._dim(o["country"]) for o in orders})
    assert sales.channels == sorted({reference._dim(o["channel"]) for o in orders})
    assert sales.statuses == sorted({o["status"] for o in orders})
    assert sales.categories == sorted({line["category"] for line in lines})


# A few hand-written orders with the cases a generated lake may lack: an order whose
# items were all quarantined (no line), an order spanning two categories, a cancelled
# order, a missing country, an unknown product (unknown cost).
DAY = dt.date(2025, 3, 1)
ORDERS = [
    dict(order_id="o1", order_date=DAY, country="DE", channel="web", status="delivered"),
    dict(order_id="o2", order_date=DAY, country="DE", channel="web", status="delivered"),
    dict(order_id="o3", order_date=DAY, country="FR", channel="web", status="cancelled"),
    dict(order_id="o4", order_date=DAY, country=None, channel="app", status="processing"),
]
LINES = [
    ("o1", "p1", "Books", 2, "10.00", "9.00", "4.00"),
    ("o1", "p2", "Toys", 1, "5.00", "5.00", "1.50"),
    ("o1", "p1", "Books", 1, "5.00", "5.00", "2.00"),
    ("o3", "p1", "Books", 1, "5.00", "5.00", "2.00"),
    ("o4", "px", "Unknown", 3, "30.00", "27.00", None),
]


def _hand_rows() -> tuple[list[dict], list[dict]]:
    lines = [
        dict(
            order_id=o,
            product_id=p,
            product_name="Unknown product" if p == "px" else f"Product {p}",
            category=c,
            quantity=q,
            line_gross=Decimal(g),
            line_net=Decimal(n),
            line_cost=None if cost is None else Decimal(cost),
        )
        for o, p, c, q, g, n, cost in LINES
    ]
    return ORDERS, lines


def test_hand_written_orders_build_and_read_as_the_reference(spark) -> None:
    from pyspark.sql import functions as F

    from pipeline.gold import sales_cells
    from pipeline.silver import model

    orders, lines = _hand_rows()
    by_id = {o["order_id"]: o for o in orders}
    silver_orders = spark.createDataFrame(
        orders, "order_id string, order_date date, country string, channel string, status string"
    )
    fact_rows = [
        dict(line, **{k: by_id[line["order_id"]][k] for k in ("order_date", "country", "channel")})
        | dict(
            status=by_id[line["order_id"]]["status"],
            is_revenue_bearing=by_id[line["order_id"]]["status"] in reference.REVENUE,
        )
        for line in lines
    ]
    fact_lines = spark.createDataFrame(
        [dict(row, line_no=n) for n, row in enumerate(fact_rows, start=1)],
        "order_id string, product_id string, product_name string, category string, "
        "quantity int, line_gross decimal(18,2), line_net decimal(18,2), "
        "line_cost decimal(18,2), order_date date, country string, channel string, "
        "status string, is_revenue_bearing boolean, line_no int",
    )
    fact = model.with_order_flags(fact_lines)
    built = {
        "sales_cells": sales_cells.build_cells(fact),
        "sales_orders": sales_cells.build_orders(silver_orders, fact),
        "product_sales": sales_cells.build_products(fact),
    }
    got_orders = {
        (r["order_date"], r["country"], r["channel"], r["status"], tuple(r["categories"])): r[
            "orders"
        ]
        for r in built["sales_orders"].collect()
    }
    assert got_orders == reference.sales_orders(orders, lines)
    assert (DAY, "DE", "web", "delivered", ()) in got_orders, "o2 counts without a line"
    cells = {
        tuple(r[c] for c in sales_cells.CELL_GRAIN): r.asDict()
        for r in built["sales_cells"].filter(F.col("orders") > 0).collect()
    }
    want = reference.sales_cells(orders, lines)
    assert set(cells) == set(want)
    for key, w in want.items():
        for column in ("orders", "units", "net_revenue", "cost", "costed_net_revenue", "lines"):
            assert cells[key][column] == w[column], (key, column)

    sales = read.SalesGold(lambda name: built[name].toArrow())
    for f in (
        SalesFilter(DAY, DAY),
        SalesFilter(DAY, DAY, categories=("Books",)),
        SalesFilter(DAY, DAY, categories=("Books", "Toys")),
        SalesFilter(DAY, DAY, countries=("Unknown",)),
        SalesFilter(DAY, DAY, statuses=("cancelled",)),
    ):
        want_view = reference.sales_view(
            orders, lines, f.start, f.end, f.categories, f.countries, f.channels, f.statuses
        )
        kpis = read.sales_kpis(read.sales_daily(sales, f))
        w = want_view["kpis"]
        assert kpis["orders"] == w["orders"], f
        assert kpis["cancelled_returned"] == w["cancelled_returned"], f
        assert _cents(kpis["net_revenue"]) == _cents(w["net_revenue"]), f
        assert _cents(kpis["gross_margin"]) == _cents(w["gross_margin"]), f
    everything = read.sales_kpis(read.sales_daily(sales, SalesFilter(DAY, DAY)))
    assert (everything["orders"], everything["cancelled_returned"]) == (3, 1)  # o1, o2, o4; o3
    assert everything["gross_margin"] == 19.0 - 7.5  # o4's unknown cost adds no margin
    books = read.sales_kpis(read.sales_daily(sales, SalesFilter(DAY, DAY, categories=("Books",))))
    assert (books["orders"], books["net_revenue"], books["cancelled_returned"]) == (1, 14.0, 1)
    unknown = sales.by_dimension(SalesFilter(DAY, DAY), "category").set_index("category")
    assert math.isnan(unknown.loc["Unknown", "gross_margin"])
    assert sales.countries == ["DE", "FR", "Unknown"]


def test_a_product_with_two_names_fails_product_sales_grain_rule(spark) -> None:
    """product_sales takes a product's name and category once per product: lines that
    disagree on them mark every row of that product, which the grain rule counts."""
    from pipeline.gold import sales_cells
    from pipeline.gold.grain import CONFLICT
    from pipeline.gold.steps import _metrics, _rule_counts

    day = dt.date(2024, 5, 1)
    money = Decimal("10.00")
    line = ("DE", "web", "delivered", True, True, 1, money, money, None)
    rows = [
        (day, "p1", "Mug", "Home", *line),
        (day + dt.timedelta(days=1), "p1", "Mug", "Home", *line),
        (day, "p2", "Lamp", "Home", *line),
        (day + dt.timedelta(days=1), "p2", "Lamp (old)", "Home", *line),
        (day, None, "Unknown product", None, *line),
    ]
    fact = spark.createDataFrame(
        rows,
        "order_date date, product_id string, product_name string, category string, "
        "country string, channel string, status string, is_revenue_bearing boolean, "
        "first_for_product boolean, quantity int, line_gross decimal(18,2), "
        "line_net decimal(18,2), line_cost decimal(18,2)",
    )
    built = sales_cells.build_products(fact)
    marked = {(r["product_id"], r["order_date"]): r[CONFLICT] for r in built.collect()}
    assert marked == {
        ("p1", day): False,
        ("p1", day + dt.timedelta(days=1)): False,
        ("p2", day): True,
        ("p2", day + dt.timedelta(days=1)): True,
        (None, day): False,
    }
    names = {r["product_id"]: (r["product_name"], r["category"]) for r in built.collect()}
    assert names["p1"] == ("Mug", "Home") and names[None] == ("Unknown product", "Unknown")
    values = built.agg(*_metrics(built, sales_cells.PRODUCT_GRAIN)).first().asDict()
    assert _rule_counts(values)[0].rows_failed == 2
