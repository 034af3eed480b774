"""The extraction hands each table over as soon as it is read, so its commit overlaps the reading of the others;
a caller that stops early leaves nothing behind (real PostgreSQL, real Delta tables in a folder)."""

from __future__ import annotations

import os
import re
import threading
import time
from datetime import datetime, timedelta

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from totesys_platform.defs.ingestion.assets import extract_totesys
from totesys_platform.lake.delta import LakeZone
from totesys_platform.lake.ingestion import extract as extract_module
from totesys_platform.lake.ingestion.extract import Extraction, stream_extraction
from totesys_platform.lake.writes import Spool, commit_write
from totesys_platform.local import simulator
from totesys_platform.source import contract
from totesys_platform_tests.test_pipeline import resources

BATCH = datetime(2026, 1, 1, 12, 0, 0)
HELD_BACK = contract.TABLE_NAMES[-1]


@pytest.fixture
def seeded_url(totesys_url) -> str:
    simulator.seed(totesys_url, scale=0.002, seed=7, progress=lambda *a, **k: None)
    return totesys_url


def _spools_left(run: Extraction) -> list[str]:
    return [r.write.data.path for r in run.results.values()
            if isinstance(r.write.data, Spool) and os.path.exists(r.write.data.path)]


@pytest.mark.parametrize("connections", [1, 2])
def test_a_table_is_handed_over_to_commit_while_another_is_still_being_read(
        seeded_url, tmp_path, monkeypatch, connections):
    zone = LakeZone((tmp_path / "ingestion").as_uri())
    first_handed_over = threading.Event()
    real_extract = extract_module._extract_table

    def held_until_a_table_is_handed_over(conn, live, *args, **kw):
        if live.name == HELD_BACK:  # without streaming, nothing is handed over before every table is read
            assert first_handed_over.wait(timeout=30), f"{HELD_BACK} was read before any table was handed over"
        return real_extract(conn, live, *args, **kw)

    monkeypatch.setattr(extract_module, "_extract_table", held_until_a_table_is_handed_over)
    run = Extraction({}, {})
    handed_over: list[str] = []
    for result in stream_extraction(run, seeded_url, zone, batch_ts=BATCH, connections=connections):
        first_handed_over.set()
        handed_over.append(result.table)
        assert commit_write(result.write) is not None  # committed while the other tables are read
    assert not run.failures
    assert sorted(handed_over) == sorted(contract.TABLE_NAMES)
    assert list(run.results) == list(contract.TABLE_NAMES)  # in table order once done, whatever the reading order
    assert all(zone.table(t).snapshot().version == 0 for t in contract.TABLE_NAMES)


@pytest.mark.parametrize("connections", [1, 2])
def test_a_caller_that_stops_after_one_table_commits_nothing_else_and_leaves_no_spool(
        seeded_url, tmp_path, connections):
    zone = LakeZone((tmp_path / "ingestion").as_uri())
    run = Extraction({}, {})
    batches = stream_extraction(run, seeded_url, zone, batch_ts=BATCH, connections=connections)
    first = next(batches)
    assert first.rows > 0 and isinstance(first.write.data, Spool)
    batches.close()  # the commit of the first table failed, say: the step stops
    assert _spools_left(run) == []
    assert all(zone.table(t).snapshot().version == -1 for t in contract.TABLE_NAMES)
    # The next run reads everything again.
    again = Extraction({}, {})
    for result in stream_extraction(again, seeded_url, zone, batch_ts=BATCH, connections=connections):
        commit_write(result.write)
    assert again.results[first.table].rows == first.rows


def test_closing_the_stream_cancels_a_read_in_flight_and_leaves_no_reading_thread(seeded_url, tmp_path):
    zone = LakeZone((tmp_path / "ingestion").as_uri())
    holder = psycopg.connect(seeded_url)
    holder.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(HELD_BACK)))
    try:
        run = Extraction({}, {})
        batches = stream_extraction(run, seeded_url, zone, ["currency", HELD_BACK], batch_ts=BATCH, connections=2,
                                    statement_timeout=timedelta(minutes=5))
        assert next(batches).table == "currency"  # the other connection waits for the lock on HELD_BACK
        with psycopg.connect(seeded_url, autocommit=True) as watch:
            for _ in range(1500):
                if watch.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                 "AND application_name = 'totesys_platform extract'").fetchone()[0]:
                    break
                time.sleep(0.02)
            else:
                pytest.fail(f"no read of {HELD_BACK} waited for its lock")
        batches.close()  # the commit failed, say: the read waiting for the lock is cancelled, not waited for
    finally:
        holder.close()
    assert "canceling statement due to user request" in str(run.failures[HELD_BACK])
    assert not [t for t in threading.enumerate() if t.name.startswith("extract-")]
    assert _spools_left(run) == []


def test_the_asset_hands_each_table_to_the_lake_io_manager_before_the_extraction_is_done(totesys_url, tmp_path):
    """In a real Dagster run, the lake IO manager commits the tables while the extraction goes on: the first table
    is committed before the last one is read, and every one before the step logs that the extraction is done."""
    simulator.seed(totesys_url, scale=0.002, seed=7, progress=lambda *a, **k: None)
    ingestion, processed = (tmp_path / "ingestion").as_uri(), (tmp_path / "processed").as_uri()
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([extract_totesys], instance=instance, raise_on_error=True,
                            resources=resources(totesys_url, "postgresql://unused", ingestion, processed))
    entries = instance.all_logs(result.run_id)
    handled = [i for i, e in enumerate(entries)
               if e.dagster_event is not None and e.dagster_event.event_type_value == "HANDLED_OUTPUT"]
    read = [i for i, e in enumerate(entries) if re.match(r"\w+: \d+ new versions since", e.user_message)]
    (done,) = [i for i, e in enumerate(entries) if e.user_message.startswith("Extraction done")]
    assert len(handled) == len(read) == len(contract.TABLE_NAMES) and max(handled) < done
    assert min(handled) < max(read)  # the first table was committed before the last one was read
    assert all(LakeZone(ingestion).table(t).snapshot().version == 0 for t in contract.TABLE_NAMES)
