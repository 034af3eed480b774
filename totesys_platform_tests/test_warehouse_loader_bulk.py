"""Bulk fact loads against a real PostgreSQL: into an empty fact (initial load, rebuild) or a big catch-up, the
loader sets the fact's foreign keys and secondary indexes aside, inserts, then restores them exactly as the
catalog had them, in the caller's transaction; a failure after they were dropped leaves the table as it was."""

import threading
import time

import psycopg
import pytest

from totesys_platform.warehouse import loader
from totesys_platform.warehouse.loader import LoadStats, WarehouseLoadError, load_table
from totesys_platform.warehouse.schema import ensure_schema
from totesys_platform_tests.test_warehouse_loader import (
    T1, T2, T3, arrow, load_dimensions, location_row, rows, sales_row, staff_row,
)

FACT = "fact_sales_order"


@pytest.fixture
def loaded(warehouse_url):
    with psycopg.connect(warehouse_url) as conn:
        ensure_schema(conn)
        load_dimensions(conn)
        conn.commit()
        yield conn


def catalog(conn: psycopg.Connection, table: str = FACT) -> dict:
    """Everything about the table's indexes and constraints that a bulk load must give back unchanged."""
    return {
        "indexes": conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = %s ORDER BY 1",
            (table,)).fetchall(),
        "constraints": conn.execute(
            "SELECT conname, contype, pg_get_constraintdef(oid), convalidated FROM pg_constraint "
            "WHERE conrelid = %s::regclass ORDER BY 1", (table,)).fetchall(),
        "comments": conn.execute(
            "SELECT c.relname, obj_description(c.oid, 'pg_class') "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = %s::regclass ORDER BY 1", (table,)).fetchall(),
    }


def seen_during_merge(monkeypatch) -> list[dict]:
    """Record the fact's catalog at the moment the rows go in (a merge from staging or a direct COPY)."""
    seen: list[dict] = []
    for name in ("_merge_versions", "_copy_into_empty"):
        real = getattr(loader, name)

        def insert(conn, target, *args, _real=real, _name=name):
            seen.append(catalog(conn, target.name) | {"path": _name})
            return _real(conn, target, *args)

        monkeypatch.setattr(loader, name, insert)
    return seen


def names(snapshot: dict) -> tuple[set[str], set[str]]:
    """Index names, and constraint names other than NOT NULL (a constraint of its own since PostgreSQL 18)."""
    return {n for n, _ in snapshot["indexes"]}, {n for n, kind, _, _ in snapshot["constraints"] if kind != "n"}


@pytest.mark.parametrize("repeated_row, path", [(True, "_merge_versions"), (False, "_copy_into_empty")],
                         ids=["a-version-twice-staged", "one-row-per-version-copied-straight-in"])
def test_an_initial_load_builds_the_indexes_and_constraints_after_and_restores_them_exactly(
        loaded, monkeypatch, repeated_row, path):
    conn = loaded
    before = catalog(conn)
    index_names, constraint_names = names(before)
    # 9 foreign-key columns, the version key (which also serves the current view) and the primary key
    assert len(index_names) == 11 and f"{FACT}_version_key" in constraint_names
    work_mem = conn.execute("SHOW work_mem").fetchone()[0]
    seen = seen_during_merge(monkeypatch)

    # An identical row twice collapses (through a staging table); one row per version goes straight in.
    batch = arrow(FACT, [sales_row(3, T2), sales_row(1, T1), sales_row(2, T1), *[sales_row(1, T1)] * repeated_row,
                         sales_row(1, T3)])
    assert load_table(conn, FACT, batch, "append_versions") == LoadStats(FACT, 4 + repeated_row, 4, 0, 0)

    # During the insert nothing was left: no index, no key, no foreign key.
    assert [s["path"] for s in seen] == [path]
    assert names(seen[0]) == (set(), set())
    assert catalog(conn) == before
    assert conn.execute("SHOW work_mem").fetchone()[0] == work_mem  # raised for the load only
    conn.commit()
    # Record ids follow the versions' time, then the natural id, as the ordinary merge assigns them.
    assert [(r[1], r[4]) for r in rows(conn, FACT, "sales_record_id")] == [
        (1, T1.date()), (2, T1.date()), (3, T2.date()), (1, T3.date())]
    assert load_table(conn, FACT, batch, "append_versions") == LoadStats(FACT, 4 + repeated_row, 0, 0, 4)
    conn.commit()
    assert catalog(conn) == before
    # The record id is generated again (ALWAYS), and the next one follows the last: no gap, no reuse.
    assert conn.execute("SELECT attidentity FROM pg_attribute WHERE attrelid = 'fact_sales_order'::regclass "
                        "AND attname = 'sales_record_id'").fetchone() == ("a",)
    load_table(conn, FACT, arrow(FACT, [sales_row(9, T3)]), "append_versions")
    assert conn.execute("SELECT sales_record_id FROM fact_sales_order WHERE sales_order_id = 9").fetchone() == (5,)
    conn.rollback()
    # The constraints are back in force.
    columns = ", ".join(loader.target_table(FACT).column_names)  # test-only constant names
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(f"INSERT INTO fact_sales_order ({columns}) SELECT {columns} FROM fact_sales_order LIMIT 1")
    conn.rollback()
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute("UPDATE fact_sales_order SET design_id = 999999 WHERE sales_order_id = 1")
    conn.rollback()


def test_indexes_added_outside_the_schema_come_back_with_their_definition_and_comment(loaded):
    conn = loaded
    conn.execute("CREATE INDEX ix_custom_partial ON fact_sales_order (units_sold DESC) WHERE units_sold > 50000")
    conn.execute("CREATE INDEX ix_custom_expr ON fact_sales_order ((units_sold * unit_price))")
    conn.execute("COMMENT ON INDEX ix_custom_partial IS 'big orders: O''Keefe asked'")
    conn.commit()
    before = catalog(conn)
    load_table(conn, FACT, arrow(FACT, [sales_row(1, T1), sales_row(2, T1, units_sold=90_000)]), "append_versions")
    conn.commit()
    assert catalog(conn) == before
    assert ("ix_custom_partial", "big orders: O'Keefe asked") in before["comments"]


def test_a_big_catch_up_keeps_the_version_key_for_its_anti_join(loaded, monkeypatch):
    conn = loaded
    load_table(conn, FACT, arrow(FACT, [sales_row(1, T1), sales_row(2, T1)]), "append_versions")
    conn.commit()
    before = catalog(conn)
    monkeypatch.setattr(loader, "BULK_ROWS", 3)  # 4 rows into a table of 2: a bulk load
    seen = seen_during_merge(monkeypatch)

    batch = arrow(FACT, [sales_row(1, T1), sales_row(2, T2), sales_row(3, T1), sales_row(4, T3)])
    assert load_table(conn, FACT, batch, "append_versions") == LoadStats(FACT, 4, 3, 0, 1)

    assert names(seen[0]) == ({f"{FACT}_pkey", f"{FACT}_version_key"}, {f"{FACT}_pkey", f"{FACT}_version_key"})
    assert seen[0]["path"] == "_merge_versions"
    assert catalog(conn) == before
    conn.commit()
    assert conn.execute("SELECT count(*) FROM fact_sales_order").fetchone() == (5,)


def test_a_tick_into_a_larger_table_leaves_every_index_in_place(loaded, monkeypatch):
    conn = loaded
    load_table(conn, FACT, arrow(FACT, [sales_row(i, T1) for i in range(1, 11)]), "append_versions")
    conn.commit()
    before = catalog(conn)
    monkeypatch.setattr(loader, "BULK_ROWS", 2)
    monkeypatch.setattr(loader, "BULK_TABLE_RATIO", 2)  # 3 rows into a table of 10: more than 2x, a tick
    seen = seen_during_merge(monkeypatch)
    stats = load_table(conn, FACT, arrow(FACT, [sales_row(1, T2), sales_row(11, T1), sales_row(1, T1)]),
                       "append_versions")
    assert stats == LoadStats(FACT, 3, 2, 0, 1)
    assert seen == [before | {"path": "_merge_versions"}]


def _with_check_constraint(conn: psycopg.Connection) -> None:
    """A rule the loader does not check itself, so PostgreSQL refuses the INSERT after the indexes were dropped."""
    conn.execute("ALTER TABLE fact_sales_order ADD CONSTRAINT test_no_13 CHECK (units_sold <> 13)")
    conn.commit()


@pytest.mark.parametrize("existing", [0, 2], ids=["initial", "catch-up"])
@pytest.mark.parametrize("failure, message", [
    ("database", r"refused the load: .*test_no_13"),
    ("reference", r"dangling reference.*design_id = 424242 is not in dim_design\.design_id.*sales_order_id 12"),
])
def test_a_failure_after_the_drop_leaves_indexes_constraints_and_rows_as_they_were(
        loaded, monkeypatch, existing, failure, message):
    conn = loaded
    _with_check_constraint(conn)
    if existing:
        load_table(conn, FACT, arrow(FACT, [sales_row(i, T1) for i in range(1, existing + 1)]), "append_versions")
        conn.commit()
    before, rows_before = catalog(conn), rows(conn, FACT, "sales_record_id")
    monkeypatch.setattr(loader, "BULK_ROWS", 3)
    seen = seen_during_merge(monkeypatch)
    bad = {
        "database": [sales_row(12, T1, units_sold=13)],
        "reference": [sales_row(12, T1, design_id=424242)],
    }[failure]
    batch = arrow(FACT, [sales_row(10, T1), sales_row(11, T1), *bad])

    with pytest.raises(WarehouseLoadError, match=message):
        load_table(conn, FACT, batch, "append_versions")
    assert len(names(seen[0])[0]) < len(names(before)[0]), "the failure must come after the drop"
    conn.rollback()

    assert catalog(conn) == before
    assert rows(conn, FACT, "sales_record_id") == rows_before
    # And the table loads normally afterwards.
    assert load_table(conn, FACT, arrow(FACT, [sales_row(10, T1), sales_row(11, T1)]), "append_versions").inserted == 2
    conn.commit()
    assert catalog(conn) == before


def test_an_empty_dimension_given_each_key_once_is_copied_straight_in(warehouse_url, monkeypatch):
    staged = []
    monkeypatch.setattr(loader, "_stage", lambda *a: staged.append(a) or pytest.fail("staged"))
    with psycopg.connect(warehouse_url) as conn:
        ensure_schema(conn)
        batch = arrow("dim_location", [location_row(2, address_line_2=""), location_row(1, address_line_2=None)])
        assert load_table(conn, "dim_location", batch, "upsert") == LoadStats("dim_location", 2, 2, 0, 0)
        assert conn.execute("SELECT location_id, address_line_2 FROM dim_location ORDER BY 1").fetchall() == [
            (1, None), (2, "")]  # NULL and "" stay apart
    assert staged == []


@pytest.mark.parametrize("already_there", [False, True], ids=["empty", "not-empty"])
def test_a_dimension_upsert_keeps_the_last_row_of_a_key_into_an_empty_table_or_not(warehouse_url, already_there):
    with psycopg.connect(warehouse_url) as conn:
        ensure_schema(conn)
        if already_there:
            load_table(conn, "dim_staff", arrow("dim_staff", [staff_row(1), staff_row(9)]), "upsert")
        batch = arrow("dim_staff", [staff_row(i % 3, first_name=f"v{i}") for i in range(9)])
        stats = load_table(conn, "dim_staff", batch, "upsert")
        assert stats == (LoadStats("dim_staff", 9, 2, 1, 0) if already_there else LoadStats("dim_staff", 9, 3, 0, 0))
        assert conn.execute("SELECT staff_id, first_name FROM dim_staff WHERE staff_id < 3 ORDER BY 1").fetchall() == [
            (0, "v6"), (1, "v7"), (2, "v8")]
        assert load_table(conn, "dim_staff", batch, "upsert") == LoadStats("dim_staff", 9, 0, 0, 3)


@pytest.mark.parametrize("table, rows_in_batch", [(FACT, 5), (FACT, 30_000), ("dim_staff", 5)],
                         ids=["fact-small", "fact-bulk", "dimension"])
def test_two_loads_of_an_empty_table_at_once_take_turns(loaded, warehouse_url, table, rows_in_batch):
    """B starts while A's initial load is not committed: B waits, then sees A's rows (no duplicate, no deadlock)."""
    if table == FACT:
        batch, mode = arrow(FACT, [sales_row(i, T1) for i in range(1, rows_in_batch + 1)]), "append_versions"
    else:
        loaded.execute("TRUNCATE dim_staff CASCADE")
        loaded.commit()
        batch, mode = arrow(table, [staff_row(i) for i in range(1, rows_in_batch + 1)]), "upsert"
    assert load_table(loaded, table, batch, mode).inserted == rows_in_batch  # A, not committed
    result: dict = {}

    def b() -> None:
        try:
            with psycopg.connect(warehouse_url) as conn_b:
                result["stats"] = load_table(conn_b, table, batch, mode)
        except BaseException as err:  # reported by the main thread
            result["error"] = err

    thread = threading.Thread(target=b)
    thread.start()
    waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    with psycopg.connect(warehouse_url, autocommit=True) as observer:
        for _ in range(300):
            if observer.execute(waiting).fetchone()[0]:
                break
            time.sleep(0.05)
        else:
            pytest.fail("B never waited for A")
    loaded.commit()
    thread.join(60)

    assert "error" not in result, result.get("error")
    assert result["stats"] == LoadStats(table, rows_in_batch, 0, 0, rows_in_batch)
    assert len(rows(loaded, table, "1")) == rows_in_batch
