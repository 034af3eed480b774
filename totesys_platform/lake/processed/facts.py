"""The three facts: one row per source version ``(natural id, last_updated)``, its latest capture; stateless.

Each fact column says in the model (`star_schema`) where it comes from and how; the builder and the column
lineage are both read off it, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from totesys_platform import star_schema
from totesys_platform.lake.processed import arrow_ops
from totesys_platform.lake.processed.validation import (
    check_state_keys,
    parse_text_dates,
    source_rows,
)
from totesys_platform.source import contract
from totesys_platform.source.contract import DELETED_AT_COLUMN

# (fact, source table, rows, source column) -> the target column's values, per `star_schema.How`.
_DERIVE: dict[str, Callable[[str, str, pa.Table, str], pa.ChunkedArray]] = {
    "copy": lambda fact, source, rows, column: rows.column(column),
    "date_of": lambda fact, source, rows, column: arrow_ops.split_timestamp(rows.column(column))[0],
    "time_of": lambda fact, source, rows, column: arrow_ops.split_timestamp(rows.column(column))[1],
    "text_date": lambda fact, source, rows, column: parse_text_dates(
        fact, source, rows, column, contract.SOURCE_TABLES[source].primary_key),
    # The batch time has microseconds; facts keep milliseconds (truncated, where PostgreSQL would round).
    "deleted_at": lambda fact, source, rows, column: rows.column(column).cast(pa.timestamp("ms"), safe=False),
}

def _differs(a: pa.Array, b: pa.Array) -> pa.Array:
    """Element-wise 'not the same value', NULL-aware (NULL vs NULL is the same)."""
    null_mismatch = pc.not_equal(pc.is_null(a), pc.is_null(b))
    return pc.or_(null_mismatch, pc.fill_null(pc.not_equal(a, b), False))


def distinct_versions(source: str, rows: pa.Table) -> pa.Table:
    """One row per ``(id, last_updated)``, sorted by it: of the captures of a version, the last one (`rows` come
    in capture order; a version captured again was changed in place in the source, see OutOfOrderCaptures, or
    is a tombstone: the row was deleted)."""
    key = contract.SOURCE_TABLES[source].primary_key
    # Arrow's sort is stable: the captures of one version keep their order.
    ordered = rows.take(pc.sort_indices(rows, sort_keys=[(key, "ascending"), ("last_updated", "ascending")]))
    ordered = ordered.combine_chunks()
    if ordered.num_rows <= 1:
        return ordered
    earlier, later = ordered.slice(0, ordered.num_rows - 1), ordered.slice(1)
    same_as_next = pc.invert(pc.or_(
        _differs(earlier.column(key).combine_chunks(), later.column(key).combine_chunks()),
        _differs(earlier.column("last_updated").combine_chunks(), later.column("last_updated").combine_chunks())))
    # Keep a row unless the next row is another capture of its version.
    return ordered.filter(pa.concat_arrays([pc.invert(same_as_next), pa.array([True])]))


def build_fact(name: str, inputs: Mapping[str, pa.Table], state: Mapping[str, pa.Table]) -> tuple[pa.Table, dict]:
    table = star_schema.TARGET_TABLES[name]
    check_state_keys(name, state, set())
    rows = distinct_versions(table.source, _with_deletions(name, inputs, table.source))
    arrays = []
    for column in table.columns:
        if column.how not in _DERIVE:
            raise NotImplementedError(f"{name}.{column.name} is derived by {column.how!r}, which facts.py cannot do")
        arrays.append(_DERIVE[column.how](name, table.source, rows, table.origin(column)[1]))
    return pa.Table.from_arrays(arrays, schema=table.arrow_schema), {}


def _with_deletions(name: str, inputs: Mapping[str, pa.Table], source: str) -> pa.Table:
    """The new rows of `source`, checked against the contract, with the ingestion zone's `_deleted_at` (a column of
    NULLs when the rows come without it: a lake written before deletes were archived)."""
    given = inputs.get(source)
    deleted = None
    if isinstance(given, pa.Table) and DELETED_AT_COLUMN in given.column_names:
        deleted = given[DELETED_AT_COLUMN]
        inputs = {**inputs, source: given.drop_columns([DELETED_AT_COLUMN])}
    rows = source_rows(name, inputs, source)  # (same rows, same order: checked and cast)
    if deleted is None:
        deleted = pa.nulls(rows.num_rows, pa.timestamp("us"))
    return rows.append_column(DELETED_AT_COLUMN, deleted)


def fact_lineage(name: str) -> dict[str, list[tuple[str, str]]]:
    table = star_schema.TARGET_TABLES[name]
    return {column.name: [table.origin(column)] for column in table.columns}
