"""Warehouse sessions that share the database with analysts (plain logic, no Dagster).

Every session the platform opens on the warehouse has a lock timeout and a statement timeout: a bulk load
takes ACCESS EXCLUSIVE locks (on the fact, and on the dimensions it refers to while it sets its foreign keys
aside), so without them an analyst's open transaction on a fact or one of its dimensions would make the load wait
for ever, and every later reader queue behind the load. A load that times out changes nothing (its
transaction rolls back) and says which sessions held it up; the next run catches up.
"""

from __future__ import annotations

from typing import Mapping

import psycopg

from totesys_platform.connections import APPLICATION, connect
from totesys_platform.settings import positive_number
from totesys_platform.warehouse.schema import table_lock_key

# Defaults (settings.py): a minute of waiting for an analyst's lock; half an hour for one statement (an initial
# load at scale 100 takes about a minute in all).
LOCK_TIMEOUT_ENV, STATEMENT_TIMEOUT_ENV = "WAREHOUSE_LOCK_TIMEOUT_SECONDS", "WAREHOUSE_STATEMENT_TIMEOUT_SECONDS"
APPLICATION_NAME = f"{APPLICATION} warehouse"


class WarehouseConnectionError(RuntimeError):
    """The warehouse database cannot be reached; the message carries the URL without its password."""


class WarehouseLockTimeout(RuntimeError):
    """A load waited longer than the lock timeout for a lock another session holds; nothing was changed."""


class WarehouseStatementTimeout(RuntimeError):
    """A statement of a load ran longer than the statement timeout and was cancelled; nothing was changed."""


def session_timeouts(env: Mapping[str, str] | None = None) -> dict[str, float]:
    """The lock and statement timeouts (seconds) from the environment; ValueError naming a bad setting."""
    return {name: positive_number(name, env) for name in (LOCK_TIMEOUT_ENV, STATEMENT_TIMEOUT_ENV)}


def connect_warehouse(url: str, connect_timeout_s: int = 10) -> psycopg.Connection:
    """A connection to the warehouse at `url` (already resolved: see secrets.py) with the session timeouts set;
    a failure is a WarehouseConnectionError naming the URL without its password. UTF-8 whatever PGCLIENTENCODING
    says: a binary COPY's text is read in the client encoding (copy_in.py)."""
    timeouts = session_timeouts()
    conn = connect(url, purpose="warehouse", what="the warehouse at", setting="WAREHOUSE_DB_URL",
                   hint="Check WAREHOUSE_DB_URL and that the server is up", error=WarehouseConnectionError,
                   connect_timeout=connect_timeout_s, client_encoding="UTF8")
    # Session settings (is_local false), committed so that they outlive this first transaction.
    conn.execute("SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
                 (f"{round(timeouts[LOCK_TIMEOUT_ENV] * 1000)}ms", f"{round(timeouts[STATEMENT_TIMEOUT_ENV] * 1000)}ms"))
    conn.commit()
    return conn


def blocking_sessions(url: str, table: str, schema: str = "public") -> list[str]:
    """The other sessions of this database holding a lock on `schema.table`, on a table it refers to by a foreign
    key (a bulk load of a fact drops and re-adds its foreign keys, which locks the dimensions too), or the table's
    load lock (another load or a rebuild), each with what it holds and in which mode, described for an operator
    (oldest transaction first). Fields PostgreSQL hides from a role without pg_read_all_stats show as "?"."""
    with connect_warehouse(url, connect_timeout_s=5) as conn:
        rows = conn.execute("""
            WITH locked AS (
                SELECT to_regclass(%(table)s) AS relation
                UNION SELECT confrelid FROM pg_constraint WHERE conrelid = to_regclass(%(table)s) AND contype = 'f'
            )
            SELECT a.pid, a.usename, a.application_name, a.state, date_trunc('second', now() - a.xact_start),
                   a.query_start,
                   string_agg(DISTINCT CASE WHEN l.locktype = 'relation'
                                            THEN format('%%s (%%s)', l.relation::regclass, l.mode)
                                            ELSE %(load_lock)s END, ', ')
            FROM pg_locks AS l
            JOIN pg_stat_activity AS a ON a.pid = l.pid
            WHERE l.granted AND a.pid <> pg_backend_pid()
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND (l.locktype = 'relation' AND l.relation IN (SELECT relation FROM locked)
                   -- a bigint advisory key is held as its high and low 32 bits, objsubid 1
                   OR l.locktype = 'advisory' AND l.objsubid = 1
                      AND (l.classid::bigint << 32 | l.objid::bigint) = %(key)s)
            GROUP BY a.pid, a.usename, a.application_name, a.state, a.xact_start, a.query_start
            ORDER BY a.xact_start NULLS LAST
        """, {"table": f"{schema}.{table}", "key": table_lock_key(table),
              "load_lock": f"the load lock of {table} (a load or a rebuild)"}).fetchall()
    return [f"pid {pid} on {held} (user {user or '?'}, application {app or '?'}, {state or '?'}, transaction open "
            f"for {age if age is not None else '?'}, query started "
            f"{started.isoformat(timespec='seconds') if started else '?'})"
            for pid, user, app, state, age, started, held in rows]


def _describe_blockers(url: str, table: str) -> str | None:
    """The sessions holding a lock on `table` or the tables it refers to, on one line; None if there are none (or
    they cannot be listed: the error being explained matters more than this detail)."""
    try:
        blockers = blocking_sessions(url, table)
    except (psycopg.Error, WarehouseConnectionError):
        blockers = []
    return "; ".join(blockers) or None


def _first_cause(err: BaseException | None, kind: type[BaseException]) -> BaseException | None:
    """`err` or the first exception of its `__cause__` chain that is a `kind` (the loader wraps driver errors)."""
    while err is not None and not isinstance(err, kind):
        err = err.__cause__
    return err


def lock_timeout_error(url: str, table: str) -> WarehouseLockTimeout:
    """The error a load that timed out waiting for a lock on `table` raises: who held it, and what to do."""
    wait = session_timeouts()[LOCK_TIMEOUT_ENV]
    held_by = _describe_blockers(url, table) or "a session that has ended since"
    return WarehouseLockTimeout(
        f"{table}: the load waited {wait:g} s for a lock, held by {held_by}. Nothing was changed; "
        f"the next run catches up. Ask that session to commit or roll back (or end it: SELECT "
        f"pg_terminate_backend(pid)), or raise {LOCK_TIMEOUT_ENV}")


def statement_timeout_error(url: str, table: str) -> WarehouseStatementTimeout:
    """The error a load cancelled by the statement timeout raises. The statement may have been waiting for a
    lock (a statement timeout shorter than the lock timeout), so the sessions holding the table are named too."""
    limit = session_timeouts()[STATEMENT_TIMEOUT_ENV]
    blockers = _describe_blockers(url, table)
    held = f" Sessions holding a lock on the table or its dimensions: {blockers}." if blockers else ""
    return WarehouseStatementTimeout(
        f"{table}: a statement of the load ran longer than the statement timeout ({limit:g} s) and was "
        f"cancelled. Nothing was changed; the next run catches up.{held} If a session holds the table, ask it to "
        f"commit or roll back (or end it: SELECT pg_terminate_backend(pid)); if the load itself needs longer (a "
        f"first load of a large source), raise {STATEMENT_TIMEOUT_ENV}")


def timeout_error(url: str, table: str, err: BaseException) -> RuntimeError | None:
    """The operator's error for a load of `table` that failed with `err`, if a session timeout ended it: the
    lock timeout (SQLSTATE 55P03) or the statement timeout (57014 with that reason; a cancel by another session,
    pg_cancel_backend, keeps its own message). None for any other failure."""
    if _first_cause(err, psycopg.errors.LockNotAvailable) is not None:
        return lock_timeout_error(url, table)
    cancelled = _first_cause(err, psycopg.errors.QueryCanceled)
    if cancelled is not None and "statement timeout" in (cancelled.diag.message_primary or ""):
        return statement_timeout_error(url, table)
    return None


__all__ = ["APPLICATION_NAME", "LOCK_TIMEOUT_ENV", "STATEMENT_TIMEOUT_ENV", "WarehouseConnectionError",
           "WarehouseLockTimeout", "WarehouseStatementTimeout", "blocking_sessions", "connect_warehouse",
           "lock_timeout_error", "session_timeouts", "statement_timeout_error", "timeout_error"]
