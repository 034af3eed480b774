"""Lake maintenance on real Delta tables: compaction keeps every row and the progress record, vacuum keeps what
retained versions need, and the Dagster job maintains every lake table."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime

import dagster as dg
import pyarrow as pa
import pytest

from totesys_platform.defs.automation.maintenance import lake_maintenance_job
from totesys_platform.lake.delta import LakeZone
from totesys_platform.lake.maintenance import maintain_table
from totesys_platform.lake.progress import META_KEY, progress_record
from totesys_platform.defs.resources import LakeResource


def rows(*ids: int) -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.int32()), "at": [datetime(2024, 1, 1, 0, 0, i) for i in ids]})


def ticks(table, count: int, start: int = 1) -> None:
    """`count` small commits, one per tick, each recording its progress."""
    for i in range(start, start + count):
        table.append(rows(i), read=table.snapshot(), stage="extract", state={"tick": i}, rows=1)


@pytest.fixture
def zone(tmp_path) -> LakeZone:
    return LakeZone((tmp_path / "lake").as_uri())


def test_compaction_rewrites_small_files_and_keeps_every_row_and_the_progress(zone):
    table = zone.table("sales_order")
    ticks(table, 12)
    before = table.snapshot()
    report = maintain_table(table)
    assert (report.files_before, report.files_after, report.files_compacted) == (12, 1, 12)
    after = table.snapshot()
    assert after.version == before.version + 1 and after.file_count() == 1
    assert sorted(table.read()["id"].to_pylist()) == list(range(1, 13))
    # The compaction carried the progress record; the writer's transaction numbering goes on.
    assert (after.state, after.txn_version) == ({"tick": 12}, 12)
    assert json.loads(after.delta.history(1)[0][META_KEY])["stage"] == "maintenance"
    # Readers of the change feed see no change in a compaction; the rows of later ticks come as usual.
    assert table.changes(before.version, after).num_rows == 0
    ticks(table, 1, start=13)
    assert table.changes(after.version, table.snapshot())["id"].to_pylist() == [13]
    # Versions younger than the retention stay readable: a lagging reader still gets its rows.
    assert sorted(table.changes(0, table.snapshot())["id"].to_pylist()) == list(range(2, 14))


def test_a_compaction_made_from_an_older_read_never_hides_newer_progress(zone):
    from deltalake import CommitProperties

    table = zone.table("payment")
    ticks(table, 3)
    stale = table.snapshot()  # maintenance reads...
    ticks(table, 1, start=4)  # ...an extraction commits meanwhile...
    stale.delta.optimize.compact(commit_properties=CommitProperties(custom_metadata={  # ...maintenance commits
        META_KEY: progress_record("payment", "m1", "maintenance", stale.state, stale.txn_version)}))
    now = table.snapshot()
    assert json.loads(now.delta.history(1)[0][META_KEY])["txn"] == 3  # the newest commit carries the old record
    assert (now.state, now.txn_version) == ({"tick": 4}, 4)  # but the progress read is transaction 4's


def test_vacuum_deletes_only_files_no_retained_version_needs(zone, tmp_path):
    table = zone.table("address")
    ticks(table, 3)
    folder = tmp_path / "lake" / "address"
    leftover = folder / "part-00000-of-a-run-that-died.parquet"  # a failed run's file, never committed
    leftover.write_bytes(b"x")
    week_ago = time.time() - 8 * 24 * 3600
    os.utime(leftover, (week_ago, week_ago))
    report = maintain_table(table)  # the default retention: 7 days
    assert not leftover.exists() and report.files_vacuumed == 1
    # The small files compacted just now stay for a week: every version is still readable.
    assert len(list(folder.glob("*.parquet"))) == 4
    assert sorted(table.changes(-1, table.snapshot())["id"].to_pylist()) == [1, 2, 3]

    dry = maintain_table(table, retention_hours=0, dry_run=True)
    assert dry.files_vacuumed == 3 and len(list(folder.glob("*.parquet"))) == 4  # a dry run deletes nothing
    maintain_table(table, retention_hours=0)
    assert len(list(folder.glob("*.parquet"))) == 1 and sorted(table.read()["id"].to_pylist()) == [1, 2, 3]


def test_a_quiet_table_keeps_its_progress_through_maintenance_and_log_clean_up(zone):
    """Vacuum's own commits carry no progress record; the log clean-up must never leave a table without one.
    (The retentions are set to zero, as if every log entry were older than they allow.)"""
    table = zone.table("currency")
    ticks(table, 2)
    # A checkpoint every 2 commits: delta-rs's own checkpoint-and-clean-up after a commit must not strike
    # between a maintenance's commits either.
    table.snapshot().delta.alter.set_table_properties(
        {"delta.logRetentionDuration": "interval 0 seconds", "delta.deletedFileRetentionDuration": "interval 0 seconds",
         "delta.checkpointInterval": "2"})
    for _ in range(3):  # compacts and vacuums, then twice with nothing new: the table stays quiet
        maintain_table(table, retention_hours=0)
        now = table.snapshot()
        assert (now.state, now.txn_version) == ({"tick": 2}, 2)
    log = {p.name for p in (zone.objects.root / "currency" / "_delta_log").iterdir()}
    assert len([name for name in log if name.endswith(".json")]) == 1  # cleaned up to the checkpointed commit
    for tick in range(3, 9):  # ticks and maintenances alternate: every commit count modulo the interval
        ticks(table, 1, start=tick)
        maintain_table(table, retention_hours=0)
        assert table.snapshot().state == {"tick": tick}
    assert sorted(table.read()["id"].to_pylist()) == list(range(1, 9))


def test_a_table_that_does_not_exist_is_skipped(zone):
    assert maintain_table(zone.table("staff")).skipped


def test_the_maintenance_job_maintains_every_lake_table_and_reports_on_their_assets(tmp_path):
    ingestion, processed = LakeZone((tmp_path / "ingestion").as_uri()), LakeZone((tmp_path / "processed").as_uri())
    ticks(ingestion.table("currency"), 3)
    ticks(processed.table("dim_currency"), 2)
    result = lake_maintenance_job.execute_in_process(resources={"lake": LakeResource(
        ingestion_url=ingestion.url, processed_url=processed.url)})
    assert result.success
    observations = [e.asset_observation_data.asset_observation for e in result.all_events
                    if e.event_type == dg.DagsterEventType.ASSET_OBSERVATION]
    observed = {o.asset_key.to_user_string(): o.metadata for o in observations}
    assert set(observed) == {"lake/ingestion/currency", "lake/processed/dim_currency"}
    assert observed["lake/ingestion/currency"]["lake/files"].value == 1
    assert observed["lake/ingestion/currency"]["files_compacted"].value == 3
    assert ingestion.table("currency").snapshot().file_count() == 1
