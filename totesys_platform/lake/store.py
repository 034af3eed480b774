"""Plain objects in a lake zone, beside its Delta tables: a local folder (``file://``) or an S3 prefix (``s3://``).

Plain Python, no Dagster. For files that are not table data (the sales report) and for checking a zone:
its bucket, credentials and whether the endpoint makes an exclusive write exclusive (`lake.delta` relies on
that for its commits). Keys are relative to the zone root and always use ``/``. Every write is atomic: a
reader sees either the whole object or nothing. An *exclusive* write refuses to replace an existing key
(``AlreadyExistsError``).

Errors say what failed and what to do, and never contain credentials:
``LakeUnavailableError`` for a lake that cannot be used at all (missing bucket, unreachable endpoint,
permission denied, read-only folder), ``FileNotFoundError`` for a key that does not exist.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlsplit


from totesys_platform.redaction import redact_url



class LakeError(RuntimeError):
    """A lake operation failed; the message says what failed and what to do."""


class LakeUnavailableError(LakeError):
    """The lake cannot be used: bucket missing, endpoint unreachable, permission denied, read-only folder."""


class AlreadyExistsError(LakeError):
    """An exclusive write was refused because the key already exists."""


_BAD_KEY_PART = re.compile(r"^\.{1,2}$")


def check_key(key: str) -> str:
    """A key is a relative '/'-separated path without empty, '.' or '..' parts; returns it unchanged."""
    if not isinstance(key, str) or not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"invalid lake key {key!r}: use a relative path with '/' separators")
    if any(part == "" or _BAD_KEY_PART.match(part) for part in key.split("/")):
        raise ValueError(f"invalid lake key {key!r}: empty, '.' or '..' path parts are not allowed")
    return key


@dataclass(frozen=True)
class S3Timeouts:
    """How long one S3 call may wait: a hung endpoint fails the call after about
    max_attempts x (connect or read timeout) plus botocore's backoff, never later."""

    connect_seconds: float = 5
    read_seconds: float = 30
    max_attempts: int = 3


class LakeStore(ABC):
    """A lake zone root. Build one with ``LakeStore.from_url``."""

    url: str
    setting: str | None = None  # the configuration variable the URL came from, for error messages

    @staticmethod
    def from_url(url: str, *, endpoint_url: str | None = None, setting: str | None = None,
                 s3_timeouts: "S3Timeouts | None" = None) -> "LakeStore":
        """A store for ``file:///folder`` or ``s3://bucket/prefix``; ValueError for any other scheme.

        `setting` names the configuration variable the URL came from (e.g. LAKE_INGESTION_URL), so
        error messages can say what to fix. `s3_timeouts` bound how long an S3 call may hang.
        """
        parts = urlsplit(url)
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise ValueError(f"lake URL {url!r}: a file:// URL must name a local folder (file:///path)")
            if not parts.path or parts.path == "/":
                raise ValueError(f"lake URL {url!r}: name a folder, not the file-system root")
            return LocalLakeStore(Path(unquote(parts.path)), setting=setting)
        if parts.scheme == "s3":
            if not parts.netloc:
                raise ValueError(f"lake URL {redact_url(url)!r}: an s3:// URL needs a bucket (s3://bucket/prefix)")
            timeouts = s3_timeouts or S3Timeouts()
            return S3LakeStore(parts.netloc, unquote(parts.path), endpoint_url=endpoint_url, setting=setting,
                               connect_timeout=timeouts.connect_seconds, read_timeout=timeouts.read_seconds,
                               max_attempts=timeouts.max_attempts)
        raise ValueError(
            f"lake URL {redact_url(url)!r}: unsupported scheme {parts.scheme!r}; use file:///folder or s3://bucket/prefix"
        )

    @abstractmethod
    def uri(self, key: str) -> str:
        """The full URI of a key (file:///... or s3://bucket/prefix/key)."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """The object's bytes; FileNotFoundError if absent."""

    @abstractmethod
    def write_bytes(self, key: str, data: bytes, *, exclusive: bool) -> None:
        """Atomically write `data`; with `exclusive`, AlreadyExistsError if the key exists."""

    @abstractmethod
    def list_keys(self, prefix: str) -> Iterator[str]:
        """Keys starting with `prefix` (a plain string prefix, as on S3), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove a key (no error if absent). Only for our own never-published or orphaned files."""

    def _fix_hint(self) -> str:
        return f"fix {self.setting}" if self.setting else "fix the lake URL"


# --------------------------------------------------------------------------------------------------
# Local folder


class LocalLakeStore(LakeStore):
    """A lake zone in a local folder. Writes go to a temp file in the target folder, are fsynced, then
    published atomically (``os.link`` for exclusive writes, which fails if the target exists;
    ``os.replace`` otherwise), and the folder is fsynced so the new name survives a crash."""

    _TMP_PREFIX = ".tmp-"

    def __init__(self, root: Path | str, *, setting: str | None = None):
        self.root = Path(root).resolve()
        self.url = self.root.as_uri()
        self.setting = setting

    def __repr__(self) -> str:
        return f"LocalLakeStore({self.url!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def _unavailable(self, action: str, path: Path, err: OSError) -> LakeUnavailableError:
        reason = err.strerror or type(err).__name__
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            todo = "make the folder writable by this user"
        elif err.errno == errno.ENOSPC:
            todo = "free disk space"
        else:
            todo = "check the folder"
        return LakeUnavailableError(f"cannot {action} {path} (lake root {self.url}): {reason}; {todo} or {self._fix_hint()}")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise FileNotFoundError(f"no object {key!r} in the lake at {self.url}") from None
        except OSError as err:
            raise self._unavailable("read", path, err) from None

    @contextlib.contextmanager
    def _temp_file(self, path: Path) -> Iterator[Path]:
        """A temp file next to `path` (same file system, so publishing is a rename); removed if unused."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{self._TMP_PREFIX}{path.name}.")
            os.close(fd)
        except OSError as err:
            raise self._unavailable("write to", path.parent, err) from None
        tmp_path = Path(tmp)
        try:
            yield tmp_path
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()

    def _publish(self, tmp: Path, path: Path, key: str, exclusive: bool) -> None:
        try:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            if exclusive:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise AlreadyExistsError(f"{self.uri(key)} already exists: exclusive write refused") from None
            else:
                os.replace(tmp, path)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as err:
            raise self._unavailable("write", path, err) from None

    def write_bytes(self, key: str, data: bytes, *, exclusive: bool) -> None:
        path = self._path(key)
        with self._temp_file(path) as tmp:
            try:
                tmp.write_bytes(data)
            except OSError as err:
                raise self._unavailable("write", path, err) from None
            self._publish(tmp, path, key, exclusive)

    def list_keys(self, prefix: str) -> Iterator[str]:
        # The prefix is a string prefix (as on S3), so walk the deepest folder it fully names.
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root.joinpath(*folder.split("/")) if folder else self.root
        keys: list[str] = []
        try:
            for dirpath, _dirnames, filenames in os.walk(start, onerror=_raise):
                rel = Path(dirpath).relative_to(self.root).as_posix()
                for name in filenames:
                    if name.startswith(self._TMP_PREFIX):
                        continue
                    key = name if rel == "." else f"{rel}/{name}"
                    if key.startswith(prefix):
                        keys.append(key)
        except FileNotFoundError:
            return iter(())
        except OSError as err:
            raise self._unavailable("list", start, err) from None
        return iter(sorted(keys))

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as err:
            raise self._unavailable("delete", path, err) from None

def _raise(err: OSError) -> None:
    raise err


# --------------------------------------------------------------------------------------------------
# S3


_BOTO_LOADER = None


def _boto3_session():
    """A new boto3 session (credentials resolved afresh) sharing one loader of the AWS service models,
    which otherwise costs a few hundred milliseconds of JSON parsing per store."""
    import boto3
    import botocore.session

    global _BOTO_LOADER
    core = botocore.session.get_session()
    if _BOTO_LOADER is None:
        _BOTO_LOADER = core.get_component("data_loader")
    else:
        core.register_component("data_loader", _BOTO_LOADER)
    return boto3.session.Session(botocore_session=core)


class S3LakeStore(LakeStore):
    """A lake zone under ``s3://bucket/prefix`` (AWS or any S3-compatible endpoint such as moto).

    Exclusive writes use ``If-None-Match: *`` (PutObject and CompleteMultipartUpload; moto 5.2.5
    honours both). Objects larger than `multipart_threshold` are uploaded in parts, read one at a time.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        setting: str | None = None,
        page_size: int = 1000,
        multipart_threshold: int = 64 * 1024 * 1024,
        part_size: int = 16 * 1024 * 1024,
        connect_timeout: float = S3Timeouts.connect_seconds,
        read_timeout: float = S3Timeouts.read_seconds,
        max_attempts: int = S3Timeouts.max_attempts,
    ):
        from botocore.config import Config

        if part_size < 5 * 1024 * 1024:
            raise ValueError("S3 multipart parts must be at least 5 MiB")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.endpoint_url = endpoint_url
        self.setting = setting
        self.page_size = page_size
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self._bucket_checked = False
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": max_attempts, "mode": "standard"},  # the first try included
        )
        self.client = _boto3_session().client("s3", endpoint_url=endpoint_url, config=config)

    def __repr__(self) -> str:
        return f"S3LakeStore({self.url!r})"

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    # -- error mapping

    def _where(self) -> str:
        where = f"lake root {self.url}"
        if self.setting:
            where = f"{self.setting}={self.url}"
        if self.endpoint_url:
            where += f", endpoint {redact_url(self.endpoint_url)}"
        return where

    def _error(self, action: str, key: str | None, err: Exception) -> Exception:
        """Translate a botocore error into FileNotFoundError / AlreadyExistsError / LakeUnavailableError / LakeError."""
        from botocore import exceptions as bx

        target = self.uri(key) if key else self.url
        if isinstance(err, bx.ClientError):
            code = str(err.response.get("Error", {}).get("Code", ""))
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                return LakeUnavailableError(
                    f"S3 bucket {self.bucket!r} does not exist ({self._where()}): create it or {self._fix_hint()}"
                )
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                return FileNotFoundError(f"no object {target}")
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict") or status in (409, 412):
                return AlreadyExistsError(f"{target} already exists: exclusive write refused")
            if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled", "InvalidAccessKeyId",
                        "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken") or status == 403:
                return LakeUnavailableError(
                    f"permission denied to {action} {target} ({code}; {self._where()}): grant this identity "
                    f"s3:GetObject, s3:PutObject, s3:DeleteObject and s3:ListBucket on the bucket, or {self._fix_hint()}"
                )
            return LakeError(f"S3 refused to {action} {target} ({code or status}; {self._where()})")
        if isinstance(err, bx.NoCredentialsError):
            return LakeUnavailableError(
                f"no AWS credentials to {action} {target} ({self._where()}): configure AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, a profile or an instance role"
            )
        if isinstance(err, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError,
                            bx.ConnectionClosedError)):
            return LakeUnavailableError(
                f"cannot reach S3 to {action} {target} ({self._where()}): {type(err).__name__}; "
                f"check the network and the endpoint (AWS_ENDPOINT_URL), or {self._fix_hint()}"
            )
        if isinstance(err, bx.BotoCoreError):
            return LakeUnavailableError(f"S3 failed to {action} {target} ({self._where()}): {type(err).__name__}")
        return err

    @contextlib.contextmanager
    def _errors(self, action: str, key: str | None) -> Iterator[None]:
        from botocore import exceptions as bx

        try:
            yield
        except (bx.ClientError, bx.BotoCoreError) as err:
            raise self._error(action, key, err) from None

    def _check_bucket(self) -> None:
        """HEAD answers 404 without saying whether the key or the bucket is missing: ask once."""
        if self._bucket_checked:
            return
        try:
            with self._errors("open the bucket of", None):
                self.client.head_bucket(Bucket=self.bucket)
        except FileNotFoundError:
            raise LakeUnavailableError(
                f"S3 bucket {self.bucket!r} does not exist ({self._where()}): create it or {self._fix_hint()}"
            ) from None
        self._bucket_checked = True

    # -- operations

    def _head(self, key: str) -> dict | None:
        try:
            with self._errors("look up", key):
                return self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except FileNotFoundError:
            self._check_bucket()
            return None

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def read_bytes(self, key: str) -> bytes:
        with self._errors("read", key):
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def _put(self, key: str, body, *, exclusive: bool) -> None:
        # Exclusive means exclusive: if botocore retried a PUT whose first attempt succeeded, the retry
        # is refused too. Callers treat that as a failure, which is safe (the exclusive-commit probe and
        # the conversion marker are the only exclusive writes left; Delta commits go through delta-rs).
        kwargs = {"IfNoneMatch": "*"} if exclusive else {}
        with self._errors("write", key):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=body, **kwargs)

    def write_bytes(self, key: str, data: bytes, *, exclusive: bool) -> None:
        if len(data) > self.multipart_threshold:
            with tempfile.NamedTemporaryFile(prefix="lake-upload-") as tmp:
                tmp.write(data)
                tmp.flush()
                self._upload_file(tmp.name, key, exclusive=exclusive)
            return
        self._put(key, data, exclusive=exclusive)

    def _upload_file(self, path: str, key: str, *, exclusive: bool) -> None:
        if os.path.getsize(path) <= self.multipart_threshold:
            with open(path, "rb") as f:
                self._put(key, f, exclusive=exclusive)
            return
        self._multipart_upload(path, key, exclusive=exclusive)

    def _multipart_upload(self, path: str, key: str, *, exclusive: bool) -> None:
        # s3transfer's upload_file does not pass IfNoneMatch, so the multipart upload is done here;
        # parts are read one at a time, so memory stays at one part.
        full_key = self._key(key)
        with self._errors("start a multipart upload of", key):
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=full_key)["UploadId"]
        parts = []
        try:
            with open(path, "rb") as f:
                number = 1
                while chunk := f.read(self.part_size):
                    with self._errors("upload a part of", key):
                        etag = self.client.upload_part(
                            Bucket=self.bucket, Key=full_key, UploadId=upload_id, PartNumber=number, Body=chunk
                        )["ETag"]
                    parts.append({"ETag": etag, "PartNumber": number})
                    number += 1
            kwargs = {"IfNoneMatch": "*"} if exclusive else {}
            with self._errors("write", key):
                self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=full_key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **kwargs
                )
        except BaseException:
            self._abort(full_key, upload_id)
            raise

    def _abort(self, full_key: str, upload_id: str) -> None:
        with contextlib.suppress(Exception):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=full_key, UploadId=upload_id)

    def list_keys(self, prefix: str) -> Iterator[str]:
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=full_prefix, PaginationConfig={"PageSize": self.page_size}
        )
        with self._errors("list", prefix or None):
            for page in pages:
                for item in page.get("Contents", ()):
                    yield item["Key"][strip:]

    def delete(self, key: str) -> None:
        with self._errors("delete", key):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

__all__ = [
    "AlreadyExistsError",
    "LakeError",
    "LakeStore",
    "LakeUnavailableError",
    "LocalLakeStore",
    "S3LakeStore",
    "check_key",
]
