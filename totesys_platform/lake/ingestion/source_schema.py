"""The live source schema against the contract: what extraction may read, and what it must refuse.

Plain Python, no Dagster. A contract column dropped, renamed, retyped or with other nullability, a
missing table or a primary key that moved stops that table (`SourceError`, every difference listed); the
other tables are extracted as usual. A column
the source has and the contract does not is archived too (the ingestion zone evolves its schema), with
an Arrow type that holds its values exactly; it reaches the warehouse only when the model uses it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import psycopg
import pyarrow as pa

from totesys_platform.source import contract

SOURCE_SCHEMA = "public"

_CATALOG_SQL = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       EXISTS (SELECT 1 FROM pg_index i
               WHERE i.indrelid = c.oid AND i.indisprimary AND i.indnatts = 1 AND i.indkey[0] = a.attnum)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND c.relname = ANY(%s)
ORDER BY c.relname, a.attnum
"""

_EXACT_TYPES = {
    "smallint": pa.int16(),
    "integer": pa.int32(),
    "bigint": pa.int64(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "real": pa.float32(),
    "double precision": pa.float64(),
    "text": pa.string(),
}
_NUMERIC = re.compile(r"^numeric\((\d+),(\d+)\)$")
_TIMESTAMP = re.compile(r"^timestamp(?:\((\d)\))? without time zone$")


class SourceError(RuntimeError):
    """The source cannot be extracted: unreachable, a table missing, schema drift, a value that does not
    convert. The message names the table and column and says what to do."""


def arrow_type_for(pg_type: str) -> pa.DataType:
    """An Arrow type holding every value of a column of PostgreSQL type `pg_type` (as format_type prints it)
    exactly; text for anything without an exact equivalent (unbounded numeric, time zones, json, enums...)."""
    if pg_type in _EXACT_TYPES:
        return _EXACT_TYPES[pg_type]
    if match := _NUMERIC.match(pg_type):
        precision, scale = int(match.group(1)), int(match.group(2))
        if precision <= 38:
            return pa.decimal128(precision, scale)
    if match := _TIMESTAMP.match(pg_type):
        return pa.timestamp("ms" if match.group(1) and int(match.group(1)) <= 3 else "us")
    return pa.string()  # _VARCHAR, and everything kept as its text form


def _nullability(nullable: bool) -> str:
    return "nullable" if nullable else "NOT NULL"


def contract_tables(tables: Sequence[str]) -> list[contract.SourceTable]:
    if isinstance(tables, str):
        raise TypeError("tables must be a sequence of table names, not one string")
    unknown = [t for t in tables if t not in contract.SOURCE_TABLES]
    if unknown:
        raise ValueError(
            f"not totesys contract tables: {', '.join(map(repr, unknown))}; "
            f"extraction reads only {', '.join(contract.TABLE_NAMES)}"
        )
    return [contract.SOURCE_TABLES[t] for t in dict.fromkeys(tables)]


@dataclass(frozen=True)
class LiveTable:
    """A contract table as the source has it now: the contract's columns, then any the source added."""

    table: contract.SourceTable  # the contract columns followed by the added ones (nullable, mapped types)
    added: tuple[tuple[str, str], ...]  # (column, PostgreSQL type) of the columns outside the contract

    @property
    def name(self) -> str:
        return self.table.name


def schema_problems(conn: psycopg.Connection, tables: Sequence[str]) -> tuple[dict[str, LiveTable], dict[str, list[str]]]:
    """Compare the live catalog with the contract: each table as the source has it (those that can be read),
    and the differences that stop a table, by table.

    Columns the source has beyond the contract are not a difference: they are archived too."""
    wanted = contract_tables(tables)
    rows = conn.execute(_CATALOG_SQL, (SOURCE_SCHEMA, [t.name for t in wanted])).fetchall()
    live: dict[str, dict[str, tuple[str, bool, bool]]] = {}
    for table, column, pg_type, not_null, is_pk in rows:
        live.setdefault(table, {})[column] = (pg_type, not not_null, is_pk)

    problems: dict[str, list[str]] = {}
    result: dict[str, LiveTable] = {}
    for table in wanted:
        columns = live.get(table.name)
        found = problems.setdefault(table.name, [])
        if columns is None:
            found.append(f"table {SOURCE_SCHEMA}.{table.name} is missing (or not visible to this user): restore it or "
                         "grant access to it")
            continue
        for col in table.columns:
            if col.name not in columns:
                found.append(f"{table.name}.{col.name}: column dropped or renamed (the contract expects {col.pg_type}, "
                             f"{_nullability(col.nullable)})")
                continue
            pg_type, nullable, _ = columns[col.name]
            if pg_type != col.pg_type:
                found.append(f"{table.name}.{col.name}: column retyped to {pg_type} (the contract says {col.pg_type})")
            if nullable != col.nullable:
                found.append(f"{table.name}.{col.name}: column is {_nullability(nullable)} in the source "
                             f"(the contract says {_nullability(col.nullable)})")
        pk = table.primary_key
        if pk in columns and not columns[pk][2]:
            found.append(f"{table.name}.{pk}: is not the table's primary key (the contract requires it)")
        added = tuple((name, pg_type) for name, (pg_type, _, _) in columns.items() if name not in table.column_names)
        extra = tuple(contract.Column(name, pg_type, arrow_type_for(pg_type), True) for name, pg_type in added)
        if not found:
            result[table.name] = LiveTable(contract.SourceTable(table.name, table.columns + extra), added)
    return result, {t: p for t, p in problems.items() if p}


def schema_error(table: str, problems: list[str]) -> SourceError:
    return SourceError(
        f"{table}: the totesys source schema does not match the data contract; nothing was extracted for {table} "
        "(the other tables go on):\n  - " + "\n  - ".join(problems)
        + "\nFix the source database, or change totesys_platform/source/contract.py (and the pipeline after it) "
        "to the new schema, then rerun."
    )


def validate_source_schema(conn: psycopg.Connection, tables: Sequence[str]) -> None:
    """SourceError (the first table's, in the given order) if the live schema of `tables` breaks the contract."""
    _, problems = schema_problems(conn, tables)
    for table in tables:
        if table in problems:
            raise schema_error(table, problems[table])


__all__ = ["LiveTable", "SOURCE_SCHEMA", "SourceError", "arrow_type_for", "contract_tables", "schema_error",
           "schema_problems", "validate_source_schema"]
