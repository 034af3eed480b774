"""The totesys simulator: creates the real totesys schema, seeds history, and writes live activity.

Plain logic, no Dagster. Two modes:

- ``seed(url, scale=..., seed=..., end=...)`` fills an empty database with reference data and an
  order history from 2022-11-03 up to (not including) ``end``. The history is generated inside
  PostgreSQL (``generate_series``, with a seeded hash as the random source) and streamed into the
  tables with binary COPY, so a scale-100 history (about 1.6 million orders, transactions and
  payments each) takes well under a minute.
- ``Simulator(url, seed=...).step(now)`` writes what production writes in one moment: new
  order/transaction/payment triples, due payments flipped to paid, sometimes a new design, and
  updates to orders and reference rows, in one transaction. ``run()`` calls ``step`` on the wall
  clock until stopped.

Both are deterministic: the same seed (and scale/end, or sequence of ``now`` values) on the same
starting database gives the same rows.
"""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from importlib import resources
from typing import Callable

import psycopg
from psycopg import sql

from totesys_platform import connections
from totesys_platform.redaction import redact_url
from totesys_platform.source.contract import PAYMENT_TYPE_NAMES, TABLE_NAMES

Progress = Callable[[str], None]

HISTORY_START = date(2022, 11, 3)
# The real reference rows were all created in one go on the first day, before the first order.
REFERENCE_CREATED_AT = datetime(2022, 11, 3, 7, 50, 49, 962000)
SALES_ORDERS_AT_SCALE_1 = 11_200
PURCHASE_ORDERS_AT_SCALE_1 = 4_650
DESIGNS = 470
INITIAL_DESIGNS = 100  # the catalogue on day one; the rest appear evenly over the history
CURRENCIES = ("GBP", "USD", "EUR")  # ids 1, 2, 3 as in production
REFUND_SHARE = 0.04  # share of payments that are refunds rather than receipts/payments
WHOLE_SECOND_SHARE = 0.1  # share of timestamps with .000 milliseconds, as seen in production
MAX_STEP_MINUTES = 10.0  # a live step covers at most this much time, however long the pause before it


class SimulatorError(RuntimeError):
    """A problem the user can fix; the message says what is wrong and what to do."""


def schema_sql() -> str:
    return resources.files("totesys_platform.source").joinpath("totesys_schema.sql").read_text()


def create_schema(conn: psycopg.Connection) -> None:
    """Create the 11 totesys tables, the two enums and `_prisma_migrations` (fails if they exist)."""
    conn.execute(schema_sql())


# --------------------------------------------------------------------------------------------
# Reference data (small: built in Python from fixed lists and a seeded RNG, loaded with COPY)
# --------------------------------------------------------------------------------------------

_STREET_NAMES = (
    "Herzog", "Alexie", "Sincere", "Rogahn", "Upton", "Kailey", "Camilla", "Zieme", "Cremin", "Keeling",
    "Bahringer", "Ledner", "Kertzmann", "Gleichner", "Rempel", "Heller", "Wuckert", "Schroeder",
)
_STREET_SUFFIXES = ("Via", "Cliffs", "Fort", "Skyway", "Track", "Island", "Locks", "Mews", "Lane", "Crossroad")
_LOCALITIES = ("Alycebury", "Lake Arne", "Port Annabell", "East Bobbie", "Wintheiserfort", "Kuhnfurt")
_DISTRICTS = (
    "Avon", "Bedfordshire", "Buckinghamshire", "Cambridgeshire", "Cheshire", "Cumbria", "Derbyshire",
    "Merseyside", "Northumberland", "Somerset",
)
_CITIES = (
    "New Patienceburgh", "Aliso Viejo", "Lake Charles", "Hackensack", "Olsonside", "Fort Shadburgh",
    "Sayreville", "North Veronaburgh", "Pricetown", "Utica", "West Kesslerfort", "Suffolk",
)
_COUNTRIES = (
    "Turkey", "Austria", "Democratic People's Republic of Korea", "Germany", "Iceland", "Falkland Islands",
    "San Marino", "Côte d'Ivoire", "Brazil", "United Kingdom", "Antigua and Barbuda", "Lithuania",
)
# Postal codes are text: US ZIP+4, leading zeros, letters. Never numbers.
_FIXED_POSTAL_CODES = ("99305-7380", "01234", "00917-4012", "0447", "SW1A 1AA", "28441")

_COUNTERPARTY_NAMES = (
    "Fahey and Sons", "Leannon, Predovic and Morar", "Armstrong Inc", "Kohler Inc",
    "Frami, Yundt and Macejkovic", "Mraz LLC", "Padberg, Lueilwitz and Johnson", "Grant - Lakin",
    "O'Keefe, Towne and Grant", "Price LLC", "Bosco - Grady", "Kemmer - Abbott", "Jacobs Inc",
    "D'Amore - Schuster", "Yost, Watsica and Mann", "Hartmann Inc", "Moen, Ward and O'Kon",
    "Lang Inc", "Kuhic - Stiedemann", "Bergstrom LLC",
)
_CONTACT_NAMES = (
    "Marie Ziemann", "Jean Hane III", "Myra Kovacek", "Eva Rosenbaum II", "Micheal Toy", "Melba Sanford",
    "Jane Wiza", "Cecilia Kassulke", "Isabel Ryan", "Erik Kuhlman", "Shelley O'Hara", "Yolanda Dibbert",
)
# (name, location, manager): "Leds" is the real typo; some locations and managers are unknown.
_DEPARTMENTS = (
    ("Sales", "Manchester", "Richard Roma"),
    ("Purchasing", "Manchester", "Naomi Lapaglia"),
    ("Production", "Leeds", "Chester Ness"),
    ("Dispatch", "Leds", "Mark Hanna"),
    ("Finance", "Manchester", "Jordan Belfort"),
    ("Facilities", None, "Shelley Levene"),
    ("Communications", "Leeds", None),
    ("HR", None, "James Link"),
)
_STAFF_NAMES = (
    ("Jeremie", "Franey"), ("Deron", "Beier"), ("Jeanette", "Erdman"), ("Ana", "Glover"),
    ("Magdalena", "Zieme"), ("Korey", "Kreiger"), ("Raphael", "Rippin"), ("Oswaldo", "Bergstrom"),
    ("Brody", "Ratke"), ("Jazmyn", "Kuhn"), ("Meda", "Cremin"), ("Imani", "Walker"),
    ("Stan", "Lehner"), ("Rigoberto", "VonRueden"), ("Tom", "Gleason"), ("Pierre", "Sauer"),
    ("Lucy", "O'Connell"), ("Irving", "O'Keefe"), ("Flavio", "Kulas"), ("Laura", "Quigley"),
)
_DESIGN_NAMES = (
    "Wooden", "Granite", "Soft", "Bronze", "Steel", "Frozen", "Cotton", "Rubber", "Plastic", "Concrete",
    "Fresh", "Metal", "Bespoke", "Handcrafted", "Recycled", "Gorgeous", "Rustic", "Awesome", "Practical",
)
_FILE_LOCATIONS = (
    "/usr", "/private", "/System", "/Users", "/home/user/dir", "/usr/share", "/opt/include", "/lib",
    "/etc/namedb", "/private/var", "/Library", "/usr/ports", "/mnt", "/srv", "/var/mail",
)


def _phone(rng: random.Random) -> str:
    return f"{rng.randint(1000, 9999)} {rng.randint(0, 999999):06d}"


def _postal_code(rng: random.Random) -> str:
    return f"{rng.randint(0, 99999):05d}" if rng.random() < 0.7 else f"{rng.randint(0, 99999):05d}-{rng.randint(0, 9999):04d}"


def _addresses(rng: random.Random, count: int = 30) -> list[tuple]:
    rows = []
    for i in range(count):
        line_1 = f"{rng.randint(1, 99999)} {rng.choice(_STREET_NAMES)} {rng.choice(_STREET_SUFFIXES)}"
        line_2 = rng.choice(_LOCALITIES) if rng.random() < 0.5 else None
        district = rng.choice(_DISTRICTS) if rng.random() < 0.6 else None
        postal = _FIXED_POSTAL_CODES[i] if i < len(_FIXED_POSTAL_CODES) else _postal_code(rng)
        rows.append((line_1, line_2, district, rng.choice(_CITIES), postal, rng.choice(_COUNTRIES), _phone(rng)))
    return rows


def _counterparties(rng: random.Random, address_count: int) -> list[tuple]:
    rows = []
    for i, name in enumerate(_COUNTERPARTY_NAMES):
        # The last two share the first one's address, so an address change touches several counterparties.
        address_id = rows[0][1] if i >= len(_COUNTERPARTY_NAMES) - 2 else rng.randint(1, address_count)
        commercial = rng.choice(_CONTACT_NAMES) if rng.random() < 0.85 else None
        delivery = rng.choice(_CONTACT_NAMES) if rng.random() < 0.85 else None
        rows.append((name, address_id, commercial, delivery))
    return rows


def _staff(rng: random.Random) -> list[tuple]:
    rows = []
    for first, last in _STAFF_NAMES:
        email = f"{first}.{last}@terrifictotes.com".lower().replace("'", "")
        rows.append((first, last, rng.randint(1, len(_DEPARTMENTS)), email))
    return rows


def _design_row(rng: random.Random, created_at: datetime) -> tuple:
    name = rng.choice(_DESIGN_NAMES)
    suffix = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(4))
    file_name = f"{name.lower()}-{created_at:%Y%m%d}-{suffix}.json"
    return (created_at, name, rng.choice(_FILE_LOCATIONS), file_name, created_at)


def _history_window(end: date) -> tuple[datetime, int]:
    """The history's first instant and its length in whole milliseconds."""
    start = datetime.combine(HISTORY_START, datetime.min.time())
    return start, int((datetime.combine(end, datetime.min.time()) - start).total_seconds() * 1000)


def _design_step_ms(end: date) -> int:
    """Milliseconds between two designs after the initial catalogue (designs appear evenly)."""
    _, span_ms = _history_window(end)
    return max(1, span_ms // (DESIGNS - INITIAL_DESIGNS + 1))


def _designs(rng: random.Random, end: date) -> list[tuple]:
    step_ms = _design_step_ms(end)
    rows = []
    for design_id in range(1, DESIGNS + 1):
        if design_id <= INITIAL_DESIGNS:
            created_at = REFERENCE_CREATED_AT
        else:
            created_at = REFERENCE_CREATED_AT + timedelta(milliseconds=(design_id - INITIAL_DESIGNS) * step_ms)
        rows.append(_design_row(rng, created_at))
    return rows


def _copy_numbered(cur: psycopg.Cursor, table: str, columns: list[str], rows: list[tuple],
                   at: datetime | None = REFERENCE_CREATED_AT) -> int:
    """COPY rows with explicit ids 1..n (so the history can refer to them whatever the sequences say)."""
    all_columns = [f"{table}_id", *columns] + (["created_at", "last_updated"] if at else [])
    stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, all_columns))
    )
    with cur.copy(stmt) as copy:
        for number, row in enumerate(rows, start=1):
            copy.write_row((number, *row, *((at, at) if at else ())))
    return len(rows)


def _load_reference_data(cur: psycopg.Cursor, seed: int, end: date) -> dict[str, int]:
    """Write the reference tables and designs; returns how many rows each has (its ids are 1..n)."""
    rng = random.Random(seed)
    addresses = _addresses(rng)
    return {
        "address": _copy_numbered(cur, "address", ["address_line_1", "address_line_2", "district", "city",
                                                   "postal_code", "country", "phone"], addresses),
        "counterparty": _copy_numbered(cur, "counterparty", ["counterparty_legal_name", "legal_address_id",
                                                             "commercial_contact", "delivery_contact"],
                                       _counterparties(rng, len(addresses))),
        "currency": _copy_numbered(cur, "currency", ["currency_code"], [(c,) for c in CURRENCIES]),
        "department": _copy_numbered(cur, "department", ["department_name", "location", "manager"], list(_DEPARTMENTS)),
        "staff": _copy_numbered(cur, "staff", ["first_name", "last_name", "department_id", "email_address"],
                                _staff(rng)),
        "payment_type": _copy_numbered(cur, "payment_type", ["payment_type_name"], [(n,) for n in PAYMENT_TYPE_NAMES]),
        "design": _copy_numbered(cur, "design", ["created_at", "design_name", "file_location", "file_name",
                                                 "last_updated"], _designs(rng, end), at=None),
    }


# --------------------------------------------------------------------------------------------
# Order history (large: generated inside PostgreSQL, streamed with binary COPY)
# --------------------------------------------------------------------------------------------

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
    """Rows per table after seeding."""

    address: int
    counterparty: int
    currency: int
    department: int
    design: int
    payment: int
    payment_type: int
    purchase_order: int
    sales_order: int
    staff: int
    transaction: int
    seconds: float = field(default=0.0, compare=False)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "seconds"}


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

    A database with only some of the 11 tables is refused: it is neither totesys nor empty.
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
    return SeedCounts(**counts, seconds=elapsed)


def _reset_sequences(conn: psycopg.Connection) -> None:
    """Explicit ids were written: move every SERIAL sequence past them so later inserts get fresh ids."""
    for table in TABLE_NAMES:
        pk = f"{table}_id"
        conn.execute(
            sql.SQL("SELECT setval(pg_get_serial_sequence({t}, {c}), coalesce(max({ci}), 0) + 1, false) FROM {ti}")
            .format(t=sql.Literal(table), c=sql.Literal(pk), ci=sql.Identifier(pk), ti=sql.Identifier(table))
        )


# --------------------------------------------------------------------------------------------
# Live mode
# --------------------------------------------------------------------------------------------

def utc_now() -> datetime:
    """Naive UTC with millisecond precision, the way totesys stores timestamps."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


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
