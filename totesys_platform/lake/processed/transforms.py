"""The processed-zone builders (one per star-schema table), their inputs and column lineage (plain Arrow, no Dagster).

A builder takes the NEW ingestion rows of each of its input tables (exact contract schemas, possibly
empty) and its previous state (``{}`` at first), and returns ``(delta, new_state)``. The delta has
exactly the star-schema table's Arrow schema. Feeding the rows batch by batch, carrying the state,
and reducing the deltas (facts: union of rows; dimensions: last row per key) gives the same table
as one call over all the rows from empty state. See docs/processed-zone.md.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pyarrow as pa

from totesys_platform import star_schema
from totesys_platform.lake.processed import dates, dimensions, facts

State = dict[str, pa.Table]
Builder = Callable[[Mapping[str, pa.Table], State], tuple[pa.Table, State]]


@dataclass(frozen=True)
class ProcessedSpec:
    name: str  # one of star_schema.TARGET_TABLES
    inputs: tuple[str, ...]  # the source tables it reads (its lineage is exactly these)
    build: Builder
    # The columns it reads of each input, when not all of them (the key and last_updated always among them):
    # a read of the lake fetches only those.
    columns: Mapping[str, tuple[str, ...]] | None = None

    def columns_of(self, source: str) -> list[str] | None:
        return None if self.columns is None or source not in self.columns else list(self.columns[source])


def _spec(table: star_schema.TargetTable) -> ProcessedSpec:
    if table.name == dates.NAME:
        return ProcessedSpec(table.name, table.inputs, dates.build_dim_date, columns=dates.input_columns())
    if table.kind == "fact":
        build = facts.build_fact
    elif table.join:
        build = dimensions.build_joined_dimension
    else:
        build = dimensions.build_dimension
    return ProcessedSpec(table.name, table.inputs, functools.partial(build, table.name))


def _lineage(name: str) -> dict[str, list[tuple[str, str]]]:
    if name == dates.NAME:
        return dates.dim_date_lineage()
    if name in star_schema.FACTS:
        return facts.fact_lineage(name)
    return dimensions.dimension_lineage(name)


PROCESSED_SPECS: dict[str, ProcessedSpec] = {name: _spec(table) for name, table in star_schema.TARGET_TABLES.items()}

# target table -> target column -> [(source table, source column)], e.g.
# COLUMN_LINEAGE["dim_counterparty"]["counterparty_legal_city"] == [("address", "city"),
#                                                                  ("counterparty", "legal_address_id")]
COLUMN_LINEAGE: dict[str, dict[str, list[tuple[str, str]]]] = {name: _lineage(name) for name in PROCESSED_SPECS}
