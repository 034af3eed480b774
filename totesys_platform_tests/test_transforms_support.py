"""Source-row builders shared by the test_transforms*.py modules (this module has no tests of its own)."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq

from totesys_platform.lake.processed import PROCESSED_SPECS, State
from totesys_platform.source import contract

T0 = dt.datetime(2024, 11, 4, 9, 30, 15, 123000)

# A plausible value for every non-key, non-timestamp column, so a test spells out only what it is about.
DEFAULTS: dict[str, dict[str, object]] = {
    "address": dict(address_line_1="6826 Herzog Via", address_line_2=None, district=None, city="New Patienceburgh",
                    postal_code="28441", country="Turkey", phone="1803 637401"),
    "counterparty": dict(counterparty_legal_name="Fahey and Sons", legal_address_id=1, commercial_contact="Micheal",
                         delivery_contact="Myra"),
    "currency": dict(currency_code="GBP"),
    "department": dict(department_name="Sales", location="Manchester", manager="Richard Roma"),
    "design": dict(design_name="Wooden", file_location="/usr", file_name="wooden-20220717-npgz.json"),
    "payment": dict(transaction_id=1, counterparty_id=1, payment_amount=Decimal("7000.00"), currency_id=1,
                    payment_type_id=1, paid=False, payment_date="2024-11-08", company_ac_number=67305075,
                    counterparty_ac_number=31622269),
    "payment_type": dict(payment_type_name="SALES_RECEIPT"),
    "purchase_order": dict(staff_id=1, counterparty_id=1, item_code="ZDOI5EA", item_quantity=371,
                           item_unit_price=Decimal("361.39"), currency_id=1, agreed_delivery_date="2024-11-07",
                           agreed_payment_date="2024-11-08", agreed_delivery_location_id=1),
    "sales_order": dict(design_id=1, staff_id=1, counterparty_id=1, units_sold=2000, unit_price=Decimal("3.50"),
                        currency_id=1, agreed_delivery_date="2024-11-07", agreed_payment_date="2024-11-08",
                        agreed_delivery_location_id=1),
    "staff": dict(first_name="Jeremie", last_name="Franey", department_id=1,
                  email_address="jeremie.franey@terrifictotes.com"),
    "transaction": dict(transaction_type="SALE", sales_order_id=1, purchase_order_id=None),
}


def row(table: str, id: int, at: dt.datetime = T0, created: dt.datetime | None = None, **values: object) -> dict:
    """One source row of ``table`` with primary key ``id``, last_updated ``at`` (created_at defaults to it)."""
    unknown = set(values) - set(DEFAULTS[table]) - {"created_at", "last_updated"}
    assert not unknown, f"{table} has no columns {unknown}"
    full = {contract.SOURCE_TABLES[table].primary_key: id, "created_at": created or at, "last_updated": at,
            **DEFAULTS[table], **values}
    return {name: full[name] for name in contract.SOURCE_TABLES[table].column_names}


def source_table(table: str, rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=contract.SOURCE_TABLES[table].arrow_schema)


def build(name: str, state: State | None = None, **rows: list[dict]) -> tuple[pa.Table, State]:
    """Run the builder of ``name`` on the given source rows (every other input empty)."""
    spec = PROCESSED_SPECS[name]
    assert set(rows) <= set(spec.inputs), f"{name} does not read {set(rows) - set(spec.inputs)}"
    inputs = {table: source_table(table, rows.get(table, [])) for table in spec.inputs}
    return spec.build(inputs, {} if state is None else state)


def through_parquet(table: pa.Table) -> pa.Table:
    """The table as the lake gives it back: written to Parquet and read again."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return pq.read_table(io.BytesIO(buffer.getvalue()))
