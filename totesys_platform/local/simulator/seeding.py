"""Seeding the simulated totesys: its schema, reference data and an order history (plain logic, no Dagster).

``seed(url, scale=..., seed=..., end=...)`` fills an empty database with reference data and an order history
from 2022-11-03 up to (not including) ``end``. The history is generated inside PostgreSQL (``generate_series``,
with a seeded hash as the random source) and streamed into the tables with binary COPY, so a scale-100 history
(about 1.6 million orders, transactions and payments each) takes well under a minute. Deterministic: the same
seed, scale and end give the same rows.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from importlib import resources
from typing import Callable, Mapping

import psycopg
from psycopg import sql

from totesys_platform import connections
from totesys_platform.redaction import redact_url
from totesys_platform.local.simulator.reference import (
    HISTORY_START, INITIAL_DESIGNS, PURCHASE_ORDERS_AT_SCALE_1,
    REFERENCE_CREATED_AT, REFUND_SHARE, SALES_ORDERS_AT_SCALE_1, WHOLE_SECOND_SHARE, _design_step_ms,
    _load_reference_data,
)
from totesys_platform.source.contract import PAYMENT_TYPE_NAMES, SOURCE_TABLES, TABLE_NAMES, SourceTable

Progress = Callable[[str], None]

class SimulatorError(RuntimeError):
    """A problem the user can fix; the message says what is wrong and what to do."""


def schema_sql() -> str:
    return resources.files("totesys_platform.source").joinpath("totesys_schema.sql").read_text()


def create_schema(conn: psycopg.Connection) -> None:
    """Create the totesys tables, the two enums and `_prisma_migrations` (fails if they exist).

    The DDL is production's (keys, defaults, foreign keys) for the tables the simulator fills; a contract table
    it does not know yet is created from the contract alone (columns, types, NOT NULL, primary key) and left
    empty, so a new source table needs no change here to be extracted.
    """
    conn.execute(schema_sql())
    created = {row[0] for row in conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
    for name in TABLE_NAMES:
        if name not in created:
            conn.execute(contract_table_ddl(SOURCE_TABLES[name]))


def contract_table_ddl(table: SourceTable) -> sql.Composable:
    """CREATE TABLE for a contract table: its columns with their exact types (constants of the contract)."""
    columns = [
        sql.SQL("{} {}{}").format(
            sql.Identifier(c.name), sql.SQL(c.pg_type),
            sql.SQL(" PRIMARY KEY" if c.name == table.primary_key else "" if c.nullable else " NOT NULL"))
        for c in table.columns]
    return sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(table.name), sql.SQL(", ").join(columns))


def _u(key: str, salt: int) -> str:
    """SQL for a uniform number in [0, 1) derived from (seed, key, salt): deterministic, order-free."""
    return (f"((hashint8extended(({key})::bigint, %(seed)s::bigint * 1000 + {int(salt)})"
            f" & 9007199254740991)::float8 / 9007199254740992.0)")


def _bits(key: str, salt: int) -> str:
    """SQL for 53 pseudo-random bits (a bigint) from (seed, key, salt); slices of it feed several picks."""
    return f"(hashint8extended(({key})::bigint, %(seed)s::bigint * 1000 + {int(salt)}) & 9007199254740991)"


def _pick(key: str, salt: int, low: str | int, high: str | int) -> str:
    """SQL for a uniform integer in [low, high] (bounds are constants or parameter placeholders)."""
    return f"({low} + floor({_u(key, salt)} * ({high} - {low} + 1))::int)"


_KEY = "transaction_id"
_ITEM_CODE = " || ".join(f"chr(65 + floor({_u(_KEY, 40 + i)} * 26)::int)" for i in range(7))
_BUSINESS_DAY_MS = 11 * 3600 * 1000  # 08:00:00.000 to 18:59:59.999

# Every order of the history with its transaction and payment, one row each, already in time order.
# No sort is needed: each working day gets a pseudo-random weight, cumulative weights split the
# sales and purchase totals into per-day counts (exact integer arithmetic), the day's sales and
# purchases are interleaved evenly into slots, and slot j of m starts at j/m of the business day.
# So ids (transaction, sales order, purchase order) follow creation time by construction.
# Every other attribute is a pure function of (seed, transaction_id).
_HISTORY_SQL = f"""
WITH day AS (
    SELECT d::date AS day, row_number() OVER (ORDER BY d) - 1 AS i
    FROM generate_series(%(start)s::date, %(end)s::date - 1, interval '1 day') AS d
    WHERE extract(isodow FROM d) < 6
), weighted AS (
    SELECT day, i, {_pick('i', 1, 600, 1400)}::bigint AS w FROM day
), cumulative AS (
    -- sum(bigint) is numeric: back to bigint so the divisions below are exact integer floors
    SELECT day, (sum(w) OVER (ORDER BY i))::bigint - w AS w_before, (sum(w) OVER (ORDER BY i))::bigint AS w_upto,
           (sum(w) OVER ())::bigint AS w_total
    FROM weighted
), per_day AS (
    SELECT day,
           %(n_sales)s::bigint * w_before / w_total AS sales_before,
           %(n_sales)s::bigint * w_upto / w_total - %(n_sales)s::bigint * w_before / w_total AS s,
           %(n_purchases)s::bigint * w_before / w_total AS purchases_before,
           %(n_purchases)s::bigint * w_upto / w_total - %(n_purchases)s::bigint * w_before / w_total AS p
    FROM cumulative
), dated AS MATERIALIZED (
    -- the day's possible agreed dates as text, formatted once per day rather than once per order
    SELECT p.*, ARRAY(SELECT to_char(p.day + k, 'YYYY-MM-DD') FROM generate_series(0, 8) AS k) AS dates
    FROM per_day AS p
), slot AS (
    SELECT day, dates, j, s + p AS m, sales_before, purchases_before,
           (j + 1) * s / (s + p) AS sales_upto, j * s / (s + p) AS sales_before_slot
    FROM dated CROSS JOIN LATERAL generate_series(0::bigint, s + p - 1) AS j
    WHERE s + p > 0
), numbered AS (
    SELECT day, dates, j, m,
           sales_upto > sales_before_slot AS is_sale,
           sales_before + purchases_before + j + 1 AS transaction_id,
           CASE WHEN sales_upto > sales_before_slot THEN sales_before + sales_upto
                ELSE purchases_before + j + 1 - sales_upto END AS order_id
    FROM slot
), timed AS (
    SELECT n.*,
           j * {_BUSINESS_DAY_MS} / m AS slot_start_ms,
           floor((j + {_u(_KEY, 2)}) * {_BUSINESS_DAY_MS} / m)::bigint AS ms
    FROM numbered AS n
    OFFSET 0  -- a fence: later steps read ms instead of recomputing its expression at every use
), stamped AS (
    SELECT t.*,
           -- some timestamps are whole seconds, as in production, without leaving the slot (keeps time order)
           8 * 3600000 + CASE WHEN {_u(_KEY, 3)} < {WHOLE_SECOND_SHARE} AND ms / 1000 * 1000 >= slot_start_ms
                              THEN ms / 1000 * 1000 ELSE ms END AS order_ms,
           -- a few hashes, sliced into independent picks (13+ bits each: the modulo bias is negligible)
           {_bits(_KEY, 4)} AS r_ids, {_bits(_KEY, 5)} AS r_terms, {_bits(_KEY, 6)} AS r_amounts
    FROM timed AS t
    OFFSET 0  -- the same fence: each hash is computed once per row, then sliced
), drawn AS (
    SELECT st.*, (r_terms >> 3) %% 8 AS payment_days FROM stamped AS st
)
SELECT is_sale, transaction_id::int, order_id::int, day + interval '1 millisecond' * order_ms AS ts,
       (1 + r_ids %% %(n_staff)s)::int AS staff_id,
       (1 + (r_ids >> 13) %% %(n_counterparty)s)::int AS counterparty_id,
       (1 + (r_ids >> 26) %% %(n_currency)s)::int AS currency_id,
       (1 + (r_ids >> 39) %% %(n_address)s)::int AS location_id,
       dates[1 + r_terms %% 8] AS delivery_date,
       dates[1 + payment_days] AS payment_date,
       (CASE WHEN is_sale THEN 1000 + r_amounts %% 99001 ELSE 1 + r_amounts %% 1000 END)::int AS quantity,
       -- cents times 0.01: exact, and cheaper than a numeric division
       (CASE WHEN is_sale THEN 200 + (r_amounts >> 20) %% 201 ELSE 300 + (r_amounts >> 20) %% 99701 END)::numeric
         * 0.01 AS price,
       -- a design that exists at ts: the initial catalogue plus one more every design_step_ms
       1 + floor({_u(_KEY, 14)} * least(%(designs)s, %(initial_designs)s
           + ((day - %(start)s::date) * 86400000::bigint + order_ms - %(reference_ms)s) / %(design_step_ms)s)
       )::int AS design_id,
       CASE WHEN (r_terms >> 6) %% 10000 >= {int(REFUND_SHARE * 10000)}
            THEN CASE WHEN is_sale THEN %(pt_sales_receipt)s ELSE %(pt_purchase_payment)s END
            ELSE CASE WHEN is_sale THEN %(pt_sales_refund)s ELSE %(pt_purchase_refund)s END END AS payment_type_id,
       {_pick(_KEY, 16, 10000000, 99999999)} AS company_ac_number,
       {_pick(_KEY, 17, 10000000, 99999999)} AS counterparty_ac_number,
       -- the 07:55 batch pays on the payment date, or the next morning for a same-day payment date
       (day + greatest(payment_days, 1)::int + interval '7 hours 55 minutes'
        + (r_terms >> 20) %% 60000 * interval '1 millisecond')::timestamp(3) AS paid_at,
       CASE WHEN NOT is_sale THEN {_ITEM_CODE} END AS item_code
FROM drawn
"""

# (table, its columns, the matching SELECT list over the history `h`, filter): streamed table by table.
_HISTORY_TABLES = (
    ("sales_order",
     "sales_order_id, created_at, last_updated, design_id, staff_id, counterparty_id, units_sold, unit_price, "
     "currency_id, agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id",
     "order_id, ts, ts, design_id, staff_id, counterparty_id, quantity, price, currency_id, delivery_date, "
     "payment_date, location_id",
     "is_sale"),
    ("purchase_order",
     "purchase_order_id, created_at, last_updated, staff_id, counterparty_id, item_code, item_quantity, "
     "item_unit_price, currency_id, agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id",
     "order_id, ts, ts, staff_id, counterparty_id, item_code, quantity, price, currency_id, delivery_date, "
     "payment_date, location_id",
     "NOT is_sale"),
    ("transaction",
     "transaction_id, transaction_type, sales_order_id, purchase_order_id, created_at, last_updated",
     # text, not the enum: the reader may not see the schema yet; an enum's binary form is its label
     "transaction_id, CASE WHEN is_sale THEN 'SALE' ELSE 'PURCHASE' END, "
     "CASE WHEN is_sale THEN order_id END, CASE WHEN NOT is_sale THEN order_id END, ts, ts",
     "true"),
    ("payment",
     "payment_id, created_at, last_updated, transaction_id, counterparty_id, payment_amount, currency_id, "
     "payment_type_id, paid, payment_date, company_ac_number, counterparty_ac_number",
     # paid before the history ends: the 07:55 batch ran and moved last_updated
     "transaction_id, ts, CASE WHEN paid_at < %(end)s::date THEN paid_at ELSE ts END, transaction_id, "
     "counterparty_id, (quantity * price)::numeric(10, 2), currency_id, payment_type_id, paid_at < %(end)s::date, "
     "payment_date, company_ac_number, counterparty_ac_number",
     "true"),
)


def _stream_history(reader: psycopg.Connection, writer: psycopg.Connection, params: dict,
                    progress: Progress) -> None:
    """Generate each history table on `reader` and COPY it into `writer`, binary, block by block.

    The two server processes work at the same time (one computes rows, the other stores them),
    and the writer stays in its single seeding transaction.
    """
    for table, columns, select_list, where in _HISTORY_TABLES:
        started = time.monotonic()
        # Constant SQL text only: every value is a parameter, bound client-side (COPY takes no server parameters).
        out_stmt = f"COPY (SELECT {select_list} FROM ({_HISTORY_SQL}) AS h WHERE {where}) TO STDOUT (FORMAT BINARY)"
        in_stmt = f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)"
        with reader.cursor().copy(out_stmt, params) as source, writer.cursor().copy(in_stmt) as target:
            # COPY OUT arrives row by row: pass it on in ~1 MB writes to keep Python's share small.
            buffer = bytearray()
            for row in source:
                buffer += row
                if len(buffer) >= 1 << 20:
                    target.write(buffer)
                    buffer = bytearray()
            target.write(buffer)
        progress(f"  {table}: {time.monotonic() - started:.1f} s")


@dataclass(frozen=True)
class SeedCounts:
    """Rows per table after seeding: `counts.rows["sales_order"]`, or `counts.sales_order`."""

    rows: Mapping[str, int]
    seconds: float = field(default=0.0, compare=False)

    def __getattr__(self, table: str) -> int:
        try:
            return self.__dict__["rows"][table]
        except KeyError:
            raise AttributeError(f"SeedCounts has no table {table!r}") from None

    def as_dict(self) -> dict[str, int]:
        return dict(self.rows)


def _count_rows(conn: psycopg.Connection) -> dict[str, int]:
    counts = {}
    for table in TABLE_NAMES:
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        counts[table] = conn.execute(query).fetchone()[0]
    return counts


def _existing_tables(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_name = ANY(%s)",
        (list(TABLE_NAMES),),
    ).fetchall()
    return {r[0] for r in rows}


def ensure_schema(conn: psycopg.Connection, url: str) -> bool:
    """Create the totesys schema if the database has none of its tables; True if it was created.

    A database with only some of the contract tables is refused: it is neither totesys nor empty.
    """
    existing = _existing_tables(conn)
    if not existing:
        create_schema(conn)
        return True
    missing = sorted(set(TABLE_NAMES) - existing)
    if missing:
        raise SimulatorError(
            f"database {redact_url(url)} has part of the totesys schema (missing tables: {', '.join(missing)}); "
            "use an empty database or one created by the simulator."
        )
    return False


def connect(url: str, **kwargs) -> psycopg.Connection:
    """Connect, turning an unreachable database into one clear line (without the password)."""
    return connections.connect(url, purpose="simulator", what="totesys database", setting="TOTESYS_DB_URL",
                               hint="Start the local stack (`totesys-platform stack up`) or set TOTESYS_DB_URL.",
                               error=SimulatorError, **kwargs)


def _skip_foreign_key_checks(conn: psycopg.Connection) -> bool:
    """Skip per-row foreign-key triggers for this transaction when the role may (superuser, as locally).

    The generated rows refer only to ids written in the same transaction, so the checks cannot fail;
    they would double the load time. Without the privilege the load is simply checked row by row.
    """
    try:
        with conn.transaction():  # a savepoint: a refusal must not abort the seeding transaction
            conn.execute("SET LOCAL session_replication_role = replica")
        return True
    except psycopg.errors.InsufficientPrivilege:
        return False


def utc_now() -> datetime:
    """Naive UTC with millisecond precision, the way totesys stores timestamps."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def seed(
    url: str,
    *,
    scale: float = 1.0,
    seed: int = 42,
    end: date | None = None,
    progress: Progress = print,
) -> SeedCounts:
    """Fill an empty totesys database with reference data and order history up to (not including) `end`.

    Scale 1 gives about the Nov 2024 production sizes (11,200 sales orders, 4,650 purchase orders, one
    transaction and one payment each, 470 designs) whatever the window; scale 100 gives 100 times the
    orders. `end` defaults to today (UTC). Creates the schema if the database has none. Everything is
    written in one transaction, so an interrupted seed leaves the database empty.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
        raise SimulatorError(f"scale must be a number >= 0, got {scale!r}")
    end = end or utc_now().date()
    if end <= HISTORY_START:
        raise SimulatorError(f"end must be after {HISTORY_START.isoformat()} (the first order), got {end.isoformat()}")
    n_sales = round(SALES_ORDERS_AT_SCALE_1 * scale)
    n_purchases = round(PURCHASE_ORDERS_AT_SCALE_1 * scale)
    started = time.monotonic()
    with connect(url) as conn, connect(url, autocommit=True) as reader:
        with conn.transaction():
            ensure_schema(conn, url)
            non_empty = {t: n for t, n in _count_rows(conn).items() if n}
            if non_empty:
                table, n = next(iter(non_empty.items()))
                raise SimulatorError(
                    f"totesys database {redact_url(url)} is not empty ({n} rows in {table}); seed only an "
                    "empty database: drop and recreate it (for the local stack: `make clean`)."
                )
            progress(f"seeding totesys {redact_url(url)}: scale {scale:g}, seed {seed}, history "
                     f"{HISTORY_START.isoformat()} to {end.isoformat()} ({n_sales:,} sales and "
                     f"{n_purchases:,} purchase orders)")
            unchecked = _skip_foreign_key_checks(conn)
            with conn.cursor() as cur:
                sizes = _load_reference_data(cur, seed, end)
            progress(f"  reference data and {sizes['design']} designs: {time.monotonic() - started:.1f} s")
            # The generator reads no table: the reference ids are 1..n, passed in as numbers.
            payment_type_ids = {name: i for i, name in enumerate(PAYMENT_TYPE_NAMES, start=1)}
            params = {
                "seed": seed, "start": HISTORY_START, "end": end, "n_sales": n_sales, "n_purchases": n_purchases,
                "n_staff": sizes["staff"], "n_counterparty": sizes["counterparty"],
                "n_currency": sizes["currency"], "n_address": sizes["address"],
                "designs": sizes["design"], "initial_designs": INITIAL_DESIGNS,
                "design_step_ms": _design_step_ms(end),
                "reference_ms": (REFERENCE_CREATED_AT - datetime.combine(HISTORY_START, datetime.min.time()))
                // timedelta(milliseconds=1),
                **{f"pt_{name.lower()}": i for name, i in payment_type_ids.items()},
            }
            # A plain serial plan: parallel workers would only compete with the writer for the cores.
            reader.execute("SET max_parallel_workers_per_gather = 0")
            _stream_history(reader, conn, params, progress)
            _reset_sequences(conn)
        counts = _count_rows(conn)
    elapsed = time.monotonic() - started
    progress(f"seeded {counts['sales_order']:,} sales orders, {counts['purchase_order']:,} purchase orders, "
             f"{counts['payment']:,} payments in {elapsed:.1f} s"
             + ("" if unchecked else " (foreign keys checked row by row: seeding as a superuser is faster)"))
    return SeedCounts(counts, seconds=elapsed)


def _reset_sequences(conn: psycopg.Connection) -> None:
    """Explicit ids were written: move every SERIAL sequence past them so later inserts get fresh ids."""
    for table in TABLE_NAMES:
        pk = SOURCE_TABLES[table].primary_key
        conn.execute(
            sql.SQL("SELECT setval(pg_get_serial_sequence({t}, {c}), coalesce(max({ci}), 0) + 1, false) FROM {ti}")
            .format(t=sql.Literal(table), c=sql.Literal(pk), ci=sql.Identifier(pk), ti=sql.Identifier(table))
        )


# --------------------------------------------------------------------------------------------
# Live mode
# --------------------------------------------------------------------------------------------

