"""A mass update (every row of a table changed in one transaction): archived exactly once with bounded memory.

Real PostgreSQL and a real lake folder. The limits are set small here so that a few dozen rows are a "mass"
update; bench/mass_update.py measures the memory with a million rows.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta

import psycopg
import pytest

from totesys_platform.lake.delta import LakeZone
from totesys_platform.lake.ingestion import late as late_module
from totesys_platform.lake.ingestion.late import classify_late
from totesys_platform.lake.ingestion.versions import from_ms, to_ms
from totesys_platform_tests.test_extract import (  # noqa: F401 - fixtures
    T0, BATCH, _insert, _module_source, _run, archived, archived_versions, current_versions, local_lake, source_url,
)

T1 = T0 + timedelta(hours=1)  # the mass update's last_updated


def _designs(conn, count: int, ts) -> list[int]:
    return [_insert(conn, "design", {"design_name": f"d{i}", "file_location": "/usr", "file_name": f"{i}.json",
                                     "created_at": ts, "last_updated": ts}) for i in range(count)]


def _state(zone: LakeZone, table: str) -> dict:
    return zone.table(table).snapshot().state


def test_a_mass_update_beyond_the_remembered_limit_is_archived_once_and_later_changes_still_are(
    source_url, local_lake
):
    """60 rows updated in one transaction, with room to remember 20: the batch archives each version once and
    remembers none (its window starts after its watermark); the next run reads none of them again. Later, a row
    of that update changed in place is captured, one rewritten unchanged is not, a new version and a row tied
    at the watermark are archived, and a transaction open across the mass update's run is archived after it."""
    limit = {"remember_limit": 20}
    with psycopg.connect(source_url) as conn:
        ids = _designs(conn, 60, T0)
    assert _run(source_url, local_lake, ["design"], batch_ts=BATCH, **limit)["design"].rows == 60
    with psycopg.connect(source_url) as conn:
        conn.execute("UPDATE design SET file_location = '/mass', last_updated = %s", (T1,))
    long_running = psycopg.connect(source_url)  # open across the mass update's run, committed after it
    try:
        late_id = _designs(long_running, 1, T1 - timedelta(minutes=1))[0]
        mass = _run(source_url, local_lake, ["design"], batch_ts=BATCH + timedelta(minutes=1), **limit)["design"]
        long_running.commit()
    finally:
        long_running.close()
    assert mass.rows == 60
    state = _state(local_lake, "design")
    assert state["versions"] == [] and len(json.dumps(state)) < 2_000
    assert to_ms(mass.watermark_to) == to_ms(T1)
    assert state["window_start"] == from_ms(to_ms(T1) + 1).isoformat(timespec="milliseconds")

    quiet = _run(source_url, local_lake, ["design"], batch_ts=BATCH + timedelta(minutes=2), **limit)["design"]
    assert (quiet.rows, quiet.duplicates_skipped, quiet.late_rows) == (1, 0, 1)  # only the long transaction's row

    in_place, rewritten, moved_on = ids[0], ids[1], ids[2]
    with psycopg.connect(source_url) as conn:
        conn.execute("UPDATE design SET file_name = 'edited.json' WHERE design_id = %s", (in_place,))
        conn.execute("UPDATE design SET design_name = design_name WHERE design_id = %s", (rewritten,))
        conn.execute("UPDATE design SET file_location = '/new', last_updated = %s WHERE design_id = %s",
                     (T1 + timedelta(seconds=1), moved_on))
        tied = _designs(conn, 1, T1)[0]
    later = _run(source_url, local_lake, ["design"], batch_ts=BATCH + timedelta(minutes=3), **limit)["design"]
    assert later.rows == 3
    assert later.out_of_order.changed_in_place == ((in_place, to_ms(T1)),)
    assert _run(source_url, local_lake, ["design"], batch_ts=BATCH + timedelta(minutes=4), **limit)["design"].rows == 0

    captures = Counter(archived_versions(local_lake, "design"))
    assert set(captures) >= current_versions(source_url, "design")
    assert {key: n for key, n in captures.items() if n > 1} == {(in_place, T1): 2}
    assert captures[(late_id, T1 - timedelta(minutes=1))] == 1 and captures[(tied, T1)] == 1
    assert sum(captures.values()) == 60 + 60 + 1 + 3
    latest = {r["design_id"]: r for r in archived(local_lake, "design").to_pylist()}  # capture order: last wins
    assert latest[in_place]["file_name"] == "edited.json" and latest[moved_on]["file_location"] == "/new"


@pytest.mark.parametrize("chunk_rows", [7, 1_000])
def test_a_mass_change_in_place_behind_the_window_is_looked_up_in_chunks_with_the_same_outcome(
    source_url, local_lake, chunk_rows, monkeypatch
):
    """Every row changed without moving last_updated, far behind the window: the late rows are looked up in the
    archive `chunk_rows` at a time; the outcome is the same whatever the chunk: the changed rows captured
    once and reported, the ones rewritten unchanged skipped."""
    with psycopg.connect(source_url) as conn:
        ids = _designs(conn, 30, T0)
        _designs(conn, 1, T0 + timedelta(hours=2))  # the watermark, far ahead of the 30
    options = {"lookback": timedelta(seconds=1), "late_chunk_rows": chunk_rows}
    _run(source_url, local_lake, ["design"], batch_ts=BATCH, **options)
    with psycopg.connect(source_url) as conn:
        conn.execute("UPDATE design SET file_location = '/edited' WHERE design_id %% 2 = 0 AND design_id <= %s",
                     (ids[-1],))
        conn.execute("UPDATE design SET design_name = design_name WHERE design_id %% 2 = 1 AND design_id <= %s",
                     (ids[-1],))
    looked_up: list[int] = []  # the size of each lookup in the archive

    def classify(late, *args):
        looked_up.append(late.num_rows)
        return classify_late(late, *args)

    monkeypatch.setattr(late_module, "classify_late", classify)
    result = _run(source_url, local_lake, ["design"], batch_ts=BATCH + timedelta(hours=1), **options)["design"]
    assert sum(looked_up) == 30 and max(looked_up) <= chunk_rows and len(looked_up) == -(-30 // chunk_rows)
    edited = sorted(i for i in ids if i % 2 == 0)
    assert (result.rows, result.late_rows) == (len(edited), len(edited))
    assert sorted(result.out_of_order.changed_in_place) == [(i, to_ms(T0)) for i in edited]
    assert _run(source_url, local_lake, ["design"], batch_ts=BATCH + timedelta(hours=2), **options)["design"].rows == 0
    captures = Counter(archived_versions(local_lake, "design"))
    assert {key for key, n in captures.items() if n == 2} == {(i, T0) for i in edited}


def test_versions_carried_from_earlier_batches_count_against_the_limit(source_url, local_lake):
    """The limit bounds what a batch's state remembers, not only what one run reads: 15 versions remembered,
    then 10 more inside the window, with room for 20, leave a state that remembers none."""
    limit = {"remember_limit": 20}
    with psycopg.connect(source_url) as conn:
        _designs(conn, 15, T0)
    _run(source_url, local_lake, ["design"], batch_ts=BATCH, **limit)
    assert len(_state(local_lake, "design")["versions"]) == 15
    with psycopg.connect(source_url) as conn:
        _designs(conn, 10, T0 + timedelta(minutes=1))
    assert _run(source_url, local_lake, ["design"], batch_ts=BATCH + timedelta(minutes=1), **limit)["design"].rows == 10
    state = _state(local_lake, "design")
    assert state["versions"] == []
    assert state["window_start"] == from_ms(to_ms(T0 + timedelta(minutes=1)) + 1).isoformat(timespec="milliseconds")
    assert _run(source_url, local_lake, ["design"], batch_ts=BATCH + timedelta(minutes=2), **limit)["design"].rows == 0
    assert len(set(archived_versions(local_lake, "design"))) == len(archived_versions(local_lake, "design")) == 25


def test_after_a_forgotten_window_the_source_check_counts_a_new_version_in_it_as_pending(source_url, local_lake):
    """The hourly source check reads how far back the next extraction reaches from the state; after a batch that
    remembered nothing (its window starts past its watermark) a new version inside the old window, written since,
    is read by its xmin, so it is pending for the next run, not reported as missed."""
    from totesys_platform.lake.ingestion.reconcile import source_drift

    with psycopg.connect(source_url) as conn:
        ids = _designs(conn, 30, T0)
        _designs(conn, 1, T0 + timedelta(minutes=10))  # the watermark
    _run(source_url, local_lake, ["design"], batch_ts=BATCH, remember_limit=20)
    assert _state(local_lake, "design")["versions"] == []
    with psycopg.connect(source_url) as conn:  # newer than its archived version, behind the watermark
        conn.execute("UPDATE design SET last_updated = %s WHERE design_id = %s", (T0 + timedelta(minutes=5), ids[0]))
    drift = source_drift(source_url, local_lake, "design")
    assert drift.passed and drift.pending == 1 and drift.reach == T0 - timedelta(minutes=5)
    later = _run(source_url, local_lake, ["design"], batch_ts=BATCH + timedelta(minutes=1), remember_limit=20)
    assert (later["design"].rows, later["design"].late_rows) == (1, 1)
    assert source_drift(source_url, local_lake, "design").pending == 0


def test_a_mass_edit_in_place_names_a_sample_and_counts_every_capture(source_url, local_lake, monkeypatch):
    """Out-of-order captures are counted in full but only the first CAPTURE_SAMPLE of each kind is kept (a mass
    edit of a million rows would otherwise hold a million tuples): here 4 of 15, over chunks of 4."""
    from totesys_platform.lake.ingestion import versions as versions_module
    from totesys_platform.source import contract
    monkeypatch.setattr(versions_module, "CAPTURE_SAMPLE", 4)
    with psycopg.connect(source_url) as conn:
        ids = _designs(conn, 15, T0)
        _designs(conn, 1, T0 + timedelta(hours=2))
    options = {"lookback": timedelta(seconds=1), "late_chunk_rows": 4}
    _run(source_url, local_lake, ["design"], batch_ts=BATCH, **options)
    with psycopg.connect(source_url) as conn:
        conn.execute("UPDATE design SET file_location = '/edited' WHERE design_id <= %s", (ids[-1],))
    result = _run(source_url, local_lake, ["design"], batch_ts=BATCH + timedelta(hours=1), **options)["design"]
    captures = result.out_of_order
    assert result.rows == 15 and captures.count == captures.changed_in_place_count == 15
    assert len(captures.changed_in_place) == 4 and set(captures.changed_in_place) <= {(i, to_ms(T0)) for i in ids}
    assert "15 row(s) changed without last_updated moving forward" in captures.describe(contract.SOURCE_TABLES["design"])
    assert _state(local_lake, "design")["recaptured_total"] == 15
    both = captures + captures
    assert (both.count, len(both.changed_in_place)) == (30, 4)


def test_late_rows_are_compared_column_by_column_with_null_equal_only_to_null(source_url, local_lake):
    """The archive comparison of late rows (vectorised for a mass change in place): a NULL rewritten as NULL is
    no change; NULL to '' and a value to NULL are changes in place."""
    from totesys_platform_tests.test_extract import seed_reference

    with psycopg.connect(source_url) as conn:
        null_line_2, empty_line_2 = seed_reference(conn)["address"]  # (line 2 NULL, district 'Avon'), ('', NULL)
        _insert(conn, "address", {"address_line_1": "1 Later Road", "address_line_2": None, "district": None,
                                  "city": "Leeds", "postal_code": "LS1", "country": "UK", "phone": "0113",
                                  "created_at": T0, "last_updated": T0 + timedelta(hours=2)})
    _run(source_url, local_lake, ["address"], lookback=timedelta(seconds=1), batch_ts=BATCH)
    steps = (
        ("UPDATE address SET address_line_2 = address_line_2, district = district", ()),
        ("UPDATE address SET address_line_2 = NULL WHERE address_id = %s", (empty_line_2,)),
        ("UPDATE address SET district = NULL WHERE address_id = %s", (null_line_2,)),
    )
    expected = ((), ((empty_line_2, to_ms(T0)),), ((null_line_2, to_ms(T0)),))
    for hour, ((statement, params), in_place) in enumerate(zip(steps, expected), start=1):
        with psycopg.connect(source_url) as conn:
            conn.execute(statement, params)
        result = _run(source_url, local_lake, ["address"], lookback=timedelta(seconds=1),
                      batch_ts=BATCH + timedelta(hours=hour))["address"]
        assert (result.rows, result.out_of_order.changed_in_place) == (len(in_place), in_place), statement
    rows = [r for r in archived(local_lake, "address").to_pylist() if r["address_id"] in (null_line_2, empty_line_2)]
    assert [(r["address_id"], r["address_line_2"], r["district"]) for r in rows] == [
        (null_line_2, None, "Avon"), (empty_line_2, "", None), (empty_line_2, None, None), (null_line_2, None, None)]
