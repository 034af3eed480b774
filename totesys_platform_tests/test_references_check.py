"""The incremental `references_resolve` check on a real warehouse (real PostgreSQL, real lake, real Dagster run)."""

from __future__ import annotations

import threading
import time

import dagster as dg
import psycopg
import pytest

from totesys_platform.defs.automation.checks import REFERENTIAL_CHECKS
from totesys_platform.defs.automation.checks import VALIDATION_TAG
from totesys_platform.defs.resources import WarehouseDatabase
from totesys_platform.defs.warehouse.assets import WAREHOUSE_ASSETS
from totesys_platform.defs.warehouse.io_manager import WarehouseIOManager
from totesys_platform.warehouse.rebuild import rebuild_warehouse
from totesys_platform.lake.processed.runner import read_processed
from totesys_platform.warehouse.loader import load_table, table_lock_key
from totesys_platform.warehouse.reads import read_table
from totesys_platform.warehouse.validation import check_references, dangling_references, record_references_validated
from totesys_platform_tests.test_warehouse_validation import loaded  # noqa: F401  (fixture)

COLS = ("sales_order_id, created_date, created_time, last_updated_date, last_updated_time, sales_staff_id, "
        "counterparty_id, units_sold, unit_price, currency_id, design_id, agreed_payment_date, "
        "agreed_delivery_date, agreed_delivery_location_id")


def _append_version(conn: psycopg.Connection, new_id: int, *, design_id: int | None = None) -> None:
    """A new fact row (a copy of order 2 under another id), as a load would append it."""
    rest = COLS.split(", ", 1)[1]
    if design_id is not None:
        rest = rest.replace("design_id", str(int(design_id)))
    conn.execute(f"INSERT INTO fact_sales_order ({COLS}) SELECT %s, {rest} FROM fact_sales_order "
                 "WHERE sales_order_id = 2", (new_id,))


def _state(conn: psycopg.Connection, fact: str) -> int | None:
    row = conn.execute("SELECT checked_through FROM totesys_meta.check_state "
                       "WHERE check_name = 'references_resolve' AND table_name = %s", (fact,)).fetchone()
    return None if row is None else row[0]


def _max_record_id(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT max(sales_record_id) FROM fact_sales_order").fetchone()[0]


def test_first_evaluation_scans_everything_then_only_new_rows(loaded):
    _, _, url = loaded
    with psycopg.connect(url) as conn:
        first = check_references(conn, "fact_sales_order")
        assert first.passed and first.full and first.rows_checked == 3
        assert _state(conn, "fact_sales_order") == first.checked_through == _max_record_id(conn)

        idle = check_references(conn, "fact_sales_order")
        assert idle.passed and not idle.full and idle.rows_checked == 0

        _append_version(conn, 10)
        _append_version(conn, 11)
        conn.commit()
        tick = check_references(conn, "fact_sales_order")
        assert tick.passed and not tick.full and tick.rows_checked == 2
        assert (tick.checked_after, tick.checked_through) == (first.checked_through, _max_record_id(conn))
        assert _state(conn, "fact_sales_order") == _max_record_id(conn)


def test_a_dangling_reference_in_a_new_row_fails_until_fixed(loaded):
    _, _, url = loaded
    with psycopg.connect(url) as conn:
        mark = check_references(conn, "fact_sales_order").checked_through
        conn.execute("SET session_replication_role = replica")  # bypass the FK, as a manual edit could
        _append_version(conn, 12, design_id=42)
        conn.execute("RESET session_replication_role")
        conn.commit()

        bad = check_references(conn, "fact_sales_order")
        assert not bad.passed and not bad.full and bad.rows_checked == 1
        assert bad.dangling["design_id"] == 1 and bad.dangling["sales_staff_id"] == 0 and bad.dangling_total == 1
        assert _state(conn, "fact_sales_order") == mark, "a failing evaluation must not advance the mark"
        assert not check_references(conn, "fact_sales_order").passed, "the failure is reported again"

        conn.execute("INSERT INTO dim_design (design_id, design_name, file_location, file_name) "
                     "VALUES (42, 'x', '/x', 'x.json')")
        conn.commit()
        fixed = check_references(conn, "fact_sales_order")
        assert fixed.passed and fixed.rows_checked == 1 and _state(conn, "fact_sales_order") == _max_record_id(conn)


def test_an_old_row_broken_in_place_is_found_by_the_full_scan(loaded):
    _, _, url = loaded
    with psycopg.connect(url) as conn:
        check_references(conn, "fact_sales_order")
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE fact_sales_order SET design_id = 42 WHERE sales_order_id = 2")
        conn.execute("RESET session_replication_role")
        conn.commit()
        assert check_references(conn, "fact_sales_order").passed  # the incremental form sees new rows only
        full = check_references(conn, "fact_sales_order", full=True)
        assert full.full and not full.passed and full.dangling["design_id"] == 1 and full.rows_checked == 3
        assert dangling_references(conn, "fact_sales_order")["design_id"] == 1


def test_a_rebuild_restarts_the_record_ids_and_the_next_evaluation_scans_everything(loaded):
    _, processed, url = loaded
    with psycopg.connect(url) as conn:
        assert check_references(conn, "fact_sales_order").checked_through == 3
    rebuild_warehouse(url, processed)
    with psycopg.connect(url) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE fact_sales_order SET design_id = 42 WHERE sales_order_id = 2")
        conn.execute("RESET session_replication_role")
        conn.commit()
        # Record ids run 1..3 again, the old mark is 3: without noticing the rebuild this would pass as idle.
        after = check_references(conn, "fact_sales_order")
        assert after.full and after.rows_checked == 3 and not after.passed


def test_bulk_loads_keep_the_mark_valid(loaded):
    """The loader drops and re-adds the FKs around bulk loads: that must not look like a rebuild."""
    _, _, url = loaded
    with psycopg.connect(url) as conn:
        check_references(conn, "fact_sales_order")
        conn.execute("ALTER TABLE fact_sales_order DROP CONSTRAINT fact_sales_order_design_id_fkey")
        conn.execute("ALTER TABLE fact_sales_order ADD CONSTRAINT fact_sales_order_design_id_fkey "
                     "FOREIGN KEY (design_id) REFERENCES dim_design (design_id)")
        conn.commit()
        again = check_references(conn, "fact_sales_order")
        assert not again.full and again.rows_checked == 0


def test_a_bulk_load_that_validated_every_row_moves_the_mark_and_later_rows_are_still_checked(loaded):
    _, processed, url = loaded
    with psycopg.connect(url) as conn:
        conn.execute("TRUNCATE fact_sales_order")  # a new relfilenode, as a rebuild gives: the old mark is void
        data = read_processed(processed, "fact_sales_order")
        stats = load_table(conn, "fact_sales_order", data, "append_versions")
        assert stats.references_validated  # into an empty fact: the foreign keys were added back
        record_references_validated(conn, "fact_sales_order", stats.inserted)
        conn.commit()
        assert _state(conn, "fact_sales_order") == _max_record_id(conn)
        after_load = check_references(conn, "fact_sales_order")
        assert after_load.passed and not after_load.full and after_load.rows_checked == 0

        # A row that arrives later without its dimension row is still caught.
        conn.execute("SET session_replication_role = replica")  # what a manual change could do
        _append_version(conn, 12, design_id=4242)
        conn.execute("RESET session_replication_role")
        conn.commit()
        later = check_references(conn, "fact_sales_order")
        assert not later.passed and later.rows_checked == 1 and later.dangling["design_id"] == 1


def test_a_tick_does_not_claim_to_have_validated_the_references(loaded):
    _, _, url = loaded
    with psycopg.connect(url) as conn:
        rows = read_table(conn, "fact_sales_order").drop_columns(["sales_record_id"]).slice(0, 1)
        stats = load_table(conn, "fact_sales_order", rows, "append_versions")
        assert stats.unchanged == 1 and not stats.references_validated
        conn.rollback()


def _run_check(url: str, run_config: dict | None = None, tags: dict | None = None) -> dg.AssetCheckEvaluation:
    check = next(c for c in REFERENTIAL_CHECKS if "fact_sales_order" in c.node_def.name)
    result = dg.materialize(
        [*WAREHOUSE_ASSETS, check],
        selection=dg.AssetSelection.checks(check),
        resources={"warehouse": WarehouseDatabase(db_url=url), "warehouse_io_manager": WarehouseIOManager(db_url=url),
                   "lake": dg.ResourceDefinition.none_resource()},
        run_config=run_config,
        tags=tags,
        raise_on_error=False,
    )
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


@pytest.mark.parametrize("asked", ["nothing", "the daily run's tag", "the check's config"])
def test_the_dagster_check_reports_rows_checked_and_scans_everything_when_asked(loaded, asked):
    _, _, url = loaded
    _run_check(url)
    with psycopg.connect(url) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE fact_sales_order SET design_id = 42 WHERE sales_order_id = 2")
        conn.commit()
    check_op = next(c for c in REFERENTIAL_CHECKS if "fact_sales_order" in c.node_def.name).node_def.name
    evaluation = {
        "nothing": lambda: _run_check(url),
        "the daily run's tag": lambda: _run_check(url, tags={VALIDATION_TAG: "full"}),
        "the check's config": lambda: _run_check(url, {"ops": {check_op: {"config": {"full_scan": True}}}}),
    }[asked]()
    meta = {k: v.value for k, v in evaluation.metadata.items()}
    if asked != "nothing":
        assert not evaluation.passed and meta["scan"] == "full" and meta["rows_checked"] == 3
        assert meta["dangling_total"] == 1 and meta["dangling_by_column"]["design_id"] == 1
    else:
        assert evaluation.passed and meta["scan"] == "incremental" and meta["rows_checked"] == 0


def test_the_check_does_not_wait_for_a_vacuum_or_analyze_of_the_fact(loaded):
    """VACUUM, ANALYZE and autovacuum hold SHARE UPDATE EXCLUSIVE on the table: the check reads past them."""
    _, _, url = loaded
    with psycopg.connect(url) as maintenance, psycopg.connect(url) as conn:
        maintenance.execute("LOCK TABLE fact_sales_order IN SHARE UPDATE EXCLUSIVE MODE")
        conn.execute("SET lock_timeout = '3s'")
        conn.commit()
        assert check_references(conn, "fact_sales_order").passed


def test_the_check_waits_for_a_load_in_flight_and_then_sees_its_rows(loaded):
    _, _, url = loaded
    with psycopg.connect(url) as load, psycopg.connect(url) as conn, psycopg.connect(url, autocommit=True) as watch:
        assert check_references(conn, "fact_sales_order").passed
        load.execute("SELECT pg_advisory_xact_lock(%s)", (table_lock_key("fact_sales_order"),))  # as load_table
        _append_version(load, 20)
        results = []
        checking = threading.Thread(target=lambda: results.append(check_references(conn, "fact_sales_order")))
        checking.start()
        for _ in range(1500):
            if watch.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid = %s",
                             (conn.info.backend_pid,)).fetchone()[0]:
                break
            assert checking.is_alive(), "the check did not wait for the load in flight"
            time.sleep(0.02)
        else:
            pytest.fail("the check neither finished nor waited for the load")
        load.commit()
        checking.join(30)
        (after,) = results
        assert after.passed and after.rows_checked == 1 and after.checked_through == _max_record_id(load)



def test_a_rebuild_waits_for_a_check_in_flight_and_neither_deadlocks(loaded):
    """The rebuild takes the loads' locks before it empties the tables, as the checks and loads take them before
    the table: a check halfway through (holding the lock, about to read the fact) finishes, then the rebuild."""
    _, processed, url = loaded
    with psycopg.connect(url) as check, psycopg.connect(url, autocommit=True) as watch:
        check.execute("SELECT pg_advisory_xact_lock_shared(%s)", (table_lock_key("fact_sales_order"),))
        errors: list[BaseException] = []

        def rebuild() -> None:
            try:
                rebuild_warehouse(url, processed)
            except BaseException as err:  # noqa: BLE001 - reported below
                errors.append(err)

        rebuilding = threading.Thread(target=rebuild)
        rebuilding.start()
        for _ in range(1500):
            if watch.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> %s",
                             (check.info.backend_pid,)).fetchone()[0]:
                break
            assert rebuilding.is_alive() and not errors, errors
            time.sleep(0.02)
        else:
            pytest.fail("the rebuild never waited for the check")
        assert check.execute("SELECT max(sales_record_id) FROM fact_sales_order").fetchone()[0] is not None
        check.commit()
        rebuilding.join(60)
    assert errors == []
    with psycopg.connect(url) as conn:
        assert check_references(conn, "fact_sales_order").passed
