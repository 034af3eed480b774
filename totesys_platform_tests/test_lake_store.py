"""The lake store (file:// and s3:// on moto) and the per-table manifest commit log."""

from __future__ import annotations

import io
import json
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from totesys_platform.lake.manifest import ConcurrentCommitError, TableLog, data_file_key
from totesys_platform.lake.store import (
    AlreadyExistsError,
    LakeError,
    LakeStore,
    LakeUnavailableError,
    LocalLakeStore,
    S3LakeStore,
)
from totesys_platform.local.postgres import free_port

SCHEMA = pa.schema([
    pa.field("id", pa.int32(), nullable=False),
    pa.field("name", pa.string()),
    pa.field("amount", pa.decimal128(10, 2), nullable=False),
    pa.field("paid", pa.bool_()),
    pa.field("last_updated", pa.timestamp("ms"), nullable=False),
])

ROWS = [
    {"id": 1, "name": "O'Keefe", "amount": Decimal("12.50"), "paid": True,
     "last_updated": datetime(2024, 11, 4, 9, 30, 10)},  # whole second
    {"id": 2, "name": "", "amount": Decimal("0.01"), "paid": False,
     "last_updated": datetime(2024, 11, 4, 9, 30, 10, 123000)},
    {"id": 3, "name": None, "amount": Decimal("99999999.99"), "paid": None,
     "last_updated": datetime(2022, 11, 3, 14, 20, 49, 962000)},
]


@pytest.fixture
def lake(lake_root_url, request) -> LakeStore:
    """A store on the parametrised zone root (local folder, then S3 on moto)."""
    endpoint = request.getfixturevalue("moto_endpoint") if lake_root_url.startswith("s3://") else None
    return LakeStore.from_url(lake_root_url, endpoint_url=endpoint)


@pytest.fixture
def s3_lake(s3_bucket, moto_endpoint) -> S3LakeStore:
    return S3LakeStore(s3_bucket, "zone", endpoint_url=moto_endpoint)


def _batch(rows=ROWS) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, schema=SCHEMA)


# --------------------------------------------------------------------------------------------------
# URLs and keys


def test_from_url_builds_the_right_store_and_refuses_other_schemes(tmp_path, moto_endpoint):
    local = LakeStore.from_url((tmp_path / "zone").as_uri())
    assert isinstance(local, LocalLakeStore)
    assert local.uri("a/b.json") == (tmp_path / "zone" / "a" / "b.json").as_uri()
    s3 = LakeStore.from_url("s3://my-bucket/some/prefix/", endpoint_url=moto_endpoint)
    assert isinstance(s3, S3LakeStore)
    assert s3.uri("a/b.json") == "s3://my-bucket/some/prefix/a/b.json"
    assert LakeStore.from_url("s3://my-bucket", endpoint_url=moto_endpoint).uri("k") == "s3://my-bucket/k"
    for bad in ("gs://bucket/x", "http://host/x", "/plain/path", "file://otherhost/x", "s3:///no-bucket"):
        with pytest.raises(ValueError):
            LakeStore.from_url(bad)


def test_invalid_keys_are_refused(tmp_path):
    store = LocalLakeStore(tmp_path)
    for bad in ("", "/abs", "a//b", "a/../b", "../escape", "a/./b", "a\\b", "trailing/"):
        with pytest.raises(ValueError, match="invalid lake key"):
            store.write_bytes(bad, b"x", exclusive=False)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------------
# Bytes, exclusivity, listing, delete (both back ends)


def test_bytes_round_trip_and_overwrite(lake):
    assert not lake.exists("t/one.json")
    lake.write_bytes("t/one.json", b'{"a": 1}', exclusive=False)
    assert lake.exists("t/one.json")
    assert lake.read_bytes("t/one.json") == b'{"a": 1}'
    lake.write_bytes("t/one.json", b"replaced", exclusive=False)
    assert lake.read_bytes("t/one.json") == b"replaced"
    assert lake.uri("t/one.json").startswith(lake.url)
    assert not lake.exists("t")  # a folder-like prefix is not an object
    with pytest.raises(FileNotFoundError):
        lake.read_bytes("t/missing.json")


def test_exclusive_write_refuses_an_existing_key_and_keeps_the_first_value(lake):
    lake.write_bytes("m/0000000001.json", b"first", exclusive=True)
    with pytest.raises(AlreadyExistsError, match="already exists"):
        lake.write_bytes("m/0000000001.json", b"second", exclusive=True)
    assert lake.read_bytes("m/0000000001.json") == b"first"


def test_exclusive_writes_racing_from_threads_have_exactly_one_winner(lake):
    outcomes = []

    def attempt(i: int) -> None:
        try:
            lake.write_bytes("race/key", f"writer {i}".encode(), exclusive=True)
            outcomes.append(("won", i))
        except AlreadyExistsError:
            outcomes.append(("lost", i))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(attempt, range(8)))
    winners = [i for outcome, i in outcomes if outcome == "won"]
    assert len(winners) == 1
    assert lake.read_bytes("race/key") == f"writer {winners[0]}".encode()


def test_list_keys_is_sorted_relative_and_uses_string_prefixes(lake):
    for key in ("b/2", "a/x/1", "a/1", "ab/1", "a/0", "c"):
        lake.write_bytes(key, b"x", exclusive=True)
    assert list(lake.list_keys("a/")) == ["a/0", "a/1", "a/x/1"]
    assert list(lake.list_keys("a")) == ["a/0", "a/1", "a/x/1", "ab/1"]
    assert list(lake.list_keys("")) == ["a/0", "a/1", "a/x/1", "ab/1", "b/2", "c"]
    assert list(lake.list_keys("nothing/")) == []


def test_delete_removes_a_key_and_ignores_a_missing_one(lake):
    lake.write_bytes("orphan.parquet", b"x", exclusive=True)
    lake.delete("orphan.parquet")
    assert not lake.exists("orphan.parquet")
    lake.delete("orphan.parquet")


# --------------------------------------------------------------------------------------------------
# Parquet


def test_parquet_round_trip_keeps_types_nulls_and_values_exactly(lake):
    written = lake.write_parquet("t/2024/11/04/t_1.parquet", [_batch(ROWS[:2]), _batch(ROWS[2:])], SCHEMA)
    assert (written.rows, written.key, written.uri) == (3, "t/2024/11/04/t_1.parquet", lake.uri("t/2024/11/04/t_1.parquet"))
    assert written.bytes == len(lake.read_bytes(written.key))
    table = lake.read_parquet(written.key)
    assert table.schema.equals(SCHEMA)
    assert table.to_pylist() == ROWS
    assert lake.read_parquet(written.key, columns=["id", "amount"]).to_pylist() == [
        {"id": r["id"], "amount": r["amount"]} for r in ROWS
    ]
    assert [r for b in lake.iter_parquet_batches(written.key, batch_size=2) for r in b.to_pylist()] == ROWS
    meta = pq.ParquetFile(io.BytesIO(lake.read_bytes(written.key))).metadata
    assert meta.num_row_groups == 2  # one per batch written
    assert meta.row_group(0).column(2).compression == "ZSTD"


def test_parquet_write_is_exclusive(lake):
    lake.write_parquet("t/f.parquet", [_batch()], SCHEMA)
    with pytest.raises(AlreadyExistsError):
        lake.write_parquet("t/f.parquet", [_batch(ROWS[:1])], SCHEMA)
    assert lake.read_parquet("t/f.parquet").num_rows == 3


def test_parquet_of_no_batches_is_an_empty_table_with_the_schema(lake):
    written = lake.write_parquet("t/empty.parquet", [], SCHEMA)
    assert written.rows == 0
    assert lake.read_parquet("t/empty.parquet").schema.equals(SCHEMA)


def test_parquet_batch_with_other_schema_or_a_null_in_not_null_field_is_refused_and_nothing_published(lake):
    other = pa.RecordBatch.from_pylist([{"id": 1}], schema=pa.schema([pa.field("id", pa.int64())]))
    with pytest.raises(ValueError, match="does not match"):
        lake.write_parquet("t/bad.parquet", [other], SCHEMA)
    loose = pa.schema([f.with_nullable(True) for f in SCHEMA])
    with_null = pa.RecordBatch.from_pylist([{**ROWS[0], "amount": None}], schema=loose)
    with pytest.raises(ValueError, match="'amount' is declared NOT NULL"):
        lake.write_parquet("t/bad.parquet", [with_null], SCHEMA)
    assert not lake.exists("t/bad.parquet")
    assert list(lake.list_keys("")) == []


def test_parquet_writer_failing_midway_publishes_nothing_and_leaves_no_temp_file(tmp_path):
    store = LocalLakeStore(tmp_path / "zone")

    def batches():
        yield _batch()
        raise RuntimeError("source went away")

    with pytest.raises(RuntimeError, match="source went away"):
        store.write_parquet("t/x.parquet", batches(), SCHEMA)
    assert [p.name for p in (tmp_path / "zone" / "t").iterdir()] == []


# --------------------------------------------------------------------------------------------------
# S3 specifics


def test_s3_listing_is_paginated(s3_bucket, moto_endpoint):
    store = S3LakeStore(s3_bucket, "zone", endpoint_url=moto_endpoint, page_size=250)
    keys = [f"many/{i:05d}" for i in range(1005)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: store.write_bytes(k, b"", exclusive=True), keys))
    store.write_bytes("other/x", b"", exclusive=True)
    pages = []
    store.client.meta.events.register("after-call.s3.ListObjectsV2", lambda **kw: pages.append(1))
    assert list(store.list_keys("many/")) == keys
    assert len(pages) == 5  # 4 full pages of 250 and one of 5


def test_s3_big_object_goes_multipart_exclusive_and_round_trips(s3_bucket, moto_endpoint):
    mib = 1024 * 1024
    store = S3LakeStore(s3_bucket, "zone", endpoint_url=moto_endpoint, multipart_threshold=5 * mib, part_size=5 * mib)
    data = os.urandom(11 * mib)
    calls = []
    store.client.meta.events.register("after-call.s3.UploadPart", lambda **kw: calls.append(1))
    store.write_bytes("big/blob", data, exclusive=True)
    assert len(calls) == 3
    assert store.read_bytes("big/blob") == data
    with pytest.raises(AlreadyExistsError):
        store.write_bytes("big/blob", os.urandom(11 * mib), exclusive=True)
    assert store.read_bytes("big/blob") == data
    assert store.client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []  # the refused one was aborted


def test_s3_missing_bucket_is_unavailable_with_a_clear_message(moto_endpoint):
    store = LakeStore.from_url("s3://no-such-bucket-here/lake", endpoint_url=moto_endpoint, setting="LAKE_INGESTION_URL")
    for action in (
        lambda: store.write_bytes("k", b"x", exclusive=True),
        lambda: store.read_bytes("k"),
        lambda: store.exists("k"),
        lambda: list(store.list_keys("")),
        lambda: store.write_parquet("t/f.parquet", [_batch()], SCHEMA),
    ):
        with pytest.raises(LakeUnavailableError) as err:
            action()
        message = str(err.value)
        assert "S3 bucket 'no-such-bucket-here' does not exist" in message
        assert "LAKE_INGESTION_URL=s3://no-such-bucket-here/lake" in message
        assert "create it" in message


def test_s3_unreachable_endpoint_is_unavailable_quickly():
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store = S3LakeStore("lake", "zone", endpoint_url=endpoint, max_attempts=2, connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(LakeUnavailableError, match=r"cannot reach S3 .*endpoint http://127\.0\.0\.1"):
        store.write_bytes("k", b"x", exclusive=True)
    with pytest.raises(LakeUnavailableError, match="cannot reach S3"):
        store.exists("k")
    assert time.monotonic() - started < 10


def test_s3_errors_never_contain_credentials(moto_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLESECRETID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-key-value")
    store = LakeStore.from_url("s3://missing-bucket-creds/x", endpoint_url=moto_endpoint)
    with pytest.raises(LakeUnavailableError) as err:
        store.read_bytes("k")
    assert "very-secret-key-value" not in str(err.value) and "AKIAEXAMPLESECRETID" not in str(err.value)


# --------------------------------------------------------------------------------------------------
# Local specifics


@pytest.fixture
def read_only_folder():
    """A folder this process cannot write to. As root, permission bits do not stop writes, so the test
    drops its effective uid to `nobody` while it runs (restored afterwards)."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="lake-ro-"))
    base.chmod(0o755)
    folder = base / "zone"
    folder.mkdir()
    (folder / "existing").write_bytes(b"kept")
    folder.chmod(0o555)
    (folder / "existing").chmod(0o444)
    if os.geteuid() == 0:
        import pwd

        os.seteuid(pwd.getpwnam("nobody").pw_uid)
        try:
            yield folder
        finally:
            os.seteuid(0)
    else:
        yield folder
    folder.chmod(0o755)
    for p in sorted(base.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    base.rmdir()


def test_read_only_folder_is_unavailable_with_a_clear_message(read_only_folder):
    store = LakeStore.from_url(read_only_folder.as_uri(), setting="LAKE_INGESTION_URL")
    with pytest.raises(LakeUnavailableError, match=r"cannot write to .*Permission denied.*make the folder writable.*LAKE_INGESTION_URL"):
        store.write_bytes("t/new", b"x", exclusive=True)
    with pytest.raises(LakeUnavailableError):
        store.write_parquet("t/f.parquet", [_batch()], SCHEMA)
    with pytest.raises(LakeUnavailableError):
        store.write_bytes("existing", b"x", exclusive=False)
    assert store.read_bytes("existing") == b"kept"  # reading still works


def test_local_root_that_is_a_file_is_unavailable(tmp_path):
    (tmp_path / "zone").write_bytes(b"not a folder")
    store = LocalLakeStore(tmp_path / "zone")
    with pytest.raises(LakeUnavailableError, match="cannot write to"):
        store.write_bytes("t/k", b"x", exclusive=True)


def test_local_listing_hides_temp_files_of_writes_in_progress(tmp_path):
    store = LocalLakeStore(tmp_path)
    store.write_bytes("t/a", b"x", exclusive=True)
    (tmp_path / "t" / ".tmp-b.123").write_bytes(b"half written")
    assert list(store.list_keys("t/")) == ["t/a"]


# --------------------------------------------------------------------------------------------------
# The manifest commit log


def test_data_file_key_layout_uses_the_utc_batch_time():
    assert data_file_key("sales_order", datetime(2024, 11, 4, 9, 30, 5, 123456)) == (
        "sales_order/2024/11/04/sales_order_20241104T093005123456.parquet"
    )
    aware = datetime(2024, 11, 4, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert data_file_key("t", aware) == "t/2024/11/03/t_20241103T223000000000.parquet"
    with pytest.raises(ValueError, match="invalid lake table name"):
        data_file_key("../x", datetime(2024, 1, 1))


def _commit_file(log: TableLog, seq_before: int, rows: list[dict]) -> str:
    key = data_file_key(log.table, datetime(2024, 11, 4) + timedelta(seconds=seq_before))
    log.store.write_parquet(key, [_batch(rows)], SCHEMA)
    log.commit(file=key, rows=len(rows), state={"n": seq_before + 1}, expected_prev_seq=seq_before)
    return key


def test_log_commits_in_sequence_and_reads_back(lake):
    log = TableLog(lake, "payment")
    assert log.latest() is None and log.entries() == [] and log.latest_seq() == 0
    keys = [_commit_file(log, i, [ROWS[i]]) for i in range(3)]
    latest = log.latest()
    assert (latest.seq, latest.file, latest.rows, latest.state) == (3, keys[2], 1, {"n": 3})
    assert [e.seq for e in log.entries()] == [1, 2, 3]
    assert [e.seq for e in log.entries(after_seq=1)] == [2, 3]
    assert log.entries(after_seq=3) == []
    assert [log.read(e).to_pylist()[0] for e in log.entries()] == ROWS
    assert lake.exists("_manifests/payment/0000000002.json")
    state_only = log.commit(file=None, rows=0, state={"note": "state only"}, expected_prev_seq=3)
    assert state_only.seq == 4 and log.latest().file is None
    with pytest.raises(ValueError, match="no data file"):
        log.read(state_only)


def test_a_stale_missing_or_broken_latest_hint_is_harmless(lake):
    log = TableLog(lake, "currency")
    for i in range(3):
        _commit_file(log, i, ROWS[:1])
    for hint in (b"1", b"0", b"7", b"garbage"):
        lake.write_bytes("_manifests/currency/_latest", hint, exclusive=False)
        assert log.latest().seq == 3, hint
    lake.delete("_manifests/currency/_latest")
    assert log.latest().seq == 3


def test_commit_after_a_stale_seq_raises_concurrent_commit_error_and_changes_nothing(lake):
    log = TableLog(lake, "design")
    _commit_file(log, 0, ROWS[:1])
    with pytest.raises(ConcurrentCommitError, match="another writer committed seq 1"):
        log.commit(file=None, rows=0, state={}, expected_prev_seq=0)
    assert log.latest().state == {"n": 1}
    with pytest.raises(LakeError, match=r"the entry it follows, seq 5, is no longer in .*nothing was committed: rerun"):
        log.commit(file=None, rows=0, state={}, expected_prev_seq=5)
    assert log.latest_seq() == 1


def test_concurrent_committers_have_exactly_one_winner_per_seq(lake):
    log = TableLog(lake, "staff")
    barrier = threading.Barrier(6)
    outcomes = []

    def commit(i: int) -> None:
        barrier.wait()
        try:
            outcomes.append(log.commit(file=None, rows=0, state={"writer": i}, expected_prev_seq=0).state["writer"])
        except ConcurrentCommitError:
            outcomes.append(None)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(commit, range(6)))
    winners = [o for o in outcomes if o is not None]
    assert len(winners) == 1
    assert log.latest().state == {"writer": winners[0]} and log.latest_seq() == 1


def test_commit_refuses_a_missing_data_file_and_non_json_state(lake):
    log = TableLog(lake, "address")
    with pytest.raises(LakeError, match="was not written"):
        log.commit(file="address/2024/01/01/address_x.parquet", rows=1, state={}, expected_prev_seq=0)
    with pytest.raises(ValueError, match="not JSON-able"):
        log.commit(file=None, rows=0, state={"when": datetime(2024, 1, 1)}, expected_prev_seq=0)
    assert log.latest() is None and list(lake.list_keys("")) == []


def test_commit_whose_response_was_lost_recognises_its_own_entry(tmp_path):
    """S3 may apply a PUT, lose the response, and refuse botocore's retry (If-None-Match): the entry is ours."""

    class LostResponseStore(LocalLakeStore):
        def write_bytes(self, key, data, *, exclusive):
            super().write_bytes(key, data, exclusive=exclusive)
            if exclusive and key.endswith(".json"):
                raise AlreadyExistsError(f"{key} already exists")  # what the retried request reports

    log = TableLog(LostResponseStore(tmp_path), "payment")
    entry = log.commit(file=None, rows=0, state={"a": 1}, expected_prev_seq=0)
    assert entry.seq == 1 and log.latest() == entry


def test_corrupt_manifests_give_a_clear_error(lake):
    log = TableLog(lake, "department")
    lake.write_bytes("_manifests/department/0000000001.json", b"{not json", exclusive=True)
    with pytest.raises(LakeError, match=r"0000000001\.json is not valid JSON.*restore it"):
        log.latest()
    other = TableLog(lake, "design")
    body = {"table": "design", "seq": 2, "file": None, "rows": 0, "committed_at": "x", "state": {}}
    lake.write_bytes("_manifests/design/0000000001.json", json.dumps(body).encode(), exclusive=True)
    with pytest.raises(LakeError, match="seq is 2, expected 1"):
        other.entries()


def test_a_referenced_data_file_that_disappeared_is_reported(lake):
    log = TableLog(lake, "currency")
    key = _commit_file(log, 0, ROWS)
    lake.delete(key)
    with pytest.raises(LakeError, match="must never be deleted"):
        log.read(log.latest())


def test_orphan_files_are_the_unreferenced_data_files(lake):
    log = TableLog(lake, "sales_order")
    kept = _commit_file(log, 0, ROWS)
    orphan = data_file_key("sales_order", datetime(2024, 11, 5))
    lake.write_parquet(orphan, [_batch()], SCHEMA)
    assert log.referenced_files() == {kept}
    assert log.orphan_files() == [orphan]


def test_table_names_are_checked():
    with pytest.raises(ValueError, match="invalid lake table name"):
        TableLog(LocalLakeStore("/tmp/unused-" + uuid.uuid4().hex), "Bad/Name")


@pytest.fixture
def silent_endpoint():
    """A loopback TCP server that accepts connections and never answers: a hung S3 endpoint."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.mark.timeout(60)  # without the bound, botocore's defaults would hold the call for minutes
def test_a_hung_s3_endpoint_fails_the_call_within_its_configured_bound(silent_endpoint, monkeypatch):
    from totesys_platform.resources import LakeResource, build_resources

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-2")
    lake = LakeResource(ingestion_url="s3://hung-bucket/ingestion", processed_url="s3://hung-bucket/processed",
                        aws_endpoint_url=silent_endpoint, s3_read_timeout_seconds=1, s3_max_attempts=2)
    store = lake.ingestion()
    assert store.client.meta.config.read_timeout == 1
    assert store.client.meta.config.retries["total_max_attempts"] == 2
    with pytest.raises(LakeUnavailableError, match=r"cannot reach S3 to .* \(LAKE_INGESTION_URL=s3://hung-bucket/ingestion"):
        store.read_bytes("_manifests/x/_latest")

    monkeypatch.setenv("LAKE_S3_READ_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("LAKE_S3_MAX_ATTEMPTS", "4")
    configured = build_resources()["lake"]
    assert (configured.s3_read_timeout_seconds, configured.s3_max_attempts) == (2.5, 4)
    monkeypatch.setenv("LAKE_S3_MAX_ATTEMPTS", "lots")
    with pytest.raises(ValueError, match="LAKE_S3_MAX_ATTEMPTS must be a positive whole number, got 'lots'"):
        build_resources()


def test_clean_orphans_deletes_only_old_unreferenced_files_in_both_zones(tmp_path, monkeypatch, capsys):
    from totesys_platform import cli

    ingestion, processed = LocalLakeStore(tmp_path / "ingestion"), LocalLakeStore(tmp_path / "processed")
    table = pa.table({"x": [1]})
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    committed = data_file_key("currency", now - timedelta(days=3))
    old_orphan = data_file_key("currency", now - timedelta(days=2))
    young_orphan = data_file_key("currency", now - timedelta(minutes=5))  # maybe a run still writing
    processed_orphan = data_file_key("dim_currency", now - timedelta(days=2))
    odd_name = "currency/2026/01/01/written_by_hand.parquet"  # no batch time: never deleted by age
    for store, key in ((ingestion, committed), (ingestion, old_orphan), (ingestion, young_orphan),
                       (processed, processed_orphan), (ingestion, odd_name)):
        store.write_parquet(key, table.to_batches(), table.schema)
    TableLog(ingestion, "currency").commit(file=committed, rows=1, state={}, expected_prev_seq=0)
    monkeypatch.setenv("LAKE_INGESTION_URL", ingestion.url)
    monkeypatch.setenv("LAKE_PROCESSED_URL", processed.url)

    assert cli.main(["lake", "clean-orphans", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 unreferenced data file(s)" in out and "would be deleted (dry run)" in out
    assert ingestion.exists(old_orphan) and processed.exists(processed_orphan)

    assert cli.main(["lake", "clean-orphans"]) == 0
    assert not ingestion.exists(old_orphan) and not processed.exists(processed_orphan)
    assert ingestion.exists(committed) and ingestion.exists(young_orphan) and ingestion.exists(odd_name)
    assert TableLog(ingestion, "currency").read(TableLog(ingestion, "currency").latest()).num_rows == 1

    with pytest.raises(SystemExit):
        cli.main(["lake", "clean-orphans", "--older-than-hours", "-1"])
    assert "give a positive number of hours" in capsys.readouterr().err
