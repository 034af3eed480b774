"""Dimensions (SCD type 1): each delta holds the new latest row of every key whose output may have changed.

Single-source dimensions need no state: every key in the new rows is re-emitted with its last
occurrence. dim_counterparty and dim_staff join two source tables, so their state keeps the current
rows of both (reference tables, small) and a change on either side re-emits every affected row.
Recipes are data; builders and column lineage are both read off them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pycountry

from totesys_platform import star_schema
from totesys_platform.lake.processed import arrow_ops
from totesys_platform.lake.processed.validation import (
    FIX_SOURCE_ROW,
    check_allowed,
    check_state_keys,
    format_value,
    raise_for_first,
    source_rows,
    state_table,
)
from totesys_platform.source import contract

# ISO 4217 from pycountry's maintained table, not a hand-written dict (contract rule 9).
ISO_4217_NAMES: dict[str, str] = {currency.alpha_3: currency.name for currency in pycountry.currencies}

Validator = Callable[[str, pa.Table], None]  # (processed table, new source rows) -> raises BadInputError


def _enum_validator(source: str, column: str, allowed: tuple[str, ...], enum_name: str) -> Validator:
    def validate(table: str, rows: pa.Table) -> None:
        check_allowed(
            table, source, rows, column, contract.SOURCE_TABLES[source].primary_key, allowed,
            f"a {enum_name} value ({', '.join(allowed)})",
            f"If totesys added a {enum_name} value, add it to totesys_platform/source/contract.py first; "
            "otherwise correct the row in totesys and quarantine the bad version (totesys-platform lake quarantine)",
        )
    return validate


def _validate_currency_codes(table: str, rows: pa.Table) -> None:
    check_allowed(
        table, "currency", rows, "currency_code", "currency_id", tuple(ISO_4217_NAMES),
        "an ISO 4217 currency code (three capital letters, e.g. 'GBP')", FIX_SOURCE_ROW,
    )


def _iso_4217_name(codes: pa.ChunkedArray) -> pa.ChunkedArray:
    known = pa.array(list(ISO_4217_NAMES), pa.string())
    return pc.take(pa.array(list(ISO_4217_NAMES.values()), pa.string()), pc.index_in(codes, value_set=known))


@dataclass(frozen=True)
class DimColumn:
    target: str
    source: str
    derive: Callable[[pa.ChunkedArray], pa.ChunkedArray] | None = None  # None: copied as is


@dataclass(frozen=True)
class DimensionRecipe:
    """A dimension read from one source table."""

    source: str
    columns: tuple[DimColumn, ...]
    validators: tuple[Validator, ...] = ()


@dataclass(frozen=True)
class JoinedDimensionRecipe:
    """A dimension of ``main`` rows joined to their ``reference`` row through ``foreign_key``."""

    main: str
    reference: str
    foreign_key: str  # column of main holding the reference's primary key
    main_columns: tuple[DimColumn, ...]
    reference_columns: tuple[DimColumn, ...]

    @property
    def main_key(self) -> str:
        return contract.SOURCE_TABLES[self.main].primary_key

    @property
    def reference_key(self) -> str:
        return contract.SOURCE_TABLES[self.reference].primary_key

    def state_schema(self, source: str) -> pa.Schema:
        """The state keeps only the source columns the dimension needs (no contacts, no manager)."""
        if source == self.main:
            names = [self.main_key, *(c.source for c in self.main_columns if c.source != self.main_key),
                     self.foreign_key]
        else:
            names = [self.reference_key, *(c.source for c in self.reference_columns)]
        full = contract.SOURCE_TABLES[source].arrow_schema
        return pa.schema([full.field(name) for name in dict.fromkeys(names)])


def _same(*names: str) -> tuple[DimColumn, ...]:
    return tuple(DimColumn(name, name) for name in names)


DIMENSION_RECIPES: dict[str, DimensionRecipe] = {
    "dim_location": DimensionRecipe("address", (
        DimColumn("location_id", "address_id"),
        *_same("address_line_1", "address_line_2", "district", "city", "postal_code", "country", "phone"),
    )),
    "dim_design": DimensionRecipe("design", _same("design_id", "design_name", "file_location", "file_name")),
    "dim_payment_type": DimensionRecipe(
        "payment_type", _same("payment_type_id", "payment_type_name"),
        (_enum_validator("payment_type", "payment_type_name", contract.PAYMENT_TYPE_NAMES, "PaymentTypeName"),),
    ),
    "dim_transaction": DimensionRecipe(
        "transaction", _same("transaction_id", "transaction_type", "sales_order_id", "purchase_order_id"),
        (_enum_validator("transaction", "transaction_type", contract.TRANSACTION_TYPES, "TransactionType"),),
    ),
    "dim_currency": DimensionRecipe(
        "currency",
        (*_same("currency_id", "currency_code"), DimColumn("currency_name", "currency_code", _iso_4217_name)),
        (_validate_currency_codes,),
    ),
}

_ADDRESS_AS_LEGAL_ADDRESS = (
    DimColumn("counterparty_legal_address_line_1", "address_line_1"),
    DimColumn("counterparty_legal_address_line_2", "address_line_2"),
    DimColumn("counterparty_legal_district", "district"),
    DimColumn("counterparty_legal_city", "city"),
    DimColumn("counterparty_legal_postal_code", "postal_code"),
    DimColumn("counterparty_legal_country", "country"),
    DimColumn("counterparty_legal_phone_number", "phone"),
)

JOINED_DIMENSION_RECIPES: dict[str, JoinedDimensionRecipe] = {
    "dim_counterparty": JoinedDimensionRecipe(
        "counterparty", "address", "legal_address_id",
        _same("counterparty_id", "counterparty_legal_name"), _ADDRESS_AS_LEGAL_ADDRESS,
    ),
    "dim_staff": JoinedDimensionRecipe(
        "staff", "department", "department_id",
        _same("staff_id", "first_name", "last_name", "email_address"),
        _same("department_name", "location"),
    ),
}


def _column(rows: pa.Table, column: DimColumn) -> pa.ChunkedArray:
    values = rows.column(column.source)
    return column.derive(values) if column.derive else values


def _output(name: str, arrays: dict[str, pa.ChunkedArray]) -> pa.Table:
    schema = star_schema.TARGET_TABLES[name].arrow_schema
    return pa.Table.from_arrays([arrays[n] for n in schema.names], schema=schema)


def build_dimension(name: str, inputs: Mapping[str, pa.Table], state: Mapping[str, pa.Table]) -> tuple[pa.Table, dict]:
    recipe = DIMENSION_RECIPES[name]
    check_state_keys(name, state, set())
    rows = source_rows(name, inputs, recipe.source)
    for validate in recipe.validators:
        validate(name, rows)
    latest = arrow_ops.last_per_key(rows, contract.SOURCE_TABLES[recipe.source].primary_key)
    return _output(name, {c.target: _column(latest, c) for c in recipe.columns}), {}


def build_joined_dimension(
    name: str, inputs: Mapping[str, pa.Table], state: Mapping[str, pa.Table]
) -> tuple[pa.Table, dict[str, pa.Table]]:
    recipe = JOINED_DIMENSION_RECIPES[name]
    check_state_keys(name, state, {recipe.main, recipe.reference})
    current: dict[str, pa.Table] = {}
    new: dict[str, pa.Table] = {}
    for source, key in ((recipe.main, recipe.main_key), (recipe.reference, recipe.reference_key)):
        schema = recipe.state_schema(source)
        new[source] = source_rows(name, inputs, source).select(schema.names)
        # State rows come first, so a new row (the later occurrence) wins.
        previous = state_table(name, state, source, schema, key)
        current[source] = arrow_ops.last_per_key(arrow_ops.concat([previous, new[source]]), key)

    mains, references = current[recipe.main], current[recipe.reference]
    foreign_keys = mains.column(recipe.foreign_key)
    touched = pc.or_(
        pc.is_in(mains.column(recipe.main_key), value_set=new[recipe.main].column(recipe.main_key).combine_chunks()),
        pc.is_in(foreign_keys, value_set=new[recipe.reference].column(recipe.reference_key).combine_chunks()),
    )
    emitted = mains.filter(touched)
    position = pc.index_in(
        emitted.column(recipe.foreign_key), value_set=references.column(recipe.reference_key).combine_chunks()
    )
    raise_for_first(
        pc.is_null(position), table=name, source=recipe.main, rows=emitted, key_column=recipe.main_key,
        column=recipe.foreign_key,
        reason=lambda i: (
            f"{recipe.reference_key}={format_value(emitted.column(recipe.foreign_key)[i].as_py())} is not in "
            f"{recipe.reference} (neither in this batch nor in earlier ones)"
        ),
        action=(
            f"Every {recipe.main} row needs its {recipe.reference} row: check that the {recipe.reference} "
            f"ingestion batches were all extracted and handed in, up to the same point in time as {recipe.main}"
        ),
    )
    joined = references.take(position)
    arrays = {c.target: _column(emitted, c) for c in recipe.main_columns}
    arrays |= {c.target: _column(joined, c) for c in recipe.reference_columns}
    return _output(name, arrays), current


def dimension_lineage(name: str) -> dict[str, list[tuple[str, str]]]:
    if name in DIMENSION_RECIPES:
        recipe = DIMENSION_RECIPES[name]
        return {c.target: [(recipe.source, c.source)] for c in recipe.columns}
    joined = JOINED_DIMENSION_RECIPES[name]
    lineage = {c.target: [(joined.main, c.source)] for c in joined.main_columns}
    lineage |= {c.target: [(joined.reference, c.source), (joined.main, joined.foreign_key)]
                for c in joined.reference_columns}
    return {column: lineage[column] for column in star_schema.TARGET_TABLES[name].column_names}
