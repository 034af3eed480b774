"""Load one Arrow table into a warehouse table: COPY into a staging table, then one set-based merge.

Plain psycopg, no Dagster. Two modes, one per kind of table (contract rules 5 and 6):

- ``upsert`` (dimensions): new keys are inserted, keys whose values differ are updated, equal rows are left
  untouched (not even rewritten). Within one batch the last row of a key wins.
- ``append_versions`` (facts): a version, i.e. (natural id, last_updated_date, last_updated_time), is
  inserted once; its later arrivals are ignored. Identical duplicates in one batch collapse; two different
  rows for the same version in one batch are an error.

Before a fact is merged, every foreign key is checked against the dimensions (one anti-join per key), so a
dangling reference is reported by table, column, value and natural key rather than as a constraint name.

The caller owns the transaction: `load_table` never commits, and after any failure the caller rolls back,
which leaves the target exactly as it was.
"""

from __future__ import annotations

from contextlib import contextmanager

from dataclasses import dataclass
from typing import Literal

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from psycopg import sql
from psycopg.pq import TransactionStatus

from totesys_platform.star_schema import TARGET_TABLES, TargetTable
from totesys_platform.warehouse.schema import TABLE_SCHEMA, column_type

Mode = Literal["upsert", "append_versions"]
MODES: tuple[str, ...] = ("upsert", "append_versions")
MODE_FOR_KIND = {"dimension": "upsert", "fact": "append_versions"}

COPY_CHUNK_ROWS = 50_000  # rows rendered to CSV per COPY write: bounds memory, keeps writes large
_SAMPLE = 5  # how many offending keys an error message quotes
_ROW_ORDER = "_staged_row"  # staging-only column: arrival order, for "last one wins"


class WarehouseLoadError(RuntimeError):
    """A load was refused or failed; the message names the table, the key(s) and column, and what to do."""


@dataclass(frozen=True)
class LoadStats:
    table: str
    staged: int  # rows received (duplicates included)
    inserted: int
    updated: int  # always 0 for facts
    unchanged: int  # distinct keys (dimension) or versions (fact) already present with these values


@dataclass(frozen=True)
class WarehouseBatch:
    """What a warehouse asset returns: the rows to merge and, if they came from the processed zone, the
    batch sequence they run through (recorded in totesys_meta.load_state in the merge's transaction)."""

    data: pa.Table
    processed_seq: int | None = None


def target_table(table: str) -> TargetTable:
    try:
        return TARGET_TABLES[table]
    except KeyError:
        raise WarehouseLoadError(
            f"unknown warehouse table {table!r}; expected one of: {', '.join(TARGET_TABLES)}") from None


def check_mode(table: str, mode: object) -> Mode:
    """The mode must be given and must be the one the contract prescribes for the table's kind."""
    target = target_table(table)
    expected = MODE_FOR_KIND[target.kind]
    if mode not in MODES:
        raise WarehouseLoadError(
            f"{table}: unknown load mode {mode!r}; use {expected!r} ({target.kind}s are "
            f"{'upserted' if target.kind == 'dimension' else 'append-only history'})")
    if mode != expected:
        raise WarehouseLoadError(
            f"{table} is a {target.kind}: its load mode is {expected!r}, not {mode!r}")
    return mode  # type: ignore[return-value]


def check_schema(table: str, data: pa.Table) -> None:
    """`data` must have the target's columns, in order, with its Arrow types (nullability flags aside)."""
    target = target_table(table)
    if not isinstance(data, pa.Table):
        raise WarehouseLoadError(f"{table}: expected a pyarrow.Table, got {type(data).__name__}")
    expected = target.arrow_schema
    actual = data.schema
    problems = []
    missing = [n for n in expected.names if n not in actual.names]
    extra = [n for n in actual.names if n not in expected.names]
    duplicated = sorted({n for n in actual.names if actual.names.count(n) > 1})
    if duplicated:
        raise WarehouseLoadError(f"{table}: the data has duplicate column name(s) {', '.join(duplicated)}")
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected column(s) {', '.join(extra)}")
    for field in expected:
        if field.name in actual.names and actual.field(field.name).type != field.type:
            problems.append(f"column {field.name} is {actual.field(field.name).type}, expected {field.type}")
    if not problems and actual.names != expected.names:
        problems.append(f"columns are in the order {actual.names}, expected {expected.names}")
    if problems:
        raise WarehouseLoadError(
            f"{table}: the data does not match the warehouse schema: {'; '.join(problems)}. "
            f"Produce it with star_schema.TARGET_TABLES[{table!r}].arrow_schema")


def _check_not_null(target: TargetTable, data: pa.Table) -> None:
    for col in target.columns:
        if col.nullable or data.column(col.name).null_count == 0:
            continue
        column = data.column(col.name)
        keys = data.column(target.natural_key).filter(pc.is_null(column)).to_pylist()[:_SAMPLE]
        raise WarehouseLoadError(
            f"{target.name}: column {col.name} is NOT NULL but {column.null_count} row(s) have NULL "
            f"({target.natural_key} {', '.join(map(str, keys))}). Fix the processed data; nothing was loaded")


def _check_transaction(conn: psycopg.Connection, table: str) -> None:
    if conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE:
        raise WarehouseLoadError(
            f"{table}: load_table needs a transaction it does not own: use a connection with autocommit off, "
            "or call it inside `with conn.transaction():`, then commit or roll back yourself")


def load_table(conn: psycopg.Connection, table: str, data: pa.Table, mode: Mode) -> LoadStats:
    """Merge `data` into warehouse table `table` in the caller's transaction (never commits)."""
    target = target_table(table)
    check_mode(table, mode)
    check_schema(table, data)
    _check_not_null(target, data)
    if data.num_rows == 0:
        return LoadStats(table, 0, 0, 0, 0)
    _check_transaction(conn, table)
    try:
        staging = _stage(conn, target, data)
        if target.kind == "fact":
            _check_version_conflicts(conn, target, staging)
            _check_references(conn, target, staging)
            if data.num_rows >= BULK_ROWS:
                with _foreign_keys_validated_once(conn, target):
                    inserted, unchanged = _merge_versions(conn, target, staging)
            else:
                inserted, unchanged = _merge_versions(conn, target, staging)
            updated = 0
        else:
            inserted, updated, unchanged = _merge_upsert(conn, target, staging)
        conn.execute(sql.SQL("DROP TABLE {}").format(staging))
    except psycopg.Error as err:
        raise WarehouseLoadError(
            f"{table}: the warehouse refused the load: {_describe_db_error(err)}. Nothing is merged once the "
            "transaction is rolled back; fix the cause and rerun") from err
    return LoadStats(table, data.num_rows, inserted, updated, unchanged)


def _describe_db_error(err: psycopg.Error) -> str:
    diag = err.diag
    text = diag.message_primary or str(err).strip()
    for extra in (diag.message_detail, diag.context):
        if extra:
            text += f" ({extra.strip()})"
    return text


def _stage(conn: psycopg.Connection, target: TargetTable, data: pa.Table) -> sql.Identifier:
    """COPY `data` into a new temp table (dropped at commit at the latest) and return its name."""
    staging = sql.Identifier(f"_staging_{target.name}")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(staging))
    columns = [sql.SQL("{} {}").format(sql.Identifier(c.name), column_type(c.sql_type)) for c in target.columns]
    conn.execute(sql.SQL("CREATE TEMP TABLE {} ({}, {} bigint GENERATED ALWAYS AS IDENTITY) ON COMMIT DROP").format(
        staging, sql.SQL(", ").join(columns), sql.Identifier(_ROW_ORDER)))
    copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, ENCODING 'UTF8')").format(
        staging, sql.SQL(", ").join(map(sql.Identifier, target.column_names)))
    # Every non-NULL value is quoted, NULL is an unquoted empty field: PostgreSQL's CSV rules then keep
    # NULL and "" apart. Arrow renders date32, time32[ms], decimal128 and bool in forms COPY accepts.
    options = pa_csv.WriteOptions(include_header=False, quoting_style="all_valid")
    with conn.cursor().copy(copy) as copier:
        for batch in data.to_batches(max_chunksize=COPY_CHUNK_ROWS):
            sink = pa.BufferOutputStream()
            pa_csv.write_csv(batch, sink, options)
            copier.write(sink.getvalue())
    return staging


def _cols(names, prefix: str | None = None) -> sql.Composable:
    if prefix is None:
        return sql.SQL(", ").join(sql.Identifier(n) for n in names)
    return sql.SQL(", ").join(sql.Identifier(prefix, n) for n in names)


def _merge_upsert(conn: psycopg.Connection, target: TargetTable, staging: sql.Identifier) -> tuple[int, int, int]:
    key = target.natural_key
    values = [n for n in target.column_names if n != key]
    statement = sql.SQL("""
        WITH latest AS (
            SELECT DISTINCT ON ({key}) {cols} FROM {staging} ORDER BY {key}, {row_order} DESC
        ), written AS (
            INSERT INTO {target} AS t ({cols}) SELECT {cols} FROM latest
            ON CONFLICT ({key}) DO UPDATE SET {assignments}
            WHERE ROW({old}) IS DISTINCT FROM ROW({new})
            -- a row version created by this INSERT has xmax 0; one rewritten by DO UPDATE does not
            RETURNING (t.xmax = 0) AS inserted
        )
        SELECT (SELECT count(*) FROM latest), count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted)
        FROM written
    """).format(
        key=sql.Identifier(key), cols=_cols(target.column_names), staging=staging,
        row_order=sql.Identifier(_ROW_ORDER), target=sql.Identifier(TABLE_SCHEMA, target.name),
        assignments=sql.SQL(", ").join(
            sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(n), sql.Identifier(n)) for n in values),
        old=_cols(values, "t"), new=_cols(values, "excluded"),
    )
    distinct, inserted, updated = conn.execute(statement).fetchone()
    return inserted, updated, distinct - inserted - updated


def _check_version_conflicts(conn: psycopg.Connection, target: TargetTable, staging: sql.Identifier) -> None:
    key = target.version_key
    rows = conn.execute(sql.SQL("""
        SELECT {key}, count(*) FROM (SELECT DISTINCT {cols} FROM {staging}) AS versions
        GROUP BY {key} HAVING count(*) > 1 ORDER BY {key} LIMIT %s
    """).format(key=_cols(key), cols=_cols(target.column_names), staging=staging), (_SAMPLE,)).fetchall()
    if rows:
        described = "; ".join(
            f"{nk} at {d} {t.isoformat(timespec='milliseconds')} ({n} variants)" for nk, d, t, n in rows)
        raise WarehouseLoadError(
            f"{target.name}: one batch holds different rows for the same version "
            f"({key[0]}, last_updated): {described}. Each version must have one content: fix the processed "
            "zone batch (the transform should keep one row per version)")


def _check_references(conn: psycopg.Connection, target: TargetTable, staging: sql.Identifier) -> None:
    """One anti-join per foreign key: every referenced dimension row (dates included) must exist."""
    problems = []
    for col in (c for c in target.columns if c.references):
        dim_table, dim_col = col.references.split(".")
        rows = conn.execute(sql.SQL("""
            SELECT s.{col}::text, count(*), (array_agg(DISTINCT s.{nk} ORDER BY s.{nk}))[1:%s]
            FROM {staging} AS s
            WHERE NOT EXISTS (SELECT 1 FROM {dim} AS d WHERE d.{dim_col} = s.{col})
            GROUP BY s.{col} ORDER BY s.{col} LIMIT %s
        """).format(
            col=sql.Identifier(col.name), nk=sql.Identifier(target.natural_key), staging=staging,
            dim=sql.Identifier(TABLE_SCHEMA, dim_table), dim_col=sql.Identifier(dim_col),
        ), (_SAMPLE, _SAMPLE)).fetchall()
        for missing, count, keys in rows:
            problems.append(
                f"column {col.name} = {missing} is not in {dim_table}.{dim_col} "
                f"({count} row(s), {target.natural_key} {', '.join(map(str, keys))})")
    if problems:
        raise WarehouseLoadError(
            f"{target.name}: dangling reference(s) to dimensions: {'; '.join(problems)}. Load the dimensions "
            "before the facts (contract rule 7) or fix the processed data; nothing was merged")


# From this many staged fact rows on, foreign keys are checked once for the whole table instead of per row.
BULK_ROWS = 20_000


@contextmanager
def _foreign_keys_validated_once(conn: psycopg.Connection, target: TargetTable) -> Iterator[None]:
    """Drop the fact's foreign keys around a bulk insert and add them back, in the caller's transaction.

    PostgreSQL checks a foreign key with one trigger query per inserted row (about two thirds of a bulk
    fact load, measured); adding the constraint back validates every row with one set-based join
    instead. The staged rows were already checked by `_check_references`, and the whole transaction
    rolls back if the validation fails, so the table never holds an unchecked row. The ALTERs lock the
    fact table until commit: readers wait during a bulk load (an initial load or a catch-up).
    """
    fks = [(f"{target.name}_{c.name}_fkey", c.name, *c.references.split(".")) for c in target.columns if c.references]
    table = sql.Identifier(TABLE_SCHEMA, target.name)
    for name, *_ in fks:
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(table, sql.Identifier(name)))
    yield
    for name, column, ref_table, ref_column in fks:
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({})").format(
            table, sql.Identifier(name), sql.Identifier(column), sql.Identifier(TABLE_SCHEMA, ref_table),
            sql.Identifier(ref_column)))


def _merge_versions(conn: psycopg.Connection, target: TargetTable, staging: sql.Identifier) -> tuple[int, int]:
    natural, date_col, time_col = target.version_key
    statement = sql.SQL("""
        WITH versions AS (
            SELECT DISTINCT {cols} FROM {staging}
        ), written AS (
            -- The anti-join skips known versions without drawing record ids (no gaps on reruns);
            -- ON CONFLICT still covers a concurrent loader inserting the same version.
            INSERT INTO {target} ({cols})
            SELECT {cols} FROM versions AS v
            WHERE NOT EXISTS (SELECT 1 FROM {target} AS f WHERE f.{nk} = v.{nk} AND f.{d} = v.{d} AND f.{t} = v.{t})
            ORDER BY {d}, {t}, {nk}
            ON CONFLICT ({nk}, {d}, {t}) DO NOTHING
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM versions), (SELECT count(*) FROM written)
    """).format(
        cols=_cols(target.column_names), staging=staging, target=sql.Identifier(TABLE_SCHEMA, target.name),
        nk=sql.Identifier(natural), d=sql.Identifier(date_col), t=sql.Identifier(time_col),
    )
    distinct, inserted = conn.execute(statement).fetchone()
    return inserted, distinct - inserted


def warehouse_arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema of a warehouse table as stored: a fact's surrogate record id (int64) comes first."""
    target = target_table(table)
    fields = list(target.arrow_schema)
    if target.kind == "fact":
        fields.insert(0, pa.field(target.surrogate_key, pa.int64(), nullable=False))
    return pa.schema(fields)


def read_table(conn: psycopg.Connection, table: str) -> pa.Table:
    """The whole warehouse table as Arrow, typed per star_schema, via COPY TO STDOUT (CSV) parsed by pyarrow."""
    schema = warehouse_arrow_schema(table)
    target = target_table(table)
    order = target.surrogate_key or target.natural_key
    query = sql.SQL("SELECT {cols} FROM {table} ORDER BY {order}").format(
        cols=_cols(schema.names), table=sql.Identifier(TABLE_SCHEMA, table), order=sql.Identifier(order))
    return read_query(conn, query, schema, table)


def read_query(conn: psycopg.Connection, query: sql.Composable, schema: pa.Schema, what: str) -> pa.Table:
    """The rows of a SELECT (columns in `schema` order) as Arrow, via COPY TO STDOUT (CSV) parsed by pyarrow."""
    copy = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, ENCODING 'UTF8')").format(query)
    chunks: list[bytes] = []
    try:
        with conn.transaction():
            # Dates must print as ISO whatever the server's DateStyle is; SET LOCAL keeps this to our transaction.
            conn.execute("SELECT set_config('DateStyle', 'ISO, YMD', true)")
            with conn.cursor().copy(copy) as copier:
                chunks.extend(bytes(chunk) for chunk in copier)
    except psycopg.Error as err:
        raise WarehouseLoadError(f"{what}: cannot read the warehouse table: {_describe_db_error(err)}") from err
    if not chunks:
        return schema.empty_table()
    # COPY CSV writes NULL as an unquoted empty field and "" quoted: only the former may become null.
    parsed = pa_csv.read_csv(
        pa.py_buffer(b"".join(chunks)),
        read_options=pa_csv.ReadOptions(column_names=schema.names),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types=schema, null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False,
            true_values=["t"], false_values=["f"]),
    )
    return parsed.cast(schema)
