"""Rebuild the warehouse from the lake alone (plain logic, no Dagster).

Empties the warehouse tables and loads every row of the processed zone's tables again, dimensions before facts, in
ONE transaction: readers see the old warehouse until the new one is complete. The load state records the
processed table version each table was rebuilt from, so the next runs carry on from there.
"""

from __future__ import annotations

from typing import Callable


from totesys_platform.lake.delta import LakeZone
from totesys_platform.lake.processed.runner import read_processed
from totesys_platform.star_schema import DIMENSIONS, FACTS
from totesys_platform.warehouse.loader import LoadStats, load_table
from totesys_platform.warehouse.schema import ensure_schema, reset_warehouse, set_load_state
from totesys_platform.warehouse.sessions import connect_warehouse


def rebuild_warehouse(
    warehouse_url: str, processed: LakeZone, *, log: Callable[[str], None] = lambda m: None
) -> dict[str, LoadStats]:
    stats: dict[str, LoadStats] = {}
    with connect_warehouse(warehouse_url) as conn:  # the session timeouts of every warehouse session
        ensure_schema(conn)
        conn.commit()
        with conn.transaction():
            reset_warehouse(conn)
            for table in (*DIMENSIONS, *FACTS):
                snapshot = processed.table(table).snapshot()
                data = read_processed(processed, table, snapshot)
                mode = "append_versions" if table in FACTS else "upsert"
                stats[table] = load_table(conn, table, data, mode)
                if snapshot.exists:
                    set_load_state(conn, table, snapshot.position())
                log(f"{table}: {stats[table].inserted} rows loaded from processed version {snapshot.version}")
    return stats
