"""THE invariant of the processed zone, on generated totesys histories (hypothesis).

Feeding the ingestion rows batch by batch (state carried between calls, through Parquet files) and reducing the deltas (facts: union of rows; dimensions: last row per key in delta
order) gives exactly the tables of one call over all rows from empty state. The one-call tables are
also checked against a plain-Python model of the same history.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from totesys_platform import star_schema
from totesys_platform.lake.processed import PROCESSED_SPECS
from totesys_platform.source import contract
from totesys_platform_tests.test_transforms_support import row, source_table, through_parquet

START = dt.datetime(2024, 11, 4, 8, 0, 0, 0)
STEPS = [dt.timedelta(milliseconds=1), dt.timedelta(milliseconds=999), dt.timedelta(seconds=1),
         dt.timedelta(hours=3), dt.timedelta(days=1), dt.timedelta(days=6)]
CITIES = ["Leeds", "Leds", "Aliso Viejo", "O'Fallon", "New Patienceburgh"]
NAMES = ["Fahey and Sons", "O'Keefe, Schinner and Kohler", "Leannon, Predovic and Morar"]
CODES = ["GBP", "USD", "EUR", "JPY", "CHF"]
KINDS = ["sale", "purchase", "update_sale", "update_purchase", "pay", "new_address", "update_address",
         "new_counterparty", "move_counterparty", "new_department", "update_department", "new_staff", "move_staff",
         "new_design", "update_design", "new_currency"]

Event = dict[str, list[dict]]  # source table -> rows written together


@dataclass
class History:
    """A totesys history: the rows each operation wrote, and the current row of every id (the model)."""

    clock: dt.datetime = START
    current: dict[str, dict[int, dict]] = field(default_factory=lambda: {t: {} for t in contract.SOURCE_TABLES})
    events: list[Event] = field(default_factory=list)

    def write(self, event: Event) -> None:
        for table, rows in event.items():
            for r in rows:
                self.current[table][r[contract.SOURCE_TABLES[table].primary_key]] = r
        self.events.append(event)

    def next_id(self, table: str) -> int:
        return max(self.current[table], default=0) + 1

    def pick(self, table: str, choice: int) -> int:
        ids = sorted(self.current[table])
        return ids[choice % len(ids)]

    def new(self, table: str, **values) -> dict:
        return row(table, self.next_id(table), self.clock, **values)

    def update(self, table: str, choice: int, **values) -> dict:
        return {**self.current[table][self.pick(table, choice)], "last_updated": self.clock, **values}


def _seed(history: History) -> None:
    history.write({
        "address": [history.new("address")],
        "department": [history.new("department")],
        "currency": [row("currency", i, history.clock, currency_code=c) for i, c in enumerate(CODES[:3], 1)],
        "payment_type": [row("payment_type", i, history.clock, payment_type_name=n)
                         for i, n in enumerate(contract.PAYMENT_TYPE_NAMES, 1)],
        "design": [history.new("design")],
    })
    history.write({"staff": [history.new("staff", department_id=1)],
                   "counterparty": [history.new("counterparty", legal_address_id=1)]})


def _order(history: History, kind: str, picks: list[int]) -> Event:
    """A new order with its transaction and payment, all with one timestamp (as totesys writes them)."""
    table = "sales_order" if kind == "sale" else "purchase_order"
    day = history.clock.date() + dt.timedelta(days=picks[4] % 40 - 30)  # mostly ahead, sometimes behind
    common = dict(staff_id=history.pick("staff", picks[0]), counterparty_id=history.pick("counterparty", picks[1]),
                  currency_id=history.pick("currency", picks[2]), agreed_delivery_location_id=history.pick(
                      "address", picks[3]), agreed_delivery_date=day.isoformat(),
                  agreed_payment_date=(day + dt.timedelta(days=picks[5] % 3)).isoformat())
    if kind == "sale":
        units, price = 1000 + picks[0] % 99001, Decimal(200 + picks[1] % 201) / 100
        order = history.new(table, design_id=history.pick("design", picks[2]), units_sold=units, unit_price=price,
                            **common)
    else:
        units, price = 1 + picks[0] % 1000, Decimal(300 + picks[1] % 99701) / 100
        order = history.new(table, item_quantity=units, item_unit_price=price, **common)
    order_id = order[f"{table}_id"]
    transaction = history.new(
        "transaction", transaction_type="SALE" if kind == "sale" else "PURCHASE",
        sales_order_id=order_id if kind == "sale" else None, purchase_order_id=None if kind == "sale" else order_id)
    payment = history.new(
        "payment", transaction_id=transaction["transaction_id"], counterparty_id=common["counterparty_id"],
        payment_amount=units * price, currency_id=common["currency_id"], payment_type_id=1 if kind == "sale" else 3,
        paid=False, payment_date=common["agreed_payment_date"])
    return {table: [order], "transaction": [transaction], "payment": [payment]}


def _apply(history: History, kind: str, picks: list[int]) -> None:
    p = picks
    maybe_null = [None, "Flat 2", "Avon"]
    if kind in ("sale", "purchase"):
        history.write(_order(history, kind, p))
        if p[5] % 4 == 0:  # a second order in the same millisecond: ties on last_updated are normal
            history.write(_order(history, kind, p[::-1]))
    elif kind == "update_sale" and history.current["sales_order"]:
        history.write({"sales_order": [history.update("sales_order", p[0], units_sold=1000 + p[1] % 99001)]})
    elif kind == "update_purchase" and history.current["purchase_order"]:
        history.write({"purchase_order": [history.update("purchase_order", p[0], item_quantity=1 + p[1] % 1000)]})
    elif kind == "pay" and history.current["payment"]:
        history.write({"payment": [history.update("payment", p[0], paid=not bool(p[1] % 5 == 0))]})
    elif kind == "new_address":
        history.write({"address": [history.new("address", city=CITIES[p[0] % 5], address_line_2=maybe_null[p[1] % 3])]})
    elif kind == "update_address":
        history.write({"address": [history.update("address", p[0], city=CITIES[p[1] % 5], phone=f"0113 {p[2] % 999}",
                                                  district=maybe_null[p[3] % 3])]})
    elif kind == "new_counterparty":
        history.write({"counterparty": [history.new("counterparty", counterparty_legal_name=NAMES[p[0] % 3],
                                                    legal_address_id=history.pick("address", p[1]))]})
    elif kind == "move_counterparty":
        history.write({"counterparty": [history.update("counterparty", p[0],
                                                       legal_address_id=history.pick("address", p[1]))]})
    elif kind == "new_department":
        history.write({"department": [history.new("department", department_name=f"Dept {p[0] % 7}",
                                                  location=[None, "Leds", "Leeds"][p[1] % 3])]})
    elif kind == "update_department":
        history.write({"department": [history.update("department", p[0], department_name=f"Dept {p[1] % 7}",
                                                     location=[None, "Leds", "Leeds"][p[2] % 3])]})
    elif kind == "new_staff":
        history.write({"staff": [history.new("staff", last_name=NAMES[p[0] % 3][:6],
                                             department_id=history.pick("department", p[1]))]})
    elif kind == "move_staff":
        history.write({"staff": [history.update("staff", p[0], department_id=history.pick("department", p[1]))]})
    elif kind == "new_design":
        history.write({"design": [history.new("design", design_name=f"Design {p[0] % 50}")]})
    elif kind == "update_design":
        history.write({"design": [history.update("design", p[0], file_name=f"f{p[1] % 100}.json")]})
    elif kind == "new_currency" and len(history.current["currency"]) < len(CODES):
        code = CODES[len(history.current["currency"])]
        history.write({"currency": [history.new("currency", currency_code=code)]})


@dataclass
class Scenario:
    history: History
    ticks: list[list[Event]]  # ingestion batches, in order; a batch may re-deliver its predecessor's last event


@st.composite
def scenarios(draw) -> Scenario:
    history = History()
    _seed(history)
    operations = draw(st.lists(
        st.tuples(st.sampled_from(KINDS), st.sampled_from(STEPS), st.lists(st.integers(0, 10**6), min_size=6,
                                                                           max_size=6)),
        min_size=2, max_size=20))
    for kind, step, picks in operations:
        history.clock += step
        _apply(history, kind, picks)
    events = history.events
    cuts = draw(st.lists(st.booleans(), min_size=len(events) - 1, max_size=len(events) - 1))
    ticks, tick = [], [events[0]]
    for event, cut in zip(events[1:], cuts):
        if cut:
            ticks.append(tick)
            tick = [event]
            if draw(st.integers(0, 3)) == 0:  # the ingestion re-delivers the boundary rows (ties on the watermark)
                tick.insert(0, ticks[-1][-1])
            if draw(st.integers(0, 5)) == 0:
                ticks.append([])  # a run that found nothing new
        else:
            tick.append(event)
    ticks.append(tick)
    return Scenario(history, ticks)


def _inputs(tables: tuple[str, ...], events: list[Event]) -> dict[str, pa.Table]:
    return {t: source_table(t, [r for event in events for r in event.get(t, [])]) for t in tables}


def _rows(table: pa.Table) -> list[tuple]:
    return [tuple(r.values()) for r in table.to_pylist()]


def _reduce(name: str, deltas: list[pa.Table]) -> dict | set:
    target = star_schema.TARGET_TABLES[name]
    if target.kind == "fact":
        return {r for delta in deltas for r in _rows(delta)}
    latest: dict = {}
    for delta in deltas:
        for r in _rows(delta):
            latest[r[0]] = r
    return latest


def _one_call(name: str, scenario: Scenario) -> pa.Table:
    spec = PROCESSED_SPECS[name]
    delta, _ = spec.build(_inputs(spec.inputs, [e for tick in scenario.ticks for e in tick]), {})
    return delta


def _tick_by_tick(name: str, scenario: Scenario) -> list[pa.Table]:
    spec = PROCESSED_SPECS[name]
    schema = star_schema.TARGET_TABLES[name].arrow_schema
    state: dict[str, pa.Table] = {}
    deltas = []
    for tick in scenario.ticks:
        delta, state = spec.build(_inputs(spec.inputs, tick), state)
        assert delta.schema.equals(schema)
        state = {k: through_parquet(v) for k, v in state.items()}  # as the lake stores it between runs
        deltas.append(delta)
    return deltas


def _check_against_model(name: str, history: History, all_at_once: pa.Table) -> None:
    """The one-call table against the plain-Python model of the history."""
    current = history.current
    rows = {r[0]: r for r in _rows(all_at_once)}
    if name == "dim_counterparty":
        assert rows == {
            i: (i, c["counterparty_legal_name"], *(current["address"][c["legal_address_id"]][k] for k in (
                "address_line_1", "address_line_2", "district", "city", "postal_code", "country", "phone")))
            for i, c in current["counterparty"].items()}
    elif name == "dim_staff":
        assert rows == {
            i: (i, s["first_name"], s["last_name"], current["department"][s["department_id"]]["department_name"],
                current["department"][s["department_id"]]["location"], s["email_address"])
            for i, s in current["staff"].items()}
    elif name == "dim_location":
        assert {i: r[4] for i, r in rows.items()} == {i: a["city"] for i, a in current["address"].items()}
    elif name == "dim_currency":
        assert {r[1] for r in rows.values()} == {c["currency_code"] for c in current["currency"].values()}
    elif name == "dim_date":
        referenced = [
            d for e in history.events for t in ("sales_order", "purchase_order", "payment") for r in e.get(t, [])
            for d in (r["created_at"].date(), r["last_updated"].date(),
                      *(dt.date.fromisoformat(r[c]) for c in ("agreed_delivery_date", "agreed_payment_date",
                                                              "payment_date") if c in r))]
        if referenced:
            days = (max(referenced) - min(referenced)).days + 1
            assert sorted(rows) == [min(referenced) + dt.timedelta(days=i) for i in range(days)]
        else:
            assert not rows
    elif star_schema.TARGET_TABLES[name].kind == "fact":
        source = PROCESSED_SPECS[name].inputs[0]
        versions = {(r[f"{source}_id"], r["last_updated"]) for e in history.events for r in e.get(source, [])}
        got = {(r[0], dt.datetime.combine(r[3], r[4])) for r in _rows(all_at_once)}
        assert got == versions
        assert all_at_once.num_rows == len(versions), "one row per version"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
def test_tick_by_tick_equals_all_at_once_for_every_processed_table(scenario):
    for name in PROCESSED_SPECS:
        all_at_once = _one_call(name, scenario)
        _check_against_model(name, scenario.history, all_at_once)
        expected = _reduce(name, [all_at_once])
        if star_schema.TARGET_TABLES[name].kind == "dimension":
            assert len(expected) == all_at_once.num_rows, f"{name}: one row per key"
        assert _reduce(name, _tick_by_tick(name, scenario)) == expected, name
