import psycopg

from totesys_platform.source.contract import SOURCE_TABLES

_COLUMNS_SQL = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.relname, a.attnum
"""


def test_simulator_schema_matches_the_contract_column_by_column(totesys_url):
    with psycopg.connect(totesys_url) as conn:
        rows = conn.execute(_COLUMNS_SQL).fetchall()
    actual: dict[str, list[tuple[str, str, bool]]] = {}
    for table, column, pg_type, nullable in rows:
        actual.setdefault(table, []).append((column, pg_type, nullable))
    assert "_prisma_migrations" in actual
    for table in SOURCE_TABLES.values():
        expected = [(c.name, c.pg_type, c.nullable) for c in table.columns]
        assert actual[table.name] == expected, table.name
    assert set(actual) == set(SOURCE_TABLES) | {"_prisma_migrations"}
