"""The totesys source read from one snapshot: read-only REPEATABLE READ connections, the exported snapshot other
connections share, and one whole table read for the hourly reconciliation.

Plain Python, no Dagster. docs/extraction.md ("One snapshot per run") explains why every table of a run comes
from one snapshot.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta
from typing import Callable, Iterator, Sequence

import psycopg
import pyarrow as pa
from psycopg import sql

from totesys_platform.connections import connect, driver_message as _driver_message
from totesys_platform.lake.ingestion.copy_arrow import copy_query, csv_batches
from totesys_platform.lake.ingestion.source_schema import (
    SOURCE_SCHEMA, LiveTable, SourceError, contract_tables, schema_error, schema_problems,
)
from totesys_platform.redaction import redact_url
from totesys_platform.source import contract


def connect_source(source_url: str, connect_timeout: float) -> psycopg.Connection:
    return connect(source_url, purpose="extract", what="the totesys source database", setting="TOTESYS_DB_URL",
                   hint="Check TOTESYS_DB_URL, that the server is running and reachable from here, and the credentials.",
                   error=SourceError, connect_timeout=connect_timeout, client_encoding="UTF8")


def export_snapshot(conn: psycopg.Connection, tables: Sequence[LiveTable],
                     source_url: str) -> tuple[str, list[LiveTable]]:
    """The exported id of the connection's snapshot, and `tables` largest first (by the statistics' row
    counts: unlike pg_relation_size, reading them takes no lock, so a table locked by someone else holds up
    only its own read)."""
    try:
        exported = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        sizes = dict(conn.execute(
            "SELECT c.relname, greatest(c.reltuples, s.n_live_tup, 0) FROM pg_class AS c "
            "JOIN pg_namespace AS n ON n.oid = c.relnamespace LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid "
            "WHERE n.nspname = %s AND c.relname = ANY(%s)",
            (SOURCE_SCHEMA, [t.name for t in tables])).fetchall())
    except psycopg.Error as err:
        raise SourceError(
            f"cannot share the snapshot of {redact_url(source_url)} with more reading connections: "
            f"{_driver_message(err, source_url)}. Extract with one connection (connections: 1)"
        ) from None
    return exported, sorted(tables, key=lambda t: -sizes.get(t.name, 0))


def session_settings(conn: psycopg.Connection, statement_timeout: timedelta) -> None:
    conn.execute("SET LOCAL DateStyle = ISO")
    conn.execute("SELECT set_config('statement_timeout', %s, true)", (str(statement_timeout // timedelta(milliseconds=1)),))


@contextmanager
def read_only_transaction(source_url: str, connect_timeout: float,
                          before: Callable[[psycopg.Connection], None] | None = None) -> Iterator[psycopg.Connection]:
    """A new connection inside a read-only REPEATABLE READ transaction (one snapshot); closed on exit. `before`
    runs on the connection first, in a transaction of its own that ends before the snapshot's begins."""
    conn = connect_source(source_url, connect_timeout)
    try:
        if before is not None:
            before(conn)
            conn.rollback()
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            yield conn
    finally:
        conn.close()


@contextmanager
def source_snapshot(source_url: str, tables: Sequence[contract.SourceTable], connect_timeout: float,
                    statement_timeout: timedelta, before: Callable[[psycopg.Connection], None] | None = None,
                    ) -> Iterator[tuple[psycopg.Connection, str, dict[str, LiveTable], dict[str, list[str]]]]:
    """A connection inside one read-only REPEATABLE READ transaction (one snapshot for every read), with ISO
    dates and the statement timeout set; the snapshot; `tables` as the source has them (those that match the
    contract); and the differences from the contract of those that do not. `before` runs on the connection
    before the snapshot is taken (what it reads is older than the snapshot)."""

    def guarded(conn: psycopg.Connection) -> None:
        try:
            before(conn)
        except psycopg.Error as err:
            raise SourceError(
                f"reading the statistics of {redact_url(source_url)} failed: {_driver_message(err, source_url)}"
            ) from None

    with read_only_transaction(source_url, connect_timeout, guarded if before else None) as conn:
        try:
            session_settings(conn, statement_timeout)
            live, problems = schema_problems(conn, [t.name for t in tables])
            snapshot = conn.execute("SELECT pg_current_snapshot()::text").fetchone()[0]
        except psycopg.Error as err:
            raise SourceError(
                f"reading the schema of {redact_url(source_url)} failed: {_driver_message(err, source_url)}"
            ) from None
        yield conn, snapshot, live, problems


@contextmanager
def snapshot_reader(source_url: str, exported: str, connect_timeout: float,
                    statement_timeout: timedelta) -> Iterator[psycopg.Connection]:
    """Another connection in a read-only REPEATABLE READ transaction on the exported snapshot `exported`."""
    with read_only_transaction(source_url, connect_timeout) as conn:
        try:
            # Before any other statement. The id comes from the server's pg_export_snapshot(); SET takes no
            # bound parameters.
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(exported)))
            session_settings(conn, statement_timeout)
        except psycopg.Error as err:
            raise SourceError(
                f"cannot open another reading connection on the extraction's snapshot at "
                f"{redact_url(source_url)}: {_driver_message(err, source_url)}. Extract with one connection "
                "(connections: 1)"
            ) from None
        yield conn


def read_source_table(source_url: str, table_name: str, *, connect_timeout: float = 10,
                      statement_timeout: timedelta = timedelta(minutes=30),
                      id_range: tuple[int, int] | None = None) -> pa.Table:
    """Every row of one contract table (or those whose id is in `id_range`, [low, high)), with the contract's
    types, from one read-only snapshot (for the hourly reconciliation; extraction never holds a whole table)."""
    (table,) = contract_tables([table_name])
    with source_snapshot(source_url, [table], connect_timeout, statement_timeout) as (conn, _, _, problems):
        if table_name in problems:
            raise schema_error(table_name, problems[table_name])
        try:
            query = copy_query(table, False, id_range=id_range is not None)
            with conn.cursor() as cur, cur.copy(query, id_range) as copy:
                batches = list(csv_batches(copy, table))
        except psycopg.Error as err:
            raise SourceError(
                f"reading {table.name} from {redact_url(source_url)} failed: {_driver_message(err, source_url)}"
            ) from None
    return pa.Table.from_batches(batches, schema=table.arrow_schema)


__all__ = ["connect_source", "export_snapshot", "read_only_transaction", "read_source_table", "session_settings",
           "snapshot_reader", "source_snapshot"]
