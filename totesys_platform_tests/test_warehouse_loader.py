"""The COPY-based loader against a real PostgreSQL: upsert and append-versions merges, exact round trips,
clear errors for bad data, and atomicity (the caller's rollback leaves the target unchanged)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from totesys_platform.star_schema import TARGET_TABLES
from totesys_platform.warehouse import copy_in, loader
from totesys_platform.warehouse.loader import LoadStats, WarehouseLoadError, load_table
from totesys_platform.warehouse.reads import read_table
from totesys_platform.warehouse.schema import ensure_schema

# ---- sample data, also used by the schema and IO manager tests ---------------------------------------

FIRST_DAY = dt.date(2024, 1, 1)
DAYS = 20


def arrow(table: str, rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=TARGET_TABLES[table].arrow_schema)


def date_rows(first: dt.date = FIRST_DAY, days: int = DAYS) -> list[dict]:
    rows = []
    for offset in range(days):
        d = first + dt.timedelta(days=offset)
        rows.append({
            "date_id": d, "year": d.year, "month": d.month, "day": d.day, "day_of_week": d.isoweekday(),
            "day_name": d.strftime("%A"), "month_name": d.strftime("%B"), "quarter": (d.month - 1) // 3 + 1,
        })
    return rows


def staff_row(staff_id: int, **changes) -> dict:
    row = {"staff_id": staff_id, "first_name": f"First{staff_id}", "last_name": "O'Keefe",
           "department_name": "Sales", "location": "Leds", "email_address": f"s{staff_id}@terrifictotes.com"}
    return row | changes


def location_row(location_id: int, **changes) -> dict:
    row = {"location_id": location_id, "address_line_1": f"{location_id} Main St", "address_line_2": None,
           "district": None, "city": "Leeds", "postal_code": "01234", "country": "Democratic People's Republic of Korea",
           "phone": "1803 637401"}
    return row | changes


def dimension_tables() -> dict[str, pa.Table]:
    """A small, consistent set of all 8 dimensions: ids 1-2 everywhere, 20 days from 2024-01-01."""
    return {
        "dim_date": arrow("dim_date", date_rows()),
        "dim_staff": arrow("dim_staff", [staff_row(1), staff_row(2, location=None)]),
        "dim_location": arrow("dim_location", [location_row(1), location_row(2, district="Avon")]),
        "dim_currency": arrow("dim_currency", [
            {"currency_id": 1, "currency_code": "GBP", "currency_name": "Pound Sterling"},
            {"currency_id": 2, "currency_code": "USD", "currency_name": "US Dollar"}]),
        "dim_design": arrow("dim_design", [
            {"design_id": i, "design_name": f"Design {i}", "file_location": "/usr", "file_name": f"d{i}.json"}
            for i in (1, 2)]),
        "dim_counterparty": arrow("dim_counterparty", [{
            "counterparty_id": i, "counterparty_legal_name": f"Party {i}",
            "counterparty_legal_address_line_1": "1 Road", "counterparty_legal_address_line_2": None,
            "counterparty_legal_district": None, "counterparty_legal_city": "Leeds",
            "counterparty_legal_postal_code": "LS1", "counterparty_legal_country": "UK",
            "counterparty_legal_phone_number": "0113"} for i in (1, 2)]),
        "dim_payment_type": arrow("dim_payment_type", [
            {"payment_type_id": 1, "payment_type_name": "SALES_RECEIPT"},
            {"payment_type_id": 2, "payment_type_name": "PURCHASE_PAYMENT"}]),
        "dim_transaction": arrow("dim_transaction", [
            {"transaction_id": 1, "transaction_type": "SALE", "sales_order_id": 1, "purchase_order_id": None},
            {"transaction_id": 2, "transaction_type": "PURCHASE", "sales_order_id": None, "purchase_order_id": 1}]),
    }


def sales_row(order_id: int, updated: dt.datetime, **changes) -> dict:
    row = {
        "sales_order_id": order_id, "created_date": FIRST_DAY, "created_time": dt.time(9, 0, 0, 5000),
        "last_updated_date": updated.date(), "last_updated_time": updated.time(),
        "sales_staff_id": 1, "counterparty_id": 2, "units_sold": 42_000, "unit_price": Decimal("3.94"),
        "currency_id": 1, "design_id": 2, "agreed_payment_date": FIRST_DAY + dt.timedelta(days=5),
        "agreed_delivery_date": FIRST_DAY + dt.timedelta(days=3), "agreed_delivery_location_id": 1,
    }
    return row | changes


def payment_row(payment_id: int, updated: dt.datetime, **changes) -> dict:
    row = {
        "payment_id": payment_id, "created_date": FIRST_DAY, "created_time": dt.time(8, 0),
        "last_updated_date": updated.date(), "last_updated_time": updated.time(),
        "transaction_id": 1, "counterparty_id": 1, "payment_amount": Decimal("99999999.99"), "currency_id": 2,
        "payment_type_id": 1, "paid": False, "payment_date": FIRST_DAY + dt.timedelta(days=2),
    }
    return row | changes


T1 = dt.datetime(2024, 1, 1, 9, 0, 0, 5000)
T2 = dt.datetime(2024, 1, 3, 7, 55, 0, 999000)
T3 = dt.datetime(2024, 1, 4, 12, 0, 0)


def load_dimensions(conn: psycopg.Connection) -> None:
    for name, data in dimension_tables().items():
        load_table(conn, name, data, "upsert")


def rows(conn: psycopg.Connection, table: str, order: str) -> list[tuple]:
    return conn.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()  # test-only constant names


# ---- fixtures -------------------------------------------------------------------------------------------

@pytest.fixture
def conn(warehouse_url):
    with psycopg.connect(warehouse_url) as connection:
        ensure_schema(connection)
        yield connection


@pytest.fixture(params=["binary", "csv"])
def copy_format(request, monkeypatch) -> str:
    """The loader's two COPY routes: binary, encoded by pgpq, and CSV, where pgpq has no wheel (Linux on ARM)."""
    if request.param == "csv":
        monkeypatch.setattr(copy_in, "pgpq", None)
    elif copy_in.pgpq is None:
        pytest.skip("pgpq is not installed here (Linux on ARM): the loader copies as CSV")
    return request.param


@pytest.fixture
def loaded(conn):
    """A warehouse with all dimensions loaded and committed."""
    load_dimensions(conn)
    conn.commit()
    return conn


# ---- upsert ----------------------------------------------------------------------------------------------

def test_upsert_inserts_updates_changed_and_leaves_equal_rows_untouched(conn):
    first = load_table(conn, "dim_staff", arrow("dim_staff", [staff_row(1), staff_row(2), staff_row(3)]), "upsert")
    conn.commit()
    assert first == LoadStats("dim_staff", staged=3, inserted=3, updated=0, unchanged=0)
    xmin_before = dict(conn.execute("SELECT staff_id, xmin::text FROM dim_staff").fetchall())

    batch = arrow("dim_staff", [staff_row(1), staff_row(2, department_name="Finance"), staff_row(4),
                                staff_row(3, location=None)])
    second = load_table(conn, "dim_staff", batch, "upsert")
    conn.commit()

    assert second == LoadStats("dim_staff", staged=4, inserted=1, updated=2, unchanged=1)
    xmin_after = dict(conn.execute("SELECT staff_id, xmin::text FROM dim_staff").fetchall())
    assert xmin_after[1] == xmin_before[1], "an unchanged row must not be rewritten"
    assert xmin_after[2] != xmin_before[2] and xmin_after[3] != xmin_before[3]
    assert conn.execute("SELECT department_name FROM dim_staff WHERE staff_id = 2").fetchone() == ("Finance",)
    assert conn.execute("SELECT location FROM dim_staff WHERE staff_id = 3").fetchone() == (None,)
    assert conn.execute("SELECT count(*) FROM dim_staff").fetchone() == (4,)


def test_upsert_rerun_of_same_batch_changes_nothing(conn):
    batch = dimension_tables()["dim_location"]
    load_table(conn, "dim_location", batch, "upsert")
    again = load_table(conn, "dim_location", batch, "upsert")
    assert again == LoadStats("dim_location", staged=2, inserted=0, updated=0, unchanged=2)


def test_upsert_duplicate_keys_in_one_batch_last_one_wins(conn, monkeypatch, copy_format):
    # Small COPY chunks so the duplicates straddle several writes: arrival order must survive chunking.
    monkeypatch.setattr(copy_in, "COPY_CHUNK_ROWS", 3)
    batch = arrow("dim_staff", [staff_row(i % 4, first_name=f"v{i}") for i in range(20)])
    stats = load_table(conn, "dim_staff", batch, "upsert")
    assert stats == LoadStats("dim_staff", staged=20, inserted=4, updated=0, unchanged=0)
    assert conn.execute("SELECT staff_id, first_name FROM dim_staff ORDER BY staff_id").fetchall() == [
        (0, "v16"), (1, "v17"), (2, "v18"), (3, "v19")]


# ---- append_versions -------------------------------------------------------------------------------------

def test_append_versions_adds_each_version_once_and_a_version_captured_again_updates_its_row(loaded):
    conn = loaded
    first = load_table(conn, "fact_sales_order", arrow("fact_sales_order", [sales_row(1, T1), sales_row(2, T1)]),
                       "append_versions")
    assert first == LoadStats("fact_sales_order", staged=2, inserted=2, updated=0, unchanged=0)

    # Order 1 gets a new version; order 2's version arrives a second time with different content (captured
    # again: changed in place in the source): its row takes the new content and keeps its record id.
    batch = arrow("fact_sales_order", [sales_row(1, T1), sales_row(1, T2, units_sold=7), sales_row(2, T1, units_sold=5)])
    second = load_table(conn, "fact_sales_order", batch, "append_versions")
    assert second == LoadStats("fact_sales_order", staged=3, inserted=1, updated=1, unchanged=1)

    rerun = load_table(conn, "fact_sales_order", batch, "append_versions")
    assert (rerun.inserted, rerun.updated, rerun.unchanged) == (0, 0, 3)
    history = conn.execute(
        "SELECT sales_record_id, sales_order_id, last_updated_date, last_updated_time, units_sold "
        "FROM fact_sales_order ORDER BY sales_record_id").fetchall()
    assert history == [
        (1, 1, T1.date(), T1.time(), 42_000), (2, 2, T1.date(), T1.time(), 5),
        (3, 1, T2.date(), T2.time(), 7)]


def test_append_versions_identical_duplicates_collapse(loaded):
    batch = arrow("fact_payment", [payment_row(1, T1), payment_row(1, T1), payment_row(1, T2, paid=True)])
    stats = load_table(loaded, "fact_payment", batch, "append_versions")
    assert stats == LoadStats("fact_payment", staged=3, inserted=2, updated=0, unchanged=0)


def test_append_versions_of_two_rows_for_one_version_in_a_batch_the_last_wins(loaded):
    batch = arrow("fact_payment", [payment_row(7, T2, paid=False), payment_row(8, T2), payment_row(7, T2, paid=True)])
    stats = load_table(loaded, "fact_payment", batch, "append_versions")
    assert (stats.inserted, stats.updated) == (2, 0)
    assert loaded.execute("SELECT paid FROM fact_payment WHERE payment_id = 7").fetchall() == [(True,)]


def test_fact_round_trips_exact_types(loaded, copy_format, monkeypatch):
    monkeypatch.setattr(copy_in, "COPY_CHUNK_ROWS", 1)  # each row its own batch: values at batch boundaries
    data = arrow("fact_payment", [
        payment_row(1, T1, payment_amount=Decimal("0.01"), paid=True),
        payment_row(2, T2, payment_amount=Decimal("-12.30"), created_time=dt.time(23, 59, 59, 999000),
                    deleted_at=dt.datetime(2024, 1, 5, 23, 59, 59, 999000)),
    ])
    load_table(loaded, "fact_payment", data, "append_versions")
    stored = loaded.execute(
        "SELECT payment_amount, created_time, last_updated_time, paid, payment_date FROM fact_payment "
        "ORDER BY payment_id").fetchall()
    assert stored == [
        (Decimal("0.01"), dt.time(8, 0), T1.time(), True, dt.date(2024, 1, 3)),
        (Decimal("-12.30"), dt.time(23, 59, 59, 999000), T2.time(), False, dt.date(2024, 1, 3)),
    ]
    back = read_table(loaded, "fact_payment")
    assert back.column_names[0] == "payment_record_id" and back.schema.field(0).type == pa.int64()
    assert back.drop_columns(["payment_record_id"]).equals(data)


def test_the_loader_copies_in_binary_where_pgpq_has_a_wheel():
    """pyproject.toml asks for pgpq everywhere but Linux on ARM; losing it would quietly triple the COPY's cost."""
    import platform
    if platform.machine() != "aarch64":
        assert copy_in.pgpq is not None


# ---- text: NULLs, empty strings, hostile and unicode text round-trip exactly ---------------------------

HOSTILE = [
    "'; DROP TABLE dim_staff; --", "O'Keefe", 'say "hi", then \\. leave', "", "NULL", "\\N", "line1\nline2\r\n",
    "tab\there", "Zürich 東京 🚚 עברית", "x" * 100_000, " leading and trailing ", "\\.",
]


def test_text_round_trips_exactly(conn, copy_format):
    data = arrow("dim_location", [
        location_row(i + 1, address_line_1=text, address_line_2=None if i % 2 else text, district="" if i % 3 else None)
        for i, text in enumerate(HOSTILE)
    ])
    load_table(conn, "dim_location", data, "upsert")
    conn.commit()
    stored = conn.execute(
        "SELECT address_line_1, address_line_2, district FROM dim_location ORDER BY location_id").fetchall()
    assert stored == [(r["address_line_1"], r["address_line_2"], r["district"]) for r in data.to_pylist()]
    assert read_table(conn, "dim_location").equals(data)
    assert conn.execute("SELECT to_regclass('public.dim_staff') IS NOT NULL").fetchone() == (True,)
    # The same text again is recognised as equal: nothing is rewritten.
    again = load_table(conn, "dim_location", data, "upsert")
    assert again.unchanged == len(HOSTILE) and again.updated == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.one_of(st.none(), st.text(st.characters(blacklist_characters="\x00",
                                                                 blacklist_categories=("Cs",)))),
                      min_size=1, max_size=6))
def test_any_text_round_trips_exactly(conn, copy_format, texts):
    data = arrow("dim_location", [location_row(i + 1, address_line_2=t, address_line_1=t or "")
                                  for i, t in enumerate(texts)])
    try:
        load_table(conn, "dim_location", data, "upsert")
        assert read_table(conn, "dim_location").equals(data)
    finally:
        conn.rollback()


def test_text_round_trips_through_a_warehouse_session_whatever_the_client_encoding_says(warehouse_url, monkeypatch):
    """A binary COPY's text is read in the session's client encoding: a warehouse session is UTF-8 even where
    PGCLIENTENCODING says LATIN1 (else "Zürich" would be stored as "ZÃ¼rich", without an error)."""
    from totesys_platform.warehouse.sessions import connect_warehouse

    monkeypatch.setenv("PGCLIENTENCODING", "LATIN1")
    data = arrow("dim_location", [location_row(1, city="Zürich 東京 🚚")])
    with connect_warehouse(warehouse_url) as session:
        ensure_schema(session)
        load_table(session, "dim_location", data, "upsert")
        assert session.execute("SELECT city FROM dim_location").fetchone() == ("Zürich 東京 🚚",)
        session.rollback()


def test_text_postgresql_cannot_store_is_refused_naming_the_table(conn, copy_format):
    data = arrow("dim_location", [location_row(1, city="nul\x00byte")])
    with pytest.raises(WarehouseLoadError, match="^dim_location: the warehouse refused the load: .*0x00"):
        load_table(conn, "dim_location", data, "upsert")


def test_null_int_stays_null_and_ints_stay_ints(conn, copy_format):
    data = dimension_tables()["dim_transaction"]
    load_table(conn, "dim_transaction", data, "upsert")
    assert conn.execute("SELECT sales_order_id, purchase_order_id FROM dim_transaction ORDER BY 1 NULLS LAST") \
        .fetchall() == [(1, None), (None, 1)]
    assert read_table(conn, "dim_transaction").equals(data)


# ---- bad input: clear errors -----------------------------------------------------------------------------

def test_dangling_reference_names_table_column_value_and_key(loaded):
    batch = arrow("fact_sales_order", [
        sales_row(10, T1, design_id=999), sales_row(11, T1, design_id=999), sales_row(12, T1)])
    with pytest.raises(WarehouseLoadError) as err:
        load_table(loaded, "fact_sales_order", batch, "append_versions")
    message = str(err.value)
    assert "fact_sales_order" in message
    assert "design_id = 999 is not in dim_design.design_id (2 row(s), sales_order_id 10, 11)" in message
    assert "Load the dimensions before the facts" in message


def test_dangling_date_reference_is_named(loaded):
    far = dt.date(2031, 5, 1)
    batch = arrow("fact_payment", [payment_row(3, T1, payment_date=far)])
    with pytest.raises(WarehouseLoadError, match=r"payment_date = 2031-05-01 is not in dim_date\.date_id .*payment_id 3"):
        load_table(loaded, "fact_payment", batch, "append_versions")


def test_fact_before_its_dimensions_fails_and_after_succeeds(conn):
    batch = arrow("fact_sales_order", [sales_row(1, T1)])
    with pytest.raises(WarehouseLoadError, match="fact_sales_order: dangling reference"):
        load_table(conn, "fact_sales_order", batch, "append_versions")
    conn.rollback()
    load_dimensions(conn)
    assert load_table(conn, "fact_sales_order", batch, "append_versions").inserted == 1


def test_schema_mismatch_is_refused_with_the_difference(conn):
    good = dimension_tables()["dim_currency"]
    retyped = good.set_column(0, "currency_id", good.column("currency_id").cast(pa.int64()))
    with pytest.raises(WarehouseLoadError, match="dim_currency: .*column currency_id is int64, expected int32"):
        load_table(conn, "dim_currency", retyped, "upsert")
    with pytest.raises(WarehouseLoadError, match="missing column\\(s\\) currency_name"):
        load_table(conn, "dim_currency", good.drop_columns(["currency_name"]), "upsert")
    with pytest.raises(WarehouseLoadError, match="unexpected column\\(s\\) extra"):
        load_table(conn, "dim_currency", good.append_column("extra", pa.array([1, 2])), "upsert")
    with pytest.raises(WarehouseLoadError, match="duplicate column name\\(s\\) currency_id"):
        load_table(conn, "dim_currency", good.append_column("currency_id", pa.array([1, 2], pa.int32())), "upsert")
    with pytest.raises(WarehouseLoadError, match="in the order"):
        load_table(conn, "dim_currency", good.select(["currency_code", "currency_id", "currency_name"]), "upsert")
    money = arrow("fact_payment", [payment_row(1, T1)])
    position = money.column_names.index("payment_amount")
    floats = money.set_column(position, "payment_amount", money.column("payment_amount").cast(pa.float64()))
    with pytest.raises(WarehouseLoadError, match="payment_amount is double, expected decimal128\\(10, 2\\)"):
        load_table(conn, "fact_payment", floats, "append_versions")


def test_a_date_postgresql_cannot_hold_is_refused_naming_the_table_and_nothing_is_merged(conn, copy_format):
    """A date 5.9 million years BC (Arrow holds it; PostgreSQL's dates start in 4714 BC) is refused with a
    WarehouseLoadError naming the table, by the server (CSV) or before it (binary: the encoder's own range)."""
    data = arrow("dim_date", date_rows(days=2))
    data = data.set_column(0, "date_id", pa.array([-2**31 + 5, 0], pa.date32()))
    with pytest.raises(WarehouseLoadError, match="^dim_date: .*Nothing is merged"):
        load_table(conn, "dim_date", data, "upsert")
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM dim_date").fetchone() == (0,)


def test_null_in_not_null_column_names_column_and_key(conn):
    schema = pa.schema([f.with_nullable(True) for f in TARGET_TABLES["dim_staff"].arrow_schema])
    data = pa.Table.from_pylist([staff_row(1), staff_row(5, email_address=None)], schema=schema)
    with pytest.raises(WarehouseLoadError, match="dim_staff: column email_address is NOT NULL .*staff_id 5"):
        load_table(conn, "dim_staff", data, "upsert")


def test_value_the_database_rejects_is_reported_with_the_table(conn, copy_format):
    data = arrow("dim_currency", [{"currency_id": 9, "currency_code": "ABCD", "currency_name": "Too long"}])
    with pytest.raises(WarehouseLoadError) as err:
        load_table(conn, "dim_currency", data, "upsert")
    message = str(err.value)
    assert message.startswith("dim_currency: the warehouse refused the load")
    assert "character varying(3)" in message and "currency_code" in message
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM dim_currency").fetchone() == (0,)


@pytest.mark.parametrize(("table", "mode", "pattern"), [
    ("dim_staff", "append_versions", "dim_staff is a dimension: its load mode is 'upsert'"),
    ("fact_payment", "upsert", "fact_payment is a fact: its load mode is 'append_versions'"),
    ("dim_staff", "merge", "unknown load mode 'merge'"),
    ("dim_people", "upsert", "unknown warehouse table 'dim_people'"),
])
def test_wrong_mode_or_table_is_refused(conn, table, mode, pattern):
    data = dimension_tables()["dim_staff"]
    with pytest.raises(WarehouseLoadError, match=pattern):
        load_table(conn, table, data, mode)


def test_autocommit_connection_without_transaction_is_refused(warehouse_url):
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        ensure_schema(conn)
        with pytest.raises(WarehouseLoadError, match="needs a transaction"):
            load_table(conn, "dim_staff", dimension_tables()["dim_staff"], "upsert")
        with conn.transaction():
            assert load_table(conn, "dim_staff", dimension_tables()["dim_staff"], "upsert").inserted == 2


def test_empty_batch_is_a_no_op(conn):
    empty = TARGET_TABLES["dim_staff"].arrow_schema.empty_table()
    assert load_table(conn, "dim_staff", empty, "upsert") == LoadStats("dim_staff", 0, 0, 0, 0)


# ---- transactions: never commits; a failure leaves the target unchanged after rollback ------------------

def test_load_table_never_commits(conn, warehouse_url):
    load_table(conn, "dim_staff", dimension_tables()["dim_staff"], "upsert")
    with psycopg.connect(warehouse_url) as other:
        assert other.execute("SELECT count(*) FROM dim_staff").fetchone() == (0,)
    conn.commit()
    with psycopg.connect(warehouse_url) as other:
        assert other.execute("SELECT count(*) FROM dim_staff").fetchone() == (2,)


class InjectedCrash(Exception):
    pass


@pytest.mark.parametrize("when", ["before_merge", "after_merge"])
def test_crash_around_the_merge_leaves_target_unchanged(loaded, monkeypatch, when):
    conn = loaded
    load_table(conn, "fact_sales_order", arrow("fact_sales_order", [sales_row(1, T1)]), "append_versions")
    conn.commit()
    staff_before = rows(conn, "dim_staff", "staff_id")
    facts_before = rows(conn, "fact_sales_order", "sales_record_id")

    real_upsert, real_versions = loader._merge_upsert, loader._merge_versions

    def crashing(real):
        def merge(*args):
            if when == "after_merge":
                real(*args)
            raise InjectedCrash(when)
        return merge

    monkeypatch.setattr(loader, "_merge_upsert", crashing(real_upsert))
    monkeypatch.setattr(loader, "_merge_versions", crashing(real_versions))
    with pytest.raises(InjectedCrash):
        load_table(conn, "dim_staff", arrow("dim_staff", [staff_row(1, first_name="Changed"), staff_row(9)]), "upsert")
    conn.rollback()
    with pytest.raises(InjectedCrash):
        load_table(conn, "fact_sales_order", arrow("fact_sales_order", [sales_row(1, T2), sales_row(5, T1)]),
                   "append_versions")
    conn.rollback()

    assert rows(conn, "dim_staff", "staff_id") == staff_before
    assert rows(conn, "fact_sales_order", "sales_record_id") == facts_before


def test_loading_the_same_table_twice_in_one_transaction_works(conn):
    load_table(conn, "dim_staff", arrow("dim_staff", [staff_row(1)]), "upsert")
    stats = load_table(conn, "dim_staff", arrow("dim_staff", [staff_row(1, last_name="Smith"), staff_row(2)]), "upsert")
    assert stats == LoadStats("dim_staff", 2, 1, 1, 0)
    assert conn.execute("SELECT staff_id, last_name FROM dim_staff ORDER BY 1").fetchall() == [(1, "Smith"), (2, "O'Keefe")]


# ---- bulk loads ------------------------------------------------------------------------------------------

def _foreign_keys(conn: psycopg.Connection, table: str) -> list[tuple]:
    return conn.execute(
        "SELECT conname, pg_get_constraintdef(oid), convalidated FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype = 'f' ORDER BY conname", (table,)).fetchall()


def test_a_bulk_fact_load_keeps_every_foreign_key_validated_and_inserts_once(loaded, monkeypatch):
    conn = loaded
    before = _foreign_keys(conn, "fact_sales_order")
    monkeypatch.setattr(loader, "BULK_ROWS", 2)  # take the bulk path with a small batch
    batch = arrow("fact_sales_order", [sales_row(i, T1) for i in range(1, 6)])
    assert load_table(conn, "fact_sales_order", batch, "append_versions").inserted == 5
    assert _foreign_keys(conn, "fact_sales_order") == before and all(valid for _, _, valid in before)
    assert load_table(conn, "fact_sales_order", batch, "append_versions").inserted == 0
    conn.commit()
    # The constraints are back in force: a dangling row is refused by PostgreSQL itself.
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute("UPDATE fact_sales_order SET design_id = 999999 WHERE sales_order_id = 1")
    conn.rollback()


def test_a_bulk_load_that_fails_leaves_the_table_and_its_constraints_as_they_were(loaded, monkeypatch):
    conn = loaded
    before = _foreign_keys(conn, "fact_sales_order")
    monkeypatch.setattr(loader, "BULK_ROWS", 2)
    with pytest.raises(WarehouseLoadError, match="design_id"):
        load_table(conn, "fact_sales_order",
                   arrow("fact_sales_order", [sales_row(1, T1), sales_row(2, T1, design_id=424242)]), "append_versions")
    conn.rollback()
    assert _foreign_keys(conn, "fact_sales_order") == before
    assert conn.execute("SELECT count(*) FROM fact_sales_order").fetchone()[0] == 0
