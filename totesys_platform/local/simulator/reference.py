"""The simulated totesys's reference data and sizes: addresses, counterparties, currencies, departments, staff,
payment types and designs, built in Python from fixed lists and a seeded RNG and loaded with COPY."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta

import psycopg
from psycopg import sql

from totesys_platform.source.contract import PAYMENT_TYPE_NAMES

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

