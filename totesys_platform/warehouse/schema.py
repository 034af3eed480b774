"""The warehouse schema: versioned, idempotent migrations generated from `star_schema` (plain psycopg, no Dagster).

`ensure_schema(conn)` creates or upgrades the warehouse and records every applied migration in
`totesys_meta.schema_migrations`; concurrent callers serialise on an advisory lock. After migrating it
checks the live tables against `star_schema.TARGET_TABLES` and fails loudly on drift, so a change to the
model that was not accompanied by a new migration cannot go unnoticed.

`totesys_meta.load_state` records, per table, the processed Delta table (its id) and version the warehouse has
loaded through, with that commit's time (a `lake.delta.Position`); the caller writes it in the same transaction
as the merge. `lake.processed.runner.read_processed_changes` decides from it where the next load reads from.

Transactions: `ensure_schema` and `reset_warehouse` run in their own transaction when the connection is
idle (and commit it), or inside a savepoint of the caller's open transaction. `get_load_position` and
`set_load_state` never commit.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass

import psycopg
from psycopg import sql

from totesys_platform.lake.delta import Position
from totesys_platform.star_schema import DELETED_AT, FACTS, TARGET_TABLES, TargetTable

META_SCHEMA = "totesys_meta"
TABLE_SCHEMA = "public"
# Any constant bigint works; this one spells "totesys" so it is recognisable in pg_locks.
SCHEMA_LOCK_KEY = 0x746F74657379730


def table_lock_key(table: str) -> int:
    """The advisory lock key that serialises the loads of one table (a stable signed 64-bit number); the checks
    take it shared to wait for a load in flight (`validation.check_bounds`), a rebuild takes every table's."""
    return int.from_bytes(hashlib.sha256(f"totesys_platform.loader:{table}".encode()).digest()[:8], "big", signed=True)

# Types star_schema may use: the DDL composes them as SQL text, so only known spellings pass.
_SQL_TYPE = re.compile(
    r"^(integer|bigint|text|varchar|varchar\(\d+\)|numeric\(\d+,\d+\)|time\(\d\)|timestamp\(\d\)|date|boolean)$")


class WarehouseSchemaError(RuntimeError):
    """The warehouse schema cannot be brought to, or does not match, what this code expects."""


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[sql.Composable, ...]


def current_view_name(fact: str) -> str:
    return f"{fact}_current"


def _ident(*parts: str) -> sql.Identifier:
    return sql.Identifier(*parts)


def column_type(sql_type: str) -> sql.SQL:
    if not _SQL_TYPE.match(sql_type):
        raise WarehouseSchemaError(f"star_schema uses SQL type {sql_type!r}, which the warehouse DDL does not allow")
    return sql.SQL(sql_type)


def _create_table(table: TargetTable) -> sql.Composable:
    parts: list[sql.Composable] = []
    if table.kind == "fact":
        parts.append(sql.SQL("{} bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY").format(_ident(table.surrogate_key)))
    for col in table.columns:
        parts.append(sql.SQL("{} {}{}").format(
            _ident(col.name), column_type(col.sql_type), sql.SQL("" if col.nullable else " NOT NULL")))
    if table.kind == "dimension":
        parts.append(sql.SQL("PRIMARY KEY ({})").format(_ident(table.natural_key)))
    else:
        parts.append(sql.SQL("CONSTRAINT {} UNIQUE ({})").format(
            _ident(f"{table.name}_version_key"), sql.SQL(", ").join(map(_ident, table.version_key))))
    for col in table.columns:
        if col.references:
            ref_table, ref_col = col.references.split(".")
            parts.append(sql.SQL("CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({})").format(
                _ident(f"{table.name}_{col.name}_fkey"), _ident(col.name),
                _ident(TABLE_SCHEMA, ref_table), _ident(ref_col)))
    return sql.SQL("CREATE TABLE {} (\n  {}\n)").format(
        _ident(TABLE_SCHEMA, table.name), sql.SQL(",\n  ").join(parts))


def _fact_indexes(table: TargetTable) -> list[sql.Composable]:
    """FK columns (joins to dimensions, and the FK checks of dimension updates) and, until migration 5 drops it,
    the current-view order."""
    stmts: list[sql.Composable] = [
        sql.SQL("CREATE INDEX {} ON {} ({})").format(
            _ident(f"ix_{table.name}_{col.name}"), _ident(TABLE_SCHEMA, table.name), _ident(col.name))
        for col in table.columns if col.references
    ]
    stmts.append(sql.SQL("CREATE INDEX {} ON {} ({}, {} DESC, {} DESC)").format(
        _ident(f"ix_{table.name}_latest"), _ident(TABLE_SCHEMA, table.name),
        *map(_ident, table.version_key)))
    return stmts


def _create_current_view(table: TargetTable, *, id_descending: bool = True) -> sql.Composable:
    """Each id's latest version, unless that version was seen deleted (contract section 3, rule 6).

    Ordered by the whole version key descending, so a backward scan of the version key's unique index gives
    each id's latest version first: no index of its own is needed (migration 5). Migrations 1 and 4 keep the
    ascending id they were applied with (`id_descending=False`)."""
    cols = sql.SQL(", ").join(map(_ident, [table.surrogate_key, *table.current_columns]))
    natural, date_col, time_col = table.version_key
    return sql.SQL(
        "CREATE VIEW {view} AS SELECT {cols} FROM (SELECT DISTINCT ON ({nk}) {cols}, {deleted} FROM {fact} "
        "ORDER BY {nk}" + (" DESC" if id_descending else "") + ", {d} DESC, {t} DESC) AS latest "
        "WHERE {deleted} IS NULL"
    ).format(
        view=_ident(TABLE_SCHEMA, current_view_name(table.name)), nk=_ident(natural), cols=cols,
        deleted=_ident(DELETED_AT), fact=_ident(TABLE_SCHEMA, table.name), d=_ident(date_col), t=_ident(time_col),
    )


def _deletions_migration() -> Migration:
    statements: list[sql.Composable] = []
    for fact in (TARGET_TABLES[name] for name in FACTS):
        # (IF NOT EXISTS: a warehouse created by this code has the column from migration 1.)
        statements += [
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} timestamp(3)").format(
                _ident(TABLE_SCHEMA, fact.name), _ident(DELETED_AT)),
            sql.SQL("DROP VIEW IF EXISTS {}").format(_ident(TABLE_SCHEMA, current_view_name(fact.name))),
            _create_current_view(fact, id_descending=False),
        ]
    return Migration(4, "facts: deleted_at (when the source row was seen deleted); current views leave deleted "
                        "orders and payments out", tuple(statements))


def _current_views_on_the_version_key_migration() -> Migration:
    statements: list[sql.Composable] = []
    for fact in (TARGET_TABLES[name] for name in FACTS):
        statements += [
            sql.SQL("DROP VIEW IF EXISTS {}").format(_ident(TABLE_SCHEMA, current_view_name(fact.name))),
            _create_current_view(fact),
            # The version key's unique index, read backwards, serves the views: one index less to build after
            # every bulk load and to keep up on every tick.
            sql.SQL("DROP INDEX IF EXISTS {}").format(_ident(TABLE_SCHEMA, f"ix_{fact.name}_latest")),
        ]
    return Migration(5, "facts: the current views read the version key's index backwards; the (id, last_updated "
                        "DESC) indexes are dropped", tuple(statements))


def _initial_migration() -> Migration:
    tables = list(TARGET_TABLES.values())
    statements: list[sql.Composable] = [_create_table(t) for t in tables if t.kind == "dimension"]
    for fact in (TARGET_TABLES[name] for name in FACTS):
        statements += [_create_table(fact), *_fact_indexes(fact), _create_current_view(fact, id_descending=False)]
    statements.append(sql.SQL(
        "CREATE TABLE {} (table_name text PRIMARY KEY, processed_seq bigint NOT NULL, loaded_at timestamptz)"
    ).format(_ident(META_SCHEMA, "load_state")))
    return Migration(1, "star schema: 8 dimensions, 3 append-only facts, current views, load state",
                     tuple(statements))


# Ordered; append new migrations, never edit an applied one. See docs/warehouse.md ("Changing the schema").
MIGRATIONS: tuple[Migration, ...] = (
    _initial_migration(),
    Migration(2, "load state: commit id of the processed batch loaded through", (
        # NULL for rows written before: such a position is checked by its batch number only, as before.
        sql.SQL("ALTER TABLE {} ADD COLUMN processed_commit_id text").format(_ident(META_SCHEMA, "load_state")),
    )),
    Migration(3, "load state: the processed Delta table, version and commit time loaded through", (
        # Positions in the manifest logs of the lake's earlier format mean nothing in its Delta tables: every
        # table loads all of its processed rows once more (the merges ignore what they already have).
        sql.SQL("DELETE FROM {}").format(_ident(META_SCHEMA, "load_state")),
        sql.SQL("ALTER TABLE {} RENAME COLUMN processed_seq TO processed_version").format(
            _ident(META_SCHEMA, "load_state")),
        sql.SQL("ALTER TABLE {} DROP COLUMN processed_commit_id, ADD COLUMN processed_table_id text NOT NULL, "
                "ADD COLUMN processed_committed_at bigint NOT NULL").format(_ident(META_SCHEMA, "load_state")),
    )),
    _deletions_migration(),
    _current_views_on_the_version_key_migration(),
    Migration(6, "load state: the table's row count after the load", (
        # NULL until the next load counts the table once; later loads add what they insert instead of counting
        # a table that only grows (a count(*) per tick would follow the history, not the change).
        sql.SQL("ALTER TABLE {} ADD COLUMN row_count bigint").format(_ident(META_SCHEMA, "load_state")),
    )),
)
LATEST_VERSION = MIGRATIONS[-1].version


def ensure_schema(conn: psycopg.Connection) -> int:
    """Apply every migration not yet recorded, verify the tables, and return the schema version.

    Idempotent; safe to call from several processes at once (an advisory transaction lock serialises them).
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
        # Checked first: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the schema
        # exists, and a least-privilege loader role does not have it once the schema is provisioned.
        if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (META_SCHEMA,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(_ident(META_SCHEMA)))
        conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (version integer PRIMARY KEY, "
            "applied_at timestamptz NOT NULL DEFAULT now(), description text NOT NULL)"
        ).format(_ident(META_SCHEMA, "schema_migrations")))
        applied = {row[0] for row in conn.execute(
            sql.SQL("SELECT version FROM {}").format(_ident(META_SCHEMA, "schema_migrations")))}
        unknown = sorted(v for v in applied if v > LATEST_VERSION)
        if unknown:
            raise WarehouseSchemaError(
                f"the warehouse has schema version(s) {unknown}, newer than this code knows ({LATEST_VERSION}): "
                "upgrade totesys_platform before loading into this warehouse")
        for migration in MIGRATIONS:
            if migration.version in applied:
                continue
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                sql.SQL("INSERT INTO {} (version, description) VALUES (%s, %s)").format(
                    _ident(META_SCHEMA, "schema_migrations")),
                (migration.version, migration.description))
        problems = schema_drift(conn)
        if problems:
            raise WarehouseSchemaError(
                "the warehouse tables do not match star_schema: " + "; ".join(problems)
                + ". Add a migration to totesys_platform/warehouse/schema.py for the model change "
                "(or rebuild the warehouse database)")
    return LATEST_VERSION


_ensured: set[str] = set()
_ensured_lock = threading.Lock()


def ensure_schema_once(conn: psycopg.Connection, key: str) -> None:
    """`ensure_schema` once per process per warehouse (`key`: its URL), not once per asset of every run."""
    with _ensured_lock:
        if key in _ensured:
            return
        ensure_schema(conn)
        _ensured.add(key)


def schema_drift(conn: psycopg.Connection) -> list[str]:
    """Differences between the live warehouse tables and star_schema (columns, order, types, nullability), and
    between the facts' `*_current` views and their columns."""
    views = {current_view_name(name): name for name in FACTS}
    rows = conn.execute(
        """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relkind IN ('r', 'v') AND c.relname = ANY(%s) AND a.attnum > 0
          AND NOT a.attisdropped
        ORDER BY c.relname, a.attnum
        """,
        (TABLE_SCHEMA, [*TARGET_TABLES, *views]),
    ).fetchall()
    live: dict[str, list[tuple[str, str, bool]]] = {}
    for relname, column, pg_type, not_null in rows:
        live.setdefault(relname, []).append((column, pg_type, not_null))
    problems = []
    for view, fact in views.items():
        target = TARGET_TABLES[fact]
        expected_names = [target.surrogate_key, *target.current_columns]
        actual_names = [column for column, _, _ in live.get(view, [])]
        if not actual_names:
            problems.append(f"view {view} is missing")
        elif actual_names != expected_names:
            problems.append(f"view {view} has columns {', '.join(actual_names)}, expected {', '.join(expected_names)}")
    for table in TARGET_TABLES.values():
        expected = [(c.name, _canonical_type(c.sql_type), not c.nullable) for c in table.columns]
        if table.kind == "fact":
            expected.insert(0, (table.surrogate_key, "bigint", True))
        actual = live.get(table.name)
        if actual is None:
            problems.append(f"table {table.name} is missing")
            continue
        for position, (exp, act) in enumerate(zip(expected, actual), start=1):
            if exp != act:
                problems.append(
                    f"{table.name} column {position} is {_describe(act)}, expected {_describe(exp)}")
        if len(actual) != len(expected):
            extra = [c[0] for c in actual[len(expected):]]
            missing = [c[0] for c in expected[len(actual):]]
            problems.append(f"{table.name} has {len(actual)} columns, expected {len(expected)}"
                            + (f" (extra: {', '.join(extra)})" if extra else "")
                            + (f" (missing: {', '.join(missing)})" if missing else ""))
    return problems


def _canonical_type(sql_type: str) -> str:
    """star_schema's spelling -> format_type()'s spelling."""
    if sql_type.startswith("varchar"):
        return "character varying" + sql_type[len("varchar"):]
    if sql_type.startswith(("time(", "timestamp(")):
        return sql_type + " without time zone"
    return sql_type


def _describe(column: tuple[str, str, bool]) -> str:
    name, pg_type, not_null = column
    return f"{name} {pg_type}{' NOT NULL' if not_null else ''}"


def _check_table(table: str) -> None:
    if table not in TARGET_TABLES:
        raise ValueError(f"unknown warehouse table {table!r}; expected one of: {', '.join(TARGET_TABLES)}")


def get_load_position(conn: psycopg.Connection, table: str) -> Position | None:
    """The processed table version `table` has been loaded through; None if never loaded."""
    _check_table(table)
    row = conn.execute(
        sql.SQL("SELECT processed_table_id, processed_version, processed_committed_at FROM {} WHERE table_name = %s"
                ).format(_ident(META_SCHEMA, "load_state")),
        (table,),
    ).fetchone()
    return None if row is None else Position(row[0], int(row[1]), int(row[2]))


def loaded_row_count(conn: psycopg.Connection, table: str) -> int | None:
    """The rows `table` held after its last load (`set_load_state`, `set_loaded_row_count`); None if unknown (no
    load state yet, loaded before the count was recorded, or the warehouse was reset or rebuilt)."""
    _check_table(table)
    row = conn.execute(sql.SQL("SELECT row_count FROM {} WHERE table_name = %s").format(
        _ident(META_SCHEMA, "load_state")), (table,)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def set_loaded_row_count(conn: psycopg.Connection, table: str, row_count: int) -> None:
    """Record the rows `table` holds after a load that did not go through the processed zone (no position to
    record), so the next load starts from the right count. Does not commit."""
    _check_table(table)
    conn.execute(sql.SQL("UPDATE {} SET row_count = %s WHERE table_name = %s").format(
        _ident(META_SCHEMA, "load_state")), (row_count, table))


def set_load_state(conn: psycopg.Connection, table: str, position: Position, row_count: int | None = None) -> None:
    """Record that `table` is loaded through `position` of its processed table, holding `row_count` rows (None:
    unknown). Does not commit: call it in the merge's transaction so the state and the data commit (or roll back)
    together."""
    _check_table(table)
    if not isinstance(position, Position) or position.version < 0 or not position.table_id:
        raise ValueError(f"the load position of {table} must be a processed table's Position, got {position!r}")
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (table_name, processed_table_id, processed_version, processed_committed_at, row_count, "
            "loaded_at) VALUES (%s, %s, %s, %s, %s, now()) ON CONFLICT (table_name) DO UPDATE SET "
            "processed_table_id = EXCLUDED.processed_table_id, processed_version = EXCLUDED.processed_version, "
            "processed_committed_at = EXCLUDED.processed_committed_at, row_count = EXCLUDED.row_count, "
            "loaded_at = now()"
        ).format(_ident(META_SCHEMA, "load_state")),
        (table, position.table_id, position.version, position.committed_at, row_count),
    )


def reset_warehouse(conn: psycopg.Connection) -> None:
    """Empty the warehouse tables and the load state, keeping the schema (for a rebuild from the lake).

    Takes every table's load lock first (held until the caller commits), in one order, as a load and the checks
    take it before the table itself: a load in flight is waited for, and neither can deadlock with the rebuild."""
    with conn.transaction():
        for name in sorted(TARGET_TABLES):
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (table_lock_key(name),))
        conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY").format(
            sql.SQL(", ").join(_ident(TABLE_SCHEMA, name) for name in TARGET_TABLES)))
        conn.execute(sql.SQL("DELETE FROM {}").format(_ident(META_SCHEMA, "load_state")))
