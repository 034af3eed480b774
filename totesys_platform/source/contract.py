"""The totesys source contract: the 11 tables the platform reads, their columns and exact types.

Plain data, no Dagster. Extraction validates the live source against this before reading, the lake
stores rows with these Arrow types, and the simulator's DDL (``totesys_schema.sql``) matches it
(a test introspects the simulator's database and compares).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

MONEY = pa.decimal128(10, 2)
TIMESTAMP = pa.timestamp("ms")
# The column the ingestion zone adds to a table's rows: when a tombstone saw the row deleted (NULL otherwise).
DELETED_AT_COLUMN = "_deleted_at"


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str  # as PostgreSQL's format_type() prints it
    arrow_type: pa.DataType
    nullable: bool = False


@dataclass(frozen=True)
class SourceTable:
    name: str
    columns: tuple[Column, ...]

    @property
    def primary_key(self) -> str:
        return f"{self.name}_id"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.columns])

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")


def _pk(table: str) -> Column:
    return Column(f"{table}_id", "integer", pa.int32())


def _int(name: str, nullable: bool = False) -> Column:
    return Column(name, "integer", pa.int32(), nullable)


def _text(name: str, nullable: bool = False) -> Column:
    return Column(name, "text", pa.string(), nullable)


CREATED_AT = Column("created_at", "timestamp(3) without time zone", TIMESTAMP)
LAST_UPDATED = Column("last_updated", "timestamp(3) without time zone", TIMESTAMP)

PAYMENT_TYPE_NAMES = ("SALES_RECEIPT", "SALES_REFUND", "PURCHASE_PAYMENT", "PURCHASE_REFUND")
TRANSACTION_TYPES = ("SALE", "PURCHASE")
ENUMS = {'"PaymentTypeName"': PAYMENT_TYPE_NAMES, '"TransactionType"': TRANSACTION_TYPES}

_TABLES = (
    SourceTable("address", (
        _pk("address"), _text("address_line_1"), _text("address_line_2", True), _text("district", True),
        _text("city"), _text("postal_code"), _text("country"), _text("phone"), CREATED_AT, LAST_UPDATED,
    )),
    SourceTable("counterparty", (
        _pk("counterparty"), _text("counterparty_legal_name"), _int("legal_address_id"),
        _text("commercial_contact", True), _text("delivery_contact", True), CREATED_AT, LAST_UPDATED,
    )),
    SourceTable("currency", (
        _pk("currency"), Column("currency_code", "character varying(3)", pa.string()), CREATED_AT, LAST_UPDATED,
    )),
    SourceTable("department", (
        _pk("department"), _text("department_name"), _text("location", True), _text("manager", True),
        CREATED_AT, LAST_UPDATED,
    )),
    SourceTable("design", (
        _pk("design"), CREATED_AT, _text("design_name"), _text("file_location"), _text("file_name"), LAST_UPDATED,
    )),
    SourceTable("payment", (
        _pk("payment"), CREATED_AT, LAST_UPDATED, _int("transaction_id"), _int("counterparty_id"),
        Column("payment_amount", "numeric(10,2)", MONEY), _int("currency_id"), _int("payment_type_id"),
        Column("paid", "boolean", pa.bool_()), _text("payment_date"), _int("company_ac_number"),
        _int("counterparty_ac_number"),
    )),
    SourceTable("payment_type", (
        _pk("payment_type"), Column("payment_type_name", '"PaymentTypeName"', pa.string()), CREATED_AT, LAST_UPDATED,
    )),
    SourceTable("purchase_order", (
        _pk("purchase_order"), CREATED_AT, LAST_UPDATED, _int("staff_id"), _int("counterparty_id"),
        _text("item_code"), _int("item_quantity"), Column("item_unit_price", "numeric(10,2)", MONEY),
        _int("currency_id"), _text("agreed_delivery_date"), _text("agreed_payment_date"),
        _int("agreed_delivery_location_id"),
    )),
    SourceTable("sales_order", (
        _pk("sales_order"), CREATED_AT, LAST_UPDATED, _int("design_id"), _int("staff_id"), _int("counterparty_id"),
        _int("units_sold"), Column("unit_price", "numeric(10,2)", MONEY), _int("currency_id"),
        _text("agreed_delivery_date"), _text("agreed_payment_date"), _int("agreed_delivery_location_id"),
    )),
    SourceTable("staff", (
        _pk("staff"), _text("first_name"), _text("last_name"), _int("department_id"), _text("email_address"),
        CREATED_AT, LAST_UPDATED,
    )),
    SourceTable("transaction", (
        _pk("transaction"), Column("transaction_type", '"TransactionType"', pa.string()),
        _int("sales_order_id", True), _int("purchase_order_id", True), CREATED_AT, LAST_UPDATED,
    )),
)

SOURCE_TABLES: dict[str, SourceTable] = {t.name: t for t in _TABLES}
TABLE_NAMES: tuple[str, ...] = tuple(SOURCE_TABLES)
