"""Exactly-once incremental extraction: real PostgreSQL (embedded) into a real lake (folder and moto S3)."""

from __future__ import annotations

import json
import os
import time
import tracemalloc
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from totesys_platform.lake.delta import ConcurrentCommitError, LakeTable, LakeZone
from totesys_platform.lake.ingestion import extract as extract_module
from totesys_platform.lake.ingestion import deletes as deletes_module
from totesys_platform.lake.ingestion.deletes import (
    DELETED_AT_COLUMN, TOMBSTONES_TOTAL, MassDisappearanceError, live_archived_ids, read_markers,
)
from totesys_platform.lake.ingestion.extract import (
    BATCH_COLUMN, EXTRACTED_AT_COLUMN, RECAPTURED_TOTAL, SourceError, extract_tables, prepare_extraction,
    validate_source_schema,
)
from totesys_platform.lake.ingestion.late import SourceSnapshot
from totesys_platform.lake.ingestion.versions import to_ms
from totesys_platform.lake.writes import Spool, commit_write
from totesys_platform.local.postgres import free_port
from totesys_platform.local import simulator
from totesys_platform.source import contract
from totesys_platform_tests.source_statistics import wait_for_delete_statistics

T0 = datetime(2024, 11, 4, 9, 30, 10)  # a whole second: PostgreSQL prints no fraction for it
BATCH = datetime(2026, 1, 1, 12, 0, 0)


# --------------------------------------------------------------------------------------------------
# Helpers: the source rows are written here with plain SQL (no simulator)


@pytest.fixture(scope="module")
def _module_source(pg_server) -> str:
    """One totesys database for this module's tests that leave the schema alone."""
    name = f"totesys_extract_{uuid.uuid4().hex[:8]}"
    pg_server.create_database(name)
    with psycopg.connect(pg_server.url(name), autocommit=True) as conn:
        simulator.create_schema(conn)
    yield pg_server.url(name)
    pg_server.drop_database(name)


@pytest.fixture
def source_url(_module_source) -> str:
    """The module's totesys database, emptied for this test (all rows gone, ids restarted): as clean as a
    new database and much faster. Tests that change the schema use `totesys_url` instead."""
    tables = sql.SQL(", ").join(sql.Identifier(t) for t in contract.TABLE_NAMES)
    with psycopg.connect(_module_source, autocommit=True) as conn:
        conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(tables))
    return _module_source


@pytest.fixture
def lake(lake_root_url, request) -> LakeZone:
    endpoint = request.getfixturevalue("moto_endpoint") if lake_root_url.startswith("s3://") else None
    return LakeZone(lake_root_url, endpoint_url=endpoint)


@pytest.fixture
def local_lake(tmp_path) -> LakeZone:
    return LakeZone((tmp_path / "ingestion").as_uri())


def _insert(conn, table: str, row: dict) -> int:
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING {}").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(sql.Placeholder() * len(row)),
        sql.Identifier(f"{table}_id"),
    )
    return conn.execute(query, list(row.values())).fetchone()[0]


def seed_reference(conn, ts: datetime = T0) -> dict[str, list[int]]:
    """Reference rows with the awkward values real data has: NULLs, '' , apostrophes, leading zeros."""
    stamp = {"created_at": ts, "last_updated": ts}
    ids: dict[str, list[int]] = {}
    ids["address"] = [
        _insert(conn, "address", {"address_line_1": "6826 Herzog Via", "address_line_2": None, "district": "Avon",
                                  "city": "New Patienceburgh", "postal_code": "02841", "country": "Turkey",
                                  "phone": "1803 637401", **stamp}),
        _insert(conn, "address", {"address_line_1": "179 Alexie Cliffs", "address_line_2": "", "district": None,
                                  "city": "Aliso Viejo", "postal_code": "99305-7380",
                                  "country": "Democratic People's Republic of Korea", "phone": "9621 880720", **stamp}),
    ]
    ids["counterparty"] = [
        _insert(conn, "counterparty", {"counterparty_legal_name": "Fahey and Sons", "legal_address_id": ids["address"][0],
                                       "commercial_contact": "Micheal Toy", "delivery_contact": None, **stamp}),
        _insert(conn, "counterparty", {"counterparty_legal_name": "O'Keefe, Bins and Leuschke",
                                       "legal_address_id": ids["address"][1], "commercial_contact": None,
                                       "delivery_contact": "", **stamp}),
    ]
    ids["currency"] = [_insert(conn, "currency", {"currency_code": c, **stamp}) for c in ("GBP", "USD", "EUR")]
    ids["department"] = [
        _insert(conn, "department", {"department_name": "Sales", "location": "Manchester", "manager": "Richard Roma", **stamp}),
        _insert(conn, "department", {"department_name": "Purchasing", "location": "Leds", "manager": None, **stamp}),
    ]
    ids["design"] = [_insert(conn, "design", {"design_name": "Wooden", "file_location": "/usr",
                                              "file_name": "wooden-20220717-npgz.json", **stamp})]
    ids["staff"] = [_insert(conn, "staff", {"first_name": "Jeremie", "last_name": "Franey",
                                            "department_id": ids["department"][0],
                                            "email_address": "jeremie.franey@terrifictotes.com", **stamp})]
    ids["payment_type"] = [_insert(conn, "payment_type", {"payment_type_name": n, **stamp})
                           for n in contract.PAYMENT_TYPE_NAMES]
    return ids


def add_sale(conn, ids, ts: datetime, units: int = 1000, price: str = "2.50") -> dict[str, int]:
    """One sale as the application writes it: order, transaction and payment with one timestamp."""
    stamp = {"created_at": ts, "last_updated": ts}
    order = _insert(conn, "sales_order", {
        "design_id": ids["design"][0], "staff_id": ids["staff"][0], "counterparty_id": ids["counterparty"][1],
        "units_sold": units, "unit_price": Decimal(price), "currency_id": ids["currency"][0],
        "agreed_delivery_date": "2024-11-08", "agreed_payment_date": "2024-11-07",
        "agreed_delivery_location_id": ids["address"][1], **stamp})
    txn = _insert(conn, "transaction", {"transaction_type": "SALE", "sales_order_id": order,
                                        "purchase_order_id": None, **stamp})
    payment = _insert(conn, "payment", {
        "transaction_id": txn, "counterparty_id": ids["counterparty"][1], "payment_amount": units * Decimal(price),
        "currency_id": ids["currency"][0], "payment_type_id": ids["payment_type"][0], "paid": False,
        "payment_date": "2024-11-07", "company_ac_number": 67305075, "counterparty_ac_number": 31622269, **stamp})
    return {"sales_order": order, "transaction": txn, "payment": payment}


def add_purchase(conn, ids, ts: datetime) -> dict[str, int]:
    stamp = {"created_at": ts, "last_updated": ts}
    order = _insert(conn, "purchase_order", {
        "staff_id": ids["staff"][0], "counterparty_id": ids["counterparty"][0], "item_code": "ZDOI5EA",
        "item_quantity": 371, "item_unit_price": Decimal("361.39"), "currency_id": ids["currency"][1],
        "agreed_delivery_date": "2024-11-09", "agreed_payment_date": "2024-11-06",
        "agreed_delivery_location_id": ids["address"][0], **stamp})
    txn = _insert(conn, "transaction", {"transaction_type": "PURCHASE", "sales_order_id": None,
                                        "purchase_order_id": order, **stamp})
    payment = _insert(conn, "payment", {
        "transaction_id": txn, "counterparty_id": ids["counterparty"][0], "payment_amount": Decimal("134075.69"),
        "currency_id": ids["currency"][1], "payment_type_id": ids["payment_type"][2], "paid": False,
        "payment_date": "2024-11-06", "company_ac_number": 12345678, "counterparty_ac_number": 87654321, **stamp})
    return {"purchase_order": order, "transaction": txn, "payment": payment}


def source_rows(url: str, table: str) -> list[dict]:
    t = contract.SOURCE_TABLES[table]
    query = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
        sql.SQL(", ").join(map(sql.Identifier, t.column_names)), sql.Identifier(table), sql.Identifier(t.primary_key))
    with psycopg.connect(url) as conn:
        return conn.cursor(row_factory=dict_row).execute(query).fetchall()


def archived(zone: LakeZone, table: str, with_batch: bool = False) -> pa.Table:
    """The lake table's rows in capture order (batch, then as the batch holds them), with the contract's types."""
    schema = contract.SOURCE_TABLES[table].arrow_schema
    rows = zone.table(table).read()
    if rows is None:
        return schema.empty_table()
    rows = rows.sort_by([(BATCH_COLUMN, "ascending"), ("last_updated", "ascending"), (f"{table}_id", "ascending")])
    if with_batch:
        return rows
    return rows.select(schema.names).cast(schema)


def version(zone: LakeZone, table: str) -> int:
    """The Delta table version (-1: the table does not exist)."""
    return zone.table(table).snapshot().version


def archived_versions(store: LakeZone, table: str) -> list[tuple[int, datetime]]:
    t = archived(store, table)
    return list(zip(t.column(f"{table}_id").to_pylist(), t.column("last_updated").to_pylist()))


def current_versions(url: str, table: str) -> set[tuple[int, datetime]]:
    return {(r[f"{table}_id"], r["last_updated"]) for r in source_rows(url, table)}


def versions(zone: LakeZone) -> dict[str, int]:
    return {t: version(zone, t) for t in contract.TABLE_NAMES}


def _run(url, store, tables=contract.TABLE_NAMES, **kw):
    return extract_tables(url, store, tables, **kw)


# --------------------------------------------------------------------------------------------------
# First, incremental and no-change runs


def test_first_run_archives_every_row_exactly_with_the_contract_types(source_url, lake):
    with psycopg.connect(source_url) as conn:
        ids = seed_reference(conn)
        add_sale(conn, ids, T0 + timedelta(milliseconds=123))
        add_purchase(conn, ids, T0 + timedelta(seconds=1, milliseconds=5))
    messages: list[str] = []
    results = extract_tables(source_url, lake, batch_ts=BATCH, log=messages.append)

    assert list(results) == list(contract.TABLE_NAMES)
    for table, result in results.items():
        expected = source_rows(source_url, table)
        lake_table = archived(lake, table)
        assert sorted(lake_table.to_pylist(), key=lambda r: r[f"{table}_id"]) == expected, table
        assert result.rows == len(expected) and result.duplicates_skipped == 0
        assert result.batch == 1 and result.commit.version == 0 and result.watermark_from is None
        assert result.watermark_to == max(r["last_updated"] for r in expected)
        assert result.commit.uri == lake.table_uri(table)
        assert result.preview.num_rows == min(5, len(expected))
        assert result.preview.schema.equals(contract.SOURCE_TABLES[table].arrow_schema)
        # The lake table: the contract's columns (NOT NULL where the contract says), then the batch, its time and
        # when a tombstone's deletion was seen.
        schema = lake.table(table).snapshot().arrow_schema()
        assert schema.names == [*contract.SOURCE_TABLES[table].column_names, BATCH_COLUMN, EXTRACTED_AT_COLUMN,
                                DELETED_AT_COLUMN]
        assert [f.nullable for f in schema][:-3] == [c.nullable for c in contract.SOURCE_TABLES[table].columns]
        assert schema.field(DELETED_AT_COLUMN).nullable
        batch = archived(lake, table, with_batch=True)
        assert set(batch[BATCH_COLUMN].to_pylist()) == {1} and set(batch[EXTRACTED_AT_COLUMN].to_pylist()) == {BATCH}
        assert batch[DELETED_AT_COLUMN].null_count == batch.num_rows
    # The awkward values came through as they are.
    addresses = archived(lake, "address").to_pylist()
    assert {a["postal_code"] for a in addresses} == {"02841", "99305-7380"}
    assert [a["address_line_2"] for a in addresses] == [None, ""]
    assert archived(lake, "payment").column("payment_amount").to_pylist() == [Decimal("2500.00"), Decimal("134075.69")]
    assert archived(lake, "department").column("created_at").to_pylist()[0] == T0  # whole second
    assert not lake.table("_prisma_migrations").snapshot().exists
    assert any("payment: 2 new versions since the beginning" in m for m in messages)


def test_incremental_run_archives_only_new_and_changed_versions(source_url, local_lake):
    with psycopg.connect(source_url) as conn:
        ids = seed_reference(conn)
        first_sale = add_sale(conn, ids, T0)
    _run(source_url, local_lake, batch_ts=BATCH)

    t1 = T0 + timedelta(minutes=3, milliseconds=250)
    with psycopg.connect(source_url) as conn:
        add_sale(conn, ids, t1)
        conn.execute("UPDATE payment SET paid = true, last_updated = %s WHERE payment_id = %s",
                     (t1 + timedelta(seconds=2), first_sale["payment"]))
    results = _run(source_url, local_lake, batch_ts=BATCH + timedelta(minutes=1))

    assert {t: r.rows for t, r in results.items() if r.rows} == {"sales_order": 1, "transaction": 1, "payment": 2}
    assert results["payment"].watermark_from == T0 and results["payment"].watermark_to == t1 + timedelta(seconds=2)
    assert results["payment"].batch == 2 and results["payment"].commit.version == 1
    # The previous versions inside the look-back window were read again and recognised.
    assert results["sales_order"].duplicates_skipped == 1
    assert results["address"].rows == 0 and results["address"].commit is None
    assert results["address"].duplicates_skipped == 2
    payments = archived_versions(local_lake, "payment")
    assert sorted(payments) == sorted({(first_sale["payment"], T0), (first_sale["payment"], t1 + timedelta(seconds=2)),
                                       (first_sale["payment"] + 1, t1)})
    paid = {(r["payment_id"], r["last_updated"]): r["paid"] for r in archived(local_lake, "payment").to_pylist()}
    assert paid[(first_sale["payment"], T0)] is False and paid[(first_sale["payment"], t1 + timedelta(seconds=2))] is True


def test_a_run_with_no_change_makes_no_commit(source_url, local_lake):
    with psycopg.connect(source_url) as conn:
        ids = seed_reference(conn)
        add_sale(conn, ids, T0)
    _run(source_url, local_lake, batch_ts=BATCH)
    before = versions(local_lake)
    results = _run(source_url, local_lake, batch_ts=BATCH + timedelta(minutes=5))
    assert all(r.rows == 0 and r.commit is None and r.write.data is None for r in results.values())
    assert results["sales_order"].watermark_from == results["sales_order"].watermark_to == T0
    assert versions(local_lake) == before


def test_an_empty_table_is_not_created_until_it_has_rows(source_url, local_lake):
    results = _run(source_url, local_lake, ["design"], batch_ts=BATCH)
    assert results["design"].rows == 0 and results["design"].watermark_to is None
    assert version(local_lake, "design") == -1


def test_rows_tying_with_the_watermark_are_archived_once(source_url, local_lake):
    with psycopg.connect(source_url) as conn:
        a = _insert(conn, "currency", {"currency_code": "GBP", "created_at": T0, "last_updated": T0})
        b = _insert(conn, "currency", {"currency_code": "USD", "created_at": T0, "last_updated": T0})
    assert _run(source_url, local_lake, ["currency"], batch_ts=BATCH)["currency"].rows == 2
    with psycopg.connect(source_url) as conn:  # committed after the run, same last_updated as the watermark
        c = _insert(conn, "currency", {"currency_code": "EUR", "created_at": T0, "last_updated": T0})
    result = _run(source_url, local_lake, ["currency"], batch_ts=BATCH + timedelta(seconds=1))["currency"]
    assert (result.rows, result.duplicates_skipped) == (1, 2)
    assert sorted(archived_versions(local_lake, "currency")) == [(a, T0), (b, T0), (c, T0)]


def test_a_row_larger_than_a_parse_block_comes_through_whole(source_url, local_lake):
    huge = "line one\n" + "x" * (3 * 1024 * 1024) + '\n"quoted", O\'Keefe'  # bigger than the 1 MiB CSV block
    with psycopg.connect(source_url) as conn:
        for name in ("small", huge, ""):
            _insert(conn, "design", {"design_name": "d", "file_location": name, "file_name": "f.json",
                                     "created_at": T0, "last_updated": T0})
    assert _run(source_url, local_lake, ["design"], batch_ts=BATCH)["design"].rows == 3
    assert archived(local_lake, "design").column("file_location").to_pylist() == ["small", huge, ""]


# --------------------------------------------------------------------------------------------------
# Late commits: a transaction that commits after a run with an earlier last_updated


def test_late_commit_with_an_earlier_last_updated_is_archived_exactly_once(source_url, local_lake):
    late = psycopg.connect(source_url)  # a long transaction, e.g. a slow application request
    try:
        late_id = _insert(late, "currency", {"currency_code": "EUR", "created_at": T0, "last_updated": T0})
        with psycopg.connect(source_url) as other:
            early_id = _insert(other, "currency", {"currency_code": "GBP", "created_at": T0,
                                                   "last_updated": T0 + timedelta(seconds=40)})
        first = _run(source_url, local_lake, ["currency"], batch_ts=BATCH)["currency"]
        assert first.rows == 1 and first.watermark_to == T0 + timedelta(seconds=40)
        late.commit()
    finally:
        late.close()
    second = _run(source_url, local_lake, ["currency"], batch_ts=BATCH + timedelta(minutes=1))["currency"]
    assert (second.rows, second.duplicates_skipped) == (1, 1)
    assert second.watermark_to == T0 + timedelta(seconds=40)  # an earlier row never moves the watermark back
    third = _run(source_url, local_lake, ["currency"], batch_ts=BATCH + timedelta(minutes=2))["currency"]
    assert third.rows == 0
    assert sorted(archived_versions(local_lake, "currency")) == sorted(
        [(late_id, T0), (early_id, T0 + timedelta(seconds=40))])


def test_a_transaction_open_across_runs_far_longer_than_the_lookback_is_archived_exactly_once(
    source_url, local_lake
):
    """No time window bounds the guarantee: a transaction open while several runs move the watermark hours past
    its last_updated (look-back: one second) has its versions archived once, by the first run after its commit."""
    with psycopg.connect(source_url) as conn:
        ids = seed_reference(conn)
    _run(source_url, local_lake, ["currency", "design"], batch_ts=BATCH)
    long_running = psycopg.connect(source_url)  # a batch job, or a stuck session
    try:
        late_id = _insert(long_running, "currency", {"currency_code": "EUR", "created_at": T0, "last_updated": T0})
        long_running.execute("UPDATE design SET design_name = 'Renamed late', last_updated = %s WHERE design_id = %s",
                             (T0 + timedelta(minutes=30), ids["design"][0]))
        with long_running.transaction():  # a savepoint: a subtransaction, which the snapshot's list leaves out
            sub_id = _insert(long_running, "currency", {"currency_code": "JPY", "created_at": T0,
                                                        "last_updated": T0 + timedelta(minutes=5)})
        for hour in range(1, 4):  # other writers and runs go on meanwhile
            with psycopg.connect(source_url) as other:
                _insert(other, "currency", {"currency_code": f"X{hour}", "created_at": T0,
                                            "last_updated": T0 + timedelta(hours=hour)})
            result = _run(source_url, local_lake, ["currency", "design"], lookback=timedelta(seconds=1),
                          batch_ts=BATCH + timedelta(hours=hour))
            assert result["currency"].rows == 1 and result["design"].rows == 0
            # Capture health sees the open transaction in every snapshot meanwhile.
            assert SourceSnapshot.in_progress(result["currency"].snapshot)[0] >= 1
        long_running.commit()
    finally:
        long_running.close()
    logged: list[str] = []
    result = _run(source_url, local_lake, ["currency", "design"], lookback=timedelta(seconds=1),
                  batch_ts=BATCH + timedelta(hours=4), log=logged.append)
    assert (result["currency"].rows, result["design"].rows) == (2, 1)
    # (The design's new version is past its own table's watermark, which no other writer moved: not late.)
    assert (result["currency"].late_rows, result["design"].late_rows) == (2, 0)
    assert any("committed late" in line for line in logged)
    again = _run(source_url, local_lake, ["currency", "design"], lookback=timedelta(seconds=1),
                 batch_ts=BATCH + timedelta(hours=5))
    assert again["currency"].rows == 0 and again["design"].rows == 0
    archived_currency = archived_versions(local_lake, "currency")
    assert archived_currency.count((late_id, T0)) == 1 and len(archived_currency) == len(set(archived_currency))
    assert (sub_id, T0 + timedelta(minutes=5)) in archived_currency
    designs = archived(local_lake, "design").to_pylist()
    assert [d["design_name"] for d in designs if d["design_id"] == ids["design"][0]] == ["Wooden", "Renamed late"]


def test_rows_rewritten_behind_the_window_are_not_archived_again_and_in_place_changes_are_captured(
    source_url, local_lake
):
    """Behind the look-back window: a row rewritten without a change is skipped; one changed without moving
    last_updated is archived again (a new capture of its version) and reported, and nothing fails."""
    with psycopg.connect(source_url) as conn:
        first = seed_reference(conn)["design"][0]
        second = _insert(conn, "design", {"design_name": "Steel", "file_location": "/opt", "file_name": "s.json",
                                          "created_at": T0, "last_updated": T0})
        # The table's watermark is hours past the two rows: they are far behind the look-back window.
        _insert(conn, "design", {"design_name": "Later", "file_location": "/srv", "file_name": "l.json",
                                 "created_at": T0, "last_updated": T0 + timedelta(hours=2)})
    _run(source_url, local_lake, ["design"], lookback=timedelta(seconds=1), batch_ts=BATCH)
    with psycopg.connect(source_url) as conn:
        conn.execute("UPDATE design SET design_name = design_name WHERE design_id = %s", (first,))
        conn.execute("UPDATE design SET file_location = '/changed' WHERE design_id = %s", (second,))
    logged: list[str] = []
    result = _run(source_url, local_lake, ["design"], lookback=timedelta(seconds=1),
                  batch_ts=BATCH + timedelta(hours=1), log=logged.append)["design"]
    assert result.rows == 1 and result.out_of_order.changed_in_place == ((second, to_ms(T0)),)
    captures = archived(local_lake, "design")
    assert [r["file_location"] for r in captures.to_pylist() if r["design_id"] == second] == ["/opt", "/changed"]
    assert len(captures) == 4
    (warning,) = [line for line in logged if line.startswith("WARNING design")]
    assert f"{second} at" in warning and "changed in place" in warning and f"{first} at" not in warning
    assert result.write.state[RECAPTURED_TOTAL] == 1

    # Changed in place again, then rewritten unchanged: compared with its latest capture each time.
    for location, batch_hour, captured in (("/changed-again", 2, 1), (None, 3, 0)):
        with psycopg.connect(source_url) as conn:
            conn.execute("UPDATE design SET file_location = coalesce(%s, file_location) WHERE design_id = %s",
                         (location, second))
        again = _run(source_url, local_lake, ["design"], lookback=timedelta(seconds=1),
                     batch_ts=BATCH + timedelta(hours=batch_hour))["design"]
        assert (again.rows, again.out_of_order.count) == (captured, captured), location
    assert [r["file_location"] for r in archived(local_lake, "design").to_pylist() if r["design_id"] == second] == [
        "/opt", "/changed", "/changed-again"]


def test_lengthening_the_lookback_never_archives_a_version_twice(source_url, local_lake):
    with psycopg.connect(source_url) as conn:
        _insert(conn, "currency", {"currency_code": "GBP", "created_at": T0, "last_updated": T0})
        _insert(conn, "currency", {"currency_code": "USD", "created_at": T0, "last_updated": T0 + timedelta(minutes=20)})
    _run(source_url, local_lake, ["currency"], batch_ts=BATCH, lookback=timedelta(minutes=15))
    # 60 minutes back would reach the GBP row, which is no longer remembered: the read is clamped.
    result = _run(source_url, local_lake, ["currency"], batch_ts=BATCH + timedelta(minutes=1),
                  lookback=timedelta(minutes=60))["currency"]
    assert result.rows == 0
    assert len(archived_versions(local_lake, "currency")) == 2


# --------------------------------------------------------------------------------------------------
# Failures between the two writes, and overlapping runs


@pytest.mark.parametrize("connections", [1, 2])
def test_a_crash_before_a_table_commits_leaves_it_unchanged_and_the_rerun_archives_once(
    source_url, lake, monkeypatch, connections
):
    with psycopg.connect(source_url) as conn:
        ids = seed_reference(conn)
        add_sale(conn, ids, T0)
        add_sale(conn, ids, T0 + timedelta(seconds=1))
    prepared = prepare_extraction(source_url, lake, batch_ts=BATCH, connections=connections)
    to_archive = {t: r.rows for t, r in prepared.results.items() if r.rows}
    prepared.discard()
    real_append = LakeTable.append

    def crash_on_sales_order(self, data, **kw):
        if self.name == "sales_order":
            raise RuntimeError("process killed")  # the fault: the process dies before the commit
        return real_append(self, data, **kw)

    monkeypatch.setattr(LakeTable, "append", crash_on_sales_order)
    with pytest.raises(RuntimeError, match="process killed"):
        _run(source_url, lake, batch_ts=BATCH, connections=connections)
    monkeypatch.setattr(LakeTable, "append", real_append)

    assert version(lake, "sales_order") == -1  # prepared, never committed: no trace in the table
    committed = {t for t in contract.TABLE_NAMES if version(lake, t) >= 0}
    if connections == 1:  # in table order (in parallel: in the order the tables are read)
        assert "payment" in committed  # tables committed before it stay committed
        assert "transaction" not in committed  # tables after it were not committed

    results = _run(source_url, lake, batch_ts=BATCH + timedelta(minutes=1), connections=connections)
    archived_again = {t: r.rows for t, r in results.items() if r.rows}
    assert archived_again == {t: rows for t, rows in to_archive.items() if t not in committed}
    assert archived_again["sales_order"] == 2
    for table in contract.TABLE_NAMES:
        versions_ = archived_versions(lake, table)
        assert len(versions_) == len(set(versions_)) and set(versions_) == current_versions(source_url, table), table


def test_tables_read_on_two_connections_come_from_one_snapshot(source_url, local_lake, monkeypatch):
    """A sale committed after the run took its snapshot, before the reading connections opened, is seen by no
    table: the reading connections import the first connection's snapshot."""
    with psycopg.connect(source_url) as conn:
        ids = seed_reference(conn)
        add_sale(conn, ids, T0)
    real_reader = extract_module.snapshot_reader
    readers = []

    def write_elsewhere_then_open(*args, **kw):
        if not readers:  # another writer commits once the run has its snapshot
            with psycopg.connect(source_url, autocommit=True) as writer:
                add_sale(writer, ids, T0 + timedelta(seconds=5))
        readers.append(args)
        return real_reader(*args, **kw)

    monkeypatch.setattr(extract_module, "snapshot_reader", write_elsewhere_then_open)
    first = _run(source_url, local_lake, batch_ts=BATCH, connections=2)
    assert len(readers) == 2
    assert first["sales_order"].rows == 1 and first["payment"].rows == 1  # not the later sale, nor its payment
    monkeypatch.setattr(extract_module, "snapshot_reader", real_reader)
    _run(source_url, local_lake, batch_ts=BATCH + timedelta(minutes=1))  # the next run archives the rest
    for table in ("sales_order", "payment"):
        versions = archived_versions(local_lake, table)
        assert len(versions) == len(set(versions)) and set(versions) == current_versions(source_url, table)


@pytest.mark.parametrize("connections", [1, 2])
def test_a_failed_table_does_not_stop_the_others_and_the_first_failure_in_table_order_is_raised(
        source_url, local_lake, monkeypatch, connections):
    with psycopg.connect(source_url) as conn:
        ids = seed_reference(conn)
        add_sale(conn, ids, T0)
    real_extract = extract_module._extract_table

    def two_tables_break(conn, live, *args, **kw):
        if live.name in ("staff", "design"):
            raise SourceError(f"{live.name} broke")
        return real_extract(conn, live, *args, **kw)

    monkeypatch.setattr(extract_module, "_extract_table", two_tables_break)
    run = prepare_extraction(source_url, local_lake, batch_ts=BATCH, connections=connections)
    assert set(run.failures) == {"staff", "design"} and str(run.first_failure()) == "design broke"
    assert set(run.results) == set(contract.TABLE_NAMES) - {"staff", "design"}
    with_rows = {t for t, r in run.results.items() if r.rows}
    run.discard()
    with pytest.raises(SourceError, match="^design broke$"):
        _run(source_url, local_lake, batch_ts=BATCH, connections=connections)
    assert {t for t in contract.TABLE_NAMES if version(local_lake, t) >= 0} == with_rows
    assert "sales_order" in with_rows and "currency" in with_rows


@pytest.mark.parametrize("connections", [1, 2])
def test_tables_with_nothing_new_are_reported_in_one_line(source_url, local_lake, connections):
    with psycopg.connect(source_url) as conn:
        ids = seed_reference(conn)
        add_sale(conn, ids, T0)
    _run(source_url, local_lake, batch_ts=BATCH)
    messages: list[str] = []
    _run(source_url, local_lake, batch_ts=BATCH + timedelta(minutes=1), log=messages.append, connections=connections)
    assert len(messages) == 2, messages  # the start, and one line for the 11 unchanged tables
    assert messages[1].startswith(f"Nothing new in {', '.join(contract.TABLE_NAMES)} (")


def test_connections_must_be_at_least_one(source_url, local_lake):
    with pytest.raises(ValueError, match="connections must be at least 1"):
        _run(source_url, local_lake, connections=0)


@pytest.mark.parametrize("first_commit", [True, False], ids=["creating", "appending"])
def test_overlapping_runs_only_one_commits_a_batch_and_nothing_is_archived_twice(source_url, lake, first_commit):
    with psycopg.connect(source_url) as conn:
        _insert(conn, "currency", {"currency_code": "GBP", "created_at": T0, "last_updated": T0})
    if not first_commit:
        _run(source_url, lake, ["currency"], batch_ts=BATCH)
        with psycopg.connect(source_url) as conn:
            _insert(conn, "currency", {"currency_code": "USD", "created_at": T0, "last_updated": T0 + timedelta(1)})
    before = version(lake, "currency")
    # Two runs (two deployments, a UI "Materialize all" beside the schedule) read the same state...
    a = prepare_extraction(source_url, lake, ["currency"], batch_ts=BATCH + timedelta(minutes=1))
    b = prepare_extraction(source_url, lake, ["currency"], batch_ts=BATCH + timedelta(minutes=2))
    assert a.results["currency"].rows == b.results["currency"].rows == 1
    # ...and commit one after the other: the second is refused, its batch not committed.
    assert commit_write(a.results["currency"].write).version == before + 1
    with pytest.raises(ConcurrentCommitError, match="currency: another writer committed") as err:
        commit_write(b.results["currency"].write)
    assert "was not committed" in str(err.value)
    assert version(lake, "currency") == before + 1
    versions_ = archived_versions(lake, "currency")
    assert len(versions_) == len(set(versions_)) == (1 if first_commit else 2)
    assert _run(source_url, lake, ["currency"], batch_ts=BATCH + timedelta(minutes=3))["currency"].rows == 0


# --------------------------------------------------------------------------------------------------
# Schema drift and bad values: a clear SourceError and no state change


@pytest.mark.parametrize(
    ("ddl", "expected"),
    [
        ("ALTER TABLE staff DROP COLUMN email_address", r"staff\.email_address: column dropped or renamed"),
        ("ALTER TABLE sales_order ALTER COLUMN units_sold TYPE bigint",
         r"sales_order\.units_sold: column retyped to bigint \(the contract says integer\)"),
        ("ALTER TABLE department ALTER COLUMN department_name DROP NOT NULL",
         r"department\.department_name: column is nullable in the source \(the contract says NOT NULL\)"),
        ("ALTER TABLE counterparty ALTER COLUMN commercial_contact SET NOT NULL",
         r"counterparty\.commercial_contact: column is NOT NULL in the source"),
        ("DROP TABLE payment", r"table public\.payment is missing"),
    ],
    ids=["dropped", "retyped", "null-allowed", "null-forbidden", "missing-table"],
)
def test_schema_drift_stops_only_its_table(totesys_url, local_lake, ddl, expected):
    with psycopg.connect(totesys_url) as conn:
        ids = seed_reference(conn)
        add_sale(conn, ids, T0)
    _run(totesys_url, local_lake, batch_ts=BATCH)
    drifted = ddl.split()[2]
    with psycopg.connect(totesys_url) as conn:
        conn.execute("UPDATE counterparty SET commercial_contact = 'x', last_updated = %s "
                     "WHERE commercial_contact IS NULL", (T0 + timedelta(minutes=1),))
        conn.execute(ddl)
        if drifted != "payment":
            add_sale(conn, ids, T0 + timedelta(minutes=1))  # something a run would otherwise archive
    before = versions(local_lake)
    with pytest.raises(SourceError, match=expected) as err:
        _run(totesys_url, local_lake, batch_ts=BATCH + timedelta(minutes=5))
    assert f"nothing was extracted for {drifted} (the other tables go on)" in str(err.value)
    after = versions(local_lake)
    assert after[drifted] == before[drifted]
    assert after["counterparty"] == before["counterparty"] + (0 if drifted == "counterparty" else 1)
    if drifted != "payment":
        assert after["transaction"] == before["transaction"] + 1


def test_a_column_added_to_the_source_is_archived_from_then_on(totesys_url, local_lake):
    with psycopg.connect(totesys_url) as conn:
        ids = seed_reference(conn)
        add_sale(conn, ids, T0)
    _run(totesys_url, local_lake, batch_ts=BATCH)
    with psycopg.connect(totesys_url) as conn:
        conn.execute("ALTER TABLE sales_order ADD COLUMN discount_pct numeric(5,2)")
        conn.execute("ALTER TABLE sales_order ADD COLUMN note jsonb")
        new = add_sale(conn, ids, T0 + timedelta(minutes=1))["sales_order"]
        conn.execute("UPDATE sales_order SET discount_pct = 12.50, note = '{\"a\": 1}' WHERE sales_order_id = %s", (new,))
    messages: list[str] = []
    result = _run(totesys_url, local_lake, batch_ts=BATCH + timedelta(minutes=1), log=messages.append)["sales_order"]
    assert result.rows == 1 and result.added_columns == (("discount_pct", "numeric(5,2)"), ("note", "jsonb"))
    assert any("archiving columns outside the contract: discount_pct (numeric(5,2)), note (jsonb)" in m for m in messages)
    rows = archived(local_lake, "sales_order", with_batch=True)
    schema = local_lake.table("sales_order").snapshot().arrow_schema()
    assert schema.field("discount_pct").type == pa.decimal128(5, 2) and schema.field("note").type == pa.string()
    assert rows["discount_pct"].to_pylist() == [None, Decimal("12.50")]  # the earlier batch had no such column
    assert rows["note"].to_pylist() == [None, '{"a": 1}']


def test_validate_source_schema_accepts_the_contract_schema_and_refuses_non_contract_tables(source_url):
    with psycopg.connect(source_url) as conn:
        validate_source_schema(conn, contract.TABLE_NAMES)
        with pytest.raises(ValueError, match="'_prisma_migrations'"):
            validate_source_schema(conn, ["_prisma_migrations"])


def test_only_contract_tables_can_be_extracted(source_url, local_lake):
    with pytest.raises(ValueError, match="not totesys contract tables: '_prisma_migrations'"):
        _run(source_url, local_lake, ["currency", "_prisma_migrations"])
    with pytest.raises(TypeError):
        _run(source_url, local_lake, "currency")
    assert not any(v >= 0 for v in versions(local_lake).values())


@pytest.mark.parametrize(
    ("update", "expected"),
    [
        ("UPDATE payment SET payment_amount = 'NaN'", r"payment\.payment_amount: a source value does not convert to decimal128\(10, 2\)"),
        ("UPDATE payment SET created_at = 'infinity'", r"payment\.created_at: a source value does not convert to timestamp\[ms\]"),
    ],
    ids=["NaN-money", "infinite-timestamp"],
)
def test_a_value_that_does_not_convert_names_the_column_and_commits_nothing_for_its_table(
    source_url, local_lake, update, expected
):
    with psycopg.connect(source_url) as conn:
        ids = seed_reference(conn)
        add_sale(conn, ids, T0)
        conn.execute(update)
    with pytest.raises(SourceError, match=expected):
        _run(source_url, local_lake, batch_ts=BATCH)
    assert version(local_lake, "payment") == -1
    assert not (local_lake.objects.root / "payment").exists()
    assert version(local_lake, "design") == version(local_lake, "transaction") == 0  # the other tables are committed


def test_a_statement_timeout_is_a_source_error_naming_the_table(source_url, local_lake):
    with psycopg.connect(source_url) as conn:
        _insert(conn, "design", {"design_name": "Wooden", "file_location": "/usr", "file_name": "w.json",
                                 "created_at": T0, "last_updated": T0})
    with psycopg.connect(source_url) as blocker:  # e.g. a migration holding the table: the COPY waits
        blocker.execute("LOCK TABLE design IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(SourceError, match=r"reading design from .* failed: .*statement timeout.*nothing was committed for design"):
            _run(source_url, local_lake, ["design"], batch_ts=BATCH, statement_timeout=timedelta(milliseconds=500))
        assert time.monotonic() - started < 10
    assert version(local_lake, "design") == -1


# --------------------------------------------------------------------------------------------------
# The source cannot be reached; secrets stay out of messages


def test_an_unreachable_source_is_a_quick_source_error_without_the_password(local_lake):
    url = f"postgresql://reader:s3cret-pw@127.0.0.1:{free_port()}/totesys"
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"cannot connect to the totesys source database postgresql://reader:\*\*\*@127") as err:
        _run(url, local_lake, connect_timeout=2)
    assert time.monotonic() - started < 5
    assert "s3cret-pw" not in str(err.value) and "TOTESYS_DB_URL" in str(err.value)
    assert err.value.__suppress_context__  # the driver's own error is not chained into tracebacks and logs
    assert not any(v >= 0 for v in versions(local_lake).values())


def test_a_missing_source_database_is_a_source_error(pg_server, local_lake):
    with pytest.raises(SourceError, match='database "no_such_db" does not exist'):
        _run(pg_server.url("no_such_db"), local_lake)


def test_the_password_never_reaches_logs_results_or_the_commit_log(source_url, local_lake):
    url = source_url.replace("postgresql://postgres@", "postgresql://postgres:s3cret-pw@")  # trust auth ignores it
    with psycopg.connect(url) as conn:
        ids = seed_reference(conn)
        add_sale(conn, ids, T0)
    messages: list[str] = []
    results = _run(url, local_lake, batch_ts=BATCH, log=messages.append)
    assert any("postgres:***@" in m for m in messages)
    logs = "".join(p.read_text() for p in local_lake.objects.root.glob("*/_delta_log/*.json"))
    assert 'snapshot' in logs  # the extraction state is in the commits
    assert "s3cret" not in "\n".join(messages) + repr(results) + logs


# --------------------------------------------------------------------------------------------------
# Streaming: row groups of batch_rows, memory independent of table size


class _WatchedSpool(Spool):
    """The real spool, sampling Arrow's allocated memory each time a batch reaches it."""

    arrow_peak = 0
    batch_rows: list[int] = []

    def write(self, batch):
        _WatchedSpool.arrow_peak = max(_WatchedSpool.arrow_peak, pa.total_allocated_bytes())
        _WatchedSpool.batch_rows.append(batch.num_rows)
        super().write(batch)


def _add_wide_designs(url: str, first: int, last: int) -> None:
    """~1 KB rows, one a minute: the versions inside the look-back window stay few, as in real data."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO design (design_name, file_location, file_name, created_at, last_updated) "
            "SELECT 'design ' || g, repeat(md5(g::text), 31), 'f.json', %s, %s + g * interval '1 minute' "
            "FROM generate_series(%s::integer, %s::integer) g", (T0, T0, first, last))


def _stream_peaks(url: str, root, monkeypatch) -> tuple[int, int, int]:
    """(rows, Python peak, Arrow peak) of a first extraction of design into a new zone."""
    monkeypatch.setattr(extract_module, "Spool", _WatchedSpool)
    _WatchedSpool.arrow_peak, _WatchedSpool.batch_rows = 0, []
    arrow_baseline = pa.total_allocated_bytes()
    tracemalloc.start()
    try:
        run = prepare_extraction(url, LakeZone(root.as_uri()), ["design"], batch_ts=BATCH, batch_rows=3000)
        python_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    run.discard()
    return run.results["design"].rows, python_peak, _WatchedSpool.arrow_peak - arrow_baseline


def test_rows_are_streamed_in_batches_with_memory_independent_of_table_size(source_url, tmp_path, monkeypatch):
    _add_wide_designs(source_url, 1, 100)
    _run(source_url, LakeZone((tmp_path / "warm-up").as_uri()), ["design"])  # one-off imports are not the stream's
    _add_wide_designs(source_url, 101, 6_000)
    small = _stream_peaks(source_url, tmp_path / "small", monkeypatch)  # ~6 MB of CSV
    _add_wide_designs(source_url, 6_001, 30_000)
    big = _stream_peaks(source_url, tmp_path / "big", monkeypatch)  # ~30 MB of CSV
    assert (small[0], big[0]) == (6_000, 30_000)
    mib = 1024 * 1024
    # 24 MB more rows, (almost) no more memory: holding the table would add ~24 MB. The Arrow figure is
    # sampled as batches reach the spool, so it varies by a few MB with how blocks and batches align.
    assert big[1] - small[1] < 6 * mib, (small, big)  # Python: the COPY block being filled
    assert big[2] - small[2] < 6 * mib, (small, big)  # Arrow: about two parsed blocks and two batches
    assert big[1] + big[2] < 24 * mib, big
    assert _WatchedSpool.batch_rows == [3000] * 10


def test_the_state_recorded_in_the_commit_is_small_and_readable(source_url, local_lake):
    with psycopg.connect(source_url) as conn:
        for i in range(50):
            _insert(conn, "currency", {"currency_code": "GBP", "created_at": T0,
                                       "last_updated": T0 + timedelta(minutes=i)})
    result = _run(source_url, local_lake, ["currency"], batch_ts=BATCH)["currency"]
    (info,) = local_lake.table("currency").snapshot().delta.history(1)
    record = json.loads(info["totesys"])
    assert record["stage"] == "extract" and record["commit_id"] == result.commit.commit_id
    state = record["state"]
    assert state["watermark"] == "2024-11-04T10:19:10.000"
    assert state["window_start"] == "2024-11-04T10:04:10.000"
    assert len(state["versions"]) == 16  # only the last 15 minutes (inclusive) are remembered
    assert state["versions"][0][:2] == [35, "2024-11-04T10:04:10.000"]
    assert all(len(v) == 3 and len(v[2]) == 16 for v in state["versions"])  # each with its content fingerprint
    assert state["fingerprint_columns"] == list(contract.SOURCE_TABLES["currency"].column_names)
    assert local_lake.table("currency").snapshot().state == state == result.write.state
    assert local_lake.table("currency").snapshot().txn_version == 1  # the batch number, as a Delta app transaction


def test_losing_the_source_connection_mid_stream_is_a_source_error_and_commits_nothing(
        source_url, local_lake, monkeypatch):
    with psycopg.connect(source_url) as conn:
        conn.execute(
            "INSERT INTO design (design_name, file_location, file_name, created_at, last_updated) "
            "SELECT 'design ' || g, repeat(md5(g::text), 20), 'f.json', %s, %s + g * interval '1 ms' "
            "FROM generate_series(1, 20000) g", (T0, T0))  # ~14 MB: far more than the socket buffers
    spools: list[Spool] = []

    class KillingSpool(Spool):
        """When the first batch arrives, the source terminates the extraction's connection (as a DBA or a
        failover would) while its COPY is still streaming."""

        def write(self, batch):
            if not spools:
                spools.append(self)
                with psycopg.connect(source_url, autocommit=True) as admin:
                    killed = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                           "WHERE application_name = 'totesys_platform extract'").fetchall()
                assert killed == [(True,)]
            super().write(batch)

    monkeypatch.setattr(extract_module, "Spool", KillingSpool)
    with pytest.raises(SourceError, match=r"reading design from .* failed: .*terminat.*nothing was committed for design"):
        _run(source_url, local_lake, ["design"], batch_ts=BATCH, batch_rows=1000)
    assert version(local_lake, "design") == -1
    assert not os.path.exists(spools[0].path)  # the spooled rows are gone too


# --------------------------------------------------------------------------------------------------
# Changes that do not move last_updated forward (contract section 4: duplicate or out-of-order last_updated)


def _currencies(conn, count: int) -> list[int]:
    return [_insert(conn, "currency", {"currency_code": code, "created_at": T0, "last_updated": T0 + timedelta(seconds=i)})
            for i, code in enumerate(["GBP", "USD", "EUR", "CHF", "JPY"][:count])]


def test_a_change_that_keeps_last_updated_is_captured_again_and_reported_not_failed(source_url, local_lake):
    with psycopg.connect(source_url) as conn:
        ids = _currencies(conn, 3)
    _run(source_url, local_lake, ["currency"], batch_ts=BATCH)
    with psycopg.connect(source_url) as conn:
        conn.execute("UPDATE currency SET currency_code = 'AUD' WHERE currency_id = %s", (ids[1],))
    messages: list[str] = []
    result = _run(source_url, local_lake, ["currency"], batch_ts=BATCH + timedelta(minutes=1),
                  log=messages.append)["currency"]
    assert result.rows == 1 and result.duplicates_skipped == 2
    rows = archived(local_lake, "currency", with_batch=True)
    assert rows.filter(pc.equal(rows[BATCH_COLUMN], 2))["currency_code"].to_pylist() == ["AUD"]
    message = result.out_of_order.describe(contract.SOURCE_TABLES["currency"])
    assert f"currency_id {ids[1]} at 2024-11-04T09:30:11.000 (changed in place)" in message
    assert "SET ..., last_updated = now()" in message
    assert any(m.startswith("WARNING currency: 1 row(s) changed without last_updated moving forward") for m in messages)

    # Read again unchanged, the new capture is remembered: nothing more is archived or reported.
    again = _run(source_url, local_lake, ["currency"], batch_ts=BATCH + timedelta(minutes=2))["currency"]
    assert again.rows == 0 and not again.out_of_order


def test_a_last_updated_moved_backwards_is_archived_as_its_version_and_reported(source_url, local_lake):
    with psycopg.connect(source_url) as conn:
        ids = _currencies(conn, 3)
    _run(source_url, local_lake, ["currency"], batch_ts=BATCH)
    with psycopg.connect(source_url) as conn:
        conn.execute("UPDATE currency SET currency_code = 'AUD', last_updated = last_updated - interval '1 second' "
                     "WHERE currency_id = %s", (ids[2],))
    result = _run(source_url, local_lake, ["currency"], batch_ts=BATCH + timedelta(minutes=1))["currency"]
    assert result.rows == 1
    assert result.out_of_order.moved_back == ((ids[2], to_ms(T0 + timedelta(seconds=1)), to_ms(T0 + timedelta(seconds=2))),)
    assert (ids[2], T0 + timedelta(seconds=1)) in archived_versions(local_lake, "currency")
    assert "currency_id %d at 2024-11-04T09:30:11.000 (behind its version at 2024-11-04T09:30:12.000)" % ids[2] in (
        result.out_of_order.describe(contract.SOURCE_TABLES["currency"]))
    # Read again in the look-back window, the version is archived already: no new capture, nothing reported.
    again = _run(source_url, local_lake, ["currency"], batch_ts=BATCH + timedelta(minutes=2))["currency"]
    assert again.rows == 0 and not again.out_of_order


def test_unchanged_rows_read_again_are_not_reported(source_url, local_lake):
    """Re-reading the look-back window again and again, with hostile values, finds every fingerprint equal."""
    with psycopg.connect(source_url) as conn:
        ids = seed_reference(conn)
        add_sale(conn, ids, T0 + timedelta(minutes=1), price="0.10")
    for minute in range(3):
        results = _run(source_url, local_lake, batch_ts=BATCH + timedelta(minutes=minute))
        assert all(r.rows == 0 for r in results.values()) or minute == 0


def test_a_deleted_row_is_archived_as_a_tombstone_of_its_latest_version_and_not_warned_about_as_vanished(
        source_url, local_lake):
    with psycopg.connect(source_url) as conn:
        ids = _currencies(conn, 3)
    _run(source_url, local_lake, ["currency"], batch_ts=BATCH)
    with psycopg.connect(source_url, autocommit=True) as conn:
        marker = read_markers(conn, ["currency"])["currency"]
        conn.execute("UPDATE currency SET currency_code = 'XAU', last_updated = %s WHERE currency_id = %s",
                     (T0 + timedelta(seconds=30), ids[0]))
        conn.execute("DELETE FROM currency WHERE currency_id = %s", (ids[0],))
        conn.execute("INSERT INTO currency (currency_code, created_at, last_updated) VALUES ('CHF', %s, %s)",
                     (T0, T0 + timedelta(minutes=1)))
    wait_for_delete_statistics(source_url, "currency", marker)
    messages: list[str] = []
    seen_at = BATCH + timedelta(minutes=1)
    result = extract_tables(source_url, local_lake, ["currency"], batch_ts=seen_at, log=messages.append)["currency"]
    assert result.rows == 2 and result.tombstones == 1  # CHF, and the tombstone
    assert result.write.state[TOMBSTONES_TOTAL] == 1 and result.write.state[RECAPTURED_TOTAL] == 1
    warnings = [m for m in messages if m.startswith("WARNING currency")]
    assert warnings == [f"WARNING currency: 1 row(s) deleted in the source are archived as tombstones: currency_id {ids[0]}"]
    rows = archived(local_lake, "currency", with_batch=True)
    tombstone = rows.filter(pc.is_valid(rows[DELETED_AT_COLUMN])).to_pylist()
    # The id's latest archived version (the update never reached the lake: deleted before any run saw it).
    assert [(t["currency_id"], t["currency_code"], t["last_updated"], t[DELETED_AT_COLUMN], t[BATCH_COLUMN])
            for t in tombstone] == [(ids[0], "GBP", T0, seen_at, 2)]
    assert ids[0] not in live_archived_ids(local_lake.table("currency"), local_lake.table("currency").snapshot(),
                                           "currency_id").to_pylist()
    # Nothing more to bury on the next run, whatever the statistics say.
    again = extract_tables(source_url, local_lake, ["currency"], batch_ts=seen_at + timedelta(minutes=1))["currency"]
    assert again.rows == 0 and again.tombstones == 0


def _many_currencies(conn, count: int) -> list[int]:
    return [_insert(conn, "currency", {"currency_code": f"Q{i:02d}", "created_at": T0,
                                       "last_updated": T0 + timedelta(seconds=i)}) for i in range(count)]


def test_a_mass_disappearance_is_refused_for_its_table_only_until_allowed(source_url, local_lake):
    with psycopg.connect(source_url) as conn:
        ids = _many_currencies(conn, 20)
        _insert(conn, "design", {"design_name": "Wooden", "file_location": "/usr", "file_name": "w.json",
                                 "created_at": T0, "last_updated": T0})
    _run(source_url, local_lake, ["currency", "design"], batch_ts=BATCH)
    with psycopg.connect(source_url, autocommit=True) as conn:
        marker = read_markers(conn, ["currency"])["currency"]
        conn.execute("DELETE FROM currency WHERE currency_id = ANY(%s)", (ids[:15],))
        _insert(conn, "design", {"design_name": "Steel", "file_location": "/usr", "file_name": "s.json",
                                 "created_at": T0, "last_updated": T0 + timedelta(minutes=1)})
    wait_for_delete_statistics(source_url, "currency", marker)
    before = version(local_lake, "currency")
    with pytest.raises(MassDisappearanceError) as refused:
        _run(source_url, local_lake, ["currency", "design"], batch_ts=BATCH + timedelta(minutes=1))
    message = str(refused.value)
    assert message.startswith(f"currency: 15 of its 20 archived rows (75%) are gone from the source since the last "
                              f"run (e.g. currency_id {ids[0]}, {ids[1]}")
    assert "Nothing was archived for currency" in message and "max_deleted_share above 0.75" in message
    assert version(local_lake, "currency") == before  # nothing tombstoned
    assert [r["design_name"] for r in archived(local_lake, "design").to_pylist()] == ["Wooden", "Steel"]  # flows on
    # Asked again, it still refuses; allowed, the 15 are buried.
    with pytest.raises(MassDisappearanceError):
        _run(source_url, local_lake, ["currency"], batch_ts=BATCH + timedelta(minutes=2))
    allowed = _run(source_url, local_lake, ["currency"], batch_ts=BATCH + timedelta(minutes=2),
                   max_deleted_share=1.0)["currency"]
    assert allowed.tombstones == 15 and allowed.rows == 15
    live = live_archived_ids(local_lake.table("currency"), local_lake.table("currency").snapshot(), "currency_id")
    assert sorted(live.to_pylist()) == ids[15:]


def test_a_truncated_table_is_refused_as_a_mass_disappearance(source_url, local_lake):
    with psycopg.connect(source_url) as conn:
        _many_currencies(conn, 12)
    _run(source_url, local_lake, ["currency"], batch_ts=BATCH)
    with psycopg.connect(source_url, autocommit=True) as conn:
        conn.execute("TRUNCATE currency CASCADE")  # counts no deleted tuple: the new file node tells
    with pytest.raises(MassDisappearanceError, match=r"^currency: 12 of its 12 archived rows \(100%\) are gone"):
        _run(source_url, local_lake, ["currency"], batch_ts=BATCH + timedelta(minutes=1))


@pytest.mark.parametrize("same_version, behind_the_window", [
    pytest.param(False, False, id="new version"),
    pytest.param(True, False, id="the same version, in the look-back window"),
    pytest.param(True, True, id="the same version, behind the window (read by its xmin)"),
])
def test_a_re_inserted_id_is_alive_again(source_url, local_lake, same_version, behind_the_window):
    lookback = timedelta(minutes=15)
    with psycopg.connect(source_url) as conn:
        ids = _currencies(conn, 2)
    _run(source_url, local_lake, ["currency"], batch_ts=BATCH, lookback=lookback)
    with psycopg.connect(source_url, autocommit=True) as conn:
        marker = read_markers(conn, ["currency"])["currency"]
        conn.execute("DELETE FROM currency WHERE currency_id = %s", (ids[0],))
        if behind_the_window:  # the watermark moves an hour on: the deleted version is far behind the window
            conn.execute("INSERT INTO currency (currency_code, created_at, last_updated) VALUES ('NOK', %s, %s)",
                         (T0, T0 + timedelta(hours=1)))
    wait_for_delete_statistics(source_url, "currency", marker)
    buried = _run(source_url, local_lake, ["currency"], batch_ts=BATCH + timedelta(minutes=1), lookback=lookback)
    assert buried["currency"].tombstones == 1
    # Inserted again: restored from a backup as it was, or written anew.
    last_updated = T0 if same_version else T0 + timedelta(minutes=5)
    with psycopg.connect(source_url) as conn:
        conn.execute("INSERT INTO currency (currency_id, currency_code, created_at, last_updated) VALUES (%s, 'GBP', "
                     "%s, %s)", (ids[0], T0, last_updated))
    back = _run(source_url, local_lake, ["currency"], batch_ts=BATCH + timedelta(minutes=2), lookback=lookback)
    assert back["currency"].rows == 1 and back["currency"].tombstones == 0
    assert back["currency"].late_rows == (1 if behind_the_window else 0)
    live = live_archived_ids(local_lake.table("currency"), local_lake.table("currency").snapshot(), "currency_id")
    assert set(ids) <= set(live.to_pylist()) and len(live) == len(ids) + behind_the_window
    again = _run(source_url, local_lake, ["currency"], batch_ts=BATCH + timedelta(minutes=3), lookback=lookback)
    assert again["currency"].rows == 0  # and only once


def test_ids_are_compared_only_when_the_table_may_have_lost_rows(source_url, local_lake, monkeypatch):
    """Comparing ids reads every key: a run does it only when the table's delete counter or file node moved."""
    with psycopg.connect(source_url) as conn:
        ids = _currencies(conn, 2)
    _run(source_url, local_lake, ["currency"], batch_ts=BATCH)
    compared: list[str] = []
    real_source_ids = deletes_module.source_ids
    monkeypatch.setattr(deletes_module, "source_ids", lambda conn, table: compared.append(table.name)
                        or real_source_ids(conn, table))
    with psycopg.connect(source_url) as conn:
        conn.execute("UPDATE currency SET currency_code = 'AUD', last_updated = %s WHERE currency_id = %s",
                     (T0 + timedelta(minutes=1), ids[1]))
    assert _run(source_url, local_lake, ["currency"], batch_ts=BATCH + timedelta(minutes=1))["currency"].rows == 1
    assert compared == []
    with psycopg.connect(source_url, autocommit=True) as conn:
        marker = read_markers(conn, ["currency"])["currency"]
        conn.execute("DELETE FROM currency WHERE currency_id = %s", (ids[0],))
    wait_for_delete_statistics(source_url, "currency", marker)
    assert _run(source_url, local_lake, ["currency"], batch_ts=BATCH + timedelta(minutes=2))["currency"].tombstones == 1
    assert compared == ["currency"]


def test_a_version_1_state_without_fingerprints_still_works(source_url, local_lake):
    """States written before fingerprints existed (format 1) load; their versions are simply not compared."""
    with psycopg.connect(source_url) as conn:
        ids = _currencies(conn, 2)
    first = _run(source_url, local_lake, ["currency"], batch_ts=BATCH)["currency"]
    table = local_lake.table("currency")
    old_state = {k: v for k, v in first.write.state.items() if k != "fingerprint_columns"} | {
        "format": 1, "versions": [v[:2] for v in first.write.state["versions"]]}
    empty = table.read().slice(0, 0)
    table.append(empty, read=table.snapshot(), stage="extract", state=old_state, rows=0)
    with psycopg.connect(source_url) as conn:
        conn.execute("UPDATE currency SET currency_code = 'AUD' WHERE currency_id = %s", (ids[0],))
        _insert(conn, "currency", {"currency_code": "EUR", "created_at": T0, "last_updated": T0 + timedelta(minutes=1)})
    result = _run(source_url, local_lake, ["currency"], batch_ts=BATCH + timedelta(minutes=1))["currency"]
    assert result.rows == 1 and result.duplicates_skipped == 2
    # New versions get fingerprints; the ones remembered from the old state stay without until they age out.
    assert [len(v) for v in result.write.state["versions"]] == [2, 2, 3]


def test_a_snapshot_says_how_many_transactions_were_open_and_how_far_behind_the_oldest_was():
    assert SourceSnapshot.in_progress("1000:1000:") == (0, 0)
    assert SourceSnapshot.in_progress("990:1004:990,997,1001") == (3, 14)
    assert SourceSnapshot.in_progress(None) is None and SourceSnapshot.in_progress("garbage") is None
