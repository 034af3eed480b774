"""The three facts: one row per source version ``(natural id, last_updated)``, its latest capture; stateless.

Each fact's recipe says, column by column, where a target column comes from and how; the builder
and the column lineage are both read off the recipe, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from totesys_platform import star_schema
from totesys_platform.lake.ingestion.deletes import DELETED_AT_COLUMN
from totesys_platform.lake.processed import arrow_ops
from totesys_platform.lake.processed.validation import (
    check_state_keys,
    parse_text_dates,
    source_rows,
)
from totesys_platform.source import contract

How = Literal["copy", "date_part", "time_part", "text_date", "deleted"]


@dataclass(frozen=True)
class FactColumn:
    target: str
    source: str
    how: How  # copy as is | date of a timestamp | time of a timestamp | parse YYYY-MM-DD text | tombstone time


@dataclass(frozen=True)
class FactRecipe:
    source: str
    columns: tuple[FactColumn, ...]


def _copy(target: str, source: str | None = None) -> FactColumn:
    return FactColumn(target, source or target, "copy")


def _timestamp_parts(prefix: str, source: str) -> tuple[FactColumn, FactColumn]:
    return FactColumn(f"{prefix}_date", source, "date_part"), FactColumn(f"{prefix}_time", source, "time_part")


def _text_date(name: str) -> FactColumn:
    return FactColumn(name, name, "text_date")


_VERSION = (*_timestamp_parts("created", "created_at"), *_timestamp_parts("last_updated", "last_updated"))
# When the row was seen deleted: the ingestion zone's tombstone column (NULL on a row that exists).
_DELETED = FactColumn(star_schema.DELETED_AT, DELETED_AT_COLUMN, "deleted")

FACT_RECIPES: dict[str, FactRecipe] = {
    "fact_sales_order": FactRecipe("sales_order", (
        _copy("sales_order_id"), *_VERSION, _copy("sales_staff_id", "staff_id"), _copy("counterparty_id"),
        _copy("units_sold"), _copy("unit_price"), _copy("currency_id"), _copy("design_id"),
        _text_date("agreed_payment_date"), _text_date("agreed_delivery_date"), _copy("agreed_delivery_location_id"),
        _DELETED,
    )),
    "fact_purchase_order": FactRecipe("purchase_order", (
        _copy("purchase_order_id"), *_VERSION, _copy("staff_id"), _copy("counterparty_id"), _copy("item_code"),
        _copy("item_quantity"), _copy("item_unit_price"), _copy("currency_id"),
        _text_date("agreed_delivery_date"), _text_date("agreed_payment_date"), _copy("agreed_delivery_location_id"),
        _DELETED,
    )),
    "fact_payment": FactRecipe("payment", (
        _copy("payment_id"), *_VERSION, _copy("transaction_id"), _copy("counterparty_id"), _copy("payment_amount"),
        _copy("currency_id"), _copy("payment_type_id"), _copy("paid"), _text_date("payment_date"), _DELETED,
    )),
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
    recipe = FACT_RECIPES[name]
    check_state_keys(name, state, set())
    key = contract.SOURCE_TABLES[recipe.source].primary_key
    rows = distinct_versions(recipe.source, _with_deletions(name, inputs, recipe.source))
    arrays = []
    for column in recipe.columns:
        values = rows.column(column.source)
        if column.how == "date_part":
            values = arrow_ops.split_timestamp(values)[0]
        elif column.how == "time_part":
            values = arrow_ops.split_timestamp(values)[1]
        elif column.how == "text_date":
            values = parse_text_dates(name, recipe.source, rows, column.source, key)
        elif column.how == "deleted":
            # The batch time has microseconds; facts keep milliseconds (truncated, where PostgreSQL would round).
            values = values.cast(pa.timestamp("ms"), safe=False)
        arrays.append(values)
    return pa.Table.from_arrays(arrays, schema=star_schema.TARGET_TABLES[name].arrow_schema), {}


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
    recipe = FACT_RECIPES[name]
    return {column.target: [(recipe.source, column.source)] for column in recipe.columns}
