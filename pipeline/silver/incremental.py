"""Incremental Silver: refine only the keys that new Bronze files touch.

Why: recomputing all of Bronze on every run makes a 1 % batch cost as much as
the first load. A record's fate depends only on the Bronze records with the
same key (exact duplicates share every value, versions compete within a
key), so refining *every* Bronze record of each touched key, and nothing
else, gives exactly the rows a full recompute would give for those keys; all
other keys keep the rows they have. Order items also depend on which orders
are in Silver, so an item key is touched as well when new order records for
its order arrive.

The state (``silver._refine_state``, one row appended per refine) names the
Bronze files already covered, the cumulative fate counts and a fingerprint
of the rules. It is written in one commit after the Silver tables, so a run
killed in between simply refines the same files again (the MERGE is
idempotent). A full recompute happens when there is no state, the rules
changed, a covered file left Bronze, the target table is missing, or
``run --full-refresh`` (or SHOPLAKE_FULL_REFRESH=1) asks for it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline import catalog, config, lake
from pipeline.config import settings
from pipeline.quality.expectations import Expectation

STATE_TABLE = "_refine_state"
LOGIC_VERSION = "1"  # bump when refine logic changes in a way old Silver rows must not keep
BROADCAST_LIMIT = 2_000_000

STATE_SCHEMA = catalog.spark_schema("silver", "_refine_state")


TOUCHED_TABLE = "_touched_keys"
TOUCHED_SCHEMA = catalog.spark_schema("silver", "_touched_keys")


@dataclass(frozen=True)
class State:
    files: frozenset[str]
    upstream_files: frozenset[str]
    counts: dict[str, int]
    fingerprint: str
    run_id: str = ""
    versions: dict[str, int] | None = None


@dataclass(frozen=True)
class Plan:
    full: bool
    reason: str
    files: frozenset[str]  # every Bronze file of the source now
    upstream_files: frozenset[str]
    new_files: frozenset[str]
    new_upstream_files: frozenset[str]

    @property
    def covered(self) -> tuple[frozenset[str], frozenset[str]]:
        """The Bronze files (own, upstream) Silver covers once this refine is written."""
        return self.files, self.upstream_files

    @property
    def nothing_new(self) -> bool:
        return not self.full and not self.new_files and not self.new_upstream_files


def recompute_below() -> int:
    """Bronze rows under which a table with new files is recomputed rather than merged.

    Measured on this project's 2-core reference machine (BENCHMARKS.md): at
    10,000 orders a recompute of a source takes a few overwrites, the
    incremental path two MERGEs and its bookkeeping, about twice as long;
    from a few hundred thousand rows the recompute's data costs more.
    ``SHOPLAKE_INCREMENTAL_MIN_ROWS`` sets it (0: always incremental).
    """
    return settings().incremental_min_rows


def full_refresh_requested() -> bool:
    return config.full_refresh_requested()


def fingerprint(*rule_sets: Sequence[Expectation]) -> str:
    """Changes when any rule's name, condition or action does (then Silver is recomputed)."""
    text = LOGIC_VERSION + "".join(
        f"|{e.name}:{e.action}:{e.condition}" for rules in rule_sets for e in rules
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_state(spark: SparkSession, source: str) -> State | None:
    if not lake.exists(spark, "silver", STATE_TABLE):
        return None
    columns = [f.name for f in STATE_SCHEMA.fields]
    rows = lake.rows(spark, "silver", STATE_TABLE, columns, ("source_table", source))
    if not rows:
        return None
    row = max(rows, key=lambda r: (r["refined_at"], r["run_id"]))
    return State(
        files=frozenset(row["files"] or ()),
        upstream_files=frozenset(row["upstream_files"] or ()),
        counts={k: int(v) for k, v in _pairs(row["counts"])},
        fingerprint=row["fingerprint"],
        run_id=row["run_id"],
        versions=dict(_pairs(row.get("versions"))) or None,
    )


def _pairs(value: object) -> list[tuple[str, int]]:
    """A map column as Spark (a dict) or Arrow (a list of pairs) returns it."""
    if not value:
        return []
    if isinstance(value, dict):
        return list(value.items())
    return [tuple(pair) for pair in value]


def state_row(
    source: str,
    run_id: str,
    full: bool,
    counts: dict[str, int],
    rules_fingerprint: str,
    files: Iterable[str] = (),
    upstream_files: Iterable[str] = (),
    versions: dict[str, int] | None = None,
) -> tuple:
    """One ``_refine_state`` row; the runner commits a run's rows together at its end."""
    return (
        source,
        run_id,
        "full" if full else "incremental",
        sorted(files),
        sorted(upstream_files),
        {k: int(v) for k, v in counts.items()},
        rules_fingerprint,
        dt.datetime.now(dt.UTC).replace(tzinfo=None),
        versions,
    )


def files_in(spark: SparkSession, source: str) -> frozenset[str]:
    """The landing files in a Bronze table (from its file statistics where they tell)."""
    return frozenset(lake.distinct_values(spark, "bronze", source, "_source_file"))


def make_plan(
    state: State | None,
    files: Iterable[str],
    upstream_files: Iterable[str],
    rules_fingerprint: str,
    target_exists: bool,
    forced: bool,
) -> Plan:
    """Pure: decide between a full recompute and refining what is new."""
    files, upstream = frozenset(files), frozenset(upstream_files)
    reason = ""
    if forced:
        reason = "full refresh requested"
    elif state is None:
        reason = "first refine"
    elif not target_exists:
        reason = "the Silver table is missing"
    elif state.fingerprint != rules_fingerprint:
        reason = "the rules changed"
    elif not state.files <= files or not state.upstream_files <= upstream:
        reason = "Bronze lost files that Silver had refined"
    if reason:
        return Plan(True, reason, files, upstream, files, upstream)
    return Plan(
        False,
        "incremental",
        files,
        upstream,
        files - state.files,
        upstream - state.upstream_files,
    )


def from_files(bronze: DataFrame, names: Iterable[str]) -> DataFrame:
    return bronze.filter(F.col("_source_file").isin(sorted(names)))


def touched(bronze: DataFrame, group: Column, touched_groups: DataFrame, small: bool) -> DataFrame:
    """Every Bronze record whose group (a key, or a prefix of it) is in touched_groups.

    touched_groups has one column, ``_group``. The match is null-safe: records
    without a key form one group of their own, refined together.
    """
    groups = touched_groups.distinct()
    if small:
        groups = F.broadcast(groups)
    return bronze.join(groups, on=group.eqNullSafe(groups["_group"]), how="left_semi")


def combine(prev: dict[str, int], old: dict[str, int], new: dict[str, int]) -> dict[str, int]:
    """Cumulative counts after replacing the old fates of the touched records with new ones."""
    keys = set(prev) | set(old) | set(new)
    return {k: prev.get(k, 0) - old.get(k, 0) + new.get(k, 0) for k in sorted(keys)}


def touched_rows(source: str, run_id: str, keys: list[str] | None) -> list[tuple]:
    """``_touched_keys`` rows: which keys a refine changed (``None``: all of them).

    The steps downstream in the same run read them from ``Context.touched``;
    later runs from the table, committed at the end of the run before the
    refine state (a run killed in between refines the same files again and
    records the same keys again, which is harmless).
    """
    if keys is None:
        return [(source, run_id, None)]
    return [(source, run_id, key) for key in keys]


def touched_since(spark: SparkSession, run_id: str) -> DataFrame | None:
    """Keys touched by runs after ``run_id`` (run ids sort by time); None if the table is new."""
    table = lake.read_or_none(spark, "silver", TOUCHED_TABLE)
    if table is None:
        return None
    return table.filter(F.col("run_id") > F.lit(run_id))


def table_versions(spark: SparkSession, refs: Sequence[str]) -> dict[str, int]:
    """Each ``layer.table``'s Delta version (-1: missing); a local table's read from its
    log. A step that finds its inputs and outputs at the versions its last build
    recorded has nothing to do (Gold's tables, silver.fact_sales)."""
    found = {}
    for ref in refs:
        layer, table = ref.split(".", 1)
        version = lake.latest_version(spark, layer, table)
        found[ref] = -1 if version is None else version
    return found
