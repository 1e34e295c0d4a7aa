"""Read-only access to the lake for the dashboard, without Spark.

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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import storage
from pipeline.config import SOURCES, settings
from pipeline.contract import BRONZE_META
from pipeline.contract import SOURCES as SOURCE_CONTRACT
from pipeline.quality import scores as quality_scores

log = logging.getLogger(__name__)

LAYERS = ("bronze", "silver", "gold")

_BRONZE_META = BRONZE_META[:4]
_SOURCE_COLUMNS = {name: source.columns for name, source in SOURCE_CONTRACT.items()}

# The contract's tables (docs/contract.md §4) and the columns an empty read returns.
TABLES: dict[str, dict[str, tuple[str, ...]]] = {
    "bronze": {
        **{name: _SOURCE_COLUMNS[name] + _BRONZE_META for name in SOURCES},
        "order_events": (),
    },
    "silver": {
        "orders": (),
        "order_items": (),
        "customers": (),
        "products": (),
        "quarantine": (
            "source_table",
            "record_key",
            "rules",
            "raw_record",
            "batch_id",
            "quarantined_at",
        ),
        "dim_customer": (),
        "dim_product": (),
        "dim_date": (),
        "fact_sales": (
            "order_id",
            "line_no",
            "order_date",
            "order_ts",
            "status",
            "is_revenue_bearing",
            "customer_id",
            "product_id",
            "product_name",
            "category",
            "channel",
            "country",
            "quantity",
            "unit_price",
            "discount_pct",
            "line_gross",
            "line_net",
            "line_cost",
        ),
    },
    "gold": {
        "daily_sales": (
            "order_date",
            "orders",
            "units",
            "gross_revenue",
            "net_revenue",
            "avg_order_value",
            "customers",
            "new_customers",
            "cancelled_orders",
            "returned_orders",
        ),
        "category_sales": (
            "month",
            "category",
            "orders",
            "units",
            "net_revenue",
            "gross_margin",
            "revenue_share",
        ),
        "customer_rfm": (
            "customer_id",
            "last_order_date",
            "recency_days",
            "frequency",
            "monetary",
            "r_score",
            "f_score",
            "m_score",
            "rfm_segment",
            "as_of_date",
        ),
        "revenue_anomalies": (
            "order_date",
            "net_revenue",
            "expected_revenue",
            "lower_bound",
            "upper_bound",
            "score",
            "is_anomaly",
            "direction",
        ),
        "dq_results": (
            "run_id",
            "layer",
            "table",
            "rule",
            "action",
            "rows_checked",
            "rows_failed",
            "pass_rate",
            "checked_at",
        ),
        "pipeline_runs": (
            "run_id",
            "step",
            "started_at",
            "finished_at",
            "status",
            "rows_in",
            "rows_out",
            "rows_quarantined",
            "error",
        ),
        "live_sales_minute": (
            "window_start",
            "window_end",
            "orders",
            "units",
            "net_revenue",
            "avg_order_value",
        ),
        "live_alerts": ("window_start", "metric", "value", "baseline", "z_score", "kind"),
    },
}

RFM_SEGMENTS = (
    "champions",
    "loyal",
    "potential_loyalists",
    "new_customers",
    "promising",
    "need_attention",
    "about_to_sleep",
    "cant_lose",
    "at_risk",
    "hibernating",
)

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


def quarantine_rule_counts(quarantine: pa.Table | None) -> pd.DataFrame:
    """Quarantined records per source table and rule (a record counts once per rule)."""
    cols = ["source_table", "rule", "records"]
    if quarantine is None or quarantine.num_rows == 0:
        return pd.DataFrame(columns=cols)
    rules = quarantine.column("rules")
    parents = pc.list_parent_indices(rules)
    flat = pa.table(
        {
            "source_table": pc.take(quarantine.column("source_table"), parents),
            "rule": pc.list_flatten(rules),
        }
    )
    out = flat.group_by(["source_table", "rule"]).aggregate([("rule", "count")])
    frame = out.to_pandas().rename(columns={"rule_count": "records"})
    return frame.sort_values("records", ascending=False, ignore_index=True)[cols]


def quarantine_samples(
    quarantine: pa.Table | None, rule: str, source_table: str | None = None, limit: int = 20
) -> pd.DataFrame:
    """Up to `limit` quarantined records that failed `rule` (optionally of one source table)."""
    cols = list(TABLES["silver"]["quarantine"])
    if quarantine is None or quarantine.num_rows == 0:
        return pd.DataFrame(columns=cols)
    rules = quarantine.column("rules")
    hit = pc.equal(pc.list_flatten(rules), rule)
    rows = pc.unique(pc.filter(pc.list_parent_indices(rules), hit))
    picked = quarantine.take(rows)
    if source_table:
        picked = picked.filter(pc.equal(picked.column("source_table"), source_table))
    picked = picked.slice(0, limit)
    frame = to_pandas(picked.select([c for c in cols if c in picked.column_names]))
    if "rules" in frame.columns:
        frame["rules"] = frame["rules"].map(lambda r: ", ".join(r) if r is not None else "")
    return frame


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


@dataclass(frozen=True)
class SalesFilter:
    """A date range (inclusive) and dimension filters; an empty tuple means all."""

    start: dt.date
    end: dt.date
    categories: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()

    @property
    def has_dimensions(self) -> bool:
        return bool(self.categories or self.countries or self.channels)

    def previous(self) -> SalesFilter:
        """The period of the same length just before this one, same dimensions."""
        days = (self.end - self.start).days + 1
        return SalesFilter(
            self.start - dt.timedelta(days=days),
            self.start - dt.timedelta(days=1),
            self.categories,
            self.countries,
            self.channels,
        )


_EPOCH = dt.date(1970, 1, 1)
_FACT_COLUMNS = (
    "order_id",
    "order_date",
    "status",
    "is_revenue_bearing",
    "product_id",
    "product_name",
    "category",
    "channel",
    "country",
    "quantity",
    "line_gross",
    "line_net",
    "line_cost",
)
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


def _encode(column: pa.ChunkedArray, fill: str) -> tuple[np.ndarray, list[str]]:
    arr = pc.fill_null(pc.cast(column, pa.string()), fill).combine_chunks()
    enc = arr.dictionary_encode()
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int32)
    return codes, enc.dictionary.to_pylist()


def _cents(column: pa.ChunkedArray) -> np.ndarray:
    values = pc.fill_null(pc.cast(column, pa.float64()), 0.0).to_numpy()
    return np.rint(values * 100).astype(np.int64)


class SalesCube:
    """silver.fact_sales pre-aggregated for fast, exact filtered aggregates.

    Built once per table version (2.5M lines for 1M orders: a few seconds; see
    `sales_cube()`). Three small "cell" tables answer almost every question
    without touching the lines again:

    - line cells: revenue-bearing lines summed per (day, category, country,
      channel): units, gross, net, cost;
    - order cells: orders counted per (day, country, channel, status);
    - pair cells: distinct (order, category) pairs per (day, category, country,
      channel, status), i.e. "orders with at least one line in the category".

    Money is summed in integer cents (the contract's totals are sums of
    DECIMAL(18,2) line values, so they come out exact). Orders are always
    counted distinct: with two or more categories selected an order may have
    lines in several of them, so that case (and top products) falls back to
    the order- and line-level arrays, still vectorised.
    """

    def __init__(self, table: pa.Table | None) -> None:
        self.empty = table is None or table.num_rows == 0
        if self.empty:
            table = pa.table({c: pa.array([], pa.string()) for c in _FACT_COLUMNS})
        order_codes, _ = _encode(table.column("order_id"), "")
        self.n_orders = int(order_codes.max()) + 1 if len(order_codes) else 0
        days = pc.cast(pc.cast(table.column("order_date"), pa.date32()), pa.int32())
        line_day = pc.fill_null(days, 0).to_numpy(zero_copy_only=False).astype(np.int32)
        status_codes, self.statuses = _encode(table.column("status"), "unknown")
        rev = pc.fill_null(pc.cast(table.column("is_revenue_bearing"), pa.bool_()), False)
        line_rev = rev.to_numpy(zero_copy_only=False).astype(bool)
        cat, self.categories = _encode(table.column("category"), "Unknown")
        country, self.countries = _encode(table.column("country"), "Unknown")
        channel, self.channels = _encode(table.column("channel"), "Unknown")
        product, self.product_ids = _encode(table.column("product_id"), "UNKNOWN")
        self.product_names: list[str] = []
        self.product_category = np.zeros(len(self.product_ids), dtype=np.int32)
        if len(product):
            last = np.zeros(len(self.product_ids), dtype=np.int64)
            last[product] = np.arange(len(product))
            names = pc.fill_null(pc.cast(table.column("product_name"), pa.string()), "")
            self.product_names = names.take(pa.array(last)).to_pylist()
            self.product_category = cat[last]

        # order level (every line of an order carries the same order attributes)
        n = self.n_orders
        self.o_day = np.zeros(n, dtype=np.int32)
        self.o_country = np.zeros(n, dtype=np.int32)
        self.o_channel = np.zeros(n, dtype=np.int32)
        self.o_status = np.zeros(n, dtype=np.int32)
        self.o_day[order_codes] = line_day
        self.o_country[order_codes] = country
        self.o_channel[order_codes] = channel
        self.o_status[order_codes] = status_codes
        # whether a status brings revenue, as the fact table says (is_revenue_bearing)
        s = max(len(self.statuses), 1)
        self.rev_status = np.bincount(status_codes[line_rev], minlength=s)[:s] > 0

        # line level: revenue-bearing lines only (the others carry no revenue)
        keep = line_rev
        self.l_order = order_codes[keep]
        self.l_day = line_day[keep]
        self.l_cat = cat[keep]
        self.l_product = product[keep]
        qty = pc.fill_null(pc.cast(table.column("quantity"), pa.int64()), 0)
        self.l_qty = qty.to_numpy(zero_copy_only=False)[keep].astype(np.float64)
        # integer cents held as float64: exact below 2**53, and what bincount weights want
        self.l_gross = _cents(table.column("line_gross"))[keep].astype(np.float64)
        self.l_net = _cents(table.column("line_net"))[keep].astype(np.float64)
        self.l_cost = _cents(table.column("line_cost"))[keep].astype(np.float64)
        # a null line_cost is an unknown cost (unknown product): margins leave such lines out
        costed = pc.is_valid(table.column("line_cost")).to_numpy(zero_copy_only=False)[keep]
        self.l_costed = costed.astype(np.float64)
        self.l_costed_net = np.where(costed, self.l_net, 0.0)

        # calendar: day offsets and the month each day falls in
        self.day0 = int(line_day.min()) if n else 0
        self.span = int(line_day.max()) - self.day0 + 1 if n else 0
        self.min_date = _EPOCH + dt.timedelta(days=self.day0) if n else None
        self.max_date = _EPOCH + dt.timedelta(days=self.day0 + self.span - 1) if n else None
        month_of = np.arange(self.span) + self.day0
        month_of = month_of.astype("datetime64[D]").astype("datetime64[M]")
        self.months = np.unique(month_of)
        self.month_of_day = np.searchsorted(self.months, month_of).astype(np.int32)

        # distinct (order, category) pairs, all statuses
        k = max(len(self.categories), 1)
        pair_key = order_codes.astype(np.int64) * k + cat
        if n * k <= 200_000_000:  # a bitmap is O(n); np.unique would sort
            seen = np.zeros(n * k, dtype=bool)
            seen[pair_key] = True
            pair = np.flatnonzero(seen)
        else:
            pair = np.unique(pair_key)
        self.p_order = (pair // k).astype(np.int32)
        self.p_cat = (pair % k).astype(np.int32)

        # the cells
        dims = {
            "day": self.span,
            "cat": k,
            "country": max(len(self.countries), 1),
            "channel": max(len(self.channels), 1),
            "status": s,
        }
        l_country = self.o_country[self.l_order]
        l_channel = self.o_channel[self.l_order]
        self.lc = _cells(
            dims,
            {
                "day": self.l_day - self.day0,
                "cat": self.l_cat,
                "country": l_country,
                "channel": l_channel,
            },
            {
                "qty": self.l_qty,
                "gross": self.l_gross,
                "net": self.l_net,
                "cost": self.l_cost,
                "costed_net": self.l_costed_net,
                "costed": self.l_costed,
            },
        )
        self.oc = _cells(
            dims,
            {
                "day": self.o_day - self.day0,
                "country": self.o_country,
                "channel": self.o_channel,
                "status": self.o_status,
            },
            {},
        )
        self.pc = _cells(
            dims,
            {
                "day": self.o_day[self.p_order] - self.day0,
                "cat": self.p_cat,
                "country": self.o_country[self.p_order],
                "channel": self.o_channel[self.p_order],
                "status": self.o_status[self.p_order],
            },
            {},
        )
        self._memo: dict[SalesFilter, tuple[np.ndarray, np.ndarray]] = {}
        self._memo_lock = threading.Lock()

    # -- selection

    @staticmethod
    def _allowed(names: list[str], chosen: tuple[str, ...]) -> np.ndarray:
        if not chosen:
            return np.ones(max(len(names), 1), dtype=bool)
        wanted = set(chosen)
        return np.array([name in wanted for name in names], dtype=bool)

    def _status_ok(self, statuses: str) -> np.ndarray:
        """'revenue', 'cancelled' or 'returned' as a mask over status codes."""
        if statuses == "revenue":
            return self.rev_status
        return np.array([s == statuses for s in self.statuses] or [False], dtype=bool)

    def _cell_mask(self, cells: dict[str, np.ndarray], f: SalesFilter) -> np.ndarray:
        start = (f.start - _EPOCH).days - self.day0
        end = (f.end - _EPOCH).days - self.day0
        mask = (cells["day"] >= start) & (cells["day"] <= end)
        if f.countries:
            mask &= self._allowed(self.countries, f.countries)[cells["country"]]
        if f.channels:
            mask &= self._allowed(self.channels, f.channels)[cells["channel"]]
        if f.categories and "cat" in cells:
            mask &= self._allowed(self.categories, f.categories)[cells["cat"]]
        return mask

    def _select(self, f: SalesFilter) -> tuple[np.ndarray, np.ndarray]:
        """(orders matching the filter, revenue lines matching it), memoised: the slow path."""
        with self._memo_lock:
            hit = self._memo.get(f)
        if hit is not None:
            return hit
        start = (f.start - _EPOCH).days
        end = (f.end - _EPOCH).days
        order_ok = (self.o_day >= start) & (self.o_day <= end)
        if f.countries:
            order_ok &= self._allowed(self.countries, f.countries)[self.o_country]
        if f.channels:
            order_ok &= self._allowed(self.channels, f.channels)[self.o_channel]
        cat_ok = self._allowed(self.categories, f.categories)
        if f.categories:
            pair_ok = order_ok[self.p_order] & cat_ok[self.p_cat]
            orders = np.zeros(self.n_orders, dtype=bool)
            orders[self.p_order[pair_ok]] = True
        else:
            orders = order_ok
        lines = order_ok[self.l_order]
        if f.categories:
            lines &= cat_ok[self.l_cat]
        with self._memo_lock:
            if len(self._memo) >= 4:
                self._memo.pop(next(iter(self._memo)))
            self._memo[f] = (orders, lines)
        return orders, lines

    def _order_counts(self, f: SalesFilter, by: str, statuses: str, size: int) -> np.ndarray:
        """Distinct orders matching the filter and statuses, counted per `by`.

        by: 'day' (offset from day0), 'country', 'channel' or 'cat'.
        """
        status_ok = self._status_ok(statuses)
        if by == "cat" or len(f.categories) == 1:
            cells = self.pc  # one category: an order has at most one pair in it
        elif not f.categories:
            cells = self.oc
        else:  # several categories: an order may match through several, count it once
            orders, _ = self._select(f)
            hit = orders & status_ok[self.o_status]
            key = {
                "day": self.o_day - self.day0,
                "country": self.o_country,
                "channel": self.o_channel,
            }[by]
            return np.bincount(key[hit], minlength=size)[:size]
        mask = self._cell_mask(cells, f) & status_ok[cells["status"]]
        return np.bincount(cells[by][mask], weights=cells["n"][mask], minlength=size)[:size]

    def _line_sums(self, f: SalesFilter, by: str, size: int) -> dict[str, np.ndarray]:
        cells = self.lc
        mask = self._cell_mask(cells, f)
        key = cells[by][mask] if by != "month" else self.month_of_day[cells["day"][mask]]
        return {
            m: np.bincount(key, weights=cells[m][mask], minlength=size)[:size]
            for m in ("qty", "gross", "net", "cost", "costed_net", "costed")
        }

    # -- aggregates

    def daily(self, f: SalesFilter) -> pd.DataFrame:
        """One row per day of the range: orders, units, revenue, cost, margin, cancelled,
        returned. cost and gross_margin cover the lines whose cost is known (margin NaN on
        a day without one)."""
        start = (f.start - _EPOCH).days
        span = max((f.end - f.start).days + 1, 0)
        dates = pd.to_datetime(np.arange(start, start + span).astype("datetime64[D]"))
        out = pd.DataFrame({"order_date": dates})
        if self.empty or span == 0:
            for col in DAILY_COLUMNS[1:]:
                out[col] = np.zeros(span)
            out["gross_margin"] = np.nan  # no line of known cost
            return out
        # cells count days from day0; the range may start before or end after the data
        offset = start - self.day0
        size = max(self.span, offset + span, 0)
        lo, hi = max(offset, 0), offset + span

        def window(values: np.ndarray) -> np.ndarray:
            padded = np.zeros(span)
            if hi > lo:
                padded[lo - offset : hi - offset] = values[lo:hi]
            return padded

        sums = self._line_sums(f, "day", size)
        out["orders"] = window(self._order_counts(f, "day", "revenue", size)).astype(np.int64)
        out["units"] = window(sums["qty"]).astype(np.int64)
        out["gross_revenue"] = window(sums["gross"]) / 100
        out["net_revenue"] = window(sums["net"]) / 100
        out["cost"] = window(sums["cost"]) / 100
        out["gross_margin"] = _margin(
            window(sums["costed_net"]), window(sums["cost"]), window(sums["costed"])
        )
        for status, col in (("cancelled", "cancelled_orders"), ("returned", "returned_orders")):
            out[col] = window(self._order_counts(f, "day", status, size)).astype(np.int64)
        return out

    def by_dimension(self, f: SalesFilter, dimension: str) -> pd.DataFrame:
        """Orders, units, revenue and margin per category, country or channel."""
        cols = [dimension, "orders", "units", "net_revenue", "gross_margin", "margin_pct"]
        key = {"category": "cat", "country": "country", "channel": "channel"}.get(dimension)
        if key is None:
            raise ValueError(f"unknown dimension {dimension}")
        if self.empty:
            return pd.DataFrame(columns=cols)
        names = {"cat": self.categories, "country": self.countries, "channel": self.channels}[key]
        k = len(names)
        sums = self._line_sums(f, key, k)
        out = pd.DataFrame(
            {
                dimension: names,
                "orders": self._order_counts(f, key, "revenue", k).astype(np.int64),
                "units": sums["qty"].astype(np.int64),
                "net_revenue": sums["net"] / 100,
                "gross_margin": _margin(sums["costed_net"], sums["cost"], sums["costed"]),
            }
        )
        # the margin rate over the revenue whose cost is known (the margin's own lines)
        costed_net = pd.Series(sums["costed_net"] / 100)
        out["margin_pct"] = out["gross_margin"] / costed_net.replace(0, np.nan)
        out = out[(out["orders"] > 0) | (out["net_revenue"] != 0)]
        return out.sort_values("net_revenue", ascending=False, ignore_index=True)[cols]

    def top_products(self, f: SalesFilter, limit: int = 10) -> pd.DataFrame:
        cols = ["product_id", "product_name", "category", "units", "net_revenue", "gross_margin"]
        if self.empty:
            return pd.DataFrame(columns=cols)
        _, lines = self._select(f)
        k = len(self.product_ids)
        prod = self.l_product[lines]
        net = np.bincount(prod, weights=self.l_net[lines], minlength=k)
        cost = np.bincount(prod, weights=self.l_cost[lines], minlength=k)
        costed_net = np.bincount(prod, weights=self.l_costed_net[lines], minlength=k)
        costed = np.bincount(prod, weights=self.l_costed[lines], minlength=k)
        units = np.bincount(prod, weights=self.l_qty[lines], minlength=k)
        top = [int(i) for i in np.argsort(-net, kind="stable")[:limit] if units[i] > 0]
        return pd.DataFrame(
            {
                "product_id": [self.product_ids[i] for i in top],
                "product_name": [self.product_names[i] for i in top],
                "category": [self.categories[self.product_category[i]] for i in top],
                "units": units[top].astype(np.int64),
                "net_revenue": net[top] / 100,
                "gross_margin": _margin(costed_net[top], cost[top], costed[top]),
            },
            columns=cols,
        )

    def category_months(self, f: SalesFilter) -> pd.DataFrame:
        """Net revenue, margin and share per month and category (category_sales, filtered)."""
        cols = ["month", "category", "net_revenue", "gross_margin", "revenue_share"]
        if self.empty:
            return pd.DataFrame(columns=cols)
        k, m = len(self.categories), len(self.months)
        cells = self.lc
        mask = self._cell_mask(cells, f)
        cell = self.month_of_day[cells["day"][mask]].astype(np.int64) * k + cells["cat"][mask]
        net = np.bincount(cell, weights=cells["net"][mask], minlength=m * k).reshape(m, k)
        cost = np.bincount(cell, weights=cells["cost"][mask], minlength=m * k).reshape(m, k)
        costed_net, costed = (
            np.bincount(cell, weights=cells[c][mask], minlength=m * k).reshape(m, k)
            for c in ("costed_net", "costed")
        )
        lines_per = np.bincount(cell, weights=cells["n"][mask], minlength=m * k).reshape(m, k)
        month_idx, cat_idx = np.nonzero(lines_per)
        total = net.sum(axis=1)
        share = np.divide(
            net[month_idx, cat_idx],
            total[month_idx],
            out=np.zeros(len(month_idx)),
            where=total[month_idx] != 0,
        )
        return pd.DataFrame(
            {
                "month": pd.to_datetime(self.months[month_idx].astype("datetime64[D]")),
                "category": np.asarray(self.categories, dtype=object)[cat_idx],
                "net_revenue": net[month_idx, cat_idx] / 100,
                "gross_margin": _margin(
                    costed_net[month_idx, cat_idx],
                    cost[month_idx, cat_idx],
                    costed[month_idx, cat_idx],
                ),
                "revenue_share": share,
            },
            columns=cols,
        )


def _margin(costed_net: np.ndarray, cost: np.ndarray, costed: np.ndarray) -> np.ndarray:
    """Gross margin from cent sums over the lines of known cost; NaN where there is none
    (docs/contract.md §5: a margin is never invented for an unknown cost)."""
    return np.where(
        np.asarray(costed) > 0, (np.asarray(costed_net) - np.asarray(cost)) / 100, np.nan
    )


def _cells(
    sizes: dict[str, int], keys: dict[str, np.ndarray], sums: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Group rows by the given integer keys: one entry per non-empty cell.

    Returns each key column, `n` (rows per cell) and each summed column. A dense
    bincount over the key space is O(rows); a very large key space (many
    countries x categories) falls back to np.unique.
    """
    names = list(keys)
    flat = np.zeros(len(next(iter(keys.values()))), dtype=np.int64)
    space = 1
    for name in names:
        flat = flat * sizes[name] + keys[name].astype(np.int64)
        space *= sizes[name]
    if space <= 20_000_000:
        counts = np.bincount(flat, minlength=space)
        ids = np.flatnonzero(counts)
        index = np.zeros(space, dtype=np.int64)
        index[ids] = np.arange(len(ids))
        inverse = index[flat]
        n = counts[ids]
    else:
        ids, inverse, n = np.unique(flat, return_inverse=True, return_counts=True)
    out: dict[str, np.ndarray] = {"n": n.astype(np.float64)}
    rest = ids.copy()
    for name in reversed(names):
        out[name] = (rest % sizes[name]).astype(np.int32)
        rest //= sizes[name]
    for name, values in sums.items():
        out[name] = np.bincount(inverse, weights=values, minlength=len(ids))
    return out


_cube_lock = threading.Lock()
_cubes: dict[tuple[str, tuple[int, int] | None], SalesCube] = {}


def sales_cube() -> SalesCube:
    """The SalesCube of the current silver.fact_sales version, built once per process.

    Kept here rather than in a Streamlit cache so that it can be built ahead
    of time in a background thread (`prefetch_sales_cube`): after a run, or
    when the app starts, the Sales page then finds it ready. Concurrent callers
    wait for one build instead of building twice.
    """
    key = (settings().lake, cache_key("silver", "fact_sales"))
    with _cube_lock:
        cube = _cubes.get(key)
        if cube is None:
            cube = SalesCube(read_arrow("silver", "fact_sales", _FACT_COLUMNS))
            while len(_cubes) >= 2:  # the latest version of at most two lakes
                _cubes.pop(next(iter(_cubes)))
            _cubes[key] = cube
        return cube


def sales_cube_ready() -> bool:
    return (settings().lake, cache_key("silver", "fact_sales")) in _cubes


def prefetch_sales_cube() -> None:
    """Build the sales cube in a daemon thread unless it is ready (returns at once)."""
    if sales_cube_ready():
        return
    lake = settings().lake

    def build() -> None:
        try:
            if settings().lake == lake:
                sales_cube()
        except Exception as exc:  # the page will build (and report) it on demand
            log.warning("sales cube prefetch failed: %s", exc)

    threading.Thread(target=build, name="shoplake-prefetch", daemon=True).start()


def sales_daily(cube: SalesCube, daily_sales: pd.DataFrame, f: SalesFilter) -> pd.DataFrame:
    """Daily sales over the filter's range.

    Without a category, country or channel filter the numbers are gold.daily_sales
    itself (the contract's orders include revenue-bearing orders whose items were
    all quarantined, which fact_sales has no line for); cost comes from the fact
    lines. With a dimension filter they are computed from silver.fact_sales:
    orders = revenue-bearing orders with at least one matching line.
    """
    computed = cube.daily(f)
    if f.has_dimensions or daily_sales.empty:
        return computed
    gold = daily_sales.copy()
    gold["order_date"] = pd.to_datetime(gold["order_date"])
    start, end = pd.Timestamp(f.start), pd.Timestamp(f.end)
    gold = gold[(gold["order_date"] >= start) & (gold["order_date"] <= end)]
    from_lines = ("cost", "gross_margin")
    merged = computed[["order_date", *from_lines]].merge(
        gold[[c for c in DAILY_COLUMNS if c not in from_lines]], on="order_date", how="left"
    )
    for col in DAILY_COLUMNS[1:]:
        if col not in from_lines:
            merged[col] = pd.to_numeric(merged[col], errors="coerce").fillna(0)
    return merged[list(DAILY_COLUMNS)]


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
