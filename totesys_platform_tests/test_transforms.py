"""Golden tests of the processed-zone builders: small hand-checked datasets with explicit expected rows."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest

from totesys_platform.lake.ingestion.deletes import DELETED_AT_COLUMN
from totesys_platform import star_schema
from totesys_platform.lake.processed import COLUMN_LINEAGE, PROCESSED_SPECS
from totesys_platform.source import contract
from totesys_platform_tests.test_transforms_support import T0, build, row, source_table, through_parquet

D, T = dt.date, dt.time


def rows_of(name: str, *values: tuple) -> list[dict]:
    """Expected rows of ``name`` written as tuples in the star-schema column order; a fact's tuples stop before
    `deleted_at`, which is None (no row of these inputs was deleted)."""
    columns = star_schema.TARGET_TABLES[name].column_names
    if star_schema.TARGET_TABLES[name].kind == "fact":
        values = tuple((*v, None) for v in values)
    assert all(len(v) == len(columns) for v in values)
    return [dict(zip(columns, v)) for v in values]


# ---------------------------------------------------------------- specs, schemas and lineage

def test_there_is_one_spec_per_star_schema_table_reading_only_source_tables():
    assert list(PROCESSED_SPECS) == list(star_schema.TARGET_TABLES)
    for name, spec in PROCESSED_SPECS.items():
        assert spec.name == name
        assert spec.inputs and set(spec.inputs) <= set(contract.SOURCE_TABLES), name


@pytest.mark.parametrize("name", list(star_schema.TARGET_TABLES))
def test_delta_schema_is_exactly_the_star_schema_even_for_empty_input(name):
    delta, _ = build(name)
    assert delta.num_rows == 0
    assert delta.schema.equals(star_schema.TARGET_TABLES[name].arrow_schema)


@pytest.mark.parametrize("name", list(star_schema.TARGET_TABLES))
def test_inputs_without_nullability_flags_still_give_the_exact_schema(name):
    """Tables rebuilt without 'not null' flags (as some readers give them back) are accepted and normalised."""
    spec = PROCESSED_SPECS[name]
    inputs = {}
    for table in spec.inputs:
        rows = [row(table, 1, design_id=1) if table == "sales_order" else row(table, 1)]
        typed = source_table(table, rows)
        loose = pa.schema([f.with_nullable(True) for f in typed.schema])
        inputs[table] = pa.Table.from_pylist(rows, schema=loose)
    delta, state = spec.build(inputs, {})
    assert delta.num_rows >= 1
    assert delta.schema.equals(star_schema.TARGET_TABLES[name].arrow_schema)
    assert through_parquet(delta).schema.equals(delta.schema)


def test_column_lineage_names_every_target_column_and_exactly_the_spec_inputs():
    assert list(COLUMN_LINEAGE) == list(star_schema.TARGET_TABLES)
    for name, columns in COLUMN_LINEAGE.items():
        assert list(columns) == star_schema.TARGET_TABLES[name].column_names, name
        sources = {source for pairs in columns.values() for source, _ in pairs}
        assert sources == set(PROCESSED_SPECS[name].inputs), name
        for target, pairs in columns.items():
            assert pairs, name
            for source, column in pairs:
                if (target, column) == (star_schema.DELETED_AT, DELETED_AT_COLUMN):  # the ingestion zone's tombstones
                    assert name in star_schema.FACTS
                    continue
                contract.SOURCE_TABLES[source].column(column)  # raises if the column does not exist


def test_column_lineage_examples():
    assert COLUMN_LINEAGE["dim_counterparty"]["counterparty_legal_city"] == [
        ("address", "city"), ("counterparty", "legal_address_id")]
    assert COLUMN_LINEAGE["dim_counterparty"]["counterparty_legal_name"] == [("counterparty", "counterparty_legal_name")]
    assert COLUMN_LINEAGE["dim_staff"]["department_name"] == [("department", "department_name"), ("staff", "department_id")]
    assert COLUMN_LINEAGE["dim_location"]["location_id"] == [("address", "address_id")]
    assert COLUMN_LINEAGE["dim_currency"]["currency_name"] == [("currency", "currency_code")]
    assert COLUMN_LINEAGE["fact_sales_order"]["sales_staff_id"] == [("sales_order", "staff_id")]
    assert COLUMN_LINEAGE["fact_sales_order"]["created_time"] == [("sales_order", "created_at")]
    assert COLUMN_LINEAGE["fact_payment"]["payment_date"] == [("payment", "payment_date")]
    assert ("payment", "payment_date") in COLUMN_LINEAGE["dim_date"]["date_id"]
    assert ("purchase_order", "agreed_delivery_date") in COLUMN_LINEAGE["dim_date"]["date_id"]


# ---------------------------------------------------------------- facts

def test_fact_sales_order_golden():
    v1 = row("sales_order", 1, T0, design_id=2, staff_id=3, counterparty_id=4, units_sold=2000,
             unit_price=Decimal("3.50"), currency_id=1, agreed_delivery_date="2024-11-07",
             agreed_payment_date="2024-11-08", agreed_delivery_location_id=5)
    v2 = {**v1, "last_updated": dt.datetime(2024, 11, 5, 14, 0), "units_sold": 2500}
    late = row("sales_order", 2, dt.datetime(2024, 11, 4, 23, 59, 59, 999000), design_id=1, staff_id=1,
               counterparty_id=1, units_sold=100000, unit_price=Decimal("4.00"), currency_id=2,
               agreed_delivery_date="2024-11-04", agreed_payment_date="2024-11-11", agreed_delivery_location_id=1)
    delta, state = build("fact_sales_order", sales_order=[v2, late, v1, dict(v1)])  # v1 delivered twice
    assert state == {}
    assert delta.to_pylist() == rows_of(
        "fact_sales_order",
        (1, D(2024, 11, 4), T(9, 30, 15, 123000), D(2024, 11, 4), T(9, 30, 15, 123000), 3, 4, 2000, Decimal("3.50"),
         1, 2, D(2024, 11, 8), D(2024, 11, 7), 5),
        (1, D(2024, 11, 4), T(9, 30, 15, 123000), D(2024, 11, 5), T(14, 0), 3, 4, 2500, Decimal("3.50"),
         1, 2, D(2024, 11, 8), D(2024, 11, 7), 5),
        (2, D(2024, 11, 4), T(23, 59, 59, 999000), D(2024, 11, 4), T(23, 59, 59, 999000), 1, 1, 100000,
         Decimal("4.00"), 2, 1, D(2024, 11, 11), D(2024, 11, 4), 1),
    )


def test_fact_purchase_order_golden():
    created = dt.datetime(2022, 11, 3, 14, 20, 49, 962000)
    po = row("purchase_order", 7, created, staff_id=12, counterparty_id=11, item_code="ZDOI5EA", item_quantity=371,
             item_unit_price=Decimal("361.39"), currency_id=2, agreed_delivery_date="2022-11-09",
             agreed_payment_date="2022-11-07", agreed_delivery_location_id=6)
    updated = {**po, "last_updated": dt.datetime(2022, 11, 4, 8, 0, 0, 1000), "item_quantity": 1000}
    delta, _ = build("fact_purchase_order", purchase_order=[po, updated])
    assert delta.to_pylist() == rows_of(
        "fact_purchase_order",
        (7, D(2022, 11, 3), T(14, 20, 49, 962000), D(2022, 11, 3), T(14, 20, 49, 962000), 12, 11, "ZDOI5EA", 371,
         Decimal("361.39"), 2, D(2022, 11, 9), D(2022, 11, 7), 6),
        (7, D(2022, 11, 3), T(14, 20, 49, 962000), D(2022, 11, 4), T(8, 0, 0, 1000), 12, 11, "ZDOI5EA", 1000,
         Decimal("361.39"), 2, D(2022, 11, 9), D(2022, 11, 7), 6),
    )


def test_fact_payment_golden_keeps_every_version_and_drops_account_numbers():
    created = dt.datetime(2024, 11, 4, 10, 0, 0, 500000)
    unpaid = row("payment", 3, created, transaction_id=3, counterparty_id=15, payment_amount=Decimal("12345678.91"),
                 currency_id=3, payment_type_id=1, paid=False, payment_date="2024-11-08")
    paid = {**unpaid, "last_updated": dt.datetime(2024, 11, 8, 7, 55, 1), "paid": True}
    refund = row("payment", 4, created, transaction_id=4, counterparty_id=2, payment_amount=Decimal("0.01"),
                 currency_id=1, payment_type_id=3, paid=True, payment_date="2024-02-29")
    delta, _ = build("fact_payment", payment=[refund, paid, unpaid])
    assert delta.to_pylist() == rows_of(
        "fact_payment",
        (3, D(2024, 11, 4), T(10, 0, 0, 500000), D(2024, 11, 4), T(10, 0, 0, 500000), 3, 15, Decimal("12345678.91"),
         3, 1, False, D(2024, 11, 8)),
        (3, D(2024, 11, 4), T(10, 0, 0, 500000), D(2024, 11, 8), T(7, 55, 1), 3, 15, Decimal("12345678.91"),
         3, 1, True, D(2024, 11, 8)),
        (4, D(2024, 11, 4), T(10, 0, 0, 500000), D(2024, 11, 4), T(10, 0, 0, 500000), 4, 2, Decimal("0.01"),
         1, 3, True, D(2024, 2, 29)),
    )


def test_fact_timestamps_before_1970_split_without_shifting_the_day():
    old = row("sales_order", 1, dt.datetime(1969, 12, 31, 23, 59, 59, 1000))
    delta, _ = build("fact_sales_order", sales_order=[old])
    assert delta.select(["created_date", "created_time"]).to_pylist() == [
        {"created_date": D(1969, 12, 31), "created_time": T(23, 59, 59, 1000)}]


# ---------------------------------------------------------------- single-source dimensions

def test_dim_location_golden_latest_row_wins_and_nulls_stay_null():
    first = row("address", 1, T0, address_line_1="6826 Herzog Via", district="Avon", city="New Patienceburgh",
                postal_code="28441", country="Turkey", phone="1803 637401")
    second = row("address", 2, T0, address_line_1="179 Alexie Cliffs", address_line_2="Flat 2", district=None,
                 city="Aliso Viejo", postal_code="99305-7380", country="San Marino", phone="9621 880720")
    moved = {**first, "last_updated": T0 + dt.timedelta(days=1), "city": "Leeds", "postal_code": "01234"}
    delta, state = build("dim_location", address=[first, second, moved])
    assert state == {}
    assert delta.to_pylist() == rows_of(
        "dim_location",
        (1, "6826 Herzog Via", None, "Avon", "Leeds", "01234", "Turkey", "1803 637401"),
        (2, "179 Alexie Cliffs", "Flat 2", None, "Aliso Viejo", "99305-7380", "San Marino", "9621 880720"),
    )


def test_dim_location_later_occurrence_wins_even_with_an_older_last_updated():
    """Input order decides (the ingestion order), not last_updated."""
    newer = row("address", 1, T0, city="Leeds")
    older_but_later = row("address", 1, T0 - dt.timedelta(days=1), city="York")
    delta, _ = build("dim_location", address=[newer, older_but_later])
    assert delta.column("city").to_pylist() == ["York"]


def test_dim_design_golden():
    delta, _ = build("dim_design", design=[
        row("design", 2, design_name="Bronze", file_location="/private", file_name="bronze-20221024-4dds.json"),
        row("design", 1, design_name="Wooden", file_location="/usr", file_name="wooden-20220717-npgz.json"),
        row("design", 2, T0 + dt.timedelta(hours=1), design_name="Bronze 2", file_location="/private",
            file_name="bronze-20221024-4dds.json"),
    ])
    assert delta.to_pylist() == rows_of(
        "dim_design",
        (1, "Wooden", "/usr", "wooden-20220717-npgz.json"),
        (2, "Bronze 2", "/private", "bronze-20221024-4dds.json"),
    )


def test_dim_payment_type_golden():
    names = contract.PAYMENT_TYPE_NAMES
    delta, _ = build("dim_payment_type", payment_type=[
        row("payment_type", i, payment_type_name=n) for i, n in enumerate(names, start=1)])
    assert delta.to_pylist() == rows_of(
        "dim_payment_type", (1, "SALES_RECEIPT"), (2, "SALES_REFUND"), (3, "PURCHASE_PAYMENT"), (4, "PURCHASE_REFUND"))


def test_dim_transaction_golden_nullable_ids_stay_null_and_int32():
    delta, _ = build("dim_transaction", transaction=[
        row("transaction", 1, transaction_type="SALE", sales_order_id=1, purchase_order_id=None),
        row("transaction", 2, transaction_type="PURCHASE", sales_order_id=None, purchase_order_id=1),
        row("transaction", 3, transaction_type="SALE", sales_order_id=None, purchase_order_id=None),
    ])
    assert delta.schema.field("sales_order_id").type == pa.int32()
    assert delta.to_pylist() == rows_of(
        "dim_transaction", (1, "SALE", 1, None), (2, "PURCHASE", None, 1), (3, "SALE", None, None))


def test_dim_currency_golden_names_come_from_iso_4217():
    delta, _ = build("dim_currency", currency=[
        row("currency", 1, currency_code="GBP"), row("currency", 2, currency_code="USD"),
        row("currency", 3, currency_code="EUR"), row("currency", 4, currency_code="JPY"),
    ])
    assert delta.to_pylist() == rows_of(
        "dim_currency", (1, "GBP", "Pound Sterling"), (2, "USD", "US Dollar"), (3, "EUR", "Euro"), (4, "JPY", "Yen"))


# ---------------------------------------------------------------- joined dimensions

ADDRESSES = [
    row("address", 1, address_line_1="6826 Herzog Via", address_line_2=None, district="Avon",
        city="New Patienceburgh", postal_code="28441", country="Turkey", phone="1803 637401"),
    row("address", 2, address_line_1="179 Alexie Cliffs", address_line_2="Flat 2", district=None,
        city="Aliso Viejo", postal_code="99305-7380", country="Democratic People's Republic of Korea",
        phone="9621 880720"),
]
COUNTERPARTIES = [
    row("counterparty", 1, counterparty_legal_name="Fahey and Sons", legal_address_id=1),
    row("counterparty", 2, counterparty_legal_name="O'Keefe, Schinner and Kohler", legal_address_id=2),
    row("counterparty", 3, counterparty_legal_name="Leannon, Predovic and Morar", legal_address_id=1),
]
TURKEY = ("6826 Herzog Via", None, "Avon", "New Patienceburgh", "28441", "Turkey", "1803 637401")
KOREA = ("179 Alexie Cliffs", "Flat 2", None, "Aliso Viejo", "99305-7380", "Democratic People's Republic of Korea",
         "9621 880720")


def test_dim_counterparty_golden_joins_the_legal_address():
    delta, state = build("dim_counterparty", counterparty=COUNTERPARTIES, address=ADDRESSES)
    assert delta.to_pylist() == rows_of(
        "dim_counterparty",
        (1, "Fahey and Sons", *TURKEY),
        (2, "O'Keefe, Schinner and Kohler", *KOREA),
        (3, "Leannon, Predovic and Morar", *TURKEY),
    )
    # The state keeps only what the dimension needs: no contacts, no timestamps.
    assert state["counterparty"].column_names == ["counterparty_id", "counterparty_legal_name", "legal_address_id"]
    assert "created_at" not in state["address"].column_names


def test_dim_counterparty_address_change_re_emits_every_counterparty_at_that_address():
    _, state = build("dim_counterparty", counterparty=COUNTERPARTIES, address=ADDRESSES)
    new_phone = {**ADDRESSES[0], "last_updated": T0 + dt.timedelta(days=3), "phone": "0113 496 0000"}
    delta, state = build("dim_counterparty", state, address=[new_phone])
    assert delta.to_pylist() == rows_of(
        "dim_counterparty",
        (1, "Fahey and Sons", *TURKEY[:-1], "0113 496 0000"),
        (3, "Leannon, Predovic and Morar", *TURKEY[:-1], "0113 496 0000"),
    )

    # A counterparty moving re-emits only itself, with the (already known) new address.
    moved = {**COUNTERPARTIES[1], "last_updated": T0 + dt.timedelta(days=4), "legal_address_id": 1}
    delta, state = build("dim_counterparty", through_state_parquet(state), counterparty=[moved])
    assert delta.to_pylist() == rows_of(
        "dim_counterparty", (2, "O'Keefe, Schinner and Kohler", *TURKEY[:-1], "0113 496 0000"))

    # Nobody is at address 2 any more: changing it emits nothing; nor does an empty batch.
    nobody = {**ADDRESSES[1], "last_updated": T0 + dt.timedelta(days=5), "city": "Elsewhere"}
    delta, state = build("dim_counterparty", state, address=[nobody])
    assert delta.num_rows == 0
    delta, after_empty = build("dim_counterparty", state)
    assert delta.num_rows == 0
    assert {k: v.to_pylist() for k, v in after_empty.items()} == {k: v.to_pylist() for k, v in state.items()}


def through_state_parquet(state: dict[str, pa.Table]) -> dict[str, pa.Table]:
    return {name: through_parquet(table) for name, table in state.items()}


DEPARTMENTS = [
    row("department", 1, department_name="Sales", location="Manchester", manager="Richard Roma"),
    row("department", 2, department_name="Purchasing", location="Leds", manager="Naomi Lapaglia"),
    row("department", 3, department_name="Dispatch", location=None, manager=None),
]
STAFF = [
    row("staff", 1, first_name="Jeremie", last_name="Franey", department_id=1,
        email_address="jeremie.franey@terrifictotes.com"),
    row("staff", 2, first_name="Deron", last_name="Beier", department_id=2,
        email_address="deron.beier@terrifictotes.com"),
    row("staff", 3, first_name="Jeanette", last_name="Erdman", department_id=3,
        email_address="jeanette.erdman@terrifictotes.com"),
    row("staff", 4, first_name="Ana", last_name="D'Amore", department_id=2,
        email_address="ana.damore@terrifictotes.com"),
]


def test_dim_staff_golden_joins_the_department_keeping_the_typo_and_null_location():
    delta, _ = build("dim_staff", staff=STAFF, department=DEPARTMENTS)
    assert delta.to_pylist() == rows_of(
        "dim_staff",
        (1, "Jeremie", "Franey", "Sales", "Manchester", "jeremie.franey@terrifictotes.com"),
        (2, "Deron", "Beier", "Purchasing", "Leds", "deron.beier@terrifictotes.com"),
        (3, "Jeanette", "Erdman", "Dispatch", None, "jeanette.erdman@terrifictotes.com"),
        (4, "Ana", "D'Amore", "Purchasing", "Leds", "ana.damore@terrifictotes.com"),
    )


def test_dim_staff_department_change_re_emits_all_its_staff_and_a_move_only_the_mover():
    _, state = build("dim_staff", staff=STAFF, department=DEPARTMENTS)
    renamed = {**DEPARTMENTS[1], "last_updated": T0 + dt.timedelta(days=1), "department_name": "Procurement",
               "location": "Leeds"}
    delta, state = build("dim_staff", through_state_parquet(state), department=[renamed])
    assert delta.to_pylist() == rows_of(
        "dim_staff",
        (2, "Deron", "Beier", "Procurement", "Leeds", "deron.beier@terrifictotes.com"),
        (4, "Ana", "D'Amore", "Procurement", "Leeds", "ana.damore@terrifictotes.com"),
    )
    moved = {**STAFF[0], "last_updated": T0 + dt.timedelta(days=2), "department_id": 3}
    delta, _ = build("dim_staff", state, staff=[moved])
    assert delta.to_pylist() == rows_of(
        "dim_staff", (1, "Jeremie", "Franey", "Dispatch", None, "jeremie.franey@terrifictotes.com"))


def test_joined_dimension_does_not_modify_the_state_it_was_given():
    _, state = build("dim_staff", staff=STAFF, department=DEPARTMENTS)
    before = {k: v.to_pylist() for k, v in state.items()}
    build("dim_staff", state, department=[{**DEPARTMENTS[0], "last_updated": T0 + dt.timedelta(1), "location": "X"}])
    assert {k: v.to_pylist() for k, v in state.items()} == before


# ---------------------------------------------------------------- dim_date

def _november_day(day: int, weekday: int, name: str) -> tuple:
    return (D(2024, 11, day), 2024, 11, day, weekday, name, "November", 4)


def test_dim_date_golden_covers_the_range_of_every_referenced_date():
    delta, state = build(
        "dim_date",
        sales_order=[row("sales_order", 1, T0, agreed_delivery_date="2024-11-07", agreed_payment_date="2024-11-08")],
        purchase_order=[row("purchase_order", 1, T0, agreed_delivery_date="2024-11-02",
                            agreed_payment_date="2024-11-05")],
        payment=[row("payment", 1, T0, payment_date="2024-11-10")],
    )
    assert delta.to_pylist() == rows_of(
        "dim_date",
        _november_day(2, 6, "Saturday"), _november_day(3, 7, "Sunday"), _november_day(4, 1, "Monday"),
        _november_day(5, 2, "Tuesday"), _november_day(6, 3, "Wednesday"), _november_day(7, 4, "Thursday"),
        _november_day(8, 5, "Friday"), _november_day(9, 6, "Saturday"), _november_day(10, 7, "Sunday"),
    )
    assert state["covered_range"].to_pylist() == [{"first_date": D(2024, 11, 2), "last_date": D(2024, 11, 10)}]


def test_dim_date_grows_both_ways_and_emits_only_the_newly_covered_dates():
    _, state = build("dim_date", payment=[row("payment", 1, T0, payment_date="2024-11-10")])  # covers 4th..10th

    later = row("payment", 2, dt.datetime(2025, 1, 2, 8), payment_date="2024-12-31")
    delta, state = build("dim_date", through_state_parquet(state), payment=[later])
    assert delta.num_rows == 53  # 2024-11-11 .. 2025-01-02
    assert delta.slice(0, 1).to_pylist() == rows_of("dim_date", _november_day(11, 1, "Monday"))
    assert delta.slice(51).to_pylist() == rows_of(
        "dim_date",
        (D(2025, 1, 1), 2025, 1, 1, 3, "Wednesday", "January", 1),
        (D(2025, 1, 2), 2025, 1, 2, 4, "Thursday", "January", 1),
    )

    earlier = row("purchase_order", 1, T0, agreed_delivery_date="2024-10-30")
    delta, state = build("dim_date", state, purchase_order=[earlier])
    assert delta.to_pylist() == rows_of(
        "dim_date",
        (D(2024, 10, 30), 2024, 10, 30, 3, "Wednesday", "October", 4),
        (D(2024, 10, 31), 2024, 10, 31, 4, "Thursday", "October", 4),
        (D(2024, 11, 1), 2024, 11, 1, 5, "Friday", "November", 4),
        _november_day(2, 6, "Saturday"), _november_day(3, 7, "Sunday"),
    )

    inside = row("sales_order", 1, T0, agreed_delivery_date="2024-12-01", agreed_payment_date="2024-11-05")
    delta, unchanged = build("dim_date", state, sales_order=[inside])
    assert delta.num_rows == 0
    assert unchanged["covered_range"].to_pylist() == [{"first_date": D(2024, 10, 30), "last_date": D(2025, 1, 2)}]


def test_dim_date_with_no_dates_and_no_state_emits_nothing():
    delta, state = build("dim_date")
    assert delta.num_rows == 0
    assert state == {}
