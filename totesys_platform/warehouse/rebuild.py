"""Rebuild the warehouse from the lake alone (plain logic, no Dagster).

Empties the 11 tables and loads every processed-zone batch again, dimensions before facts, in ONE
transaction: readers see the old warehouse until the new one is complete.
"""

from __future__ import annotations

from typing import Callable

import psycopg

from totesys_platform.lake.processed.runner import read_processed
from totesys_platform.lake.store import LakeStore
from totesys_platform.star_schema import DIMENSIONS, FACTS
from totesys_platform.warehouse.loader import LoadStats, load_table
from totesys_platform.warehouse.schema import ensure_schema, reset_warehouse, set_load_state


def rebuild_warehouse(
    warehouse_url: str, processed: LakeStore, *, log: Callable[[str], None] = lambda m: None
) -> dict[str, LoadStats]:
    stats: dict[str, LoadStats] = {}
    with psycopg.connect(warehouse_url, connect_timeout=10) as conn:
        ensure_schema(conn)
        conn.commit()
        with conn.transaction():
            reset_warehouse(conn)
            for table in (*DIMENSIONS, *FACTS):
                data, last_seq = read_processed(processed, table)
                mode = "append_versions" if table in FACTS else "upsert"
                stats[table] = load_table(conn, table, data, mode)
                set_load_state(conn, table, last_seq)
                log(f"{table}: {stats[table].inserted} rows loaded from {last_seq} processed batches")
    return stats
