"""A source table's rows as Arrow batches: COPY ... TO STDOUT (FORMAT csv), streamed and typed.

Plain Python, no Dagster. Memory is one block of about 1 MiB plus its parsed batch, whatever the table's
size (see docs/extraction.md, "Types and streaming").
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql

from totesys_platform.lake.ingestion.source_schema import SOURCE_SCHEMA, SourceError
from totesys_platform.source import contract

# Bytes of COPY output parsed at a time; with one batch of rows, this bounds the extraction's memory.
CSV_BLOCK_BYTES = 1024 * 1024


def copy_query(table: contract.SourceTable, filtered: bool, or_also: sql.Composable | None = None, *,
               id_range: bool = False) -> sql.Composed:
    """COPY of `table`'s columns, in last_updated order; with `filtered`, from the bound `last_updated >= %s`,
    and the rows `or_also` selects (its parameters follow); with `id_range` instead, the ids in the bound
    `[%s, %s)`."""
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in table.column_names)
    where = sql.SQL("")
    if id_range:
        where = sql.SQL(" WHERE {pk} >= %s AND {pk} < %s").format(pk=sql.Identifier(table.primary_key))
    elif filtered:
        where = sql.SQL(" WHERE {} >= %s").format(sql.Identifier("last_updated"))
        if or_also is not None:
            where = sql.SQL("{} OR {}").format(where, or_also)
    return sql.SQL("COPY (SELECT {columns} FROM {table}{where} ORDER BY {lu}, {pk}) TO STDOUT (FORMAT csv)").format(
        columns=columns,
        table=sql.Identifier(SOURCE_SCHEMA, table.name),
        where=where,
        lu=sql.Identifier("last_updated"),
        pk=sql.Identifier(table.primary_key),
    )


def _csv_options(table: contract.SourceTable):
    schema = table.arrow_schema
    read = pacsv.ReadOptions(column_names=schema.names, use_threads=False, block_size=2 * CSV_BLOCK_BYTES)
    # PostgreSQL CSV: quoted values may span lines; NULL is an unquoted empty field, '' is a quoted one.
    parse = pacsv.ParseOptions(newlines_in_values=True)
    convert = pacsv.ConvertOptions(
        column_types=schema,
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        true_values=["t"],
        false_values=["f"],
    )
    return read, parse, convert


_CSV_COLUMN = re.compile(r"CSV column #(\d+)")


def _conversion_error(table: contract.SourceTable, err: pa.ArrowException) -> SourceError:
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    match = _CSV_COLUMN.search(message)
    if match and int(match.group(1)) < len(table.columns):
        col = table.columns[int(match.group(1))]
        detail = message.split(": ", 1)[-1] if ": " in message else message
        detail = detail.split(": ", 1)[-1] if detail.startswith("Row #") else detail
        return SourceError(
            f"{table.name}.{col.name}: a source value does not convert to {col.arrow_type} ({detail}); nothing was "
            f"committed for {table.name}. Fix the value in the source, or the contract if the column's meaning "
            "changed, then rerun."
        )
    return SourceError(f"{table.name}: the COPY output could not be parsed ({message}); nothing was committed for it")


def _conform(table: contract.SourceTable, batch: pa.RecordBatch) -> pa.RecordBatch:
    schema = table.arrow_schema
    for field, column in zip(schema, batch.columns):
        if not field.nullable and column.null_count:
            raise SourceError(
                f"{table.name}.{field.name}: {column.null_count} NULL value(s) in a column the contract says is "
                f"NOT NULL; nothing was committed for {table.name}. Fix the source rows or the contract."
            )
    return pa.RecordBatch.from_arrays(batch.columns, schema=schema)


def _csv_blocks(copy: psycopg.Copy, block_bytes: int) -> Iterator[bytearray]:
    """The COPY output in blocks of about `block_bytes` that end on a row boundary.

    COPY TO sends one CopyData message per row and ``Copy.read()`` returns one message, so joining
    whole reads never splits a row (even one with a newline inside a quoted value).
    """
    block = bytearray()
    while row := copy.read():
        block += row
        if len(block) >= block_bytes:
            yield block
            block = bytearray()
    if block:
        yield block


def csv_batches(copy: psycopg.Copy, table: contract.SourceTable) -> Iterator[pa.RecordBatch]:
    """The COPY stream as Arrow batches with the contract's exact types.

    Each row-aligned block is parsed by pyarrow.csv on this thread: no read-ahead thread touches the
    connection, and memory is one block plus its parsed batch, whatever the table's size.
    """
    read, parse, convert = _csv_options(table)
    for block in _csv_blocks(copy, CSV_BLOCK_BYTES):
        if len(block) >= read.block_size:
            # One row larger than the parser's block would "straddle" two of them: parse the block whole.
            read = pacsv.ReadOptions(column_names=read.column_names, use_threads=False, block_size=len(block) + 1)
        try:
            parsed = pacsv.read_csv(pa.py_buffer(block), read_options=read, parse_options=parse, convert_options=convert)
        except pa.ArrowException as err:
            raise _conversion_error(table, err) from None
        del block
        for batch in parsed.to_batches():
            yield _conform(table, batch)


def rebatch(batches: Iterable[pa.RecordBatch], rows: int, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Batches of exactly `rows` rows (the last one shorter), so Parquet row groups have a steady size."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        if not batch.num_rows:
            continue
        pending.append(batch)
        count += batch.num_rows
        while count >= rows:
            buffered = pa.Table.from_batches(pending, schema=schema)
            yield buffered.slice(0, rows).combine_chunks().to_batches()[0]
            rest = buffered.slice(rows)
            pending = rest.to_batches()
            count = rest.num_rows
    if count:
        yield pa.Table.from_batches(pending, schema=schema).combine_chunks().to_batches()[0]

