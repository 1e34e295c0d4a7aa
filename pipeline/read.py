"""Read-only access to the lake for the dashboard, without Spark.

Long (~1,000 lines): every read a page makes goes through here (checked names, cache
keys, formats), one section per page; splitting it would split those guarantees.

The pages display Gold (and a few Silver) tables. Starting a Spark job to show
a few hundred rows would cost seconds, so this module reads Delta tables with
delta-rs (`deltalake`) and pyarrow, prunes columns, and returns pandas frames
with money as float (Delta stores DECIMAL(18,2); charts want floats). A table
that does not exist yet reads as an empty frame with the contract's columns,
so every page renders on an empty lake.

Only tables named in the contract can be read, and their paths are built from
the configured lake root: a caller cannot make this module open any other
file. Nothing here imports Streamlit; the pages cache these reads keyed on
`cache_key()` (the Delta version), so a finished run invalidates them.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import catalog, storage
from pipeline.config import SOURCES, settings
from pipeline.quality import scores as quality_scores

log = logging.getLogger(__name__)

LAYERS = ("bronze", "silver", "gold")

# The readable tables and the columns an empty read returns, derived from the catalog
# (pipeline/catalog.py): every table but the runner's bookkeeping, without machine ids.
TABLES: dict[str, dict[str, tuple[str, ...]]] = {
    layer: {t.name: t.public for t in catalog.tables(layer) if t.kind != "bookkeeping"}
    for layer in LAYERS
}

RFM_SEGMENTS = catalog.RFM_SEGMENT_NAMES

_COMMIT = re.compile(r"^(\d{20})\.json$")


class UnknownTableError(ValueError):
    """A caller asked for a table that is not in the contract."""


# --------------------------------------------------------------------------- paths, versions


def table_path(layer: str, table: str) -> str:
    """Path of a contract table under the configured lake root (nothing else is reachable)."""
    if layer not in TABLES or table not in TABLES[layer]:
        raise UnknownTableError(f"unknown table {layer}.{table}")
    return settings().table_path(layer, table)


def _is_remote(path: str) -> bool:
    return "://" in path


def cache_key(layer: str, table: str) -> tuple[int, int] | None:
    """(Delta version, commit file mtime) of a table, or None when it does not exist.

    Cheap (one directory listing) so pages can call it on every rerun and pass
    it to their cached readers: a new commit changes it, and so does a lake
    that was deleted and rebuilt (same version number, newer commit file).
    """
    path = table_path(layer, table)
    if _is_remote(path):
        try:
            from deltalake import DeltaTable

            return (DeltaTable(path).version(), 0)
        except Exception:  # a missing remote table raises a storage-specific error
            return None
    log_dir = Path(path) / "_delta_log"
    try:
        names = [m.group(1) for e in log_dir.iterdir() if (m := _COMMIT.match(e.name))]
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not names:
        return None
    latest = max(names)
    try:
        mtime = (log_dir / f"{latest}.json").stat().st_mtime_ns
    except FileNotFoundError:  # replaced between listing and stat
        mtime = 0
    return (int(latest), mtime)


def table_version(layer: str, table: str) -> int | None:
    key = cache_key(layer, table)
    return None if key is None else key[0]


# --------------------------------------------------------------------------- reading


def read_arrow(layer: str, table: str, columns: Sequence[str] | None = None) -> pa.Table | None:
    """The table (pruned to `columns` that exist) as Arrow, or None when it does not exist."""
    path = table_path(layer, table)
    if cache_key(layer, table) is None:
        return None
    return delta_arrow(path, columns)


def has_deletion_vectors(delta) -> bool:
    """Silver tables that take MERGEs carry deletion vectors (see pipeline/lake.py)."""
    return "deletionVectors" in (delta.protocol().reader_features or [])


def delta_arrow(path: str, columns: Sequence[str] | None = None) -> pa.Table:
    """A Delta table as Arrow, columns pruned to those that exist, deleted rows left out.

    delta-rs' plain reader refuses deletion vectors; its SQL engine applies them,
    so a table carrying them is read through a query (strings come back as the
    plain Arrow string type either way).
    """
    from deltalake import DeltaTable

    delta = DeltaTable(path)
    present = delta.schema().to_arrow().names
    wanted = list(present) if columns is None else [c for c in columns if c in set(present)]
    if not has_deletion_vectors(delta):
        return delta.to_pyarrow_table(columns=wanted)
    from deltalake import QueryBuilder

    select = ", ".join('"' + c.replace('"', '""') + '"' for c in wanted) or "1 AS _none"
    table = pa.table(QueryBuilder().register("t", delta).execute(f"SELECT {select} FROM t"))
    if not wanted:
        return table.drop_columns(["_none"])
    return table.cast(pa.schema([_plain(f) for f in table.schema]))


def _plain(field: pa.Field) -> pa.Field:
    if pa.types.is_string_view(field.type):
        return field.with_type(pa.string())
    if pa.types.is_binary_view(field.type):
        return field.with_type(pa.binary())
    return field


def _money_to_float(table: pa.Table) -> pa.Table:
    for i, field in enumerate(table.schema):
        if pa.types.is_decimal(field.type):
            table = table.set_column(i, field.name, pc.cast(table.column(i), pa.float64()))
    return table


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow -> pandas with decimals as float and dates as datetime64 (chart friendly)."""
    return _money_to_float(table).to_pandas(date_as_object=False)


def empty_frame(layer: str, table: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    cols = list(columns) if columns is not None else list(TABLES[layer][table])
    return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})


def read_table(layer: str, table: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A contract table as pandas; an empty frame with its columns when it does not exist."""
    arrow = read_arrow(layer, table, columns)
    if arrow is None:
        return empty_frame(layer, table, columns)
    frame = to_pandas(arrow)
    for col in columns or ():
        if col not in frame.columns:  # a column the writer does not produce (yet)
            frame[col] = pd.Series([None] * len(frame), dtype="object")
    return frame


# --------------------------------------------------------------------------- lake status


@dataclass(frozen=True)
class TableStats:
    layer: str
    table: str
    exists: bool
    version: int | None = None
    rows: int | None = None
    files: int = 0
    size_bytes: int = 0
    modified: dt.datetime | None = None


def table_stats(layer: str, table: str) -> TableStats:
    """Row count from the Delta log's file statistics: no data file is opened."""
    key = cache_key(layer, table)
    if key is None:
        return TableStats(layer, table, exists=False)
    from deltalake import DeltaTable

    try:
        delta = DeltaTable(table_path(layer, table))
        actions = pa.table(delta.get_add_actions(flatten=True))
        counts = actions.column("num_records").to_pylist()
        rows = sum(c for c in counts if c is not None) if counts else 0
        if has_deletion_vectors(delta):  # the file statistics still count deleted rows
            rows = _count_rows(delta)
        size = sum(s or 0 for s in actions.column("size_bytes").to_pylist())
        commit = delta.history(1)
        ts = commit[0].get("timestamp") if commit else None
        modified = dt.datetime.fromtimestamp(ts / 1000, tz=dt.UTC) if ts else None
        return TableStats(layer, table, True, key[0], rows, actions.num_rows, size, modified)
    except Exception as exc:  # a table being rewritten or unreadable: show it without numbers
        log.warning("cannot read stats of %s.%s: %s", layer, table, exc)
        return TableStats(layer, table, exists=True, version=key[0])


def _count_rows(delta) -> int:
    from deltalake import QueryBuilder

    result = pa.table(QueryBuilder().register("t", delta).execute("SELECT count(*) AS n FROM t"))
    return int(result.column("n")[0].as_py())


def lake_status(stats: Sequence[TableStats]) -> pd.DataFrame:
    """One row per layer: tables present, rows, last change."""
    rows = []
    for layer in LAYERS:
        present = [s for s in stats if s.layer == layer and s.exists]
        modified = [s.modified for s in present if s.modified is not None]
        rows.append(
            {
                "layer": layer,
                "tables": len(present),
                "expected": len(TABLES[layer]),
                "rows": sum(s.rows or 0 for s in present),
                "last_change": max(modified) if modified else None,
            }
        )
    return pd.DataFrame(rows)


def landing_files() -> dict[str, int]:
    """Landing files per source (names starting with '_' or '.' are skipped, as Spark does)."""
    root = settings().landing
    out: dict[str, int] = {}
    for source in SOURCES:
        try:
            out[source] = len(storage.list_files(storage.join(root, source)))
        except (FileNotFoundError, NotADirectoryError):
            out[source] = 0
    return out


def landing_manifests() -> list[dict[str, object]]:
    """The generator's manifests of the landing zone (``_manifests/batch-*.json``), in order.

    They say which settings made the lake's demo data and what each batch
    holds; a lake without generated data (the user's own files) has none.
    """
    import json

    folder = storage.join(settings().landing, "_manifests")
    try:
        files = storage.list_files(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for file in sorted(files, key=lambda f: str(f)):
        if not str(file).rsplit("/", 1)[-1].startswith("batch-"):
            continue
        try:
            with storage.open_binary(file) as handle:
                out.append(json.loads(handle.read().decode("utf-8")))
        except (OSError, ValueError):
            continue  # a manifest being written or damaged: the others still describe the lake
    return out


def manifest_records(manifests: Sequence[dict[str, object]]) -> pd.DataFrame:
    """Why N orders make more order records: records per source split by where they come from.

    records = new keys + new versions of earlier keys (status updates, price
    changes) + exact duplicates + extra defective records (missing keys,
    unparseable or out-of-range values, malformed lines) that Silver
    quarantines; all counts are the generator's own (its manifests).
    """
    cols = ["source", "records", "new", "new_versions", "exact_duplicates", "defective_extra"]
    rows = []
    for source in SOURCES:
        total = new = versions = duplicates = 0
        for m in manifests:
            total += int((m.get("rows") or {}).get(source, 0))  # type: ignore[union-attr]
            new += int((m.get("new_keys") or {}).get(source, 0))  # type: ignore[union-attr]
            versions += int((m.get("updated_keys") or {}).get(source, 0))  # type: ignore[union-attr]
            defects = (m.get("defects") or {}).get(source) or {}  # type: ignore[union-attr]
            duplicates += int(defects.get("exact_duplicates", 0))
        rows.append(
            {
                "source": source,
                "records": total,
                "new": new,
                "new_versions": versions,
                "exact_duplicates": duplicates,
                "defective_extra": total - new - versions - duplicates,
            }
        )
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------- runs, quality


def run_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run from gold.pipeline_runs: newest first, with duration and totals."""
    cols = [
        "run_id",
        "started_at",
        "finished_at",
        "seconds",
        "status",
        "steps",
        "rows_in",
        "rows_out",
        "rows_quarantined",
    ]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    frame = runs.copy()
    grouped = frame.groupby("run_id", sort=False)
    out = grouped.agg(
        started_at=("started_at", "min"),
        finished_at=("finished_at", "max"),
        steps=("step", "count"),
        rows_in=("rows_in", "sum"),
        rows_out=("rows_out", "sum"),
        rows_quarantined=("rows_quarantined", "sum"),
    ).reset_index()
    failed = grouped["status"].apply(lambda s: (s != "succeeded").any())
    out["status"] = np.where(out["run_id"].map(failed), "failed", "succeeded")
    out["seconds"] = (out["finished_at"] - out["started_at"]).dt.total_seconds().round(1)
    return out.sort_values("started_at", ascending=False, ignore_index=True)[cols]


def step_reconciliation(runs: pd.DataFrame, run_id: str | None = None) -> pd.DataFrame:
    """Before/after of each step of a run (the latest when run_id is None).

    A Silver step must account for every Bronze row (docs/contract.md §3):
    rows_in = rows_out + quarantined + duplicates + superseded. The runner
    records those counters in pipeline_runs.reconciliation (a map column it
    adds to the contract); a Bronze step lands rows one for one. Gold steps
    aggregate (orders -> days), so `balanced` is left empty for them.
    """
    cols = [
        "step",
        "status",
        "seconds",
        "rows_in",
        "rows_out",
        "rows_quarantined",
        "duplicates",
        "superseded",
        "unaccounted",
        "balanced",
        "error",
    ]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    if run_id is None:
        run_id = run_summary(runs)["run_id"].iloc[0]
    frame = runs[runs["run_id"] == run_id].sort_values("started_at").reset_index(drop=True)
    out = pd.DataFrame({"step": frame["step"], "status": frame["status"]})
    out["seconds"] = (frame["finished_at"] - frame["started_at"]).dt.total_seconds().round(2)
    for col in ("rows_in", "rows_out", "rows_quarantined"):
        out[col] = pd.to_numeric(frame[col], errors="coerce").astype("Int64")
    maps = (
        frame["reconciliation"].map(_as_dict)
        if "reconciliation" in frame.columns
        else pd.Series([{}] * len(frame))
    )
    out["duplicates"] = pd.array([m.get("duplicate") for m in maps], dtype="Int64")
    out["superseded"] = pd.array([m.get("superseded") for m in maps], dtype="Int64")
    unaccounted: list[object] = []
    for i, counters in enumerate(maps):
        row = out.iloc[i]
        if counters:
            known = ("silver", "quarantined", "duplicate", "superseded")
            left = counters.get("bronze", row["rows_in"]) - sum(
                int(counters.get(k) or 0) for k in known
            )
        elif str(row["step"]).startswith("bronze."):
            left = row["rows_in"] - row["rows_out"] - (row["rows_quarantined"] or 0)
        else:
            left = None
        unaccounted.append(None if left is None or pd.isna(left) else int(left))
    out["unaccounted"] = pd.array(unaccounted, dtype="Int64")
    out["balanced"] = pd.array(
        [None if u is None else u == 0 for u in unaccounted], dtype="boolean"
    )
    out["error"] = frame["error"] if "error" in frame.columns else None
    return out[cols]


def _as_dict(value: object) -> dict[str, object]:
    """A Delta map value as read by pyarrow (a list of (key, value) pairs) or a dict."""
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list | tuple | np.ndarray):
        return {str(k): v for k, v in value}
    return {}


def reconciliation_detail(runs: pd.DataFrame, run_id: str) -> pd.DataFrame:
    """The counters each step of a run recorded in pipeline_runs.reconciliation, one column each.

    The column is an addition of the runner to the contract's pipeline_runs
    (e.g. bronze rows, silver rows, duplicates, superseded); empty when absent.
    """
    if runs.empty or "reconciliation" not in runs.columns:
        return pd.DataFrame()
    frame = runs[runs["run_id"] == run_id].sort_values("started_at")
    rows = []
    for step, value in zip(frame["step"], frame["reconciliation"], strict=True):
        counters = _as_dict(value)
        if counters:
            rows.append({"step": step, **counters})
    return pd.DataFrame(rows)


def _with_runs(runs: pd.DataFrame | None) -> pd.DataFrame:
    """gold.pipeline_runs for the scores (its reconciliation counters) when not passed in."""
    return read_table("gold", "pipeline_runs") if runs is None else runs


def table_scores(dq: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every table's score in every run (pipeline/quality/scores.py, the one computation)."""
    return quality_scores.table_scores(dq, _with_runs(runs))[quality_scores.SCORE_COLUMNS]


def latest_scores(dq: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each table's score in the latest run that checked records of it."""
    return quality_scores.latest_scores(dq, _with_runs(runs))


def layer_scores(dq: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per layer: the tables' latest scores weighted by records checked (docs/quality.md)."""
    return quality_scores.layer_scores(latest_scores(dq, runs))


def overall_score(dq: pd.DataFrame, runs: pd.DataFrame | None = None) -> float | None:
    """Every table's latest score, weighted by the records each checked (docs/quality.md §5)."""
    return quality_scores.overall_score(latest_scores(dq, runs))


def failing_rules(dq: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rules that failed records in their table's latest scored run, most failures first."""
    return quality_scores.failing_rules(dq, latest_scores(dq, runs))


def _sql_text(value: str) -> str:
    """A SQL string literal: delta-rs' QueryBuilder takes no bound parameters."""
    return "'" + value.replace("'", "''") + "'"


def _sql_name(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def _viewless(kind: pa.DataType) -> pa.DataType:
    """DataFusion returns string views, in lists too; pandas cannot take a list of views."""
    if pa.types.is_string_view(kind):
        return pa.string()
    if pa.types.is_list(kind):
        return pa.list_(kind.value_field.with_type(_viewless(kind.value_type)))
    return kind


def _query_quarantine(sql: Callable[[set[str]], str]) -> pa.Table | None:
    """`sql(columns present)` run over silver.quarantine (registered as `q`) in delta-rs' engine.

    The quarantine keeps every failed record whole (`raw_record`), so it grows
    with the data: the app never loads it (issue 15). DataFusion, inside
    delta-rs, reads only the columns a query names, applies deletion vectors,
    and streams the scan through the aggregation or the LIMIT; only the result
    reaches Python. None when the table does not exist.
    """
    if cache_key("silver", "quarantine") is None:
        return None
    from deltalake import DeltaTable, QueryBuilder

    delta = DeltaTable(table_path("silver", "quarantine"))
    present = set(delta.schema().to_arrow().names)
    result = pa.table(QueryBuilder().register("q", delta).execute(sql(present)))
    return result.cast(pa.schema([f.with_type(_viewless(f.type)) for f in result.schema]))


def quarantine_rule_counts() -> pd.DataFrame:
    """Quarantined records per source table and rule, most first (a record counts once per rule).

    One query in delta-rs' engine that scans only `source_table` and `rules`
    (EXPLAIN: `projection=[source_table, rules]`): the rules are unnested in a
    subquery and grouped, so `raw_record` is never read. The unnest is the
    select-list `unnest(rules)`: the DataFusion in deltalake 1.6.6 has no table
    form (`CROSS JOIN LATERAL unnest(q.rules) AS t(rule)`: "table function
    'unnest' not found"; `FROM q, unnest(q.rules)`: not implemented). Ties are
    ordered by source table and rule, so the list is stable.
    """
    cols = ["source_table", "rule", "records"]
    counted = _query_quarantine(
        lambda _present: (
            "SELECT source_table, rule, count(*) AS records"
            " FROM (SELECT source_table, unnest(rules) AS rule FROM q) AS flat"
            " WHERE rule IS NOT NULL"
            " GROUP BY source_table, rule"
            " ORDER BY records DESC, source_table, rule"
        )
    )
    if counted is None or counted.num_rows == 0:
        return pd.DataFrame(columns=cols)
    return counted.to_pandas()[cols]


def quarantine_samples(rule: str, source_table: str | None = None, limit: int = 20) -> pd.DataFrame:
    """Up to `limit` quarantined records that failed `rule` (optionally of one source table).

    A filtered, LIMITed query in delta-rs' engine: the rule test is pushed into
    the Parquet scan and the scan stops once `limit` records matched, so the
    engine reads `raw_record` only of the row groups it scanned until then and
    only the `limit` records reach the app, whole (`raw_record` verbatim, `rules`
    joined as "a, b"). Without an ORDER BY the records are the first the scan
    meets, a sample; an order would make the engine read every match's record.
    """
    cols = list(TABLES["silver"]["quarantine"])

    def sql(present: set[str]) -> str:
        select = ", ".join(_sql_name(c) for c in cols if c in present)
        where = f"array_has(rules, {_sql_text(rule)})"
        if source_table:
            where += f" AND source_table = {_sql_text(source_table)}"
        return f"SELECT {select} FROM q WHERE {where} LIMIT {max(0, int(limit))}"

    picked = _query_quarantine(sql)
    if picked is None or picked.num_rows == 0:
        return pd.DataFrame(columns=cols)
    frame = to_pandas(picked)
    frame["rules"] = frame["rules"].map(lambda r: ", ".join(r) if r is not None else "")
    for col in cols:
        if col not in frame.columns:  # a column the writer does not produce (yet)
            frame[col] = pd.Series([None] * len(frame), dtype="object")
    return frame[cols]


# --------------------------------------------------------------------------- live, anomalies


def live_freshness(minutes: pd.DataFrame, now: dt.datetime | None = None) -> dict[str, object]:
    """Is the stream writing? Based on the newest window of gold.live_sales_minute."""
    if minutes.empty or minutes["window_end"].isna().all():
        return {"state": "never run", "last_window_end": None, "age_seconds": None, "windows": 0}
    last = pd.Timestamp(minutes["window_end"].max())
    if last.tzinfo is None:
        last = last.tz_localize("UTC")
    now_ts = pd.Timestamp(now or dt.datetime.now(dt.UTC))
    age = (now_ts - last).total_seconds()
    state = "live" if age <= 180 else "stale"
    return {
        "state": state,
        "last_window_end": last.to_pydatetime(),
        "age_seconds": age,
        "windows": len(minutes),
    }


LIVE_WINDOW_MINUTES = 5


def live_kpis(
    minutes: pd.DataFrame, now: dt.datetime, window_minutes: int = LIVE_WINDOW_MINUTES
) -> dict[str, object]:
    """Rolling live totals from gold.live_sales_minute (window_start naive UTC).

    "Last N min" = the minute in progress plus the N - 1 minutes before it, so
    the number moves while orders flow instead of waiting for a minute to
    close; "last hour" = the same over 60 minutes. The minute in progress is
    partial: the Live page draws it as such.
    """
    stamp = pd.Timestamp(now)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    current = stamp.floor("min")

    def totals(span: int) -> dict[str, object]:
        if minutes.empty:
            rows = minutes
        else:
            starts = pd.to_datetime(minutes["window_start"])
            rows = minutes[starts >= current - pd.Timedelta(minutes=span - 1)]
        orders = int(pd.to_numeric(rows["orders"]).sum()) if len(rows) else 0
        revenue = float(pd.to_numeric(rows["net_revenue"]).sum()) if len(rows) else 0.0
        return {
            "orders": orders,
            "net_revenue": round(revenue, 2),
            "avg_order_value": round(revenue / orders, 2) if orders else None,
        }

    return {
        "window_minutes": window_minutes,
        "current_minute": current.to_pydatetime(),
        "recent": totals(window_minutes),
        "hour": totals(60),
    }


def anomaly_band(anomalies: pd.DataFrame) -> pd.DataFrame:
    """gold.revenue_anomalies in date order, its band as floats for the chart.

    The band [lower_bound, upper_bound] and the flags are Gold's (see
    pipeline/gold/revenue_anomalies.py); nothing is recomputed here.
    """
    frame = anomalies.sort_values("order_date").reset_index(drop=True).copy()
    for col in ("net_revenue", "expected_revenue", "lower_bound", "upper_bound", "score"):
        if col in frame.columns:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    if "is_anomaly" in frame.columns:
        frame["is_anomaly"] = frame["is_anomaly"].fillna(False).astype(bool)
    return frame


INJECTED_COLUMNS = ("order_date", "kind", "direction", "factor")


def injected_anomalies(manifests: Sequence[dict[str, object]]) -> pd.DataFrame:
    """The anomaly days the generator injected (manifest ``anomalies``), one row per day.

    A lake of the user's own files has none: the frame is then empty.
    """
    rows = [
        {
            "order_date": pd.Timestamp(str(a["date"])),
            "kind": str(a["kind"]),
            "direction": str(a["direction"]),
            "factor": float(a["factor"]),
        }
        for m in manifests
        for a in (m.get("anomalies") or [])  # type: ignore[union-attr]
    ]
    return pd.DataFrame(rows, columns=list(INJECTED_COLUMNS))


def injected_vs_found(anomalies: pd.DataFrame, injected: pd.DataFrame) -> pd.DataFrame:
    """Each injected day beside what gold.revenue_anomalies says of it.

    found = flagged in the injected direction; scored = the day had a band
    (the first weeks of a lake have too little history to judge).
    """
    cols = [*INJECTED_COLUMNS, "net_revenue", "expected_revenue", "scored", "found"]
    if injected.empty:
        return pd.DataFrame(columns=cols)
    gold = anomaly_band(anomalies)
    if gold.empty:
        gold = pd.DataFrame(columns=list(TABLES["gold"]["revenue_anomalies"]))
    gold = gold.assign(order_date=pd.to_datetime(gold["order_date"]))
    merged = injected.merge(
        gold[["order_date", "net_revenue", "expected_revenue", "lower_bound", "is_anomaly"]]
        .rename(columns={"is_anomaly": "_flagged"})
        .assign(_found_direction=gold["direction"]),
        on="order_date",
        how="left",
    )
    merged["scored"] = merged["lower_bound"].notna()
    merged["found"] = merged["_flagged"].eq(True) & (
        merged["_found_direction"] == merged["direction"]
    )
    return merged.sort_values("order_date", ignore_index=True)[cols]


# --------------------------------------------------------------------------- RFM


def rfm_segments(rfm: pd.DataFrame) -> pd.DataFrame:
    """Customers and revenue per RFM segment, in the contract's segment order."""
    cols = ["rfm_segment", "customers", "monetary", "revenue_share", "avg_recency_days"]
    if rfm.empty:
        return pd.DataFrame(columns=cols)
    out = (
        rfm.groupby("rfm_segment")
        .agg(
            customers=("customer_id", "count"),
            monetary=("monetary", "sum"),
            avg_recency_days=("recency_days", "mean"),
        )
        .reset_index()
    )
    total = out["monetary"].sum()
    out["revenue_share"] = out["monetary"] / total if total else 0.0
    order = {name: i for i, name in enumerate(RFM_SEGMENTS)}
    out["_o"] = out["rfm_segment"].map(order).fillna(len(order))
    return out.sort_values("_o", ignore_index=True)[cols]


def rfm_grid(rfm: pd.DataFrame) -> pd.DataFrame:
    """Customers per (r_score, f_score): a 5x5 grid, rows r = 5..1, columns f = 1..5."""
    grid = pd.DataFrame(0, index=range(5, 0, -1), columns=range(1, 6))
    if rfm.empty:
        return grid
    counts = rfm.groupby(["r_score", "f_score"]).size()
    for (r, f), n in counts.items():
        if r in grid.index and f in grid.columns:
            grid.loc[r, f] = int(n)
    return grid


def rfm_histogram(rfm: pd.DataFrame, field: str) -> pd.DataFrame:
    return histogram(rfm[field]) if field in rfm.columns else histogram(pd.Series([], dtype=float))


def rank_customers(rfm: pd.DataFrame) -> pd.DataFrame:
    """Customers by monetary value, highest first (the order the search table shows)."""
    return rfm.sort_values(["monetary", "customer_id"], ascending=[False, True], ignore_index=True)


def search_customers(rfm: pd.DataFrame, text: str, segments: Sequence[str] = ()) -> pd.DataFrame:
    """Customers whose id contains `text` (case-insensitive, literal), in the given segments."""
    frame = rfm
    if segments:
        frame = frame[frame["rfm_segment"].isin(list(segments))]
    text = text.strip()
    if text:
        ids = frame["customer_id"].astype(str)
        frame = frame[ids.str.contains(text, case=False, regex=False)]
    return frame


def histogram(values: pd.Series, bins: int = 40) -> pd.DataFrame:
    """Bin counts computed here, so the browser gets 40 bars rather than every value."""
    numbers = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)
    if numbers.size == 0:
        return pd.DataFrame({"left": [], "right": [], "count": []})
    counts, edges = np.histogram(numbers, bins=bins)
    return pd.DataFrame({"left": edges[:-1], "right": edges[1:], "count": counts})


# --------------------------------------------------------------------------- sales

SALES_TABLES = ("sales_cells", "sales_orders", "product_sales")
_SALES_DIMS = (  # filter field of SalesFilter, column of the Gold tables
    ("categories", "category"),
    ("countries", "country"),
    ("channels", "channel"),
    ("statuses", "status"),
)
_SALES_MONEY = ("gross_revenue", "net_revenue", "cost", "costed_net_revenue")
DAILY_COLUMNS = (
    "order_date",
    "orders",
    "units",
    "gross_revenue",
    "net_revenue",
    "cost",
    "gross_margin",
    "cancelled_orders",
    "returned_orders",
)


@dataclass(frozen=True)
class SalesFilter:
    """A date range (inclusive) and dimension filters; an empty tuple means all."""

    start: dt.date
    end: dt.date
    categories: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()

    @property
    def has_dimensions(self) -> bool:
        return bool(self.categories or self.countries or self.channels or self.statuses)

    def previous(self) -> SalesFilter:
        """The period of the same length just before this one, same dimensions."""
        days = (self.end - self.start).days + 1
        return SalesFilter(
            self.start - dt.timedelta(days=days),
            self.start - dt.timedelta(days=1),
            self.categories,
            self.countries,
            self.channels,
            self.statuses,
        )


def _sales_frame(table: pa.Table) -> pd.DataFrame:
    """A sales Gold table as pandas: strings as categoricals (small in memory), dates as
    datetime64, money as float64 cents (exact integers: sums stay exact), nulls as NaN."""
    for name in _SALES_MONEY:
        if name in table.column_names:
            cents = pc.round(pc.multiply(pc.cast(table.column(name), pa.float64()), 100.0))
            table = table.set_column(table.column_names.index(name), name, cents)
    # split_blocks + self_destruct: each Arrow column is freed once converted (half the peak)
    return table.to_pandas(
        date_as_object=False, strings_to_categorical=True, split_blocks=True, self_destruct=True
    )


def _category_sets(table: pa.Table) -> tuple[pa.Table, list[frozenset[str]]]:
    """sales_orders with its `categories` list replaced by `set_code`, an index into the
    returned list of distinct sets (a few hundred), so a category filter is one lookup."""
    lists = table.column("categories").combine_chunks()
    keys = pc.binary_join(lists, "\x1f")
    codes = keys.dictionary_encode().indices.to_numpy(zero_copy_only=False)
    _, first = np.unique(codes, return_index=True)
    sets = [frozenset(v or ()) for v in lists.take(pa.array(first)).to_pylist()]
    index = table.column_names.index("categories")
    return table.set_column(index, "set_code", pa.array(codes.astype(np.int32))), sets


def _margin(costed_net: pd.Series, cost: pd.Series) -> pd.Series:
    """Gross margin from cent sums over the lines of known cost; NaN where there is none
    (docs/contract.md §5: a margin is never invented for an unknown cost)."""
    return (costed_net - cost) / 100


def _sum(frame: pd.DataFrame, by: str | list[str], columns: Sequence[str]) -> pd.DataFrame:
    """Sums per group; a sum of nothing but nulls stays null (cost of unknown-cost lines)."""
    grouped = frame.groupby(by, observed=True, sort=False)[list(columns)]
    return grouped.sum(min_count=1)


class SalesGold:
    """The Sales page's Gold tables (gold.sales_cells, sales_orders, product_sales).

    Spark builds them (pipeline/gold/sales_cells.py documents the grain and the
    definitions); this class only filters rows and sums columns, so every number
    shown is a sum of Gold values:

    - money, units, cost and margin: sums of sales_cells (or product_sales);
    - orders: sales_orders rows whose category set overlaps the category filter
      (all orders without one, as gold.daily_sales counts them), so an order
      with lines in two chosen categories counts once; per category, the
      sales_cells `orders` (orders with a line in that category);
    - cancelled / returned: sales_orders rows of that status.
    """

    def __init__(self, tables: Callable[[str], pa.Table | None]) -> None:
        """`tables(name)`: one of SALES_TABLES as Arrow (None: not built yet, read as empty).

        Called for one table at a time and converted at once, so that only one
        table's Arrow copy is alive; the freed Arrow memory is then returned to
        the system (a 1M-order lake's three tables raise the peak to ~700 MB).
        """

        def arrow(name: str) -> pa.Table:
            table = tables(name)
            return table if table is not None else catalog.arrow_schema("gold", name).empty_table()

        self.cells = _sales_frame(arrow("sales_cells"))
        sales_orders, self._sets = _category_sets(arrow("sales_orders"))
        self.orders = _sales_frame(sales_orders)
        del sales_orders
        self.products = _sales_frame(arrow("product_sales"))
        pa.default_memory_pool().release_unused()
        # the month of each cell, once (the category share chart groups by it)
        self.cells["month"] = self.cells["order_date"].to_numpy().astype("datetime64[M]")
        self._memo: dict[tuple[int, SalesFilter, bool], pd.DataFrame] = {}
        self._memo_lock = threading.Lock()
        self.empty = self.orders.empty and self.cells.empty
        dates = self.orders["order_date"]
        self.min_date = None if dates.empty else dates.min().date()
        self.max_date = None if dates.empty else dates.max().date()
        self.categories = self._options(self.cells, "category")
        self.countries = self._options(self.orders, "country")
        self.channels = self._options(self.orders, "channel")
        self.statuses = self._options(self.orders, "status")

    @staticmethod
    def _options(frame: pd.DataFrame, column: str) -> list[str]:
        if frame.empty:
            return []
        return sorted(str(v) for v in frame[column].dropna().unique())

    # -- selection

    def _rows(self, frame: pd.DataFrame, f: SalesFilter, revenue: bool = False) -> pd.DataFrame:
        """The rows of a Gold table inside the filter (categories via the set for orders).

        A page asks for the same rows several times per rerun (KPIs, trend,
        breakdowns), so the last few selections are kept; a selection of every
        row is the table itself, not a copy. Callers must not modify the result.
        """
        key = (id(frame), f, revenue)
        with self._memo_lock:
            hit = self._memo.get(key)
        if hit is not None:
            return hit
        mask = self._mask(frame, f, revenue)
        rows = frame if mask.all() else frame[mask]
        with self._memo_lock:
            while len(self._memo) >= 8:
                self._memo.pop(next(iter(self._memo)))
            self._memo[key] = rows
        return rows

    def _mask(self, frame: pd.DataFrame, f: SalesFilter, revenue: bool) -> np.ndarray:
        dates = frame["order_date"]
        mask = (dates >= pd.Timestamp(f.start)) & (dates <= pd.Timestamp(f.end))
        for field_name, column in _SALES_DIMS:
            chosen = getattr(f, field_name)
            if not chosen:
                continue
            if column in frame.columns:
                mask &= frame[column].isin(chosen)
            elif column == "category" and "set_code" in frame.columns:
                wanted = set(chosen)
                overlaps = np.array([bool(s & wanted) for s in self._sets] or [False])
                mask &= overlaps[frame["set_code"].to_numpy()]
        if revenue and "is_revenue_bearing" in frame.columns:
            mask &= frame["is_revenue_bearing"]
        return mask.to_numpy()

    def _orders_by(self, f: SalesFilter, by: str, status: str | None = None) -> pd.Series:
        """Distinct orders (revenue-bearing, or of one status) per `by`, from sales_orders."""
        rows = self._rows(self.orders, f, revenue=status is None)
        if status is not None:
            rows = rows[rows["status"] == status]
        return rows.groupby(by, observed=True)["orders"].sum()

    # -- aggregates

    def daily(self, f: SalesFilter) -> pd.DataFrame:
        """One row per day of the range: orders, units, revenue, cost, margin, cancelled,
        returned. cost and gross_margin cover the lines whose cost is known (margin NaN on
        a day without one)."""
        span = max((f.end - f.start).days + 1, 0)
        days = pd.date_range(pd.Timestamp(f.start), periods=span, freq="D", unit="ms")
        out = pd.DataFrame({"order_date": days})
        if self.empty or span == 0:
            for col in DAILY_COLUMNS[1:]:
                out[col] = np.zeros(span)
            out["gross_margin"] = np.nan  # no line of known cost
            return out
        index = pd.Index(days, name="order_date")
        lines = _sum(self._rows(self.cells, f), "order_date", ["units", *_SALES_MONEY])
        lines = lines.reindex(index)

        def counts(status: str | None) -> np.ndarray:
            per_day = self._orders_by(f, "order_date", status).reindex(index, fill_value=0)
            return per_day.to_numpy().astype(np.int64)

        out["orders"] = counts(None)
        out["units"] = lines["units"].fillna(0).to_numpy().astype(np.int64)
        out["gross_revenue"] = lines["gross_revenue"].fillna(0).to_numpy() / 100
        out["net_revenue"] = lines["net_revenue"].fillna(0).to_numpy() / 100
        out["cost"] = lines["cost"].fillna(0).to_numpy() / 100
        out["gross_margin"] = _margin(lines["costed_net_revenue"], lines["cost"]).to_numpy()
        out["cancelled_orders"] = counts("cancelled")
        out["returned_orders"] = counts("returned")
        return out

    def by_dimension(self, f: SalesFilter, dimension: str) -> pd.DataFrame:
        """Orders, units, revenue and margin per category, country or channel."""
        cols = [dimension, "orders", "units", "net_revenue", "gross_margin", "margin_pct"]
        if dimension not in ("category", "country", "channel"):
            raise ValueError(f"unknown dimension {dimension}")
        if self.empty:
            return pd.DataFrame(columns=cols)
        cells = self._rows(self.cells, f)
        sums = _sum(cells, dimension, ["units", "net_revenue", "cost", "costed_net_revenue"])
        if dimension == "category":  # orders with a line in the category
            orders = _sum(self._rows(self.cells, f, revenue=True), dimension, ["orders"])
            orders = orders["orders"]
        else:  # every order has one country and channel: sales_orders counts it once
            orders = self._orders_by(f, dimension)
        frame = sums.join(orders.rename("orders"), how="outer")
        frame.index = frame.index.astype(str)
        out = pd.DataFrame(
            {
                dimension: frame.index.to_numpy(dtype=object),
                "orders": frame["orders"].fillna(0).to_numpy().astype(np.int64),
                "units": frame["units"].fillna(0).to_numpy().astype(np.int64),
                "net_revenue": frame["net_revenue"].fillna(0).to_numpy() / 100,
                "gross_margin": _margin(frame["costed_net_revenue"], frame["cost"]).to_numpy(),
            }
        )
        # the margin rate over the revenue whose cost is known (the margin's own lines)
        costed_net = pd.Series(frame["costed_net_revenue"].to_numpy() / 100)
        out["margin_pct"] = out["gross_margin"] / costed_net.replace(0, np.nan)
        out = out[(out["orders"] > 0) | (out["net_revenue"] != 0)]
        out = out.sort_values(["net_revenue", dimension], ascending=[False, True])
        return out.reset_index(drop=True)[cols]

    def top_products(self, f: SalesFilter, limit: int = 10) -> pd.DataFrame:
        """The products with the most net revenue in the filter (gold.product_sales)."""
        cols = [
            "product_id",
            "product_name",
            "category",
            "orders",
            "units",
            "net_revenue",
            "gross_margin",
        ]
        if self.products.empty:
            return pd.DataFrame(columns=cols)
        rows = self._rows(self.products, f)
        sums = _sum(rows, "product_id", ["orders", "units", *_SALES_MONEY[1:]])
        sums = sums[sums["units"] > 0].reset_index()
        sums["product_id"] = sums["product_id"].astype(str)
        top = sums.sort_values(["net_revenue", "product_id"], ascending=[False, True]).head(limit)
        names = rows.groupby("product_id", observed=True)[["product_name", "category"]].first()
        names.index = names.index.astype(str)
        named = top.join(names, on="product_id")
        return pd.DataFrame(
            {
                "product_id": named["product_id"].to_numpy(dtype=object),
                "product_name": named["product_name"].astype(str).to_numpy(dtype=object),
                "category": named["category"].astype(str).to_numpy(dtype=object),
                "orders": named["orders"].to_numpy().astype(np.int64),
                "units": named["units"].to_numpy().astype(np.int64),
                "net_revenue": named["net_revenue"].to_numpy() / 100,
                "gross_margin": _margin(named["costed_net_revenue"], named["cost"]).to_numpy(),
            },
            columns=cols,
        )

    def category_months(self, f: SalesFilter) -> pd.DataFrame:
        """Net revenue, margin and share per month and category (category_sales, filtered)."""
        cols = ["month", "category", "net_revenue", "gross_margin", "revenue_share"]
        if self.empty:
            return pd.DataFrame(columns=cols)
        cells = self._rows(self.cells, f, revenue=True)
        sums = _sum(cells, ["month", "category"], ["net_revenue", "cost", "costed_net_revenue"])
        sums = sums.sort_index().reset_index()
        total = sums.groupby("month")["net_revenue"].transform("sum")
        share = (sums["net_revenue"] / total.where(total != 0)).fillna(0.0)
        return pd.DataFrame(
            {
                "month": sums["month"].to_numpy(),
                "category": sums["category"].astype(str).to_numpy(dtype=object),
                "net_revenue": sums["net_revenue"].fillna(0).to_numpy() / 100,
                "gross_margin": _margin(sums["costed_net_revenue"], sums["cost"]).to_numpy(),
                "revenue_share": share.to_numpy(),
            },
            columns=cols,
        )


def sales_key() -> tuple[str, tuple[tuple[int, int] | None, ...]]:
    """The lake and the Delta versions of the sales Gold tables: a cache key for SalesGold."""
    return settings().lake, tuple(cache_key("gold", t) for t in SALES_TABLES)


def load_sales() -> SalesGold:
    """The sales Gold tables read with delta-rs (uncached: `sales_gold()` keeps them)."""
    return SalesGold(lambda name: read_arrow("gold", name, TABLES["gold"][name]))


_sales_cache: dict[tuple, SalesGold] = {}
_sales_lock = threading.Lock()


def sales_gold() -> SalesGold:
    """The sales Gold tables of their current versions, read once per process and shared.

    Kept here rather than in a Streamlit cache so that they can be read ahead of
    time in a background thread (`prefetch_sales`): on a 1,000,000-order lake
    the read takes about 4 s, which the Sales page would otherwise show on its
    first visit after every run. Concurrent callers wait for one read.
    """
    key = sales_key()
    with _sales_lock:
        sales = _sales_cache.get(key)
        if sales is None:
            sales = load_sales()
            while len(_sales_cache) >= 2:  # the latest version of at most two lakes
                _sales_cache.pop(next(iter(_sales_cache)))
            _sales_cache[key] = sales
        return sales


def prefetch_sales() -> None:
    """Read the sales tables in a daemon thread unless they are ready (returns at once)."""
    if sales_key() in _sales_cache:
        return
    lake = settings().lake

    def load() -> None:
        try:
            if settings().lake == lake:
                sales_gold()
        except Exception as exc:  # the page reads (and reports) them on demand
            log.warning("sales tables prefetch failed: %s", exc)

    threading.Thread(target=load, name="shoplake-prefetch", daemon=True).start()


def sales_daily(sales: SalesGold, f: SalesFilter) -> pd.DataFrame:
    """Daily sales over the filter's range, every day present (zeros where none)."""
    return sales.daily(f)


def _kpi_margin(daily: pd.DataFrame) -> float | None:
    """Gross margin of a period: its days' margins over lines of known cost; None when no
    line of the period has a known cost (never a margin invented from an unknown cost)."""
    total = pd.to_numeric(daily["gross_margin"], errors="coerce").sum(min_count=1)
    return None if pd.isna(total) else round(float(total), 2)


def sales_kpis(daily: pd.DataFrame) -> dict[str, float | None]:
    """Headline numbers of a daily frame (sums of the daily values; AOV = revenue / orders)."""
    if daily.empty:
        return {
            "net_revenue": 0.0,
            "orders": 0,
            "avg_order_value": None,
            "units": 0,
            "gross_margin": None,
            "cancelled_returned": 0,
        }
    net = float(daily["net_revenue"].sum())
    orders = int(daily["orders"].sum())
    return {
        "net_revenue": round(net, 2),
        "orders": orders,
        "avg_order_value": round(net / orders, 2) if orders else None,
        "units": int(daily["units"].sum()),
        "gross_margin": _kpi_margin(daily),
        "cancelled_returned": int(daily["cancelled_orders"].sum() + daily["returned_orders"].sum()),
    }


def resample(daily: pd.DataFrame, grain: str) -> pd.DataFrame:
    """Daily rows summed to 'day', 'week' (starting Monday) or 'month'."""
    if daily.empty or grain == "day":
        return daily
    rule = {"week": "W-MON", "month": "MS"}[grain]
    frame = daily.set_index("order_date")
    numeric = frame.select_dtypes("number")
    if grain == "week":
        out = numeric.resample(rule, label="left", closed="left").sum()
    else:
        out = numeric.resample(rule).sum()
    return out.reset_index()
