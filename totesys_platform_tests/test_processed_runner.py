"""The processed-zone runner: positions, state and quarantine in a real lake (local folder), no Dagster."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest

from totesys_platform.lake.manifest import TableLog, data_file_key
from totesys_platform.lake.processed.runner import process_table, read_processed
from totesys_platform.lake.processed.validation import BadInputError
from totesys_platform.lake.quarantine import quarantine_version, quarantined_versions
from totesys_platform.lake.store import LakeStore
from totesys_platform.source.contract import SOURCE_TABLES
from totesys_platform_tests.test_transforms_support import T0, row, source_table

_batch_clock = [dt.datetime(2026, 1, 1)]


def archive(ingestion: LakeStore, table: str, rows: list[dict]) -> int:
    """Commit one ingestion batch the way extraction does: data file first, then the manifest entry."""
    log = TableLog(ingestion, table)
    _batch_clock[0] += dt.timedelta(seconds=1)
    key = data_file_key(table, _batch_clock[0])
    data = source_table(table, rows)
    ingestion.write_parquet(key, data.to_batches(), SOURCE_TABLES[table].arrow_schema)
    latest = log.latest()
    return log.commit(file=key, rows=len(rows), state={}, expected_prev_seq=latest.seq if latest else 0).seq


@pytest.fixture
def zones(tmp_path: Path) -> tuple[LakeStore, LakeStore]:
    return LakeStore.from_url((tmp_path / "ingestion").as_uri()), LakeStore.from_url((tmp_path / "processed").as_uri())


def test_each_run_consumes_only_the_batches_committed_since_the_last_one(zones):
    ingestion, processed = zones
    archive(ingestion, "address", [row("address", 1), row("address", 2)])
    first = process_table("dim_location", ingestion, processed)
    assert first.rows == 2 and first.consumed == {"address": 1}

    nothing = process_table("dim_location", ingestion, processed)
    assert nothing.entry is None and nothing.rows == 0  # no new batch: no file, no manifest entry

    archive(ingestion, "address", [row("address", 2, T0 + dt.timedelta(hours=1), city="Leeds")])
    second = process_table("dim_location", ingestion, processed)
    assert second.rows == 1 and second.consumed == {"address": 2}
    data, last = read_processed(processed, "dim_location")
    assert last == 2 and data.num_rows == 3
    assert data.filter(pa.compute.equal(data["location_id"], 2))["city"].to_pylist() == ["New Patienceburgh", "Leeds"]


def test_an_address_change_reaches_every_counterparty_through_the_stored_state(zones):
    ingestion, processed = zones
    archive(ingestion, "address", [row("address", 1), row("address", 2)])
    archive(ingestion, "counterparty", [row("counterparty", 1, legal_address_id=1), row("counterparty", 2, legal_address_id=1),
                                        row("counterparty", 3, legal_address_id=2)])
    assert process_table("dim_counterparty", ingestion, processed).rows == 3
    archive(ingestion, "address", [row("address", 1, T0 + dt.timedelta(days=1), city="O'Fallon")])
    result = process_table("dim_counterparty", ingestion, processed)
    delta, _ = read_processed(processed, "dim_counterparty", after_seq=1)
    assert result.rows == 2
    assert sorted(delta["counterparty_id"].to_pylist()) == [1, 2]
    assert set(delta["counterparty_legal_city"].to_pylist()) == {"O'Fallon"}


def test_a_failure_before_the_manifest_commit_leaves_the_table_as_it_was(zones, monkeypatch):
    ingestion, processed = zones
    archive(ingestion, "design", [row("design", 1)])

    def crash(*args, **kwargs):
        raise OSError("power cut")

    with monkeypatch.context() as m:
        m.setattr(TableLog, "commit", crash)
        with pytest.raises(OSError):
            process_table("dim_design", ingestion, processed)
    assert TableLog(processed, "dim_design").latest() is None
    assert process_table("dim_design", ingestion, processed).rows == 1
    data, _ = read_processed(processed, "dim_design")
    assert data["design_id"].to_pylist() == [1]


def test_bad_input_names_the_version_to_quarantine_and_quarantine_drops_only_that_version(zones):
    ingestion, processed = zones
    archive(ingestion, "sales_order", [row("sales_order", 1)])
    # One batch holds a good order (3) beside the bad version of order 2.
    archive(ingestion, "sales_order", [row("sales_order", 2, agreed_payment_date="2024-13-45"), row("sales_order", 3)])
    with pytest.raises(BadInputError) as err:
        process_table("fact_sales_order", ingestion, processed)
    message = str(err.value)
    assert "sales_order_id=2" in message and "agreed_payment_date" in message
    assert "--table sales_order --id 2 --last-updated '2024-11-04 09:30:15.123'" in message
    assert TableLog(processed, "fact_sales_order").latest() is None  # nothing published

    # The row is corrected in totesys (a new version arrives), the bad version is quarantined.
    archive(ingestion, "sales_order", [row("sales_order", 2, T0 + dt.timedelta(minutes=5))])
    quarantine_version(ingestion, "sales_order", 2, T0, "agreed_payment_date '2024-13-45' corrected in totesys")
    assert quarantined_versions(ingestion, "sales_order").to_pylist() == [{"sales_order_id": 2, "last_updated": T0}]
    result = process_table("fact_sales_order", ingestion, processed)
    data, _ = read_processed(processed, "fact_sales_order")
    assert result.rows == 3 and result.consumed == {"sales_order": 3}
    assert sorted(data["sales_order_id"].to_pylist()) == [1, 2, 3]  # order 3, beside the bad row, is kept
    assert data.filter(pa.compute.equal(data["sales_order_id"], 2))["last_updated_time"].to_pylist() == [
        dt.time(9, 35, 15, 123000)]
    # The archived batch itself is still in the lake, untouched.
    assert TableLog(ingestion, "sales_order").read(TableLog(ingestion, "sales_order").entries()[1]).num_rows == 2


def test_quarantine_refuses_an_unknown_table_a_missing_reason_or_an_aware_time(zones):
    ingestion, _ = zones
    with pytest.raises(ValueError, match="unknown totesys table"):
        quarantine_version(ingestion, "_prisma_migrations", 1, T0, "x")
    with pytest.raises(ValueError, match="reason"):
        quarantine_version(ingestion, "sales_order", 1, T0, "  ")
    with pytest.raises(ValueError, match="naive"):
        quarantine_version(ingestion, "sales_order", 1, T0.replace(tzinfo=dt.timezone.utc), "x")


def test_the_cli_quarantines_a_version_in_the_configured_lake(zones, tmp_path, monkeypatch, capsys):
    from totesys_platform import cli

    ingestion, _ = zones
    archive(ingestion, "sales_order", [row("sales_order", 2)])
    monkeypatch.setenv("LAKE_INGESTION_URL", ingestion.url)
    code = cli.main(["lake", "quarantine", "--table", "sales_order", "--id", "2",
                     "--last-updated", "2024-11-04 09:30:15.123", "--reason", "bad date, corrected"])
    assert code == 0 and "quarantined sales_order id 2" in capsys.readouterr().out
    assert quarantined_versions(ingestion, "sales_order").to_pylist() == [{"sales_order_id": 2, "last_updated": T0}]
    assert cli.main(["lake", "quarantine", "--table", "nope", "--id", "1", "--last-updated", "2024-01-01",
                     "--reason", "x"]) == 1
    assert "unknown totesys table" in capsys.readouterr().err
