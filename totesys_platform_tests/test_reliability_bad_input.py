"""Bad input end to end (contract section 4): real totesys changes, real runs, the whole graph.

Every case starts from a warehouse and a lake loaded from the seeded source, breaks the source in one
way, runs the pipeline and checks three things:
- the run fails at the right stage (extraction, processing or warehouse load) with an error naming the
  table, the column and, where one row is at fault, its key;
- nothing already ingested is lost (every earlier version of every lake table is still there, unchanged and
  readable);
- the warehouse is never half-loaded: a table whose load failed or was skipped is exactly as before
  (rows and load state), no fact refers to a missing dimension row, and the warehouse never claims a
  processed batch the lake lacks.
"""

from __future__ import annotations

import shutil
import uuid
from datetime import date, datetime
from decimal import Decimal

import dagster as dg
import psycopg
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import pytest

from totesys_platform.defs.automation.source_checks import SOURCE_CHECKS
from totesys_platform.lake.quarantine import quarantine_version
from totesys_platform.local import simulator
from totesys_platform.source.contract import TABLE_NAMES
from totesys_platform.star_schema import FACTS, TARGET_TABLES
from totesys_platform.warehouse.validation import dangling_references
from totesys_platform_tests.test_reliability_faults import (
    ASSETS, Stack, assert_consistent, clone_database, lake_heads, load_state, run_in_process, step_failures, warehouse_tables,
)

LATER = datetime(2023, 7, 1, 10, 0, 0, 123000)  # after the seeded history: every change below is a new version


@pytest.fixture(scope="module")
def loaded(pg_server, _totesys_template, tmp_path_factory):
    """A seeded source, and a lake and warehouse loaded from it by one good run (templates for each test)."""
    root = tmp_path_factory.mktemp("bad_input_loaded")
    source_name, warehouse_name = f"bad_src_{uuid.uuid4().hex[:8]}", f"bad_wh_{uuid.uuid4().hex[:8]}"
    pg_server.create_database(source_name, template=_totesys_template)
    pg_server.create_database(warehouse_name)
    source, warehouse = pg_server.url(source_name), pg_server.url(warehouse_name)
    simulator.seed(source, scale=0.01, seed=13, end=date(2023, 6, 30), progress=lambda *a, **k: None)
    run_in_process(Stack(source, warehouse, (root / "ingestion").as_uri(), (root / "processed").as_uri()))
    yield {"source": source, "warehouse": warehouse, "lake": root}
    for name in (source_name, warehouse_name):
        pg_server.drop_database(name)


@pytest.fixture
def stack(pg_server, loaded, tmp_path):
    shutil.copytree(loaded["lake"] / "ingestion", tmp_path / "ingestion")
    shutil.copytree(loaded["lake"] / "processed", tmp_path / "processed")
    source = clone_database(pg_server, loaded["source"], "bad_case_src")
    warehouse = clone_database(pg_server, loaded["warehouse"], "bad_case_wh")
    yield Stack(source, warehouse, (tmp_path / "ingestion").as_uri(), (tmp_path / "processed").as_uri())
    for url in (source, warehouse):
        pg_server.drop_database(url.rsplit("/", 1)[1])


def execute(url: str, *statements: str, params: tuple = ()) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement, params if "%s" in statement else None)


def scalar(url: str, query: str, params: tuple = ()):
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchone()[0]


def new_sales_order(url: str) -> int:
    """A perfectly good new order, so every case has something legitimate to extract too."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "INSERT INTO sales_order (created_at, last_updated, design_id, staff_id, counterparty_id, units_sold, "
            "unit_price, currency_id, agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id) "
            "VALUES (%s, %s, 1, 1, 1, 5000, 2.50, 1, '2023-07-05', '2023-07-06', 1) RETURNING sales_order_id",
            (LATER, LATER)).fetchone()[0]


def _zones(stack: Stack):
    return (("ingestion", stack.ingestion(), TABLE_NAMES), ("processed", stack.processed(), TARGET_TABLES))


class Before:
    """What the lake and the warehouse held before the bad run, to prove nothing was lost or half-done."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.lake = {}  # (zone, table) -> (table id, version, rows at that version)
        for zone, lake, tables in _zones(stack):
            for table in tables:
                now = lake.table(table).snapshot()
                self.lake[(zone, table)] = (now.table_id, now.version, now.row_count())
        self.tables = warehouse_tables(stack.warehouse_url)
        self.load_state = load_state(stack.warehouse_url)

    def version(self, zone: str, table: str) -> int:
        return self.lake[(zone, table)][1]

    def assert_nothing_lost_nor_half_loaded(self, untouched_warehouse_tables) -> None:
        from deltalake import DeltaTable

        stack = self.stack
        for zone, lake, tables in _zones(stack):
            for table in tables:
                table_id, version, rows = self.lake[(zone, table)]
                now = lake.table(table).snapshot()
                assert (now.table_id, now.version >= version) == (table_id, True), f"{zone} {table} was replaced"
                if version >= 0:  # the version as it was is still there and readable
                    old = DeltaTable(lake.table_uri(table), version=version)
                    assert old.to_pyarrow_table().num_rows == rows, f"{zone} {table}: version {version} changed"
        tables, state = warehouse_tables(stack.warehouse_url), load_state(stack.warehouse_url)
        for table in untouched_warehouse_tables:
            assert tables[table] == self.tables[table], f"warehouse {table} changed although its load did not run"
            assert state.get(table) == self.load_state.get(table), f"warehouse {table} load state moved"
        with psycopg.connect(stack.warehouse_url) as conn:
            for fact in FACTS:
                assert not any(dangling_references(conn, fact).values()), f"{fact} refers to missing dimension rows"
        assert_consistent(stack)


# --------------------------------------------------------------------------------------------------
# Refused at extraction: the source no longer matches the contract


@pytest.mark.parametrize("statements, expected", [
    pytest.param(["ALTER TABLE staff DROP COLUMN email_address"],
                 "staff.email_address: column dropped or renamed", id="dropped column"),
    pytest.param(["ALTER TABLE sales_order ALTER COLUMN units_sold TYPE bigint"],
                 "sales_order.units_sold: column retyped to bigint (the contract says integer)", id="retyped column"),
    pytest.param(["ALTER TABLE design ALTER COLUMN file_name DROP NOT NULL",
                  f"UPDATE design SET file_name = NULL, last_updated = '{LATER}' WHERE design_id = 3"],
                 "design.file_name: column is nullable in the source (the contract says NOT NULL)",
                 id="NULL in a NOT NULL column"),
    pytest.param(["ALTER TABLE design ALTER COLUMN file_name DROP NOT NULL",
                  f"UPDATE design SET file_name = NULL, last_updated = '{LATER}' WHERE design_id = 3",
                  # PostgreSQL 18: a NOT NULL constraint that existing rows are not checked against.
                  "ALTER TABLE design ADD CONSTRAINT design_file_name_nn NOT NULL file_name NOT VALID"],
                 "design.file_name: 1 NULL value(s) in a column the contract says is NOT NULL",
                 id="NULL under a NOT VALID constraint"),
    pytest.param(["ALTER TABLE sales_order DROP CONSTRAINT sales_order_pkey CASCADE",
                  "INSERT INTO sales_order SELECT sales_order_id, created_at, last_updated, design_id, staff_id, "
                  "counterparty_id, units_sold + 1, unit_price, currency_id, agreed_delivery_date, "
                  "agreed_payment_date, agreed_delivery_location_id FROM sales_order WHERE sales_order_id = 5"],
                 "sales_order.sales_order_id: is not the table's primary key", id="duplicate versions"),
])
def test_a_source_that_drifted_from_the_contract_stops_its_table_and_the_others_are_archived(
        stack, statements, expected):
    drifted = expected.split(".")[0]
    new_sales_order(stack.totesys_url)
    before = Before(stack)
    heads = lake_heads(stack)
    execute(stack.totesys_url, *statements)

    failures = step_failures(run_in_process(stack, raise_on_error=False))
    assert list(failures) == ["extract_totesys"], failures  # the step fails naming the table...
    assert "SourceError" in failures["extract_totesys"] and expected in failures["extract_totesys"], failures
    assert lake_heads(stack)[f"ingestion/{drifted}"] == heads[f"ingestion/{drifted}"]  # ...which commits nothing
    if drifted != "sales_order":  # the other tables are archived: the good new order is in the lake
        assert lake_heads(stack)["ingestion/sales_order"] == heads["ingestion/sales_order"] + 1
    before.assert_nothing_lost_nor_half_loaded(untouched_warehouse_tables=TARGET_TABLES)


def test_a_column_added_to_the_source_is_archived_and_stops_nothing(stack):
    from totesys_platform.defs.automation.checks import SCHEMA_CHECKS

    instance = dg.DagsterInstance.ephemeral()  # one instance: the schema check compares with the run before
    dg.materialize([*ASSETS, *SCHEMA_CHECKS], resources=stack.resources(), instance=instance)
    order = new_sales_order(stack.totesys_url)
    execute(stack.totesys_url, "ALTER TABLE sales_order ADD COLUMN discount numeric(10,2)",
            f"UPDATE sales_order SET discount = 1.25 WHERE sales_order_id = {order}")
    result = dg.materialize([*ASSETS, *SCHEMA_CHECKS], resources=stack.resources(), instance=instance)
    assert result.success
    # Reported, not refused: the asset's metadata names the column, its schema check warns.
    (archived_batch,) = [m for m in result.asset_materializations_for_node("extract_totesys")
                         if m.asset_key.path[-1] == "sales_order"]
    assert archived_batch.metadata["columns_outside_contract"].value == "discount (numeric(10,2))"
    warned = {e.asset_key.path[-1]: e for e in result.get_asset_check_evaluations()
              if e.asset_key.path[:2] == ["lake", "ingestion"] and not e.passed}
    assert set(warned) == {"sales_order"} and warned["sales_order"].severity == dg.AssetCheckSeverity.WARN
    assert "discount" in str(warned["sales_order"].metadata) + str(warned["sales_order"].description)
    archived = stack.ingestion().table("sales_order").read(columns=["sales_order_id", "discount"])
    assert archived.filter(pa.compute.equal(archived["sales_order_id"], order))["discount"].to_pylist() == [
        Decimal("1.25")]
    assert scalar(stack.warehouse_url, "SELECT count(*) FROM fact_sales_order WHERE sales_order_id = %s",
                  (order,)) == 1


# --------------------------------------------------------------------------------------------------
# Archived, then refused by the processed stage: values the star schema cannot hold


def test_bad_values_stop_only_the_tables_they_reach_and_are_named_by_table_key_and_column(stack):
    url = stack.totesys_url
    good_order = new_sales_order(url)
    bad_order = scalar(url, "SELECT min(sales_order_id) + 6 FROM sales_order")
    execute(url, "ALTER TYPE \"PaymentTypeName\" ADD VALUE 'SALES_CREDIT'",
            "ALTER TYPE \"TransactionType\" ADD VALUE 'TRANSFER'")
    execute(
        url,
        f"UPDATE sales_order SET agreed_delivery_date = '2023-13-45', last_updated = '{LATER}' "
        f"WHERE sales_order_id = {bad_order}",
        f"INSERT INTO currency (currency_code, created_at, last_updated) VALUES ('XYZ', '{LATER}', '{LATER}')",
        f"INSERT INTO payment_type (payment_type_name, created_at, last_updated) "
        f"VALUES ('SALES_CREDIT', '{LATER}', '{LATER}')",
        f"UPDATE transaction SET transaction_type = 'TRANSFER', last_updated = '{LATER}' WHERE transaction_id = 2",
        f"UPDATE design SET design_name = 'Still fine', last_updated = '{LATER}' WHERE design_id = 2",
    )
    xyz = scalar(url, "SELECT currency_id FROM currency WHERE currency_code = 'XYZ'")
    credit = scalar(url, "SELECT payment_type_id FROM payment_type WHERE payment_type_name = 'SALES_CREDIT'")
    before = Before(stack)

    failures = step_failures(run_in_process(stack, raise_on_error=False))
    expected = {
        "lake__processed__fact_sales_order": f"sales_order_id={bad_order}, column agreed_delivery_date: '2023-13-45'",
        "lake__processed__dim_currency": f"currency_id={xyz}, column currency_code: 'XYZ'",
        "lake__processed__dim_payment_type": f"payment_type_id={credit}, column payment_type_name: 'SALES_CREDIT'",
        "lake__processed__dim_transaction": "transaction_id=2, column transaction_type: 'TRANSFER'",
    }
    assert set(failures) == set(expected), failures
    for step, text in expected.items():
        assert "BadInputError" in failures[step] and text in failures[step], failures[step]
        assert "quarantine --table" in failures[step]  # the error says which batch holds the row and what to do

    # Every new version was archived (the bad ones included: nothing is lost, the lake is the record).
    ingestion = stack.ingestion()
    latest = ingestion.table("sales_order").read(columns=["sales_order_id", "_batch"])
    latest = latest.filter(pa.compute.equal(latest["_batch"], pa.compute.max(latest["_batch"])))
    assert {good_order, bad_order} <= set(latest["sales_order_id"].to_pylist())
    # Unaffected dimensions moved on; everything the bad values reach, and every fact (each reads a dimension
    # they reach), is exactly as before.
    assert scalar(stack.warehouse_url, "SELECT design_name FROM dim_design WHERE design_id = 2") == "Still fine"
    before.assert_nothing_lost_nor_half_loaded(
        untouched_warehouse_tables=["dim_currency", "dim_payment_type", "dim_transaction", *FACTS])
    processed = stack.processed()
    # dim_date held back only sales_order's new rows (read again once the bad one is quarantined) and took the rest.
    consumed = processed.table("dim_date").snapshot().state["consumed"]
    assert consumed["sales_order"]["version"] < ingestion.table("sales_order").snapshot().version
    assert consumed["payment"]["version"] == ingestion.table("payment").snapshot().version
    for step in expected:
        table = step.removeprefix("lake__processed__")
        assert processed.table(table).snapshot().version == before.version("processed", table)


# --------------------------------------------------------------------------------------------------
# Refused at the warehouse: a fact pointing at a dimension row that does not exist


def test_a_dangling_reference_is_refused_at_the_warehouse_and_loads_once_the_row_exists(stack):
    url = stack.totesys_url
    order = scalar(url, "SELECT min(purchase_order_id) + 3 FROM purchase_order")
    execute(url, "ALTER TABLE purchase_order DROP CONSTRAINT purchase_order_staff_id_fkey",
            f"UPDATE purchase_order SET staff_id = 9999, last_updated = '{LATER}' WHERE purchase_order_id = {order}")
    new_sales_order(url)
    before = Before(stack)

    failures = step_failures(run_in_process(stack, raise_on_error=False))
    assert list(failures) == ["warehouse__fact_purchase_order"], failures
    message = failures["warehouse__fact_purchase_order"]
    assert "WarehouseLoadError" in message
    assert f"column staff_id = 9999 is not in dim_staff.staff_id (1 row(s), purchase_order_id {order})" in message
    # The other facts loaded (the good new order is in), the refused one is exactly as before.
    assert scalar(stack.warehouse_url, "SELECT count(*) FROM fact_sales_order") == len(before.tables["fact_sales_order"]) + 1
    before.assert_nothing_lost_nor_half_loaded(untouched_warehouse_tables=["fact_purchase_order"])

    # Once the staff row exists in totesys, the next run loads the dimension first, then the held-back fact.
    execute(url, "INSERT INTO staff (staff_id, first_name, last_name, department_id, email_address, created_at, "
                 f"last_updated) VALUES (9999, 'New', 'Starter', 1, 'new.starter@terrifictotes.com', '{LATER}', '{LATER}')")
    assert step_failures(run_in_process(stack, raise_on_error=False)) == {}
    assert scalar(stack.warehouse_url, "SELECT count(*) FROM fact_purchase_order WHERE staff_id = 9999") == 1
    assert scalar(stack.warehouse_url, "SELECT count(*) FROM fact_purchase_order") == len(
        before.tables["fact_purchase_order"]) + 1


# --------------------------------------------------------------------------------------------------
# Recovery from a bad value already archived


def test_the_documented_bad_row_recovery_loses_no_other_change(stack):
    """The operator's path (docs/operations.md): correct the row in totesys, quarantine the bad version the
    error names; the next run loads the correction and every good change archived beside the bad one."""
    url = stack.totesys_url
    good_order = new_sales_order(url)
    bad_order = scalar(url, "SELECT min(sales_order_id) + 6 FROM sales_order")
    execute(url, f"UPDATE sales_order SET agreed_payment_date = '2023-02-30', last_updated = '{LATER}' "
                 f"WHERE sales_order_id = {bad_order}")
    failures = step_failures(run_in_process(stack, raise_on_error=False))
    assert "lake__processed__fact_sales_order" in failures
    # What the error says to do: correct the row in totesys, then quarantine the bad version it names.
    message = failures["lake__processed__fact_sales_order"]
    assert f"--table sales_order --id {bad_order} --last-updated" in message
    execute(url, f"UPDATE sales_order SET agreed_payment_date = '2023-03-02', last_updated = '{LATER}'::timestamp "
                 f"+ interval '1 minute' WHERE sales_order_id = {bad_order}")
    quarantine_version(stack.ingestion(), "sales_order", bad_order, LATER,
                       "agreed_payment_date 2023-02-30, corrected in totesys")
    assert step_failures(run_in_process(stack, raise_on_error=False)) == {}
    with psycopg.connect(stack.warehouse_url) as conn:
        current = dict(conn.execute("SELECT sales_order_id, agreed_payment_date::text FROM fact_sales_order_current"))
        bad_versions = conn.execute("SELECT count(*) FROM fact_sales_order WHERE sales_order_id = %s "
                                    "AND last_updated_time = %s", (bad_order, LATER.time())).fetchone()[0]
    assert current[bad_order] == "2023-03-02" and bad_versions == 0  # the correction, never the bad version
    assert good_order in current  # the good order archived beside the bad row must not be lost
    assert_consistent(stack)


# --------------------------------------------------------------------------------------------------
# Duplicate or out-of-order last_updated: a change the version key cannot carry


def _latest_sales_order(url: str) -> int:
    """The order changed last: its version is in the extraction's look-back window (remembered with a fingerprint)."""
    return scalar(url, "SELECT sales_order_id FROM sales_order ORDER BY last_updated DESC, sales_order_id DESC LIMIT 1")


def _units_of_version(url: str, order: int, last_updated) -> list[int]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute(
            "SELECT units_sold FROM fact_sales_order WHERE sales_order_id = %s AND last_updated_date = %s "
            "AND last_updated_time = %s", (order, last_updated.date(), last_updated.time())).fetchall()]


def _order(url: str, order: int) -> tuple:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT last_updated, units_sold FROM sales_order WHERE sales_order_id = %s",
                            (order,)).fetchone()


def test_a_change_that_does_not_move_last_updated_is_captured_and_its_fact_row_takes_it(stack):
    order = _latest_sales_order(stack.totesys_url)
    last_updated, units = _order(stack.totesys_url, order)
    execute(stack.totesys_url, f"UPDATE sales_order SET units_sold = units_sold + 1 WHERE sales_order_id = {order}")
    assert step_failures(run_in_process(stack, raise_on_error=False)) == {}  # nothing halts
    assert _units_of_version(stack.warehouse_url, order, last_updated) == [units + 1]
    assert_consistent(stack)


def test_a_last_updated_moving_backwards_is_captured_as_a_version_of_its_own(stack):
    order = _latest_sales_order(stack.totesys_url)
    execute(stack.totesys_url,
            "UPDATE sales_order SET units_sold = units_sold + 1, last_updated = last_updated - interval '1 second' "
            f"WHERE sales_order_id = {order}")
    earlier, units = _order(stack.totesys_url, order)
    assert step_failures(run_in_process(stack, raise_on_error=False)) == {}
    assert _units_of_version(stack.warehouse_url, order, earlier) == [units]
    assert_consistent(stack)


def test_changes_behind_the_look_back_window_are_captured_and_the_source_check_names_what_moved_back(stack):
    """Far behind the watermark, the extraction still reads rows written since its last snapshot (their xmin),
    so both changes are captured; the hourly `source_matches_lake` check compares every source row with its
    latest archived capture and keeps naming the version that moved back, for the writer's owners."""
    url = stack.totesys_url
    in_place, backwards = scalar(url, "SELECT min(sales_order_id) FROM sales_order"), \
        scalar(url, "SELECT min(sales_order_id) + 1 FROM sales_order")
    execute(url, f"UPDATE sales_order SET units_sold = units_sold + 1 WHERE sales_order_id = {in_place}",
            "UPDATE sales_order SET last_updated = last_updated - interval '1 day' "
            f"WHERE sales_order_id = {backwards}")
    assert step_failures(run_in_process(stack, raise_on_error=False)) == {}

    result = dg.materialize([*ASSETS, *SOURCE_CHECKS], resources=stack.resources(),
                            selection=dg.AssetSelection.checks(*SOURCE_CHECKS), raise_on_error=False)
    evaluations = {e.asset_key.path[-1]: e for e in result.get_asset_check_evaluations()}
    assert len(evaluations) == len(TABLE_NAMES)
    failed = {table for table, e in evaluations.items() if not e.passed}
    assert failed == {"sales_order"}
    metadata = evaluations["sales_order"].metadata
    assert metadata["changed_in_place_count"].value == 0 and metadata["moved_back_count"].value == 1
    assert metadata["moved_back_sample"].value[0][0] == backwards
    assert evaluations["sales_order"].severity == dg.AssetCheckSeverity.ERROR


def test_a_table_whose_source_comparison_cannot_run_fails_its_own_check_and_the_others_are_judged(stack):
    """The 11 source checks run in one step; a table whose comparison raises (a contract column dropped in
    totesys) fails its own check with the error, every other table still gets its result, and the step fails
    (so the run's failure alert names it)."""
    execute(stack.totesys_url, "ALTER TABLE staff DROP COLUMN email_address")
    result = dg.materialize([*ASSETS, *SOURCE_CHECKS], resources=stack.resources(),
                            selection=dg.AssetSelection.checks(*SOURCE_CHECKS), raise_on_error=False)
    evaluations = {e.asset_key.path[-1]: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == set(TABLE_NAMES)
    assert {table for table, e in evaluations.items() if not e.passed} == {"staff"}
    assert "staff.email_address" in evaluations["staff"].description
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "staff" in str(failure.event_specific_data.error.message) or "staff" in str(failure.event_specific_data)


def test_a_dimension_whose_row_count_cannot_be_read_fails_its_own_check_and_the_others_are_judged(stack):
    """The 7 row-count checks share one step and one warehouse session: a dimension whose count raises (its table
    renamed away) fails its own check, each other dimension is still judged on a usable session, and the step
    fails."""
    from totesys_platform.defs.automation.checks import RECONCILIATION_CHECKS
    from totesys_platform.warehouse.validation import DIMENSION_SOURCES

    execute(stack.warehouse_url, "ALTER TABLE dim_design RENAME TO dim_design_elsewhere")
    result = dg.materialize([*ASSETS, *RECONCILIATION_CHECKS], resources=stack.resources(),
                            selection=dg.AssetSelection.checks(*RECONCILIATION_CHECKS), raise_on_error=False)
    evaluations = {e.asset_key.path[-1]: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == set(DIMENSION_SOURCES)
    assert {dim for dim, e in evaluations.items() if not e.passed} == {"dim_design"}
    assert "dim_design" in evaluations["dim_design"].description and not result.success
