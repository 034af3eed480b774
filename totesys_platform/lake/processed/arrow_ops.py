"""Small vectorised Arrow helpers shared by the builders."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_ROW = "__row_number"


def concat(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables).combine_chunks()


def last_per_key(rows: pa.Table, key: str) -> pa.Table:
    """The last row (in table order) of every distinct ``key``, sorted by ``key``."""
    if rows.num_rows == 0:
        return rows
    numbered = rows.append_column(_ROW, pa.array(np.arange(rows.num_rows, dtype=np.int64)))
    last = numbered.group_by(key, use_threads=False).aggregate([(_ROW, "max")])
    order = pc.sort_indices(last, sort_keys=[(key, "ascending")])
    return rows.take(pc.take(last.column(f"{_ROW}_max"), order))


def split_timestamp(values: pa.ChunkedArray) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """A naive timestamp[ms] as (date32, time32[ms]): no time-zone conversion, milliseconds kept."""
    return pc.cast(values, pa.date32()), pc.cast(values, pa.time32("ms"))

