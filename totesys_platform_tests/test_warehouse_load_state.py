"""The warehouse load state: the processed batch each table is loaded through AND that batch's commit id, so a
processed zone restored from an older copy (and processed past the warehouse's position again) is merged again
instead of skipped. Plain logic first, then a real PostgreSQL, a real file lake and a real Dagster run."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import dagster as dg
import psycopg
import pyarrow as pa
import pytest

from totesys_platform.lake.manifest import TableLog, data_file_key
from totesys_platform.lake.store import LakeStore
from totesys_platform.resources import LakeResource, WarehouseDatabase
from totesys_platform.star_schema import TARGET_TABLES
from totesys_platform.warehouse.assets import WAREHOUSE_ASSETS, warehouse_key
from totesys_platform.warehouse.io_manager import WarehouseIOManager
from totesys_platform.warehouse.rebuild import processed_commit_id, rebuild_warehouse
from totesys_platform.warehouse.schema import (
    LATEST_VERSION, LoadPosition, ensure_schema, get_load_position, get_load_state, resume_after, set_load_state,
)

# --------------------------------------------------------------------------------------------------
# resume_after: plain logic


def test_a_table_never_loaded_reads_everything():
    assert resume_after(LoadPosition(), head_seq=0, commit_id_at_seq=None) == (0, None)
    assert resume_after(LoadPosition(), head_seq=5, commit_id_at_seq=None) == (0, None)


def test_the_same_commit_at_the_loaded_batch_carries_on_after_it():
    assert resume_after(LoadPosition(3, "c3"), head_seq=3, commit_id_at_seq="c3") == (3, None)
    assert resume_after(LoadPosition(3, "c3"), head_seq=7, commit_id_at_seq="c3") == (3, None)


def test_another_commit_at_the_loaded_batch_reads_everything_again_and_says_why():
    after, why = resume_after(LoadPosition(3, "c3"), head_seq=4, commit_id_at_seq="other")
    assert after == 0
    assert "processed batch 3 is now commit other, not commit c3" in why and "restored" in why


def test_a_zone_that_ends_below_the_loaded_batch_reads_everything_again():
    for position in (LoadPosition(3, "c3"), LoadPosition(3)):
        after, why = resume_after(position, head_seq=1, commit_id_at_seq=None)
        assert after == 0 and "loaded through processed batch 3 but the processed zone ends at batch 1" in why


def test_a_position_recorded_without_a_commit_id_is_checked_by_its_number_only():
    # Rows from before schema version 2: the batch number still exists, so the load carries on, as before.
    assert resume_after(LoadPosition(3), head_seq=3, commit_id_at_seq="anything") == (3, None)
    assert resume_after(LoadPosition(3), head_seq=4, commit_id_at_seq=None) == (3, None)


# --------------------------------------------------------------------------------------------------
# The load state in PostgreSQL


def test_the_position_and_its_commit_id_are_recorded_together(warehouse_url):
    with psycopg.connect(warehouse_url) as conn:
        ensure_schema(conn)
        assert get_load_position(conn, "dim_currency") == LoadPosition(0, None)
        set_load_state(conn, "dim_currency", LoadPosition(4, "abc"))
        conn.rollback()  # the caller's transaction owns it
        assert get_load_position(conn, "dim_currency") == LoadPosition(0, None)
        set_load_state(conn, "dim_currency", LoadPosition(4, "abc"))
        conn.commit()
        assert get_load_position(conn, "dim_currency") == LoadPosition(4, "abc")
        assert get_load_state(conn, "dim_currency") == 4
        set_load_state(conn, "dim_currency", 5)  # a bare number records no commit id
        assert get_load_position(conn, "dim_currency") == LoadPosition(5, None)
        with pytest.raises(ValueError, match="processed_commit_id for dim_currency must be a non-empty string"):
            set_load_state(conn, "dim_currency", LoadPosition(5, ""))
        with pytest.raises(ValueError, match="non-negative integer, got -1"):
            set_load_state(conn, "dim_currency", LoadPosition(-1, "x"))


def test_a_version_1_warehouse_is_migrated_and_its_rows_keep_their_batch_numbers(warehouse_url):
    with psycopg.connect(warehouse_url) as conn:
        ensure_schema(conn)
        # Back to what schema version 1 left: no commit id column, one table loaded through batch 7.
        conn.execute("ALTER TABLE totesys_meta.load_state DROP COLUMN processed_commit_id")
        conn.execute("DELETE FROM totesys_meta.schema_migrations WHERE version > 1")
        conn.execute("INSERT INTO totesys_meta.load_state (table_name, processed_seq, loaded_at) "
                     "VALUES ('fact_payment', 7, now())")
        conn.commit()

        assert ensure_schema(conn) == LATEST_VERSION == 2
        assert get_load_position(conn, "fact_payment") == LoadPosition(7, None)
        assert resume_after(get_load_position(conn, "fact_payment"), head_seq=7, commit_id_at_seq="c7") == (7, None)


# --------------------------------------------------------------------------------------------------
# The warehouse asset over a real processed zone


def currencies(*rows: tuple[int, str, str]) -> pa.Table:
    return pa.table({"currency_id": [r[0] for r in rows], "currency_code": [r[1] for r in rows],
                     "currency_name": [r[2] for r in rows]}, schema=TARGET_TABLES["dim_currency"].arrow_schema)


def commit_batch(store: LakeStore, data: pa.Table, stamp: str) -> str:
    """Append one processed batch of dim_currency; its commit id."""
    log = TableLog(store, "dim_currency")
    key = data_file_key("dim_currency", datetime.fromisoformat(stamp))
    store.write_parquet(key, data.to_batches(), data.schema)
    return log.commit(file=key, rows=data.num_rows, state={}, expected_prev_seq=log.latest_seq()).commit_id


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


def test_a_processed_zone_restored_from_an_older_copy_and_processed_past_the_warehouse_is_merged_again(
    warehouse_url, tmp_path
):
    folder = tmp_path / "processed"
    url = folder.as_uri()
    store = LakeStore.from_url(url)
    commit_batch(store, currencies((1, "GBP", "Pound Sterling")), "2024-01-01T10:00:00")
    shutil.copytree(folder, tmp_path / "backup")  # a copy of the zone at batch 1
    c2 = commit_batch(store, currencies((2, "USD", "US Dollar")), "2024-01-01T10:20:00")

    first = load_currencies(url, warehouse_url, tmp_path)
    assert first["processed_seq"] == 2 and first["processed_commit_id"] == c2
    assert "reloaded_all_batches" not in first
    with psycopg.connect(warehouse_url) as conn:
        assert get_load_position(conn, "dim_currency") == LoadPosition(2, c2)

    # Restored one batch behind, then processed again: batch 2 exists again, but it is another commit.
    shutil.rmtree(folder)
    shutil.copytree(tmp_path / "backup", folder)
    c2_again = commit_batch(store, currencies((2, "USD", "US Dollar"), (3, "EUR", "Euro")), "2024-01-01T10:40:00")
    assert c2_again != c2

    second = load_currencies(url, warehouse_url, tmp_path)
    assert "processed batch 2 is now commit" in second["reloaded_all_batches"]
    assert second["rows_inserted"] == 1 and second["rows_unchanged"] == 2  # batches 1 and 2 merged again
    assert warehouse_currencies(warehouse_url) == {(1, "GBP"), (2, "USD"), (3, "EUR")}
    with psycopg.connect(warehouse_url) as conn:
        assert get_load_position(conn, "dim_currency") == LoadPosition(2, c2_again)

    # The position holds again: nothing to merge, nothing reloaded, the state untouched.
    third = load_currencies(url, warehouse_url, tmp_path)
    assert "reloaded_all_batches" not in third and "processed_seq" not in third
    assert third["rows_inserted"] == 0 and third["dagster/row_count"] == 3


def test_rebuild_records_the_commit_id_of_the_last_batch(warehouse_url, tmp_path):
    url = (tmp_path / "processed").as_uri()
    store = LakeStore.from_url(url)
    commit_batch(store, currencies((1, "GBP", "Pound Sterling")), "2024-01-01T10:00:00")
    c2 = commit_batch(store, currencies((2, "USD", "US Dollar")), "2024-01-01T10:20:00")
    assert processed_commit_id(store, "dim_currency", 2) == c2
    assert processed_commit_id(store, "dim_currency", 3) is None

    rebuild_warehouse(warehouse_url, store)
    with psycopg.connect(warehouse_url) as conn:
        assert get_load_position(conn, "dim_currency") == LoadPosition(2, c2)
        assert get_load_position(conn, "dim_staff") == LoadPosition(0, None)  # no processed batch at all
