"""The totesys simulator against a real PostgreSQL: seeded history and live activity follow the contract."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import date, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from psycopg import sql

from totesys_platform.local.postgres import free_port
from totesys_platform.local import simulator
from totesys_platform.source.contract import SOURCE_TABLES, TABLE_NAMES
from totesys_platform.local.simulator import Simulator, SimulatorError

END = date(2024, 11, 15)  # a Friday: the history runs to Thursday 14 Nov, as the Nov 2024 snapshots do
QUIET = lambda _line: None  # noqa: E731


def _query(url: str, query: str, params=None) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def _scalar(url: str, query: str, params=None):
    return _query(url, query, params)[0][0]


def _fingerprints(url: str) -> dict[str, str]:
    """An md5 of every table's full content, in primary-key order."""
    result = {}
    with psycopg.connect(url) as conn:
        for table in TABLE_NAMES:
            query = sql.SQL("SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY {pk}), '')) FROM {t} AS t").format(
                pk=sql.Identifier(f"{table}_id"), t=sql.Identifier(table))
            result[table] = conn.execute(query).fetchone()[0]
    return result


# Every foreign key of the schema, checked with one anti-join each (seeding may skip per-row checks).
_FOREIGN_KEYS_SQL = """
SELECT c.conrelid::regclass::text, a.attname, c.confrelid::regclass::text, af.attname
FROM pg_constraint c
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
JOIN pg_attribute af ON af.attrelid = c.confrelid AND af.attnum = c.confkey[1]
WHERE c.contype = 'f'
"""


def _dangling_references(url: str) -> dict[str, int]:
    dangling = {}
    with psycopg.connect(url) as conn:
        for table, column, ref_table, ref_column in conn.execute(_FOREIGN_KEYS_SQL).fetchall():
            query = sql.SQL(
                "SELECT count(*) FROM {t} x WHERE x.{c} IS NOT NULL "
                "AND NOT EXISTS (SELECT 1 FROM {rt} r WHERE r.{rc} = x.{c})"
            ).format(t=sql.Identifier(table), c=sql.Identifier(column), rt=sql.Identifier(ref_table),
                     rc=sql.Identifier(ref_column))
            dangling[f"{table}.{column}"] = conn.execute(query).fetchone()[0]
    assert len(dangling) == 17, dangling  # the schema's foreign keys, so the check really ran
    return dangling


@pytest.fixture(scope="module")
def seeded_scale_1(pg_server, _totesys_template) -> str:
    """One scale-1 history for the read-only checks of this module (seeding it once keeps them fast)."""
    name = "totesys_sim_scale_1"
    pg_server.drop_database(name)
    pg_server.create_database(name, template=_totesys_template)
    url = pg_server.url(name)
    lines: list[str] = []
    counts = simulator.seed(url, scale=1, seed=42, end=END, progress=lines.append)
    print(f"scale-1 seed took {counts.seconds:.1f} s")  # reported, not asserted: machines differ
    assert any("seeded" in line for line in lines)
    yield url
    pg_server.drop_database(name)


# ------------------------------------------------------------------------------------------------
# Seeded history
# ------------------------------------------------------------------------------------------------

def test_scale_1_seed_has_the_nov_2024_sizes(seeded_scale_1):
    counts = {t: _scalar(seeded_scale_1, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t)))
              for t in TABLE_NAMES}
    assert counts["address"] == 30
    assert counts["counterparty"] == 20
    assert counts["currency"] == 3
    assert counts["department"] == 8
    assert counts["staff"] == 20
    assert counts["payment_type"] == 4
    assert 400 <= counts["design"] <= 550
    assert 10_500 <= counts["sales_order"] <= 12_000
    assert 4_300 <= counts["purchase_order"] <= 5_000
    assert counts["transaction"] == counts["sales_order"] + counts["purchase_order"]
    assert counts["payment"] == counts["transaction"]


def test_reference_data_carries_the_real_quirks(seeded_scale_1):
    url = seeded_scale_1
    assert _query(url, "SELECT currency_id, currency_code FROM currency ORDER BY 1") == [
        (1, "GBP"), (2, "USD"), (3, "EUR")]
    assert [r[0] for r in _query(url, "SELECT payment_type_name::text FROM payment_type ORDER BY 1")] == [
        "PURCHASE_PAYMENT", "PURCHASE_REFUND", "SALES_RECEIPT", "SALES_REFUND"]
    assert _scalar(url, "SELECT count(*) FROM counterparty WHERE counterparty_legal_name LIKE '%''%'") >= 1
    assert _scalar(url, "SELECT count(*) FROM address WHERE address_line_2 IS NULL") >= 1
    assert _scalar(url, "SELECT count(*) FROM address WHERE address_line_2 IS NOT NULL") >= 1
    assert _scalar(url, "SELECT count(*) FROM address WHERE district IS NULL") >= 1
    postal_codes = {r[0] for r in _query(url, "SELECT postal_code FROM address")}
    assert "99305-7380" in postal_codes
    assert any(code.startswith("0") for code in postal_codes)
    assert _query(url, "SELECT department_name FROM department WHERE location = 'Leds'") == [("Dispatch",)]
    assert _scalar(url, "SELECT count(*) FROM department WHERE location IS NULL") >= 1
    assert _scalar(url, "SELECT count(*) FROM department WHERE manager IS NULL") >= 1
    # an address shared by several counterparties, so one address change touches several of them
    assert _scalar(url, "SELECT max(n) FROM (SELECT count(*) AS n FROM counterparty GROUP BY legal_address_id) x") >= 2


def test_every_foreign_key_resolves(seeded_scale_1):
    dangling = _dangling_references(seeded_scale_1)
    assert dangling == dict.fromkeys(dangling, 0)


def test_orders_arrive_on_weekdays_in_business_hours_and_ids_follow_time(seeded_scale_1):
    url = seeded_scale_1
    for table in ("sales_order", "purchase_order", "transaction"):
        t, pk = sql.Identifier(table), sql.Identifier(f"{table}_id")
        bad_time = _scalar(url, sql.SQL(
            "SELECT count(*) FROM {t} WHERE extract(isodow FROM created_at) > 5 "
            "OR created_at::time < '08:00' OR created_at::time >= '19:00'").format(t=t))
        assert bad_time == 0, table
        first, last = _query(url, sql.SQL("SELECT min(created_at), max(created_at) FROM {t}").format(t=t))[0]
        assert first.date() == simulator.HISTORY_START and last.date() < END
        out_of_order = _scalar(url, sql.SQL(
            "SELECT count(*) FROM (SELECT created_at < lag(created_at) OVER (ORDER BY {pk}) AS back FROM {t}) x "
            "WHERE back").format(t=t, pk=pk))
        assert out_of_order == 0, table
    # timestamps have milliseconds, and some are whole seconds
    whole, fractional = _query(url, "SELECT count(*) FILTER (WHERE extract(milliseconds FROM created_at) % 1000 = 0), "
                                    "count(*) FILTER (WHERE extract(milliseconds FROM created_at) % 1000 <> 0) "
                                    "FROM sales_order")[0]
    assert whole > 0 and fractional > whole
    # orders are spread over the working days, not piled up on a few
    days = _scalar(url, "SELECT count(DISTINCT created_at::date) FROM sales_order")
    assert days > 0.95 * _scalar(url, "SELECT count(*) FROM generate_series(%s::date, %s::date - 1, '1 day') d "
                                      "WHERE extract(isodow FROM d) < 6", (simulator.HISTORY_START, END))


_TRIPLES_SQL = """
SELECT o.kind, o.order_id, o.created_at, o.last_updated, o.qty, o.price, o.counterparty_id, o.currency_id,
       o.agreed_payment_date, o.agreed_delivery_date,
       t.transaction_type::text, t.created_at, t.last_updated,
       p.created_at, p.last_updated, p.payment_amount, p.counterparty_id, p.currency_id, p.paid, p.payment_date,
       pt.payment_type_name::text, p.company_ac_number, p.counterparty_ac_number
FROM (SELECT 'S' AS kind, sales_order_id AS order_id, created_at, last_updated, units_sold AS qty,
             unit_price AS price, counterparty_id, currency_id, agreed_payment_date, agreed_delivery_date
      FROM sales_order
      UNION ALL
      SELECT 'P', purchase_order_id, created_at, last_updated, item_quantity, item_unit_price, counterparty_id,
             currency_id, agreed_payment_date, agreed_delivery_date FROM purchase_order) o
JOIN transaction t ON (o.kind = 'S' AND t.sales_order_id = o.order_id) OR (o.kind = 'P' AND t.purchase_order_id = o.order_id)
JOIN payment p ON p.transaction_id = t.transaction_id
JOIN payment_type pt ON pt.payment_type_id = p.payment_type_id
"""


def _assert_triples_follow_the_contract(url: str, as_of: datetime) -> int:
    """Each order, its transaction and its payment agree as production writes them; returns how many."""
    rows = _query(url, _TRIPLES_SQL)
    paid = 0
    for (kind, order_id, created, updated, qty, price, cp, cur, pay_date, delivery_date, t_type, t_created,
         t_updated, p_created, p_updated, amount, p_cp, p_cur, is_paid, p_date, pt_name, company_ac, cp_ac) in rows:
        where = f"{kind} order {order_id}"
        assert t_created == created == p_created, where
        assert t_updated == t_created, where
        assert updated >= created, where
        assert t_type == ("SALE" if kind == "S" else "PURCHASE"), where
        assert isinstance(amount, Decimal), where
        if updated == created:  # an order update may change the quantity and leave the payment as it was
            assert amount == qty * price, where
        assert (p_cp, p_cur) == (cp, cur), where
        assert p_date == pay_date, where
        for text_date in (pay_date, delivery_date):
            assert 0 <= (date.fromisoformat(text_date) - created.date()).days <= 7, where
            assert len(text_date) == 10, where
        if kind == "S":
            assert 1_000 <= qty <= 100_000 and Decimal("2.00") <= price <= Decimal("4.00"), where
            assert pt_name in ("SALES_RECEIPT", "SALES_REFUND"), where
        else:
            assert 1 <= qty <= 1_000 and Decimal("3.00") <= price <= Decimal("1000.00"), where
            assert pt_name in ("PURCHASE_PAYMENT", "PURCHASE_REFUND"), where
        assert price == price.quantize(Decimal("0.01")), where
        assert 10_000_000 <= company_ac <= 99_999_999 and 10_000_000 <= cp_ac <= 99_999_999, where
        due = max(date.fromisoformat(p_date), created.date() + timedelta(days=1))
        if is_paid:
            paid += 1
            # paid by the 07:55 batch of its due date, or later if nothing ran that morning (live mode)
            assert p_updated > created and p_updated.date() >= due, where
            assert p_updated.time() >= datetime.strptime("07:55", "%H:%M").time() or p_updated.date() > due, where
            assert p_updated <= as_of, where
        else:
            assert p_updated == p_created, where
            assert datetime.combine(due, datetime.min.time()) + timedelta(hours=7, minutes=55) > created, where
    assert rows, "no orders at all"
    return paid


def test_each_order_its_transaction_and_payment_agree(seeded_scale_1):
    end_of_history = datetime.combine(END, datetime.min.time())
    paid = _assert_triples_follow_the_contract(seeded_scale_1, end_of_history)
    unpaid = _scalar(seeded_scale_1, "SELECT count(*) FROM payment WHERE NOT paid")
    assert paid > 10_000 and 0 < unpaid < 300  # only the last week's payments are still open
    paid_at_0755 = _scalar(seeded_scale_1, "SELECT count(*) FROM payment WHERE paid AND "
                                           "last_updated::time >= '07:55' AND last_updated::time < '07:56'")
    assert paid_at_0755 == paid
    paid_on_another_day = _scalar(seeded_scale_1, "SELECT count(*) FROM payment WHERE paid AND "
                                                  "last_updated::date <> greatest(payment_date::date, created_at::date + 1)")
    assert paid_on_another_day == 0
    # a new design can be sold only once it exists
    assert _scalar(seeded_scale_1, "SELECT count(*) FROM sales_order s JOIN design d USING (design_id) "
                                   "WHERE d.created_at > s.created_at") == 0
    assert _scalar(seeded_scale_1, "SELECT count(DISTINCT design_id) FROM sales_order") > 400


def test_the_same_seed_gives_the_same_database_and_another_seed_does_not(totesys_url, empty_db_url):
    other_same, other_seed = empty_db_url("same"), empty_db_url("other")
    for url, seed in ((totesys_url, 7), (other_same, 7), (other_seed, 8)):
        simulator.seed(url, scale=0.2, seed=seed, end=END, progress=QUIET)
    assert _fingerprints(totesys_url) == _fingerprints(other_same)
    different = {t for t, digest in _fingerprints(other_seed).items() if digest != _fingerprints(totesys_url)[t]}
    assert {"sales_order", "purchase_order", "payment", "address", "design"} <= different


def test_scale_multiplies_the_orders_but_not_the_reference_data(totesys_url, empty_db_url):
    small = simulator.seed(totesys_url, scale=0.1, end=END, progress=QUIET)
    large = simulator.seed(empty_db_url("large"), scale=0.3, end=END, progress=QUIET)
    assert large.sales_order == 3 * small.sales_order == 3_360
    assert large.purchase_order == 3 * small.purchase_order == 1_395
    assert (large.address, large.staff, large.design) == (small.address, small.staff, small.design)


def test_seed_creates_the_schema_in_an_empty_database(empty_db_url):
    url = empty_db_url("bare")
    counts = simulator.seed(url, scale=0.01, end=END, progress=QUIET)
    assert counts.sales_order == 112
    tables = {r[0] for r in _query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == set(SOURCE_TABLES) | {"_prisma_migrations"}


def test_seed_reports_progress(totesys_url):
    lines: list[str] = []
    simulator.seed(totesys_url, scale=0.01, end=END, progress=lines.append)
    text = "\n".join(lines)
    for table in ("sales_order", "purchase_order", "transaction", "payment"):
        assert table in text


def test_seed_refuses_a_database_that_has_data(totesys_url):
    simulator.seed(totesys_url, scale=0.01, end=END, progress=QUIET)
    before = _fingerprints(totesys_url)
    with pytest.raises(SimulatorError, match=r"not empty \(\d+ rows in address\).*empty database"):
        simulator.seed(totesys_url, scale=0.01, end=END, progress=QUIET)
    assert _fingerprints(totesys_url) == before


def test_seed_refuses_a_database_with_part_of_the_schema(empty_db_url):
    url = empty_db_url("partial")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE address (address_id serial PRIMARY KEY)")
    with pytest.raises(SimulatorError, match="missing tables: counterparty, currency"):
        simulator.seed(url, scale=0.01, end=END, progress=QUIET)


def test_seed_names_an_unreachable_database_without_its_password():
    url = f"postgresql://someone:hunter2@127.0.0.1:{free_port()}/totesys"
    with pytest.raises(SimulatorError) as caught:
        simulator.seed(url, scale=0.01, end=END, progress=QUIET)
    message = str(caught.value)
    assert "cannot connect to totesys database postgresql://someone:***@127.0.0.1" in message
    assert "stack up" in message and "hunter2" not in message


@pytest.mark.parametrize("kwargs, match", [
    ({"scale": -1}, "scale must be a number >= 0"),
    ({"scale": float("nan")}, "scale must be a number >= 0"),
    ({"end": date(2022, 11, 3)}, "end must be after 2022-11-03"),
])
def test_seed_rejects_bad_arguments_before_touching_the_database(totesys_url, kwargs, match):
    with pytest.raises(SimulatorError, match=match):
        simulator.seed(totesys_url, progress=QUIET, **{"end": END, **kwargs})
    assert _scalar(totesys_url, "SELECT count(*) FROM address") == 0


def test_a_failed_seed_leaves_the_database_empty(totesys_url):
    # A real fault in the middle of the load: the payment table refuses large ids.
    with psycopg.connect(totesys_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE payment ADD CONSTRAINT fault CHECK (payment_id < 100)")
    with pytest.raises(psycopg.errors.CheckViolation):
        simulator.seed(totesys_url, scale=0.05, end=END, progress=QUIET)
    counts = {t: _scalar(totesys_url, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t)))
              for t in TABLE_NAMES}
    assert counts == dict.fromkeys(TABLE_NAMES, 0)


# ------------------------------------------------------------------------------------------------
# Live mode
# ------------------------------------------------------------------------------------------------

LIVE_START = datetime(2024, 11, 18, 10, 0, 0, 123000)  # the Monday after the history ends
BUSY = dict(orders_per_minute=20, update_rate=6, reference_update_rate=8, new_design_rate=2)


def _live_db(url: str) -> str:
    simulator.seed(url, scale=0.2, seed=3, end=END, progress=QUIET)
    return url


def _rows_at(url: str, table: str, now: datetime, column: str = "last_updated") -> int:
    query = sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(sql.Identifier(table), sql.Identifier(column))
    return _scalar(url, query, (now,))


def test_a_live_step_writes_production_like_inserts_and_updates(totesys_url):
    url = _live_db(totesys_url)
    open_before = _scalar(url, "SELECT count(*) FROM payment WHERE NOT paid")
    due_before = _scalar(url, "SELECT count(*) FROM payment WHERE NOT paid AND "
                              "greatest(payment_date::date, created_at::date + 1) + time '07:55' <= %s", (LIVE_START,))
    assert due_before > 0  # payments that fell due since the history ended: the first step pays them
    with Simulator(url, seed=11, **BUSY) as sim:
        stats = sim.step(LIVE_START)
    now = LIVE_START
    assert stats.sales_orders > 0 and stats.purchase_orders > 0
    assert _rows_at(url, "sales_order", now, "created_at") == stats.sales_orders
    assert _rows_at(url, "purchase_order", now, "created_at") == stats.purchase_orders
    assert _rows_at(url, "transaction", now, "created_at") == stats.sales_orders + stats.purchase_orders
    assert stats.payments_paid == due_before
    assert _scalar(url, "SELECT count(*) FROM payment WHERE NOT paid") == (
        open_before - due_before + stats.sales_orders + stats.purchase_orders)
    assert _scalar(url, "SELECT count(*) FROM payment WHERE paid AND last_updated = %s", (now,)) == due_before
    assert stats.order_updates > 0
    updated_orders = (_scalar(url, "SELECT count(*) FROM sales_order WHERE last_updated = %s AND created_at < %s",
                              (now, now))
                      + _scalar(url, "SELECT count(*) FROM purchase_order WHERE last_updated = %s AND created_at < %s",
                                (now, now)))
    assert 0 < updated_orders <= stats.order_updates
    assert stats.reference_updates
    for table in set(stats.reference_updates):
        assert _rows_at(url, table, now) >= 1, table
    assert _rows_at(url, "design", now, "created_at") == stats.designs
    _assert_triples_follow_the_contract(url, now)


def test_a_long_pause_is_not_backfilled(totesys_url):
    url = _live_db(totesys_url)
    with Simulator(url, seed=1, orders_per_minute=60) as sim:
        sim.step(LIVE_START)
        stats = sim.step(LIVE_START + timedelta(days=30))
    assert 0 < stats.sales_orders + stats.purchase_orders <= 60 * simulator.MAX_STEP_MINUTES * 1.5


def test_live_steps_over_time_exercise_every_kind_of_change(totesys_url):
    url = _live_db(totesys_url)
    totals = simulator.StepStats(LIVE_START)
    with Simulator(url, seed=5, **BUSY) as sim:
        for minute in range(12):
            totals = totals + sim.step(LIVE_START + timedelta(minutes=minute, milliseconds=minute * 7))
    assert set(totals.reference_updates) == {"address", "department", "counterparty", "staff"}
    assert totals.designs > 0 and totals.order_updates > 0
    # new ids continue after the seeded ones (the sequences were moved past the explicit ids)
    assert _scalar(url, "SELECT max(sales_order_id) FROM sales_order") == _scalar(url, "SELECT count(*) FROM sales_order")
    dangling = _dangling_references(url)
    assert dangling == dict.fromkeys(dangling, 0)
    _assert_triples_follow_the_contract(url, LIVE_START + timedelta(minutes=12))


def test_live_steps_are_deterministic_for_a_seed_and_the_same_moments(totesys_url, empty_db_url):
    urls = [_live_db(totesys_url), _live_db(empty_db_url("live_twin"))]
    for url in urls:
        with Simulator(url, seed=9, **BUSY) as sim:
            for minute in range(3):
                sim.step(LIVE_START + timedelta(minutes=minute))
    assert _fingerprints(urls[0]) == _fingerprints(urls[1])


def test_a_failing_step_writes_nothing(totesys_url):
    url = _live_db(totesys_url)
    before = _fingerprints(url)
    # A real fault after the first order of the step is written: no new payment is accepted.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE payment ADD CONSTRAINT fault CHECK (paid OR created_at < '2024-11-15')")
    with Simulator(url, seed=11, **BUSY) as sim, pytest.raises(psycopg.errors.CheckViolation):
        sim.step(LIVE_START)
    assert _fingerprints(url) == before


def test_a_step_on_a_database_without_the_schema_says_to_seed_it(empty_db_url):
    with Simulator(empty_db_url("noschema"), seed=1) as sim, pytest.raises(SimulatorError, match="seed it first"):
        sim.step(LIVE_START)


def test_a_step_without_reference_data_says_to_seed_it(totesys_url):
    with Simulator(totesys_url, seed=1, orders_per_minute=1000) as sim, \
            pytest.raises(SimulatorError, match="no reference data.*seed"):
        sim.step(LIVE_START)


def test_business_hours_only_writes_no_orders_at_night(totesys_url):
    url = _live_db(totesys_url)
    early = datetime(2024, 11, 15, 7, 59, 59, 999000)
    saturday = datetime(2024, 11, 16, 11, 0)
    with Simulator(url, seed=2, orders_per_minute=100, business_hours_only=True) as sim:
        assert sim.step(early).sales_orders == 0
        assert sim.step(early + timedelta(minutes=1)).sales_orders > 0
        assert sim.step(datetime(2024, 11, 15, 19, 0)).sales_orders == 0
        assert sim.step(saturday).sales_orders == 0


def test_rates_must_not_be_negative(totesys_url):
    with pytest.raises(SimulatorError, match="orders_per_minute must be a number >= 0"):
        Simulator(totesys_url, orders_per_minute=-1)


def test_run_loops_on_the_wall_clock_and_stops_on_sigterm(totesys_url):
    url = _live_db(totesys_url)
    orders_before = _scalar(url, "SELECT count(*) FROM sales_order") + _scalar(url, "SELECT count(*) FROM purchase_order")
    lines: list[str] = []
    handler_before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    started = time.monotonic()
    with Simulator(url, seed=4, orders_per_minute=600) as sim:
        totals = sim.run(duration=30, interval=0.2, report_every=0.5, progress=lines.append)
    elapsed = time.monotonic() - started
    timer.cancel()
    assert 1.4 < elapsed < 5, "SIGTERM should end the loop at once, well before the 30 s duration"
    new_orders = totals.sales_orders + totals.purchase_orders
    assert new_orders > 0
    assert (_scalar(url, "SELECT count(*) FROM sales_order") + _scalar(url, "SELECT count(*) FROM purchase_order")
            == orders_before + new_orders)
    assert any(line.startswith("last ") for line in lines)  # periodic progress
    assert "simulator stopped" in lines[-1]
    assert signal.getsignal(signal.SIGTERM) is handler_before  # handlers restored


def test_run_stops_after_its_duration_and_survives_a_lost_database(totesys_url, pg_server):
    url = _live_db(totesys_url)
    lines: list[str] = []
    with Simulator(url, seed=4) as sim:
        sim.step(LIVE_START)
        # the server ends this session, as a restart would: the loop reports it and reconnects
        pid = sim._connection().info.backend_pid
        with psycopg.connect(pg_server.url(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        started = time.monotonic()
        sim.run(duration=1.0, interval=0.3, progress=lines.append)
    assert time.monotonic() - started < 4
    assert any("step failed, retrying" in line for line in lines)
    assert "simulator stopped" in lines[-1]
