"""One record per key from the spilled lines, with the conflicts counted (DuckDB, out of core).

The lines of one order, customer or product repeat its fields. Per key, every
field takes the value of the LAST line that has one: a blank never overwrites
(Shopify fills an order's fields on its first line only), and when two lines
disagree the later line wins and the key is counted as a conflict, per field.
Items keep every line, in file order, numbered 1, 2, ... within their order
(unless the mapping names a line number column).

Why DuckDB: the per-key state of a million-line export does not have to fit
in Python objects; DuckDB aggregates the spill file within a memory limit and
spills to disk beyond it, and writes the landing CSV and JSON Lines itself.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from pipeline.imports.lines import spill_name
from pipeline.imports.mapping import FIELDS

MEMORY_LIMIT = "256MB"

# landing column -> spill column, per source (the key first)
ORDER_COLUMNS = {"order_id": "order_id"} | {
    n: spill_name("orders", n) for n in FIELDS["orders"] if n != "order_id"
}
CUSTOMER_COLUMNS = {"customer_id": "customer_id"} | {
    n: spill_name("customers", n) for n in FIELDS["customers"]
}
PRODUCT_COLUMNS = {"product_id": "product_id"} | {
    n: spill_name("products", n) for n in FIELDS["products"]
}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


class Resolver:
    """DuckDB over the spill file; writes the landing files of one batch."""

    def __init__(self, spill: Path, work: Path) -> None:
        import duckdb

        # a database file, not :memory:, so its tables are paged to disk beyond the limit
        self.con = duckdb.connect(str(work / "resolve.duckdb"))
        self.con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
        self.con.execute("SET threads = 2")
        self.con.execute("SET enable_progress_bar = false")  # the importer reports progress
        self.con.execute(f"SET temp_directory = {_literal(work)}")
        self.con.execute(f"CREATE VIEW lines AS SELECT * FROM read_parquet({_literal(spill)})")

    def close(self) -> None:
        self.con.close()

    def _latest(self, table: str, key: str, columns: dict[str, str], where: str) -> dict[str, int]:
        """Create `table`: one row per key, each field its latest non-blank value; count
        the keys whose lines disagree, per field.

        Two passes, each one plain aggregate per field: DuckDB spills such a
        grouping to disk past its memory limit, but not one that carries both
        (nor a DISTINCT aggregate) for hundreds of thousands of keys.
        """
        fields = {out: _quote(col) for out, col in columns.items() if col != key}
        k = _quote(key)
        # arg_max skips rows whose ordering value is null: the latest non-blank value
        picks = ", ".join(
            f"arg_max({c}, CASE WHEN {c} IS NOT NULL THEN seq END) AS {_quote(out)}"
            for out, c in fields.items()
        )
        self.con.execute(
            f"CREATE TABLE {table} AS SELECT {k} AS {k}, min(seq) AS first_seq, {picks} "
            f"FROM lines WHERE {where} GROUP BY {k}"
        )
        # two different non-blank values <=> min <> max
        flags = ", ".join(
            f"coalesce(min({c}) <> max({c}), false) AS {_quote('x_' + out)}"
            for out, c in fields.items()
        )
        sums = ", ".join(f"count(*) FILTER (WHERE {_quote('x_' + n)})" for n in fields)
        anyx = " OR ".join(_quote("x_" + n) for n in fields)
        row = self.con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE {anyx}), {sums} FROM "
            f"(SELECT {flags} FROM lines WHERE {where} GROUP BY {k})"
        ).fetchone()
        counts = {"records": int(row[0]), "keys": int(row[1])}
        counts.update({n: int(v) for n, v in zip(fields, row[2:], strict=True) if v})
        return counts

    def resolve(self) -> dict[str, dict[str, int]]:
        return {
            "orders": self._latest("r_orders", "order_id", ORDER_COLUMNS, "TRUE"),
            "customers": self._latest(
                "r_customers", "customer_id", CUSTOMER_COLUMNS, "customer_id IS NOT NULL"
            ),
            "products": self._latest(
                "r_products", "product_id", PRODUCT_COLUMNS, "product_id IS NOT NULL"
            ),
        }

    def _select(self, table: str, columns: dict[str, str]) -> str:
        cols = ", ".join(_quote(c) for c in columns)
        return f"SELECT {cols} FROM {table} ORDER BY first_seq"

    def write_orders(self, path: Path) -> None:
        self._csv(self._select("r_orders", ORDER_COLUMNS), path)

    def write_items(self, path: Path) -> int:
        query = (
            "SELECT order_id, coalesce(i_line_no, CAST(row_number() OVER "
            "(PARTITION BY order_id ORDER BY seq) AS VARCHAR)) AS line_no, product_id, "
            "i_quantity AS quantity, i_unit_price AS unit_price, i_discount_pct AS discount_pct "
            "FROM lines ORDER BY seq"
        )
        self._csv(query, path)
        return int(self.con.execute("SELECT count(*) FROM lines").fetchone()[0])

    def write_customers(self, path: Path) -> None:
        query = self._select("r_customers", CUSTOMER_COLUMNS)
        self.con.execute(f"COPY ({query}) TO {_literal(path)} (FORMAT json)")

    def products(self) -> pa.Table:
        return self.con.sql(self._select("r_products", PRODUCT_COLUMNS)).to_arrow_table()

    def _csv(self, query: str, path: Path) -> None:
        self.con.execute(
            f"COPY ({query}) TO {_literal(path)} "
            "(FORMAT csv, HEADER true, DELIMITER ',', QUOTE '\"', ESCAPE '\"')"
        )
