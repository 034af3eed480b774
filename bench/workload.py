"""The benchmark's change to the source between ticks: N new orders (each with its transaction and
payment, one timestamp, as production writes them) and M earlier payments flipped to paid.

Plain psycopg, deterministic for a given seed. Written here rather than with `Simulator.step`, whose
counts are Poisson draws: every approach must see exactly the same, known change.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import psycopg
from psycopg import sql

from totesys_platform.local.simulator import utc_now

SALES_SHARE = 11_200 / (11_200 + 4_650)  # the production mix of sales and purchase orders


class WorkloadError(RuntimeError):
    pass


@dataclass(frozen=True)
class Tick:
    at: datetime
    sales_orders: int
    purchase_orders: int
    payments_paid: int

    @property
    def rows_changed(self) -> int:
        """Source rows written: an order, its transaction and its payment per order, plus each paid payment."""
        return 3 * (self.sales_orders + self.purchase_orders) + self.payments_paid


def _ids(conn: psycopg.Connection, table: str) -> list[int]:
    pk = sql.Identifier(f"{table}_id")
    ids = conn.execute(sql.SQL("SELECT array_agg({} ORDER BY {}) FROM {}").format(pk, pk, sql.Identifier(table))
                       ).fetchone()[0]
    if not ids:
        raise WorkloadError(f"totesys table {table} is empty: seed the database before applying a tick")
    return ids


def apply_tick(url: str, *, orders: int = 100, payments_paid: int = 50, seed: int = 7,
               at: datetime | None = None) -> Tick:
    """Write one tick in one transaction, at `at` (default: now); its timestamp is later than every last_updated
    already there."""
    rng = random.Random(seed)
    with psycopg.connect(url) as conn:
        latest = conn.execute("SELECT max(last_updated) FROM payment").fetchone()[0]
        now = at or utc_now()
        if latest is not None and now <= latest:
            now = latest + timedelta(milliseconds=1)
        refs = {t: _ids(conn, t) for t in ("staff", "counterparty", "currency", "address", "design")}
        payment_types = dict(conn.execute("SELECT payment_type_name::text, payment_type_id FROM payment_type"))
        # Oldest unpaid payments created before this tick; fewer than asked for is reported, not hidden.
        paid = conn.execute(
            "UPDATE payment SET paid = true, last_updated = %(now)s WHERE payment_id IN ("
            " SELECT payment_id FROM payment WHERE NOT paid AND created_at < %(now)s ORDER BY payment_id LIMIT %(n)s)",
            {"now": now, "n": payments_paid}).rowcount
        sales = purchases = 0
        for _ in range(orders):
            delivery = (now.date() + timedelta(days=rng.randint(0, 7))).isoformat()
            pay_date = (now.date() + timedelta(days=rng.randint(0, 7))).isoformat()
            counterparty, currency = rng.choice(refs["counterparty"]), rng.choice(refs["currency"])
            if rng.random() < SALES_SHARE:
                quantity, price = rng.randint(1_000, 100_000), Decimal(rng.randint(200, 400)) / 100
                order_id = conn.execute(
                    "INSERT INTO sales_order (created_at, last_updated, design_id, staff_id, counterparty_id, "
                    "units_sold, unit_price, currency_id, agreed_delivery_date, agreed_payment_date, "
                    "agreed_delivery_location_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "RETURNING sales_order_id",
                    (now, now, rng.choice(refs["design"]), rng.choice(refs["staff"]), counterparty, quantity, price,
                     currency, delivery, pay_date, rng.choice(refs["address"]))).fetchone()[0]
                kind, sales_id, purchase_id, ptype = "SALE", order_id, None, payment_types["SALES_RECEIPT"]
                sales += 1
            else:
                quantity, price = rng.randint(1, 1_000), Decimal(rng.randint(300, 100_000)) / 100
                item = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(7))
                order_id = conn.execute(
                    "INSERT INTO purchase_order (created_at, last_updated, staff_id, counterparty_id, item_code, "
                    "item_quantity, item_unit_price, currency_id, agreed_delivery_date, agreed_payment_date, "
                    "agreed_delivery_location_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "RETURNING purchase_order_id",
                    (now, now, rng.choice(refs["staff"]), counterparty, item, quantity, price, currency,
                     delivery, pay_date, rng.choice(refs["address"]))).fetchone()[0]
                kind, sales_id, purchase_id, ptype = "PURCHASE", None, order_id, payment_types["PURCHASE_PAYMENT"]
                purchases += 1
            transaction_id = conn.execute(
                "INSERT INTO transaction (transaction_type, sales_order_id, purchase_order_id, created_at, "
                "last_updated) VALUES (%s, %s, %s, %s, %s) RETURNING transaction_id",
                (kind, sales_id, purchase_id, now, now)).fetchone()[0]
            conn.execute(
                "INSERT INTO payment (created_at, last_updated, transaction_id, counterparty_id, payment_amount, "
                "currency_id, payment_type_id, paid, payment_date, company_ac_number, counterparty_ac_number) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, false, %s, %s, %s)",
                (now, now, transaction_id, counterparty, quantity * price, currency, ptype, pay_date,
                 rng.randint(10_000_000, 99_999_999), rng.randint(10_000_000, 99_999_999)))
    return Tick(now, sales, purchases, paid)
