"""The bulk-load levers of a fact load (plain psycopg, no Dagster): more memory for the transaction, foreign keys
and secondary indexes set aside around a big insert and put back once, all in the caller's transaction.
`loader._load_fact` decides when to pull them (`_load_kind`); the bench's floor uses them too."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from totesys_platform.star_schema import TargetTable
from totesys_platform.warehouse.schema import TABLE_SCHEMA

# Memory for a bulk load's sorts and hashes and for its index builds (SET LOCAL for the bulk load only, never
# lowered): with PostgreSQL's defaults (4 MB, 64 MB) they spill to disk from about 50,000 rows.
BULK_SETTINGS_KB = {"work_mem": 64 * 1024, "maintenance_work_mem": 256 * 1024}


@contextmanager
def memory_raised(conn: psycopg.Connection) -> Iterator[None]:
    """Raise the BULK_SETTINGS_KB settings that are lower for the rest of the transaction, then put them back."""
    current = dict(conn.execute(
        "SELECT name, setting::bigint FROM pg_settings WHERE name = ANY(%s) AND unit = 'kB'",
        (list(BULK_SETTINGS_KB),)).fetchall())
    raised = {name: kb for name, kb in BULK_SETTINGS_KB.items() if name in current and current[name] < kb}
    for name, kb in raised.items():
        conn.execute("SELECT set_config(%s, %s, true)", (name, f"{kb}kB"))
    yield
    for name in raised:
        conn.execute("SELECT set_config(%s, %s, true)", (name, f"{current[name]}kB"))


@contextmanager
def foreign_keys_validated_once(
    conn: psycopg.Connection, target: TargetTable, name_violations: Callable[[], None]
) -> Iterator[None]:
    """Drop the fact's foreign keys around a bulk insert and add them back, in the caller's transaction.

    PostgreSQL checks a foreign key with one trigger query per inserted row (about two thirds of a bulk
    fact load, measured); adding the constraint back validates every row with one set-based join
    instead. That validation is the reference check of a bulk load: if it fails, `name_violations`
    (the loader's reference check of the staged rows) names the dangling values and keys, and the caller rolls the whole
    transaction back, so the table never holds an unchecked row. The ALTERs lock the fact table, and the
    DROPs the dimensions it refers to (ACCESS EXCLUSIVE: they drop the key's triggers there), until commit:
    readers of either wait during a bulk load (an initial load or a catch-up).
    """
    fks = [(f"{target.name}_{c.name}_fkey", c.name, *c.references.split(".")) for c in target.columns if c.references]
    table = sql.Identifier(TABLE_SCHEMA, target.name)
    for name, *_ in fks:
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(table, sql.Identifier(name)))
    yield
    try:
        with conn.transaction():  # a savepoint, so the staged rows can still be read after a violation
            for name, column, ref_table, ref_column in fks:
                conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({})").format(
                    table, sql.Identifier(name), sql.Identifier(column), sql.Identifier(TABLE_SCHEMA, ref_table),
                    sql.Identifier(ref_column)))
    except psycopg.errors.ForeignKeyViolation:
        name_violations()  # raises, naming column, value and keys
        raise


@contextmanager
def indexes_built_after(
    conn: psycopg.Connection, target: TargetTable, name_violations: Callable[[], None], *, keys: bool
) -> Iterator[None]:
    """Drop the fact's plain secondary indexes (and, with `keys`, its primary key and its version key's UNIQUE
    constraint) around a bulk insert, then build them again, in the caller's transaction.

    Inserting a row updates every index of the table (9 to 11 per fact); building an index once over the loaded
    table sorts instead, several times cheaper for a big batch. The definitions (and comments) are read from
    the catalog (`pg_get_indexdef`, `pg_get_constraintdef`), so whatever indexes the table has are restored
    as they were. Kept in place unless `keys` (into an empty fact): the primary key and the version key (the
    merge's anti-join probes it). Always kept: other unique or constraint indexes,
    and clustered, invalid or non-default-tablespace ones. A failure before they are back leaves the caller
    a transaction to roll back, which restores them with the rows. The DROPs lock the table until commit,
    like the foreign-key lever.
    """
    table = sql.Identifier(TABLE_SCHEMA, target.name)
    indexes = conn.execute("""
        SELECT n.nspname, c.relname, pg_get_indexdef(i.indexrelid), obj_description(i.indexrelid, 'pg_class')
        FROM pg_index AS i
        JOIN pg_class AS c ON c.oid = i.indexrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE i.indrelid = format('%%I.%%I', %s::text, %s::text)::regclass
          AND NOT i.indisunique AND NOT i.indisprimary AND NOT i.indisexclusion AND NOT i.indisclustered
          AND i.indisvalid AND i.indisready AND c.reltablespace = 0
          AND NOT EXISTS (SELECT FROM pg_constraint AS k WHERE k.conindid = i.indexrelid)
        ORDER BY c.relname
    """, (TABLE_SCHEMA, target.name)).fetchall()
    constraints = conn.execute("""
        SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
        WHERE conrelid = format('%%I.%%I', %s::text, %s::text)::regclass
          AND (contype = 'p' OR contype = 'u' AND conname = %s)
        ORDER BY contype
    """, (TABLE_SCHEMA, target.name, f"{target.name}_version_key")).fetchall() if keys else []
    for name, _ in constraints:
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(table, sql.Identifier(name)))
    for schema, name, _, _ in indexes:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(schema, name)))
    yield
    # The definitions are the catalog's own SQL text for these objects, never anything from the data.
    try:
        with conn.transaction():  # a savepoint, so the staged rows can still be read after a violation
            for name, definition in constraints:
                conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                    table, sql.Identifier(name), sql.SQL(definition)))
    except psycopg.errors.UniqueViolation:
        name_violations()  # raises, naming the versions (record ids are unique)
        raise
    for schema, name, definition, comment in indexes:
        conn.execute(sql.SQL(definition))
        if comment is not None:
            conn.execute(sql.SQL("COMMENT ON INDEX {} IS {}").format(
                sql.Identifier(schema, name), sql.Literal(comment)))
