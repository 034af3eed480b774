"""Which versions an extraction run archives: the watermark, the look-back window, the remembered versions.

Plain Python, no Dagster (docs/extraction.md explains the algorithm). A table's state is recorded in
each of its ingestion commits (the Delta commit's metadata); this module reads it, filters a run's rows
against it and computes the next one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from totesys_platform.lake.store import LakeError
from totesys_platform.source import contract

# Every archived row carries the number of the extraction batch that archived it: the order of captures.
BATCH_COLUMN = "_batch"
STATE_FORMAT = 2  # 2 adds a content fingerprint to each remembered version (format 1 states still load)
# Anomalies named in an error message; the rest are counted.
ANOMALY_SAMPLE = 10
# A run remembers at most this many versions of the look-back window (with their fingerprints, in memory and in
# the commit's state). A mass update (every row of a big table in one transaction) puts more in the window; then
# the run remembers none and the next window starts after its watermark (see Deduplicator.next_state).
MAX_REMEMBERED_VERSIONS = 100_000
_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)


# Out-of-order captures named per run and kind; the rest are counted. A mass edit in place of a million rows
# would otherwise hold a million tuples for a warning that names ten of them.
CAPTURE_SAMPLE = 1_000


@dataclass(frozen=True)
class OutOfOrderCaptures:
    """Rows archived although `last_updated` did not move forward with their change (contract, section 4): the
    same version with other content (changed in place), or a version behind the id's latest archived one
    (moved backwards). Each is a new capture; downstream, the latest capture of a version wins.

    `changed_in_place` and `moved_back` hold the first CAPTURE_SAMPLE of each kind; the counts hold them all."""

    changed_in_place: tuple[tuple[int, int], ...] = ()  # (id, last_updated ms)
    moved_back: tuple[tuple[int, int, int], ...] = ()  # (id, last_updated ms, the later version archived, ms)
    changed_in_place_total: int | None = None  # None: as many as the sample holds
    moved_back_total: int | None = None

    @property
    def changed_in_place_count(self) -> int:
        return len(self.changed_in_place) if self.changed_in_place_total is None else self.changed_in_place_total

    @property
    def moved_back_count(self) -> int:
        return len(self.moved_back) if self.moved_back_total is None else self.moved_back_total

    @property
    def count(self) -> int:
        return self.changed_in_place_count + self.moved_back_count

    def __bool__(self) -> bool:
        return self.count > 0

    def __add__(self, other: "OutOfOrderCaptures") -> "OutOfOrderCaptures":
        return OutOfOrderCaptures(
            (self.changed_in_place + other.changed_in_place)[:CAPTURE_SAMPLE],
            (self.moved_back + other.moved_back)[:CAPTURE_SAMPLE],
            self.changed_in_place_count + other.changed_in_place_count, self.moved_back_count + other.moved_back_count)

    def ids(self) -> list[int]:
        return sorted({pk for pk, *_ in (*self.changed_in_place, *self.moved_back)})

    def describe(self, table: contract.SourceTable) -> str:
        """What was captured, naming up to ANOMALY_SAMPLE rows, and the fix for the writer's owners."""
        pk = table.primary_key
        sample = [f"{pk} {key} at {iso(from_ms(ms))} (changed in place)" for key, ms in self.changed_in_place] + [
            f"{pk} {key} at {iso(from_ms(ms))} (behind its version at {iso(from_ms(later))})"
            for key, ms, later in self.moved_back]
        more = f" and {self.count - ANOMALY_SAMPLE} more" if self.count > ANOMALY_SAMPLE else ""
        return (f"{table.name}: {self.count} row(s) changed without last_updated moving forward were captured: "
                + ", ".join(sample[:ANOMALY_SAMPLE]) + more + f". Ask the totesys owners to set last_updated to the "
                f"time of every change (UPDATE {table.name} SET ..., last_updated = now()) and fix the writer.")


class CaptureLog:
    """Out-of-order captures as they are found: each counted, the first CAPTURE_SAMPLE of each kind kept."""

    def __init__(self) -> None:
        self.changed_in_place: list[tuple[int, int]] = []
        self.moved_back: list[tuple[int, int, int]] = []
        self.changed_in_place_count = 0
        self.moved_back_count = 0

    def in_place(self, key: tuple[int, int]) -> None:
        self.changed_in_place_count += 1
        if len(self.changed_in_place) < CAPTURE_SAMPLE:
            self.changed_in_place.append(key)

    def behind(self, entry: tuple[int, int, int]) -> None:
        self.moved_back_count += 1
        if len(self.moved_back) < CAPTURE_SAMPLE:
            self.moved_back.append(entry)

    def in_place_rows(self, ids: pa.ChunkedArray, ms: pa.ChunkedArray) -> None:
        """`in_place` for each (id, last_updated ms) of two columns."""
        room = CAPTURE_SAMPLE - len(self.changed_in_place)
        self.changed_in_place += zip(ids[:room].to_pylist(), ms[:room].to_pylist())
        self.changed_in_place_count += len(ids)

    def behind_rows(self, ids: pa.ChunkedArray, ms: pa.ChunkedArray, latest_ms: pa.ChunkedArray) -> None:
        """`behind` for each (id, last_updated ms, the id's latest archived ms) of three columns."""
        room = CAPTURE_SAMPLE - len(self.moved_back)
        self.moved_back += zip(ids[:room].to_pylist(), ms[:room].to_pylist(), latest_ms[:room].to_pylist())
        self.moved_back_count += len(ids)

    def add(self, captures: OutOfOrderCaptures) -> None:
        self.changed_in_place += captures.changed_in_place[:CAPTURE_SAMPLE - len(self.changed_in_place)]
        self.moved_back += captures.moved_back[:CAPTURE_SAMPLE - len(self.moved_back)]
        self.changed_in_place_count += captures.changed_in_place_count
        self.moved_back_count += captures.moved_back_count

    def captures(self) -> OutOfOrderCaptures:
        return OutOfOrderCaptures(tuple(self.changed_in_place), tuple(self.moved_back),
                                  self.changed_in_place_count, self.moved_back_count)


def to_ms(ts: datetime) -> int:
    return (ts - _EPOCH) // _MS


def from_ms(ms: int) -> datetime:
    return _EPOCH + ms * _MS


def iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds")


@dataclass
class TableState:
    watermark: int | None = None  # epoch ms of the largest last_updated ever read
    window_start: int | None = None  # every archived version with last_updated >= this is in `versions`
    versions: set[tuple[int, int]] | None = None  # (pk, last_updated epoch ms)
    # Content fingerprint of remembered versions (format 2; empty for a format 1 state or other columns).
    fingerprints: dict[tuple[int, int], str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, table: str, state: dict, columns: Sequence[str], where: str) -> "TableState":
        """The state recorded in a commit (`where` names it in errors); the empty state if there is none."""
        if not state:
            return cls(versions=set())
        try:
            watermark = datetime.fromisoformat(state["watermark"])
            window_start = datetime.fromisoformat(state["window_start"])
            versions, fingerprints = set(), {}
            same_columns = state.get("fingerprint_columns") == list(columns)
            for pk, ts, *fingerprint in state["versions"]:
                key = (int(pk), to_ms(datetime.fromisoformat(ts)))
                versions.add(key)
                if fingerprint and same_columns:
                    fingerprints[key] = str(fingerprint[0])
        except (KeyError, TypeError, ValueError) as err:
            raise LakeError(
                f"{table}: the extraction state recorded in {where} is unreadable ({type(err).__name__}: {err}); "
                "restore the table's _delta_log from a backup"
            ) from None
        return cls(to_ms(watermark), to_ms(window_start), versions, fingerprints)

    def to_json(self, columns: Sequence[str]) -> dict:
        def version(pk: int, ms: int) -> list:
            fingerprint = self.fingerprints.get((pk, ms))
            return [pk, iso(from_ms(ms))] + ([fingerprint] if fingerprint else [])

        return {
            "format": STATE_FORMAT,
            "watermark": iso(from_ms(self.watermark)),
            "window_start": iso(from_ms(self.window_start)),
            "fingerprint_columns": list(columns),
            "versions": [version(pk, ms) for pk, ms in sorted(self.versions, key=lambda v: (v[1], v[0]))],
        }


def _fingerprints(batch: pa.RecordBatch, rows: Sequence[int]) -> list[str]:
    """A short, stable digest of each row's values (the contract's Python values, so the same content gives
    the same digest in every run); only computed for the few rows in the look-back window."""
    columns = [column.take(pa.array(rows, pa.int64())).to_pylist() for column in batch.columns]
    return [hashlib.blake2b(repr(values).encode(), digest_size=8).hexdigest() for values in zip(*columns)]


class Deduplicator:
    """Drops versions already archived, tracks the new watermark and the versions to remember, and finds
    rows whose last_updated did not move forward with their change (kept: see OutOfOrderCaptures).

    Vectorised: only rows whose id the state remembers are looked at one by one (a handful on a tick,
    none on a first run); the rest is Arrow compute over each batch.
    """

    def __init__(self, table: contract.SourceTable, state: TableState, lookback_ms: int, read_from_ms: int | None,
                 remember_limit: int = MAX_REMEMBERED_VERSIONS):
        self.pk_index = table.column_names.index(table.primary_key)
        self.lu_index = table.column_names.index("last_updated")
        self.seen = state.versions or set()
        self.seen_fingerprints = state.fingerprints
        # The latest remembered version of each id: this run must read that version again, or a later one.
        self.latest_seen: dict[int, int] = {}
        for pk, ms in self.seen:
            if read_from_ms is None or ms >= read_from_ms:
                self.latest_seen[pk] = max(ms, self.latest_seen.get(pk, ms))
        known = sorted({pk for pk, _ in self.seen})
        self.known_ids = pa.array(known, pa.int64()) if known else None
        self.read_again: set[int] = set()
        self.lookback_ms = lookback_ms
        self.max_ms = state.watermark
        # Rows that may end up in the look-back window (last_updated >= the running max - lookback); their
        # versions and fingerprints are taken in next_state, once the final watermark is known.
        self.window: list[pa.RecordBatch] = []
        self.window_rows = 0
        self.remember_limit = remember_limit
        self.overflowed = False  # more versions in the window than remember_limit: none are remembered
        # Same (id, last_updated) with other content, or behind the id's later version: archived, and logged.
        self.captures = CaptureLog()
        self.rows = 0
        self.duplicates = 0
        self._prune_at = 10_000

    def filter(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        last_updated = batch.column(self.lu_index).cast(pa.int64())
        if self.known_ids is not None:
            rows = pc.indices_nonzero(pc.is_in(batch.column(self.pk_index), value_set=self.known_ids))
            if len(rows):
                ids = batch.column(self.pk_index).take(rows).to_pylist()
                keys = list(zip(ids, last_updated.take(rows).to_pylist()))
                self._find_moved_back(keys)
                repeated = [(i, key) for i, key in zip(rows.to_pylist(), keys) if key in self.seen]
                if repeated:
                    # A version read again is dropped, unless its content changed: then it is a new capture.
                    changed = self._compare_fingerprints(batch, repeated)
                    self.duplicates += len(repeated) - len(changed)
                    keep = [True] * batch.num_rows
                    for i, _ in repeated:
                        keep[i] = i in changed
                    mask = pa.array(keep)
                    batch, last_updated = batch.filter(mask), last_updated.filter(mask)
        if batch.num_rows:
            batch_max = pc.max(last_updated).as_py()
            self.max_ms = batch_max if self.max_ms is None else max(self.max_ms, batch_max)
            self._remember(batch, last_updated)
        self.rows += batch.num_rows
        return batch

    def _find_moved_back(self, keys: list[tuple[int, int]]) -> None:
        for pk, ms in keys:
            latest = self.latest_seen.get(pk)
            if latest is not None:
                self.read_again.add(pk)
                # (A version behind the latest that was archived before is no news: captured already.)
                if ms < latest and (pk, ms) not in self.seen:
                    self.captures.behind((pk, ms, latest))

    def _compare_fingerprints(self, batch: pa.RecordBatch, repeated: list[tuple[int, tuple[int, int]]]) -> set[int]:
        """The rows (indexes in `batch`) whose content differs from the version archived before."""
        rows = [(i, key) for i, key in repeated if key in self.seen_fingerprints]
        changed = set()
        for (i, key), fingerprint in zip(rows, _fingerprints(batch, [i for i, _ in rows])):
            if fingerprint != self.seen_fingerprints[key]:
                self.captures.in_place(key)
                changed.add(i)
        return changed

    def _remember(self, batch: pa.RecordBatch, last_updated: pa.Array) -> None:
        if self.overflowed:
            return
        # The final watermark is >= max_ms, so rows below max_ms - lookback will be forgotten anyway.
        floor = self.max_ms - self.lookback_ms
        near = pc.greater_equal(last_updated, floor)
        if pc.all(near).as_py():
            self.window.append(batch)
        elif pc.any(near).as_py():
            self.window.append(batch.filter(near))
        else:
            return
        self.window_rows += self.window[-1].num_rows
        # (Pruned before judging the limit, so rows that fell out of the window do not count against it.)
        if self.window_rows > min(self._prune_at, self.remember_limit):
            self.window = [kept for b in self.window if (kept := b.filter(pc.greater_equal(
                b.column(self.lu_index).cast(pa.int64()), floor))).num_rows]
            self.window_rows = sum(b.num_rows for b in self.window)
            self._prune_at = max(10_000, 2 * self.window_rows)
        if self.window_rows > self.remember_limit:
            self.overflowed, self.window, self.window_rows = True, [], 0

    def out_of_order(self) -> OutOfOrderCaptures:
        return self.captures.captures()

    def vanished(self) -> list[tuple[int, int]]:
        """Remembered ids this run did not read again at all: deleted in the source, or their last_updated
        moved back below the read window (the hourly source check names them; extraction only warns)."""
        return sorted((pk, ms) for pk, ms in self.latest_seen.items() if pk not in self.read_again)

    def next_state(self, read_from_ms: int | None) -> TableState:
        window_start = self.max_ms - self.lookback_ms
        if read_from_ms is not None:
            window_start = max(window_start, read_from_ms)
        versions = {k for k in self.seen if k[1] >= window_start}
        in_window = sum(pc.sum(pc.greater_equal(b.column(self.lu_index).cast(pa.int64()), window_start)).as_py() or 0
                        for b in self.window)
        if self.overflowed or len(versions) + in_window > self.remember_limit:
            # Nothing remembered, so the window must hold no archived version: it starts just after the
            # watermark, and widens again as new data moves the watermark on. A version of this window that
            # changes later is read by its xmin (the rows written since this batch's snapshot) as a late row and
            # looked up in the archive, in bounded chunks (late.py).
            return TableState(self.max_ms, self.max_ms + 1, set(), {})
        fingerprints = {k: v for k, v in self.seen_fingerprints.items() if k in versions}
        for batch in self.window:
            last_updated = batch.column(self.lu_index).cast(pa.int64())
            rows = pc.indices_nonzero(pc.greater_equal(last_updated, window_start))
            keys = list(zip(batch.column(self.pk_index).take(rows).to_pylist(), last_updated.take(rows).to_pylist()))
            versions.update(keys)
            fingerprints.update(zip(keys, _fingerprints(batch, rows.to_pylist())))
        return TableState(self.max_ms, window_start, versions, fingerprints)
