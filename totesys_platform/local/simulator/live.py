"""Live activity in the simulated totesys (plain logic, no Dagster).

``Simulator(url, seed=...).step(now)`` writes what production writes in one moment: new order/transaction/payment
triples, due payments flipped to paid, sometimes a new design, and updates to orders and reference rows, in one
transaction. ``run()`` calls ``step`` on the wall clock until stopped. Deterministic for a seed and a sequence of
``now`` values on the same starting database.
"""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Callable

import psycopg
from psycopg import sql

from totesys_platform.redaction import redact_url

Progress = Callable[[str], None]
from totesys_platform.local.simulator.reference import (
    _CONTACT_NAMES, MAX_STEP_MINUTES, PURCHASE_ORDERS_AT_SCALE_1, REFUND_SHARE, SALES_ORDERS_AT_SCALE_1, _design_row,
    _phone,
)
from totesys_platform.local.simulator.seeding import SimulatorError, connect, utc_now

def _poisson(rng: random.Random, mean: float) -> int:
    """How many events of a process with this mean happen in one step (Knuth's method; means are small)."""
    if mean <= 0:
        return 0
    if mean > 50:  # normal approximation keeps huge rates cheap
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


@dataclass(frozen=True)
class StepStats:
    """What one live step wrote."""

    now: datetime
    sales_orders: int = 0
    purchase_orders: int = 0
    payments_paid: int = 0
    designs: int = 0
    order_updates: int = 0
    reference_updates: tuple[str, ...] = ()  # the table of each updated reference row

    @property
    def writes(self) -> int:
        return (self.sales_orders + self.purchase_orders + self.payments_paid + self.designs
                + self.order_updates + len(self.reference_updates))

    def __add__(self, other: "StepStats") -> "StepStats":
        return StepStats(
            now=max(self.now, other.now),
            sales_orders=self.sales_orders + other.sales_orders,
            purchase_orders=self.purchase_orders + other.purchase_orders,
            payments_paid=self.payments_paid + other.payments_paid,
            designs=self.designs + other.designs,
            order_updates=self.order_updates + other.order_updates,
            reference_updates=self.reference_updates + other.reference_updates,
        )

    def summary(self) -> str:
        return (f"{self.sales_orders} sales orders, {self.purchase_orders} purchase orders, "
                f"{self.payments_paid} payments paid, {self.designs} designs, {self.order_updates} order updates, "
                f"{len(self.reference_updates)} reference updates")


_DUE_PAYMENTS_SQL = r"""
UPDATE payment SET paid = true, last_updated = %(now)s
WHERE NOT paid AND created_at < %(now)s AND payment_date ~ '^\d{4}-\d{2}-\d{2}$'
  AND greatest(payment_date::date, created_at::date + 1) + time '07:55' <= %(now)s
"""


class Simulator:
    """Writes production-like activity into a seeded totesys database, one transaction per step.

    Rates are expected events per minute of simulated time: the gap between two `step` calls
    (the first step counts as one minute, a gap counts at most MAX_STEP_MINUTES). Deterministic
    given `seed`, the `now` values and the starting database.
    """

    def __init__(
        self,
        url: str,
        *,
        seed: int = 42,
        orders_per_minute: float = 2.0,
        update_rate: float = 0.2,
        reference_update_rate: float = 0.05,
        new_design_rate: float = 0.02,
        business_hours_only: bool = False,
    ) -> None:
        for name, value in (("orders_per_minute", orders_per_minute), ("update_rate", update_rate),
                            ("reference_update_rate", reference_update_rate), ("new_design_rate", new_design_rate)):
            if not (math.isfinite(value) and value >= 0):
                raise SimulatorError(f"{name} must be a number >= 0, got {value!r}")
        self.url = url
        self.seed = seed
        self.orders_per_minute = orders_per_minute
        self.update_rate = update_rate
        self.reference_update_rate = reference_update_rate
        self.new_design_rate = new_design_rate
        self.business_hours_only = business_hours_only
        self._last_now: datetime | None = None
        self._conn: psycopg.Connection | None = None

    # -- connection ------------------------------------------------------------------------
    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.url, autocommit=True)  # each step opens its own transaction
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "Simulator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- one step ----------------------------------------------------------------------------
    def step(self, now: datetime) -> StepStats:
        """Write everything that happens at `now` (naive; truncated to milliseconds) in one transaction."""
        now = now.replace(tzinfo=None, microsecond=now.microsecond // 1000 * 1000)
        if self._last_now is None:
            minutes = 1.0
        else:  # a pause is not backfilled: a long gap counts as MAX_STEP_MINUTES
            minutes = min(MAX_STEP_MINUTES, max(0.0, (now - self._last_now).total_seconds() / 60))
        rng = random.Random(f"{self.seed}/{now.isoformat()}")
        conn = self._connection()
        try:
            with conn.transaction():
                stats = self._write_step(conn, rng, now, minutes)
        except psycopg.errors.UndefinedTable as err:
            raise SimulatorError(
                f"totesys database {redact_url(self.url)} has no totesys schema ({err.diag.message_primary}); "
                "seed it first: `totesys-platform seed` or `totesys-platform stack up`."
            ) from err
        self._last_now = now
        return stats

    def _write_step(self, conn: psycopg.Connection, rng: random.Random, now: datetime, minutes: float) -> StepStats:
        ids = self._reference_ids(conn)
        open_for_orders = not self.business_hours_only or (now.isoweekday() < 6 and 8 <= now.hour < 19)
        new_orders = _poisson(rng, self.orders_per_minute * minutes) if open_for_orders else 0
        sales = purchases = 0
        if new_orders and not all(ids[t] for t in ("staff", "counterparty", "currency", "address", "design")):
            raise SimulatorError(
                f"totesys database {redact_url(self.url)} has no reference data (staff, counterparties, ...); "
                "seed it first: `totesys-platform seed`."
            )
        # Orders to update are chosen among those that existed before this step.
        max_sales = conn.execute("SELECT coalesce(max(sales_order_id), 0) FROM sales_order").fetchone()[0]
        max_purchases = conn.execute("SELECT coalesce(max(purchase_order_id), 0) FROM purchase_order").fetchone()[0]
        for _ in range(new_orders):
            if rng.random() < SALES_ORDERS_AT_SCALE_1 / (SALES_ORDERS_AT_SCALE_1 + PURCHASE_ORDERS_AT_SCALE_1):
                self._insert_sales_triple(conn, rng, now, ids)
                sales += 1
            else:
                self._insert_purchase_triple(conn, rng, now, ids)
                purchases += 1
        paid = conn.execute(_DUE_PAYMENTS_SQL, {"now": now}).rowcount
        designs = _poisson(rng, self.new_design_rate * minutes)
        for _ in range(designs):
            conn.execute(
                "INSERT INTO design (created_at, design_name, file_location, file_name, last_updated) "
                "VALUES (%s, %s, %s, %s, %s)", _design_row(rng, now),
            )
        order_updates = 0
        for _ in range(_poisson(rng, self.update_rate * minutes)):
            order_updates += self._update_order(conn, rng, now, max_sales, max_purchases)
        reference_updates = tuple(
            table for table in (self._update_reference_row(conn, rng, now, ids)
                                for _ in range(_poisson(rng, self.reference_update_rate * minutes)))
            if table
        )
        return StepStats(now, sales, purchases, paid, designs, order_updates, reference_updates)

    @staticmethod
    def _reference_ids(conn: psycopg.Connection) -> dict[str, list[int]]:
        ids = {}
        for table in ("staff", "counterparty", "currency", "address", "design", "department"):
            query = sql.SQL("SELECT coalesce(array_agg({pk} ORDER BY {pk}), '{{}}') FROM {t}").format(
                pk=sql.Identifier(f"{table}_id"), t=sql.Identifier(table))
            ids[table] = conn.execute(query).fetchone()[0]
        ids["payment_type"] = dict(conn.execute("SELECT payment_type_name, payment_type_id FROM payment_type"))
        return ids

    @staticmethod
    def _order_dates(rng: random.Random, now: datetime) -> tuple[str, str]:
        delivery = now.date() + timedelta(days=rng.randint(0, 7))
        payment = now.date() + timedelta(days=rng.randint(0, 7))
        return delivery.isoformat(), payment.isoformat()

    @staticmethod
    def _payment(conn, rng, now, transaction_id, counterparty_id, amount, currency_id, payment_type_id, payment_date):
        conn.execute(
            "INSERT INTO payment (created_at, last_updated, transaction_id, counterparty_id, payment_amount, "
            "currency_id, payment_type_id, paid, payment_date, company_ac_number, counterparty_ac_number) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, false, %s, %s, %s)",
            (now, now, transaction_id, counterparty_id, amount, currency_id, payment_type_id, payment_date,
             rng.randint(10_000_000, 99_999_999), rng.randint(10_000_000, 99_999_999)),
        )

    def _payment_type_id(self, rng: random.Random, ids: dict, normal: str, refund: str) -> int:
        name = refund if rng.random() < REFUND_SHARE else normal
        try:
            return ids["payment_type"][name]
        except KeyError:
            raise SimulatorError(
                f"totesys database {redact_url(self.url)} has no payment_type {name!r}; seed it with the simulator."
            ) from None

    def _insert_sales_triple(self, conn, rng, now, ids) -> None:
        units, price = rng.randint(1_000, 100_000), Decimal(rng.randint(200, 400)) / 100
        counterparty, currency = rng.choice(ids["counterparty"]), rng.choice(ids["currency"])
        delivery, payment_date = self._order_dates(rng, now)
        order_id = conn.execute(
            "INSERT INTO sales_order (created_at, last_updated, design_id, staff_id, counterparty_id, units_sold, "
            "unit_price, currency_id, agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING sales_order_id",
            (now, now, rng.choice(ids["design"]), rng.choice(ids["staff"]), counterparty, units, price, currency,
             delivery, payment_date, rng.choice(ids["address"])),
        ).fetchone()[0]
        transaction_id = conn.execute(
            "INSERT INTO transaction (transaction_type, sales_order_id, purchase_order_id, created_at, last_updated) "
            "VALUES ('SALE', %s, NULL, %s, %s) RETURNING transaction_id", (order_id, now, now),
        ).fetchone()[0]
        self._payment(conn, rng, now, transaction_id, counterparty, units * price, currency,
                      self._payment_type_id(rng, ids, "SALES_RECEIPT", "SALES_REFUND"), payment_date)

    def _insert_purchase_triple(self, conn, rng, now, ids) -> None:
        quantity, price = rng.randint(1, 1_000), Decimal(rng.randint(300, 100_000)) / 100
        counterparty, currency = rng.choice(ids["counterparty"]), rng.choice(ids["currency"])
        delivery, payment_date = self._order_dates(rng, now)
        item_code = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(7))
        order_id = conn.execute(
            "INSERT INTO purchase_order (created_at, last_updated, staff_id, counterparty_id, item_code, "
            "item_quantity, item_unit_price, currency_id, agreed_delivery_date, agreed_payment_date, "
            "agreed_delivery_location_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "RETURNING purchase_order_id",
            (now, now, rng.choice(ids["staff"]), counterparty, item_code, quantity, price, currency,
             delivery, payment_date, rng.choice(ids["address"])),
        ).fetchone()[0]
        transaction_id = conn.execute(
            "INSERT INTO transaction (transaction_type, sales_order_id, purchase_order_id, created_at, last_updated) "
            "VALUES ('PURCHASE', NULL, %s, %s, %s) RETURNING transaction_id", (order_id, now, now),
        ).fetchone()[0]
        self._payment(conn, rng, now, transaction_id, counterparty, quantity * price, currency,
                      self._payment_type_id(rng, ids, "PURCHASE_PAYMENT", "PURCHASE_REFUND"), payment_date)

    @staticmethod
    def _update_order(conn, rng, now, max_sales: int, max_purchases: int) -> int:
        """Change the quantity of an existing order (production allows it; the payment is left as it was)."""
        if max_sales and (not max_purchases or rng.random() < 0.7):
            return conn.execute(
                "UPDATE sales_order SET units_sold = %s, last_updated = %s WHERE sales_order_id = %s "
                "AND last_updated < %s",
                (rng.randint(1_000, 100_000), now, rng.randint(1, max_sales), now),
            ).rowcount
        if max_purchases:
            return conn.execute(
                "UPDATE purchase_order SET item_quantity = %s, last_updated = %s WHERE purchase_order_id = %s "
                "AND last_updated < %s",
                (rng.randint(1, 1_000), now, rng.randint(1, max_purchases), now),
            ).rowcount
        return 0

    @staticmethod
    def _update_reference_row(conn, rng, now, ids) -> str | None:
        """Change one address, department, counterparty or staff row; returns its table (None if none changed)."""
        table = rng.choice(("address", "department", "counterparty", "staff"))
        if not ids[table]:
            return None
        row_id = rng.choice(ids[table])
        if table == "address":
            stmt, values = "UPDATE address SET phone = %s, last_updated = %s WHERE address_id = %s", (_phone(rng),)
        elif table == "department":
            stmt = "UPDATE department SET manager = %s, last_updated = %s WHERE department_id = %s"
            values = (rng.choice(_CONTACT_NAMES),)
        elif table == "counterparty":
            stmt = "UPDATE counterparty SET commercial_contact = %s, last_updated = %s WHERE counterparty_id = %s"
            values = (rng.choice(_CONTACT_NAMES),)
        elif ids["department"] and rng.random() < 0.5:
            stmt = "UPDATE staff SET department_id = %s, last_updated = %s WHERE staff_id = %s"
            values = (rng.choice(ids["department"]),)
        else:
            stmt = ("UPDATE staff SET email_address = split_part(email_address, '@', 1) || %s, last_updated = %s "
                    "WHERE staff_id = %s")
            values = (rng.choice(("@terrifictotes.com", "@terrifictotes.co.uk")),)
        changed = conn.execute(stmt + " AND last_updated < %s", (*values, now, row_id, now)).rowcount
        return table if changed else None

    # -- wall clock loop -----------------------------------------------------------------------
    def run(
        self,
        duration: float | None = None,
        interval: float = 5.0,
        *,
        report_every: float = 60.0,
        progress: Progress = print,
    ) -> StepStats:
        """Step on the wall clock (naive UTC) every `interval` seconds until SIGINT/SIGTERM or `duration`.

        Prints a summary of the writes every `report_every` seconds. A lost database connection is
        reported and retried on the next step. Returns the totals.
        """
        if interval <= 0:
            raise SimulatorError(f"interval must be > 0 seconds, got {interval!r}")
        stop = threading.Event()
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda *_: stop.set())
        started = time.monotonic()
        totals = window = StepStats(utc_now())
        last_report = started
        progress(f"simulating live activity on {redact_url(self.url)}: {self.orders_per_minute:g} orders/min, "
                 f"a step every {interval:g} s (Ctrl-C to stop)")
        try:
            while not stop.is_set():
                try:
                    stats = self.step(utc_now())
                    totals, window = totals + stats, window + stats
                except (psycopg.OperationalError, SimulatorError) as err:
                    self.close()
                    progress(f"step failed, retrying in {interval:g} s: {str(err).strip().splitlines()[0]}")
                if time.monotonic() - last_report >= report_every:
                    progress(f"last {time.monotonic() - last_report:.0f} s: {window.summary()}")
                    window, last_report = StepStats(utc_now()), time.monotonic()
                remaining = None if duration is None else duration - (time.monotonic() - started)
                if remaining is not None and remaining <= 0:
                    break
                stop.wait(interval if remaining is None else min(interval, remaining))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close()
        progress(f"simulator stopped after {time.monotonic() - started:.0f} s: {totals.summary()}")
        return totals
