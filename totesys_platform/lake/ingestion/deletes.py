"""Deleted source rows: found by their ids, archived as tombstones, refused when too many vanish at once.

Plain Python, no Dagster (docs/extraction.md, "Deletes"). A delete leaves nothing for `last_updated` or `xmin`
to find, so a run compares ids: the source's primary keys (one aggregate read, ids only) against the ids the
archive holds alive. It does so only when the table may have lost rows since the table's last batch: when
PostgreSQL's cumulative count of deleted tuples (`pg_stat_user_tables.n_tup_del`) or the table's file node
(a TRUNCATE gives a new one) has changed. Both are read before the run's snapshot is taken, so a delete they
count is one the snapshot sees; a delete counted later is found by a later run.

A *tombstone* is a new capture of the id's latest archived version with `_deleted_at` set to the time the
run saw the deletion: the row's content stays readable, fact history stays, and downstream "latest capture
wins" turns it into a deleted current state. An id inserted again is alive again from its next capture on (the
same version restored as it was included: see extract.py and late.py).

A mass disappearance (more than `max_share` of a table's live ids gone in one run: a truncated or
mis-pointed source) is refused for that table, with nothing archived; the other tables go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql

from totesys_platform.lake.delta import LakeTable, Snapshot
from totesys_platform.lake.ingestion.source_schema import SOURCE_SCHEMA, SourceError
from totesys_platform.lake.ingestion.versions import ANOMALY_SAMPLE, BATCH_COLUMN
from totesys_platform.source import contract
from totesys_platform.source.contract import DELETED_AT_COLUMN
# The extraction state's record of the table's delete counter and file node at the last batch.
MARKER_KEY = "deletes_marker"
# The extraction state's count of tombstones archived since the table began.
TOMBSTONES_TOTAL = "tombstones_total"
DEFAULT_MAX_SHARE = 0.5
# Below this many ids gone, a run never counts as a mass disappearance (a small table losing a few rows).
MASS_MINIMUM = 10


class MassDisappearanceError(SourceError):
    """Too large a share of a table vanished from the source in one run: refused, nothing archived."""


def read_markers(conn: psycopg.Connection, tables: list[str]) -> dict[str, str]:
    """Each table's delete marker: its file node and cumulative deleted-tuple count ("node:deleted"). Readable
    with plain SELECT rights; statistics lag a commit by up to a few seconds, which only delays detection."""
    rows = conn.execute(
        "SELECT c.relname, c.relfilenode::text || ':' || coalesce(s.n_tup_del, -1)::text FROM pg_class AS c "
        "JOIN pg_namespace AS n ON n.oid = c.relnamespace LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid "
        "WHERE n.nspname = %s AND c.relname = ANY(%s)", (SOURCE_SCHEMA, tables)).fetchall()
    return {name: marker for name, marker in rows}


def should_look(previous_state: dict, marker: str | None) -> bool:
    """Whether rows may have been deleted since the table's last batch (always, if either marker is unknown)."""
    return marker is None or previous_state.get(MARKER_KEY) != marker


def source_ids(conn: psycopg.Connection, table: contract.SourceTable) -> pa.Array:
    """Every primary key of `table` in the connection's snapshot: one text value aggregated by the server,
    parsed by Arrow (a 1.6 M-row table in well under a second; no Python object per row)."""
    pk = sql.Identifier(table.primary_key)
    query = sql.SQL("SELECT string_agg({pk}::text, E'\\n') FROM {table}").format(
        pk=pk, table=sql.Identifier(SOURCE_SCHEMA, table.name))
    text = conn.execute(query).fetchone()[0]
    if not text:
        return pa.array([], pa.int64())
    parsed = pacsv.read_csv(
        pa.py_buffer(text.encode()), read_options=pacsv.ReadOptions(column_names=["id"]),
        convert_options=pacsv.ConvertOptions(column_types={"id": pa.int64()}))
    return parsed["id"].combine_chunks()


def live_archived_ids(archive: LakeTable, snapshot: Snapshot, pk: str) -> pa.Array:
    """The ids whose latest capture in the archive is not a tombstone (ids only: three narrow columns read)."""
    schema = snapshot.arrow_schema()
    if schema is None:
        return pa.array([], pa.int64())
    if DELETED_AT_COLUMN not in schema.names:
        rows = archive.read(snapshot, columns=[pk])
        return pc.unique(rows[pk].combine_chunks()).cast(pa.int64()) if rows is not None else pa.array([], pa.int64())
    rows = archive.read(snapshot, columns=[pk, BATCH_COLUMN, DELETED_AT_COLUMN])
    dead = pc.is_valid(rows[DELETED_AT_COLUMN])
    ids = pc.unique(rows.filter(pc.invert(dead))[pk].combine_chunks()).cast(pa.int64())
    if not pc.any(dead).as_py():
        return ids
    # Only the few ids ever tombstoned need their captures compared: alive again if captured after their
    # latest tombstone (inserted again).
    tombstoned = pc.unique(rows.filter(dead)[pk])
    theirs = rows.filter(pc.is_in(rows[pk], value_set=tombstoned))
    theirs_dead = pc.is_valid(theirs[DELETED_AT_COLUMN])
    alive = theirs.filter(pc.invert(theirs_dead)).group_by(pk).aggregate([(BATCH_COLUMN, "max")])
    buried = theirs.filter(theirs_dead).group_by(pk).aggregate([(BATCH_COLUMN, "max")]).rename_columns([pk, "_buried"])
    joined = buried.join(alive, pk, join_type="left outer")
    still_dead = joined.filter(pc.invert(pc.fill_null(pc.greater(joined[f"{BATCH_COLUMN}_max"], joined["_buried"]),
                                                      False)))[pk].cast(pa.int64())
    return ids.filter(pc.invert(pc.is_in(ids, value_set=still_dead)))


@dataclass
class Deletes:
    """What one run found gone from a table."""

    ids: pa.Array  # ids alive in the archive, absent from the source
    live: int  # ids alive in the archive before this run

    def refuse_mass(self, table: contract.SourceTable, max_share: float) -> None:
        gone = len(self.ids)
        if gone >= MASS_MINIMUM and gone > max_share * self.live:
            sample = ", ".join(map(str, self.ids.slice(0, ANOMALY_SAMPLE).to_pylist()))
            raise MassDisappearanceError(
                f"{table.name}: {gone:,} of its {self.live:,} archived rows ({gone / self.live:.0%}) are gone from "
                f"the source since the last run (e.g. {table.primary_key} {sample}): a truncated table, or "
                f"TOTESYS_DB_URL pointing at another database? Nothing was archived for {table.name}. If the rows "
                f"really were deleted, run once with the extraction's max_deleted_share above {gone / self.live:.2f}.")


def find_deletes(conn: psycopg.Connection, table: contract.SourceTable, archive: LakeTable,
                 snapshot: Snapshot) -> Deletes:
    """The ids alive in the archive at `snapshot` that the source no longer has (in the connection's snapshot)."""
    live = live_archived_ids(archive, snapshot, table.primary_key)
    if not len(live):
        return Deletes(pa.array([], pa.int64()), 0)
    gone = missing_from(live, source_ids(conn, table))
    return Deletes(gone.take(pc.sort_indices(gone)), len(live))


def missing_from(ids: pa.Array, present: pa.Array) -> pa.Array:
    """The `ids` not in `present`. Serial ids are dense: a lookup table over their range (numpy's isin
    kind="table") is several times faster than hashing 1.6 M values; sparse ids are hashed."""
    if not len(ids) or not len(present):
        return ids
    low = min(pc.min(ids).as_py(), pc.min(present).as_py())
    high = max(pc.max(ids).as_py(), pc.max(present).as_py())
    if high - low > 8 * (len(ids) + len(present)):
        return ids.filter(pc.invert(pc.is_in(ids, value_set=present)))
    mine = ids.to_numpy(zero_copy_only=False)
    return pa.array(mine[np.isin(mine, present.to_numpy(zero_copy_only=False), kind="table", invert=True)])


def tombstones(archive: LakeTable, snapshot: Snapshot, table: contract.SourceTable, ids: pa.Array,
               seen_at: datetime) -> pa.Table:
    """The latest archived version of each id in `ids` (its latest capture), as `table`'s columns (a column the
    archive does not hold yet is NULL), with `_deleted_at` = `seen_at`: the tombstones to archive."""
    pk = table.primary_key
    held = set(snapshot.arrow_schema().names)
    wanted = [c for c in table.column_names if c in held]
    # File by file, column by column: a filtered Delta read would decode every column of each compacted file.
    rows = archive.read_matching(snapshot, [*wanted, BATCH_COLUMN], pk,
                                 lambda keys: pc.is_in(keys.cast(pa.int64()), value_set=ids.cast(pa.int64())))
    # The id's latest version, and of its captures the latest: the last row once sorted.
    rows = rows.sort_by([(pk, "ascending"), ("last_updated", "ascending"), (BATCH_COLUMN, "ascending")])
    ids_sorted = rows[pk].combine_chunks()
    is_last = pa.concat_arrays([pc.not_equal(ids_sorted[:-1], ids_sorted[1:]), pa.array([True])]) \
        if len(ids_sorted) else pa.array([], pa.bool_())
    rows = rows.filter(is_last)
    columns = [rows[c] if c in held else pa.nulls(rows.num_rows, f.type)
               for c, f in zip(table.column_names, table.arrow_schema)]
    return pa.Table.from_arrays(columns, schema=table.arrow_schema)


def describe(table: contract.SourceTable, ids: pa.Array) -> str:
    sample = ", ".join(map(str, ids.slice(0, ANOMALY_SAMPLE).to_pylist()))
    more = f" and {len(ids) - ANOMALY_SAMPLE} more" if len(ids) > ANOMALY_SAMPLE else ""
    return (f"{table.name}: {len(ids)} row(s) deleted in the source are archived as tombstones: "
            f"{table.primary_key} {sample}{more}")


__all__ = ["DELETED_AT_COLUMN", "DEFAULT_MAX_SHARE", "Deletes", "MARKER_KEY", "MassDisappearanceError",
           "TOMBSTONES_TOTAL", "describe", "find_deletes", "live_archived_ids", "read_markers", "should_look",
           "source_ids", "tombstones"]
