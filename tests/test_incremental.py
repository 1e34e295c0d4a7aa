"""Incremental Silver equals a full recompute, and its bookkeeping stays exact.

A small lake is built, then new files arrive that exercise every way a new
record changes an old key: generated updates and defects (generate
--append), order items that arrive before their order (orphans released
later), and two versions of an old order that tie (the stored order must be
withdrawn as a conflict). After the increments the Silver tables, the
quarantine and the reconciliation must equal those of `run --full-refresh`
on the same Bronze. (Gold after an increment is checked against the
reference in tests/test_pipeline.py::test_new_batch_reads_only_its_files.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from deltalake import DeltaTable

from pipeline import catalog, lake
from pipeline.read import delta_arrow, has_deletion_vectors, table_stats
from pipeline.runner import RunResult, run
from pipeline.sources.generate import generate
from tests.conftest import lake_at

INCREMENTAL = ("silver.customers", "silver.orders", "silver.order_items")
COMPARED = [t.name for t in catalog.tables("silver", ("batch", "shared"))]


def _snapshot(spark) -> dict[str, list[str]]:
    out = {}
    for name in COMPARED:
        df = lake.read(spark, "silver", name).drop("_row_hash")
        out[name] = sorted(map(repr, df.collect()))
    return out


def _customer_key(fact, order_id: str) -> str:
    return fact.filter(f"order_id = '{order_id}'").first()["customer_key"]


def _step(result: RunResult, name: str):
    return next(s for s in result.steps if s.step == name)


def _drop(landing: Path, source: str, name: str, header: str, rows: list[str]) -> None:
    """A file moved into place whole, as the README asks of users' own drops."""
    folder = landing / source
    tmp = folder / f".{name}.tmp"
    tmp.write_text("\n".join([header, *rows]) + "\n")
    tmp.rename(folder / name)


def _run(spark, target: str = "all", **kwargs) -> RunResult:
    result = run(target, spark=spark, **kwargs)
    assert result.ok, result.error
    return result


def _bronze_and_silver(spark) -> RunResult:
    _run(spark, "bronze")
    return _run(spark, "silver")


def _assert_increment(result: RunResult, unchanged: tuple[str, ...] = ()) -> None:
    for name in INCREMENTAL:
        note = "no new Bronze files" if name in unchanged else "incremental"
        assert any(note in n for n in _step(result, name).notes), (name, _step(result, name))


@pytest.fixture(scope="module", autouse=True)
def always_incremental() -> Iterator[None]:
    """These lakes are small: without this, new files would be recomputed, not merged."""
    previous = os.environ.get("SHOPLAKE_INCREMENTAL_MIN_ROWS")
    os.environ["SHOPLAKE_INCREMENTAL_MIN_ROWS"] = "0"
    yield
    if previous is None:
        os.environ.pop("SHOPLAKE_INCREMENTAL_MIN_ROWS", None)
    else:
        os.environ["SHOPLAKE_INCREMENTAL_MIN_ROWS"] = previous


@pytest.fixture(scope="module")
def base_lake(spark, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("incremental_lake")
    with lake_at(root):
        generate(root, orders=300, batches=2, seed=21, defect_rate=0.05)
        first = _bronze_and_silver(spark)
        for name in INCREMENTAL:
            assert any("full recompute: first refine" in n for n in _step(first, name).notes)
    return root


def test_increments_equal_a_full_recompute(spark, base_lake: Path) -> None:
    """Three increments in a row, then a full recompute of the same Bronze: equal.

    Comparing once at the end tests the chain: an error in any increment would
    persist into the final tables.
    """
    with lake_at(base_lake):
        landing = base_lake / "landing"
        order_header = (landing / "orders" / "batch-000001.csv").read_text().splitlines()[0]
        item_header = (landing / "order_items" / "batch-000001.csv").read_text().splitlines()[0]
        stored = lake.read(spark, "silver", "orders").orderBy("order_id").first()
        customer = stored["customer_id"] or ""

        # 1. a generated batch: new orders, updates of earlier ones, every kind of defect
        generate(base_lake, orders=30, seed=21, defect_rate=0.05, append=True)
        _assert_increment(_bronze_and_silver(spark))

        # 2. items whose order has not arrived: quarantined as orphans
        _drop(
            landing,
            "order_items",
            "late-1.csv",
            item_header,
            ["X9000001,1,P000001,2,10.00,0", "X9000001,2,P000002,1,5.50,10"],
        )
        _assert_increment(
            _bronze_and_silver(spark), unchanged=("silver.customers", "silver.orders")
        )
        quarantine = lake.read(spark, "silver", "quarantine").filter("source_table='order_items'")
        orphans = quarantine.filter("record_key LIKE 'X9000001#%'").collect()
        assert len(orphans) == 2 and all("orphan_item" in r["rules"] for r in orphans)

        # 3. the order arrives (releasing its items), an old order gets two tying versions,
        #    and an order of a customer the CRM has not sent yet arrives with its item
        tie = "2026-01-02 03:04:05"
        _drop(landing, "order_items", "late-2.csv", item_header, ["X9000002,1,P000001,1,9.00,0"])
        _drop(
            landing,
            "orders",
            "late-2.csv",
            order_header,
            [
                f"X9000001,{customer},2025-08-01 10:00:00,delivered,web,card,DE,{tie}",
                f"X9000002,C9000777,2025-08-02 10:00:00,delivered,web,card,DE,{tie}",
                f"{stored['order_id']},{customer},2025-08-01 10:00:00,shipped,web,card,DE,{tie}",
                f"{stored['order_id']},{customer},2025-08-01 10:00:00,returned,web,card,DE,{tie}",
            ],
        )
        released = _bronze_and_silver(spark)
        _assert_increment(released, unchanged=("silver.customers",))
        items = lake.read(spark, "silver", "order_items").filter("order_id = 'X9000001'")
        assert items.count() == 2
        orders = lake.read(spark, "silver", "orders")
        assert orders.filter(f"order_id = '{stored['order_id']}'").count() == 0

        # 4. the CRM sends that customer, and a new city for a customer with fact lines: only
        #    the order whose customer became known has its lines rebuilt
        fact = lake.read(spark, "silver", "fact_sales")
        assert _customer_key(fact, "X9000002") == "UNKNOWN"
        known = fact.filter("customer_key != 'UNKNOWN' AND order_id != 'X9000002'").first()
        moved = lake.read(spark, "silver", "customers").filter(
            f"customer_id = '{known['customer_id']}'"
        )
        sent = "2026-12-01 00:00:00"  # later than any generated version
        moved = moved.first().asDict() | {"city": "Elsewhere", "updated_at": sent}
        late = {
            "customer_id": "C9000777",
            "name": "Ada Late",
            "email": "ada.late@example.com",
            "signup_date": "2025-07-01",
            "country": "DE",
            "city": "Berlin",
            "segment": "consumer",
            "updated_at": sent,
        }
        fields = list(late)
        lines = [json.dumps({k: str(row[k]) for k in fields}) for row in (late, moved)]
        (landing / "customers" / "late-3.jsonl").write_text("\n".join(lines) + "\n")
        crm = _bronze_and_silver(spark)
        _assert_increment(crm, unchanged=("silver.orders", "silver.order_items"))
        rebuilt = _step(crm, "silver.fact_sales").notes
        assert any("lines of 1 order(s) rebuilt" in n for n in rebuilt), rebuilt
        fact = lake.read(spark, "silver", "fact_sales")
        assert _customer_key(fact, "X9000002") == "C9000777"

        # A local lake's MERGEs go through delta-rs, which rewrites the files it changes
        # (no deletion vectors; tests/test_merge_engines.py has Spark's); the app's reader
        # and the file statistics count what Spark counts.
        for name in ("orders", "order_items", "fact_sales"):
            assert not has_deletion_vectors(DeltaTable(lake.path("silver", name))), name
            stored_rows = lake.read(spark, "silver", name).count()
            assert delta_arrow(lake.path("silver", name)).num_rows == stored_rows, name
            assert table_stats("silver", name).rows == stored_rows, name

        after_increments = _snapshot(spark)
        full = _run(spark, "silver", full_refresh=True)
        for name in INCREMENTAL:
            assert any("full recompute" in n for n in _step(full, name).notes), name
            want = _step(full, name).reconciliation
            assert _step(crm, name).reconciliation == want, name
        assert _snapshot(spark) == after_increments


def test_nothing_new_writes_nothing(spark, base_lake: Path) -> None:
    with lake_at(base_lake):
        tables = ("orders", "order_items", "customers", "products", "quarantine")
        versions = {t: lake.version(spark, "silver", t) for t in tables}
        result = _bronze_and_silver(spark)
        _assert_increment(result, unchanged=INCREMENTAL)
        assert {t: lake.version(spark, "silver", t) for t in versions} == versions


def test_plan_recomputes_only_when_it_must() -> None:
    from pipeline.silver.incremental import State, make_plan

    state = State(frozenset({"a.csv"}), frozenset({"o.csv"}), {}, "fp")
    files, upstream = {"a.csv", "b.csv"}, {"o.csv"}

    def reason(**changes) -> str:
        args = dict(
            state=state,
            files=files,
            upstream_files=upstream,
            rules_fingerprint="fp",
            target_exists=True,
            forced=False,
        )
        args.update(changes)
        plan = make_plan(**args)
        return plan.reason if plan.full else f"new {sorted(plan.new_files)}"

    assert reason() == "new ['b.csv']"
    assert reason(state=None) == "first refine"
    assert reason(forced=True) == "full refresh requested"
    assert reason(rules_fingerprint="other") == "the rules changed"
    assert reason(target_exists=False) == "the Silver table is missing"
    assert reason(files={"b.csv"}) == "Bronze lost files that Silver had refined"
    assert reason(upstream_files=set()) == "Bronze lost files that Silver had refined"
    same = make_plan(state, {"a.csv"}, {"o.csv"}, "fp", True, False)
    assert same.nothing_new and not same.full


def test_small_sources_recomputed_pass_their_keys_to_the_fact(spark, tmp_path: Path) -> None:
    """Customers and orders under the size threshold are recomputed, items above it merged:
    fact_sales, rebuilt only for the keys the new files touched, equals a full rebuild."""
    root = tmp_path / "lake"
    with lake_at(root):
        generate(root, orders=200, batches=2, seed=33, defect_rate=0.05)
        _bronze_and_silver(spark)  # Silver is what is compared: Gold would only cost time
        generate(root, orders=20, seed=33, defect_rate=0.05, append=True)
        _run(spark, "bronze")
        items = lake.row_count(spark, "bronze", "order_items")
        assert lake.row_count(spark, "bronze", "orders") < items
        os.environ["SHOPLAKE_INCREMENTAL_MIN_ROWS"] = str(items)  # reset by the module fixture
        try:
            result = _run(spark, "silver")
        finally:
            os.environ["SHOPLAKE_INCREMENTAL_MIN_ROWS"] = "0"
        notes = {s.step: " ".join(s.notes) for s in result.steps}
        for name in ("silver.customers", "silver.orders"):
            assert "new files in a small table" in notes[name], notes[name]
        assert "incremental" in notes["silver.order_items"], notes["silver.order_items"]
        assert "incremental: lines of" in notes["silver.fact_sales"], notes["silver.fact_sales"]
        after = _snapshot(spark)
        _run(spark, "silver", full_refresh=True)
        assert _snapshot(spark) == after


def test_a_fact_table_without_this_versions_columns_is_rebuilt(spark, base_lake: Path) -> None:
    """An older lake's silver.fact_sales (no order flags) is rebuilt, not merged into."""
    with lake_at(base_lake):
        older = lake.read(spark, "silver", "fact_sales").drop("first_in_category")
        lake.overwrite(older, "silver", "fact_sales")
        generate(base_lake, orders=10, seed=23, defect_rate=0.05, append=True)
        result = _bronze_and_silver(spark)
        notes = _step(result, "silver.fact_sales").notes
        assert any("lacks columns" in n for n in notes), notes
        assert "first_in_category" in lake.read(spark, "silver", "fact_sales").columns


def test_touched_records_read_by_delta_rs_are_sparks(spark, tmp_path: Path) -> None:
    """An increment's records fetched by key (delta-rs) are those Spark's null-safe join
    picks: every record whose trimmed key a new file holds, every keyless record when a
    new file has one, and no other; Spark then sees each of them."""
    import pyarrow as pa
    from pyspark.sql import functions as F

    from pipeline.contract import SOURCES
    from pipeline.silver import incremental
    from pipeline.silver import steps as silver_steps

    rows = [
        (" A1", "old.csv", "r1"),
        ("A1 ", "old.csv", "r2"),
        ("A1", "new.csv", "r3"),
        (None, "old.csv", "r4"),
        (None, "new.csv", "r5"),
        ("B2", "old.csv", "r6"),
        ("  ", "old.csv", "r7"),
        ("a1", "old.csv", "r8"),
    ]
    with lake_at(tmp_path):
        frame = spark.createDataFrame(
            rows, "order_id string, _source_file string, _record_id string"
        )
        # several files, some without a touched record: delta-rs reads them as empty batches
        frame.repartition(4).write.format("delta").save(lake.path("bronze", "orders"))
        bronze = lake.read(spark, "bronze", "orders")
        plan = incremental.Plan(
            False,
            "incremental",
            frozenset({"old.csv", "new.csv"}),
            frozenset(),
            frozenset({"new.csv"}),
            frozenset(),
        )
        source = SOURCES["orders"]
        group = F.trim(F.col("order_id"))
        new_groups = incremental.from_files(bronze, plan.new_files).select(group.alias("_group"))
        by_spark = incremental.touched(bronze, group, new_groups, small=True)
        want = sorted(r["_record_id"] for r in by_spark.collect())
        local = silver_steps._touched_by_arrow(
            source, silver_steps._new_groups_by_arrow(source, None, plan)
        )
        assert local is not None
        assert want == ["r1", "r2", "r3", "r4", "r5"]
        assert sorted(local.column("_record_id").to_pylist()) == want
        seen = lake.arrow_frame(spark, local, bronze.schema)
        assert sorted(r["_record_id"] for r in seen.collect()) == want

        # PySpark loses the batches after an empty one unless they are combined first
        batches = pa.Table.from_batches(
            [pa.record_batch({"x": pa.array(range(n), pa.int64())}) for n in (3, 0, 1)]
        )
        assert spark.createDataFrame(batches.combine_chunks()).count() == 4
        assert (
            lake.arrow_frame(spark, batches, spark.range(1).selectExpr("id AS x").schema).count()
            == 4
        )


def test_touched_checks_read_the_checked_columns_only(tmp_path, monkeypatch) -> None:
    """An increment's table checks read the key and checked columns of the touched rows
    (not lineage's record_id and _row_hash) and still judge every rule a full read does."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.compute as pc

    from pipeline.quality.checks import arrow_table_checks
    from pipeline.silver import orders
    from pipeline.silver.steps import _touched_checks

    schema = catalog.arrow_schema("silver", "orders")
    when = dt.datetime(2026, 6, 1, 12)
    values = {
        "order_id": ["O1", "O2", "O2", "O3"],
        "customer_id": ["C1", None, "C2", "C3"],
        "order_ts": [when] * 4,
        "order_date": [when.date()] * 4,
        "updated_at": [when] * 4,
        "record_id": ["r1", "r2", "r3", "r4"],
    }
    filler = {True: ["x"] * 4, False: [None] * 4}
    columns = {f.name: values.get(f.name, filler[pa.types.is_string(f.type)]) for f in schema}
    table = pa.table({f.name: pa.array(columns[f.name], f.type) for f in schema}, schema=schema)
    assert {"record_id", "_row_hash"} <= set(schema.names) - set(orders.COLUMNS)
    read = lake.local_rows
    asked: list[object] = []

    def local_rows(*args, **kwargs):
        asked.append(args[3] if len(args) > 3 else kwargs.get("columns"))
        return read(*args, **kwargs)

    monkeypatch.setattr(lake, "local_rows", local_rows)
    with lake_at(tmp_path):
        lake.write_arrow(lake.path("silver", "orders"), table, "overwrite")
        checks = _touched_checks(None, orders, ["O2", "O3"], None, True)  # type: ignore[arg-type]
    touched = table.filter(pc.is_in(table.column("order_id"), pa.array(["O2", "O3"])))
    assert checks == arrow_table_checks(touched, orders.SOURCE.key, orders.COLUMNS)
    by_rule = {c.rule: c for c in checks}
    assert by_rule["primary_key_unique"].rows_failed == 1  # O2 twice
    assert by_rule["not_null_customer_id"].rows_failed == 1
    assert "freshness" in by_rule
    assert asked == [list(orders.COLUMNS)]  # the key is its first column


def test_a_vacuumed_customers_version_counts_every_touched_customer(spark, tmp_path) -> None:
    """fact_sales narrows the touched customers to those that became known or unknown since
    the version of silver.customers its last build recorded. Once VACUUM has removed that
    version's files, both the local (delta-rs) and the remote (Spark) path count every
    touched customer, so their orders are rebuilt, instead of failing the step."""
    import pyarrow as pa

    from pipeline.silver.steps import _known_changed, _known_changed_by_spark

    with lake_at(tmp_path):
        location = lake.path("silver", "customers")
        for ids in (["C1", "C2"], ["C1", "C2", "C3"]):  # version 0, then C3 becomes known
            rows = spark.createDataFrame([(i,) for i in ids], "customer_id string")
            rows.write.format("delta").mode("overwrite").save(location)
        customers = spark.read.format("delta").load(location)
        touched = ["C1", "C3"]

        def narrowed() -> tuple[list[str], list[str]]:
            local = _known_changed(pa.array(touched, pa.string()), 0)
            assert local is not None
            frame = spark.createDataFrame([(i,) for i in touched], "customer_id string")
            remote = _known_changed_by_spark(spark, frame, customers, 0)
            return sorted(local.to_pylist()), sorted(r["customer_id"] for r in remote.collect())

        assert narrowed() == (["C3"], ["C3"])
        DeltaTable(location).vacuum(
            retention_hours=0, enforce_retention_duration=False, dry_run=False
        )
        assert narrowed() == (touched, touched)


@pytest.mark.parametrize("remote", [False, True], ids=["delta-rs", "spark"])
def test_a_vacuumed_products_version_rebuilds_the_fact(
    spark, tmp_path, monkeypatch, remote
) -> None:
    """The products changed since fact_sales' last build are read against that build's
    version of silver.products; once VACUUM has removed it, the answer is None (the step
    then rebuilds the whole fact table), on a local lake (delta-rs) and a remote one."""
    from pipeline.silver.steps import _changed_products
    from tests.conftest import look_remote

    if remote:
        look_remote(monkeypatch, tmp_path / "state")
    with lake_at(tmp_path.as_uri() if remote else tmp_path):  # type: ignore[arg-type]
        assert (lake.local_location("silver", "products") is None) == remote
        location = lake.path("silver", "products")
        for hashes in ([1, 2], [1, 3]):  # version 0, then P2's row changes
            rows = [(f"P{i}", h) for i, h in enumerate(hashes, start=1)]
            frame = spark.createDataFrame(rows, "product_id string, _row_hash long")
            frame.write.format("delta").mode("overwrite").save(location)
        assert _changed_products(spark, 0) == ["P2"]
        DeltaTable(str(tmp_path / "silver" / "products")).vacuum(
            retention_hours=0, enforce_retention_duration=False, dry_run=False
        )
        assert _changed_products(spark, 0) is None
