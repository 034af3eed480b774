"""Dimensions (SCD type 1): each delta holds the new latest row of every key whose output may have changed.

Single-source dimensions need no state: every key in the new rows is re-emitted with its last
occurrence. dim_counterparty and dim_staff join two source tables, so their state keeps the current
rows of both (reference tables, small) and a change on either side re-emits every affected row.
Where each column comes from is the model's (`star_schema`); builders and column lineage are both read off it.
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


# How a dimension column is derived from its source column (`star_schema.How`); None: copied as is.
_DERIVE: dict[str, Callable[[pa.ChunkedArray], pa.ChunkedArray] | None] = {
    "copy": None, "iso_4217_name": _iso_4217_name}

# Rules a dimension's new source rows must follow before it is built (by dimension).
VALIDATORS: dict[str, tuple[Validator, ...]] = {
    "dim_payment_type": (
        _enum_validator("payment_type", "payment_type_name", contract.PAYMENT_TYPE_NAMES, "PaymentTypeName"),),
    "dim_transaction": (
        _enum_validator("transaction", "transaction_type", contract.TRANSACTION_TYPES, "TransactionType"),),
    "dim_currency": (_validate_currency_codes,),
}


@dataclass(frozen=True)
class JoinedDimensionRecipe:
    """A dimension of ``main`` rows joined to their ``reference`` row through ``foreign_key`` (read off the model)."""

    name: str
    main: str
    reference: str
    foreign_key: str  # column of main holding the reference's primary key

    @classmethod
    def of(cls, table: star_schema.TargetTable) -> JoinedDimensionRecipe:
        return cls(table.name, table.source, table.join.table, table.join.foreign_key)

    @property
    def main_key(self) -> str:
        return contract.SOURCE_TABLES[self.main].primary_key

    @property
    def reference_key(self) -> str:
        return contract.SOURCE_TABLES[self.reference].primary_key

    def state_schema(self, source: str) -> pa.Schema:
        """The state keeps only the source columns the dimension needs (no contacts, no manager)."""
        target = star_schema.TARGET_TABLES[self.name]
        needed = [target.origin(c)[1] for c in target.columns_from(source)]
        if source == self.main:
            names = [self.main_key, *(n for n in needed if n != self.main_key), self.foreign_key]
        else:
            names = [self.reference_key, *needed]
        full = contract.SOURCE_TABLES[source].arrow_schema
        return pa.schema([full.field(name) for name in dict.fromkeys(names)])


# The dimensions joined to a second source table.
JOINED_DIMENSION_RECIPES: dict[str, JoinedDimensionRecipe] = {
    t.name: JoinedDimensionRecipe.of(t) for t in star_schema.TARGET_TABLES.values() if t.join}


def _derived(name: str, rows: pa.Table, columns: tuple[star_schema.TargetColumn, ...]) -> dict[str, pa.ChunkedArray]:
    """The target columns `columns` of dimension `name`, from `rows` of the source table they derive from."""
    table = star_schema.TARGET_TABLES[name]
    arrays = {}
    for column in columns:
        if column.how not in _DERIVE:
            raise NotImplementedError(
                f"{name}.{column.name} is derived by {column.how!r}, which dimensions.py cannot do")
        values = rows.column(table.origin(column)[1])
        derive = _DERIVE[column.how]
        arrays[column.name] = derive(values) if derive else values
    return arrays


def _output(name: str, arrays: dict[str, pa.ChunkedArray]) -> pa.Table:
    schema = star_schema.TARGET_TABLES[name].arrow_schema
    return pa.Table.from_arrays([arrays[n] for n in schema.names], schema=schema)


def build_dimension(name: str, inputs: Mapping[str, pa.Table], state: Mapping[str, pa.Table]) -> tuple[pa.Table, dict]:
    table = star_schema.TARGET_TABLES[name]
    check_state_keys(name, state, set())
    rows = source_rows(name, inputs, table.source)
    for validate in VALIDATORS.get(name, ()):
        validate(name, rows)
    latest = arrow_ops.last_per_key(rows, contract.SOURCE_TABLES[table.source].primary_key)
    return _output(name, _derived(name, latest, table.columns)), {}


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
    target = star_schema.TARGET_TABLES[name]
    arrays = _derived(name, emitted, target.columns_from(recipe.main))
    arrays |= _derived(name, joined, target.columns_from(recipe.reference))
    return _output(name, arrays), current


def dimension_lineage(name: str) -> dict[str, list[tuple[str, str]]]:
    """Each column's source column; a joined column also depends on the foreign key that picks its row."""
    table = star_schema.TARGET_TABLES[name]
    lineage = {}
    for column in table.columns:
        origin = table.origin(column)
        lineage[column.name] = [origin]
        if table.join and origin[0] == table.join.table:
            lineage[column.name].append((table.source, table.join.foreign_key))
    return lineage
