"""The warehouse load state: the processed Delta table (its id), version and commit time each table is loaded
through, so a processed zone rebuilt or restored from an older copy (and processed past the warehouse's
position again) is merged again instead of skipped. A real PostgreSQL, a real folder lake, real Dagster runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import psycopg
import pyarrow as pa
import pytest

from totesys_platform.lake.delta import LakeZone, Position
from totesys_platform.lake.processed.runner import to_lake
from totesys_platform.defs.resources import LakeResource, WarehouseDatabase
from totesys_platform.star_schema import TARGET_TABLES
from totesys_platform.defs.warehouse.assets import WAREHOUSE_ASSETS, warehouse_key
from totesys_platform.defs.warehouse.io_manager import WarehouseIOManager
from totesys_platform.warehouse.rebuild import rebuild_warehouse
from totesys_platform.warehouse.schema import LATEST_VERSION, ensure_schema, get_load_position, set_load_state

# --------------------------------------------------------------------------------------------------
# The load state in PostgreSQL


def test_the_position_is_recorded_in_the_callers_transaction(warehouse_url):
    position = Position("table-1", 4, 1_700_000_000_123)
    with psycopg.connect(warehouse_url) as conn:
        ensure_schema(conn)
        assert get_load_position(conn, "dim_currency") is None
        set_load_state(conn, "dim_currency", position)
        conn.rollback()  # the caller's transaction owns it
        assert get_load_position(conn, "dim_currency") is None
        set_load_state(conn, "dim_currency", position)
        conn.commit()
        assert get_load_position(conn, "dim_currency") == position
        with pytest.raises(ValueError, match="must be a processed table's Position"):
            set_load_state(conn, "dim_currency", Position("table-1", -1, 0))
        with pytest.raises(ValueError, match="unknown warehouse table"):
            get_load_position(conn, "dim_nothing")


def test_a_warehouse_loaded_from_the_manifest_lake_is_migrated_and_loads_everything_once_more(warehouse_url):
    with psycopg.connect(warehouse_url) as conn:
        ensure_schema(conn)
        # Back to what schema version 2 left: batch numbers of the manifest logs, one table loaded through 7.
        conn.execute("DROP TABLE totesys_meta.load_state")
        conn.execute("CREATE TABLE totesys_meta.load_state (table_name text PRIMARY KEY, processed_seq bigint NOT NULL, "
                     "loaded_at timestamptz, processed_commit_id text)")
        conn.execute("DELETE FROM totesys_meta.schema_migrations WHERE version > 2")
        conn.execute("INSERT INTO totesys_meta.load_state VALUES ('fact_payment', 7, now(), 'c7')")
        conn.commit()

        assert ensure_schema(conn) == LATEST_VERSION == 6
        # A batch number means nothing in a Delta table: the table is loaded from its start (merges are idempotent).
        assert get_load_position(conn, "fact_payment") is None


# --------------------------------------------------------------------------------------------------
# The warehouse asset over a real processed zone


def currencies(*rows: tuple[int, str, str]) -> pa.Table:
    return pa.table({"currency_id": [r[0] for r in rows], "currency_code": [r[1] for r in rows],
                     "currency_name": [r[2] for r in rows]}, schema=TARGET_TABLES["dim_currency"].arrow_schema)


def commit_batch(zone: LakeZone, data: pa.Table) -> int:
    """Merge one batch into processed dim_currency, as the processed asset does; the version it made."""
    table = zone.table("dim_currency")
    return table.merge(to_lake("dim_currency", data), "currency_id", read=table.snapshot(), stage="process",
                       state={}).version


def load_currencies(processed_url: str, warehouse_url: str, tmp_path: Path) -> dict[str, object]:
    """Materialise warehouse/dim_currency; the materialisation's metadata."""
    [asset] = [a for a in WAREHOUSE_ASSETS if a.key == warehouse_key("dim_currency")]
    result = dg.materialize([asset], resources={
        "lake": LakeResource(ingestion_url=(tmp_path / "ingestion").as_uri(), processed_url=processed_url),
        "warehouse": WarehouseDatabase(db_url=warehouse_url),
        "warehouse_io_manager": WarehouseIOManager(db_url=warehouse_url),
    })
    assert result.success
    [materialization] = result.asset_materializations_for_node("warehouse__dim_currency")
    return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}


def warehouse_currencies(warehouse_url: str) -> set[tuple]:
    with psycopg.connect(warehouse_url) as conn:
        return set(conn.execute("SELECT currency_id, currency_code FROM dim_currency"))


def test_each_load_merges_only_the_processed_commits_made_since_the_last(warehouse_url, tmp_path):
    url = (tmp_path / "processed").as_uri()
    zone = LakeZone(url)
    commit_batch(zone, currencies((1, "GBP", "Pound Sterling"), (2, "USD", "US Dollar")))
    first = load_currencies(url, warehouse_url, tmp_path)
    assert first["processed_version"] == 0 and first["rows_inserted"] == 2
    commit_batch(zone, currencies((2, "USD", "United States Dollar")))
    second = load_currencies(url, warehouse_url, tmp_path)
    assert (second["processed_version"], second["rows_inserted"], second["rows_updated"]) == (1, 0, 1)
    third = load_currencies(url, warehouse_url, tmp_path)  # nothing new: the load state stays
    assert "processed_version" not in third and third["rows_inserted"] == third["rows_updated"] == 0


def test_a_processed_zone_restored_from_an_older_copy_and_processed_past_the_warehouse_is_merged_again(
    warehouse_url, tmp_path
):
    folder = tmp_path / "processed"
    url = folder.as_uri()
    zone = LakeZone(url)
    commit_batch(zone, currencies((1, "GBP", "Pound Sterling")))
    shutil.copytree(folder, tmp_path / "backup")  # a copy of the zone at version 0
    commit_batch(zone, currencies((2, "USD", "US Dollar")))

    first = load_currencies(url, warehouse_url, tmp_path)
    assert first["processed_version"] == 1 and "reloaded_all_rows" not in first
    with psycopg.connect(warehouse_url) as conn:
        loaded = get_load_position(conn, "dim_currency")
    assert loaded == zone.table("dim_currency").snapshot().position()

    # Restored one version behind, then processed again: version 1 exists again, but it is another commit.
    shutil.rmtree(folder)
    shutil.copytree(tmp_path / "backup", folder)
    commit_batch(zone, currencies((3, "EUR", "Euro")))

    second = load_currencies(url, warehouse_url, tmp_path)
    assert "holds another commit at version 1" in second["reloaded_all_rows"]
    assert second["rows_inserted"] == 1 and second["rows_unchanged"] == 1  # every row merged again
    assert warehouse_currencies(warehouse_url) == {(1, "GBP"), (2, "USD"), (3, "EUR")}
    with psycopg.connect(warehouse_url) as conn:
        assert get_load_position(conn, "dim_currency") == zone.table("dim_currency").snapshot().position()

    # The position holds again: nothing to merge, nothing reloaded, the state untouched.
    third = load_currencies(url, warehouse_url, tmp_path)
    assert "reloaded_all_rows" not in third and "processed_version" not in third
    assert third["rows_inserted"] == 0 and third["dagster/row_count"] == 3


def test_a_processed_table_created_again_is_merged_again(warehouse_url, tmp_path):
    folder = tmp_path / "processed"
    zone = LakeZone(folder.as_uri())
    commit_batch(zone, currencies((1, "GBP", "Pound Sterling")))
    load_currencies(folder.as_uri(), warehouse_url, tmp_path)
    shutil.rmtree(folder)  # lost, and rebuilt from the ingestion zone
    commit_batch(zone, currencies((1, "GBP", "Pound Sterling"), (2, "USD", "US Dollar")))
    again = load_currencies(folder.as_uri(), warehouse_url, tmp_path)
    assert "was created again" in again["reloaded_all_rows"]
    assert warehouse_currencies(warehouse_url) == {(1, "GBP"), (2, "USD")}


def test_rebuild_records_the_version_each_table_was_rebuilt_from(warehouse_url, tmp_path):
    zone = LakeZone((tmp_path / "processed").as_uri())
    commit_batch(zone, currencies((1, "GBP", "Pound Sterling")))
    commit_batch(zone, currencies((2, "USD", "US Dollar")))
    rebuild_warehouse(warehouse_url, zone)
    with psycopg.connect(warehouse_url) as conn:
        assert get_load_position(conn, "dim_currency") == zone.table("dim_currency").snapshot().position()
        assert get_load_position(conn, "dim_staff") is None  # no processed table at all
    assert warehouse_currencies(warehouse_url) == {(1, "GBP"), (2, "USD")}
