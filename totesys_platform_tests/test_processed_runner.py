"""The processed-zone runner: positions, state and quarantine in a real lake (local folder), no Dagster."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest

from totesys_platform.lake.delta import LakeTable, LakeZone
from totesys_platform.lake.ingestion.extract import archive_schema
from totesys_platform.lake.processed.runner import process_table, read_processed
from totesys_platform.lake.processed.validation import BadInputError
from totesys_platform.lake.quarantine import quarantine_version, quarantined_versions
from totesys_platform.lake.writes import commit_write
from totesys_platform.source.contract import SOURCE_TABLES
from totesys_platform_tests.test_transforms_support import T0, row, source_table

_batch_clock = [dt.datetime(2026, 1, 1)]


def archive(ingestion: LakeZone, table: str, rows: list[dict]) -> int:
    """Commit one ingestion batch the way extraction does (batch number and time beside the rows); its version."""
    target = ingestion.table(table)
    read = target.snapshot()
    _batch_clock[0] += dt.timedelta(seconds=1)
    data = source_table(table, rows)
    data = data.append_column("_batch", pa.array([read.txn_version + 1] * len(rows), pa.int64()))
    data = data.append_column("_extracted_at", pa.array([_batch_clock[0]] * len(rows), pa.timestamp("us")))
    data = data.append_column("_deleted_at", pa.nulls(len(rows), pa.timestamp("us")))
    return target.append(data.cast(archive_schema(SOURCE_TABLES[table])), read=read, stage="extract", state={},
                         rows=len(rows)).version


def process(name: str, ingestion: LakeZone, processed: LakeZone):
    """One run of the processed asset: prepare, then commit as the lake IO manager does."""
    result = process_table(name, ingestion, processed)
    commit_write(result.write)
    return result


@pytest.fixture
def zones(tmp_path: Path) -> tuple[LakeZone, LakeZone]:
    return LakeZone((tmp_path / "ingestion").as_uri()), LakeZone((tmp_path / "processed").as_uri())


def test_each_run_consumes_only_the_commits_made_since_the_last_one(zones):
    ingestion, processed = zones
    archive(ingestion, "address", [row("address", 1), row("address", 2)])
    first = process("dim_location", ingestion, processed)
    assert first.rows == 2 and first.consumed == {"address": 0}

    nothing = process("dim_location", ingestion, processed)
    assert not nothing.changed and nothing.rows == 0  # no new commit upstream: nothing to commit here
    assert processed.table("dim_location").snapshot().version == 0

    archive(ingestion, "address", [row("address", 2, T0 + dt.timedelta(hours=1), city="Leeds")])
    second = process("dim_location", ingestion, processed)
    assert second.rows == 1 and second.consumed == {"address": 1} and second.input_rows == {"address": 1}
    data = read_processed(processed, "dim_location")
    assert data.num_rows == 2  # a dimension holds the latest row of each key (merged)
    assert data.filter(pa.compute.equal(data["location_id"], 2))["city"].to_pylist() == ["Leeds"]
    consumed = processed.table("dim_location").snapshot().state["consumed"]["address"]
    assert consumed["version"] == 1 and consumed["table_id"] == ingestion.table("address").snapshot().table_id


def test_an_address_change_reaches_every_counterparty_through_the_current_reference_rows(zones):
    ingestion, processed = zones
    archive(ingestion, "address", [row("address", 1), row("address", 2)])
    archive(ingestion, "counterparty", [row("counterparty", 1, legal_address_id=1), row("counterparty", 2, legal_address_id=1),
                                        row("counterparty", 3, legal_address_id=2)])
    assert process("dim_counterparty", ingestion, processed).rows == 3
    archive(ingestion, "address", [row("address", 1, T0 + dt.timedelta(days=1), city="O'Fallon")])
    result = process("dim_counterparty", ingestion, processed)
    assert result.rows == 2
    changes = processed.table("dim_counterparty").changes(0, processed.table("dim_counterparty").snapshot())
    assert sorted(changes["counterparty_id"].to_pylist()) == [1, 2]
    assert set(changes["counterparty_legal_city"].to_pylist()) == {"O'Fallon"}


def test_a_failure_before_the_commit_leaves_the_table_as_it_was(zones, monkeypatch):
    ingestion, processed = zones
    archive(ingestion, "design", [row("design", 1)])

    def crash(*args, **kwargs):
        raise OSError("power cut")

    with monkeypatch.context() as m:
        m.setattr(LakeTable, "append", crash)
        with pytest.raises(OSError):
            process("dim_design", ingestion, processed)
    assert not processed.table("dim_design").snapshot().exists
    assert process("dim_design", ingestion, processed).rows == 1
    assert read_processed(processed, "dim_design")["design_id"].to_pylist() == [1]


def test_a_lost_ingestion_table_is_noticed_and_the_processed_table_rebuilt_from_what_it_holds_now(zones, tmp_path):
    import shutil

    ingestion, processed = zones
    archive(ingestion, "sales_order", [row("sales_order", 1), row("sales_order", 2)])
    process("fact_sales_order", ingestion, processed)
    shutil.rmtree(tmp_path / "ingestion" / "sales_order")  # lost, then extracted again from the source
    archive(ingestion, "sales_order", [row("sales_order", 1), row("sales_order", 2), row("sales_order", 3)])
    result = process("fact_sales_order", ingestion, processed)
    assert result.rebuilt and "was created again" in result.rebuilt
    assert sorted(read_processed(processed, "fact_sales_order")["sales_order_id"].to_pylist()) == [1, 2, 3]


def test_bad_input_names_the_version_to_quarantine_and_quarantine_drops_only_that_version(zones):
    ingestion, processed = zones
    archive(ingestion, "sales_order", [row("sales_order", 1)])
    # One batch holds a good order (3) beside the bad version of order 2.
    archive(ingestion, "sales_order", [row("sales_order", 2, agreed_payment_date="2024-13-45"), row("sales_order", 3)])
    with pytest.raises(BadInputError) as err:
        process("fact_sales_order", ingestion, processed)
    message = str(err.value)
    assert "sales_order_id=2" in message and "agreed_payment_date" in message
    assert "--table sales_order --id 2 --last-updated '2024-11-04 09:30:15.123'" in message
    assert not processed.table("fact_sales_order").snapshot().exists  # nothing published

    # The row is corrected in totesys (a new version arrives), the bad version is quarantined.
    archive(ingestion, "sales_order", [row("sales_order", 2, T0 + dt.timedelta(minutes=5))])
    quarantine_version(ingestion, "sales_order", 2, T0, "agreed_payment_date '2024-13-45' corrected in totesys")
    assert quarantined_versions(ingestion, "sales_order").to_pylist() == [{"sales_order_id": 2, "last_updated": T0}]
    result = process("fact_sales_order", ingestion, processed)
    data = read_processed(processed, "fact_sales_order")
    assert result.rows == 3 and result.consumed == {"sales_order": 2}
    assert sorted(data["sales_order_id"].to_pylist()) == [1, 2, 3]  # order 3, beside the bad row, is kept
    assert data.filter(pa.compute.equal(data["sales_order_id"], 2))["last_updated_time"].to_pylist() == [
        dt.time(9, 35, 15, 123000)]
    # The archived rows themselves are still in the lake, untouched.
    assert ingestion.table("sales_order").read().num_rows == 4


def test_a_bad_date_in_one_fact_source_holds_back_that_source_of_dim_date_not_the_others(zones):
    """dim_date covers the dates of the sources that are fine; the one with a bad row is not consumed (read again
    once the row is quarantined), so one bad order does not keep payments' dates, and every fact, waiting."""
    ingestion, processed = zones
    archive(ingestion, "sales_order", [row("sales_order", 1, agreed_payment_date="2024-13-45")])
    archive(ingestion, "payment", [row("payment", 1, payment_date="2025-03-01")])
    archive(ingestion, "purchase_order", [])
    result = process("dim_date", ingestion, processed)
    assert list(result.held_back) == ["sales_order"]
    assert "sales_order_id=1" in result.held_back["sales_order"] and "2024-13-45" in result.held_back["sales_order"]
    assert result.consumed == {"sales_order": -1, "payment": 0, "purchase_order": 0}
    dates = read_processed(processed, "dim_date")["date_id"].to_pylist()
    assert min(dates) == T0.date() and max(dates) == dt.date(2025, 3, 1)  # the payment's dates only

    # While the bad row waits, a run with nothing else new commits nothing.
    again = process("dim_date", ingestion, processed)
    assert list(again.held_back) == ["sales_order"] and not again.changed
    assert processed.table("dim_date").snapshot().version == 0

    # Quarantined, the order's other dates come in.
    archive(ingestion, "sales_order", [row("sales_order", 2, agreed_delivery_date="2026-06-30")])
    quarantine_version(ingestion, "sales_order", 1, T0, "agreed_payment_date '2024-13-45' corrected in totesys")
    caught_up = process("dim_date", ingestion, processed)
    assert caught_up.held_back == {} and caught_up.consumed["sales_order"] == 1
    assert max(read_processed(processed, "dim_date")["date_id"].to_pylist()) == dt.date(2026, 6, 30)


def test_a_bad_row_in_every_source_of_dim_date_fails_it(zones):
    ingestion, processed = zones
    archive(ingestion, "sales_order", [row("sales_order", 1, agreed_payment_date="2024-13-45")])
    archive(ingestion, "payment", [row("payment", 1, payment_date="not a date")])
    archive(ingestion, "purchase_order", [row("purchase_order", 1, agreed_delivery_date="2024-02-30")])
    with pytest.raises(BadInputError, match="purchase_order_id=1|sales_order_id=1|payment_id=1"):
        process("dim_date", ingestion, processed)
    assert not processed.table("dim_date").snapshot().exists


def test_quarantine_refuses_an_unknown_table_a_missing_reason_or_an_aware_time(zones):
    ingestion, _ = zones
    with pytest.raises(ValueError, match="unknown totesys table"):
        quarantine_version(ingestion, "_prisma_migrations", 1, T0, "x")
    with pytest.raises(ValueError, match="reason"):
        quarantine_version(ingestion, "sales_order", 1, T0, "  ")
    with pytest.raises(ValueError, match="naive"):
        quarantine_version(ingestion, "sales_order", 1, T0.replace(tzinfo=dt.timezone.utc), "x")


def test_quarantine_refuses_a_version_the_lake_does_not_hold_and_an_id_out_of_range(zones):
    ingestion, _ = zones
    archive(ingestion, "sales_order", [row("sales_order", 2)])
    with pytest.raises(ValueError, match=r"no sales_order version with sales_order_id 2 and last_updated "
                                         r"2024-11-04 09:30:16.123 \(its versions: 2024-11-04 09:30:15.123\)"):
        quarantine_version(ingestion, "sales_order", 2, T0 + dt.timedelta(seconds=1), "a typo in the time")
    with pytest.raises(ValueError, match="no sales_order version with sales_order_id 7 .* versions: none"):
        quarantine_version(ingestion, "sales_order", 7, T0, "a typo in the id")
    with pytest.raises(ValueError, match="3000000000 is out of range"):
        quarantine_version(ingestion, "sales_order", 3_000_000_000, T0, "an id no totesys row can have")
    assert quarantined_versions(ingestion, "sales_order").num_rows == 0


def test_quarantine_records_are_a_queryable_table_and_quarantining_twice_keeps_the_first(zones):
    ingestion, _ = zones
    archive(ingestion, "sales_order", [row("sales_order", 2)])
    first = quarantine_version(ingestion, "sales_order", 2, T0, "bad date")
    assert quarantine_version(ingestion, "sales_order", 2, T0, "again") == first
    records = ingestion.table("_quarantine").read()
    assert records.num_rows == 1 and records["reason"].to_pylist() == ["bad date"]


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
    # The undo removes the record, and says what brings the version back into the processed tables.
    undo = ["lake", "quarantine", "--table", "sales_order", "--id", "2", "--last-updated", "2024-11-04 09:30:15.123",
            "--undo"]
    assert cli.main(undo) == 0 and "released sales_order id 2" in capsys.readouterr().out
    assert quarantined_versions(ingestion, "sales_order").num_rows == 0
    assert cli.main(undo) == 0 and "was not quarantined" in capsys.readouterr().out


def test_lake_quarantine_on_the_cli_refuses_an_id_outside_the_contracts_integer_range(zones, monkeypatch, capsys):
    """`lake quarantine --id 3000000000` was accepted and then broke the table on every run (ids are int32)."""
    from totesys_platform import cli

    ingestion, _ = zones
    archive(ingestion, "sales_order", [row("sales_order", 2)])
    monkeypatch.setenv("LAKE_INGESTION_URL", ingestion.url)
    for bad_id in ("3000000000", "-2147483649"):
        code = cli.main(["lake", "quarantine", "--table", "sales_order", "--id", bad_id,
                         "--last-updated", "2024-11-04 09:30:15.123", "--reason", "a typo in the id"])
        assert code == 1
        assert f"sales_order_id {bad_id} is out of range" in capsys.readouterr().err
    assert quarantined_versions(ingestion, "sales_order").num_rows == 0


def test_releasing_a_quarantine_removes_that_record_only_and_refuses_a_version_the_lake_does_not_hold(zones):
    from totesys_platform.lake.quarantine import quarantine_records, release_version

    ingestion, _ = zones
    later = T0 + dt.timedelta(hours=1)
    archive(ingestion, "sales_order", [row("sales_order", 2), row("sales_order", 3), row("sales_order", 3, later)])
    quarantine_version(ingestion, "sales_order", 2, T0, "bad date")
    kept = [quarantine_version(ingestion, "sales_order", 3, T0, "bad currency"),  # (a Delta read has no order)
            quarantine_version(ingestion, "sales_order", 3, later, "bad design")]

    assert release_version(ingestion, "sales_order", 2, T0)
    # The other records stay as they were, reason and time included; released again, nothing happens.
    assert set(quarantine_records(ingestion, "sales_order")) == set(kept)
    assert not release_version(ingestion, "sales_order", 2, T0)
    with pytest.raises(ValueError, match="no sales_order version with sales_order_id 7"):
        release_version(ingestion, "sales_order", 7, T0)
    assert set(quarantine_records(ingestion, "sales_order")) == set(kept)

def test_lake_quarantine_on_the_cli_refuses_a_version_the_lake_does_not_hold_and_wants_reason_or_undo(
        zones, monkeypatch, capsys):
    """A typo in the id or the time was reported as quarantined; now it fails (exit 1) saying which versions exist."""
    from totesys_platform import cli

    ingestion, _ = zones
    archive(ingestion, "sales_order", [row("sales_order", 2)])
    monkeypatch.setenv("LAKE_INGESTION_URL", ingestion.url)
    version = ["lake", "quarantine", "--table", "sales_order", "--id", "2", "--last-updated"]
    assert cli.main([*version, "2024-11-04 09:30:16.123", "--reason", "a typo in the time"]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "holds no sales_order version with sales_order_id 2 and last_updated 2024-11-04 09:30:16.123" in err
    assert "its versions: 2024-11-04 09:30:15.123" in err
    assert quarantined_versions(ingestion, "sales_order").num_rows == 0
    # Neither --reason nor --undo, or both: bad usage, exit 2, nothing recorded.
    for action in ([], ["--reason", "bad date", "--undo"]):
        with pytest.raises(SystemExit) as exited:
            cli.main([*version, "2024-11-04 09:30:15.123", *action])
        assert exited.value.code == 2
    assert quarantined_versions(ingestion, "sales_order").num_rows == 0
