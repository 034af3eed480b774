"""The totesys simulator: creates the real totesys schema, seeds history, and writes live activity."""

from __future__ import annotations

from importlib import resources

import psycopg


def schema_sql() -> str:
    return resources.files("totesys_platform.source").joinpath("totesys_schema.sql").read_text()


def create_schema(conn: psycopg.Connection) -> None:
    """Create the 11 totesys tables, the two enums and `_prisma_migrations` (fails if they exist)."""
    conn.execute(schema_sql())
