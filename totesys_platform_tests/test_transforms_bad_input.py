"""Bad input to the processed-zone builders: each case gives a BadInputError naming table, key, column and a fix."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from totesys_platform.lake.processed import PROCESSED_SPECS, BadInputError
from totesys_platform.source import contract
from totesys_platform_tests.test_transforms_support import T0, build, row, source_table


def raises_bad_input(call) -> BadInputError:
    with pytest.raises(BadInputError) as caught:
        call()
    error = caught.value
    assert str(error).startswith(f"{error.table}: ")
    assert error.action and str(error).endswith(error.action), "every error says what to do"
    return error


# ---------------------------------------------------------------- text dates

def test_unparseable_date_message_names_table_key_column_and_value():
    error = raises_bad_input(lambda: build("fact_sales_order", sales_order=[
        row("sales_order", 41), row("sales_order", 42, agreed_payment_date="2024-13-45")]))
    assert str(error).startswith(
        "fact_sales_order: sales_order_id=42, column agreed_payment_date: '2024-13-45' is not a YYYY-MM-DD date")
    assert (error.table, error.key, error.column, error.source) == (
        "fact_sales_order", "sales_order_id=42", "agreed_payment_date", "sales_order")


BAD_DATES = ["2024-13-45", "2024-02-30", "2023-02-29", "2024-1-5", " 2024-01-05", "2024-01-05 ", "05/01/2024", "",
             "0000-01-01", "2024-01-05T00:00", "20240105", "２０２４-01-05", "2024-00-10", "2024-11-31"]


@pytest.mark.parametrize("text", BAD_DATES)
@pytest.mark.parametrize("name, source, column", [
    ("fact_sales_order", "sales_order", "agreed_delivery_date"),
    ("fact_purchase_order", "purchase_order", "agreed_payment_date"),
    ("fact_payment", "payment", "payment_date"),
    ("dim_date", "sales_order", "agreed_payment_date"),
    ("dim_date", "purchase_order", "agreed_delivery_date"),
    ("dim_date", "payment", "payment_date"),
])
def test_a_text_date_that_is_not_strictly_yyyy_mm_dd_is_bad_input(name, source, column, text):
    error = raises_bad_input(lambda: build(name, **{source: [row(source, 1), row(source, 7, **{column: text})]}))
    assert (error.table, error.key, error.column, error.source) == (name, f"{source}_id=7", column, source)
    assert f"{text!r} is not a YYYY-MM-DD date" in str(error)


def test_real_calendar_dates_at_the_edges_parse():
    delta, _ = build("fact_payment", payment=[
        row("payment", 1, payment_date="2024-02-29"), row("payment", 2, payment_date="1999-12-31"),
        row("payment", 3, payment_date="0001-01-01"), row("payment", 4, payment_date="9999-12-31")])
    assert delta.column("payment_date").to_pylist() == [
        dt.date(2024, 2, 29), dt.date(1999, 12, 31), dt.date(1, 1, 1), dt.date(9999, 12, 31)]


def test_the_error_counts_the_other_bad_rows():
    error = raises_bad_input(lambda: build("fact_payment", payment=[
        row("payment", i, payment_date="soon") for i in (5, 6, 7)]))
    assert error.key == "payment_id=5"
    assert "(2 more such rows in this batch)" in str(error)


# ---------------------------------------------------------------- currency codes and enums

@pytest.mark.parametrize("code", ["XYZ", "gbp", "GB", "", "GBPX", "ZZZ"])
def test_a_currency_code_not_in_iso_4217_is_bad_input(code):
    error = raises_bad_input(lambda: build("dim_currency", currency=[
        row("currency", 1, currency_code="GBP"), row("currency", 4, currency_code=code)]))
    assert (error.table, error.key, error.column) == ("dim_currency", "currency_id=4", "currency_code")
    assert f"{code!r} is not an ISO 4217 currency code" in str(error)


def test_a_bad_code_in_an_earlier_version_is_reported_even_if_a_later_one_is_fine():
    """Every new row is checked, not only the one that wins: what is ingested must all be valid."""
    error = raises_bad_input(lambda: build("dim_currency", currency=[
        row("currency", 4, currency_code="XXQ"), row("currency", 4, T0 + dt.timedelta(1), currency_code="CHF")]))
    assert error.key == "currency_id=4"


@pytest.mark.parametrize("name, source, column, value, enum", [
    ("dim_payment_type", "payment_type", "payment_type_name", "SALES_REBATE", "PaymentTypeName"),
    ("dim_payment_type", "payment_type", "payment_type_name", "sales_receipt", "PaymentTypeName"),
    ("dim_transaction", "transaction", "transaction_type", "REFUND", "TransactionType"),
    ("dim_transaction", "transaction", "transaction_type", "", "TransactionType"),
])
def test_an_unknown_enum_value_is_bad_input(name, source, column, value, enum):
    error = raises_bad_input(lambda: build(name, **{source: [row(source, 3, **{column: value})]}))
    assert (error.table, error.key, error.column) == (name, f"{source}_id=3", column)
    assert f"{value!r} is not a {enum} value" in str(error)
    assert "contract.py" in error.action


# ---------------------------------------------------------------- NULL in a NOT NULL column

@pytest.mark.parametrize("name, source, column", [
    ("fact_sales_order", "sales_order", "unit_price"),
    ("fact_sales_order", "sales_order", "created_at"),
    ("fact_sales_order", "sales_order", "agreed_delivery_date"),
    ("fact_purchase_order", "purchase_order", "item_code"),
    ("fact_payment", "payment", "paid"),
    ("fact_payment", "payment", "company_ac_number"),  # dropped from the fact, still NOT NULL in the contract
    ("dim_location", "address", "city"),
    ("dim_design", "design", "file_name"),
    ("dim_currency", "currency", "currency_code"),
    ("dim_payment_type", "payment_type", "payment_type_name"),
    ("dim_transaction", "transaction", "transaction_type"),
    ("dim_counterparty", "counterparty", "legal_address_id"),
    ("dim_counterparty", "address", "phone"),
    ("dim_staff", "staff", "email_address"),
    ("dim_staff", "department", "department_name"),
    ("dim_date", "payment", "payment_date"),
    ("dim_date", "purchase_order", "last_updated"),
])
def test_null_in_a_not_null_column_is_bad_input(name, source, column):
    error = raises_bad_input(lambda: build(name, **{source: [row(source, 1), row(source, 9, **{column: None})]}))
    assert (error.table, error.key, error.column, error.source) == (name, f"{source}_id=9", column, source)
    assert f"NULL in {source}.{column}, which the contract says is NOT NULL" in str(error)


def test_a_null_primary_key_is_named_by_its_position():
    error = raises_bad_input(lambda: build("dim_location", address=[row("address", 1), row("address", None)]))
    assert error.key == "row 2 of the batch (address_id is NULL)"
    assert error.column == "address_id"


@pytest.mark.parametrize("name, source, column", [
    ("dim_location", "address", "address_line_2"), ("dim_location", "address", "district"),
    ("dim_staff", "department", "location"), ("dim_counterparty", "counterparty", "commercial_contact"),
    ("dim_transaction", "transaction", "sales_order_id"),
])
def test_null_in_a_nullable_column_is_fine(name, source, column):
    delta, _ = build(name, **{source: [row(source, 1, **{column: None})]}, **(
        {"staff": [row("staff", 1)]} if source == "department" else
        {"address": [row("address", 1)]} if source == "counterparty" else {}))
    assert delta.num_rows == 1


# ---------------------------------------------------------------- dangling references

def test_a_counterparty_at_an_unknown_address_is_bad_input():
    error = raises_bad_input(lambda: build("dim_counterparty", counterparty=[
        row("counterparty", 1, legal_address_id=1), row("counterparty", 3, legal_address_id=99)],
        address=[row("address", 1)]))
    assert (error.table, error.key, error.column) == ("dim_counterparty", "counterparty_id=3", "legal_address_id")
    assert "address_id=99 is not in address" in str(error)


def test_a_staff_member_in_an_unknown_department_is_bad_input_even_with_earlier_state():
    _, state = build("dim_staff", staff=[row("staff", 1, department_id=1)], department=[row("department", 1)])
    error = raises_bad_input(lambda: build("dim_staff", state, staff=[row("staff", 2, department_id=5)]))
    assert (error.table, error.key, error.column) == ("dim_staff", "staff_id=2", "department_id")
    assert "department_id=5 is not in department" in str(error)


def test_a_reference_known_from_state_or_from_the_same_batch_is_fine():
    _, state = build("dim_staff", department=[row("department", 1)])
    delta, _ = build("dim_staff", state, staff=[row("staff", 1, department_id=1), row("staff", 2, department_id=2)],
                     department=[row("department", 2)])
    assert delta.column("staff_id").to_pylist() == [1, 2]


# ---------------------------------------------------------------- duplicate versions

def test_of_two_captures_of_one_version_the_later_wins():
    """A version captured again (changed in place in the source, contract section 4) is not bad input: the
    rows come in capture order and the fact keeps the last capture."""
    first = row("sales_order", 42, units_sold=2000)
    delta, _ = build("fact_sales_order", sales_order=[first, row("sales_order", 1), {**first, "units_sold": 2001}])
    assert delta.column("sales_order_id").to_pylist() == [1, 42]
    assert delta.column("units_sold").to_pylist()[1] == 2001


@pytest.mark.parametrize("name, source, column, other", [
    ("fact_payment", "payment", "paid", True),
    ("fact_payment", "payment", "counterparty_ac_number", 11111111),  # a dropped column still counts
    ("fact_purchase_order", "purchase_order", "item_unit_price", Decimal("361.40")),
    ("fact_purchase_order", "purchase_order", "created_at", T0 - dt.timedelta(milliseconds=1)),
])
def test_the_later_capture_of_a_version_wins_in_every_fact(name, source, column, other):
    first, later = row(source, 5), {**row(source, 5), column: other}
    delta, _ = build(name, **{source: [first, later]})
    assert delta.equals(build(name, **{source: [later]})[0])
    reversed_order, _ = build(name, **{source: [later, first]})
    assert reversed_order.equals(build(name, **{source: [first]})[0])


def test_identical_duplicates_are_dropped_and_ties_across_ids_are_kept():
    a, b = row("payment", 1), row("payment", 2)  # same last_updated: normal in totesys
    delta, _ = build("fact_payment", payment=[a, b, dict(a), dict(a), dict(b)])
    assert delta.column("payment_id").to_pylist() == [1, 2]


# ---------------------------------------------------------------- schema drift and missing inputs

def _inputs_for(name: str, **replacements: pa.Table) -> dict[str, pa.Table]:
    spec = PROCESSED_SPECS[name]
    inputs = {t: source_table(t, [row(t, 1)]) for t in spec.inputs}
    return inputs | replacements


def test_an_added_source_column_is_bad_input():
    orders = source_table("sales_order", [row("sales_order", 1)]).append_column("discount", pa.array([0.1]))
    error = raises_bad_input(lambda: PROCESSED_SPECS["fact_sales_order"].build(
        _inputs_for("fact_sales_order", sales_order=orders), {}))
    assert (error.column, error.key) == ("discount", None)
    assert "sales_order has an unexpected column discount" in str(error)
    assert "contract.py" in error.action


def test_a_dropped_source_column_is_bad_input():
    addresses = source_table("address", [row("address", 1)]).drop_columns(["phone"])
    error = raises_bad_input(lambda: PROCESSED_SPECS["dim_counterparty"].build(
        _inputs_for("dim_counterparty", address=addresses), {}))
    assert (error.table, error.column, error.source) == ("dim_counterparty", "phone", "address")
    assert "address has no column phone (expected string)" in str(error)


@pytest.mark.parametrize("column, new_type", [
    ("units_sold", pa.int64()), ("unit_price", pa.decimal128(12, 4)), ("unit_price", pa.float64()),
    ("created_at", pa.timestamp("ms", tz="UTC")), ("last_updated", pa.timestamp("us")),
    ("agreed_payment_date", pa.date32()),
])
def test_a_retyped_source_column_is_bad_input(column, new_type):
    orders = source_table("sales_order", [row("sales_order", 1)])
    index = orders.schema.get_field_index(column)
    retyped = orders.set_column(index, pa.field(column, new_type), pc.cast(orders.column(column), new_type)) \
        if new_type != pa.date32() else orders.set_column(index, column, pa.array([dt.date(2024, 1, 1)]))
    error = raises_bad_input(lambda: PROCESSED_SPECS["fact_sales_order"].build({"sales_order": retyped}, {}))
    assert error.column == column
    expected_type = contract.SOURCE_TABLES["sales_order"].column(column).arrow_type
    assert f"sales_order.{column} has type {new_type}, expected {expected_type}" in str(error)


def test_columns_in_another_order_are_accepted():
    orders = source_table("sales_order", [row("sales_order", 1)])
    delta, _ = PROCESSED_SPECS["fact_sales_order"].build({"sales_order": orders.select(orders.column_names[::-1])}, {})
    assert delta.column("sales_order_id").to_pylist() == [1]


def test_a_missing_input_table_is_bad_input():
    error = raises_bad_input(lambda: PROCESSED_SPECS["dim_staff"].build({"staff": source_table("staff", [])}, {}))
    assert "no 'department' input was given" in str(error)


def test_an_input_that_is_not_an_arrow_table_is_bad_input():
    with pytest.raises(BadInputError, match="input 'design' is a list, not a pyarrow Table"):
        PROCESSED_SPECS["dim_design"].build({"design": [row("design", 1)]}, {})


def test_a_record_batch_is_accepted_as_input():
    batch = source_table("design", [row("design", 1)]).to_batches()[0]
    delta, _ = PROCESSED_SPECS["dim_design"].build({"design": batch}, {})
    assert delta.num_rows == 1


# ---------------------------------------------------------------- broken state

def test_a_fact_given_state_is_bad_input():
    error = raises_bad_input(lambda: build("fact_payment", {"covered_range": pa.table({"x": [1]})}))
    assert "unexpected state tables ['covered_range']" in str(error)
    assert "rebuild" in error.action


def test_a_joined_dimension_state_with_a_retyped_column_is_bad_input():
    _, state = build("dim_counterparty", counterparty=[row("counterparty", 1)], address=[row("address", 1)])
    addresses = state["address"]
    broken = addresses.set_column(0, "address_id", pc.cast(addresses.column("address_id"), pa.int64()))
    error = raises_bad_input(lambda: build("dim_counterparty", {**state, "address": broken}))
    assert (error.source, error.column) == ("state['address']", "address_id")
    assert "has type int64, expected int32" in str(error)


def test_a_joined_dimension_state_with_a_null_is_bad_input():
    _, state = build("dim_staff", department=[row("department", 1)])
    broken = pa.Table.from_pylist(
        [{"department_id": 1, "department_name": None, "location": None}],
        schema=pa.schema([f.with_nullable(True) for f in state["department"].schema]))
    error = raises_bad_input(lambda: build("dim_staff", {"department": broken}))
    assert (error.source, error.key, error.column) == ("state['department']", "department_id=1", "department_name")


@pytest.mark.parametrize("ranges, reason", [
    ([(dt.date(2024, 1, 1), dt.date(2024, 1, 5)), (dt.date(2024, 2, 1), dt.date(2024, 2, 5))], "has 2 rows"),
    ([(dt.date(2024, 1, 5), dt.date(2024, 1, 1))], "starts after it ends"),
])
def test_a_broken_dim_date_state_is_bad_input(ranges, reason):
    state = {"covered_range": pa.table({"first_date": [r[0] for r in ranges], "last_date": [r[1] for r in ranges]})}
    error = raises_bad_input(lambda: build("dim_date", state))
    assert reason in str(error)
