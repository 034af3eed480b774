"""Waiting for PostgreSQL's table statistics in tests: a delete is counted a moment after its commit."""

from __future__ import annotations

import time

import psycopg

from totesys_platform.lake.ingestion.deletes import read_markers


def wait_for_delete_statistics(source_url: str, table: str, before: str, timeout: float = 30) -> str:
    """Wait until `table`'s delete marker differs from `before` (the deleting session's statistics reached the
    server) and return it; extraction only looks for deletes once they have."""
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(source_url, autocommit=True) as conn:
            marker = read_markers(conn, [table])[table]
        if marker != before:
            return marker
        if time.monotonic() > deadline:
            raise AssertionError(f"{table}: the delete statistics did not move from {before} in {timeout:.0f} s")
        time.sleep(0.1)
