"""Rebuild the warehouse from the lake alone (plain logic, no Dagster).

Empties the 11 tables and loads every processed-zone batch again, dimensions before facts, in ONE
transaction: readers see the old warehouse until the new one is complete.

Also `processed_commit_id`: the commit id of one processed manifest entry, which the load state records
(and the warehouse assets check) next to the batch number.
"""

from __future__ import annotations

import json
from typing import Callable

import psycopg

from totesys_platform.lake.manifest import TableLog
from totesys_platform.lake.processed.runner import read_processed
from totesys_platform.lake.store import LakeStore
from totesys_platform.star_schema import DIMENSIONS, FACTS
from totesys_platform.warehouse.loader import LoadStats, load_table
from totesys_platform.warehouse.schema import LoadPosition, ensure_schema, reset_warehouse, set_load_state


def processed_commit_id(processed: LakeStore, table: str, seq: int) -> str | None:
    """The commit id of processed manifest entry `seq` of `table`; None if there is no such entry (or it
    has no commit id, or is unreadable: reading the log then names the broken entry)."""
    if seq <= 0:
        return None
    try:
        body = json.loads(processed.read_bytes(TableLog(processed, table).entry_key(seq)))
    except (FileNotFoundError, ValueError):
        return None
    return (str(body.get("commit_id") or "") or None) if isinstance(body, dict) else None


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
                set_load_state(conn, table, LoadPosition(last_seq, processed_commit_id(processed, table, last_seq)))
                log(f"{table}: {stats[table].inserted} rows loaded from {last_seq} processed batches")
    return stats
