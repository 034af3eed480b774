"""End to end: real totesys (simulator) -> real lake -> real warehouse, through real in-process Dagster runs."""

from __future__ import annotations

from datetime import date, datetime

import dagster as dg
import psycopg
import pytest

from totesys_platform.defs.automation.checks import ALL_CHECKS
from totesys_platform.defs.ingestion.assets import extract_totesys
from totesys_platform.lake.delta import LakeZone
from totesys_platform.defs.lake_io_manager import LakeIOManager
from totesys_platform.defs.processed.assets import PROCESSED_ASSETS
from totesys_platform.defs.resources import LakeResource, TotesysDatabase, WarehouseDatabase
from totesys_platform.local import simulator
from totesys_platform.star_schema import TARGET_TABLES
from totesys_platform.defs.warehouse.assets import WAREHOUSE_ASSETS
from totesys_platform.defs.warehouse.io_manager import WarehouseIOManager
from totesys_platform.warehouse.rebuild import rebuild_warehouse

ASSETS = [extract_totesys, *PROCESSED_ASSETS, *WAREHOUSE_ASSETS]


def resources(totesys_url, warehouse_url, ingestion_url, processed_url, endpoint=""):
    lake = LakeResource(ingestion_url=ingestion_url, processed_url=processed_url, aws_endpoint_url=endpoint)
    return {
        "totesys": TotesysDatabase(db_url=totesys_url),
        "lake": lake,
        "lake_io_manager": LakeIOManager(lake=lake),
        "warehouse": WarehouseDatabase(db_url=warehouse_url),
        "warehouse_io_manager": WarehouseIOManager(db_url=warehouse_url),
    }


def run_pipeline(res, *, with_checks=True) -> dg.ExecuteInProcessResult:
    result = dg.materialize([*ASSETS, *(ALL_CHECKS if with_checks else [])], resources=res, raise_on_error=True)
    assert result.success
    return result


def table_rows(url: str, table: str, exclude: str | None = None) -> list[tuple]:
    cols = [c for c in TARGET_TABLES[table].column_names if c != exclude]
    with psycopg.connect(url) as conn:
        q = psycopg.sql.SQL("SELECT {} FROM {} ORDER BY 1, 2").format(
            psycopg.sql.SQL(", ").join(map(psycopg.sql.Identifier, cols)), psycopg.sql.Identifier(table))
        return conn.execute(q).fetchall()


def count(url: str, query: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchone()[0]


@pytest.fixture
def seeded_totesys(totesys_url):
    simulator.seed(totesys_url, scale=0.02, seed=7, end=date(2023, 6, 30), progress=lambda *a, **k: None)
    return totesys_url


@pytest.fixture
def lake_urls(tmp_path):
    return (tmp_path / "ingestion").as_uri(), (tmp_path / "processed").as_uri()


def test_first_run_fills_every_warehouse_table_and_every_check_passes(seeded_totesys, warehouse_url, lake_urls):
    res = resources(seeded_totesys, warehouse_url, *lake_urls)
    result = run_pipeline(res)
    for evaluation in result.get_asset_check_evaluations():
        assert evaluation.passed, (evaluation.asset_key, evaluation.check_name, evaluation.metadata)
    assert count(warehouse_url, "SELECT count(*) FROM fact_sales_order") == count(seeded_totesys, "SELECT count(*) FROM sales_order") > 0
    assert count(warehouse_url, "SELECT count(*) FROM fact_payment") == count(seeded_totesys, "SELECT count(*) FROM payment")
    assert count(warehouse_url, "SELECT count(*) FROM dim_counterparty") == count(seeded_totesys, "SELECT count(*) FROM counterparty")
    assert count(warehouse_url, "SELECT count(*) FROM dim_currency WHERE currency_name = 'Pound Sterling'") == 1
    for table in TARGET_TABLES:
        assert count(warehouse_url, f"SELECT count(*) FROM {table}") > 0, table
    # The catalog's row counts: versions archived per lake table, fact rows per processed fact.
    archived = {m.asset_key.path[-1]: m.metadata["dagster/row_count"].value
                for m in result.asset_materializations_for_node("extract_totesys")}
    assert archived["sales_order"] == count(seeded_totesys, "SELECT count(*) FROM sales_order")
    (fact,) = result.asset_materializations_for_node("lake__processed__fact_payment")
    assert fact.metadata["dagster/row_count"].value == count(seeded_totesys, "SELECT count(*) FROM payment")


def test_rerun_adds_nothing_and_live_changes_add_exactly_the_new_versions(seeded_totesys, warehouse_url, lake_urls):
    res = resources(seeded_totesys, warehouse_url, *lake_urls)
    run_pipeline(res, with_checks=False)
    before = {t: count(warehouse_url, f"SELECT count(*) FROM {t}") for t in TARGET_TABLES}
    run_pipeline(res, with_checks=False)
    assert {t: count(warehouse_url, f"SELECT count(*) FROM {t}") for t in TARGET_TABLES} == before

    # Live activity: new orders, payments paid, order updates and reference-row updates.
    sim = simulator.Simulator(seeded_totesys, seed=3, update_rate=1.0, reference_update_rate=1.0)
    versions_before = {t: count(seeded_totesys, f"SELECT count(*) FROM {t}") for t in ("sales_order", "payment")}
    for minute in range(3):
        sim.step(datetime(2023, 7, 3, 9, minute, 30, 123000))
    result = run_pipeline(res)
    for evaluation in result.get_asset_check_evaluations():
        assert evaluation.passed, (evaluation.asset_key, evaluation.check_name, evaluation.metadata)
    assert count(warehouse_url, "SELECT count(*) FROM fact_sales_order") > before["fact_sales_order"]
    # The current view has exactly one row per order, equal to the source's current state.
    assert count(warehouse_url, "SELECT count(*) FROM fact_sales_order_current") == count(seeded_totesys, "SELECT count(*) FROM sales_order")
    assert versions_before["sales_order"] <= count(seeded_totesys, "SELECT count(*) FROM sales_order")


def test_rebuild_from_the_lake_gives_the_same_warehouse_as_incremental_loads(
    seeded_totesys, warehouse_url, lake_urls, empty_db_url
):
    res = resources(seeded_totesys, warehouse_url, *lake_urls)
    run_pipeline(res, with_checks=False)
    sim = simulator.Simulator(seeded_totesys, seed=11, update_rate=0.5, reference_update_rate=0.5)
    for minute in range(4):
        sim.step(datetime(2023, 7, 4, 10, minute, 0, 0))
        run_pipeline(res, with_checks=False)
    rebuilt = empty_db_url("rebuilt")
    rebuild_warehouse(rebuilt, LakeZone(lake_urls[1]))
    for name, table in TARGET_TABLES.items():
        assert table_rows(rebuilt, name) == table_rows(warehouse_url, name), name


def test_pipeline_runs_against_s3_on_moto(seeded_totesys, warehouse_url, s3_bucket, moto_endpoint):
    res = resources(seeded_totesys, warehouse_url, f"s3://{s3_bucket}/ingestion", f"s3://{s3_bucket}/processed", moto_endpoint)
    run_pipeline(res, with_checks=False)
    assert count(warehouse_url, "SELECT count(*) FROM fact_sales_order") == count(seeded_totesys, "SELECT count(*) FROM sales_order")


def test_sales_report_publishes_a_chart_and_a_page_with_the_warehouse_figures(seeded_totesys, warehouse_url, lake_urls):
    from totesys_platform.defs.analytics.assets import sales_report

    res = resources(seeded_totesys, warehouse_url, *lake_urls)
    run_pipeline(res, with_checks=False)
    result = dg.materialize([*ASSETS, sales_report], resources=res, selection=[sales_report])
    assert result.success
    (mat,) = result.asset_materializations_for_node("analytics__sales_report")
    store = LakeZone(lake_urls[1]).objects
    keys = list(store.list_keys("reports/"))
    png = [k for k in keys if k.endswith(".png")]
    page = [k for k in keys if k.endswith(".html")]
    assert len(png) == 1 and len(page) == 1
    assert store.read_bytes(png[0]).startswith(b"\x89PNG")
    html = store.read_bytes(page[0]).decode()
    unpaid = count(warehouse_url, "SELECT count(*) FROM fact_payment_current p JOIN dim_payment_type t USING (payment_type_id) "
                                  "WHERE NOT paid AND t.payment_type_name = 'SALES_RECEIPT'")
    assert mat.metadata["payments_outstanding"].value == unpaid
    top = count(warehouse_url, "SELECT d.design_name FROM fact_sales_order_current f JOIN dim_design d USING (design_id) "
                               "GROUP BY d.design_id, d.design_name ORDER BY sum(units_sold) DESC, d.design_name LIMIT 1")
    import html as html_lib

    assert html_lib.escape(top) in html and top in mat.metadata["summary"].value

    # The report's one pass over the current view gives what one query per figure gives.
    from totesys_platform.analytics.report import query_figures

    with psycopg.connect(warehouse_url) as conn:
        figures = query_figures(conn, top=5)
        assert figures.sales_by_month == [tuple(r) for r in conn.execute(
            "SELECT to_char(f.created_date, 'YYYY-MM'), c.currency_code, sum(f.units_sold * f.unit_price) "
            "FROM fact_sales_order_current f JOIN dim_currency c USING (currency_id) GROUP BY 1, 2 ORDER BY 1, 2")]
        assert figures.top_designs == [tuple(r) for r in conn.execute(
            "SELECT d.design_name, sum(f.units_sold) AS u FROM fact_sales_order_current f JOIN dim_design d "
            "USING (design_id) GROUP BY d.design_id, d.design_name ORDER BY u DESC, d.design_name LIMIT 5")]
        assert figures.top_counterparties == [tuple(r) for r in conn.execute(
            "SELECT cp.counterparty_legal_name, c.currency_code, sum(f.units_sold * f.unit_price) AS v "
            "FROM fact_sales_order_current f JOIN dim_counterparty cp USING (counterparty_id) "
            "JOIN dim_currency c USING (currency_id) GROUP BY 1, 2 ORDER BY v DESC, 1 LIMIT 5")]
        assert len(figures.sales_by_month) > 1 and len(figures.top_designs) == 5


def _reduced(processed, name: str) -> list[tuple]:
    """A processed table's rows, sorted (facts: every version; dimensions: one row per key)."""
    from totesys_platform.lake.processed.runner import read_processed

    rows = [tuple(r.values()) for r in read_processed(processed, name).to_pylist()]
    if TARGET_TABLES[name].kind == "dimension":
        assert len({r[0] for r in rows}) == len(rows), f"{name} holds a key twice"
    return sorted(rows)


def test_processing_tick_by_tick_equals_processing_the_whole_ingestion_zone_at_once(
    seeded_totesys, warehouse_url, lake_urls, tmp_path
):
    """Incremental processing over a simulated history (orders, payments, addresses, departments
    changing) gives exactly the processed tables that one pass over the same ingestion zone gives."""
    from totesys_platform.lake.processed.runner import process_table
    from totesys_platform.lake.writes import commit_write

    res = resources(seeded_totesys, warehouse_url, *lake_urls)
    run_pipeline(res, with_checks=False)
    sim = simulator.Simulator(seeded_totesys, seed=5, orders_per_minute=20, update_rate=2.0, reference_update_rate=2.0)
    with psycopg.connect(seeded_totesys) as conn:  # make sure both kinds of reference change happen
        conn.execute("UPDATE address SET city = 'O''Fallon', last_updated = '2023-07-05 08:00:00' "
                     "WHERE address_id = (SELECT legal_address_id FROM counterparty WHERE counterparty_id = 1)")
        conn.execute("UPDATE department SET location = 'Leeds', last_updated = '2023-07-05 08:00:00' "
                     "WHERE department_id = (SELECT department_id FROM staff WHERE staff_id = 1)")
    for minute in range(4):
        sim.step(datetime(2023, 7, 5, 9, minute, 15, 500000))
        run_pipeline(res, with_checks=False)

    ingestion = LakeZone(lake_urls[0])
    incremental = LakeZone(lake_urls[1])
    from_scratch = LakeZone((tmp_path / "processed_from_scratch").as_uri())
    for name in TARGET_TABLES:
        commit_write(process_table(name, ingestion, from_scratch).write)
    for name in TARGET_TABLES:
        assert _reduced(incremental, name) == _reduced(from_scratch, name), name
    # The reference changes reached their joined dimensions: they equal totesys's current state.
    with psycopg.connect(seeded_totesys) as conn:
        city = conn.execute("SELECT a.city FROM counterparty c JOIN address a ON a.address_id = c.legal_address_id "
                            "WHERE c.counterparty_id = 1").fetchone()[0]
        location = conn.execute("SELECT d.location FROM staff s JOIN department d USING (department_id) "
                                "WHERE s.staff_id = 1").fetchone()[0]
    assert [r[5] for r in _reduced(incremental, "dim_counterparty") if r[0] == 1] == [city]
    assert [r[4] for r in _reduced(incremental, "dim_staff") if r[0] == 1] == [location]
    assert count(warehouse_url, "SELECT count(*) FROM dim_counterparty WHERE counterparty_id = 1 "
                                "AND counterparty_legal_city = %s" % psycopg.sql.quote(city)) == 1
