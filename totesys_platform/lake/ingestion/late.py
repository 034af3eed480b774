"""Versions committed late: by transactions that were still open when the table's last batch was read.

Plain Python, no Dagster. The look-back window catches a version whose transaction commits within the window
after setting its `last_updated`; a transaction open longer (a batch job, a stuck session) would commit
versions behind it. PostgreSQL knows which transactions a snapshot could not see: all are at or after its
`xmin` (the oldest one in progress when it was taken). Each row carries the id of the transaction that wrote
it (`xmin`, readable with plain SELECT rights). So each run also reads the rows written by a transaction not
older than the `xmin` of the snapshot of the table's last batch, whatever their `last_updated`: every version
committed since, however long its transaction stayed open. (Those within the look-back window are read anyway;
the rest are the *late* rows.)

A late row is archived unless the archive already holds its version with the same content (a row rewritten
without change). Other content for an archived version (changed without moving `last_updated`), or a version
behind the id's latest archived one (moved backwards), is archived as a new capture and reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from totesys_platform.lake.delta import LakeTable, Snapshot
from totesys_platform.lake.ingestion.deletes import DELETED_AT_COLUMN
from totesys_platform.lake.processed.arrow_ops import last_per_key
from totesys_platform.lake.ingestion.versions import (
    BATCH_COLUMN, CaptureLog, OutOfOrderCaptures,
)
from totesys_platform.source import contract

XID_MODULUS = 2**32  # a row's xmin is a 32-bit xid; a snapshot lists 64-bit ones (epoch and xid)
# Late rows are looked up in the archive this many at a time, as they are read: a mass change behind the window
# (every row of a table updated without moving last_updated) costs the memory of one chunk, not of the table.
LATE_CHUNK_ROWS = 100_000


@dataclass(frozen=True)
class SourceSnapshot:
    """The oldest transaction a `pg_current_snapshot()` ("xmin:xmax:xip,...") could not see: its xmin."""

    xmin: int

    @classmethod
    def parse(cls, text: str | None) -> "SourceSnapshot | None":
        """None for a state recorded without a snapshot (or an unreadable one): late rows are not looked for."""
        try:
            xmin, _, _ = str(text).split(":")
            return cls(int(xmin))
        except (TypeError, ValueError):
            return None

    @staticmethod
    def in_progress(text: str | None) -> tuple[int, int] | None:
        """Of a snapshot text: how many transactions were in progress, and how many transaction ids the oldest
        of them is behind the next one (xmax - xmin: 0 when none was open). None if unreadable."""
        try:
            xmin, xmax, xip = str(text).split(":")
            return len([x for x in xip.split(",") if x]), int(xmax) - int(xmin)
        except (TypeError, ValueError):
            return None

    def unseen_rows(self) -> tuple[sql.Composable, tuple]:
        """A WHERE condition true for every row written by a transaction this snapshot could not see (and a few
        it could: those in progress at the snapshot are all >= its xmin, their subtransactions too, which the
        snapshot's list leaves out), and its parameters. age() counts xids back from the reading transaction,
        so xid wraparound cannot mislead the comparison."""
        return sql.SQL("age(xmin) <= age(%s::text::xid)"), (str(self.xmin % XID_MODULUS),)


@dataclass
class LateRows:
    """The late rows of one run, split by what the archive holds."""

    new: pa.Table  # rows archived by this run: new versions, and new captures of those out of order
    rewritten: int = 0  # versions the archive holds with the same content
    captures: CaptureLog = field(default_factory=CaptureLog)  # changed in place, or behind a later version

    def out_of_order(self) -> OutOfOrderCaptures:
        return self.captures.captures()


def classify_late(late: pa.Table, archive: LakeTable, snapshot: Snapshot, table: contract.SourceTable) -> LateRows:
    """Split `late` (rows read below the look-back window) by what the archive at `snapshot` holds for their ids.

    Arrow joins and comparisons, no Python per row: a mass change in place makes every row of a table late."""
    if late.num_rows == 0 or not snapshot.exists:
        return LateRows(late)
    pk, columns = table.primary_key, list(contract.SOURCE_TABLES[table.name].column_names)
    ids = pc.unique(late[pk])
    buried = DELETED_AT_COLUMN in snapshot.arrow_schema().names
    # File by file, column by column: a filtered Delta read would decode every column of each compacted file.
    archived = archive.read_matching(snapshot, [*columns, BATCH_COLUMN, *([DELETED_AT_COLUMN] if buried else [])],
                                     pk, lambda keys: pc.is_in(keys, value_set=ids))
    # In capture order, so that of a version captured more than once the latest capture is the one compared.
    archived = archived.sort_by(BATCH_COLUMN)
    if buried:
        # An id whose latest capture is a tombstone was deleted: whatever is read of it now was inserted again.
        latest = last_per_key(archived, pk)
        dead = latest.filter(pc.is_valid(latest[DELETED_AT_COLUMN]))[pk]
        archived = archived.filter(pc.invert(pc.is_in(archived[pk], value_set=dead))).drop_columns([DELETED_AT_COLUMN])
    if archived.num_rows == 0:
        return LateRows(late)
    # (Delta keeps timestamps in microseconds: compare as milliseconds, as the state does.)
    late_keys = pa.table({pk: late[pk], _MS: _milliseconds(late["last_updated"]),
                          _LATE_ROW: np.arange(late.num_rows, dtype=np.int64)})
    archived_keys = pa.table({pk: archived[pk], _MS: _milliseconds(archived["last_updated"]),
                              _ARCHIVED_ROW: np.arange(archived.num_rows, dtype=np.int64)})
    # Each archived version's latest capture, and each id's latest archived version.
    versions = archived_keys.group_by([pk, _MS], use_threads=False).aggregate([(_ARCHIVED_ROW, "max")]).rename_columns(
        [pk, _MS, _ARCHIVED_ROW])
    newest = archived_keys.group_by(pk, use_threads=False).aggregate([(_MS, "max")]).rename_columns([pk, _NEWEST_MS])
    matched = (late_keys.join(versions, [pk, _MS], join_type="left outer", use_threads=False)
               .join(newest, pk, join_type="left outer", use_threads=False)
               .sort_by(_LATE_ROW))
    known = pc.is_valid(matched[_ARCHIVED_ROW])  # one row per late row, in their order
    at = matched.filter(known)
    same_content = _same_rows(late.take(at[_LATE_ROW]), archived.take(at[_ARCHIVED_ROW]), columns)
    same = np.zeros(late.num_rows, dtype=bool)
    same[known.to_numpy(zero_copy_only=False)] = same_content.to_numpy(zero_copy_only=False)
    changed = at.filter(pc.invert(same_content))
    behind = matched.filter(pc.fill_null(pc.and_(pc.invert(known), pc.less(matched[_MS], matched[_NEWEST_MS])), False))
    result = LateRows(late.filter(pa.array(~same)), rewritten=int(same.sum()))
    result.captures.in_place_rows(changed[pk], changed[_MS])
    result.captures.behind_rows(behind[pk], behind[_MS], behind[_NEWEST_MS])
    return result


_MS, _LATE_ROW, _ARCHIVED_ROW, _NEWEST_MS = "__ms", "__late_row", "__archived_row", "__newest_ms"


def _milliseconds(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """A naive timestamp column as milliseconds since the epoch: `to_ms` of each value (source timestamps are whole
    milliseconds; truncated toward zero, the two would differ only below a millisecond before 1970)."""
    return pc.cast(pc.cast(values, pa.timestamp("ms"), safe=False), pa.int64())


def _same_rows(left: pa.Table, right: pa.Table, columns: list[str]) -> pa.ChunkedArray:
    """Row by row, whether `left` and `right` hold the same values in `columns` (NULL equals NULL)."""
    same = pa.chunked_array([np.ones(left.num_rows, dtype=bool)])
    for name in columns:
        a, b = left[name], right[name]
        if not a.type.equals(b.type):
            b = pc.cast(b, a.type)
        equal = pc.or_(pc.fill_null(pc.equal(a, b), False), pc.and_(pc.is_null(a), pc.is_null(b)))
        same = pc.and_(same, equal)
    return same


class LateClassifier:
    """Late rows as they are read: every `chunk_rows` of them are classified (`classify_late`) and the ones to
    archive handed to `keep`; counts and out-of-order captures add up over the chunks. Each chunk is compared
    with the archive as of the last batch, as one big table would be, so the chunking changes nothing else."""

    def __init__(self, archive: LakeTable, snapshot: Snapshot, table: contract.SourceTable,
                 keep: Callable[[pa.Table], None], chunk_rows: int = LATE_CHUNK_ROWS):
        self.archive, self.snapshot, self.table, self.keep, self.chunk_rows = archive, snapshot, table, keep, chunk_rows
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0
        self.archived = 0  # late rows archived (new versions, and new captures out of order)
        self.rewritten = 0
        self.captures = CaptureLog()

    def add(self, batch: pa.RecordBatch) -> None:
        while batch.num_rows:
            room = self.chunk_rows - self.pending_rows
            self.pending.append(batch.slice(0, room))
            self.pending_rows += self.pending[-1].num_rows
            batch = batch.slice(room)
            if self.pending_rows >= self.chunk_rows:
                self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        late = classify_late(pa.Table.from_batches(self.pending, self.table.arrow_schema), self.archive,
                             self.snapshot, self.table)
        self.pending, self.pending_rows = [], 0
        self.archived += late.new.num_rows
        self.rewritten += late.rewritten
        self.captures.add(late.out_of_order())
        if late.new.num_rows:
            self.keep(late.new)

    def out_of_order(self) -> OutOfOrderCaptures:
        return self.captures.captures()

    def report(self, say: Callable[[str], None]) -> None:
        if self.archived:
            say(f"{self.table.name}: {self.archived} version(s) committed late (behind the look-back window, by "
                "transactions open at the last batch's snapshot) are archived now")


__all__ = ["LATE_CHUNK_ROWS", "LateClassifier", "LateRows", "SourceSnapshot", "classify_late"]
