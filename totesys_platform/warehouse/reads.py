"""Warehouse tables read back as Arrow, typed per star_schema, via COPY TO STDOUT (plain psycopg, no Dagster)."""

from __future__ import annotations

import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg import sql

from totesys_platform.warehouse.loader import (
    WarehouseLoadError,
    _cols,
    _describe_db_error,
    target_table,
)
from totesys_platform.warehouse.schema import TABLE_SCHEMA


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


def read_query(conn: psycopg.Connection, query: sql.Composable, schema: pa.Schema, what: str,
               params: tuple | None = None) -> pa.Table:
    """The rows of a SELECT (columns in `schema` order) as Arrow, via COPY TO STDOUT (CSV) parsed by pyarrow.
    `params` are the query's values (COPY takes no server-side parameters: psycopg adapts them client-side)."""
    copy = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, ENCODING 'UTF8')").format(query)
    chunks: list[bytes] = []
    try:
        with conn.transaction():
            # Dates must print as ISO whatever the server's DateStyle is; SET LOCAL keeps this to our transaction.
            conn.execute("SELECT set_config('DateStyle', 'ISO, YMD', true)")
            with conn.cursor().copy(copy, params) as copier:
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
