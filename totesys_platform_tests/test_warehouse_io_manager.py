"""The warehouse IO manager through real in-process Dagster runs against a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import dagster as dg
import pandas as pd
import psycopg
import pyarrow as pa
import pytest

from totesys_platform.local.postgres import free_port
from totesys_platform.star_schema import TARGET_TABLES
from totesys_platform.defs.warehouse.io_manager import WarehouseIOManager, column_schema
from totesys_platform.warehouse.loader import WarehouseBatch
from totesys_platform.lake.delta import Position
from totesys_platform.warehouse.schema import get_load_position
from totesys_platform_tests.test_warehouse_loader import (
    T1, T2, arrow, dimension_tables, payment_row, staff_row,
)

IO = "warehouse_io_manager"


def table_asset(table: str, value: object, mode: str | None = "default", deps=()) -> dg.AssetsDefinition:
    """An asset `warehouse/<table>` returning `value`, stored by the warehouse IO manager."""
    if mode == "default":
        mode = "append_versions" if TARGET_TABLES[table].kind == "fact" else "upsert"
    metadata = {} if mode is None else {"warehouse/mode": mode}

    @dg.asset(key=["warehouse", table], metadata=metadata, io_manager_key=IO, deps=list(deps))
    def _asset():
        return value

    return _asset


def dimension_assets(tables: dict[str, object] | None = None) -> list[dg.AssetsDefinition]:
    return [table_asset(name, data) for name, data in (tables or dimension_tables()).items()]


def run(assets, warehouse_url, *, selection=None, raise_on_error=True, io_manager=None):
    return dg.materialize(
        assets, selection=selection, raise_on_error=raise_on_error,
        resources={IO: io_manager or WarehouseIOManager(db_url=warehouse_url)})


def metadata_of(result, table: str) -> dict[str, object]:
    # The node name of asset `warehouse/<table>` is derived from its key.
    [materialization] = result.asset_materializations_for_node(f"warehouse__{table}")
    return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}


def failure_text(result) -> str:
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failures, "expected a failed step"
    return "\n".join(e.step_failure_data.error.to_string() for e in failures)


def test_materialize_loads_dimensions_and_facts_with_metadata(warehouse_url):
    payments = arrow("fact_payment", [payment_row(1, T1), payment_row(1, T2, paid=True)])
    fact = table_asset("fact_payment", WarehouseBatch(payments, position=Position("processed-table", 4, 0)),
                       deps=[["warehouse", d] for d in dimension_tables()])
    result = run([*dimension_assets(), fact], warehouse_url)
    assert result.success

    database = warehouse_url.rsplit("/", 1)[1]
    staff = metadata_of(result, "dim_staff")
    assert staff == {
        "rows_inserted": 2, "rows_updated": 0, "rows_unchanged": 0,
        "dagster/table_name": f"{database}.public.dim_staff",
        "dagster/column_schema": column_schema("dim_staff"), "dagster/row_count": 2,
    }
    facts = metadata_of(result, "fact_payment")
    assert facts["rows_inserted"] == 2 and facts["dagster/row_count"] == 2 and facts["processed_version"] == 4
    # Into an empty fact: a bulk load, whose re-added foreign keys validated every row.
    assert facts["references_validated_by_foreign_keys"] is True
    assert "references_validated_by_foreign_keys" not in staff
    schema_columns = [c.name for c in facts["dagster/column_schema"].columns]
    assert schema_columns == ["payment_record_id", *TARGET_TABLES["fact_payment"].column_names]
    with psycopg.connect(warehouse_url) as conn:
        assert get_load_position(conn, "fact_payment") == Position("processed-table", 4, 0)
        assert get_load_position(conn, "dim_staff") is None  # a plain table carries no processed position
        assert conn.execute("SELECT paid FROM fact_payment_current").fetchall() == [(True,)]

    # A second run: one dimension row changed, the fact versions already known.
    changed = dimension_tables() | {"dim_staff": arrow("dim_staff", [staff_row(1), staff_row(2, last_name="New")])}
    again = run([*dimension_assets(changed), fact], warehouse_url)
    assert metadata_of(again, "dim_staff")["rows_updated"] == 1
    assert metadata_of(again, "dim_staff")["rows_unchanged"] == 1
    assert metadata_of(again, "fact_payment")["rows_inserted"] == 0
    assert metadata_of(again, "fact_payment")["rows_unchanged"] == 2
    assert metadata_of(again, "fact_payment")["dagster/row_count"] == 2
    assert "references_validated_by_foreign_keys" not in metadata_of(again, "fact_payment")  # a tick


def test_load_input_as_arrow_and_as_pandas(warehouse_url):
    seen: dict[str, object] = {}
    dims = dimension_tables()
    payments = arrow("fact_payment", [payment_row(1, T1, payment_amount=Decimal("12.30")), payment_row(2, T1)])
    fact = table_asset("fact_payment", payments, deps=[["warehouse", d] for d in dims])

    @dg.asset(ins={"payments": dg.AssetIn(key=["warehouse", "fact_payment"])})
    def payments_arrow(payments: pa.Table) -> None:
        seen["arrow"] = payments

    @dg.asset(ins={"transactions": dg.AssetIn(key=["warehouse", "dim_transaction"])})
    def transactions_pandas(transactions: pd.DataFrame) -> None:
        seen["pandas"] = transactions

    assets = [*dimension_assets(dims), fact, payments_arrow, transactions_pandas]
    assert run(assets, warehouse_url, selection=[dg.AssetKey(["warehouse", "fact_payment"]),
                                                 *[dg.AssetKey(["warehouse", d]) for d in dims]]).success
    assert run(assets, warehouse_url, selection=["payments_arrow", "transactions_pandas"]).success

    loaded = seen["arrow"]
    assert isinstance(loaded, pa.Table)
    assert loaded.schema.field(0) == pa.field("payment_record_id", pa.int64(), nullable=False)
    assert loaded.column("payment_record_id").to_pylist() == [1, 2]
    assert loaded.drop_columns(["payment_record_id"]).equals(payments)

    frame = seen["pandas"]
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == TARGET_TABLES["dim_transaction"].column_names
    assert str(frame["sales_order_id"].dtype) == "int32[pyarrow]"  # NULLs do not turn ints into floats
    assert frame.loc[0, "sales_order_id"] == 1 and pd.isna(frame.loc[1, "sales_order_id"])


def test_pandas_output_is_stored_with_the_target_types(warehouse_url):
    frame = pd.DataFrame({
        "currency_id": [1, 2], "currency_code": ["GBP", "EUR"], "currency_name": ["Pound Sterling", "Euro"],
    })
    result = run([table_asset("dim_currency", frame)], warehouse_url)
    assert metadata_of(result, "dim_currency")["rows_inserted"] == 2
    with psycopg.connect(warehouse_url) as conn:
        assert conn.execute("SELECT * FROM dim_currency ORDER BY 1").fetchall() == [
            (1, "GBP", "Pound Sterling"), (2, "EUR", "Euro")]


@pytest.mark.parametrize(("table", "value", "mode", "expected"), [
    ("dim_staff", dimension_tables()["dim_staff"], None,
     "asset warehouse/dim_staff: its definition metadata has no 'warehouse/mode'"),
    ("dim_staff", dimension_tables()["dim_staff"], "replace", "dim_staff: unknown load mode 'replace'"),
    ("dim_staff", dimension_tables()["dim_staff"], "append_versions",
     "dim_staff is a dimension: its load mode is 'upsert'"),
    ("dim_currency", pd.DataFrame({"currency_id": [1], "currency_code": ["GBP"], "name": ["x"]}), "default",
     "dim_currency: the DataFrame's columns do not match the warehouse table; missing: currency_name; unexpected: name"),
    ("dim_currency", pd.DataFrame({"currency_id": ["one"], "currency_code": ["GBP"], "currency_name": ["x"]}),
     "default", "dim_currency: cannot convert the DataFrame to the warehouse types"),
    ("dim_staff", {"staff_id": 1}, "default", "not dict"),
])
def test_bad_outputs_fail_with_a_clear_error(warehouse_url, table, value, mode, expected):
    result = run([table_asset(table, value, mode)], warehouse_url, raise_on_error=False)
    assert not result.success
    assert expected in failure_text(result)


def test_a_failed_load_commits_neither_rows_nor_load_state(warehouse_url):
    dims = dimension_tables()
    dangling = arrow("fact_payment", [payment_row(1, T1), payment_row(2, T1, currency_id=77)])
    fact = table_asset("fact_payment", WarehouseBatch(dangling, position=Position("processed-table", 9, 0)), deps=[["warehouse", d] for d in dims])
    result = run([*dimension_assets(dims), fact], warehouse_url, raise_on_error=False)
    assert not result.success
    assert "currency_id = 77 is not in dim_currency.currency_id (1 row(s), payment_id 2)" in failure_text(result)
    with psycopg.connect(warehouse_url) as conn:
        assert get_load_position(conn, "fact_payment") is None
        assert conn.execute("SELECT count(*) FROM fact_payment").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM dim_currency").fetchone() == (2,)


def test_empty_batch_records_state_and_reports_zeros(warehouse_url):
    first = run([table_asset("dim_staff", WarehouseBatch(dimension_tables()["dim_staff"], position=Position("processed-table", 2, 0)))],
                warehouse_url)
    assert metadata_of(first, "dim_staff")["rows_inserted"] == 2
    empty = WarehouseBatch(TARGET_TABLES["dim_staff"].arrow_schema.empty_table(), position=Position("processed-table", 7, 0))
    result = run([table_asset("dim_staff", empty)], warehouse_url)
    metadata = metadata_of(result, "dim_staff")
    assert (metadata["rows_inserted"], metadata["rows_updated"], metadata["rows_unchanged"]) == (0, 0, 0)
    assert metadata["dagster/row_count"] == 2
    with psycopg.connect(warehouse_url) as conn:
        assert get_load_position(conn, "dim_staff").version == 7


def test_unreachable_warehouse_error_names_url_without_password(warehouse_url):
    url = f"postgresql://loader:s3cr3t-pw@127.0.0.1:{free_port()}/warehouse"
    manager = WarehouseIOManager(db_url=url, connect_timeout_s=2)
    result = run([table_asset("dim_staff", dimension_tables()["dim_staff"])], warehouse_url,
                 raise_on_error=False, io_manager=manager)
    text = failure_text(result)
    assert "cannot connect to the warehouse at postgresql://loader:***@127.0.0.1:" in text
    assert "s3cr3t-pw" not in text


def test_dates_and_times_survive_a_round_trip_through_dagster(warehouse_url):
    seen = {}
    dims = dimension_tables()
    late = dt.datetime(2024, 1, 2, 23, 59, 59, 999000)
    payments = arrow("fact_payment", [payment_row(1, late, created_time=dt.time(0, 0, 0, 1000))])
    fact = table_asset("fact_payment", payments, deps=[["warehouse", d] for d in dims])

    @dg.asset(ins={"payments": dg.AssetIn(key=["warehouse", "fact_payment"])})
    def as_pandas(payments: pd.DataFrame) -> None:
        seen["frame"] = payments

    assets = [*dimension_assets(dims), fact, as_pandas]
    assert run(assets, warehouse_url).success
    row = seen["frame"].iloc[0]
    assert (row["created_time"], row["last_updated_time"]) == (dt.time(0, 0, 0, 1000), late.time())
    assert row["payment_amount"] == Decimal("99999999.99") and row["payment_date"] == dt.date(2024, 1, 3)


def a_fact_and_its_bulk_catch_up(warehouse_url) -> dg.AssetsDefinition:
    """A warehouse holding one sales order, and the asset of a catch-up that loads 20,000 more in bulk (which
    takes an ACCESS EXCLUSIVE lock on fact_sales_order), through processed version 7."""
    from totesys_platform_tests.test_warehouse_loader import sales_row

    assert run(dimension_assets(), warehouse_url).success
    first = table_asset("fact_sales_order", arrow("fact_sales_order", [sales_row(1, T1)]),
                        deps=[["warehouse", d] for d in dimension_tables()])
    assert run([*dimension_assets(), first], warehouse_url, selection=[first]).success
    orders = [sales_row(i, T1 + dt.timedelta(milliseconds=i)) for i in range(2, 20_002)]
    batch = WarehouseBatch(arrow("fact_sales_order", orders), position=Position("processed-table", 7, 0))
    return table_asset("fact_sales_order", batch, deps=[["warehouse", d] for d in dimension_tables()])


def assert_unchanged_then_caught_up(warehouse_url, fact: dg.AssetsDefinition) -> None:
    with psycopg.connect(warehouse_url) as conn:
        assert conn.execute("SELECT count(*) FROM fact_sales_order").fetchone()[0] == 1
        assert get_load_position(conn, "fact_sales_order") is None
    # The analyst is gone: the next run catches up.
    assert run([*dimension_assets(), fact], warehouse_url, selection=[fact]).success
    with psycopg.connect(warehouse_url) as conn:
        assert conn.execute("SELECT count(*) FROM fact_sales_order").fetchone()[0] == 20_001
        assert get_load_position(conn, "fact_sales_order") == Position("processed-table", 7, 0)


def test_a_load_held_up_by_an_analysts_open_read_fails_within_the_lock_timeout_naming_the_session(
    warehouse_url, monkeypatch
):
    """An analyst's BEGIN; SELECT ... FROM fact_sales_order holds a lock the bulk load needs: the load fails after
    the lock timeout, names the session and what to do, changes nothing; once the analyst is done, it goes in."""
    monkeypatch.setenv("WAREHOUSE_LOCK_TIMEOUT_SECONDS", "1")
    fact = a_fact_and_its_bulk_catch_up(warehouse_url)

    analyst = psycopg.connect(warehouse_url, application_name="analyst notebook")
    try:
        analyst.execute("SELECT count(*) FROM fact_sales_order").fetchone()  # the transaction stays open
        started = dt.datetime.now()
        result = run([*dimension_assets(), fact], warehouse_url, selection=[fact], raise_on_error=False)
        waited = (dt.datetime.now() - started).total_seconds()
        assert not result.success and waited < 30
        text = failure_text(result)
        assert "WarehouseLockTimeout" in text and "waited 1 s for a lock" in text
        assert f"pid {analyst.info.backend_pid}" in text and "application analyst notebook" in text
        assert "Nothing was changed" in text and "pg_terminate_backend" in text
        assert "WAREHOUSE_LOCK_TIMEOUT_SECONDS" in text
    finally:
        analyst.close()
    assert_unchanged_then_caught_up(warehouse_url, fact)


def test_a_bulk_load_held_up_by_an_analysts_open_read_of_a_dimension_names_that_session_and_table(
    warehouse_url, monkeypatch
):
    """A bulk load sets the fact's foreign keys aside, which locks the dimensions they refer to as well: an
    analyst's open transaction on dim_date holds the load up, and the error names that session and dim_date
    (the sessions on the fact alone are none, which read as "a session that has ended since")."""
    monkeypatch.setenv("WAREHOUSE_LOCK_TIMEOUT_SECONDS", "1")
    fact = a_fact_and_its_bulk_catch_up(warehouse_url)

    analyst = psycopg.connect(warehouse_url, application_name="analyst dashboard")
    bystander = psycopg.connect(warehouse_url, application_name="bystander")  # on a table the fact does not use
    try:
        analyst.execute("SELECT count(*) FROM dim_date").fetchone()  # the transaction stays open
        bystander.execute("SELECT count(*) FROM dim_payment_type").fetchone()
        result = run([*dimension_assets(), fact], warehouse_url, selection=[fact], raise_on_error=False)
        assert not result.success
        text = failure_text(result)
        assert "WarehouseLockTimeout" in text and "waited 1 s for a lock" in text
        assert f"pid {analyst.info.backend_pid} on dim_date" in text and "application analyst dashboard" in text
        assert "ended since" not in text and "bystander" not in text
    finally:
        analyst.close()
        bystander.close()
    assert_unchanged_then_caught_up(warehouse_url, fact)


def test_a_load_held_up_by_another_load_or_a_rebuild_names_the_session_holding_the_tables_load_lock(
    warehouse_url, monkeypatch
):
    """Loads of one table take turns through an advisory lock (a rebuild takes every table's): a load that waits
    for it longer than the lock timeout names the session holding it, not "a session that has ended since"."""
    from totesys_platform.warehouse.loader import table_lock_key

    monkeypatch.setenv("WAREHOUSE_LOCK_TIMEOUT_SECONDS", "1")
    fact = a_fact_and_its_bulk_catch_up(warehouse_url)
    other = psycopg.connect(warehouse_url, application_name="another load")
    try:
        other.execute("SELECT pg_advisory_xact_lock(%s)", (table_lock_key("fact_sales_order"),))
        result = run([*dimension_assets(), fact], warehouse_url, selection=[fact], raise_on_error=False)
        assert not result.success
        text = failure_text(result)
        assert "WarehouseLockTimeout" in text and "ended since" not in text
        assert f"pid {other.info.backend_pid} on the load lock of fact_sales_order" in text
        assert "application another load" in text
    finally:
        other.close()
    assert_unchanged_then_caught_up(warehouse_url, fact)


def test_a_lock_timeout_names_no_session_of_another_database(warehouse_url, pg_server, monkeypatch):
    """pg_locks covers the whole server, and databases cloned from one template share their tables' OIDs: a
    session reading dim_date in the clone is not named as holding this warehouse's dim_date."""
    monkeypatch.setenv("WAREHOUSE_LOCK_TIMEOUT_SECONDS", "1")
    fact = a_fact_and_its_bulk_catch_up(warehouse_url)
    clone = f"{warehouse_url.rsplit('/', 1)[1]}_clone"
    pg_server.create_database(clone, template=warehouse_url.rsplit("/", 1)[1])
    analyst = psycopg.connect(warehouse_url, application_name="analyst here")
    elsewhere = psycopg.connect(pg_server.url(clone), application_name="analyst elsewhere")
    try:
        analyst.execute("SELECT count(*) FROM dim_date").fetchone()
        elsewhere.execute("SELECT count(*) FROM dim_date").fetchone()
        result = run([*dimension_assets(), fact], warehouse_url, selection=[fact], raise_on_error=False)
        text = failure_text(result)
        assert f"pid {analyst.info.backend_pid} on dim_date (AccessShareLock)" in text
        assert "analyst elsewhere" not in text and f"pid {elsewhere.info.backend_pid} " not in text
    finally:
        analyst.close()
        elsewhere.close()
        pg_server.drop_database(clone)


def test_a_load_cut_short_by_the_statement_timeout_names_it_and_the_session_holding_the_table(
    warehouse_url, monkeypatch
):
    """A statement timeout shorter than the lock timeout ends the load's wait for the analyst's lock: the error
    names the statement timeout, its setting and the session holding the table; nothing changes."""
    fact = a_fact_and_its_bulk_catch_up(warehouse_url)  # the schema is created with the default timeouts
    monkeypatch.setenv("WAREHOUSE_LOCK_TIMEOUT_SECONDS", "120")
    monkeypatch.setenv("WAREHOUSE_STATEMENT_TIMEOUT_SECONDS", "1")

    analyst = psycopg.connect(warehouse_url, application_name="analyst notebook")
    try:
        analyst.execute("SELECT count(*) FROM fact_sales_order").fetchone()  # the transaction stays open
        started = dt.datetime.now()
        result = run([*dimension_assets(), fact], warehouse_url, selection=[fact], raise_on_error=False)
        waited = (dt.datetime.now() - started).total_seconds()
        assert not result.success and waited < 30  # the 120 s lock timeout never came into it
        text = failure_text(result)
        assert "WarehouseStatementTimeout" in text and "longer than the statement timeout (1 s)" in text
        assert f"pid {analyst.info.backend_pid}" in text and "application analyst notebook" in text
        assert "Nothing was changed" in text and "WAREHOUSE_STATEMENT_TIMEOUT_SECONDS" in text
    finally:
        analyst.close()
    monkeypatch.delenv("WAREHOUSE_STATEMENT_TIMEOUT_SECONDS")
    assert_unchanged_then_caught_up(warehouse_url, fact)


def test_every_warehouse_session_has_the_configured_timeouts_and_bad_settings_are_refused(warehouse_url, monkeypatch):
    from totesys_platform.defs.resources import WarehouseDatabase
    from totesys_platform.warehouse.sessions import connect_warehouse

    monkeypatch.setenv("WAREHOUSE_LOCK_TIMEOUT_SECONDS", "2.5")
    monkeypatch.delenv("WAREHOUSE_STATEMENT_TIMEOUT_SECONDS", raising=False)
    with connect_warehouse(warehouse_url) as conn:
        assert conn.execute("SHOW lock_timeout").fetchone()[0] == "2500ms"
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "30min"
        conn.rollback()  # the settings belong to the session, not to its first transaction
        assert conn.execute("SHOW lock_timeout").fetchone()[0] == "2500ms"
    # The sessions of the IO manager (loads, reads) and of the resource (the warehouse assets, checks, report).
    with (WarehouseIOManager(db_url=warehouse_url)._connect() as loads,
          WarehouseDatabase(db_url=warehouse_url).connect() as checks):
        for conn in (loads, checks):
            assert conn.execute("SELECT current_setting('lock_timeout'), current_setting('statement_timeout'), "
                                "current_setting('application_name')").fetchone() == (
                "2500ms", "30min", "totesys_platform warehouse")
    monkeypatch.setenv("WAREHOUSE_STATEMENT_TIMEOUT_SECONDS", "soon")
    with pytest.raises(ValueError, match="WAREHOUSE_STATEMENT_TIMEOUT_SECONDS must be a positive number, got 'soon'"):
        connect_warehouse(warehouse_url)


def test_the_row_count_follows_each_load_without_counting_the_table_again(warehouse_url, monkeypatch):
    """dagster/row_count is exact through a bulk load, a tick with duplicates and new versions, dimension updates
    and loads without a position; it is counted once, then kept in the load state: a load with nothing new does
    not touch the table (it goes through while another session holds the table exclusively)."""
    from totesys_platform_tests.test_warehouse_loader import sales_row

    def count(table: str) -> int:
        with psycopg.connect(warehouse_url) as conn:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    deps = [["warehouse", d] for d in dimension_tables()]

    def load_fact(rows: list[dict], version: int) -> int:
        batch = WarehouseBatch(arrow("fact_sales_order", rows), position=Position("processed-table", version, 0))
        fact = table_asset("fact_sales_order", batch, deps=deps)
        result = run([*dimension_assets(), fact], warehouse_url, selection=[fact])
        return metadata_of(result, "fact_sales_order")["dagster/row_count"]

    assert run(dimension_assets(), warehouse_url).success
    assert load_fact([sales_row(1, T1)], 1) == 1 == count("fact_sales_order")  # counted: nothing known yet
    bulk = [sales_row(i, T1 + dt.timedelta(milliseconds=i)) for i in range(2, 5_002)]
    assert load_fact(bulk, 2) == 5_001 == count("fact_sales_order")
    # A tick: version 1 of order 1 again (a duplicate), its next version, and a new order.
    tick = [sales_row(1, T1), sales_row(1, T2, units_sold=7), sales_row(9_999, T2)]
    assert load_fact(tick, 3) == 5_003 == count("fact_sales_order")

    # A dimension: one row updated, one added, through a position; then a load without one (no load state).
    staff = [staff_row(1, first_name="Renamed"), staff_row(3)]
    dim = table_asset("dim_staff", WarehouseBatch(arrow("dim_staff", staff), position=Position("staff-table", 0, 0)))
    assert metadata_of(run([dim], warehouse_url), "dim_staff")["dagster/row_count"] == 3 == count("dim_staff")
    more = table_asset("dim_staff", arrow("dim_staff", [staff_row(4), staff_row(2, first_name="Also renamed")]))
    assert metadata_of(run([more], warehouse_url), "dim_staff")["dagster/row_count"] == 4 == count("dim_staff")
    again = table_asset("dim_staff", WarehouseBatch(arrow("dim_staff", [staff_row(5)]),
                                                    position=Position("staff-table", 1, 0)))
    assert metadata_of(run([again], warehouse_url), "dim_staff")["dagster/row_count"] == 5 == count("dim_staff")

    # Nothing new for the fact while another session holds it exclusively: the load does not wait on it.
    monkeypatch.setenv("WAREHOUSE_LOCK_TIMEOUT_SECONDS", "1")
    with psycopg.connect(warehouse_url) as holder:
        holder.execute("LOCK TABLE fact_sales_order IN ACCESS EXCLUSIVE MODE")
        assert load_fact([], 3) == 5_003
    assert count("fact_sales_order") == 5_003
    # An empty batch that moves the position waits for a load in flight (its count would otherwise be stale).
    from totesys_platform.warehouse.schema import table_lock_key

    with psycopg.connect(warehouse_url) as other_load:
        other_load.execute("SELECT pg_advisory_xact_lock(%s)", (table_lock_key("fact_sales_order"),))
        batch = WarehouseBatch(arrow("fact_sales_order", []), position=Position("processed-table", 4, 0))
        fact = table_asset("fact_sales_order", batch, deps=deps)
        result = run([*dimension_assets(), fact], warehouse_url, selection=[fact], raise_on_error=False)
        assert not result.success and "WarehouseLockTimeout" in failure_text(result)
    assert load_fact([], 4) == 5_003
    with psycopg.connect(warehouse_url) as conn:
        assert get_load_position(conn, "fact_sales_order") == Position("processed-table", 4, 0)
