"""A lake written by the code before Delta Lake (a committed fixture: Parquet batches + manifest logs) is
converted once, without re-extracting, losing or duplicating a version, and the pipeline carries on from it."""

from __future__ import annotations

import io
import json
import shutil
from datetime import date, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from totesys_platform import cli
from totesys_platform.lake.convert import UnconvertedLakeError, convert_ingestion_zone, needs_conversion
from totesys_platform.lake.delta import LakeZone
from totesys_platform.lake.ingestion.extract import extract_tables
from totesys_platform.lake.quarantine import quarantine_records
from totesys_platform.local import simulator
from totesys_platform.source.contract import TABLE_NAMES

FIXTURE = Path(__file__).parent / "fixtures" / "manifest_lake" / "ingestion"


def manifest_versions(root: Path, table: str) -> tuple[set[tuple], int, dict]:
    """The versions the old log holds for a table, its last seq and that entry's state."""
    versions, seq, state = set(), 0, {}
    for entry_file in sorted((root / "_manifests" / table).glob("*.json")):
        entry = json.loads(entry_file.read_text())
        seq, state = entry["seq"], entry["state"]
        if entry["file"]:
            rows = pq.read_table(io.BytesIO((root / entry["file"]).read_bytes()))
            versions |= {(r[f"{table}_id"], r["last_updated"], seq) for r in rows.to_pylist()}
    return versions, seq, state


@pytest.fixture
def source(totesys_url):
    """The source the fixture was extracted from (the simulator is deterministic)."""
    simulator.seed(totesys_url, scale=0.005, seed=3, end=date(2023, 1, 31), progress=lambda *a, **k: None)
    with simulator.Simulator(totesys_url, seed=5, update_rate=2.0, reference_update_rate=2.0) as sim:
        for minute in range(3):
            sim.step(datetime(2023, 2, 1, 9, minute, 30, 123000))
    return totesys_url


@pytest.fixture
def old_lake(tmp_path) -> Path:
    shutil.copytree(FIXTURE, tmp_path / "ingestion")
    return tmp_path / "ingestion"


def test_the_old_lake_is_refused_until_converted_then_converted_with_every_version_once(
        source, old_lake, monkeypatch, capsys):
    zone = LakeZone(old_lake.as_uri())
    assert needs_conversion(zone)
    with pytest.raises(UnconvertedLakeError, match="totesys-platform lake convert"):
        extract_tables(source, zone)  # it would archive every version again beside the old archive

    monkeypatch.setenv("LAKE_INGESTION_URL", zone.url)
    assert cli.main(["lake", "convert"]) == 0
    assert f"versions in {len(TABLE_NAMES)} tables, 1 quarantine records" in capsys.readouterr().out
    assert not needs_conversion(zone)
    for table in TABLE_NAMES:
        expected, last_seq, last_state = manifest_versions(old_lake, table)
        snapshot = zone.table(table).snapshot()
        rows = zone.table(table).read(columns=[f"{table}_id", "last_updated", "_batch"]).to_pylist()
        converted = [(r[f"{table}_id"], r["last_updated"].replace(microsecond=r["last_updated"].microsecond), r["_batch"])
                     for r in rows]
        assert len(converted) == len(set(converted)) and set(converted) == expected, table
        # The batch numbering and the extraction state carry on where the old log stopped.
        assert (snapshot.txn_version, snapshot.state) == (last_seq, last_state), table
    assert [(r.table, r.id) for r in quarantine_records(zone)] == [("sales_order", 1)]

    # The next extraction starts from the converted state: nothing was lost, nothing is archived again...
    again = extract_tables(source, zone)
    assert sum(r.rows for r in again.values()) == 0
    # ...and the next change is batch last_seq + 1.
    with simulator.Simulator(source, seed=9) as sim:
        sim.step(datetime(2023, 2, 1, 9, 10, 0, 500000))
    after = extract_tables(source, zone)
    changed = {t: r for t, r in after.items() if r.rows}
    assert changed and all(r.batch == manifest_versions(old_lake, t)[1] + 1 for t, r in changed.items())

    assert cli.main(["lake", "convert"]) == 0  # once is enough
    assert "nothing to convert" in capsys.readouterr().out


def test_the_converted_lake_loads_the_warehouse_with_every_archived_version(source, old_lake, warehouse_url, tmp_path):
    import dagster as dg
    import psycopg

    from totesys_platform.defs.automation.checks import FACT_HISTORY_CHECKS, RECONCILIATION_CHECKS
    from totesys_platform_tests.test_pipeline import ASSETS, resources

    convert_ingestion_zone(LakeZone(old_lake.as_uri()))
    converted = resources(source, warehouse_url, old_lake.as_uri(), (tmp_path / "processed").as_uri())
    result = dg.materialize([*ASSETS, *FACT_HISTORY_CHECKS, *RECONCILIATION_CHECKS], resources=converted)
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    # The 10 checks asked for, and the extraction's own versions_move_forward on each source table.
    assert len(evaluations) == 10 + len(TABLE_NAMES) and all(e.passed for e in evaluations), [
        e.metadata for e in evaluations if not e.passed]
    # Every version the old archive held (the history, not just the source's current rows), bar the quarantined.
    versions = {(i, lu) for i, lu, _ in manifest_versions(old_lake, "sales_order")[0]} - {(1, datetime(2022, 11, 3, 8, 12))}
    with psycopg.connect(warehouse_url) as conn:
        loaded = set(conn.execute("SELECT sales_order_id, last_updated_date + last_updated_time FROM fact_sales_order"))
    assert loaded == versions
    with psycopg.connect(source) as conn:
        assert len(versions) > conn.execute("SELECT count(*) FROM sales_order").fetchone()[0]  # history kept
