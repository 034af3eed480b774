"""The validation behind the fact-history checks, on a corrupted warehouse (real PostgreSQL, real lake)."""

from __future__ import annotations

import datetime as dt

import psycopg
import pyarrow as pa
import pytest

from totesys_platform.lake.processed.runner import process_table
from totesys_platform.lake.delta import LakeZone
from totesys_platform.lake.writes import commit_write
from totesys_platform.star_schema import DIMENSIONS, FACTS
from totesys_platform.warehouse.rebuild import rebuild_warehouse
from totesys_platform.warehouse.validation import (
    current_state_mismatches, dangling_references, fact_history_report, latest_versions,
)
from totesys_platform_tests.test_processed_runner import archive
from totesys_platform_tests.test_transforms_support import T0, row

LATER = T0 + dt.timedelta(hours=2)


@pytest.fixture
def loaded(tmp_path, warehouse_url):
    """A small consistent lake and the warehouse loaded from it: two versions of sales order 1."""
    ingestion = LakeZone((tmp_path / "ingestion").as_uri())
    processed = LakeZone((tmp_path / "processed").as_uri())
    for table in ("address", "counterparty", "currency", "department", "design", "staff", "payment_type"):
        archive(ingestion, table, [row(table, 1)])
    archive(ingestion, "sales_order", [row("sales_order", 1), row("sales_order", 2)])
    archive(ingestion, "sales_order", [row("sales_order", 1, LATER, units_sold=5000)])
    for name in (*DIMENSIONS, *FACTS):
        commit_write(process_table(name, ingestion, processed).write)
    rebuild_warehouse(warehouse_url, processed)
    return ingestion, processed, warehouse_url


def test_a_consistent_warehouse_passes(loaded):
    ingestion, processed, url = loaded
    with psycopg.connect(url) as conn:
        report = fact_history_report(conn, ingestion, "fact_sales_order")
        assert report.passed and report.lake_versions == report.warehouse_versions == 3
        assert current_state_mismatches(conn, processed, "fact_sales_order") == (0, [])
        assert not any(dangling_references(conn, "fact_sales_order").values())


def test_a_missing_version_and_a_stale_current_row_are_reported_with_their_keys(loaded):
    ingestion, processed, url = loaded
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM fact_sales_order WHERE sales_order_id = 1 AND units_sold = 5000")
        report = fact_history_report(conn, ingestion, "fact_sales_order")
        assert not report.passed and report.missing_count == 1
        assert report.missing == [(1, "2024-11-04 11:30:15.123000")]
        assert current_state_mismatches(conn, processed, "fact_sales_order") == (1, [1])


def test_a_duplicated_and_an_unexpected_version_are_reported(loaded):
    ingestion, _, url = loaded
    with psycopg.connect(url) as conn:
        conn.execute("ALTER TABLE fact_sales_order DROP CONSTRAINT IF EXISTS fact_sales_order_version_key")
        for constraint, in conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'fact_sales_order'::regclass AND contype = 'u'"
        ).fetchall():
            conn.execute(f'ALTER TABLE fact_sales_order DROP CONSTRAINT "{constraint}"')
        cols = ("sales_order_id, created_date, created_time, last_updated_date, last_updated_time, sales_staff_id, "
                "counterparty_id, units_sold, unit_price, currency_id, design_id, agreed_payment_date, "
                "agreed_delivery_date, agreed_delivery_location_id")
        conn.execute(f"INSERT INTO fact_sales_order ({cols}) SELECT {cols} FROM fact_sales_order WHERE sales_order_id = 2")
        conn.execute(f"INSERT INTO fact_sales_order ({cols}) SELECT 99, {cols.split(', ', 1)[1]} "
                     "FROM fact_sales_order WHERE sales_order_id = 2 LIMIT 1")
        report = fact_history_report(conn, ingestion, "fact_sales_order")
    assert report.duplicated_count == 1 and report.duplicated[0][0] == 2
    assert report.unexpected_count == 1 and report.unexpected[0][0] == 99


def test_an_orphan_reference_is_counted_per_column(loaded):
    _, _, url = loaded
    with psycopg.connect(url) as conn:
        conn.execute("SET session_replication_role = replica")  # bypass the FK, as a manual edit could
        conn.execute("UPDATE fact_sales_order SET design_id = 42 WHERE sales_order_id = 2")
        dangling = dangling_references(conn, "fact_sales_order")
    assert dangling["design_id"] == 1 and dangling["sales_staff_id"] == 0


def test_latest_versions_picks_the_last_update_of_each_id():
    data = pa.table({
        "sales_order_id": [2, 1, 1, 2],
        "last_updated_date": pa.array([dt.date(2024, 1, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 2), dt.date(2024, 1, 1)]),
        "last_updated_time": pa.array([dt.time(9), dt.time(8), dt.time(9), dt.time(10)], pa.time32("ms")),
        "v": ["a", "b", "c", "d"],
    })
    assert latest_versions(data, "sales_order_id")["v"].to_pylist() == ["c", "d"]
