"""The hourly source-to-lake reconciliation (lake/ingestion/reconcile.py), against a real PostgreSQL and lake."""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg
import pytest

from totesys_platform.lake.ingestion.deletes import read_markers
from totesys_platform.lake.ingestion.extract import SourceError, extract_tables
from totesys_platform.lake.ingestion.reconcile import describe, hourly_slice, source_drift
from totesys_platform.lake.delta import LakeZone
from totesys_platform.lake.store import LakeError
from totesys_platform_tests.source_statistics import wait_for_delete_statistics

T0 = datetime(2024, 11, 4, 9, 0, 0)
LOOKBACK = timedelta(minutes=2)


def _currency(conn, code: str, last_updated: datetime) -> int:
    return conn.execute(
        "INSERT INTO currency (currency_code, created_at, last_updated) VALUES (%s, %s, %s) RETURNING currency_id",
        (code, T0, last_updated)).fetchone()[0]


@pytest.fixture
def archived(totesys_url, tmp_path):
    """Six currencies one minute apart, archived by one extraction with a two-minute look-back."""
    with psycopg.connect(totesys_url) as conn:
        ids = [_currency(conn, code, T0 + timedelta(minutes=i))
               for i, code in enumerate(["GBP", "USD", "EUR", "CHF", "JPY", "AUD"])]
    lake = LakeZone((tmp_path / "ingestion").as_uri())
    extract_tables(totesys_url, lake, ["currency"], lookback=LOOKBACK, batch_ts=datetime(2026, 1, 1))
    return totesys_url, lake, ids


def test_a_source_that_matches_the_archive_passes(archived):
    url, lake, _ = archived
    drift = source_drift(url, lake, "currency")
    assert drift.passed and drift.source_rows == drift.archived_ids == 6
    assert drift.counts == {"deleted": 0, "moved_back": 0, "missed": 0, "changed_in_place": 0}
    assert drift.reach == T0 + timedelta(minutes=3)  # watermark 09:05 minus the look-back
    assert describe(drift).startswith("every source row matches")


def test_every_kind_of_drift_far_behind_the_watermark_is_named(archived):
    url, lake, ids = archived
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE currency SET currency_code = 'NZD' WHERE currency_id = %s", (ids[0],))
        conn.execute("UPDATE currency SET last_updated = last_updated - interval '1 ms' WHERE currency_id = %s",
                     (ids[1],))
        conn.execute("DELETE FROM currency WHERE currency_id = %s", (ids[2],))
        late = _currency(conn, "SEK", T0 + timedelta(seconds=30))  # committed now, far behind the window
        fresh = _currency(conn, "NOK", T0 + timedelta(minutes=9))  # the next extraction reads it
        conn.execute("UPDATE currency SET last_updated = %s WHERE currency_id = %s",
                     (T0 + timedelta(minutes=4, seconds=30), ids[3]))  # forward, inside the window: pending
    drift = source_drift(url, lake, "currency")
    assert not drift.passed
    assert drift.counts == {"deleted": 1, "moved_back": 1, "missed": 1, "changed_in_place": 1}
    assert drift.pending == 2  # `fresh` and ids[3]
    assert drift.samples["changed_in_place"] == [[ids[0], "2024-11-04T09:00:00.000", "2024-11-04T09:00:00.000"]]
    assert drift.samples["moved_back"] == [[ids[1], "2024-11-04T09:00:59.999", "2024-11-04T09:01:00.000"]]
    assert drift.samples["deleted"] == [[ids[2], None, "2024-11-04T09:02:00.000"]]
    assert drift.samples["missed"] == [[late, "2024-11-04T09:00:30.000", None]]
    assert fresh not in [row[0] for rows in drift.samples.values() for row in rows]
    text = describe(drift)
    assert "1 changed without moving last_updated" in text and "1 deleted in the source" in text


def test_deletions_alone_do_not_fail_it(archived):
    url, lake, ids = archived
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM currency WHERE currency_id = %s", (ids[0],))
    drift = source_drift(url, lake, "currency")
    assert drift.passed and drift.counts["deleted"] == 1


def test_a_deletion_archived_as_a_tombstone_is_no_longer_reported(archived):
    url, lake, ids = archived
    with psycopg.connect(url, autocommit=True) as conn:
        marker = read_markers(conn, ["currency"])["currency"]
        conn.execute("DELETE FROM currency WHERE currency_id = %s", (ids[0],))
    wait_for_delete_statistics(url, "currency", marker)
    assert source_drift(url, lake, "currency").counts["deleted"] == 1
    buried = extract_tables(url, lake, ["currency"], lookback=LOOKBACK, batch_ts=datetime(2026, 1, 2))["currency"]
    assert buried.tombstones == 1
    drift = source_drift(url, lake, "currency")
    assert drift.counts["deleted"] == 0 and drift.archived_ids == 5 and drift.passed


def test_an_empty_lake_counts_every_source_row_as_pending(totesys_url, tmp_path):
    with psycopg.connect(totesys_url) as conn:
        _currency(conn, "GBP", T0)
    drift = source_drift(totesys_url, LakeZone((tmp_path / "empty").as_uri()), "currency")
    assert drift.passed and drift.pending == 1 and drift.reach is None


def test_a_drifted_source_schema_is_a_clear_error(archived):
    url, lake, _ = archived
    with psycopg.connect(url) as conn:
        conn.execute("ALTER TABLE currency ALTER COLUMN currency_code TYPE text")
    with pytest.raises(SourceError, match=r"currency\.currency_code: column retyped to text"):
        source_drift(url, lake, "currency")


def test_an_unreadable_extraction_state_is_a_clear_error(archived):
    url, lake, _ = archived
    table = lake.table("currency")
    table.append(table.read().slice(0, 0), read=table.snapshot(), stage="extract", state={"watermark": "yesterday"},
                 rows=0)
    with pytest.raises(LakeError, match=r"currency: the extraction state recorded in .*currency version 1 is unreadable"):
        source_drift(url, lake, "currency")


def test_the_check_warns_on_deletions_and_fails_on_changes_it_can_never_archive():
    import dagster as dg

    from totesys_platform.defs.automation.source_checks import drift_result
    from totesys_platform.lake.ingestion.reconcile import SourceDrift

    key = dg.AssetCheckKey(dg.AssetKey(["lake", "ingestion", "currency"]), "source_matches_lake")
    clean = drift_result(SourceDrift("currency", counts={"deleted": 0, "moved_back": 0}), key)
    deleted = drift_result(SourceDrift("currency", counts={"deleted": 2, "moved_back": 0}), key)
    moved = drift_result(SourceDrift("currency", counts={"deleted": 2, "moved_back": 1}), key)
    assert clean.passed and (clean.asset_key, clean.check_name) == (key.asset_key, key.name)
    assert (deleted.passed, deleted.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert (moved.passed, moved.severity) == (False, dg.AssetCheckSeverity.ERROR)


def test_hourly_slices_take_turns_and_cover_every_id_once():
    assert hourly_slice(None, 100, 5) is None and hourly_slice(99, 100, 5) is None  # one slice: every id
    slices = [hourly_slice(250, 100, hour) for hour in range(3)]
    assert [(s.index, s.count, s.low, s.high) for s in slices] == [(0, 3, None, 100), (1, 3, 100, 200), (2, 3, 200, None)]
    assert hourly_slice(250, 100, 3) == slices[0]  # the fourth hour starts again
    assert slices[2].describe() == "ids from 200 (slice 3 of 3, one per hour)"


def test_a_sliced_comparison_reads_one_slice_of_ids_and_the_slices_together_find_every_drift(archived):
    url, lake, ids = archived
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE currency SET currency_code = 'NZD' WHERE currency_id = %s", (ids[0],))
        conn.execute("DELETE FROM currency WHERE currency_id = %s", (ids[4],))
        newest = _currency(conn, "SEK", T0 + timedelta(minutes=9))  # above every archived id: the last slice
    count = hourly_slice(max(ids), 2, 0).count
    drifts = [source_drift(url, lake, "currency", slice_ids=2, hour=hour) for hour in range(count)]
    assert sum(d.source_rows for d in drifts) == 6 and sum(d.archived_ids for d in drifts) == 6
    assert [d.counts["changed_in_place"] for d in drifts].count(1) == 1
    assert [d.counts["deleted"] for d in drifts].count(1) == 1
    assert drifts[-1].pending == 1 and newest > max(ids)
    assert all(d.compared.endswith(f"of {count}, one per hour)") for d in drifts)
    assert source_drift(url, lake, "currency").compared == "every id"
