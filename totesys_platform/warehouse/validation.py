"""Validation of the warehouse against the lake (plain logic, no Dagster): the facts of the asset checks."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import psycopg
import psycopg.errors
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from totesys_platform.lake.ingestion.reconcile import last_per_key
from totesys_platform.lake.delta import LakeZone, Snapshot
from totesys_platform.lake.processed.runner import read_processed
from totesys_platform.lake.quarantine import drop_quarantined, quarantined_versions
from totesys_platform.source.contract import SOURCE_TABLES
from totesys_platform.star_schema import DELETED_AT, FACTS, TARGET_TABLES
from totesys_platform.warehouse.reads import read_query, read_table
from totesys_platform.warehouse.schema import META_SCHEMA, SCHEMA_LOCK_KEY, TABLE_SCHEMA, table_lock_key

# Each fact's source table, and each dimension's (with its key), read off the model.
FACT_SOURCES: dict[str, str] = {fact: TARGET_TABLES[fact].source for fact in FACTS}
SAMPLE = 10


@dataclass
class HistoryReport:
    fact: str
    lake_versions: int = 0
    warehouse_versions: int = 0
    missing: list[tuple] = field(default_factory=list)       # archived in the lake, absent from the warehouse
    unexpected: list[tuple] = field(default_factory=list)    # in the warehouse, never archived
    duplicated: list[tuple] = field(default_factory=list)    # in the warehouse more than once
    missing_count: int = 0
    unexpected_count: int = 0
    duplicated_count: int = 0

    @property
    def passed(self) -> bool:
        return not (self.missing_count or self.unexpected_count or self.duplicated_count)


def version_table(ids: pa.Array, stamps: pa.Array) -> pa.Table:
    return pa.table({"id": pc.cast(ids, pa.int64()), "ts": pc.cast(stamps, pa.timestamp("ms"))})


def lake_versions(ingestion: LakeZone, source_table: str, snapshot: Snapshot | None = None) -> pa.Table:
    """Every (id, last_updated) archived for a source table (now, or at `snapshot`), but the quarantined ones."""
    pk = f"{source_table}_id"
    t = ingestion.table(source_table).read(snapshot, columns=[pk, "last_updated"])
    if t is None or t.num_rows == 0:
        return version_table(pa.array([], pa.int64()), pa.array([], pa.timestamp("ms")))
    t = t.cast(pa.schema([t.schema.field(pk), pa.field("last_updated", pa.timestamp("ms"))]))
    t = drop_quarantined(t, quarantined_versions(ingestion, source_table))
    return version_table(t[pk], t["last_updated"])


def warehouse_versions(conn: psycopg.Connection, fact: str) -> pa.Table:
    """Every (id, last_updated) version in a warehouse fact, read with COPY (no per-row Python)."""
    target = TARGET_TABLES[fact]
    data = read_table(conn, fact).select([target.natural_key, "last_updated_date", "last_updated_time"])
    return version_table(data[target.natural_key], combine_date_time(data["last_updated_date"], data["last_updated_time"]))


def combine_date_time(dates: pa.ChunkedArray, times: pa.ChunkedArray) -> pa.Array:
    """date32 + time32[ms] -> timestamp[ms]."""
    day_ms = pc.multiply(pc.cast(pc.cast(dates, pa.int32()), pa.int64()), 86_400_000)
    return pc.cast(pc.add(day_ms, pc.cast(pc.cast(times, pa.int32()), pa.int64())), pa.timestamp("ms"))


def sample_keys(t: pa.Table, limit: int) -> list[tuple]:
    return [(r["id"], str(r["ts"])) for r in t.slice(0, limit).to_pylist()]


def fact_history_report(conn: psycopg.Connection, ingestion: LakeZone, fact: str,
                        snapshot: Snapshot | None = None) -> HistoryReport:
    """Every archived version (now, or at the source table's `snapshot`) appears exactly once in the warehouse,
    and nothing else does. The whole history: `history_check` compares only what was added since it passed."""
    lake = lake_versions(ingestion, FACT_SOURCES[fact], snapshot)
    wh = warehouse_versions(conn, fact)
    report = HistoryReport(fact, lake_versions=lake.num_rows, warehouse_versions=wh.num_rows)
    counts = wh.group_by(["id", "ts"]).aggregate([("id", "count")])
    dup = counts.filter(pc.greater(counts["id_count"], 1))
    report.duplicated_count, report.duplicated = dup.num_rows, sample_keys(dup, SAMPLE)
    lake_u = lake.group_by(["id", "ts"]).aggregate([])
    wh_u = counts.select(["id", "ts"])
    missing = lake_u.join(wh_u, ["id", "ts"], join_type="left anti")
    unexpected = wh_u.join(lake_u, ["id", "ts"], join_type="left anti")
    report.missing_count, report.missing = missing.num_rows, sample_keys(missing.sort_by("id"), SAMPLE)
    report.unexpected_count, report.unexpected = unexpected.num_rows, sample_keys(unexpected.sort_by("id"), SAMPLE)
    return report


def _as_text(table: pa.Table) -> pa.Table:
    """Every column as text, so rows compare (and join) by value whatever their types."""
    return pa.table({name: pc.cast(table[name], pa.string()) for name in table.column_names})


def latest_versions(data: pa.Table, natural_key: str) -> pa.Table:
    """The latest version (by last_updated date, then time) of each natural id."""
    return last_per_key(data, natural_key, ["last_updated_date", "last_updated_time"])


def current_state_mismatches(conn: psycopg.Connection, processed: LakeZone, fact: str, *,
                             ids: pa.Array | None = None, snapshot: Snapshot | None = None) -> tuple[int, list]:
    """Natural ids whose `<fact>_current` row differs from the latest processed version of that id (no row when
    that version was seen deleted): of every id, or of `ids` only. The processed table now, or at `snapshot`."""
    target = TARGET_TABLES[fact]
    key = target.natural_key
    data = read_processed(processed, fact, snapshot, ids)
    latest = latest_versions(data, key)
    latest = latest.filter(pc.is_null(latest[DELETED_AT]))
    expected = _as_text(latest.select(target.current_columns))
    actual = _as_text(read_current_view(conn, fact, ids))
    keys = target.current_columns
    only_expected = expected.join(actual, keys, join_type="left anti")
    only_actual = actual.join(expected, keys, join_type="left anti")
    bad = sorted({int(v) for v in only_expected[target.natural_key].to_pylist() + only_actual[target.natural_key].to_pylist()})
    return len(bad), bad[:SAMPLE]


def read_current_view(conn: psycopg.Connection, fact: str, ids: pa.Array | None = None) -> pa.Table:
    """`<fact>_current` as Arrow with the fact's types: every row, or those of the natural ids `ids`."""
    target = TARGET_TABLES[fact]
    schema = pa.schema([target.arrow_schema.field(c) for c in target.current_columns])
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in schema.names), sql.Identifier(f"{fact}_current"))
    if ids is None:
        return read_query(conn, query, schema, f"{fact}_current")
    query = sql.SQL("{} WHERE {} = ANY(%s)").format(query, sql.Identifier(target.natural_key))
    return read_query(conn, query, schema, f"{fact}_current", (ids.to_pylist(),))


def dangling_references(conn: psycopg.Connection, fact: str) -> dict[str, int]:
    """Per foreign-key column of a fact: how many rows refer to a dimension row that does not exist.

    A full scan of the fact; `check_references` is the incremental form the tick's check uses.
    """
    return _count_dangling(conn, fact, None)[1]


def _count_dangling(
    conn: psycopg.Connection, fact: str, key_range: tuple[int, int] | None
) -> tuple[int, dict[str, int]]:
    """(rows examined, dangling rows per FK column) over the fact rows whose surrogate key is in
    (low, high], or over every row when `key_range` is None. One statement, one pass over the fact:
    each dimension is LEFT JOINed on its (unique) key, so a join adds no rows and a NULL marks a miss."""
    target = TARGET_TABLES[fact]
    fks = [c for c in target.columns if c.references]
    joins, counts = [], []
    for i, col in enumerate(fks):
        dim, dim_col = col.references.split(".")
        alias = sql.Identifier(f"d{i}")
        joins.append(sql.SQL("LEFT JOIN {d} AS {a} ON {a}.{dc} = f.{c}").format(
            d=sql.Identifier(TABLE_SCHEMA, dim), a=alias, dc=sql.Identifier(dim_col), c=sql.Identifier(col.name)))
        counts.append(sql.SQL("count(*) FILTER (WHERE f.{c} IS NOT NULL AND {a}.{dc} IS NULL)").format(
            c=sql.Identifier(col.name), a=alias, dc=sql.Identifier(dim_col)))
    where, params = sql.SQL(""), ()
    if key_range is not None:
        where = sql.SQL("WHERE f.{sk} > %s AND f.{sk} <= %s").format(sk=sql.Identifier(target.surrogate_key))
        params = key_range
    query = sql.SQL("SELECT count(*), {counts} FROM {fact} AS f {joins} {where}").format(
        counts=sql.SQL(", ").join(counts), fact=sql.Identifier(TABLE_SCHEMA, fact),
        joins=sql.SQL(" ").join(joins), where=where)
    row = conn.execute(query, params).fetchone()
    return int(row[0]), {col.name: int(n) for col, n in zip(fks, row[1:])}


# Durable high-water marks of incremental checks: per (check, table), the surrogate key through which the
# check last passed, and the table's relfilenode then (TRUNCATE, as in a rebuild, gives the table a new
# one and restarts the identity, so a changed relfilenode means "check everything again").
CHECK_STATE = sql.Identifier(META_SCHEMA, "check_state")
REFERENCES_CHECK = "references_resolve"


@dataclass(frozen=True)
class ReferenceCheck:
    fact: str
    full: bool                  # every row was examined (first evaluation, after a rebuild, or asked for)
    checked_after: int          # surrogate keys examined: (checked_after, checked_through]
    checked_through: int
    rows_checked: int
    dangling: dict[str, int]    # per FK column

    @property
    def passed(self) -> bool:
        return not any(self.dangling.values())

    @property
    def dangling_total(self) -> int:
        return sum(self.dangling.values())


def ensure_check_state(conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))  # concurrent CREATEs would collide
        conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (check_name text NOT NULL, table_name text NOT NULL, "
            "checked_through bigint NOT NULL, relfilenode oid NOT NULL, rows_checked bigint NOT NULL, "
            "checked_at timestamptz NOT NULL DEFAULT now(), detail jsonb, PRIMARY KEY (check_name, table_name))"
        ).format(CHECK_STATE))
        # `detail` (the lake positions of the incremental fact-history check) came later.
        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS detail jsonb").format(CHECK_STATE))


def check_bounds(conn: psycopg.Connection, fact: str, check: str) -> tuple[int, int, tuple | None]:
    """(highest surrogate key, relfilenode, the mark `check` recorded for the fact: (checked_through, relfilenode,
    detail) or None), read while no load of the fact is in flight: the loads' advisory lock, taken shared, waits
    for an open load to commit, so every key up to the highest one is visible (identity values are drawn before
    commit, possibly out of commit order). Not a table lock: SHARE mode would also wait for a VACUUM or ANALYZE
    of the fact (an autovacuum is cancelled after a second, a DBA's VACUUM is waited for). Creates `check_state`
    (or its later columns) when missing."""
    target = TARGET_TABLES[fact]

    def read() -> tuple:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (table_lock_key(fact),))
            return conn.execute(sql.SQL(
                "SELECT (SELECT coalesce(max({sk}), 0) FROM {fact}), pg_relation_filenode(%s::regclass), "
                "s.checked_through, s.relfilenode, s.detail "
                "FROM (SELECT 1) AS one LEFT JOIN {state} AS s ON s.check_name = %s AND s.table_name = %s"
            ).format(sk=sql.Identifier(target.surrogate_key), fact=sql.Identifier(TABLE_SCHEMA, fact),
                     state=CHECK_STATE), (f"{TABLE_SCHEMA}.{fact}", check, fact)).fetchone()

    try:
        high, filenode, through, mark_filenode, detail = read()
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
        ensure_check_state(conn)
        high, filenode, through, mark_filenode, detail = read()
    mark = None if through is None else (int(through), int(mark_filenode), detail)
    return int(high), int(filenode), mark


def check_references(conn: psycopg.Connection, fact: str, *, full: bool = False) -> ReferenceCheck:
    """The `references_resolve` check, incremental: only fact rows loaded since its last passing evaluation.

    Facts are append-only with an increasing surrogate key, so the rows after the recorded high-water mark
    are exactly the new ones. The mark (in `totesys_meta.check_state`, created here if missing) advances
    only when the check passes, so a failure is reported again until fixed. The first evaluation, one after
    the table was truncated (a rebuild), or `full=True` examine every row. With nothing new this costs one
    small query. Commits its own transactions: call it on an idle connection.
    """
    if fact not in FACT_SOURCES:
        raise ValueError(f"unknown fact {fact!r}; expected one of: {', '.join(FACT_SOURCES)}")
    high, filenode, recorded = check_bounds(conn, fact, REFERENCES_CHECK)
    mark, mark_filenode = recorded[:2] if recorded else (None, None)
    if full or mark is None or mark_filenode != filenode or mark > high:
        low, full = 0, True
    else:
        low = mark
    if high > low:
        with conn.transaction():
            rows, dangling = _count_dangling(conn, fact, None if full else (low, high))
    else:
        rows, dangling = 0, {c.name: 0 for c in TARGET_TABLES[fact].columns if c.references}
    result = ReferenceCheck(fact, full, low, high, rows, dangling)
    if result.passed and (mark is None or mark_filenode != filenode or high != mark):
        with conn.transaction():
            _advance_reference_mark(conn, fact, high, filenode, rows)
    return result


def _advance_reference_mark(conn: psycopg.Connection, fact: str, through: int, filenode: int, rows: int) -> None:
    # Never moves a mark back (a concurrent evaluation may have gone further on the same table).
    conn.execute(sql.SQL(
        "INSERT INTO {state} AS s (check_name, table_name, checked_through, relfilenode, rows_checked) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (check_name, table_name) DO UPDATE SET "
        "checked_through = CASE WHEN s.relfilenode = EXCLUDED.relfilenode "
        "THEN greatest(s.checked_through, EXCLUDED.checked_through) ELSE EXCLUDED.checked_through END, "
        "relfilenode = EXCLUDED.relfilenode, rows_checked = EXCLUDED.rows_checked, checked_at = now()"
    ).format(state=CHECK_STATE), (REFERENCES_CHECK, fact, through, filenode, rows))


def record_references_validated(conn: psycopg.Connection, fact: str, rows: int) -> None:
    """Mark every row of `fact` as checked by `references_resolve`, in the caller's transaction: for a bulk load
    that has just validated all of them by adding the fact's foreign keys back (`loader.LoadStats.
    references_validated`), and holds the table's ACCESS EXCLUSIVE lock until it commits, so the highest
    record id now is the highest there will be when the mark becomes visible. The check then examines only
    later rows, instead of scanning the whole table again right after the load. `rows`: the table's rows."""
    if fact not in FACT_SOURCES:
        raise ValueError(f"unknown fact {fact!r}; expected one of: {', '.join(FACT_SOURCES)}")
    if conn.execute("SELECT to_regclass(%s)", (f"{META_SCHEMA}.check_state",)).fetchone()[0] is None:
        ensure_check_state(conn)  # its schema lock is then held until the load commits: only the first time
    target = TARGET_TABLES[fact]
    high, filenode = conn.execute(sql.SQL(
        "SELECT coalesce(max({sk}), 0), pg_relation_filenode(%s::regclass) FROM {fact}"
    ).format(sk=sql.Identifier(target.surrogate_key), fact=sql.Identifier(TABLE_SCHEMA, fact)),
        (f"{TABLE_SCHEMA}.{fact}",)).fetchone()
    _advance_reference_mark(conn, fact, int(high), int(filenode), rows)


DIMENSION_SOURCES: dict[str, tuple[str, str]] = {
    t.name: (t.source, SOURCE_TABLES[t.source].primary_key)
    for t in TARGET_TABLES.values() if t.kind == "dimension" and t.source is not None}


def dimension_reconciliation(conn: psycopg.Connection, ingestion: LakeZone, dim: str) -> tuple[int, int]:
    """(distinct keys archived in the lake, rows in the warehouse dimension)."""
    source, _ = DIMENSION_SOURCES[dim]
    # Sorting a copy of the ids costs far less memory than Arrow's hash-based unique on a big table.
    ids = np.sort(lake_versions(ingestion, source)["id"].to_numpy())
    lake_keys = int((ids[1:] != ids[:-1]).sum()) + 1 if len(ids) else 0
    count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(dim))).fetchone()[0]
    return lake_keys, count
