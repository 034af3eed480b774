"""A seeded random walk against the exactly-once guarantee.

Random sequences of inserts (last_updated after, equal to or before the newest one), updates (each moves
its row's last_updated forward, as the contract requires: test_extract covers the violations), late commits from transactions held open across runs, rolled-back transactions, and runs that crash
before or after their table's commit. A model tracks what each run's snapshot could see. At the end
(and on the way) the lake must hold exactly the versions visible at some snapshot that a table's run
committed, each once, with the content it had when first seen.

Every change commits with a last_updated no more than half the look-back behind the newest
last_updated ever committed: that is the documented guarantee (docs/extraction.md).
"""

from __future__ import annotations

import contextlib
import random
import string
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from unittest import mock

import psycopg
import pytest
from psycopg import sql

from totesys_platform.lake.delta import LakeTable, LakeZone
from totesys_platform.lake.ingestion.extract import extract_tables
from totesys_platform.source import contract

TABLES = ("currency", "department")  # no foreign keys: any row can change at any time
LOOKBACK = timedelta(minutes=5)
START = datetime(2024, 11, 4, 8, 0, 0)
MS = timedelta(milliseconds=1)

Version = tuple[int, datetime]


@dataclass
class OpenTransaction:
    conn: psycopg.Connection
    rows: dict[tuple[str, int], dict] = field(default_factory=dict)  # (table, pk) -> row as it will commit


@dataclass
class Model:
    rng: random.Random
    clock: datetime = START  # the newest last_updated ever committed, an upper bound of every watermark
    committed: dict[str, dict[int, dict]] = field(default_factory=lambda: {t: {} for t in TABLES})
    expected: dict[str, dict[Version, dict]] = field(default_factory=lambda: {t: {} for t in TABLES})
    open: list[OpenTransaction] = field(default_factory=list)
    runs: int = 0

    def locked(self) -> set[tuple[str, int]]:
        return {key for txn in self.open for key in txn.rows}

    def commit_row(self, table: str, row: dict) -> None:
        self.committed[table][row[f"{table}_id"]] = row
        self.clock = max(self.clock, row["last_updated"])

    def earliest_safe(self) -> datetime:
        return self.clock - LOOKBACK / 2

    def random_time(self) -> datetime:
        """Forward (usual), equal to the newest (a tie) or backwards within the guarantee."""
        choice = self.rng.random()
        if choice < 0.55:
            return self.clock + self.rng.choice([MS, 7 * MS, timedelta(seconds=1), timedelta(seconds=40),
                                                 timedelta(minutes=2), timedelta(minutes=7)])
        if choice < 0.75:
            return self.clock
        span = (LOOKBACK / 2) // MS
        return self.clock - self.rng.randint(0, span) * MS

    def forward_time(self, table: str, pk: int, proposed: datetime) -> datetime:
        """`proposed`, or just after the row's committed last_updated if that is not earlier: an update
        moves its row forward (while it may still land before the newest last_updated of other rows)."""
        previous = self.committed[table].get(pk)
        if previous is None or proposed > previous["last_updated"]:
            return proposed
        return previous["last_updated"] + self.rng.randint(1, 50) * MS

    def random_content(self, table: str) -> dict:
        rng = self.rng
        if table == "currency":
            return {"currency_code": "".join(rng.choices(string.ascii_uppercase, k=3))}
        odd = ["", None, "O'Keefe", "Leds", "line\nbreak", '"quoted", comma', "NULL"]
        return {
            "department_name": rng.choice(["Sales", "Purchasing", "", "Dept O'Hara", "NULL"]),
            "location": rng.choice(odd),
            "manager": rng.choice(odd),
        }


def _insert(conn, table: str, row: dict) -> int:
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING {}").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(sql.Placeholder() * len(row)), sql.Identifier(f"{table}_id"))
    return conn.execute(query, list(row.values())).fetchone()[0]


def _update(conn, table: str, row: dict) -> None:
    pk = f"{table}_id"
    values = {k: v for k, v in row.items() if k != pk}
    query = sql.SQL("UPDATE {} SET {} WHERE {} = %s").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in values),
        sql.Identifier(pk))
    conn.execute(query, [*values.values(), row[pk]])


def _new_row(model: Model, conn, table: str, when: datetime) -> dict:
    row = {**model.random_content(table), "created_at": when, "last_updated": when}
    pk = _insert(conn, table, row)
    return {f"{table}_id": pk, **row}


@contextlib.contextmanager
def _crash(table: str | None, after_commit: bool):
    """Inject a crash of the process at `table`'s commit (before it, or just after it)."""
    if table is None:
        yield
        return
    real = LakeTable.append

    def commit(self, data, **kw):
        if self.name == table:
            if after_commit:
                real(self, data, **kw)
            raise RuntimeError("injected crash")
        return real(self, data, **kw)

    with mock.patch.object(LakeTable, "append", commit):
        yield


# --------------------------------------------------------------------------------------------------
# The steps


def step_insert(model: Model, main) -> None:
    table = model.rng.choice(TABLES)
    model.commit_row(table, _new_row(model, main, table, model.random_time()))


def step_update(model: Model, main) -> None:
    table = model.rng.choice(TABLES)
    candidates = [pk for pk in model.committed[table] if (table, pk) not in model.locked()]
    if not candidates:
        return step_insert(model, main)
    pk = model.rng.choice(candidates)
    row = dict(model.committed[table][pk])
    row.update(model.random_content(table), last_updated=model.forward_time(table, pk, model.random_time()))
    _update(main, table, row)
    model.commit_row(table, row)


def step_open_late_transaction(model: Model, url: str) -> None:
    if len(model.open) >= 3:
        return
    txn = OpenTransaction(psycopg.connect(url))
    for _ in range(model.rng.randint(1, 2)):
        table = model.rng.choice(TABLES)
        when = model.clock - model.rng.randint(0, 20_000) * MS
        candidates = [pk for pk in model.committed[table] if (table, pk) not in model.locked() | set(txn.rows)]
        if candidates and model.rng.random() < 0.5:
            pk = model.rng.choice(candidates)
            row = dict(model.committed[table][pk])
            row.update(model.random_content(table), last_updated=model.forward_time(table, pk, when))
            _update(txn.conn, table, row)
        else:
            row = _new_row(model, txn.conn, table, when)
        txn.rows[(table, row[f"{table}_id"])] = row
    model.open.append(txn)


def step_finish_late_transaction(model: Model) -> None:
    if not model.open:
        return
    txn = model.open.pop(model.rng.randrange(len(model.open)))
    try:
        if model.rng.random() < 0.2:
            txn.conn.rollback()
            return
        for (table, pk), row in txn.rows.items():
            if row["last_updated"] < model.earliest_safe():
                # Still late (behind the watermark), but inside the guaranteed window.
                span = (model.clock - model.earliest_safe()) // MS
                row["last_updated"] = model.forward_time(
                    table, pk, model.earliest_safe() + model.rng.randint(0, span) * MS)
                _update(txn.conn, table, row)
        txn.conn.commit()
        for (table, _), row in txn.rows.items():
            model.commit_row(table, row)
    finally:
        txn.conn.close()


def step_run(model: Model, url: str, store: LakeZone, connections: int) -> None:
    crash_table, after_commit = None, False
    if model.rng.random() < 0.25:
        crash_table, after_commit = model.rng.choice(TABLES), model.rng.random() < 0.4
    visible = {t: {pk: dict(row) for pk, row in model.committed[t].items()} for t in TABLES}
    model.runs += 1
    batch_ts = datetime(2026, 1, 1) + timedelta(seconds=model.runs)
    crashed = False
    before = {t: store.table(t).snapshot().version for t in TABLES}
    with _crash(crash_table, after_commit):
        try:
            extract_tables(url, store, TABLES, lookback=LOOKBACK, batch_ts=batch_ts, batch_rows=7,
                           connections=connections)
        except RuntimeError as err:
            assert crash_table is not None and "injected crash" in str(err)
            crashed = True
    # A table with nothing new makes no commit, so a crash planned there does not happen. Each table commits as
    # soon as it is read (in table order on one connection, as reads finish on two); a crash stops the rest.
    committed_tables = TABLES
    if crashed:
        committed_tables = [t for t in TABLES if store.table(t).snapshot().version > before[t]]
        assert (crash_table in committed_tables) == after_commit
        if connections == 1:
            index = TABLES.index(crash_table)
            assert set(committed_tables) <= set(TABLES[: index + 1])
    for table in committed_tables:
        for pk, row in visible[table].items():
            model.expected[table].setdefault((pk, row["last_updated"]), row)


def check_lake(model: Model, store: LakeZone) -> None:
    for table in TABLES:
        archived = store.table(table).read()
        schema = contract.SOURCE_TABLES[table].arrow_schema
        rows = archived.select(schema.names).cast(schema).to_pylist() if archived is not None else []
        versions = [(r[f"{table}_id"], r["last_updated"]) for r in rows]
        duplicates = {v for v in versions if versions.count(v) > 1}
        assert not duplicates, f"{table}: archived more than once: {sorted(duplicates)[:5]}"
        missing = set(model.expected[table]) - set(versions)
        extra = set(versions) - set(model.expected[table])
        assert not missing and not extra, f"{table}: missing {sorted(missing)[:5]}, never visible {sorted(extra)[:5]}"
        for row in rows:
            assert row == model.expected[table][(row[f"{table}_id"], row["last_updated"])], table


def random_walk(url: str, store: LakeZone, seed: int, steps: int, connections: int = 2) -> Model:
    """A fixed number of steps (not a time budget), so a seed always replays the same walk."""
    model = Model(random.Random(seed))
    with psycopg.connect(url, autocommit=True) as main:
        try:
            for i in range(steps):
                choice = model.rng.random()
                if choice < 0.30:
                    step_insert(model, main)
                elif choice < 0.50:
                    step_update(model, main)
                elif choice < 0.60:
                    step_open_late_transaction(model, url)
                elif choice < 0.72:
                    step_finish_late_transaction(model)
                else:
                    step_run(model, url, store, connections)
                if i % 60 == 59:
                    check_lake(model, store)
            while model.open:  # end: every transaction finishes, then two clean runs catch up
                step_finish_late_transaction(model)
        finally:
            for txn in model.open:
                txn.conn.close()
        for _ in range(2):
            visible = {t: {pk: dict(r) for pk, r in model.committed[t].items()} for t in TABLES}
            extract_tables(url, store, TABLES, lookback=LOOKBACK, batch_ts=datetime(2027, 1, 1, second=_))
            for table in TABLES:
                for pk, row in visible[table].items():
                    model.expected[table].setdefault((pk, row["last_updated"]), row)
    check_lake(model, store)
    return model


@pytest.mark.parametrize("seed, connections", [(11, 1), (42, 2)])
def test_random_walk_archives_every_visible_version_exactly_once(totesys_url, tmp_path, seed, connections):
    model = random_walk(totesys_url, LakeZone((tmp_path / "lake").as_uri()), seed, steps=220, connections=connections)
    assert model.runs >= 20
    assert sum(len(v) for v in model.expected.values()) >= 50
    # The lake's current view (latest version per key) equals the source.
    for table in TABLES:
        latest = {pk: row["last_updated"] for pk, row in model.committed[table].items()}
        assert {pk for pk, lu in model.expected[table] if latest.get(pk) == lu} == set(latest)


def test_random_walk_on_s3(totesys_url, s3_bucket, moto_endpoint):
    store = LakeZone(f"s3://{s3_bucket}/ingestion", endpoint_url=moto_endpoint)
    model = random_walk(totesys_url, store, seed=7, steps=90)
    assert model.runs >= 10
