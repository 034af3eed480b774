"""Contract section 4, end to end with real Dagster runs: rows changed without `last_updated` moving forward are
captured, not refused; the latest capture reaches the processed zone and the warehouse, and a warning check names
the ids. Deleted rows are archived as tombstones and leave the current views; their history stays."""

from __future__ import annotations

import os
from datetime import timedelta

import dagster as dg
import psycopg
import pyarrow.compute as pc

from totesys_platform.lake.delta import LakeZone
from totesys_platform.defs.ingestion.assets import VERSIONS_MOVE_FORWARD
from totesys_platform.lake.ingestion.deletes import read_markers
from totesys_platform.lake.ingestion.reconcile import source_drift
from totesys_platform.lake.processed.runner import read_processed
from totesys_platform.warehouse.rebuild import rebuild_warehouse
from totesys_platform_tests.source_statistics import wait_for_delete_statistics
from totesys_platform_tests.test_pipeline import count, resources, run_pipeline

# (pytest finds the fixtures seeded_totesys and lake_urls through this import)
from totesys_platform_tests.test_pipeline import lake_urls, seeded_totesys  # noqa: F401


def _evaluations(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}


def _one(url: str, query: str, params=()) -> tuple:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchone()


def test_rows_changed_in_place_or_moved_back_are_captured_and_the_latest_capture_reaches_the_warehouse(
        seeded_totesys, warehouse_url, lake_urls):  # noqa: F811
    res = resources(seeded_totesys, warehouse_url, *lake_urls)
    first = _evaluations(run_pipeline(res))
    assert first[("sales_order", VERSIONS_MOVE_FORWARD)].passed

    # A careless writer: an order's quantity and a staff member's name change, last_updated stays (far behind
    # the look-back window: the seeded history ended in 2023); a payment's last_updated goes back a second.
    with psycopg.connect(seeded_totesys) as conn:
        order, order_lu, units = conn.execute(
            "SELECT sales_order_id, last_updated, units_sold FROM sales_order ORDER BY sales_order_id LIMIT 1").fetchone()
        conn.execute("UPDATE sales_order SET units_sold = units_sold + 1 WHERE sales_order_id = %s", (order,))
        staff = conn.execute("SELECT min(staff_id) FROM staff").fetchone()[0]
        conn.execute("UPDATE staff SET first_name = 'Changed-In-Place' WHERE staff_id = %s", (staff,))
        payment, payment_lu, paid = conn.execute(
            "SELECT payment_id, last_updated, paid FROM payment ORDER BY payment_id DESC LIMIT 1").fetchone()
        conn.execute("UPDATE payment SET last_updated = last_updated - interval '1 second', paid = NOT paid "
                     "WHERE payment_id = %s", (payment,))
    record_before = _one(warehouse_url, "SELECT sales_record_id FROM fact_sales_order WHERE sales_order_id = %s "
                                        "AND last_updated_date = %s AND last_updated_time = %s",
                         (order, order_lu.date(), order_lu.time()))

    result = run_pipeline(res)  # nothing halts
    checks = _evaluations(result)
    captured = checks[("sales_order", VERSIONS_MOVE_FORWARD)]
    assert not captured.passed and captured.severity == dg.AssetCheckSeverity.WARN
    assert captured.metadata["changed_in_place"].value == 1 and str(order) in captured.metadata["ids"].value
    assert "set last_updated to the time of every change" in captured.description
    assert str(staff) in checks[("staff", VERSIONS_MOVE_FORWARD)].metadata["ids"].value
    assert checks[("payment", VERSIONS_MOVE_FORWARD)].metadata["moved_back"].value == 1
    assert checks[("design", VERSIONS_MOVE_FORWARD)].passed
    # Capture health, per table and run (plotted by the UI): the order's change came in behind the window.
    health = {m.asset_key.path[-1]: m.metadata for m in result.asset_materializations_for_node("extract_totesys")}
    assert health["sales_order"]["captured_out_of_order"].value == 1
    assert health["sales_order"]["recaptured_total"].value == 1
    assert health["sales_order"]["late_versions"].value == 1
    assert health["sales_order"]["transactions_open_at_snapshot"].value == 0
    assert health["sales_order"]["source_snapshot"].value.count(":") == 2
    # The warehouse agrees with the lake: every other check passes.
    failing = {key for key, e in checks.items() if not e.passed}
    assert failing == {("sales_order", VERSIONS_MOVE_FORWARD), ("staff", VERSIONS_MOVE_FORWARD),
                       ("payment", VERSIONS_MOVE_FORWARD)}, failing
    # The lake holds the source's content for the rows changed in place; the moved-back payment is a version of
    # its own, and the hourly source check keeps reporting it until the writer is fixed.
    ingestion = LakeZone(lake_urls[0])
    assert source_drift(seeded_totesys, ingestion, "sales_order").passed
    assert source_drift(seeded_totesys, ingestion, "staff").passed
    assert source_drift(seeded_totesys, ingestion, "payment").counts["moved_back"] == 1

    # The fact row of that version holds the latest content, under its record id; the current view shows it.
    assert _one(warehouse_url, "SELECT sales_record_id, units_sold FROM fact_sales_order WHERE sales_order_id = %s "
                               "AND last_updated_date = %s AND last_updated_time = %s",
                (order, order_lu.date(), order_lu.time())) == (record_before[0], units + 1)
    assert count(warehouse_url, f"SELECT count(*) FROM fact_sales_order WHERE sales_order_id = {order}") == 1
    assert _one(warehouse_url, "SELECT units_sold FROM fact_sales_order_current WHERE sales_order_id = %s",
                (order,)) == (units + 1,)
    assert _one(warehouse_url, "SELECT first_name FROM dim_staff WHERE staff_id = %s", (staff,)) == ("Changed-In-Place",)
    earlier = payment_lu - timedelta(seconds=1)
    assert _one(warehouse_url, "SELECT paid FROM fact_payment WHERE payment_id = %s AND last_updated_date = %s AND "
                               "last_updated_time = %s", (payment, earlier.date(), earlier.time())) == (not paid,)
    # The processed fact keeps one row per version, the latest capture.
    processed = read_processed(LakeZone(lake_urls[1]), "fact_sales_order")
    mine = processed.filter(pc.equal(processed["sales_order_id"], order))
    assert mine["units_sold"].to_pylist() == [units + 1]

    # Read again, nothing is captured twice; a rebuild from the lake gives the same content.
    again = _evaluations(run_pipeline(res, with_checks=False))
    assert [(table, e.description) for (table, name), e in again.items()
            if name == VERSIONS_MOVE_FORWARD and not e.passed] == []
    rebuild_warehouse(warehouse_url, LakeZone(lake_urls[1]))
    assert _one(warehouse_url, "SELECT units_sold FROM fact_sales_order_current WHERE sales_order_id = %s",
                (order,)) == (units + 1,)
    assert _one(warehouse_url, "SELECT first_name FROM dim_staff WHERE staff_id = %s", (staff,)) == ("Changed-In-Place",)


def test_a_deleted_order_and_payment_leave_the_current_views_and_keep_their_history(
        seeded_totesys, warehouse_url, lake_urls):  # noqa: F811
    res = resources(seeded_totesys, warehouse_url, *lake_urls)
    run_pipeline(res, with_checks=False)
    with psycopg.connect(seeded_totesys, autocommit=True) as conn:
        markers = read_markers(conn, ["sales_order", "payment"])
        order, = conn.execute("SELECT max(sales_order_id) FROM sales_order").fetchone()
        txn, = conn.execute("SELECT transaction_id FROM transaction WHERE sales_order_id = %s", (order,)).fetchone()
        payment, = conn.execute("SELECT min(payment_id) FROM payment").fetchone()
        conn.execute("DELETE FROM payment WHERE payment_id = %s", (payment,))
        # transaction.sales_order_id is ON DELETE SET NULL: the order's transaction changes without last_updated.
        conn.execute("DELETE FROM sales_order WHERE sales_order_id = %s", (order,))
    for table in ("sales_order", "payment"):
        wait_for_delete_statistics(seeded_totesys, table, markers[table])
    history = count(warehouse_url, f"SELECT count(*) FROM fact_sales_order WHERE sales_order_id = {order}")

    result = run_pipeline(res)  # nothing halts
    health = {m.asset_key.path[-1]: m.metadata for m in result.asset_materializations_for_node("extract_totesys")}
    assert health["sales_order"]["tombstones"].value == 1 and health["payment"]["tombstones"].value == 1
    assert health["sales_order"]["tombstones_total"].value == 1 and health["currency"]["tombstones"].value == 0
    # Gone from the current views; the history stays, its latest version marked with when the deletion was seen.
    assert count(warehouse_url, f"SELECT count(*) FROM fact_sales_order_current WHERE sales_order_id = {order}") == 0
    assert count(warehouse_url, f"SELECT count(*) FROM fact_payment_current WHERE payment_id = {payment}") == 0
    assert count(warehouse_url, f"SELECT count(*) FROM fact_sales_order WHERE sales_order_id = {order}") == history
    assert count(warehouse_url, f"SELECT count(*) FROM fact_sales_order WHERE sales_order_id = {order} "
                                "AND deleted_at IS NOT NULL") == 1
    assert count(warehouse_url, "SELECT count(*) FROM fact_sales_order_current") == count(
        seeded_totesys, "SELECT count(*) FROM sales_order")
    assert count(warehouse_url, "SELECT count(*) FROM fact_payment_current") == count(
        seeded_totesys, "SELECT count(*) FROM payment")
    # The cascade's in-place change reached the dimension; dimension rows the history refers to stay.
    assert _one(warehouse_url, "SELECT sales_order_id FROM dim_transaction WHERE transaction_id = %s", (txn,)) == (None,)
    # Every check agrees: the lake's tombstones, the processed facts and the warehouse say the same.
    failing = {(e.asset_key.path[-1], e.check_name) for e in result.get_asset_check_evaluations() if not e.passed}
    assert failing == {("transaction", VERSIONS_MOVE_FORWARD)}, failing
    ingestion = LakeZone(lake_urls[0])
    assert source_drift(seeded_totesys, ingestion, "sales_order").counts["deleted"] == 0
    processed = read_processed(LakeZone(lake_urls[1]), "fact_payment")
    assert processed.filter(pc.equal(processed["payment_id"], payment))["deleted_at"].null_count == 0

    # Nothing is buried twice, and a rebuild from the lake gives the same current state.
    again = run_pipeline(res, with_checks=False)
    health = {m.asset_key.path[-1]: m.metadata for m in again.asset_materializations_for_node("extract_totesys")}
    assert health["sales_order"]["tombstones"].value == 0
    rebuild_warehouse(warehouse_url, LakeZone(lake_urls[1]))
    assert count(warehouse_url, f"SELECT count(*) FROM fact_sales_order_current WHERE sales_order_id = {order}") == 0
    assert count(warehouse_url, f"SELECT count(*) FROM fact_sales_order WHERE sales_order_id = {order} "
                                "AND deleted_at IS NOT NULL") == 1


def _pipeline_job_on_the_test_stack() -> dg.JobDefinition:
    """The pipeline job as Dagster's run worker builds it, its executor included, on the test's databases and lake
    (named by the environment: a run worker rebuilds the job by importing this function)."""
    from totesys_platform.defs.automation.jobs import totesys_etl
    from totesys_platform.definitions import defs

    urls = [os.environ[f"TEST_STACK_{name}"] for name in ("TOTESYS", "WAREHOUSE", "INGESTION", "PROCESSED")]
    return dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks, jobs=[totesys_etl],
                          resources=resources(*urls)).resolve_job_def("totesys_etl")


def test_a_mass_disappearance_stops_only_its_table_and_the_others_load_in_the_same_run(
        seeded_totesys, warehouse_url, lake_urls, monkeypatch):  # noqa: F811
    for name, url in zip(("TOTESYS", "WAREHOUSE", "INGESTION", "PROCESSED"), (seeded_totesys, warehouse_url, *lake_urls)):
        monkeypatch.setenv(f"TEST_STACK_{name}", url)
    run_pipeline(resources(seeded_totesys, warehouse_url, *lake_urls), with_checks=False)
    payments = count(warehouse_url, "SELECT count(*) FROM fact_payment")
    with psycopg.connect(seeded_totesys, autocommit=True) as conn:
        marker = read_markers(conn, ["payment"])["payment"]
        conn.execute("DELETE FROM payment WHERE payment_id % 4 <> 0")  # three in four payments gone at once
        conn.execute("INSERT INTO design (design_name, file_location, file_name, created_at, last_updated) "
                     "VALUES ('Flowing', '/designs', 'flowing.json', now(), now())")
        order, = conn.execute("SELECT max(sales_order_id) FROM sales_order").fetchone()
        conn.execute("UPDATE sales_order SET units_sold = units_sold + 1, last_updated = now() "
                     "WHERE sales_order_id = %s", (order,))
    wait_for_delete_statistics(seeded_totesys, "payment", marker)

    with dg.instance_for_test() as instance:
        result = dg.execute_job(dg.reconstructable(_pipeline_job_on_the_test_stack), instance, raise_on_error=False)
        assert not result.success  # the run fails, naming the table...
        failures = [e for e in result.all_events if e.is_step_failure]
        assert [e.step_key for e in failures] == ["extract_totesys"]
        message = failures[0].step_failure_data.error.to_string()  # (the error, under Dagster's wrapper)
        assert "MassDisappearanceError: payment: " in message and "are gone from the source since the last run" in message
    # ...and the other tables went on in the same run: the new design reached the warehouse, the order's new
    # version the processed zone. The facts wait for dim_date, which is built from payments too (rule 7: every
    # date a fact refers to is loaded first). Payments stay as they were, nothing buried.
    assert _one(warehouse_url, "SELECT count(*) FROM dim_design WHERE design_name = 'Flowing'") == (1,)
    processed = read_processed(LakeZone(lake_urls[1]), "fact_sales_order")
    assert len(processed.filter(pc.equal(processed["sales_order_id"], order))) == 2
    assert count(warehouse_url, f"SELECT count(*) FROM fact_sales_order WHERE sales_order_id = {order}") == 1
    assert count(warehouse_url, "SELECT count(*) FROM fact_payment") == payments
    assert count(warehouse_url, "SELECT count(*) FROM fact_payment WHERE deleted_at IS NOT NULL") == 0
