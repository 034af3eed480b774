"""The `fact_history_matches_lake` check, incremental (plain logic, no Dagster).

The ingestion zone and the facts are append-only, so once the check has passed, only what was added since
needs comparing: the ingestion rows committed after the lake version it passed at, the fact rows after the
record id it passed through, and, for the `*_current` views, the ids whose processed rows changed since. An
hourly evaluation then costs what the hour added, whatever the history holds.

The mark (in `totesys_meta.check_state`, beside references_resolve's) advances only when the check passes. The
whole history is compared instead on the first evaluation, when asked (`full`), and whenever the mark cannot be
trusted: the fact was truncated (a rebuild), a lake table was lost, rebuilt or restored from an older copy,
its commits since the mark can no longer be read (vacuumed), or the quarantine list changed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql
from psycopg.types.json import Jsonb

from totesys_platform.lake.delta import ChangesUnavailableError, LakeZone, Position, Snapshot
from totesys_platform.lake.processed.runner import position_problem
from totesys_platform.lake.quarantine import drop_quarantined, quarantined_versions
from totesys_platform.star_schema import TARGET_TABLES
from totesys_platform.warehouse.reads import read_query
from totesys_platform.warehouse.schema import TABLE_SCHEMA
from totesys_platform.warehouse.validation import (
    CHECK_STATE, FACT_SOURCES, SAMPLE, HistoryReport, check_bounds, combine_date_time, current_state_mismatches,
    fact_history_report, sample_keys, version_table,
)

HISTORY_CHECK = "fact_history_matches_lake"
# Beyond this many new versions, the whole history is compared instead (one pass, not one id list per row).
INCREMENTAL_LIMIT = 500_000


@dataclass(frozen=True)
class HistoryCheck:
    fact: str
    scan: str                   # "incremental", or "full (<why>)"
    report: HistoryReport       # over the versions compared: all of them, or those added since the mark
    current_mismatches: int
    current_sample: list[int]
    checked_through: int        # fact record ids compared through

    @property
    def passed(self) -> bool:
        return self.report.passed and self.current_mismatches == 0


@dataclass(frozen=True)
class _Mark:
    through: int
    filenode: int
    lake: Position | None
    processed: Position | None
    quarantine: str | None


def quarantine_fingerprint(quarantined: pa.Table) -> str:
    """A digest of a table's quarantined versions: a change to the list makes the next evaluation full."""
    rows = sorted(zip(*(c.to_pylist() for c in quarantined.columns)))
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:16]


def history_bounds(conn: psycopg.Connection, fact: str) -> tuple[int, int, _Mark | None]:
    """(highest record id, relfilenode, the mark of the last passing evaluation or None)."""
    high, filenode, recorded = check_bounds(conn, fact, HISTORY_CHECK)
    if recorded is None or not isinstance(recorded[2], dict):
        return high, filenode, None
    through, mark_filenode, detail = recorded
    return high, filenode, _Mark(through, mark_filenode, Position.from_json(detail.get("lake")),
                                 Position.from_json(detail.get("processed")), detail.get("quarantine"))


def _why_full(mark: _Mark | None, filenode: int, high: int, lake: Snapshot, processed: Snapshot,
              quarantine: str) -> str | None:
    if mark is None:
        return "first evaluation"
    if mark.filenode != filenode or mark.through > high:
        return "the fact was rebuilt since the last evaluation"
    if mark.lake is None or mark.processed is None:
        return "the last evaluation recorded no lake position"
    for problem in (position_problem(mark.lake, lake), position_problem(mark.processed, processed)):
        if problem:
            return problem
    if mark.quarantine != quarantine:
        return "the quarantine list changed"
    return None


def _warehouse_pairs(conn: psycopg.Connection, fact: str, where: sql.Composable, params: tuple) -> pa.Table:
    target = TARGET_TABLES[fact]
    schema = pa.schema([target.arrow_schema.field(c) for c in target.version_key])
    query = sql.SQL("SELECT {cols} FROM {fact} WHERE {where}").format(
        cols=sql.SQL(", ").join(map(sql.Identifier, target.version_key)),
        fact=sql.Identifier(TABLE_SCHEMA, fact), where=where)
    data = read_query(conn, query, schema, fact, params)
    return version_table(data[target.natural_key], combine_date_time(data["last_updated_date"], data["last_updated_time"]))


def _added_versions(ingestion: LakeZone, source: str, mark: _Mark, lake: Snapshot, quarantined: pa.Table
                    ) -> pa.Table:
    """The distinct (id, ts) of the ingestion rows committed since the mark, quarantined versions left out."""
    pk = f"{source}_id"
    rows = ingestion.table(source).changes(mark.lake.version, lake, columns=[pk, "last_updated"])
    if rows.num_rows == 0:
        return version_table(pa.array([], pa.int64()), pa.array([], pa.timestamp("ms")))
    rows = rows.select([pk, "last_updated"]).cast(
        pa.schema([rows.schema.field(pk), pa.field("last_updated", pa.timestamp("ms"))]))
    rows = drop_quarantined(rows, quarantined)
    return version_table(rows[pk], rows["last_updated"]).group_by(["id", "ts"]).aggregate([])


def incremental_report(conn: psycopg.Connection, ingestion: LakeZone, fact: str, mark: _Mark, high: int,
                       lake: Snapshot, quarantined: pa.Table) -> HistoryReport:
    """The versions archived since the mark against the fact rows loaded since: each new version once, and
    nothing else (a new row repeating a version the fact already held is a duplicate)."""
    target = TARGET_TABLES[fact]
    added = _added_versions(ingestion, FACT_SOURCES[fact], mark, lake, quarantined)
    loaded = _warehouse_pairs(conn, fact, sql.SQL("{sk} > %s AND {sk} <= %s").format(
        sk=sql.Identifier(target.surrogate_key)), (mark.through, high))
    if added.num_rows + loaded.num_rows > INCREMENTAL_LIMIT:
        raise ChangesUnavailableError(f"more than {INCREMENTAL_LIMIT} versions were added since the last evaluation")
    ids = pc.unique(pa.concat_arrays([added["id"].combine_chunks(), loaded["id"].combine_chunks()]))
    # The versions the fact already held, of the ids concerned: the ingestion rows repeating one of them are
    # tombstones and captures again of a version, not new versions.
    held = _warehouse_pairs(conn, fact, sql.SQL("{sk} <= %s AND {nk} = ANY(%s)").format(
        sk=sql.Identifier(target.surrogate_key), nk=sql.Identifier(target.natural_key)),
        (mark.through, ids.to_pylist())) if len(ids) else loaded.schema.empty_table()

    report = HistoryReport(fact, lake_versions=added.num_rows, warehouse_versions=loaded.num_rows)
    counts = loaded.group_by(["id", "ts"]).aggregate([("id", "count")])
    loaded_u = counts.select(["id", "ts"])
    twice = counts.filter(pc.greater(counts["id_count"], 1)).select(["id", "ts"])
    again = loaded_u.join(held.group_by(["id", "ts"]).aggregate([]), ["id", "ts"], join_type="left semi")
    duplicated = pa.concat_tables([twice, again]).group_by(["id", "ts"]).aggregate([])
    new = added.join(held, ["id", "ts"], join_type="left anti")
    missing = new.join(loaded_u, ["id", "ts"], join_type="left anti")
    unexpected = loaded_u.join(added, ["id", "ts"], join_type="left anti").join(
        again, ["id", "ts"], join_type="left anti")  # a repeated held version is reported as a duplicate
    report.duplicated_count, report.duplicated = duplicated.num_rows, sample_keys(duplicated.sort_by("id"), SAMPLE)
    report.missing_count, report.missing = missing.num_rows, sample_keys(missing.sort_by("id"), SAMPLE)
    report.unexpected_count, report.unexpected = unexpected.num_rows, sample_keys(unexpected.sort_by("id"), SAMPLE)
    return report


def changed_ids(processed: LakeZone, fact: str, mark: _Mark, snapshot: Snapshot) -> pa.Array:
    """The natural ids whose processed rows changed since the mark: the only `*_current` rows that can differ."""
    key = TARGET_TABLES[fact].natural_key
    rows = processed.table(fact).changes(mark.processed.version, snapshot, columns=[key])
    return pc.unique(rows[key].combine_chunks()) if rows.num_rows else pa.array([], pa.int64())


def check_fact_history(conn: psycopg.Connection, ingestion: LakeZone, processed: LakeZone, fact: str, *,
                       full: bool = False) -> HistoryCheck:
    """Evaluate `fact_history_matches_lake` for one fact: incrementally from the last passing evaluation when
    its mark holds, over the whole history otherwise. Commits its own transactions: call it on an idle
    connection."""
    if fact not in FACT_SOURCES:
        raise ValueError(f"unknown fact {fact!r}; expected one of: {', '.join(FACT_SOURCES)}")
    source = FACT_SOURCES[fact]
    lake, proc = ingestion.table(source).snapshot(), processed.table(fact).snapshot()
    quarantined = quarantined_versions(ingestion, source)
    fingerprint = quarantine_fingerprint(quarantined)
    high, filenode, mark = history_bounds(conn, fact)
    why = "asked for" if full else _why_full(mark, filenode, high, lake, proc, fingerprint)
    if why is None:
        try:
            report = incremental_report(conn, ingestion, fact, mark, high, lake, quarantined)
            ids = changed_ids(processed, fact, mark, proc)
            bad, sample = current_state_mismatches(conn, processed, fact, ids=ids, snapshot=proc) if len(ids) \
                else (0, [])
        except ChangesUnavailableError as err:
            why = str(err)
    if why is not None:
        report = fact_history_report(conn, ingestion, fact, snapshot=lake)
        bad, sample = current_state_mismatches(conn, processed, fact, snapshot=proc)
    result = HistoryCheck(fact, "incremental" if why is None else f"full ({why})", report, bad, sample, high)
    if result.passed and lake.exists and proc.exists:
        _advance(conn, fact, high, filenode, report.warehouse_versions, {
            "lake": lake.position().to_json(), "processed": proc.position().to_json(), "quarantine": fingerprint})
    return result


def _advance(conn: psycopg.Connection, fact: str, through: int, filenode: int, rows: int, detail: dict) -> None:
    with conn.transaction():
        conn.execute(sql.SQL(
            "INSERT INTO {state} (check_name, table_name, checked_through, relfilenode, rows_checked, detail) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (check_name, table_name) DO UPDATE SET "
            "checked_through = EXCLUDED.checked_through, relfilenode = EXCLUDED.relfilenode, "
            "rows_checked = EXCLUDED.rows_checked, detail = EXCLUDED.detail, checked_at = now()"
        ).format(state=CHECK_STATE), (HISTORY_CHECK, fact, through, filenode, rows, Jsonb(detail)))
