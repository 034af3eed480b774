"""The three facts: one row per distinct source version ``(natural id, last_updated)``; stateless.

Each fact's recipe says, column by column, where a target column comes from and how; the builder
and the column lineage are both read off the recipe, so they cannot drift apart.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from totesys_platform import star_schema
from totesys_platform.lake.processed import arrow_ops
from totesys_platform.lake.processed.validation import (
    BadInputError,
    check_state_keys,
    first_true,
    format_value,
    parse_text_dates,
    source_rows,
)
from totesys_platform.source import contract

How = Literal["copy", "date_part", "time_part", "text_date"]


@dataclass(frozen=True)
class FactColumn:
    target: str
    source: str
    how: How  # copy as is | date of a timestamp | time of a timestamp | parse YYYY-MM-DD text


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

FACT_RECIPES: dict[str, FactRecipe] = {
    "fact_sales_order": FactRecipe("sales_order", (
        _copy("sales_order_id"), *_VERSION, _copy("sales_staff_id", "staff_id"), _copy("counterparty_id"),
        _copy("units_sold"), _copy("unit_price"), _copy("currency_id"), _copy("design_id"),
        _text_date("agreed_payment_date"), _text_date("agreed_delivery_date"), _copy("agreed_delivery_location_id"),
    )),
    "fact_purchase_order": FactRecipe("purchase_order", (
        _copy("purchase_order_id"), *_VERSION, _copy("staff_id"), _copy("counterparty_id"), _copy("item_code"),
        _copy("item_quantity"), _copy("item_unit_price"), _copy("currency_id"),
        _text_date("agreed_delivery_date"), _text_date("agreed_payment_date"), _copy("agreed_delivery_location_id"),
    )),
    "fact_payment": FactRecipe("payment", (
        _copy("payment_id"), *_VERSION, _copy("transaction_id"), _copy("counterparty_id"), _copy("payment_amount"),
        _copy("currency_id"), _copy("payment_type_id"), _copy("paid"), _text_date("payment_date"),
    )),
}

FIX_CONFLICT = (
    "totesys must move last_updated on every change: find out which row is right, correct the source, and "
    "quarantine the wrong version (totesys-platform lake quarantine)"
)


def _differs(a: pa.Array, b: pa.Array) -> pa.Array:
    """Element-wise 'not the same value', NULL-aware (NULL vs NULL is the same)."""
    null_mismatch = pc.not_equal(pc.is_null(a), pc.is_null(b))
    return pc.or_(null_mismatch, pc.fill_null(pc.not_equal(a, b), False))


def distinct_versions(name: str, source: str, rows: pa.Table) -> pa.Table:
    """One row per ``(id, last_updated)``, sorted by it: identical repeats dropped, differing ones an error."""
    key = contract.SOURCE_TABLES[source].primary_key
    ordered = rows.take(pc.sort_indices(rows, sort_keys=[(key, "ascending"), ("last_updated", "ascending")]))
    ordered = ordered.combine_chunks()
    if ordered.num_rows <= 1:
        return ordered
    earlier, later = ordered.slice(0, ordered.num_rows - 1), ordered.slice(1)

    def column_pair(column: str) -> tuple[pa.Array, pa.Array]:
        return earlier.column(column).combine_chunks(), later.column(column).combine_chunks()

    same_version = pc.invert(pc.or_(_differs(*column_pair(key)), _differs(*column_pair("last_updated"))))
    differs_anywhere = functools.reduce(pc.or_, [_differs(*column_pair(c)) for c in ordered.column_names])
    found = first_true(pc.and_(same_version, differs_anywhere))
    if found is not None:
        index, count = found
        column = next(c for c in ordered.column_names if _differs(*column_pair(c))[index].as_py())
        first, second = earlier.column(column)[index].as_py(), later.column(column)[index].as_py()
        version = (
            f"{key}={format_value(ordered.column(key)[index].as_py())}, "
            f"last_updated={format_value(ordered.column('last_updated')[index].as_py())}"
        )
        more = f" ({count - 1} more such pair{'s' if count > 2 else ''} in this batch)" if count > 1 else ""
        raise BadInputError(
            name, version, column,
            f"two different {source} rows have this version: {format_value(first)} in one, "
            f"{format_value(second)} in the other{more}",
            source=source, action=FIX_CONFLICT,
        )
    return ordered.filter(_keep_first(same_version))


def _keep_first(same_version: pa.Array) -> pa.Array:
    """Keep a row unless it repeats the version of the row before it."""
    return pa.concat_arrays([pa.array([True]), pc.invert(same_version)])


def build_fact(name: str, inputs: Mapping[str, pa.Table], state: Mapping[str, pa.Table]) -> tuple[pa.Table, dict]:
    recipe = FACT_RECIPES[name]
    check_state_keys(name, state, set())
    key = contract.SOURCE_TABLES[recipe.source].primary_key
    rows = distinct_versions(name, recipe.source, source_rows(name, inputs, recipe.source))
    arrays = []
    for column in recipe.columns:
        values = rows.column(column.source)
        if column.how == "date_part":
            values = arrow_ops.split_timestamp(values)[0]
        elif column.how == "time_part":
            values = arrow_ops.split_timestamp(values)[1]
        elif column.how == "text_date":
            values = parse_text_dates(name, recipe.source, rows, column.source, key)
        arrays.append(values)
    return pa.Table.from_arrays(arrays, schema=star_schema.TARGET_TABLES[name].arrow_schema), {}


def fact_lineage(name: str) -> dict[str, list[tuple[str, str]]]:
    recipe = FACT_RECIPES[name]
    return {column.target: [(recipe.source, column.source)] for column in recipe.columns}
