"""A per-table commit log in a lake zone: the single source of truth of what a lake table contains.

Layout under a zone root::

    <table>/<YYYY>/<MM>/<DD>/<table>_<YYYYMMDDTHHMMSSffffff>.parquet   data files (batch time, UTC)
    _manifests/<table>/<seq:010d>.json                                    one entry per commit, write-once
    _manifests/<table>/_latest                                            hint: the newest seq (overwritable)

A commit is an exclusive create of entry ``seq = previous + 1``: of two writers that start from the
same entry, exactly one wins and the other gets ``ConcurrentCommitError``. Data files are written
before their entry, so a file that no entry references is not part of the table (the leftover of a
run that failed or lost a race) and readers never see it. The ``_latest`` hint is written after the
entry; readers probe forward from it, so a stale or missing hint is harmless.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa

from totesys_platform.lake.store import AlreadyExistsError, LakeError, LakeStore

MANIFESTS = "_manifests"
LATEST_HINT = "_latest"
_TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_ENTRY_NAME = re.compile(r"^(\d{10})\.json$")


class ConcurrentCommitError(LakeError):
    """Another writer committed this seq first; this writer's result is not part of the table."""


@dataclass(frozen=True)
class ManifestEntry:
    table: str
    seq: int
    file: str | None  # data file key relative to the zone root, or None for a state-only commit
    rows: int
    committed_at: str  # UTC, ISO 8601
    state: dict = field(default_factory=dict)  # JSON-able; owned by the writer (e.g. extraction watermarks)
    commit_id: str = ""  # unique per commit: tells a writer its own entry from a rival's

    def to_json(self) -> bytes:
        body = {
            "table": self.table,
            "seq": self.seq,
            "file": self.file,
            "rows": self.rows,
            "committed_at": self.committed_at,
            "commit_id": self.commit_id,
            "state": self.state,
        }
        return json.dumps(body, indent=1, sort_keys=True, allow_nan=False).encode()


def _check_table_name(table: str) -> str:
    if not isinstance(table, str) or not _TABLE_NAME.match(table):
        raise ValueError(f"invalid lake table name {table!r}: use lower-case letters, digits and '_'")
    return table


def data_file_key(table: str, batch_ts: datetime) -> str:
    """The key of a table's data file for one batch: ``<table>/YYYY/MM/DD/<table>_YYYYMMDDTHHMMSSffffff.parquet``.

    `batch_ts` is converted to UTC if it is aware and taken as UTC if it is naive.
    """
    _check_table_name(table)
    if batch_ts.tzinfo is not None:
        batch_ts = batch_ts.astimezone(timezone.utc).replace(tzinfo=None)
    return f"{table}/{batch_ts:%Y/%m/%d}/{table}_{batch_ts:%Y%m%dT%H%M%S%f}.parquet"


_BATCH_TIME = re.compile(r"_(\d{8}T\d{12})\.parquet$")


def batch_time_of(key: str) -> datetime | None:
    """The batch time (naive UTC) in a data file key made by `data_file_key`, or None if it has none."""
    match = _BATCH_TIME.search(key)
    if not match:
        return None
    try:
        return datetime.strptime(match.group(1), "%Y%m%dT%H%M%S%f")
    except ValueError:
        return None


class TableLog:
    """The commit log of one table in one lake zone."""

    def __init__(self, store: LakeStore, table: str):
        self.store = store
        self.table = _check_table_name(table)
        self._dir = f"{MANIFESTS}/{table}"

    def __repr__(self) -> str:
        return f"TableLog({self.store.url!r}, {self.table!r})"

    def entry_key(self, seq: int) -> str:
        return f"{self._dir}/{seq:010d}.json"

    # -- reading

    def _parse(self, seq: int, raw: bytes) -> ManifestEntry:
        where = self.store.uri(self.entry_key(seq))
        todo = "restore it from a backup or a copy of the lake; the manifest is the table's source of truth"
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise LakeError(f"manifest {where} is not valid JSON ({err.msg} at {err.pos}): {todo}") from None
        problems = []
        if not isinstance(body, dict):
            raise LakeError(f"manifest {where} is not a JSON object: {todo}")
        if body.get("table") != self.table:
            problems.append(f"table is {body.get('table')!r}, expected {self.table!r}")
        if body.get("seq") != seq:
            problems.append(f"seq is {body.get('seq')!r}, expected {seq}")
        if body.get("file") is not None and not isinstance(body.get("file"), str):
            problems.append("file is not a string or null")
        if not isinstance(body.get("rows"), int) or body["rows"] < 0:
            problems.append("rows is not a non-negative integer")
        if not isinstance(body.get("committed_at"), str):
            problems.append("committed_at is missing")
        if not isinstance(body.get("state"), dict):
            problems.append("state is not an object")
        if problems:
            raise LakeError(f"manifest {where} is invalid ({'; '.join(problems)}): {todo}")
        return ManifestEntry(
            table=self.table, seq=seq, file=body["file"], rows=body["rows"], committed_at=body["committed_at"],
            state=body["state"], commit_id=str(body.get("commit_id", "")),
        )

    def _read_entry(self, seq: int) -> ManifestEntry | None:
        try:
            raw = self.store.read_bytes(self.entry_key(seq))
        except FileNotFoundError:
            return None
        return self._parse(seq, raw)

    def _hint(self) -> int | None:
        try:
            text = self.store.read_bytes(f"{self._dir}/{LATEST_HINT}").decode("ascii", "replace").strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def _listed_seqs(self) -> list[int]:
        seqs = []
        for key in self.store.list_keys(f"{self._dir}/"):
            match = _ENTRY_NAME.match(key.rsplit("/", 1)[-1])
            if match and key.count("/") == self._dir.count("/") + 1:
                seqs.append(int(match.group(1)))
        return sorted(seqs)

    def latest_seq(self) -> int:
        """The newest committed seq (0 if the table has no entry)."""
        hint = self._hint()
        if hint is None or (hint > 0 and not self.store.exists(self.entry_key(hint))):
            # No hint (or one from a lake restored from an older copy): one listing finds the truth.
            seqs = self._listed_seqs()
            seq = seqs[-1] if seqs else 0
        else:
            seq = hint
        while self.store.exists(self.entry_key(seq + 1)):
            seq += 1
        return seq

    def latest(self) -> ManifestEntry | None:
        seq = self.latest_seq()
        if seq == 0:
            return None
        entry = self._read_entry(seq)
        if entry is None:  # cannot happen with write-once entries; say so rather than return a wrong answer
            raise LakeError(
                f"manifest {self.store.uri(self.entry_key(seq))} disappeared while being read: the zone was deleted or "
                "restored during the run; rerun once the lake is stable")
        return entry

    def entries(self, after_seq: int = 0) -> list[ManifestEntry]:
        """Every entry with seq > `after_seq`, in seq order (commits are contiguous: seq n exists only after n-1)."""
        out = []
        seq = after_seq + 1
        while (entry := self._read_entry(seq)) is not None:
            out.append(entry)
            seq += 1
        return out

    def read(self, entry: ManifestEntry, columns: list[str] | None = None) -> pa.Table:
        """The entry's data file."""
        if entry.file is None:
            raise ValueError(f"{self.table} manifest seq {entry.seq} has no data file (a state-only commit)")
        try:
            return self.store.read_parquet(entry.file, columns=columns)
        except FileNotFoundError:
            raise LakeError(
                f"{self.table} manifest seq {entry.seq} references {self.store.uri(entry.file)}, which is missing: "
                "published data files must never be deleted; restore it from a backup"
            ) from None

    def referenced_files(self) -> set[str]:
        return {e.file for e in self.entries() if e.file}

    def orphan_files(self, written_before: datetime | None = None) -> list[str]:
        """Data files under the table's folder that no entry references (failed or losing runs' leftovers).

        With `written_before` (naive UTC), only those whose batch time, read from the file name, is earlier:
        a younger one may belong to a run still writing. A name that does not parse is never listed then."""
        referenced = self.referenced_files()
        orphans = [k for k in self.store.list_keys(f"{self.table}/") if k.endswith(".parquet") and k not in referenced]
        if written_before is None:
            return orphans
        return [k for k in orphans if (ts := batch_time_of(k)) is not None and ts < written_before]

    # -- writing

    def commit(self, *, file: str | None, rows: int, state: dict, expected_prev_seq: int) -> ManifestEntry:
        """Append entry ``expected_prev_seq + 1`` (exclusive create); ConcurrentCommitError if another writer got there first.

        `file` must already be durably written: an entry never points at a file that does not exist.
        """
        if expected_prev_seq < 0:
            raise ValueError(f"expected_prev_seq must be >= 0, got {expected_prev_seq}")
        if rows < 0:
            raise ValueError(f"rows must be >= 0, got {rows}")
        if expected_prev_seq > 0 and not self.store.exists(self.entry_key(expected_prev_seq)):
            raise LakeError(
                f"cannot commit {self.table} seq {expected_prev_seq + 1}: the entry it follows, seq {expected_prev_seq}, "
                f"is no longer in {self.store.url} (the zone was deleted or restored while this run was writing); "
                "nothing was committed: rerun, and check that nothing else cleans or restores the lake during runs"
            )
        if file is not None and not self.store.exists(file):
            raise LakeError(f"cannot commit {self.table}: its data file {self.store.uri(file)} was not written")
        entry = ManifestEntry(
            table=self.table,
            seq=expected_prev_seq + 1,
            file=file,
            rows=rows,
            committed_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            state=state,
            commit_id=uuid.uuid4().hex,
        )
        try:
            payload = entry.to_json()
        except (TypeError, ValueError) as err:
            raise ValueError(f"{self.table}: manifest state is not JSON-able: {err}") from None
        try:
            self.store.write_bytes(self.entry_key(entry.seq), payload, exclusive=True)
        except AlreadyExistsError:
            theirs = self._read_entry(entry.seq)
            if theirs is None or theirs.commit_id != entry.commit_id:
                raise ConcurrentCommitError(
                    f"{self.table}: another writer committed seq {entry.seq} in {self.store.url} first "
                    f"(this writer started from seq {expected_prev_seq}); this commit was not made"
                ) from None
            # Our own write whose response was lost and whose retry was refused: it is committed.
        try:
            self.store.write_bytes(f"{self._dir}/{LATEST_HINT}", str(entry.seq).encode(), exclusive=False)
        except LakeError:
            pass  # the entry is committed; the hint only saves probing and readers do not trust it
        return entry


__all__ = ["ConcurrentCommitError", "ManifestEntry", "TableLog", "data_file_key"]
