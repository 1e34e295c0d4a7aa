"""The single-node yardstick: ShopLake's Bronze -> Silver -> Gold contract as DuckDB SQL.

Why it exists: a benchmark of a Spark lakehouse on one small machine only
means something against the best single-node engine doing the *same* work.
So this baseline reads the same landing files as all-text (malformed CSV and
JSON lines kept as raw text), drops exact duplicates, applies every Silver
rule of docs/contract.md §3, keeps one version per key (quarantining
conflicts), persists Bronze, Silver (with quarantine, dimensions and
fact_sales) and Gold, and computes Gold exactly as section 4 defines it. The
harness checks that its Gold tables equal Spark's, row by row, before it
compares times, so a ratio never compares unequal work.

It shares no code with pipeline/'s Spark implementation (only the landing
contract of names and columns), which also makes it a second, independent
reading of the contract. Money is computed in integer cents (ten-thousandths
for prices) because DuckDB divides decimals in floating point; rounding is
half up per line, as the contract says.

Decisions where this engine has to choose:

- Keys are compared trimmed (order items: trimmed order_id and the integer
  line_no), as Silver stores them.
- A CSV file is read in one scan per distinct header; a file whose header
  names no key column is kept line by line as malformed, as Bronze does.
- An empty category counts as ``Unknown`` like a missing one.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from pipeline import catalog
from pipeline.contract import SOURCES, Source

REVENUE = "('processing', 'shipped', 'delivered')"
FATES = ("silver", "quarantined", "duplicate", "superseded")

STATUS_SYNONYMS = {
    "pending": ("pending", "new", "created"),
    "processing": ("processing", "paid", "confirmed"),
    "shipped": ("shipped", "dispatched", "in transit"),
    "delivered": ("delivered", "complete", "completed", "fulfilled"),
    "cancelled": ("cancelled", "canceled", "void"),
    "returned": ("returned", "refunded", "return"),
}
MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
EMAIL = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
ISO = (
    r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2})(:\d{2})?(\.\d{1,6})?"
    r"(Z|([+-])(\d{2})(:?(\d{2}))?)?$"
)
INT_TEXT = r"[+-]?\d{1,9}"
DECIMAL_TEXT = r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,3})?"

# --------------------------------------------------------------------------- SQL macros

MACROS = [
    # UTC timestamp from every accepted format (docs/contract.md §3), else NULL.
    """
    CREATE OR REPLACE MACRO sl_iso_parts(g) AS (
        CASE WHEN g.d <> '' AND (g.oh = '' OR (g.oh::INT <= 18
                                 AND coalesce(nullif(g.om, ''), '0')::INT < 60)) THEN
            try_strptime(
                g.d || ' ' || g.hm || coalesce(nullif(g.s, ''), ':00')
                    || coalesce(nullif(g.f, ''), '.0'),
                '%Y-%m-%d %H:%M:%S.%f'
            ) - to_minutes(
                CASE WHEN g.oh = '' THEN 0
                     ELSE (g.oh::INT * 60 + coalesce(nullif(g.om, ''), '0')::INT)
                          * CASE WHEN g.sign = '-' THEN -1 ELSE 1 END
                END
            )
        END
    )
    """,
    f"""
    CREATE OR REPLACE MACRO sl_iso_groups(v) AS
        regexp_extract(v, '{ISO}', ['d', 'hm', 's', 'f', 'z', 'sign', 'oh', 'x', 'om'])
    """,
    # v: the trimmed text; g: sl_iso_groups(v), computed by the caller in an earlier
    # projection (inside CASE branches DuckDB would re-run the regex for every field)
    f"""
    CREATE OR REPLACE MACRO sl_ts_parsed(v, g) AS (
        CASE
            WHEN v IS NULL THEN NULL
            WHEN g.d <> '' THEN sl_iso_parts(g)
            WHEN regexp_matches(v, '^\\d{{4}}-\\d{{2}}-\\d{{2}}[T ]') THEN NULL
            WHEN regexp_full_match(v, '\\d{{4}}-\\d{{2}}-\\d{{2}}')
                THEN try_strptime(v, '%Y-%m-%d')
            WHEN regexp_full_match(v, '\\d{{2}}/\\d{{2}}/\\d{{4}}')
                THEN try_strptime(v, '%m/%d/%Y')
            WHEN regexp_full_match(v, '\\d{{2}}-\\d{{2}}-\\d{{4}}')
                THEN try_strptime(v, '%d-%m-%Y')
            WHEN regexp_full_match(v, '\\d{{8}}')
                THEN try_strptime(substr(v, 1, 4) || '-' || substr(v, 5, 2)
                                  || '-' || substr(v, 7, 2), '%Y-%m-%d')
            WHEN regexp_full_match(v, '[A-Za-z]+ \\d{{1,2}}, \\d{{4}}')
                THEN try_strptime(
                    split_part(v, ', ', 2) || '-'
                    || list_position({list(MONTHS)!r}, lower(split_part(v, ' ', 1)))
                    || '-' || split_part(split_part(v, ' ', 2), ',', 1),
                    '%Y-%m-%d')
            WHEN regexp_full_match(v, '\\d{{10}}')
                THEN make_timestamp(v::BIGINT * 1000000)
        END
    )
    """,
    # one-off use (tests, ad hoc queries); the pipeline uses the two-stage form
    "CREATE OR REPLACE MACRO sl_ts(raw) AS sl_ts_parsed(trim(raw), sl_iso_groups(trim(raw)))",
    "CREATE OR REPLACE MACRO sl_out_of_range(ts, now_ts) AS "
    "(ts < TIMESTAMP '2000-01-01 00:00:00' OR ts > now_ts + INTERVAL 1 DAY)",
    "CREATE OR REPLACE MACRO sl_status(raw) AS (CASE regexp_replace(lower(trim(raw)), "
    "'\\s+', ' ', 'g') "
    + " ".join(
        f"WHEN '{word}' THEN '{status}'"
        for status, words in STATUS_SYNONYMS.items()
        for word in words
    )
    + " END)",
    f"CREATE OR REPLACE MACRO sl_int(raw) AS (CASE WHEN regexp_full_match(trim(raw), "
    f"'{INT_TEXT}') THEN try_cast(trim(raw) AS INTEGER) END)",
    # fixed point with 4 decimals as an integer of ten-thousandths (exact arithmetic)
    f"CREATE OR REPLACE MACRO sl_dec4(raw, width) AS (CASE WHEN regexp_full_match(trim(raw), "
    f"'{DECIMAL_TEXT}') THEN CASE WHEN abs(try_cast(trim(raw) AS DECIMAL(38, 4))) "
    "< 10::HUGEINT ** (width - 4) THEN "
    "CAST(try_cast(trim(raw) AS DECIMAL(38, 4)) * 10000 AS HUGEINT) END END)",
    # round(numerator / denominator) half up (away from zero), integers only
    "CREATE OR REPLACE MACRO sl_div_half_up(n, d) AS (sign(n) * ((abs(n) * 2 + d) // (2 * d)))",
    "CREATE OR REPLACE MACRO sl_cents(c) AS (CAST(c * 0.01 AS DECIMAL(18, 2)))",
]


# --------------------------------------------------------------------------- per source


@dataclass(frozen=True)
class Spec:
    """What Silver does to one source: parsed columns, rules, key, version order."""

    source: Source
    parsed: Sequence[str]  # "expr AS _name", may use raw columns
    derived: Sequence[str]  # may use parsed columns
    quarantine: Sequence[tuple[str, str]]  # (rule, condition true when fine)
    warn: Sequence[tuple[str, str]]
    key: Sequence[str]
    updated_at: str
    record_key: str
    silver: Sequence[str]

    @property
    def timestamps(self) -> list[str]:
        """Raw columns parsed as timestamps (they get a pre-parsing stage)."""
        return [c for c in self.source.columns if _ts(c) in self.parsed]


def _ts(column: str) -> str:
    return f"sl_ts_parsed(_t_{column}, _g_{column}) AS _{column}"


def _wf(condition: str) -> str:
    """A rule about a field is moot on a line that could not be parsed at all."""
    return f"_raw IS NOT NULL OR ({condition})"


_UPDATED = (("updated_at_out_of_range", _wf("_updated_at IS NULL OR NOT _updated_at_oor")),)
_UNPARSEABLE_UPDATED = (
    ("unparseable_updated_at", "updated_at IS NULL OR _updated_at IS NOT NULL"),
)
_MALFORMED = (("malformed_record", "_raw IS NULL"),)

SPECS: dict[str, Spec] = {
    "products": Spec(
        SOURCES["products"],
        parsed=(
            "sl_dec4(list_price, 18) AS _list_price",
            "sl_dec4(unit_cost, 18) AS _unit_cost",
            _ts("updated_at"),
        ),
        derived=("sl_out_of_range(_updated_at, $now) AS _updated_at_oor",),
        quarantine=(
            *_MALFORMED,
            ("missing_key", _wf("product_id IS NOT NULL")),
            ("negative_list_price", _wf("_list_price IS NULL OR _list_price >= 0")),
            ("negative_unit_cost", _wf("_unit_cost IS NULL OR _unit_cost >= 0")),
            *_UPDATED,
        ),
        warn=_UNPARSEABLE_UPDATED,
        key=("trim(product_id)",),
        updated_at="_updated_at",
        record_key="product_id",
        silver=(
            "trim(product_id) AS product_id",
            "trim(name) AS name",
            "coalesce(nullif(trim(category), ''), 'Unknown') AS category",
            "trim(subcategory) AS subcategory",
            "trim(brand) AS brand",
            "_list_price AS list_price_e4",
            "_unit_cost AS unit_cost_e4",  # null: the cost is unknown, not zero
            "CASE WHEN lower(trim(is_active)) IN ('true', '1', 'yes', 'y', 't') THEN true "
            "WHEN lower(trim(is_active)) IN ('false', '0', 'no', 'n', 'f') THEN false "
            "END AS is_active",
            "_updated_at AS updated_at",
            "_batch AS batch_id",
        ),
    ),
    "customers": Spec(
        SOURCES["customers"],
        parsed=(
            _ts("signup_date"),
            _ts("updated_at"),
            f"coalesce(regexp_full_match(trim(email), '{EMAIL}'), false) AS _email_valid",
        ),
        derived=(
            "sl_out_of_range(_signup_date, $now) AS _signup_date_oor",
            "sl_out_of_range(_updated_at, $now) AS _updated_at_oor",
        ),
        quarantine=(
            *_MALFORMED,
            ("missing_key", _wf("customer_id IS NOT NULL")),
            (
                "unparseable_signup_date",
                _wf("signup_date IS NULL OR _signup_date IS NOT NULL"),
            ),
            ("signup_date_out_of_range", _wf("_signup_date IS NULL OR NOT _signup_date_oor")),
            *_UPDATED,
        ),
        warn=(
            ("invalid_email", "_raw IS NOT NULL OR email IS NULL OR _email_valid"),
            *_UNPARSEABLE_UPDATED,
        ),
        key=("trim(customer_id)",),
        updated_at="_updated_at",
        record_key="customer_id",
        silver=(
            "trim(customer_id) AS customer_id",
            "trim(name) AS name",
            "CASE WHEN _email_valid THEN lower(trim(email)) END AS email",
            "CAST(_signup_date AS DATE) AS signup_date",
            "upper(trim(country)) AS country",
            "trim(city) AS city",
            "lower(trim(segment)) AS segment",
            "_updated_at AS updated_at",
            "_batch AS batch_id",
        ),
    ),
    "orders": Spec(
        SOURCES["orders"],
        parsed=(
            _ts("order_ts"),
            _ts("updated_at"),
            "sl_status(status) AS _status",
        ),
        derived=(
            "_order_ts < TIMESTAMP '2000-01-01 00:00:00' AS _order_ts_too_old",
            "_order_ts > $now + INTERVAL 1 DAY AS _order_ts_in_future",
            "sl_out_of_range(_updated_at, $now) AS _updated_at_oor",
        ),
        quarantine=(
            *_MALFORMED,
            ("missing_key", _wf("order_id IS NOT NULL")),
            ("unparseable_order_ts", _wf("_order_ts IS NOT NULL")),
            ("order_ts_too_old", _wf("_order_ts IS NULL OR NOT _order_ts_too_old")),
            ("order_ts_in_future", _wf("_order_ts IS NULL OR NOT _order_ts_in_future")),
            ("unknown_status", _wf("_status IS NOT NULL")),
            *_UPDATED,
        ),
        warn=_UNPARSEABLE_UPDATED,
        key=("trim(order_id)",),
        updated_at="_updated_at",
        record_key="order_id",
        silver=(
            "trim(order_id) AS order_id",
            "trim(customer_id) AS customer_id",
            "_order_ts AS order_ts",
            "CAST(_order_ts AS DATE) AS order_date",
            "_status AS status",
            "lower(trim(channel)) AS channel",
            "lower(trim(payment_method)) AS payment_method",
            "upper(trim(country)) AS country",
            "_updated_at AS updated_at",
            "_batch AS batch_id",
        ),
    ),
    "order_items": Spec(
        SOURCES["order_items"],
        parsed=(
            "sl_int(line_no) AS _line_no",
            "sl_int(quantity) AS _quantity",
            "sl_dec4(unit_price, 18) AS _unit_price",
            "sl_dec4(CASE WHEN coalesce(trim(discount_pct), '') = '' THEN '0' "
            "ELSE discount_pct END, 9) AS _discount_pct",
            "_known.order_id IS NOT NULL AS _order_exists",
        ),
        derived=(),
        quarantine=(
            *_MALFORMED,
            ("missing_key", _wf("order_id IS NOT NULL AND _line_no IS NOT NULL")),
            ("invalid_quantity", _wf("_quantity BETWEEN 1 AND 1000")),
            ("invalid_unit_price", _wf("_unit_price > 0 AND _unit_price <= 1000000000")),
            ("invalid_discount", _wf("_discount_pct BETWEEN 0 AND 1000000")),
            ("orphan_item", _wf("order_id IS NULL OR _order_exists")),
        ),
        warn=(),
        key=("trim(order_id)", "_line_no"),
        updated_at="NULL::TIMESTAMP",
        record_key="concat_ws('#', order_id, line_no)",
        silver=(
            "trim(order_id) AS order_id",
            "_line_no AS line_no",
            "trim(product_id) AS product_id",
            "_quantity AS quantity",
            "_unit_price AS unit_price_e4",
            "_discount_pct AS discount_pct_e4",
            "_batch AS batch_id",
        ),
    ),
}
ORDER = ("products", "customers", "orders", "order_items")  # items need silver_orders


@dataclass
class BaselineResult:
    """Gold tables as pandas (money as Decimal), seconds per layer, and Silver's counts."""

    tables: dict[str, pd.DataFrame]
    seconds: dict[str, float]
    reconciliation: dict[str, dict[str, int]]
    rules: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())


# --------------------------------------------------------------------------- bronze


def _files(landing: Path, source: Source) -> list[Path]:
    folder = landing / source.name
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(("_", ".")))


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _list(paths: Iterable[Path]) -> str:
    return "[" + ", ".join(_q(str(p)) for p in paths) + "]"


def _csv_header(path: Path) -> tuple[str, ...]:
    import csv
    import io

    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        first = handle.readline()
    return tuple(c.strip() for c in next(csv.reader(io.StringIO(first)), []))


BATCH_OF = "split_part(parse_filename({col}), '.', 1)"


def _raw_lines_sql(paths: Sequence[Path], skip_header: bool) -> str:
    """Every non-blank line of the files, as (file, line number, text)."""
    return f"""
        SELECT filename AS _file, i AS _line, line FROM (
            SELECT filename, string_split(replace(content, chr(13), ''), chr(10)) AS ls
            FROM read_text({_list(paths)})
        ), unnest(ls) WITH ORDINALITY AS u(line, i)
        WHERE trim(line) <> '' {"AND i > 1" if skip_header else ""}
    """


def _bronze_csv(con: duckdb.DuckDBPyConnection, source: Source, files: list[Path]) -> None:
    cols = source.columns
    groups: dict[tuple[str, ...], list[Path]] = {}
    for f in files:
        groups.setdefault(_csv_header(f), []).append(f)
    for n, (header, paths) in enumerate(groups.items()):
        if not any(k in header for k in source.key):  # unusable header: every line is malformed
            nulls = ", ".join(f"NULL::VARCHAR AS {c}" for c in cols)
            con.execute(
                f"INSERT INTO bronze_{source.name} SELECT {nulls}, line AS _raw, "
                f"{BATCH_OF.format(col='_file')} AS _batch "
                f"FROM ({_raw_lines_sql(paths, skip_header=True)})"
            )
            continue
        rejects, scans = f"rej_{source.name}_{n}", f"scan_{source.name}_{n}"
        picked = ", ".join(
            f'"{c}"::VARCHAR AS {c}' if c in header else f"NULL::VARCHAR AS {c}" for c in cols
        )
        con.execute(
            f"""
            INSERT INTO bronze_{source.name}
            SELECT {picked}, NULL::VARCHAR AS _raw, {BATCH_OF.format(col="filename")} AS _batch
            FROM read_csv({_list(paths)}, header = true, all_varchar = true, filename = true,
                          delim = ',', quote = '"', escape = '"', ignore_errors = true,
                          store_rejects = true, rejects_table = '{rejects}',
                          rejects_scan = '{scans}')
            """
        )
        nulls = ", ".join(f"NULL::VARCHAR AS {c}" for c in cols)
        con.execute(
            f"""
            INSERT INTO bronze_{source.name}
            SELECT {nulls}, any_value(r.csv_line) AS _raw,
                   {BATCH_OF.format(col="any_value(s.file_path)")} AS _batch
            FROM {rejects} r JOIN {scans} s USING (scan_id, file_id)
            GROUP BY r.scan_id, r.file_id, r.line
            """
        )
        con.execute(f"DROP TABLE IF EXISTS {rejects}")
        con.execute(f"DROP TABLE IF EXISTS {scans}")


def _bronze_json(con: duckdb.DuckDBPyConnection, source: Source, files: list[Path]) -> None:
    paths = ", ".join(_q(f"$.{c}") for c in source.columns)
    fields = ", ".join(f"_v[{i + 1}] AS {c}" for i, c in enumerate(source.columns))
    con.execute(
        f"""
        INSERT INTO bronze_{source.name}
        SELECT {fields}, CASE WHEN NOT _ok THEN line END AS _raw,
               {BATCH_OF.format(col="_file")} AS _batch
        FROM (
            SELECT *, CASE WHEN _ok THEN json_extract_string(line, [{paths}]) END AS _v
            FROM (
                SELECT *, coalesce(json_valid(line) AND starts_with(ltrim(line), '{{'), false)
                          AS _ok
                FROM ({_raw_lines_sql(files, skip_header=False)})
            )
        )
        """
    )


def _bronze_parquet(con: duckdb.DuckDBPyConnection, source: Source, files: list[Path]) -> None:
    present = {
        row[0]
        for row in con.execute(
            f"DESCRIBE SELECT * FROM read_parquet({_list(files)}, union_by_name = true)"
        ).fetchall()
    }
    picked = ", ".join(
        f'CAST("{c}" AS VARCHAR) AS {c}' if c in present else f"NULL::VARCHAR AS {c}"
        for c in source.columns
    )
    con.execute(
        f"""
        INSERT INTO bronze_{source.name}
        SELECT {picked}, NULL::VARCHAR AS _raw, {BATCH_OF.format(col="filename")} AS _batch
        FROM read_parquet({_list(files)}, union_by_name = true, filename = true)
        """
    )


def bronze(con: duckdb.DuckDBPyConnection, landing: Path) -> dict[str, int]:
    """Land every file of every source as text; returns rows per source."""
    rows = {}
    for name, source in SOURCES.items():
        cols = ", ".join(f"{c} VARCHAR" for c in source.columns)
        con.execute(f"CREATE OR REPLACE TABLE bronze_{name} ({cols}, _raw VARCHAR, _batch VARCHAR)")
        files = _files(landing, source)
        if files:
            {"csv": _bronze_csv, "json": _bronze_json, "parquet": _bronze_parquet}[source.fmt](
                con, source, files
            )
        rows[name] = con.execute(f"SELECT count(*) FROM bronze_{name}").fetchone()[0]
    return rows


# --------------------------------------------------------------------------- silver


def _failed(rules: Sequence[tuple[str, str]]) -> str:
    if not rules:
        return "[]::VARCHAR[]"
    names = ", ".join(
        f"CASE WHEN NOT coalesce(({cond}), false) THEN '{name}' END" for name, cond in rules
    )
    return f"list_filter([{names}], lambda x: x IS NOT NULL)"


def _refine(con: duckdb.DuckDBPyConnection, spec: Spec, now: dt.datetime) -> None:
    """fated_<source>: each distinct raw record once, with its fate and failed rules."""
    name = spec.source.name
    raw = ", ".join([*spec.source.columns, "_raw"])
    join = ""
    if name == "order_items":
        join = "LEFT JOIN silver_orders AS _known ON trim(d.order_id) = _known.order_id"
    derived = ", ".join(spec.derived) or "NULL AS _nothing"
    pre = "".join(
        f", trim({c}) AS _t_{c}, sl_iso_groups(trim({c})) AS _g_{c}" for c in spec.timestamps
    )
    keys = ", ".join(f"{k} AS _k{i}" for i, k in enumerate(spec.key))
    by_key = ", ".join(f"_k{i}" for i in range(len(spec.key)))
    sql = f"""
        CREATE OR REPLACE TEMP TABLE checked_{name} AS
        WITH d AS (
            SELECT {raw}, min(_batch) AS _batch, count(*) - 1 AS _copies
            FROM bronze_{name} GROUP BY ALL
        ),
        pre AS (SELECT d.*{pre} FROM d),
        typed AS (SELECT d.*, {", ".join(spec.parsed)} FROM pre AS d {join})
        SELECT *, {_failed(spec.quarantine)} AS _q, {_failed(spec.warn)} AS _w
        FROM (SELECT *, {derived}, {keys}, {spec.updated_at} AS _version_ts FROM typed)
    """
    con.execute(sql, {"now": now} if "$now" in sql else None)
    # versions on a narrow projection (row id, key, order), joined back: sorting whole
    # records in the window is what would cost
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE fated_{name} AS
        WITH ranked AS (
            SELECT rowid AS _id, {by_key},
                   rank() OVER (PARTITION BY {by_key}
                                ORDER BY _version_ts DESC NULLS LAST, _batch DESC) AS _rk
            FROM checked_{name} WHERE len(_q) = 0
        ),
        versioned AS (
            SELECT _id, _rk, sum((_rk = 1)::INT) OVER (PARTITION BY {by_key}) AS _top
            FROM ranked
        )
        SELECT c.*,
               CASE WHEN len(c._q) > 0 OR v._top > 1 THEN 'quarantined'
                    WHEN v._rk = 1 THEN 'silver' ELSE 'superseded' END AS _fate,
               CASE WHEN v._top > 1 THEN ['conflicting_versions'] ELSE c._q END AS _rules
        FROM checked_{name} c LEFT JOIN versioned v ON c.rowid = v._id
        """
    )
    con.execute(f"DROP TABLE checked_{name}")


def _counts(con: duckdb.DuckDBPyConnection, spec: Spec) -> tuple[dict[str, int], dict[str, int]]:
    name = spec.source.name
    rules = [*spec.quarantine, *spec.warn]
    aggs = [
        "sum(_copies + 1) AS bronze",
        "count(*) FILTER (WHERE _fate = 'silver') AS silver",
        "count(*) FILTER (WHERE _fate = 'quarantined') AS quarantined",
        "sum(_copies) AS duplicate",
        "count(*) FILTER (WHERE _fate = 'superseded') AS superseded",
        "count(*) FILTER (WHERE list_contains(_rules, 'conflicting_versions')) AS conflicts",
    ]
    aggs += [
        f"count(*) FILTER (WHERE list_contains(_q, '{r}') OR list_contains(_w, '{r}'))"
        for r, _ in rules
    ]
    row = con.execute(f"SELECT {', '.join(aggs)} FROM fated_{name}").fetchone()
    values = [int(v or 0) for v in row]
    names = ("bronze", "silver", "quarantined", "duplicate", "superseded", "conflicting_versions")
    counts = dict(zip(names, values[:6], strict=True))
    per_rule = {r: v for (r, _), v in zip(rules, values[6:], strict=True)}
    per_rule["conflicting_versions"] = values[5]
    return counts, per_rule


def silver(
    con: duckdb.DuckDBPyConnection, now: dt.datetime
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """Silver tables, quarantine, the dimensions and fact_sales; returns counts per source."""
    reconciliation, rules = {}, {}
    con.execute(
        "CREATE OR REPLACE TABLE silver_quarantine (source_table VARCHAR, record_key VARCHAR, "
        "rules VARCHAR[], raw_record VARCHAR, batch_id VARCHAR, quarantined_at TIMESTAMP)"
    )
    for name in ORDER:
        spec = SPECS[name]
        _refine(con, spec, now)
        con.execute(
            f"CREATE OR REPLACE TABLE silver_{name} AS "
            f"SELECT {', '.join(spec.silver)} FROM fated_{name} WHERE _fate = 'silver'"
        )
        struct = ", ".join(f"{c} := {c}" for c in spec.source.columns)
        con.execute(
            f"""
            INSERT INTO silver_quarantine
            SELECT '{name}', CASE WHEN _raw IS NULL THEN {spec.record_key} END, _rules,
                   coalesce(_raw, to_json(struct_pack({struct}))::VARCHAR), _batch, $now
            FROM fated_{name} WHERE _fate = 'quarantined'
            """,
            {"now": now},
        )
        reconciliation[name], rules[name] = _counts(con, spec)
        if name == "customers":  # SCD type 2 over every valid version
            con.execute(
                f"""
                CREATE OR REPLACE TABLE silver_dim_customer AS
                SELECT *, valid_to IS NULL AS is_current FROM (
                    SELECT customer_id, name, email, signup_date, country, city, segment,
                           coalesce(updated_at, TIMESTAMP '1970-01-01') AS valid_from,
                           lead(coalesce(updated_at, TIMESTAMP '1970-01-01')) OVER (
                               PARTITION BY customer_id
                               ORDER BY updated_at ASC NULLS FIRST, batch_id) AS valid_to,
                           batch_id
                    FROM (SELECT {", ".join(spec.silver)} FROM fated_{name}
                          WHERE _fate IN ('silver', 'superseded'))
                )
                """
            )
        con.execute(f"DROP TABLE fated_{name}")
    con.execute(
        f"""
        CREATE OR REPLACE TABLE silver_fact_sales AS
        SELECT *, sl_cents(gross_c) AS line_gross, sl_cents(net_c) AS line_net,
               sl_cents(cost_c) AS line_cost
        FROM (
            SELECT i.order_id, i.line_no, o.order_date, o.order_ts, o.status,
                   o.status IN {REVENUE} AS is_revenue_bearing, o.customer_id,
                   CASE WHEN c.customer_id IS NOT NULL THEN o.customer_id ELSE 'UNKNOWN' END
                       AS customer_key,
                   i.product_id,
                   CASE WHEN p.product_id IS NOT NULL THEN i.product_id ELSE 'UNKNOWN' END
                       AS product_key,
                   coalesce(p.category, 'Unknown') AS category, o.channel, o.country,
                   i.quantity,
                   sl_div_half_up(i.quantity * i.unit_price_e4, 100) AS gross_c,
                   sl_div_half_up(i.quantity * i.unit_price_e4 * (1000000 - i.discount_pct_e4),
                                  100000000) AS net_c,
                   -- null when the product or its cost is unknown: no invented margin
                   sl_div_half_up(i.quantity * p.unit_cost_e4, 100) AS cost_c
            FROM silver_order_items i
            JOIN silver_orders o USING (order_id)
            LEFT JOIN silver_products p ON i.product_id = p.product_id
            LEFT JOIN silver_customers c ON o.customer_id = c.customer_id
        )
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TABLE silver_dim_date AS
        SELECT d::DATE AS date, year(d) AS year, quarter(d) AS quarter, month(d) AS month,
               day(d) AS day, dayname(d) AS day_name, dayofweek(d) + 1 AS day_of_week,
               dayofweek(d) IN (0, 6) AS is_weekend
        FROM (SELECT unnest(generate_series(lo, hi, INTERVAL 1 DAY)) AS d
              FROM (SELECT min(order_date) AS lo, max(order_date) AS hi FROM silver_orders))
        """
    )
    return reconciliation, rules


# --------------------------------------------------------------------------- gold

GOLD_SQL = {
    "daily_sales": f"""
        WITH o AS (
            SELECT order_date, customer_id, status, status IN {REVENUE} AS rev FROM silver_orders
        ),
        per_day AS (
            SELECT order_date,
                   count(*) FILTER (WHERE rev) AS orders,
                   count(DISTINCT customer_id) FILTER (WHERE rev) AS customers,
                   count(*) FILTER (WHERE status = 'cancelled') AS cancelled_orders,
                   count(*) FILTER (WHERE status = 'returned') AS returned_orders
            FROM o GROUP BY order_date
        ),
        lines AS (
            SELECT order_date, sum(quantity) AS units, sum(gross_c) AS gross_c,
                   sum(net_c) AS net_c
            FROM silver_fact_sales WHERE is_revenue_bearing GROUP BY order_date
        ),
        firsts AS (
            SELECT first_day AS order_date, count(*) AS new_customers FROM (
                SELECT customer_id, min(order_date) AS first_day FROM o
                WHERE rev AND customer_id IS NOT NULL GROUP BY customer_id
            ) GROUP BY first_day
        )
        SELECT p.order_date, p.orders::BIGINT AS orders, coalesce(l.units, 0)::BIGINT AS units,
               sl_cents(coalesce(l.gross_c, 0)) AS gross_revenue,
               sl_cents(coalesce(l.net_c, 0)) AS net_revenue,
               CASE WHEN p.orders > 0
                    THEN sl_cents(sl_div_half_up(coalesce(l.net_c, 0)::HUGEINT, p.orders)) END
                   AS avg_order_value,
               p.customers::BIGINT AS customers,
               coalesce(f.new_customers, 0)::BIGINT AS new_customers,
               p.cancelled_orders::BIGINT AS cancelled_orders,
               p.returned_orders::BIGINT AS returned_orders
        FROM per_day p
        LEFT JOIN lines l USING (order_date)
        LEFT JOIN firsts f USING (order_date)
        ORDER BY p.order_date
    """,
    "category_sales": """
        WITH c AS (
            SELECT date_trunc('month', order_date)::DATE AS month, category,
                   count(DISTINCT order_id) AS orders, sum(quantity) AS units,
                   sum(net_c) AS net_c,
                   sum(net_c - cost_c) AS margin_c  -- lines of known cost; none: NULL
            FROM silver_fact_sales WHERE is_revenue_bearing GROUP BY ALL
        )
        SELECT month, category, orders::BIGINT AS orders, units::BIGINT AS units,
               sl_cents(net_c) AS net_revenue, sl_cents(margin_c) AS gross_margin,
               CASE WHEN sum(net_c) OVER (PARTITION BY month) <> 0
                    THEN net_c::DOUBLE / (sum(net_c) OVER (PARTITION BY month))::DOUBLE
               END AS revenue_share
        FROM c ORDER BY month, category
    """,
    "customer_rfm": f"""
        WITH as_of AS (SELECT max(order_date) + 1 AS as_of_date FROM silver_orders),
        per_customer AS (
            SELECT customer_id, max(order_date) AS last_order_date, count(*) AS frequency
            FROM silver_orders WHERE status IN {REVENUE} AND customer_id IS NOT NULL
            GROUP BY customer_id
        ),
        money AS (
            SELECT customer_id, sum(net_c) AS net_c FROM silver_fact_sales
            WHERE is_revenue_bearing AND customer_id IS NOT NULL GROUP BY customer_id
        ),
        base AS (
            SELECT p.customer_id, p.last_order_date,
                   (a.as_of_date - p.last_order_date)::INT AS recency_days,
                   p.frequency::BIGINT AS frequency,
                   sl_cents(coalesce(m.net_c, 0)) AS monetary, a.as_of_date
            FROM per_customer p LEFT JOIN money m USING (customer_id) CROSS JOIN as_of a
        ),
        scored AS (
            SELECT *,
                   ntile(5) OVER (ORDER BY recency_days DESC, customer_id) AS r_score,
                   ntile(5) OVER (ORDER BY frequency, customer_id) AS f_score,
                   ntile(5) OVER (ORDER BY monetary, customer_id) AS m_score
            FROM base
        )
        SELECT customer_id, last_order_date, recency_days, frequency, monetary,
               r_score, f_score, m_score,
               CASE
                   WHEN r_score = 5 AND f_score IN (4, 5) THEN 'champions'
                   WHEN r_score IN (3, 4) AND f_score IN (4, 5) THEN 'loyal'
                   WHEN r_score IN (4, 5) AND f_score IN (2, 3) THEN 'potential_loyalists'
                   WHEN r_score = 5 AND f_score = 1 THEN 'new_customers'
                   WHEN r_score = 4 AND f_score = 1 THEN 'promising'
                   WHEN r_score = 3 AND f_score = 3 THEN 'need_attention'
                   WHEN r_score = 3 AND f_score IN (1, 2) THEN 'about_to_sleep'
                   WHEN r_score IN (1, 2) AND f_score = 5 THEN 'cant_lose'
                   WHEN r_score IN (1, 2) AND f_score IN (3, 4) THEN 'at_risk'
                   WHEN r_score IN (1, 2) AND f_score IN (1, 2) THEN 'hibernating'
               END AS rfm_segment,
               as_of_date
        FROM scored ORDER BY customer_id
    """,
    # The method of pipeline/gold/revenue_anomalies.py (its docstring), in SQL.
    "revenue_anomalies": """
        WITH days AS (
            SELECT cal.d::DATE AS order_date,
                   coalesce(s.net_revenue, 0)::DECIMAL(18, 2) AS net_revenue,
                   coalesce(s.orders, 0) AS orders,
                   coalesce(s.net_revenue, 0)::DOUBLE AS x
            FROM (SELECT unnest(generate_series(lo, hi, INTERVAL 1 DAY)) AS d
                  FROM (SELECT min(order_date) AS lo, max(order_date) AS hi
                        FROM gold_daily_sales)) cal
            LEFT JOIN gold_daily_sales s ON s.order_date = cal.d::DATE
        ),
        normed AS (
            SELECT *,
                   CASE WHEN count(x) OVER weeks >= 4 THEN median(x) OVER weeks END AS norm,
                   median(CASE WHEN orders > 0 THEN x / orders END) OVER unit_days AS aov
            FROM days
            WINDOW weeks AS (PARTITION BY dayofweek(order_date) ORDER BY order_date
                             ROWS BETWEEN 8 PRECEDING AND 1 PRECEDING),
                   unit_days AS (ORDER BY order_date ROWS BETWEEN 28 PRECEDING AND 1 PRECEDING)
        ),
        raw AS (
            SELECT *, ln(x + unit) - ln(norm + unit) AS raw_r
            FROM (SELECT *, CASE WHEN aov IS NOT NULL THEN greatest(aov, 0.01::DOUBLE) END
                                AS unit FROM normed)
        ),
        expected AS (
            SELECT *,
                   CASE WHEN raw_r IS NOT NULL
                        THEN greatest(exp(ln(norm + unit)
                                          + coalesce(median(raw_r) OVER level_days, 0::DOUBLE))
                                      - unit, 0::DOUBLE) END AS e
            FROM raw
            WINDOW level_days AS (ORDER BY order_date ROWS BETWEEN 14 PRECEDING AND 1 PRECEDING)
        ),
        spread AS (
            SELECT *,
                   CASE WHEN count(r) OVER spread_days >= 14
                        THEN greatest(1.4826::DOUBLE * median(abs(r)) OVER spread_days,
                                      0.15::DOUBLE) END AS s
            FROM (SELECT *, ln(x + unit) - ln(e + unit) AS r FROM expected)
            WINDOW spread_days AS (ORDER BY order_date ROWS BETWEEN 56 PRECEDING AND 1 PRECEDING)
        ),
        banded AS (
            SELECT order_date, net_revenue,
                   round(e, 2)::DECIMAL(18, 2) AS expected_revenue,
                   CASE WHEN e IS NOT NULL AND s IS NOT NULL
                        THEN round(greatest((e + unit) * exp(-3.5::DOUBLE * s) - unit,
                                            0::DOUBLE), 2)::DECIMAL(18, 2) END AS lower_bound,
                   round((e + unit) * exp(3.5::DOUBLE * s) - unit, 2)::DECIMAL(18, 2)
                       AS upper_bound,
                   r / s AS score
            FROM spread
        )
        SELECT order_date, net_revenue, expected_revenue, lower_bound, upper_bound, score,
               coalesce(net_revenue < lower_bound OR net_revenue > upper_bound, false)
                   AS is_anomaly,
               CASE WHEN net_revenue > upper_bound THEN 'spike'
                    WHEN net_revenue < lower_bound THEN 'drop' END AS direction
        FROM banded ORDER BY order_date
    """,
}
# The Gold tables of the catalog that this baseline defines, in catalog order (daily_sales
# before revenue_anomalies, which reads it). The SQL above stays independent of the pipeline
# on purpose; names, keys and columns come from pipeline/catalog.py.
GOLD_TABLES = tuple(t.name for t in catalog.tables("gold", "batch") if t.name in GOLD_SQL)


def gold(con: duckdb.DuckDBPyConnection, tables: Sequence[str] = GOLD_TABLES) -> None:
    for name in GOLD_TABLES:  # in order: anomalies read daily_sales
        if name in tables or (name == "daily_sales" and "revenue_anomalies" in tables):
            con.execute(f"CREATE OR REPLACE TABLE gold_{name} AS {GOLD_SQL[name]}")


def fetch(con: duckdb.DuckDBPyConnection, name: str) -> pd.DataFrame:
    """A Gold table as pandas with exact money (Decimal) and dates (datetime.date)."""
    relation = con.sql(f"SELECT * FROM gold_{name}")
    fetch_table = getattr(relation, "to_arrow_table", None) or relation.arrow
    return fetch_table().to_pandas()


def connect(database: str | Path = ":memory:", threads: int | None = None):
    con = duckdb.connect(str(database))
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    for macro in MACROS:
        con.execute(macro)
    return con


def run_baseline(
    landing: str | Path,
    *,
    database: str | Path = ":memory:",
    threads: int | None = None,
    now: dt.datetime | None = None,
    tables: Sequence[str] = GOLD_TABLES,
) -> BaselineResult:
    """Bronze, Silver and Gold over every landing file; each layer timed on its own.

    ``now`` is the ingestion time the date rules compare with (default: the
    wall clock, as Bronze stamps it). A file database persists every layer
    like the lakehouse does; ``:memory:`` keeps it in RAM.
    """
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    landing = Path(landing)
    con = connect(database, threads)
    try:
        seconds: dict[str, float] = {}
        t0 = time.perf_counter()
        bronze(con, landing)
        con.execute("CHECKPOINT")
        seconds["bronze"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        reconciliation, rules = silver(con, now)
        con.execute("CHECKPOINT")
        seconds["silver"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        gold(con, tables)
        con.execute("CHECKPOINT")
        out = {name: fetch(con, name) for name in tables}
        seconds["gold"] = time.perf_counter() - t0
        return BaselineResult(out, seconds, reconciliation, rules)
    finally:
        con.close()


# --------------------------------------------------------------------------- comparison

KEYS = {name: catalog.table("gold", name).grain for name in GOLD_TABLES}
FLOATS = {
    c.name for n in GOLD_TABLES for c in catalog.table("gold", n).columns if c.type == "double"
}


def _plain(value: Any) -> Any:
    """One comparable Python value whatever library produced it."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.date()
    if isinstance(value, dt.datetime):
        return value.date()
    if hasattr(value, "item") and not isinstance(value, Decimal):  # numpy scalars
        return value.item()
    return value


def _same(a: Any, b: Any, column: str) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if column in FLOATS:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, Decimal) or isinstance(b, Decimal):
        return Decimal(str(a)) == Decimal(str(b))
    return a == b


def compare(table: str, left: pd.DataFrame, right: pd.DataFrame, limit: int = 5) -> dict:
    """Row-by-row equality of one Gold table from two engines: money exact, floats 1e-9."""
    keys = KEYS[table]
    columns = list(catalog.columns("gold", table))
    problems: list[str] = [
        f"{side} lacks column {column}"
        for side, df in (("left", left), ("right", right))
        for column in columns
        if column not in df.columns
    ]
    if problems:
        return {"equal": False, "rows": len(left), "other_rows": len(right), "mismatches": problems}

    def rows(df: pd.DataFrame) -> dict[tuple, dict]:
        out = {}
        for record in df[columns].to_dict("records"):
            plain = {k: _plain(v) for k, v in record.items()}
            out[tuple(plain[k] for k in keys)] = plain
        return out

    a, b = rows(left), rows(right)
    for key in sorted(set(a) ^ set(b), key=str)[:limit]:
        problems.append(f"{key}: only in {'left' if key in a else 'right'}")
    for key in sorted(set(a) & set(b), key=str):
        if len(problems) >= limit:
            break
        for column in columns:
            if not _same(a[key][column], b[key][column], column):
                problems.append(f"{key} {column}: {a[key][column]!r} != {b[key][column]!r}")
    return {
        "equal": not problems and len(a) == len(b),
        "rows": len(a),
        "other_rows": len(b),
        "columns": columns,
        "mismatches": problems,
    }
