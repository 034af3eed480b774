"""Checks on what a processed-table builder reads: new ingestion rows and its own previous state.

Every check is vectorised (Arrow compute); when it fails it raises ``BadInputError`` naming the
processed table, the first offending row's key, the column, what is wrong and what to do.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from totesys_platform.source import contract

_TEXT_DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


class BadInputError(ValueError):
    """Input a builder cannot transform. ``key`` and ``column`` are None when the problem is not one row/column.

    ``table`` is the processed table being built; ``source`` the source table (or ``state[...]`` table)
    that holds the bad value; ``key`` identifies the first bad row, e.g. ``"sales_order_id=42"``.
    """

    def __init__(
        self,
        table: str,
        key: str | None,
        column: str | None,
        reason: str,
        *,
        source: str | None = None,
        action: str | None = None,
    ) -> None:
        self.table = table
        self.key = key
        self.column = column
        self.reason = reason
        self.source = source
        self.action = action
        where = ", ".join(part for part in (key, f"column {column}" if column else None) if part)
        message = f"{table}: {where}: {reason}" if where else f"{table}: {reason}"
        if action:
            message += f". {action}"
        super().__init__(message)


# What to do, per kind of problem (the error message's last sentence).
FIX_SOURCE_ROW = (
    "Correct the row in totesys (moving last_updated re-ingests it) and quarantine the bad version"
)
FIX_SCHEMA = (
    "The ingestion batch does not match totesys_platform/source/contract.py: fix the extraction, or change the "
    "contract and the star schema together"
)
FIX_STATE = (
    "The processed table's rows are not what this code writes: delete the processed table's folder (its Delta "
    "table) and rerun, which rebuilds it from every archived version in the ingestion zone"
)


def format_value(value: object) -> str:
    """A value as an error message shows it: timestamps with milliseconds, text quoted, NULL as NULL."""
    if value is None:
        return "NULL"
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="milliseconds")
    if isinstance(value, str):
        return repr(value)
    return str(value)


def row_key(rows: pa.Table, key_column: str, index: int) -> str:
    """``"address_id=3"`` for row ``index``; a NULL key is named by its position instead."""
    value = rows.column(key_column)[index].as_py()
    if value is None:
        return f"row {index + 1} of the batch ({key_column} is NULL)"
    return f"{key_column}={format_value(value)}"


def first_true(mask: pa.Array | pa.ChunkedArray) -> tuple[int, int] | None:
    """(index of the first true, how many are true) of a boolean mask, NULL counting as false; None if none."""
    hits = pc.indices_nonzero(pc.fill_null(mask, False))
    if len(hits) == 0:
        return None
    return hits[0].as_py(), len(hits)


def raise_for_first(
    mask: pa.Array | pa.ChunkedArray,
    *,
    table: str,
    source: str,
    rows: pa.Table,
    key_column: str,
    column: str,
    reason: Callable[[int], str],
    action: str,
) -> None:
    """Raise BadInputError for the first row where ``mask`` is true (saying how many more there are)."""
    found = first_true(mask)
    if found is None:
        return
    index, count = found
    text = reason(index)
    if count > 1:
        text += f" ({count - 1} more such row{'s' if count > 2 else ''} in this batch)"
    raise BadInputError(table, row_key(rows, key_column, index), column, text, source=source, action=action)


def check_schema(table: str, source: str, rows: pa.Table, expected: pa.Schema, action: str) -> pa.Table:
    """``rows`` with exactly ``expected``'s columns in its order; an added, missing or retyped column is an error.

    Nullability flags are not compared (Parquet round trips may drop them): NULLs are checked on the data.
    """
    actual = {field.name: field.type for field in rows.schema}
    for field in expected:
        if field.name not in actual:
            raise BadInputError(
                table, None, field.name, f"{source} has no column {field.name} (expected {field.type})",
                source=source, action=action,
            )
        if actual[field.name] != field.type:
            raise BadInputError(
                table, None, field.name,
                f"{source}.{field.name} has type {actual[field.name]}, expected {field.type}",
                source=source, action=action,
            )
    extra = [name for name in actual if name not in expected.names]
    if extra:
        raise BadInputError(
            table, None, extra[0], f"{source} has an unexpected column {extra[0]} (not in the contract)",
            source=source, action=action,
        )
    if len(actual) != len(rows.schema):
        raise BadInputError(table, None, None, f"{source} has duplicate column names", source=source, action=action)
    return rows.select(expected.names)


def check_not_null(table: str, source: str, rows: pa.Table, schema: pa.Schema, key_column: str, action: str) -> None:
    """Every column that ``schema`` declares not nullable holds no NULL."""
    for field in schema:
        if not field.nullable and rows.column(field.name).null_count:
            raise_for_first(
                pc.is_null(rows.column(field.name)),
                table=table, source=source, rows=rows, key_column=key_column, column=field.name,
                reason=lambda _i, name=field.name: f"NULL in {source}.{name}, which the contract says is NOT NULL",
                action=action,
            )


def _as_table(value: object, table: str, label: str) -> pa.Table:
    if isinstance(value, pa.Table):
        return value
    if isinstance(value, pa.RecordBatch):
        return pa.Table.from_batches([value])
    raise BadInputError(table, None, None, f"{label} is a {type(value).__name__}, not a pyarrow Table")


def source_rows(table: str, inputs: Mapping[str, pa.Table], source: str,
                columns: Sequence[str] | None = None) -> pa.Table:
    """The new ingestion rows of ``source`` for building ``table``, checked against the source contract (only
    `columns` of it, when the builder reads only those)."""
    if source not in inputs:
        raise BadInputError(
            table, None, None, f"no {source!r} input was given (got {sorted(inputs)})",
            action="Pass the new ingestion rows of every table in the spec's inputs, empty if there are none",
        )
    source_table = contract.SOURCE_TABLES[source]
    schema = source_table.arrow_schema
    given = _as_table(inputs[source], table, f"input {source!r}")
    if columns is not None:  # the builder reads only these: the others may be there or not
        schema = pa.schema([schema.field(c) for c in columns])
        given = given.select([c for c in columns if c in given.column_names])
    rows = check_schema(table, source, given, schema, FIX_SCHEMA)
    check_not_null(table, source, rows, schema, source_table.primary_key, FIX_SOURCE_ROW)
    return rows.cast(schema)  # now safe: also normalises the nullability flags


def state_table(table: str, state: Mapping[str, pa.Table], name: str, schema: pa.Schema, key_column: str) -> pa.Table:
    """The state table ``name`` (empty when the state does not have it yet), checked against ``schema``."""
    if name not in state:
        return schema.empty_table()
    label = f"state[{name!r}]"
    rows = check_schema(table, label, _as_table(state[name], table, label), schema, FIX_STATE)
    check_not_null(table, label, rows, schema, key_column, FIX_STATE)
    return rows.cast(schema)


def check_state_keys(table: str, state: Mapping[str, pa.Table], expected: set[str]) -> None:
    unknown = sorted(set(state) - expected)
    if unknown:
        raise BadInputError(
            table, None, None, f"unexpected state tables {unknown} (expected only {sorted(expected)})",
            source="state", action=FIX_STATE,
        )


def parse_text_dates(
    table: str, source: str, rows: pa.Table, column: str, key_column: str
) -> pa.ChunkedArray:
    """Strictly parse a ``YYYY-MM-DD`` text column to date32: exactly that shape and a real calendar date.

    Arrow's strptime alone is lenient ('2024-1-5' parses, '2024-02-30' rolls over to March), so the
    text must also match the pattern and survive a round trip through strftime unchanged.
    Only the distinct texts are parsed (a million orders reference a few hundred dates).
    """
    text = rows.column(column)
    distinct = pc.unique(text)
    position = pc.index_in(text, value_set=distinct)
    parsed = pc.strptime(distinct, format="%Y-%m-%d", unit="s", error_is_null=True)
    good = pc.and_kleene(
        pc.match_substring_regex(distinct, _TEXT_DATE_PATTERN),
        pc.and_kleene(pc.equal(pc.strftime(parsed, format="%Y-%m-%d"), distinct),
                      pc.greater_equal(pc.year(parsed), 1)),
    )
    # NULLs are reported by the NOT NULL check; here only present values that do not parse are bad.
    bad = pc.and_(pc.is_valid(distinct), pc.invert(pc.fill_null(good, False)))
    raise_for_first(
        pc.take(bad, position), table=table, source=source, rows=rows, key_column=key_column, column=column,
        reason=lambda i: f"{format_value(text[i].as_py())} is not a YYYY-MM-DD date",
        action=FIX_SOURCE_ROW,
    )
    return pc.take(pc.cast(parsed, pa.date32()), position)


def check_allowed(
    table: str,
    source: str,
    rows: pa.Table,
    column: str,
    key_column: str,
    allowed: tuple[str, ...],
    described_as: str,
    action: str,
) -> None:
    """Every value of a text column is one of ``allowed`` (an enum, or ISO 4217 codes): ``described_as`` names them."""
    values = rows.column(column)
    bad = pc.invert(pc.is_in(values, value_set=pa.array(allowed, pa.string())))
    raise_for_first(
        pc.and_(pc.is_valid(values), bad),
        table=table, source=source, rows=rows, key_column=key_column, column=column,
        reason=lambda i: f"{format_value(values[i].as_py())} is not {described_as}",
        action=action,
    )
