"""`pipeline import`: flat exports with real-world quirks, their reports, and Gold from them.

The exports are written here, in the generic and the Shopify layout and in a
line-total layout (a widely used retail sample's shape): unpadded dates, quoted
commas and quotes in names, Windows-1252 text, a BOM, a semicolon delimiter,
.xlsx, an order whose header differs between its lines, a product with two
names, line totals with fractional discounts, discounts as money, and lines
that cannot be mapped. The Gold test compares the pipeline's numbers with a
computation made straight from the flat rows in plain Python (docs/contract.md
§5 definitions), not with the importer's own output.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import lake
from pipeline.cli import main as cli_main
from pipeline.imports import ExportError, MappingError, import_file, parse_mapping, preview
from pipeline.runner import run
from tests.pages_support import HOME, ROOT, free_port
from tests.test_browser import assert_no_error, browser, settle  # noqa: F401 - a fixture

CENT = Decimal("0.01")
REVENUE = {"processing", "shipped", "delivered"}

# ----------------------------------------------------------------------------- generic layout

GENERIC_HEADER = [
    "Order ID",
    "Order Date",
    "Status",
    "Customer ID",
    "Customer Name",
    "Email",
    "Country",
    "City",
    "Segment",
    "Channel",
    "Payment Method",
    "Product ID",
    "Product Name",
    "Category",
    "Sub-Category",
    "Brand",
    "Quantity",
    "Unit Price",
    "Discount",
    "Unit Cost",
    "Notes",  # not mapped
]


def _generic(order, date, status, cust, name, product, pname, cat, qty, price, disc, note=""):
    customers = {
        "C-1": ("Zoë Müller", "zoe@example.com", "DE", "Köln", "consumer"),
        "C-2": ("François Dupont", "fd@example.fr", "FR", "Besançon", "corporate"),
        "C-3": ("Åsa Öberg", "asa@example.se", "SE", "Göteborg", "consumer"),
    }
    cname, email, country, city, segment = customers[cust]
    assert name == cname
    return [
        order,
        date,
        status,
        cust,
        cname,
        email,
        country,
        city,
        segment,
        "web",
        "card",
        product,
        pname,
        cat,
        "Misc",
        "Acme",
        qty,
        price,
        disc,
        "1.00",
        note,
    ]


# fmt: off
GENERIC_ROWS = [
    # unpadded MM/dd/yyyy dates; a name with a comma and quotes; a note with a line break
    _generic("G-1001", "7/8/2025", "delivered", "C-1", "Zoë Müller", "P-1", 'Chair, "oak"',
             "Furniture", "2", "19.99", "10", 'gift, "wrapped"\nplease'),
    _generic("G-1001", "7/8/2025", "delivered", "C-1", "Zoë Müller", "P-2",
             'Desk 140×70, "Nordic"', "Furniture", "1", "120.00", "0"),
    # the order's status differs between its lines (the later line wins: delivered);
    # P-1 gets a second name (the later line wins: Oak chair)
    _generic("G-1002", "8/7/2025", "pending", "C-2", "François Dupont", "P-1", "Oak chair",
             "Furniture", "1", "19.99", ""),
    _generic("G-1002", "8/7/2025", "Delivered", "C-2", "François Dupont", "P-3", "Lamp",
             "Office", "3", "5.50", "12.5"),
    _generic("G-1003", "12/1/2025", "cancelled", "C-1", "Zoë Müller", "P-3", "Lamp", "Office",
             "1", "5.50", "0"),
    _generic("G-1004", "12/15/2025", "Processing", "C-3", "Åsa Öberg", "P-2",
             'Desk 140×70, "Nordic"', "Furniture", "4", "120.00", "7.5"),
    # no order id: cannot be placed, rejected with its line number
    _generic("", "12/15/2025", "delivered", "C-3", "Åsa Öberg", "P-3", "Lamp", "Office", "1",
             "5.50", "0"),
]
# fmt: on
MALFORMED = ["G-1005", "12/16/2025", "delivered"]  # three fields: a malformed record

GENERIC_REPORT = {
    "rows_read": 8,
    "lines_imported": 6,
    "orders": 4,
    "customers": 3,
    "products": 3,
    "rejected": 2,
    "rejected_by_reason": {"no order id": 1, "malformed record": 1},
    "blank_lines": 1,
    "unmapped_columns": ["Notes"],
    "missing_columns": [],
    "inexact_amounts": 0,
    "conflicts": {
        "orders": {"keys": 1, "status": 1},
        "customers": {"keys": 0},
        "products": {"keys": 1, "name": 1},
    },
}


def write_csv(
    path: Path,
    header: list[str],
    rows: list[list[str]],
    *,
    encoding: str = "utf-8",
    delimiter: str = ",",
    extra: list[list[str]] | None = None,
) -> Path:
    """A CSV export as spreadsheets write it: CRLF, quotes where needed, a blank line."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows[:3])
    out.write("\r\n")  # a blank line
    writer.writerows(rows[3:])
    writer.writerows(extra or [])
    path.write_bytes(out.getvalue().encode(encoding))
    return path


def write_xlsx(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "Orders"
    sheet.append(header)
    for i, row in enumerate(rows):
        if i == 3:
            sheet.append([])  # a blank row
        sheet.append(row)
    book.save(path)
    return path


def _typed(row: list[str]) -> list[object]:
    """A generic row as a spreadsheet holds it: numbers as numbers, dates as dates."""
    out: list[object] = list(row)
    if row[1]:
        month, day, year = (int(x) for x in row[1].split("/"))
        out[1] = dt.datetime(year, month, day)
    for i in (16, 17, 19):
        out[i] = float(row[i]) if "." in row[i] else int(row[i])
    out[18] = float(row[18]) if row[18] else None
    return out


def generic_variants(folder: Path) -> dict[str, tuple[Path, str, str | None]]:
    """The same export four ways: name -> (file, encoding, delimiter) the reader must find."""
    return {
        "utf8": (
            write_csv(folder / "utf8.csv", GENERIC_HEADER, GENERIC_ROWS, extra=[MALFORMED]),
            "utf-8",
            ",",
        ),
        "bom": (
            write_csv(
                folder / "bom.csv",
                GENERIC_HEADER,
                GENERIC_ROWS,
                encoding="utf-8-sig",
                extra=[MALFORMED],
            ),
            "utf-8-sig",
            ",",
        ),
        "cp1252-semicolon": (
            write_csv(
                folder / "cp1252.csv",
                GENERIC_HEADER,
                GENERIC_ROWS,
                encoding="cp1252",
                delimiter=";",
                extra=[MALFORMED],
            ),
            "cp1252",
            ";",
        ),
        "xlsx": (
            write_xlsx(
                folder / "export.xlsx",
                GENERIC_HEADER,
                # a value beyond the header's columns: the .xlsx form of a malformed record
                [_typed(r) for r in GENERIC_ROWS] + [[*MALFORMED, *[""] * 18, "surplus"]],
            ),
            None,
            None,
        ),
    }


@pytest.mark.parametrize("variant", ["utf8", "bom", "cp1252-semicolon", "xlsx"])
def test_generic_export_report_is_exact(variant, empty_lake, tmp_path):
    path, encoding, delimiter = generic_variants(tmp_path)[variant]
    report = import_file(path, "generic")
    got = report.to_dict()
    assert {k: got[k] for k in GENERIC_REPORT} == GENERIC_REPORT
    assert (report.encoding, report.delimiter) == (encoding, delimiter)
    assert report.batch == "batch-000001_import"

    landing = empty_lake / "landing"
    customers = [
        json.loads(line)
        for line in (landing / "customers" / "batch-000001_import.jsonl").read_text().splitlines()
    ]
    assert {c["customer_id"]: c["name"] for c in customers} == {
        "C-1": "Zoë Müller",
        "C-2": "François Dupont",
        "C-3": "Åsa Öberg",
    }
    products = pq.read_table(landing / "products" / "batch-000001_import.parquet").to_pylist()
    assert {p["product_id"]: p["name"] for p in products} == {
        "P-1": "Oak chair",
        "P-2": 'Desk 140×70, "Nordic"',
        "P-3": "Lamp",
    }
    with open(landing / "orders" / "batch-000001_import.csv", newline="") as fh:
        orders = {r["order_id"]: r for r in csv.DictReader(fh)}
    assert {k: v["status"] for k, v in orders.items()} == {
        "G-1001": "delivered",
        "G-1002": "Delivered",
        "G-1003": "cancelled",
        "G-1004": "Processing",
    }
    with open(landing / "order_items" / "batch-000001_import.csv", newline="") as fh:
        items = [(r["order_id"], r["line_no"], r["product_id"]) for r in csv.DictReader(fh)]
    assert items == [
        ("G-1001", "1", "P-1"),
        ("G-1001", "2", "P-2"),
        ("G-1002", "1", "P-1"),
        ("G-1002", "2", "P-3"),
        ("G-1003", "1", "P-3"),
        ("G-1004", "1", "P-2"),
    ]
    rejects = list(csv.reader(io.StringIO(Path(report.rejects_file).read_text())))
    # line numbers in the file: the first record spans two lines (a line break in its note);
    # in .xlsx the same record is one row
    first, second = ("9", "10") if variant == "xlsx" else ("10", "11")
    malformed = (
        "values beyond the header's 21 columns"
        if variant == "xlsx"
        else "3 fields where the header has 21"
    )
    assert [r[:2] for r in rejects[1:]] == [
        [first, "no order id"],
        [second, f"malformed record: {malformed}"],
    ]
    # nothing but the batch's files and the report in the landing zone
    assert sorted(p.relative_to(landing).as_posix() for p in landing.rglob("*") if p.is_file()) == [
        "_imports/batch-000001_import.json",
        "_imports/batch-000001_import.rejects.csv",
        "customers/batch-000001_import.jsonl",
        "order_items/batch-000001_import.csv",
        "orders/batch-000001_import.csv",
        "products/batch-000001_import.parquet",
    ]


def test_small_chunks_give_the_same_batch(empty_lake, tmp_path):
    """Per-key state crosses chunk boundaries: 2-record chunks write the same four files."""
    path, _, _ = generic_variants(tmp_path)["utf8"]
    whole = import_file(path, "generic", batch="a1")
    small = import_file(path, "generic", batch="a2", chunk_rows=2)
    for key in GENERIC_REPORT:
        assert whole.to_dict()[key] == small.to_dict()[key], key
    landing = empty_lake / "landing"
    for source, suffix in (("orders", "csv"), ("order_items", "csv"), ("customers", "jsonl")):
        a = (landing / source / f"a1.{suffix}").read_text(encoding="utf-8")
        b = (landing / source / f"a2.{suffix}").read_text(encoding="utf-8")
        assert _untimed(a) == _untimed(b), source


def _untimed(text: str) -> str:
    """The text without the import's time (updated_at where the export has none)."""
    return re.sub(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", "<now>", text)


# ------------------------------------------------------------------------ line-total layout

# the shape of a widely used retail sample: a net line total (Sales), a fractional discount
SAMPLE_CSV = """\
Row ID,Order ID,Order Date,Ship Mode,Customer ID,Customer Name,Segment,Country,City,\
Product ID,Category,Sub-Category,Product Name,Sales,Quantity,Discount,Profit
1,CA-2016-152156,11/8/2016,Second Class,CG-12520,Claire Gute,Consumer,United States,\
Henderson,FUR-BO-10001798,Furniture,Bookcases,Bush Somerset Collection Bookcase,\
261.96,2,0,41.9136
2,CA-2016-152156,11/8/2016,Second Class,CG-12520,Claire Gute,Consumer,United States,\
Henderson,FUR-CH-10000454,Furniture,Chairs,\
"Hon Deluxe Fabric Upholstered Stacking Chairs, Rounded Back",731.94,3,0,219.582
3,US-2015-108966,10/11/2015,Standard Class,SO-20335,Sean O'Donnell,Consumer,United States,\
Fort Lauderdale,FUR-TA-10000577,Furniture,Tables,\
"Bretford CR4500 Series Slim Rectangular Table, 60""W",957.5775,5,0.45,-383.031
4,US-2015-108966,10/11/2015,Standard Class,SO-20335,Sean O'Donnell,Consumer,United States,\
Fort Lauderdale,OFF-ST-10000760,Office Supplies,Storage,Eldon Fold 'N Roll Cart System,\
22.368,2,0.2,2.5164
5,CA-2014-115812,6/9/2014,Standard Class,BH-11710,Brosina Hoffman,Consumer,United States,\
Los Angeles,TEC-PH-10002033,Technology,Phones,Konftel 250 Conference phone - Charcoal black,\
911.424,4,0.2,68.3568
6,CA-2014-115812,6/9/2014,Standard Class,BH-11710,Brosina Hoffman,Consumer,United States,\
Los Angeles,OFF-BI-10003910,Office Supplies,Binders,\
DXL Angle-View Binders with Locking Rings by Samsill,3.054,3,0.8,-5.7026
7,CA-2014-115812,6/9/2014,Standard Class,BH-11710,Brosina Hoffman,Consumer,United States,\
Los Angeles,OFF-PA-10002365,Office Supplies,Paper,Xerox 1967,0,2,1,0
"""
# the last line's 100 % discount leaves no unit price: it is rejected with the reason
SAMPLE_HEADER, *SAMPLE_ROWS = list(csv.reader(io.StringIO(SAMPLE_CSV)))
SAMPLE_MAPPING = """
[orders]
order_id = "Order ID"
order_ts = "Order Date"          # 11/8/2016: Silver reads unpadded MM/dd/yyyy itself
status = { value = "delivered" } # the export has no status: every order was sold
customer_id = "Customer ID"
country = "Country"
channel = { column = "Ship Mode" }

[order_items]
product_id = "Product ID"
quantity = "Quantity"
price = { column = "Sales", is = "line_net" }
discount = { column = "Discount", is = "fraction" }

[customers]
name = "Customer Name"
segment = "Segment"
country = "Country"
city = "City"

[products]
name = "Product Name"
category = "Category"
subcategory = "Sub-Category"
"""


def test_line_totals_with_fractional_discounts(empty_lake, tmp_path):
    path = write_csv(tmp_path / "sample.csv", SAMPLE_HEADER, SAMPLE_ROWS, encoding="cp1252")
    mapping = parse_mapping(SAMPLE_MAPPING, "sample mapping")
    report = import_file(path, mapping)
    assert (report.rows_read, report.lines_imported, report.rejected) == (7, 6, 1)
    assert (report.orders, report.customers, report.products) == (3, 3, 6)
    assert report.rejected_by_reason == {"amounts give no unit price": 1}
    assert report.unmapped_columns == ["Row ID", "Profit"]
    assert report.inexact_amounts == 0
    with open(Path(report.files["order_items"]), newline="") as fh:
        items = list(csv.DictReader(fh))
    # Silver's line_net of what was written gives back each line's Sales, to the cent
    for item, row in zip(items, SAMPLE_ROWS, strict=False):
        q, u, d = int(item["quantity"]), Decimal(item["unit_price"]), Decimal(item["discount_pct"])
        assert half_up(q * u * (100 - d) / 100) == half_up(Decimal(row[13])), row
        assert len(item["unit_price"].partition(".")[2]) <= 4


# ---------------------------------------------------------------------------- Shopify layout

SHOPIFY_HEADER = [
    "Name",
    "Email",
    "Financial Status",
    "Paid at",
    "Fulfillment Status",
    "Fulfilled at",
    "Currency",
    "Subtotal",
    "Created at",
    "Lineitem quantity",
    "Lineitem name",
    "Lineitem price",
    "Lineitem compare at price",
    "Lineitem sku",
    "Lineitem discount",
    "Billing Name",
    "Billing City",
    "Billing Country",
    "Cancelled at",
    "Payment Method",
    "Vendor",
    "Source",
]


def _shop(
    name,
    email="",
    fin="",
    ful="",
    created="",
    qty="1",
    item="",
    price="",
    sku="",
    disc="0",
    billing="",
    city="",
    country="",
    cancelled="",
    vendor="Acme",
):
    order_level = bool(fin)
    return [
        name,
        email,
        fin,
        created if fin == "paid" else "",
        ful,
        "",
        "EUR" if order_level else "",
        "",
        created,
        qty,
        item,
        price,
        "",
        sku,
        disc,
        billing,
        city,
        country,
        cancelled,
        "Shopify Payments" if order_level else "",
        vendor,
        "web" if order_level else "",
    ]


# The order-level columns fill an order's first line only, as Shopify exports them.
# fmt: off
SHOPIFY_ROWS = [
    _shop("#1001", "ann@example.com", "paid", "fulfilled", "2025-10-07 23:50:26 -0500", "2",
          'Mug "Classic", 350ml', "12.50", "MUG-1", "2.50", "Ann Lee", "Wien", "AT"),
    _shop("#1001", "ann@example.com", created="2025-10-07 23:50:26 -0500", item="Tote, canvas",
          price="20.00", sku=""),  # a custom item: no SKU, its name is the product id
    _shop("#1002", "bo@example.com", "refunded", "fulfilled", "2025-10-08 10:00:00 +0200", "1",
          'Mug "Classic", 350ml', "12.50", "MUG-1", billing="Bo Berg", country="SE"),
    _shop("#1003", "ann@example.com", "paid", "unfulfilled", "2025-10-09 08:00:00 +0000", "3",
          "Poster", "9.99", "POS-1", "0.99", "Ann Lee", "Wien", "AT"),
    _shop("#1004", "cy@example.com", "voided", "", "2025-10-09 09:00:00 +0000", "1", "Poster",
          "9.99", "POS-1", billing="Cy Chan", country="FR", cancelled="2025-10-09 10:00:00 +0000"),
    _shop("#1005", "dee@example.com", "pending", "", "2025-10-10 12:00:00 +0000", "1", "Poster",
          "9.99", "POS-1", billing="Dee Dunn", country="DE"),
    _shop("#1006", "ann@example.com", "partially_refunded", "partial",
          "2025-10-11 12:00:00 +0000", "2", "Tote, canvas", "20.00", "", "5.00", "Ann Lee",
          "Wien", "AT"),
]
# fmt: on
SHOPIFY_STATUS = {
    "#1001": "delivered",
    "#1002": "returned",
    "#1003": "processing",
    "#1004": "cancelled",
    "#1005": "pending",
    "#1006": "shipped",
}


def test_shopify_export(empty_lake, tmp_path):
    path = write_csv(tmp_path / "orders_export.csv", SHOPIFY_HEADER, SHOPIFY_ROWS)
    report = import_file(path, "shopify")
    assert (report.rows_read, report.lines_imported, report.rejected) == (7, 7, 0)
    assert (report.orders, report.customers, report.products) == (6, 4, 3)
    assert report.conflicts["orders"] == {"keys": 0}  # blank order fields are inherited
    assert report.dates_not_matching_format == {}
    assert report.unmapped_columns == ["Paid at", "Fulfilled at", "Currency", "Subtotal"]
    with open(report.files["orders"], newline="") as fh:
        orders = {r["order_id"]: r for r in csv.DictReader(fh)}
    assert {k: v["status"] for k, v in orders.items()} == SHOPIFY_STATUS
    assert orders["#1001"]["order_ts"] == "2025-10-08T04:50:26Z"  # -0500 to UTC
    assert orders["#1001"]["customer_id"] == "ann@example.com"
    with open(report.files["order_items"], newline="") as fh:
        items = list(csv.DictReader(fh))
    assert [(i["order_id"], i["line_no"], i["product_id"]) for i in items][:2] == [
        ("#1001", "1", "MUG-1"),
        ("#1001", "2", "Tote, canvas"),
    ]
    # a money discount becomes the percent that gives back the line's net: 25.00 - 2.50
    assert (items[0]["unit_price"], items[0]["discount_pct"]) == ("12.5", "10")


# ------------------------------------------------------------------- Gold from imports only


def half_up(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def expected_gold() -> tuple[dict, dict]:
    """daily (date -> orders, customers, net) and monthly (month, category) -> net, orders,
    straight from the flat rows above (section 4: revenue-bearing statuses, line_net)."""
    lines = []  # (order, date, status, customer, category, net)
    # generic: unit price and percent; the later line's status wins within an order
    last_status = {}
    for r in GENERIC_ROWS:
        if r[0]:
            last_status[r[0]] = r[2].lower()
    for r in GENERIC_ROWS:
        if not r[0]:
            continue
        month, day, year = (int(x) for x in r[1].split("/"))
        q, u, d = int(r[16]), Decimal(r[17]), Decimal(r[18] or "0")
        net = half_up(q * u * (100 - d) / 100)
        lines.append((r[0], dt.date(year, month, day), last_status[r[0]], r[3], r[13], net))
    # the sample: Sales is the net line total; every order delivered
    for r in SAMPLE_ROWS:
        if r[15] == "1":
            continue  # rejected (a 100 % discount)
        month, day, year = (int(x) for x in r[2].split("/"))
        net = half_up(Decimal(r[13]))
        lines.append((r[1], dt.date(year, month, day), "delivered", r[4], r[10], net))
    # Shopify: unit price minus the line's discount amount; the first line's date
    created = {}
    for r in SHOPIFY_ROWS:
        created.setdefault(r[0], r[8])
    for r in SHOPIFY_ROWS:
        stamp = dt.datetime.strptime(created[r[0]], "%Y-%m-%d %H:%M:%S %z")
        day = stamp.astimezone(dt.UTC).date()
        net = half_up(int(r[9]) * Decimal(r[11]) - Decimal(r[14]))
        lines.append((r[0], day, SHOPIFY_STATUS[r[0]], r[1], "Unknown", net))

    daily: dict = defaultdict(lambda: {"orders": set(), "customers": set(), "net": Decimal(0)})
    monthly: dict = defaultdict(lambda: {"orders": set(), "net": Decimal(0)})
    for order, day, status, customer, category, net in lines:
        daily[day]  # a day with any order has a row
        if status not in REVENUE:
            continue
        daily[day]["orders"].add(order)
        daily[day]["customers"].add(customer)
        daily[day]["net"] += net
        key = (day.replace(day=1), category)
        monthly[key]["orders"].add(order)
        monthly[key]["net"] += net
    return (
        {d: (len(v["orders"]), len(v["customers"]), v["net"]) for d, v in daily.items()},
        {k: (len(v["orders"]), v["net"]) for k, v in monthly.items()},
    )


def test_gold_from_imports_equals_the_flat_files(spark, empty_lake, tmp_path):
    generic, _, _ = generic_variants(tmp_path)["cp1252-semicolon"]
    sample = write_csv(tmp_path / "sample.csv", SAMPLE_HEADER, SAMPLE_ROWS, encoding="cp1252")
    shopify = write_csv(tmp_path / "orders_export.csv", SHOPIFY_HEADER, SHOPIFY_ROWS)
    import_file(generic, "generic")
    import_file(sample, parse_mapping(SAMPLE_MAPPING, "sample mapping"))
    import_file(shopify, "shopify")
    result = run("all", spark=spark)
    assert result.ok, result.error

    daily_want, monthly_want = expected_gold()
    daily = {
        r["order_date"]: (r["orders"], r["customers"], r["net_revenue"])
        for r in lake.read(spark, "gold", "daily_sales").collect()
    }
    assert daily == daily_want
    monthly = {
        (r["month"], r["category"]): (r["orders"], r["net_revenue"])
        for r in lake.read(spark, "gold", "category_sales").collect()
    }
    assert monthly == monthly_want
    quarantined = lake.read(spark, "silver", "quarantine").count()
    assert quarantined == 0


# ------------------------------------------------------------------------------ errors, CLI


def test_mapping_errors_name_the_file_and_the_key():
    with pytest.raises(MappingError, match=r"m\.toml: order_items\.prices: unknown field"):
        parse_mapping('[orders]\norder_id="A"\norder_ts="B"\n[order_items]\nprices="C"', "m.toml")
    with pytest.raises(MappingError, match=r"order_items\.price: is required"):
        parse_mapping('[orders]\norder_id="A"\norder_ts="B"\n[order_items]\nquantity="Q"', "m")
    with pytest.raises(MappingError, match=r"order_items\.price: `is` must be one of"):
        parse_mapping(
            '[orders]\norder_id="A"\norder_ts="B"\n[order_items]\nquantity="Q"\n'
            'price={column="P", is="total"}',
            "m",
        )
    with pytest.raises(MappingError, match="not valid TOML"):
        parse_mapping("[orders", "m")


def test_preview_maps_the_first_rows(tmp_path):
    path = write_csv(tmp_path / "shop.csv", SHOPIFY_HEADER, SHOPIFY_ROWS)
    table, rejects, info = preview(path, "shopify", rows=3)
    assert table.num_rows == 3 and not rejects
    assert table.column("status").to_pylist() == ["delivered", None, "returned"]
    assert table.column("product_id").to_pylist() == ["MUG-1", "Tote, canvas", "MUG-1"]
    assert info.delimiter == "," and "Currency" in info.unmapped_columns


def test_cli_import(empty_lake, tmp_path, capsys):
    path = write_csv(tmp_path / "shop.csv", SHOPIFY_HEADER, SHOPIFY_ROWS)
    assert cli_main(["import", str(path), "--mapping", "shopify", "--batch", "b-2025"]) == 0
    out = capsys.readouterr().out
    assert "7 rows read, 7 lines, 6 orders, 4 customers, 3 products" in out
    assert (empty_lake / "landing" / "orders" / "b-2025.csv").is_file()
    # a name that does not sort after the existing batch, a missing file, a bad mapping
    assert cli_main(["import", str(path), "--mapping", "shopify", "--batch", "a-2024"]) == 1
    assert "must sort after every existing batch" in capsys.readouterr().err
    assert cli_main(["import", str(tmp_path / "nope.csv"), "--mapping", "shopify"]) == 1
    assert "nope.csv: no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text('[orders]\norder_id = "Name"\n')
    assert cli_main(["import", str(path), "--mapping", str(bad)]) == 1
    assert "bad.toml: orders.order_ts: is required" in capsys.readouterr().err
    generic_on_shopify = cli_main(["import", str(path), "--mapping", "generic"])
    assert generic_on_shopify == 1
    assert "shop.csv: the export has no column 'Order Date'" in capsys.readouterr().err
    # nothing half-placed by the failures
    landing = empty_lake / "landing"
    assert sorted(p.name for p in (landing / "orders").iterdir()) == ["b-2025.csv"]


def test_an_export_without_importable_lines_places_nothing(empty_lake, tmp_path):
    path = write_csv(tmp_path / "h.csv", GENERIC_HEADER, [], extra=[MALFORMED])
    with pytest.raises(ExportError, match=r"h\.csv: no line could be imported \(1 rows read; "):
        import_file(path, "generic")
    assert [p for p in (empty_lake / "landing").rglob("*") if p.is_file()] == []


def test_export_errors(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(ExportError, match="empty.csv: empty file"):
        preview(empty, "generic")
    fake = tmp_path / "fake.xlsx"
    fake.write_bytes(b"PK\x03\x04not really a zip")
    with pytest.raises(ExportError, match="fake.xlsx: not a readable .xlsx"):
        preview(fake, "generic")


# -------------------------------------------------------------------------------- the page


def test_import_page(empty_lake):
    """The page shows the presets' mappings and a bad edit as a readable message."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(HOME), default_timeout=60)
    at.run()
    at.switch_page("pages/9_Import.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Import your data"
    assert 'order_id = "Order ID"' in at.text_area[0].value
    at.selectbox[0].select("shopify").run()
    assert 'order_id = "Name"' in at.text_area[0].value
    assert not at.error
    at.text_area[0].input('[orders]\norder_id = "Name"\n').run()
    assert not at.exception
    shown = [re.sub(r"\\(.)", r"\1", e.value) for e in at.error]  # Markdown escapes undone
    assert shown == ["the mapping above: orders.order_ts: is required"]


@pytest.mark.browser
def test_import_page_in_chromium(browser, tmp_path):  # noqa: F811 - the fixture
    """Upload, preview, import and report in the real app; a wrong preset reads as a message."""
    export = write_csv(tmp_path / "orders_export.csv", SHOPIFY_HEADER, SHOPIFY_ROWS)
    lake_root = tmp_path / "lake"
    port = free_port()
    log_path = tmp_path / "server.log"
    env = {**os.environ, "SHOPLAKE_LAKE": str(lake_root)}
    command = [sys.executable, "-m", "streamlit", "run", "Home.py", "--server.port", str(port)]
    command += ["--server.headless", "true", "--browser.gatherUsageStats", "false"]
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://localhost:{port}/_stcore/health") as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.5)
        page = context.new_page()
        page.goto(f"http://localhost:{port}/Import", wait_until="domcontentloaded")
        settle(page, "Import your data")
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(export))
        # the generic preset does not fit a Shopify export: a readable message, no traceback
        page.get_by_text("the export has no column").first.wait_for(timeout=60_000)
        settle(page, "Import your data")
        assert "Traceback" not in page.locator("body").inner_text()
        page.get_by_test_id("stSelectbox").first.click()
        page.get_by_role("option", name="shopify").click()
        page.get_by_text("Preview: the first rows mapped").wait_for(timeout=60_000)
        settle(page, "Import your data")
        page.get_by_role("button", name="Import").click()
        page.get_by_text("7 rows read, 7 lines, 6 orders").first.wait_for(timeout=120_000)
        settle(page, "Import your data")
        assert_no_error(page, "Import your data")
    finally:
        context.close()
        server.terminate()
        server.wait(15)
    landing = lake_root / "landing"
    assert (landing / "orders" / "batch-000001_import.csv").is_file()
    assert list((landing / "_imports" / "uploads").iterdir()) == []  # removed once imported
    assert "Traceback" not in log_path.read_text()
