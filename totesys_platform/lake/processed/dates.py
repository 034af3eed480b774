"""dim_date: a calendar covering every date the facts reference, grown incrementally.

The dimension is the contiguous range from the earliest to the latest referenced date. The state is
that range (one row: first_date, last_date); a batch that references a date outside it widens the
range, and the delta is only the newly covered dates (before and/or after the old range).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from totesys_platform import star_schema
from totesys_platform.lake.processed.validation import (
    FIX_STATE,
    BadInputError,
    check_state_keys,
    parse_text_dates,
    source_rows,
    state_table,
)
from totesys_platform.source import contract

NAME = "dim_date"
STATE_TABLE = "covered_range"
STATE_SCHEMA = pa.schema([
    pa.field("first_date", pa.date32(), nullable=False),
    pa.field("last_date", pa.date32(), nullable=False),
])

# Every date a fact references (its created/last_updated timestamps and its text business dates), read off
# the model: the source column of each fact column that is a dim_date foreign key, and how it becomes a date.
DATE_COLUMNS: dict[str, tuple[str, ...]] = {}
DATE_HOWS: dict[tuple[str, str], str] = {}
for _source, _name, _how in star_schema.date_sources():
    if _name not in DATE_COLUMNS.get(_source, ()):
        DATE_COLUMNS[_source] = (*DATE_COLUMNS.get(_source, ()), _name)
    DATE_HOWS[(_source, _name)] = _how

def input_columns() -> dict[str, tuple[str, ...]]:
    """What dim_date reads of each input: the key (to name a bad row) and the date columns (last_updated too)."""
    return {source: (contract.SOURCE_TABLES[source].primary_key, *columns) for source, columns in DATE_COLUMNS.items()}


# Fixed English names (contract rule 8), independent of any locale.
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
               "November", "December")
_EPOCH = dt.date(1970, 1, 1)


def _referenced_dates(inputs: Mapping[str, pa.Table]) -> list[pa.ChunkedArray]:
    dates = []
    for source, columns in DATE_COLUMNS.items():
        rows = source_rows(NAME, inputs, source, columns=input_columns()[source])
        key = contract.SOURCE_TABLES[source].primary_key
        for column in columns:
            how = DATE_HOWS[(source, column)]
            if how == "text_date":
                dates.append(parse_text_dates(NAME, source, rows, column, key))
            elif how == "date_of":
                dates.append(pc.cast(rows.column(column), pa.date32()))
            else:
                raise NotImplementedError(f"dim_date cannot read a date derived by {how!r} ({source}.{column})")
    return dates


def _day_number(value: dt.date) -> int:
    return (value - _EPOCH).days


def calendar(first_day: int, last_day: int) -> pa.Table:
    """dim_date rows for the days ``first_day..last_day`` (days since 1970-01-01, both included)."""
    days = pc.cast(pa.array(np.arange(first_day, last_day + 1, dtype=np.int32)), pa.date32())
    weekday = pc.day_of_week(days, count_from_zero=False, week_start=1)  # ISO: Monday=1 .. Sunday=7
    month = pc.month(days)
    columns = {
        "date_id": days,
        "year": pc.year(days),
        "month": month,
        "day": pc.day(days),
        "day_of_week": weekday,
        "day_name": pc.take(pa.array(DAY_NAMES), pc.subtract(weekday, 1)),
        "month_name": pc.take(pa.array(MONTH_NAMES), pc.subtract(month, 1)),
        "quarter": pc.quarter(days),
    }
    schema = star_schema.TARGET_TABLES[NAME].arrow_schema
    return pa.Table.from_arrays([pc.cast(columns[f.name], f.type) for f in schema], schema=schema)


def build_dim_date(inputs: Mapping[str, pa.Table], state: Mapping[str, pa.Table]) -> tuple[pa.Table, dict]:
    check_state_keys(NAME, state, {STATE_TABLE})
    covered = state_table(NAME, state, STATE_TABLE, STATE_SCHEMA, "first_date")
    if covered.num_rows > 1:
        raise BadInputError(
            NAME, None, None, f"state[{STATE_TABLE!r}] has {covered.num_rows} rows, expected at most one",
            source=f"state[{STATE_TABLE!r}]", action=FIX_STATE,
        )
    old = None
    if covered.num_rows:
        old = (_day_number(covered.column("first_date")[0].as_py()), _day_number(covered.column("last_date")[0].as_py()))
        if old[0] > old[1]:
            raise BadInputError(
                NAME, None, "first_date", f"state[{STATE_TABLE!r}] starts after it ends",
                source=f"state[{STATE_TABLE!r}]", action=FIX_STATE,
            )

    lows, highs = [], []
    for dates in _referenced_dates(inputs):
        if len(dates) - dates.null_count:
            low_high = pc.min_max(dates)
            lows.append(_day_number(low_high["min"].as_py()))
            highs.append(_day_number(low_high["max"].as_py()))
    if old is not None:
        lows.append(old[0])
        highs.append(old[1])
    if not lows:
        return star_schema.TARGET_TABLES[NAME].arrow_schema.empty_table(), {}
    first, last = min(lows), max(highs)

    if old is None:
        delta = calendar(first, last)
    else:
        # Only the newly covered days: possibly some before the old range and some after it.
        delta = pa.concat_tables([calendar(first, old[0] - 1), calendar(old[1] + 1, last)])
    new_state = pa.Table.from_arrays(
        [pa.array([first], pa.int32()).cast(pa.date32()), pa.array([last], pa.int32()).cast(pa.date32())],
        schema=STATE_SCHEMA,
    )
    return delta.combine_chunks(), {STATE_TABLE: new_state}


def dim_date_lineage() -> dict[str, list[tuple[str, str]]]:
    sources = [(source, column) for source, columns in DATE_COLUMNS.items() for column in columns]
    return {column: list(sources) for column in star_schema.TARGET_TABLES[NAME].column_names}
