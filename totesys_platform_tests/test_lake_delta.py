"""The lake's Delta tables on a real folder and on S3 (moto in server mode): commits with progress, exactly one
winner among concurrent writers, incremental reads by version, positions that notice a restored table."""

from __future__ import annotations

import http.client
import http.server
import shutil
import threading
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from totesys_platform.lake.delta import APPEND_ONLY, ChangesUnavailableError, ConcurrentCommitError, LakeZone
from totesys_platform.lake.processed.runner import position_problem
from totesys_platform.lake.store import LakeError, LakeUnavailableError

SCHEMA = pa.schema([
    pa.field("id", pa.int32(), nullable=False),
    pa.field("name", pa.string()),
    pa.field("amount", pa.decimal128(10, 2), nullable=False),
    pa.field("last_updated", pa.timestamp("ms"), nullable=False),
])


def rows(*ids: int, name: str = "O'Keefe") -> pa.Table:
    return pa.table({"id": list(ids), "name": [name if i % 2 else None for i in ids],
                     "amount": [Decimal(f"{i}.25") for i in ids],
                     "last_updated": [datetime(2024, 11, 4, 9, 30, 10, i * 1000) for i in ids]}, schema=SCHEMA)


@pytest.fixture
def zone(lake_root_url, request) -> LakeZone:
    endpoint = request.getfixturevalue("moto_endpoint") if lake_root_url.startswith("s3://") else None
    return LakeZone(lake_root_url, endpoint_url=endpoint, setting="LAKE_INGESTION_URL")


def test_a_commit_holds_the_rows_and_the_progress_and_numbers_the_transactions(zone):
    table = zone.table("currency")
    assert not table.snapshot().exists and table.snapshot().version == -1
    first = table.append(rows(1, 2), read=table.snapshot(), stage="extract", state={"watermark": "a"}, rows=2,
                         properties=APPEND_ONLY)
    second = table.append(rows(3), read=table.snapshot(), stage="extract", state={"watermark": "b"}, rows=1)
    assert (first.version, second.version, second.rows, second.files) == (0, 1, 1, 1)
    now = table.snapshot()
    assert now.state == {"watermark": "b"} and now.txn_version == 2 and now.commit_id == second.commit_id
    assert now.row_count() == 3 and now.file_count() == 2
    read = table.read()
    assert sorted(read.to_pylist(), key=lambda r: r["id"]) == [
        {**r, "last_updated": r["last_updated"]} for r in rows(1, 2, 3).to_pylist()]  # values exact, NULLs NULL
    assert now.delta.metadata().configuration["delta.appendOnly"] == "true"


@pytest.mark.timeout(120)
def test_of_writers_starting_from_one_version_exactly_one_commits(zone):
    table = zone.table("payment")
    table.append(rows(1), read=table.snapshot(), stage="extract", state={"n": 0}, rows=1)
    reads = [table.snapshot() for _ in range(6)]  # six runs read the same state...
    barrier = threading.Barrier(len(reads))

    def commit(i: int):
        barrier.wait()  # ...and commit at the same moment
        try:
            return table.append(rows(10 + i), read=reads[i], stage="extract", state={"n": i}, rows=1)
        except ConcurrentCommitError as err:
            return err

    with ThreadPoolExecutor(len(reads)) as pool:
        outcomes = list(pool.map(commit, range(len(reads))))
    winners = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(winners) == 1, outcomes
    assert all("another writer committed" in str(o) for o in outcomes if isinstance(o, Exception))
    now = table.snapshot()
    assert now.version == 1 and now.txn_version == 2 and now.row_count() == 2
    assert now.state == {"n": winners[0].rows and int(now.state["n"])}


def test_a_commit_whose_success_was_reported_as_a_conflict_counts_once(zone, monkeypatch):
    """The object store retried a commit whose response was lost: the retry conflicts with the commit itself.
    (The lost response is the one fault injected: the commit before it is real.)"""
    import deltalake
    from deltalake.exceptions import CommitFailedError

    table = zone.table("design")
    table.append(rows(1), read=table.snapshot(), stage="extract", state={"n": 1}, rows=1)
    real_write = deltalake.write_deltalake

    def lost_response(*args, **kwargs):
        real_write(*args, **kwargs)
        raise CommitFailedError("version 1 already exists")

    monkeypatch.setattr(deltalake, "write_deltalake", lost_response)
    commit = table.append(rows(2), read=table.snapshot(), stage="extract", state={"n": 2}, rows=1)
    assert commit.version == 1 and table.snapshot().state == {"n": 2} and table.snapshot().row_count() == 2
    # A real conflict (somebody else's commit) is still refused, and nothing is committed twice.
    stale = table.snapshot()
    table.append(rows(3), read=stale, stage="extract", state={"n": 3}, rows=1)
    with pytest.raises(ConcurrentCommitError):
        table.append(rows(4), read=stale, stage="extract", state={"n": 4}, rows=1)
    assert sorted(table.read()["id"].to_pylist()) == [1, 2, 3]


def test_two_writers_creating_a_table_at_once_cannot_both_commit(zone):
    table = zone.table("design")
    a, b = table.snapshot(), table.snapshot()
    table.append(rows(1), read=a, stage="extract", state={}, rows=1)
    with pytest.raises(ConcurrentCommitError):
        table.append(rows(2), read=b, stage="extract", state={}, rows=1)
    assert table.snapshot().row_count() == 1


def test_changes_are_the_rows_committed_after_a_version_in_commit_order(zone):
    table = zone.table("sales_order")
    for ids in ((1, 2), (3,), (4, 5)):
        table.append(rows(*ids), read=table.snapshot(), stage="extract", state={}, rows=len(ids))
    now = table.snapshot()
    changes = table.changes(0, now)
    assert changes["id"].to_pylist() == [3, 4, 5] and changes["_commit_version"].to_pylist() == [1, 2, 2]
    assert table.changes(2, now).num_rows == 0
    assert table.changes(-1, now).num_rows == 5


def test_a_merge_keeps_the_latest_row_per_key_and_its_changes_are_the_new_images(zone):
    table = zone.table("dim_location")
    table.merge(rows(1, 2), "id", read=table.snapshot(), stage="process", state={"c": 1})
    table.merge(rows(2, 3, name="Leeds"), "id", read=table.snapshot(), stage="process", state={"c": 2})
    current = {r["id"]: r["name"] for r in table.read().to_pylist()}
    assert current == {1: "O'Keefe", 2: None, 3: "Leeds"}
    changes = table.changes(0, table.snapshot())
    assert sorted(changes["id"].to_pylist()) == [2, 3]  # the update's new image and the insert, not the old image
    assert table.snapshot().state == {"c": 2}
    # Nothing to merge is still progress to record.
    table.merge(rows().slice(0, 0), "id", read=table.snapshot(), stage="process", state={"c": 3})
    assert table.snapshot().state == {"c": 3} and table.snapshot().version == 2


def test_a_merge_reads_only_the_files_its_keys_can_be_in(tmp_path):
    """A tick's new keys merge without reading the table's other files (delta-rs skips them by their key range,
    instead of scanning a 1.6 M row dimension on every tick): the file holding keys 1-100 is made unreadable, and
    a merge of keys 900-902 does not notice, while one of key 50 does."""
    table = LakeZone((tmp_path / "lake").as_uri()).table("dim_transaction")
    table.merge(rows(*range(1, 101)), "id", read=table.snapshot(), stage="process", state={})
    [old_file] = table.snapshot().delta.file_uris()
    Path(old_file.removeprefix("file://")).write_bytes(b"not parquet")

    table.merge(rows(900, 901, 902), "id", read=table.snapshot(), stage="process", state={"c": 2})
    assert table.snapshot().state == {"c": 2}
    assert sorted(table.read(columns=["id"], filters=[("id", ">=", 900)])["id"].to_pylist()) == [900, 901, 902]
    with pytest.raises(LakeError, match="cannot merge into lake table dim_transaction"):
        table.merge(rows(50), "id", read=table.snapshot(), stage="process", state={"c": 3})


def test_changes_whose_files_were_cleaned_up_are_unavailable_not_wrong(tmp_path):
    zone = LakeZone((tmp_path / "lake").as_uri())
    table = zone.table("address")
    for i in range(3):
        table.append(rows(i + 1), read=table.snapshot(), stage="extract", state={}, rows=1)
    delta = table.snapshot().delta
    delta.optimize.compact()
    delta.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    with pytest.raises(ChangesUnavailableError, match="after version 0 can no longer be read"):
        table.changes(0, table.snapshot())
    assert sorted(table.read()["id"].to_pylist()) == [1, 2, 3]  # the table itself is whole


def test_a_position_notices_a_table_created_again_or_restored_from_an_older_copy(tmp_path):
    zone = LakeZone((tmp_path / "lake").as_uri())
    table = zone.table("staff")
    table.append(rows(1), read=table.snapshot(), stage="extract", state={}, rows=1)
    backup = tmp_path / "backup"
    shutil.copytree(tmp_path / "lake" / "staff", backup)
    table.append(rows(2), read=table.snapshot(), stage="extract", state={}, rows=1)
    position = table.snapshot().position()
    assert position_problem(position, table.snapshot()) is None

    table.append(rows(3), read=table.snapshot(), stage="extract", state={}, rows=1)
    assert position_problem(position, table.snapshot()) is None  # moved on: still the same table

    shutil.rmtree(tmp_path / "lake" / "staff")
    shutil.copytree(backup, tmp_path / "lake" / "staff")  # restored from the older copy
    assert "behind version 1 read before" in position_problem(position, table.snapshot())
    table.append(rows(9), read=table.snapshot(), stage="extract", state={}, rows=1)  # and written again
    assert "holds another commit at version 1" in position_problem(position, table.snapshot())

    shutil.rmtree(tmp_path / "lake" / "staff")
    table.append(rows(1), read=table.snapshot(), stage="extract", state={}, rows=1)  # lost, created again
    table.append(rows(2), read=table.snapshot(), stage="extract", state={}, rows=1)
    assert "was created again" in position_problem(position, table.snapshot())
    shutil.rmtree(tmp_path / "lake" / "staff")
    assert "is gone" in position_problem(position, table.snapshot())


# --------------------------------------------------------------------------------------------------
# S3 endpoints that cannot make a commit exclusive


class _DroppingConditionsProxy(http.server.BaseHTTPRequestHandler):
    """Forwards every request to moto without its If-None-Match header: an S3 endpoint that ignores
    conditional writes (some S3-compatible stores do)."""

    upstream: tuple[str, int] = ("127.0.0.1", 0)
    protocol_version = "HTTP/1.1"

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("if-none-match", "host")}
        conn = http.client.HTTPConnection(*self.upstream, timeout=30)
        conn.request(self.command, self.path, body=body or None, headers=headers)
        response = conn.getresponse()
        data = response.read()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def unconditional_endpoint(moto_endpoint):
    host, port = moto_endpoint.removeprefix("http://").split(":")
    handler = type("Proxy", (_DroppingConditionsProxy,), {"upstream": (host, int(port))})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_an_s3_endpoint_that_ignores_conditional_writes_is_refused_before_any_commit(s3_bucket, unconditional_endpoint):
    zone = LakeZone(f"s3://{s3_bucket}/ingestion", endpoint_url=unconditional_endpoint, setting="LAKE_INGESTION_URL")
    table = zone.table("currency")
    with pytest.raises(LakeUnavailableError, match=r"does not honour conditional writes \(If-None-Match: \*\).*"
                                                   r"nothing was written"):
        table.append(rows(1), read=table.snapshot(), stage="extract", state={}, rows=1)
    assert not table.snapshot().exists
    assert list(zone.objects.list_keys("")) == []  # the probe cleaned up after itself


def test_a_missing_bucket_is_a_clear_error_naming_the_setting(moto_endpoint):
    zone = LakeZone("s3://no-such-lake-bucket/ingestion", endpoint_url=moto_endpoint, setting="LAKE_INGESTION_URL")
    table = zone.table("currency")
    with pytest.raises(LakeUnavailableError, match=r"S3 bucket 'no-such-lake-bucket' does not exist "
                                                   r"\(LAKE_INGESTION_URL=s3://no-such-lake-bucket/ingestion"):
        table.append(rows(1), read=table.snapshot(), stage="extract", state={}, rows=1)
