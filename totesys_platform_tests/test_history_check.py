"""The incremental fact-history check: after a passing evaluation, only what was added since is compared, and
whatever makes its mark untrustworthy makes it compare everything again (real PostgreSQL, real lake)."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from bench.lake_ticks import load_warehouse

from totesys_platform.lake.delta import LakeZone
from totesys_platform.lake.processed.runner import process_table
from totesys_platform.lake.quarantine import quarantine_version
from totesys_platform.lake.writes import commit_write
from totesys_platform.star_schema import DIMENSIONS, FACTS
from totesys_platform.warehouse.history_check import check_fact_history
from totesys_platform.warehouse.schema import ensure_schema
from totesys_platform_tests.test_processed_runner import archive
from totesys_platform_tests.test_transforms_support import T0, row

FACT = "fact_sales_order"


def run_pipeline(ingestion: LakeZone, processed: LakeZone, url: str) -> None:
    """The processed tables, then the warehouse loads from their commits since the recorded positions."""
    for name in (*DIMENSIONS, *FACTS):
        commit_write(process_table(name, ingestion, processed).write)
    with psycopg.connect(url) as conn:
        ensure_schema(conn)
    load_warehouse(url, processed)


@pytest.fixture
def stack(tmp_path, warehouse_url):
    ingestion = LakeZone((tmp_path / "ingestion").as_uri())
    processed = LakeZone((tmp_path / "processed").as_uri())
    for table in ("address", "counterparty", "currency", "department", "design", "staff", "payment_type"):
        archive(ingestion, table, [row(table, 1)])
    archive(ingestion, "sales_order", [row("sales_order", 1), row("sales_order", 2)])
    run_pipeline(ingestion, processed, warehouse_url)
    return ingestion, processed, warehouse_url


def evaluate(stack, **kwargs):
    ingestion, processed, url = stack
    with psycopg.connect(url, autocommit=True) as conn:
        return check_fact_history(conn, ingestion, processed, FACT, **kwargs)


def test_after_a_first_full_evaluation_only_the_versions_added_since_are_compared(stack):
    ingestion, processed, url = stack
    first = evaluate(stack)
    assert first.passed and first.scan == "full (first evaluation)" and first.report.lake_versions == 2

    idle = evaluate(stack)
    assert idle.passed and idle.scan == "incremental"
    assert (idle.report.lake_versions, idle.report.warehouse_versions) == (0, 0)

    archive(ingestion, "sales_order", [row("sales_order", 1, T0 + dt.timedelta(hours=1), units_sold=7),
                                       row("sales_order", 3)])
    run_pipeline(ingestion, processed, url)
    later = evaluate(stack)
    assert later.passed and later.scan == "incremental"
    assert (later.report.lake_versions, later.report.warehouse_versions) == (2, 2)


def test_a_version_archived_but_not_loaded_fails_until_it_is_loaded(stack):
    ingestion, processed, url = stack
    assert evaluate(stack).passed
    later = T0 + dt.timedelta(hours=1)
    archive(ingestion, "sales_order", [row("sales_order", 2, later, units_sold=9)])
    for name in (*DIMENSIONS, *FACTS):
        commit_write(process_table(name, ingestion, processed).write)  # the warehouse not loaded yet

    behind = evaluate(stack)
    assert not behind.passed and behind.scan == "incremental"
    assert behind.report.missing == [(2, str(later))] and behind.current_sample == [2]
    assert not evaluate(stack).passed  # the mark did not move: still reported

    run_pipeline(ingestion, processed, url)
    assert evaluate(stack).passed


def test_a_new_row_repeating_a_held_version_is_a_duplicate_and_one_never_archived_unexpected(stack):
    _, _, url = stack
    assert evaluate(stack).passed
    cols = ("created_date, created_time, last_updated_date, last_updated_time, sales_staff_id, counterparty_id, "
            "units_sold, unit_price, currency_id, design_id, agreed_payment_date, agreed_delivery_date, "
            "agreed_delivery_location_id")
    with psycopg.connect(url) as conn:
        for constraint, in conn.execute(
                "SELECT conname FROM pg_constraint WHERE conrelid = 'fact_sales_order'::regclass AND contype = 'u'"
        ).fetchall():
            conn.execute(f'ALTER TABLE fact_sales_order DROP CONSTRAINT "{constraint}"')
        conn.execute(f"INSERT INTO fact_sales_order (sales_order_id, {cols}) "
                     f"SELECT sales_order_id, {cols} FROM fact_sales_order WHERE sales_order_id = 2")
        conn.execute(f"INSERT INTO fact_sales_order (sales_order_id, {cols}) "
                     f"SELECT 99, {cols} FROM fact_sales_order WHERE sales_order_id = 1 LIMIT 1")
    result = evaluate(stack)
    assert result.scan == "incremental" and not result.passed
    assert result.report.duplicated_count == 1 and result.report.duplicated[0][0] == 2
    assert result.report.unexpected_count == 1 and result.report.unexpected[0][0] == 99
    assert result.current_mismatches == 0  # no processed row changed: the views are not compared again


def test_an_archived_row_repeating_a_loaded_version_is_not_missing(stack):
    ingestion, _, _ = stack
    assert evaluate(stack).passed
    # A tombstone or a capture again of a version: the ingestion zone holds it twice, the fact once.
    archive(ingestion, "sales_order", [row("sales_order", 1)])
    result = evaluate(stack)
    assert result.passed and result.scan == "incremental" and result.report.lake_versions == 1


def test_a_truncated_fact_or_a_changed_quarantine_list_makes_the_next_evaluation_full(stack):
    ingestion, processed, url = stack
    assert evaluate(stack).passed
    quarantine_version(ingestion, "sales_order", 2, T0, "test")
    changed = evaluate(stack)
    assert changed.scan == "full (the quarantine list changed)"
    assert not changed.passed and changed.report.unexpected_count == 1  # loaded before it was quarantined

    with psycopg.connect(url) as conn:
        conn.execute("TRUNCATE fact_sales_order")
    truncated = evaluate(stack)
    assert truncated.scan == "full (the fact was rebuilt since the last evaluation)" and not truncated.passed


def test_a_lake_table_created_again_makes_the_next_evaluation_full(stack, tmp_path):
    import shutil

    ingestion, processed, url = stack
    assert evaluate(stack).passed
    shutil.rmtree(tmp_path / "processed" / FACT)
    commit_write(process_table(FACT, ingestion, processed).write)
    result = evaluate(stack)
    assert result.scan.startswith("full (lake table fact_sales_order") and "created again" in result.scan
    assert result.passed


def test_asked_for_the_whole_history_it_compares_everything(stack):
    assert evaluate(stack).passed
    assert evaluate(stack, full=True).scan == "full (asked for)"


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_read_matching_keeps_the_rows_a_key_selects_across_files_and_schema_versions(where, tmp_path, request):
    import pyarrow as pa
    import pyarrow.compute as pc

    if where == "s3":
        endpoint, bucket = request.getfixturevalue("moto_endpoint"), request.getfixturevalue("s3_bucket")
        zone = LakeZone(f"s3://{bucket}/ingestion", endpoint_url=endpoint)
    else:
        zone = LakeZone((tmp_path / "ingestion").as_uri())
    table = zone.table("things")
    first = pa.table({"id": pa.array([1, 2, 3], pa.int32()), "name": ["a", "b", "c"]})
    table.append(first, read=table.snapshot(), stage="test", state={}, rows=3)
    later = pa.table({"id": pa.array([4, 5], pa.int32()), "name": ["d", "e"], "extra": pa.array([7, 8], pa.int64())})
    table.append(later, read=table.snapshot(), stage="test", state={}, rows=2, evolve_schema=True)

    kept = table.read_matching(table.snapshot(), ["id", "name", "extra"], "id",
                               lambda ids: pc.is_in(ids, value_set=pa.array([2, 5], pa.int32())))
    assert sorted(kept.to_pylist(), key=lambda r: r["id"]) == [
        {"id": 2, "name": "b", "extra": None}, {"id": 5, "name": "e", "extra": 8}]
    none = table.read_matching(table.snapshot(), ["id"], "id", lambda ids: pc.equal(ids, 99))
    assert none.num_rows == 0 and none.schema.names == ["id"]


def test_a_check_state_table_from_before_the_incremental_history_check_gains_its_column(stack):
    from totesys_platform.warehouse.validation import check_references

    _, _, url = stack
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS totesys_meta.check_state")
        conn.execute(  # the table as the references check created it before
            "CREATE TABLE totesys_meta.check_state (check_name text NOT NULL, table_name text NOT NULL, "
            "checked_through bigint NOT NULL, relfilenode oid NOT NULL, rows_checked bigint NOT NULL, "
            "checked_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (check_name, table_name))")
        assert check_references(conn, FACT).passed
    assert evaluate(stack).passed and evaluate(stack).scan == "incremental"
