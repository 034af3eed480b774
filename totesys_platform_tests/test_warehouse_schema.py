"""The warehouse schema in a real PostgreSQL: introspected from pg_catalog and compared with star_schema;
migrations are idempotent, versioned and serialised; views, load state and reset behave."""

from __future__ import annotations

import datetime as dt
import threading

import psycopg
import pytest

from totesys_platform.star_schema import FACTS, TARGET_TABLES
from totesys_platform.warehouse.loader import load_table
from totesys_platform.lake.delta import Position
from totesys_platform.warehouse.schema import (
    LATEST_VERSION, WarehouseSchemaError, ensure_schema, get_load_position, reset_warehouse, schema_drift,
    set_load_state,
)
from totesys_platform_tests.test_warehouse_loader import (
    T1, T2, T3, arrow, load_dimensions, payment_row, sales_row,
)

# format_type() spellings of star_schema's SQL types, written out by hand so the test checks the DDL.
PG_TYPE = {
    "integer": "integer", "text": "text", "varchar": "character varying", "varchar(3)": "character varying(3)",
    "numeric(10,2)": "numeric(10,2)", "time(3)": "time(3) without time zone", "date": "date", "boolean": "boolean",
    "timestamp(3)": "timestamp(3) without time zone",
}


@pytest.fixture
def conn(warehouse_url):
    with psycopg.connect(warehouse_url) as connection:
        assert ensure_schema(connection) == LATEST_VERSION
        yield connection


def _columns(conn, table):
    return conn.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity
           FROM pg_attribute a WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
           ORDER BY a.attnum""", (f"public.{table}",)).fetchall()


def _constraints(conn, table, kind):
    """(constraint columns, referenced table, referenced columns) for constraints of one kind."""
    return sorted(conn.execute(
        """SELECT (SELECT array_agg(a.attname ORDER BY k.ord) FROM unnest(c.conkey) WITH ORDINALITY k(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum),
                  c.confrelid::regclass::text,
                  (SELECT array_agg(a.attname ORDER BY k.ord) FROM unnest(c.confkey) WITH ORDINALITY k(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum)
           FROM pg_constraint c WHERE c.conrelid = %s::regclass AND c.contype = %s""",
        (f"public.{table}", kind)).fetchall(), key=str)


@pytest.mark.parametrize("table", list(TARGET_TABLES))
def test_table_matches_star_schema(conn, table):
    target = TARGET_TABLES[table]
    expected = [(c.name, PG_TYPE[c.sql_type], not c.nullable, "") for c in target.columns]
    if target.kind == "fact":
        expected.insert(0, (target.surrogate_key, "bigint", True, "a"))  # 'a' = GENERATED ALWAYS AS IDENTITY
    assert _columns(conn, table) == expected

    primary = [target.surrogate_key] if target.kind == "fact" else [target.natural_key]
    assert _constraints(conn, table, "p") == [(primary, "-", None)]
    unique = [(list(target.version_key), "-", None)] if target.kind == "fact" else []
    assert _constraints(conn, table, "u") == unique
    foreign = sorted(
        ([c.name], c.references.split(".")[0], [c.references.split(".")[1]])
        for c in target.columns if c.references)
    assert _constraints(conn, table, "f") == sorted(foreign, key=str)


def test_every_fact_date_column_references_dim_date(conn):
    for fact in FACTS:
        dates = [c for c in TARGET_TABLES[fact].columns if c.sql_type == "date"]
        assert len(dates) >= 3
        refs = {tuple(cols): ref for cols, ref, _ in _constraints(conn, fact, "f")}
        assert all(refs[(c.name,)] == "dim_date" for c in dates)


def test_fact_foreign_key_columns_are_indexed(conn):
    indexed = {row[0] for row in conn.execute(
        """SELECT t.relname || '.' || a.attname FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
           JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0]""")}
    for fact in FACTS:
        for col in TARGET_TABLES[fact].columns:
            if col.references or col.name == TARGET_TABLES[fact].natural_key:
                assert f"{fact}.{col.name}" in indexed


def test_meta_tables_exist_with_their_columns(conn):
    cols = conn.execute(
        """SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns
           WHERE table_schema = 'totesys_meta' ORDER BY table_name, ordinal_position""").fetchall()
    assert cols == [
        ("load_state", "table_name", "text", "NO"), ("load_state", "processed_version", "bigint", "NO"),
        ("load_state", "loaded_at", "timestamp with time zone", "YES"),
        ("load_state", "processed_table_id", "text", "NO"), ("load_state", "processed_committed_at", "bigint", "NO"),
        ("load_state", "row_count", "bigint", "YES"),
        ("schema_migrations", "version", "integer", "NO"),
        ("schema_migrations", "applied_at", "timestamp with time zone", "NO"),
        ("schema_migrations", "description", "text", "NO"),
    ]


def _catalog_snapshot(conn):
    return conn.execute(
        """SELECT c.oid::regclass::text, c.relkind, c.relfilenode FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'totesys_meta')
           ORDER BY 1""").fetchall()


def test_ensure_schema_twice_is_a_no_op(conn):
    before = _catalog_snapshot(conn)
    conn.commit()
    assert ensure_schema(conn) == LATEST_VERSION
    assert _catalog_snapshot(conn) == before
    assert conn.execute("SELECT version, description FROM totesys_meta.schema_migrations ORDER BY 1").fetchall() == [
        (1, "star schema: 8 dimensions, 3 append-only facts, current views, load state"),
        (2, "load state: commit id of the processed batch loaded through"),
        (3, "load state: the processed Delta table, version and commit time loaded through"),
        (4, "facts: deleted_at (when the source row was seen deleted); current views leave deleted orders and "
            "payments out"),
        (5, "facts: the current views read the version key's index backwards; the (id, last_updated DESC) indexes "
            "are dropped"),
        (6, "load state: the table's row count after the load")]


def test_ensure_schema_on_an_idle_connection_commits(warehouse_url):
    with psycopg.connect(warehouse_url) as conn:
        ensure_schema(conn)
        with psycopg.connect(warehouse_url) as other:
            assert other.execute("SELECT to_regclass('public.fact_payment') IS NOT NULL").fetchone() == (True,)


def test_concurrent_ensure_schema_calls_serialise(warehouse_url):
    results, errors = [], []
    barrier = threading.Barrier(4)

    def migrate():
        try:
            with psycopg.connect(warehouse_url) as conn:
                barrier.wait()
                results.append(ensure_schema(conn))
        except Exception as err:  # collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and results == [LATEST_VERSION] * 4
    with psycopg.connect(warehouse_url) as conn:
        assert conn.execute("SELECT count(*) FROM totesys_meta.schema_migrations").fetchone() == (LATEST_VERSION,)


def test_a_newer_schema_version_is_refused(conn):
    conn.execute("INSERT INTO totesys_meta.schema_migrations (version, description) VALUES (99, 'future')")
    conn.commit()
    with pytest.raises(WarehouseSchemaError,
                       match=rf"schema version\(s\) \[99\], newer than this code knows \({LATEST_VERSION}\)"):
        ensure_schema(conn)


def test_drift_from_star_schema_is_reported(conn):
    conn.execute("ALTER TABLE dim_staff DROP COLUMN email_address")
    conn.execute("ALTER TABLE dim_currency ALTER COLUMN currency_code TYPE varchar(5)")
    conn.commit()
    with pytest.raises(WarehouseSchemaError) as err:
        ensure_schema(conn)
    message = str(err.value)
    assert "dim_staff has 5 columns, expected 6 (missing: email_address)" in message
    assert ("dim_currency column 2 is currency_code character varying(5) NOT NULL, "
            "expected currency_code character varying(3) NOT NULL") in message
    assert "Add a migration" in message


def test_current_views_return_the_latest_version(conn):
    load_dimensions(conn)
    load_table(conn, "fact_sales_order", arrow("fact_sales_order", [
        sales_row(1, T2, units_sold=2), sales_row(1, T1, units_sold=1), sales_row(1, T3, units_sold=3),
        sales_row(2, T1, units_sold=9)]), "append_versions")
    load_table(conn, "fact_payment", arrow("fact_payment", [
        payment_row(1, T1), payment_row(1, T2.replace(hour=7, minute=55, microsecond=1000), paid=True)]),
        "append_versions")
    current = conn.execute(
        "SELECT sales_order_id, units_sold, last_updated_date FROM fact_sales_order_current ORDER BY 1").fetchall()
    assert current == [(1, 3, T3.date()), (2, 9, T1.date())]
    assert conn.execute("SELECT payment_id, paid FROM fact_payment_current").fetchall() == [(1, True)]
    assert conn.execute("SELECT count(*) FROM fact_purchase_order_current").fetchone() == (0,)
    view_columns = [r[0] for r in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'fact_sales_order_current' "
        "ORDER BY ordinal_position")]
    assert view_columns == ["sales_record_id", *TARGET_TABLES["fact_sales_order"].current_columns]


def test_current_views_leave_out_an_order_whose_latest_version_was_seen_deleted(conn):
    load_dimensions(conn)
    seen = dt.datetime(2026, 1, 1, 12, 0, 0, 123000)
    load_table(conn, "fact_sales_order", arrow("fact_sales_order", [
        sales_row(1, T1, units_sold=1), sales_row(1, T2, units_sold=2, deleted_at=seen),
        sales_row(2, T1, units_sold=9)]), "append_versions")
    assert conn.execute("SELECT sales_order_id FROM fact_sales_order_current").fetchall() == [(2,)]
    # History stays, with when the deletion was seen.
    assert conn.execute("SELECT units_sold, deleted_at FROM fact_sales_order WHERE sales_order_id = 1 "
                        "ORDER BY last_updated_date").fetchall() == [(1, None), (2, seen)]


def test_a_current_view_that_drifted_from_star_schema_is_reported(conn):
    conn.execute("DROP VIEW fact_payment_current")
    conn.execute("CREATE VIEW fact_payment_current AS SELECT payment_record_id, payment_id FROM fact_payment")
    assert schema_drift(conn) == [
        "view fact_payment_current has columns payment_record_id, payment_id, expected "
        + ", ".join(["payment_record_id", *TARGET_TABLES["fact_payment"].current_columns])]


def _plan(conn, query: str) -> str:
    return "\n".join(row[0] for row in conn.execute("EXPLAIN " + query))


@pytest.mark.parametrize("fact", FACTS)
def test_a_current_view_reads_the_version_key_index_backwards_without_a_sort(conn, fact):
    """The view needs no index of its own: the fact's unique version key, read backwards, gives each id's
    latest version first (forced onto the index here: on a tiny table the planner would scan the heap)."""
    indexes = {row[0] for row in conn.execute(
        "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = %s::regclass", (f"public.{fact}",))}
    assert f"ix_{fact}_latest" not in indexes and f"{fact}_version_key" in indexes
    conn.execute("SET LOCAL enable_seqscan = off")
    conn.execute("SET LOCAL enable_bitmapscan = off")
    plan = _plan(conn, f"SELECT * FROM {fact}_current")
    assert f"Index Scan Backward using {fact}_version_key" in plan and "Sort" not in plan, plan
    natural = TARGET_TABLES[fact].natural_key
    plan = _plan(conn, f"SELECT * FROM {fact}_current WHERE {natural} = 7")
    assert f"using {fact}_version_key" in plan and "Sort" not in plan, plan


def _view_order(conn, fact: str) -> str:
    definition = conn.execute("SELECT pg_get_viewdef(%s::regclass)", (f"{fact}_current",)).fetchone()[0]
    return " ".join(definition[definition.index("ORDER BY"):].split())


def test_migration_5_turns_a_version_4_warehouse_onto_the_version_key_and_keeps_its_rows(conn):
    load_dimensions(conn)
    load_table(conn, "fact_sales_order", arrow("fact_sales_order", [
        sales_row(1, T1, units_sold=1), sales_row(1, T2, units_sold=2)]), "append_versions")
    # Back to what version 4 left: the views by ascending id, and an index of their own each.
    for fact in FACTS:
        natural, date_col, time_col = TARGET_TABLES[fact].version_key
        conn.execute(f"CREATE INDEX ix_{fact}_latest ON {fact} ({natural}, {date_col} DESC, {time_col} DESC)")
        definition = conn.execute("SELECT pg_get_viewdef(%s::regclass)", (f"{fact}_current",)).fetchone()[0]
        conn.execute(f"CREATE OR REPLACE VIEW {fact}_current AS "
                     + definition.replace(f"{natural} DESC,", f"{natural},", 1))
        assert _view_order(conn, fact).startswith(f"ORDER BY {fact}.{natural}, "), _view_order(conn, fact)
    conn.execute("DELETE FROM totesys_meta.schema_migrations WHERE version = 5")
    conn.commit()
    assert ensure_schema(conn) == LATEST_VERSION
    for fact in FACTS:
        natural, date_col, time_col = TARGET_TABLES[fact].version_key
        assert _view_order(conn, fact).startswith(
            f"ORDER BY {fact}.{natural} DESC, {fact}.{date_col} DESC, {fact}.{time_col} DESC"), _view_order(conn, fact)
        assert conn.execute("SELECT to_regclass(%s)", (f"public.ix_{fact}_latest",)).fetchone() == (None,)
    assert conn.execute("SELECT sales_order_id, units_sold FROM fact_sales_order_current").fetchall() == [(1, 2)]
    assert conn.execute("SELECT count(*) FROM fact_sales_order").fetchone() == (2,)


def test_current_view_breaks_same_day_ties_by_time(conn):
    load_dimensions(conn)
    morning, noon = T1.replace(hour=8, microsecond=1000), T1.replace(hour=12)
    load_table(conn, "fact_sales_order", arrow("fact_sales_order", [
        sales_row(5, noon, units_sold=12), sales_row(5, morning, units_sold=8)]), "append_versions")
    assert conn.execute("SELECT units_sold FROM fact_sales_order_current").fetchall() == [(12,)]


def test_load_state_is_recorded_in_the_callers_transaction(conn, warehouse_url):
    assert get_load_position(conn, "dim_staff") is None
    set_load_state(conn, "dim_staff", Position("t", 3, 1))
    conn.rollback()
    assert get_load_position(conn, "dim_staff") is None
    set_load_state(conn, "dim_staff", Position("t", 3, 1))
    set_load_state(conn, "dim_staff", Position("t", 5, 2))
    conn.commit()
    with psycopg.connect(warehouse_url) as other:
        assert get_load_position(other, "dim_staff") == Position("t", 5, 2)
        assert other.execute("SELECT loaded_at IS NOT NULL FROM totesys_meta.load_state").fetchone() == (True,)
    assert get_load_position(conn, "fact_payment") is None


def test_load_state_refuses_unknown_table_and_bad_position(conn):
    with pytest.raises(ValueError, match="unknown warehouse table 'dim_people'"):
        set_load_state(conn, "dim_people", Position("t", 1, 0))
    with pytest.raises(ValueError, match="unknown warehouse table 'dim_people'"):
        get_load_position(conn, "dim_people")
    with pytest.raises(ValueError, match="must be a processed table's Position"):
        set_load_state(conn, "dim_staff", 3)


def test_reset_warehouse_empties_tables_and_state_but_keeps_schema(conn):
    load_dimensions(conn)
    load_table(conn, "fact_sales_order", arrow("fact_sales_order", [sales_row(1, T1)]), "append_versions")
    set_load_state(conn, "fact_sales_order", Position("t", 4, 0))
    conn.commit()

    reset_warehouse(conn)

    for table in TARGET_TABLES:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
    assert conn.execute("SELECT count(*) FROM totesys_meta.load_state").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM totesys_meta.schema_migrations").fetchone() == (LATEST_VERSION,)
    load_dimensions(conn)
    load_table(conn, "fact_sales_order", arrow("fact_sales_order", [sales_row(1, T1)]), "append_versions")
    assert conn.execute("SELECT sales_record_id FROM fact_sales_order").fetchall() == [(1,)]
