"""The warehouse: one asset per table, written by the Postgres IO manager."""
