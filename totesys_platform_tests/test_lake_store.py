"""The lake's object store for files beside the tables (file:// and s3:// on moto): bytes, exclusivity, errors."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from totesys_platform.lake.store import (
    AlreadyExistsError,
    LakeStore,
    LakeUnavailableError,
    LocalLakeStore,
    S3LakeStore,
)
from totesys_platform.local.postgres import free_port

@pytest.fixture
def lake(lake_root_url, request) -> LakeStore:
    """A store on the parametrised zone root (local folder, then S3 on moto)."""
    endpoint = request.getfixturevalue("moto_endpoint") if lake_root_url.startswith("s3://") else None
    return LakeStore.from_url(lake_root_url, endpoint_url=endpoint)


@pytest.fixture
def s3_lake(s3_bucket, moto_endpoint) -> S3LakeStore:
    return S3LakeStore(s3_bucket, "zone", endpoint_url=moto_endpoint)


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


@pytest.fixture
def silent_endpoint():
    """A loopback TCP server that accepts connections and never answers: a hung S3 endpoint."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.mark.timeout(90)  # without the bound, botocore's and delta-rs's defaults would hold the calls for minutes
def test_a_hung_s3_endpoint_fails_the_call_within_its_configured_bound(silent_endpoint, monkeypatch):
    from totesys_platform.defs.resources import LakeResource, build_resources

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-2")
    lake = LakeResource(ingestion_url="s3://hung-bucket/ingestion", processed_url="s3://hung-bucket/processed",
                        aws_endpoint_url=silent_endpoint, s3_read_timeout_seconds=1, s3_max_attempts=2)
    zone = lake.ingestion()
    store = zone.objects
    assert store.client.meta.config.read_timeout == 1
    assert store.client.meta.config.retries["total_max_attempts"] == 2
    with pytest.raises(LakeUnavailableError, match=r"cannot reach S3 to .* \(LAKE_INGESTION_URL=s3://hung-bucket/ingestion"):
        store.read_bytes("report.html")
    # Delta tables go through delta-rs's own client: the same bound applies to it.
    assert zone.storage_options["timeout"] == "1s" and zone.storage_options["max_retries"] == "1"
    with pytest.raises(LakeUnavailableError, match=r"cannot reach S3 .*\(LAKE_INGESTION_URL=s3://hung-bucket/ingestion"):
        zone.table("sales_order").snapshot()

    monkeypatch.setenv("LAKE_S3_READ_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("LAKE_S3_MAX_ATTEMPTS", "4")
    configured = build_resources()["lake"]
    assert (configured.s3_read_timeout_seconds, configured.s3_max_attempts) == (2.5, 4)
    monkeypatch.setenv("LAKE_S3_MAX_ATTEMPTS", "lots")
    with pytest.raises(ValueError, match="LAKE_S3_MAX_ATTEMPTS must be a positive whole number, got 'lots'"):
        build_resources()
