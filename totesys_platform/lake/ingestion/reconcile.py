"""Whole-table reconciliation of the totesys source with the ingestion zone (plain logic, no Dagster).

Extraction reads only the look-back window, so it cannot see a row changed far behind the watermark
without its last_updated moving forward. This comparison reads every source row and the latest archived
version of every id, and sorts each difference into one of these:

- pending: the source row is newer than its archived version and the next extraction will read it;
- changed_in_place: same (id, last_updated), other content: a change without moving last_updated that no
  extraction has captured yet (extraction captures those made since the last batch's snapshot);
- moved_back: the source's last_updated is earlier than the latest archived version of the id (captured as
  its own version, and reported here until the writer's owners fix it);
- missed: a version newer than the archive but below the extraction's window (committed later than the
  look-back allows): no extraction will ever read it;
- deleted: archived alive, no longer in the source, and not archived as a tombstone yet (the next extraction
  that sees the table's delete counter move archives it; reported, not an error).

Ids whose latest capture is a tombstone count as not archived: deleted on both sides.

It runs hourly (the `source_matches_lake` checks), not on the tick. A big table is compared one slice of ids
per hour (`hourly_slice`: the slices take turns, so each row is compared at least once every few hours) so
that an evaluation's time and memory do not grow with the table; a full evaluation compares every row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from totesys_platform.lake.delta import LakeZone, Snapshot
from totesys_platform.lake.ingestion.deletes import DELETED_AT_COLUMN
from totesys_platform.lake.ingestion.snapshots import read_source_table
from totesys_platform.lake.ingestion.versions import BATCH_COLUMN
from totesys_platform.lake.store import LakeError
from totesys_platform.source import contract

SAMPLE = 10
_LAKE = "__lake"


@dataclass
class SourceDrift:
    table: str
    source_rows: int = 0
    archived_ids: int = 0
    reach: datetime | None = None  # the next extraction reads last_updated >= reach (None: reads everything)
    pending: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[list]] = field(default_factory=dict)

    compared: str = "every id"

    ERRORS = ("changed_in_place", "moved_back", "missed")

    @property
    def passed(self) -> bool:
        return not any(self.counts.get(kind) for kind in self.ERRORS)


@dataclass(frozen=True)
class IdSlice:
    """Ids in [low, high) (None: unbounded), slice `index` of `count`."""

    index: int
    count: int
    low: int | None
    high: int | None

    def describe(self) -> str:
        low = "" if self.low is None else f"from {self.low} "
        high = "" if self.high is None else f"below {self.high} "
        return f"ids {low}{high}(slice {self.index + 1} of {self.count}, one per hour)"


def hourly_slice(max_id: int | None, slice_ids: int, hour: int) -> IdSlice | None:
    """The slice of ids to compare in hour `hour` (hours since the epoch) when a table's ids reach `max_id`:
    consecutive hours take consecutive slices of `slice_ids` ids, the first and last unbounded below and above
    (new ids fall in the last). None: the table fits in one slice, compare every id."""
    if max_id is None or slice_ids <= 0 or max_id < slice_ids:
        return None
    count = max_id // slice_ids + 1
    index = hour % count
    return IdSlice(index, count, index * slice_ids if index else None,
                   (index + 1) * slice_ids if index < count - 1 else None)


def archived_max_id(snapshot: Snapshot, pk: str) -> int | None:
    """The highest id archived, from the files' statistics (no data read); None if they do not say."""
    if not snapshot.exists:
        return None
    actions = pa.table(snapshot.delta.get_add_actions(flatten=True))
    column = f"max.{pk}"
    if column not in actions.column_names or actions.num_rows == 0:
        return None
    highest = pc.max(actions[column]).as_py()
    return None if highest is None else int(highest)


def _in_slice(ids: pa.ChunkedArray, id_slice: IdSlice) -> pa.ChunkedArray:
    ids = pc.cast(ids, pa.int64())
    keep = pc.greater_equal(ids, id_slice.low) if id_slice.low is not None else None
    if id_slice.high is not None:
        below = pc.less(ids, id_slice.high)
        keep = below if keep is None else pc.and_(keep, below)
    return keep if keep is not None else pc.is_valid(ids)


def latest_archived(ingestion: LakeZone, table: contract.SourceTable, snapshot: Snapshot | None = None,
                    id_slice: IdSlice | None = None) -> tuple[pa.Table, datetime | None]:
    """The latest archived version of each id alive in the archive (of the ids in `id_slice`), its latest
    capture (quarantined versions included: they were archived; ids whose latest capture is a tombstone left
    out), and the point the next extraction reads from."""
    archive = ingestion.table(table.name)
    snapshot = snapshot if snapshot is not None else archive.snapshot()
    held = snapshot.arrow_schema()
    buried = held is not None and DELETED_AT_COLUMN in held.names
    columns = [*table.column_names, BATCH_COLUMN, *([DELETED_AT_COLUMN] if buried else [])]
    if id_slice is None:
        rows = archive.read(snapshot, columns=columns)
    else:
        rows = archive.read_matching(snapshot, columns, table.primary_key, lambda ids: _in_slice(ids, id_slice))
    captured = pa.schema([*table.arrow_schema, pa.field(BATCH_COLUMN, pa.int64()),
                          pa.field(DELETED_AT_COLUMN, pa.timestamp("us"))])
    if rows is not None and not buried:
        rows = rows.append_column(DELETED_AT_COLUMN, pa.nulls(rows.num_rows, pa.timestamp("us")))
    data = rows.cast(captured) if rows is not None else captured.empty_table()
    reach = None
    if snapshot.state:
        try:
            reach = datetime.fromisoformat(snapshot.state["window_start"])
            watermark = datetime.fromisoformat(snapshot.state["watermark"])
            if reach > watermark:
                # A batch that remembered none of a mass update starts its window after its watermark; a version
                # of that window committed since is read by its xmin, so it counts as pending like one in the
                # look-back window.
                reach = watermark - timedelta(seconds=float(snapshot.state.get("lookback_seconds") or 0))
        except (KeyError, TypeError, ValueError) as err:
            raise LakeError(
                f"{table.name}: the extraction state recorded in {archive.uri} version {snapshot.version} is "
                f"unreadable ({type(err).__name__}: {err}); restore the table's _delta_log from a backup"
            ) from None
    latest = last_per_key(data, table.primary_key, ["last_updated", BATCH_COLUMN])
    latest = latest.filter(pc.is_null(latest[DELETED_AT_COLUMN]))
    return latest.drop_columns([BATCH_COLUMN, DELETED_AT_COLUMN]), reach


def last_per_key(data: pa.Table, key: str, order_by: list[str]) -> pa.Table:
    """The last row of each `key` when ordered by `order_by` (ascending): each id's latest version."""
    if data.num_rows == 0:
        return data
    ordered = data.sort_by([(key, "ascending")] + [(column, "ascending") for column in order_by])
    ids = ordered[key].combine_chunks()
    # The last row of each run of equal ids is that id's latest version.
    is_last = pc.not_equal(ids[:-1], ids[1:]) if len(ids) > 1 else pa.array([], pa.bool_())
    return ordered.filter(pa.concat_arrays([is_last, pa.array([True])]))


def _same(left: pa.ChunkedArray, right: pa.ChunkedArray) -> pa.ChunkedArray:
    both_null = pc.and_(pc.is_null(left), pc.is_null(right))
    return pc.or_(pc.fill_null(pc.equal(left, right), False), both_null)


def compare(table: contract.SourceTable, source: pa.Table, archived: pa.Table, reach: datetime | None) -> SourceDrift:
    """Sort the differences between the source rows and the latest archived versions (see the module doc)."""
    pk, lu = table.primary_key, "last_updated"
    drift = SourceDrift(table.name, source_rows=source.num_rows, archived_ids=archived.num_rows, reach=reach)
    joined = source.join(archived, keys=pk, join_type="full outer", right_suffix=_LAKE, coalesce_keys=True)
    src_lu, lake_lu = joined[lu], joined[lu + _LAKE]
    reach_scalar = pa.scalar(reach, pa.timestamp("ms")) if reach is not None else None

    def reachable(column):
        if reach_scalar is None:
            return pc.is_valid(column)
        return pc.fill_null(pc.greater_equal(column, reach_scalar), False)

    newer = pc.or_(pc.and_(pc.is_valid(src_lu), pc.is_null(lake_lu)), pc.fill_null(pc.greater(src_lu, lake_lu), False))
    kinds = {
        "deleted": pc.and_(pc.is_null(src_lu), pc.is_valid(lake_lu)),
        "moved_back": pc.fill_null(pc.less(src_lu, lake_lu), False),
        "missed": pc.and_(newer, pc.invert(reachable(src_lu))),
    }
    same_version = pc.fill_null(pc.equal(src_lu, lake_lu), False)
    same_content = same_version
    for name in table.column_names:
        if name not in (pk, lu):
            same_content = pc.and_(same_content, _same(joined[name], joined[name + _LAKE]))
    kinds["changed_in_place"] = pc.and_(same_version, pc.invert(same_content))
    drift.pending = pc.sum(pc.and_(newer, reachable(src_lu))).as_py() or 0

    for kind, mask in kinds.items():
        rows = joined.filter(mask).sort_by(pk)
        drift.counts[kind] = rows.num_rows
        sample = rows.slice(0, SAMPLE)
        drift.samples[kind] = [
            [key, source_ts and source_ts.isoformat(timespec="milliseconds"),
             lake_ts and lake_ts.isoformat(timespec="milliseconds")]
            for key, source_ts, lake_ts in zip(
                sample[pk].to_pylist(), sample[lu].to_pylist(), sample[lu + _LAKE].to_pylist())
        ]
    return drift


# Bounds standing for "unbounded" in the source query: within bigint, so the id index serves the range.
_BELOW_ALL, _ABOVE_ALL = -(2 ** 62), 2 ** 62


def source_drift(source_url: str, ingestion: LakeZone, table_name: str, *, connect_timeout: float = 10,
                 slice_ids: int | None = None, hour: int | None = None) -> SourceDrift:
    """Compare every row of one totesys table with the latest archived version of its id; with `slice_ids`,
    only the rows of hour `hour`'s slice of ids (`hourly_slice`).

    The lake is read first, then the source: anything the source gained in between is newer, so it counts
    as pending (or missed), never as a false change in place."""
    table = contract.SOURCE_TABLES[table_name]
    snapshot = ingestion.table(table_name).snapshot()
    id_slice = hourly_slice(archived_max_id(snapshot, table.primary_key), slice_ids, hour or 0) if slice_ids \
        else None
    archived, reach = latest_archived(ingestion, table, snapshot, id_slice)
    id_range = None if id_slice is None else (
        _BELOW_ALL if id_slice.low is None else id_slice.low, _ABOVE_ALL if id_slice.high is None else id_slice.high)
    source = read_source_table(source_url, table_name, connect_timeout=connect_timeout, id_range=id_range)
    drift = compare(table, source, archived, reach)
    if id_slice is not None:
        drift.compared = id_slice.describe()
    return drift


def describe(drift: SourceDrift) -> str:
    """One line per kind of problem, for logs and check descriptions."""
    explain = {
        "changed_in_place": "changed without moving last_updated (id, last_updated)",
        "moved_back": "last_updated earlier than the archived version (id, source, archived)",
        "missed": "committed later than the look-back allows: never extracted (id, last_updated)",
        "deleted": "deleted in the source, not archived as deleted yet (id, -, last archived)",
    }
    return "; ".join(
        f"{drift.counts[kind]} {explain[kind]}: {drift.samples.get(kind, [])}" for kind in explain if drift.counts.get(kind)
    ) or "every source row matches its latest archived version or is pending extraction"


__all__ = ["IdSlice", "SourceDrift", "archived_max_id", "compare", "describe", "hourly_slice", "last_per_key",
           "latest_archived", "source_drift"]
