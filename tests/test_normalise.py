"""Each normalisation rule of docs/contract.md §3 on a hand-made messy batch (no Delta I/O)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

from pyspark.sql import functions as F

from pipeline.contract import SOURCES
from pipeline.live.events import parse_events
from pipeline.silver import order_items, orders
from pipeline.silver.normalise import (
    _OUTER_WHITESPACE,
    WHITESPACE,
    line_net,
    normalise_status,
    parse_decimal,
    parse_timestamp,
    strip,
)
from pipeline.silver.refine import refine
from tests.reference import parse_ts

TIMESTAMPS = {
    "2024-01-05 10:20:30": dt.datetime(2024, 1, 5, 10, 20, 30),
    "2024-01-05T10:20:30Z": dt.datetime(2024, 1, 5, 10, 20, 30),
    "2024-01-05T10:20:30.123456Z": dt.datetime(2024, 1, 5, 10, 20, 30, 123456),
    "2024-01-05T10:20:30+02:00": dt.datetime(2024, 1, 5, 8, 20, 30),
    "2024-01-05T10:20:30-0130": dt.datetime(2024, 1, 5, 11, 50, 30),
    "2024-01-05": dt.datetime(2024, 1, 5),
    "01/31/2024": dt.datetime(2024, 1, 31),
    "31-01-2024": dt.datetime(2024, 1, 31),
    "20240131": dt.datetime(2024, 1, 31),
    "March 5, 2024": dt.datetime(2024, 3, 5),
    "1704450030": dt.datetime(2024, 1, 5, 10, 20, 30),
    "not a date": None,
    "2024-13-45": None,
    "31/31/2024": None,
    "2024": None,
    "": None,
    # month and day without a leading zero, as spreadsheets write them (docs/contract.md §3)
    "7/8/2014": dt.datetime(2014, 7, 8),
    "07/8/2014": dt.datetime(2014, 7, 8),
    "7/08/2014": dt.datetime(2014, 7, 8),
    "12/31/2014": dt.datetime(2014, 12, 31),
    "8-7-2014": dt.datetime(2014, 7, 8),
    "08-7-2014": dt.datetime(2014, 7, 8),
    "31-1-2014": dt.datetime(2014, 1, 31),
    " 7/8/2014\t": dt.datetime(2014, 7, 8),
    # ... and their near misses
    "13/8/2014": None,  # month 13
    "7/32/2014": None,  # day 32
    "2/30/2014": None,  # no such day
    "0/8/2014": None,  # month 0
    "7/0/2014": None,  # day 0
    "7/8/14": None,  # two-digit year
    "7/8/02014": None,  # five-digit year
    "007/8/2014": None,  # three-digit month
    "7/008/2014": None,  # three-digit day
    "8-13-2014": None,  # dd-MM: month 13
    "32-7-2014": None,  # dd-MM: day 32
    "8-7-14": None,
    "7/8-2014": None,  # mixed separators
    "7.8.2014": None,
    "7 / 8 / 2014": None,
    "\u0667/8/2014": None,  # a non-ASCII digit
    "7/8/2014 10:00": None,  # a time after a spreadsheet date is not a section 3 format
}


def test_every_accepted_timestamp_format(spark):
    df = spark.createDataFrame([(k,) for k in TIMESTAMPS], "raw string")
    got = {
        r["raw"]: r["ts"]
        for r in df.select("raw", parse_timestamp(F.col("raw")).alias("ts")).collect()
    }
    assert got == TIMESTAMPS


def test_reference_parser_reads_timestamps_as_spark_does():
    """tests/reference.py is the independent check of Gold: it must agree on every case."""
    got = {raw: parse_ts(raw) for raw in TIMESTAMPS}
    assert got == TIMESTAMPS


def test_live_events_accept_the_same_timestamps(spark):
    """The stream parses event_ts with the same rules (pipeline.live.events.parse_events)."""
    raws = ["7/8/2014", "8-7-2014", "13/8/2014", "7/8/14", "007/8/2014"]
    values = [
        (json.dumps({"event_id": f"E{i}", "order_id": f"O{i}", "event_ts": raw}),)
        for i, raw in enumerate(raws)
    ]
    raw = spark.createDataFrame(values, "value string").select(
        F.col("value"), F.current_timestamp().alias("_ingested_at")
    )
    got = {
        r["event_ts_raw"]: r["_event_ts"]
        for r in parse_events(raw).select("event_ts_raw", "_event_ts").collect()
    }
    assert got == {raw: TIMESTAMPS[raw] for raw in raws}


STATUSES = [
    ("pending", "pending"),
    ("NEW", "pending"),
    (" created ", "pending"),
    ("Paid", "processing"),
    ("confirmed", "processing"),
    ("processing", "processing"),
    ("SHIPPED", "shipped"),
    ("dispatched", "shipped"),
    ("In  Transit", "shipped"),
    ("complete", "delivered"),
    ("Completed", "delivered"),
    ("fulfilled", "delivered"),
    ("delivered", "delivered"),
    ("canceled", "cancelled"),
    ("VOID", "cancelled"),
    ("cancelled", "cancelled"),
    ("refunded", "returned"),
    ("return", "returned"),
    ("returned", "returned"),
    ("lost", None),
    ("on hold", None),
    (None, None),
]


def test_status_synonyms(spark):
    df = spark.createDataFrame(
        [(i, raw) for i, (raw, _) in enumerate(STATUSES)], "i int, raw string"
    )
    got = df.select("i", normalise_status(F.col("raw")).alias("s")).orderBy("i").collect()
    assert [r["s"] for r in got] == [want for _, want in STATUSES]


def test_strip_removes_what_the_whitespace_regex_removes(spark):
    """strip's cheap edge check must not miss a character the regex counts as whitespace:
    every character of the Basic Multilingual Plane, alone, at either end and inside."""
    char = F.decode(F.unhex(F.lpad(F.hex(F.col("id")), 4, "0")), "UTF-16BE")
    surrogate = F.col("id").between(0xD800, 0xDFFF)  # halves of a pair, not characters
    characters = spark.range(0x10000).filter(~surrogate)
    values = characters.select(
        F.explode(
            F.array(
                char,
                F.concat(char, F.lit("ab")),
                F.concat(F.lit("ab"), char),
                F.concat(char, F.lit("a b"), char, char),
                F.concat(F.lit("a"), char, F.lit("b")),
            )
        ).alias("raw")
    )
    compared = values.select(
        F.col("raw"),
        strip(F.col("raw")).alias("got"),
        F.regexp_replace(F.col("raw"), _OUTER_WHITESPACE, "").alias("want"),
    )
    stripped = compared.filter(F.col("raw") != F.col("want")).count()
    differ = compared.filter(~F.col("got").eqNullSafe(F.col("want"))).limit(5).collect()
    assert differ == []
    # the regex stripped exactly the listed characters: alone, leading, trailing, both ends
    assert stripped == len(WHITESPACE) * 4


def test_line_net_rounds_half_up(spark):
    df = spark.createDataFrame(
        [("3", "19.995", "12.5"), ("1", "0.005", "0")], "q string, p string, d string"
    )
    got = df.select(
        line_net(F.col("q").cast("int"), parse_decimal(F.col("p")), parse_decimal(F.col("d")))
    ).collect()
    assert [r[0] for r in got] == [Decimal("52.49"), Decimal("0.01")]


def _bronze(spark, source, rows):
    cols = SOURCES[source].columns
    data = [
        (
            *[r.get(c) for c in cols],
            r.get("_raw"),
            r.get("file", "b1.csv"),
            r.get("batch", "batch-000001"),
            dt.datetime(2026, 7, 1),
            f"{r.get('batch', 'b1')}:{i}",
        )
        for i, r in enumerate(rows)
    ]
    schema = ", ".join(f"{c} string" for c in cols)
    schema += ", _raw string, _source_file string, _batch_id string"
    schema += ", _ingested_at timestamp, _record_id string"
    return spark.createDataFrame(data, schema)


def _fates(refined, key: str) -> dict:
    rows = refined.fated.select(key, "_fate", "_quarantine_rules").collect()
    return {(r[key], r["_fate"]): sorted(r["_quarantine_rules"] or []) for r in rows}


def test_order_rules_versions_and_conflicts(spark):
    ok = dict(
        customer_id="C1",
        order_ts="2024-05-01 10:00:00",
        status="delivered",
        channel="web",
        payment_method="card",
        country="DE",
        updated_at="2024-05-01 10:00:00",
    )
    rows = [
        dict(ok, order_id="A"),
        dict(ok, order_id="A"),  # exact duplicate
        dict(ok, order_id="B", status="lost"),
        dict(ok, order_id="C", order_ts="1999-12-31"),
        dict(ok, order_id="D", order_ts="2099-01-01"),
        dict(ok, order_id=None),
        dict(ok, order_id="E", order_ts="garbage", status="???"),  # both rules named
        dict(ok, order_id="F", updated_at="2024-05-01 10:00:00"),
        dict(
            ok,
            order_id="F",
            status="shipped",
            updated_at="2024-05-02 10:00:00",
            batch="batch-000002",
        ),
        dict(ok, order_id="G", updated_at="not a time", status="pending"),  # oldest
        dict(ok, order_id="G", updated_at="2024-05-01 09:00:00"),
        dict(ok, order_id="H", status="shipped"),  # same updated_at, same batch, differ:
        dict(ok, order_id="H", status="delivered"),  # conflicting versions
        dict(ok, order_id="H", updated_at="2024-04-01", batch="batch-000000"),
        dict(order_id="O9,broken", _raw="O9,broken"),
    ]
    refined = refine(
        _bronze(spark, "orders", rows),
        SOURCES["orders"],
        orders.typed,
        orders.EXPECTATIONS,
        F.col("_updated_at"),
    )
    try:
        fates = _fates(refined, "order_id")
        assert fates[("A", "silver")] == []
        assert fates[("A", "duplicate")] == []
        assert fates[("B", "quarantined")] == ["unknown_status"]
        assert fates[("C", "quarantined")] == ["order_ts_too_old"]
        assert fates[("D", "quarantined")] == ["order_ts_in_future"]
        assert fates[(None, "quarantined")] == ["missing_key"]
        assert fates[("E", "quarantined")] == ["unknown_status", "unparseable_order_ts"]
        assert ("F", "superseded") in fates and ("F", "silver") in fates
        silver_f = refined.silver().filter(F.col("order_id") == "F").select("_status").first()[0]
        assert silver_f == "shipped"
        silver_g = refined.silver().filter(F.col("order_id") == "G").select("_status").first()[0]
        assert silver_g == "delivered"
        assert [k for k in fates if k[0] == "H"] == [("H", "quarantined")]
        h_rows = refined.fated.filter(F.col("order_id") == "H").count()
        assert h_rows == 3
        assert fates[("O9,broken", "quarantined")] == ["malformed_record"]
        c = refined.counts
        assert c["bronze"] == len(rows)
        assert c["bronze"] == c["silver"] + c["quarantined"] + c["duplicate"] + c["superseded"]
        assert (c["duplicate"], c["superseded"]) == (1, 2)
    finally:
        refined.release()


def test_item_rules_and_orphans(spark):
    ok = dict(order_id="A", product_id="P1", quantity="2", unit_price="10.00", discount_pct="0")
    rows = [
        dict(ok, line_no="1"),
        dict(ok, line_no="2", quantity="0"),
        dict(ok, line_no="3", quantity="2.5"),
        dict(ok, line_no="4", quantity="1001"),
        dict(ok, line_no="5", unit_price="0"),
        dict(ok, line_no="6", unit_price="100000.01"),
        dict(ok, line_no="7", discount_pct="100.5"),
        dict(ok, line_no="8", discount_pct="-1"),
        dict(ok, line_no="9", discount_pct=None),  # empty discount means none
        dict(ok, line_no="10", order_id="ZZ"),
        dict(ok, line_no=None),
        dict(ok, line_no="11", unit_price="100000", quantity="1000", discount_pct="100"),
    ]
    order_keys = spark.createDataFrame([("A",)], "order_id string")
    refined = refine(
        _bronze(spark, "order_items", rows),
        SOURCES["order_items"],
        lambda df: order_items.typed(df, order_keys),
        order_items.EXPECTATIONS,
        F.lit(None),
    )
    try:
        got = {
            r["line_no"]: (r["_fate"], sorted(r["_quarantine_rules"]))
            for r in refined.fated.select("line_no", "_fate", "_quarantine_rules").collect()
        }
        assert got == {
            "1": ("silver", []),
            "2": ("quarantined", ["invalid_quantity"]),
            "3": ("quarantined", ["invalid_quantity"]),
            "4": ("quarantined", ["invalid_quantity"]),
            "5": ("quarantined", ["invalid_unit_price"]),
            "6": ("quarantined", ["invalid_unit_price"]),
            "7": ("quarantined", ["invalid_discount"]),
            "8": ("quarantined", ["invalid_discount"]),
            "9": ("silver", []),
            "10": ("quarantined", ["orphan_item"]),
            None: ("quarantined", ["missing_key"]),
            "11": ("silver", []),
        }
    finally:
        refined.release()
