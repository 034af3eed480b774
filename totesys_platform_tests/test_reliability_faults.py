"""Fault injection, end to end: kill the real pipeline process, take away the source, the warehouse or the
lake bucket, hang a connection, and check that the next run always ends where a run that never failed ends.

The reference is a warehouse loaded by runs that never failed, over the same source states. Warehouses are
compared on all 11 tables, rows as sets (a fact's surrogate record id aside).

Kill points: a random moment of the extraction (and optionally of the whole run), and two windows too short to hit
by timing, reached by a crash hook (`sitecustomize.py` put on the subprocess's path by the test; no product
code knows about it): just before a lake table's Delta commit (its batch prepared, nothing committed), and
inside the warehouse merge transaction (rows merged, load state not yet recorded, nothing committed).

`FAULT_KILLS=n` adds n kills at random moments of the second state's runs (default 0: the kill points above
are random already); `FAULT_SEED` replays a sequence.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import boto3
import dagster as dg
import psycopg
import pytest
from psycopg import sql

from totesys_platform.defs.automation.checks import FACT_HISTORY_CHECKS, REFERENTIAL_CHECKS
from totesys_platform.defs.ingestion.assets import extract_totesys
from totesys_platform.lake.delta import LakeZone, Position
from totesys_platform.defs.lake_io_manager import LakeIOManager
from totesys_platform.defs.processed.assets import PROCESSED_ASSETS
from totesys_platform.local.postgres import free_port
from totesys_platform.defs.resources import LakeResource, TotesysDatabase, WarehouseDatabase
from totesys_platform.local import simulator
from totesys_platform.source.contract import TABLE_NAMES
from totesys_platform.star_schema import TARGET_TABLES
from totesys_platform.defs.warehouse.assets import WAREHOUSE_ASSETS, warehouse_key
from totesys_platform.defs.warehouse.io_manager import WarehouseIOManager

REPO = Path(__file__).resolve().parents[1]
DAGSTER = REPO / ".venv" / "bin" / "dagster"
ASSETS = [extract_totesys, *PROCESSED_ASSETS, *WAREHOUSE_ASSETS]
ALL_CHECKS_FOR_FACTS = [*FACT_HISTORY_CHECKS, *REFERENTIAL_CHECKS]
CLI_TIMEOUT = 240
SEED_END = date(2023, 6, 30)
# The live activity between the two source states: new orders, payments paid, order and reference updates.
STEP_TIMES = [datetime(2023, 7, 3, 9, minute, 30, 123000) for minute in range(3)]
FAULT_KILLS = int(os.environ.get("FAULT_KILLS", "0"))
FAULT_SEED = int(os.environ.get("FAULT_SEED", str(int(time.time()))))

CRASH_HOOK = '''
"""Test-only crash hook, loaded by Python at start-up (sitecustomize) in a pipeline subprocess."""
import os

_spec = os.environ.get("TOTESYS_TEST_KILL_AT")
if _spec:
    import signal

    _where, _, _nth = _spec.partition(":")
    _calls = [0]

    def _die_at_nth_call():
        _calls[0] += 1
        if _calls[0] == int(_nth):
            os.kill(os.getpid(), signal.SIGKILL)

    if _where == "lake_commit":
        from totesys_platform.lake import delta as _delta

        for _name in ("append", "merge"):
            def _wrap(real):
                def commit(self, *args, **kwargs):
                    _die_at_nth_call()  # the batch is prepared (rows spooled); its Delta commit is not made
                    return real(self, *args, **kwargs)
                return commit

            setattr(_delta.LakeTable, _name, _wrap(getattr(_delta.LakeTable, _name)))
    elif _where == "warehouse_merge":
        from totesys_platform.defs.warehouse import io_manager as _io

        _set_load_state = _io.set_load_state

        def set_load_state(conn, table, position, *rest):
            _die_at_nth_call()  # the merge ran in the open transaction; load state and commit not yet
            return _set_load_state(conn, table, position, *rest)

        _io.set_load_state = set_load_state
'''


# --------------------------------------------------------------------------------------------------
# Helpers (also used by the soak and bad-input modules)


@dataclass
class Stack:
    """Where one copy of the pipeline keeps its state: a source, a lake (two zones) and a warehouse."""

    totesys_url: str
    warehouse_url: str
    ingestion_url: str
    processed_url: str
    endpoint: str = ""

    def resources(self) -> dict:
        lake = LakeResource(ingestion_url=self.ingestion_url, processed_url=self.processed_url,
                            aws_endpoint_url=self.endpoint)
        return {
            "totesys": TotesysDatabase(db_url=self.totesys_url),
            "lake": lake,
            "lake_io_manager": LakeIOManager(lake=lake),
            "warehouse": WarehouseDatabase(db_url=self.warehouse_url),
            "warehouse_io_manager": WarehouseIOManager(db_url=self.warehouse_url),
        }

    def ingestion(self) -> LakeZone:
        return LakeZone(self.ingestion_url, endpoint_url=self.endpoint or None)

    def processed(self) -> LakeZone:
        return LakeZone(self.processed_url, endpoint_url=self.endpoint or None)

    def env(self, dagster_home: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "TOTESYS_", "LAKE_", "DAGSTER_"))}
        env.update(
            TOTESYS_DB_URL=self.totesys_url, WAREHOUSE_DB_URL=self.warehouse_url,
            LAKE_INGESTION_URL=self.ingestion_url, LAKE_PROCESSED_URL=self.processed_url,
            DAGSTER_HOME=str(dagster_home), TOTESYS_AUTOMATION="off",
        )
        return env


def run_in_process(stack: Stack, selection=None, *, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    return dg.materialize(ASSETS, resources=stack.resources(), selection=selection, raise_on_error=raise_on_error)


def step_failures(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    """Step key -> the error's class and message, for every failed step."""
    failures = {}
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            while error.cause is not None and error.cls_name.startswith("DagsterExecution"):
                error = error.cause  # the user code's own error, not Dagster's wrapper
            failures[event.step_key] = f"{error.cls_name}: {error.message}"
    return failures


def warehouse_tables(url: str) -> dict[str, list[tuple]]:
    """Every warehouse table's rows, sorted, without the facts' surrogate record ids."""
    out = {}
    with psycopg.connect(url) as conn:
        for name, table in TARGET_TABLES.items():
            query = sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(map(sql.Identifier, table.column_names)), sql.Identifier(name))
            out[name] = sorted(conn.execute(query).fetchall(), key=repr)
    return out


def assert_same_warehouse(actual_url: str, expected: dict[str, list[tuple]], context: str = "") -> None:
    actual = warehouse_tables(actual_url)
    for name in TARGET_TABLES:
        got, want = set(actual[name]), set(expected[name])
        assert len(actual[name]) == len(got), f"{name}: duplicate rows {context}"
        assert got == want, (
            f"{name} differs from the never-failed reference {context}: {len(want - got)} missing, "
            f"{len(got - want)} unexpected; e.g. missing {sorted(want - got, key=repr)[:2]}, "
            f"unexpected {sorted(got - want, key=repr)[:2]}")


def load_state(url: str) -> dict[str, Position]:
    with psycopg.connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('totesys_meta.load_state') IS NOT NULL").fetchone()[0]
        if not exists:
            return {}
        return {table: Position(*rest) for table, *rest in conn.execute(
            "SELECT table_name, processed_table_id, processed_version, processed_committed_at "
            "FROM totesys_meta.load_state")}


def lake_heads(stack: Stack) -> dict[str, int]:
    """The version of every lake table, both zones ("ingestion/<t>", "processed/<t>"); -1 for none."""
    heads = {f"ingestion/{t}": stack.ingestion().table(t).snapshot().version for t in TABLE_NAMES}
    heads |= {f"processed/{t}": stack.processed().table(t).snapshot().version for t in TARGET_TABLES}
    return heads


def assert_consistent(stack: Stack) -> None:
    """What must hold after ANY crash: the warehouse never claims a processed version the lake lacks, and a
    processed table never claims an ingestion version the lake lacks."""
    processed = {t: stack.processed().table(t).snapshot() for t in TARGET_TABLES}
    ingestion = {t: stack.ingestion().table(t).snapshot() for t in TABLE_NAMES}
    for table, position in load_state(stack.warehouse_url).items():
        now = processed[table]
        assert now.table_id == position.table_id and position.version <= now.version, \
            f"warehouse {table} loaded through {position}, lake has less"
    for table, now in processed.items():
        for source, body in (now.state.get("consumed") or {}).items():
            position = Position.from_json(body)
            assert ingestion[source].table_id == position.table_id and position.version <= ingestion[source].version, \
                f"processed {table} consumed {source} {position}, lake has less"


def clone_database(pg_server, template_url: str, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    pg_server.create_database(name, template=template_url.rsplit("/", 1)[1])
    return pg_server.url(name)


def apply_live_activity(totesys_url: str) -> None:
    """The same deterministic activity on any copy of the seeded source."""
    with simulator.Simulator(totesys_url, seed=3, update_rate=2.0, reference_update_rate=1.0) as sim:
        for now in STEP_TIMES:
            sim.step(now)


@dataclass
class CliRun:
    returncode: int
    output: str
    seconds: float
    killed: bool

    @property
    def checks(self) -> tuple[int, int]:
        lines = [line for line in self.output.splitlines() if "ASSET_CHECK_EVALUATION" in line]
        return sum(" passed." in line for line in lines), sum(" failed." in line for line in lines)


def run_cli(stack: Stack, dagster_home: Path, hook_dir: Path, *, kill_at: str | None = None,
            kill_after_line: str | None = None, kill_delay: float = 0.0) -> CliRun:
    """`dagster asset materialize --select '*'` in a subprocess; optionally SIGKILLed `kill_delay` seconds
    after a log line containing `kill_after_line` appears, or by the crash hook at `kill_at`."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").touch()
    env = stack.env(dagster_home)
    env["PYTHONPATH"] = str(hook_dir)
    if kill_at:
        env["TOTESYS_TEST_KILL_AT"] = kill_at
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(DAGSTER), "asset", "materialize", "-m", "totesys_platform.definitions", "--select", "*"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
        start_new_session=True,
    )
    lines: list[str] = []
    trigger = threading.Event()

    def pump():
        for line in proc.stdout:
            lines.append(line)
            if kill_after_line and kill_after_line in line:
                trigger.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    killed = False
    try:
        if kill_after_line:
            while not trigger.wait(0.05) and proc.poll() is None:
                if time.monotonic() - started > CLI_TIMEOUT:
                    break
            if proc.poll() is None:
                time.sleep(kill_delay)
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed = True
        proc.wait(timeout=CLI_TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(10)
    run = CliRun(proc.returncode, "".join(lines), time.monotonic() - started, killed or proc.returncode == -signal.SIGKILL)
    return run


@pytest.fixture(scope="module")
def hook_dir():
    folder = Path(tempfile.mkdtemp(prefix="totesys-crash-hook-"))
    (folder / "sitecustomize.py").write_text(CRASH_HOOK)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def sources(pg_server, _totesys_template):
    """Two source states: S1 (seeded history) and S2 (S1 plus live activity), as template databases."""
    names = []

    def create(prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        pg_server.create_database(name, template="totesys_template")
        names.append(name)
        return pg_server.url(name)

    s1 = create("faults_s1")
    simulator.seed(s1, scale=0.02, seed=7, end=SEED_END, progress=lambda *a, **k: None)
    s2 = clone_database(pg_server, s1, "faults_s2")
    names.append(s2.rsplit("/", 1)[1])
    apply_live_activity(s2)
    yield s1, s2
    for name in names:
        pg_server.drop_database(name)


@pytest.fixture(scope="module")
def reference(pg_server, _totesys_template, sources, tmp_path_factory):
    """A warehouse loaded by runs that never failed: one at S1, one at S2. Also keeps the lake and the
    warehouse as they were after S1 (for the scenarios that fail the S2 run)."""
    s1, s2 = sources
    root = tmp_path_factory.mktemp("reference")
    pg_server.create_database(name := f"ref_wh_{uuid.uuid4().hex[:8]}")
    warehouse = pg_server.url(name)
    source = clone_database(pg_server, s1, "ref_src")
    stack = Stack(source, warehouse, (root / "ingestion").as_uri(), (root / "processed").as_uri())
    run_in_process(stack)
    after_s1 = {
        "warehouse": clone_database(pg_server, warehouse, "ref_wh_s1"),
        "lake": root / "after_s1",
    }
    shutil.copytree(root / "ingestion", root / "after_s1" / "ingestion")
    shutil.copytree(root / "processed", root / "after_s1" / "processed")
    apply_live_activity(source)
    assert_same_source(source, s2)
    run_in_process(stack)
    tables = warehouse_tables(warehouse)
    assert tables["fact_sales_order"] and tables["dim_date"]
    yield {"tables": tables, "after_s1": after_s1}
    for url in (warehouse, source, after_s1["warehouse"]):
        pg_server.drop_database(url.rsplit("/", 1)[1])


def assert_same_source(a: str, b: str) -> None:
    """The simulator is deterministic: two copies stepped alike are identical (checked on every table)."""
    with psycopg.connect(a) as ca, psycopg.connect(b) as cb:
        for table in TABLE_NAMES:
            query = sql.SQL("SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {} AS t").format(
                sql.Identifier(table))
            assert ca.execute(query).fetchone() == cb.execute(query).fetchone(), table


@pytest.fixture
def stack_after_s1(pg_server, sources, reference, tmp_path):
    """A copy of the reference's lake and warehouse as they were after the S1 run, and a source at S2:
    the next run is the one a scenario makes fail."""
    _, s2 = sources
    shutil.copytree(reference["after_s1"]["lake"], tmp_path / "lake")
    source = clone_database(pg_server, s2, "src")
    warehouse = clone_database(pg_server, reference["after_s1"]["warehouse"], "wh")
    stack = Stack(source, warehouse, (tmp_path / "lake" / "ingestion").as_uri(),
                  (tmp_path / "lake" / "processed").as_uri())
    yield stack
    for url in (source, warehouse):
        pg_server.drop_database(url.rsplit("/", 1)[1])


# --------------------------------------------------------------------------------------------------
# Killing the real process


def test_killed_runs_resume_to_the_warehouse_of_runs_that_never_failed(
    pg_server, sources, reference, hook_dir, tmp_path
):
    rng = random.Random(FAULT_SEED)
    s1, s2 = sources
    source = clone_database(pg_server, s1, "killed_src")
    pg_server.create_database(name := f"killed_wh_{uuid.uuid4().hex[:8]}")
    stack = Stack(source, pg_server.url(name), (tmp_path / "ingestion").as_uri(), (tmp_path / "processed").as_uri())
    log: list[str] = []

    def run(home: str, **kill) -> CliRun:
        result = run_cli(stack, tmp_path / home, hook_dir, **kill)
        log.append(f"{kill or 'no kill'}: rc={result.returncode} killed={result.killed} in {result.seconds:.1f}s")
        if not result.killed:
            assert result.returncode == 0, f"FAULT_SEED={FAULT_SEED}, {log}:\n{result.output[-3000:]}"
        assert_consistent(stack)
        return result

    try:
        # S1, first Dagster instance: a crash just before a random lake commit (either zone), one inside a
        # random warehouse merge, then a clean run.
        run("home_a", kill_at=f"lake_commit:{rng.randint(1, 22)}")
        run("home_a", kill_at=f"warehouse_merge:{rng.randint(1, 11)}")
        done = run("home_a")
        assert done.checks[1] == 0, [line for line in done.output.splitlines() if " failed." in line]

        # S2, and a brand-new Dagster instance: the lake and the warehouse alone say where to continue.
        # A kill at a random moment of the extraction, then (FAULT_KILLS) at random moments of the run.
        apply_live_activity(source)
        assert_same_source(source, s2)
        run("home_b", kill_after_line='STEP_START - Started execution of step "extract_totesys"',
            kill_delay=rng.uniform(0.0, 1.5))
        for _ in range(FAULT_KILLS):
            run("home_b", kill_after_line="RUN_START", kill_delay=rng.uniform(0.0, 10.0))
        done = run("home_b")
        passed, failed = done.checks
        assert failed == 0 and passed > 0, [line for line in done.output.splitlines() if "ASSET_CHECK" in line]
        assert sum("'kill_at'" in entry and "killed=True" in entry for entry in log) == 2, log
        assert_same_warehouse(stack.warehouse_url, reference["tables"], f"(FAULT_SEED={FAULT_SEED}; {log})")
    finally:
        pg_server.drop_database(source.rsplit("/", 1)[1])
        pg_server.drop_database(name)


@pytest.mark.parametrize("table", ["dim_date", "dim_counterparty"])  # the two kinds of builder state
def test_a_crash_before_a_processed_commit_does_not_block_the_next_run(stack_after_s1, monkeypatch, table):
    """The builder state is read from the lake tables themselves (dim_date's range, the reference rows):
    a crashed attempt leaves nothing behind that the next one trips over."""
    from totesys_platform.lake.delta import LakeTable
    from totesys_platform.lake.processed.runner import process_table
    from totesys_platform.lake.writes import commit_write

    stack = stack_after_s1
    run_in_process(stack, selection=[extract_totesys])

    def crash(self, *args, **kwargs):
        raise SystemExit("killed before the processed commit")

    with monkeypatch.context() as patched:
        patched.setattr(LakeTable, "append", crash)
        patched.setattr(LakeTable, "merge", crash)
        with pytest.raises(SystemExit):
            commit_write(process_table(table, stack.ingestion(), stack.processed()).write)
    result = process_table(table, stack.ingestion(), stack.processed())
    assert result.changed and commit_write(result.write) is not None


# --------------------------------------------------------------------------------------------------
# Outside systems failing


def test_an_unreachable_source_fails_fast_advances_nothing_and_the_next_run_recovers(stack_after_s1, reference):
    stack = stack_after_s1
    before = (lake_heads(stack), load_state(stack.warehouse_url))
    good_url = stack.totesys_url
    stack.totesys_url = f"postgresql://reader:pw-not-shown@127.0.0.1:{free_port()}/totesys"
    started = time.monotonic()
    result = run_in_process(stack, raise_on_error=False)
    assert time.monotonic() - started < 30
    failures = step_failures(result)
    assert list(failures) == ["extract_totesys"]
    assert "cannot connect to the totesys source database" in failures["extract_totesys"]
    assert "reader:***@127.0.0.1" in failures["extract_totesys"] and "pw-not-shown" not in failures["extract_totesys"]
    assert (lake_heads(stack), load_state(stack.warehouse_url)) == before

    stack.totesys_url = good_url
    run_in_process(stack)
    assert_same_warehouse(stack.warehouse_url, reference["tables"])


def test_an_unreachable_warehouse_fails_every_load_and_the_next_run_catches_up(stack_after_s1, reference):
    stack = stack_after_s1
    before = load_state(stack.warehouse_url)
    good_url = stack.warehouse_url
    stack.warehouse_url = f"postgresql://loader:pw-not-shown@127.0.0.1:{free_port()}/warehouse"
    result = run_in_process(stack, raise_on_error=False)
    failures = step_failures(result)
    # The lake moves on (that is its own state); every warehouse load fails, saying where and why.
    assert failures and all(key.startswith("warehouse__") for key in failures)
    assert all("WarehouseConnectionError: cannot connect to the warehouse at postgresql://loader:***@" in message
               and "pw-not-shown" not in message for message in failures.values())
    stack.warehouse_url = good_url
    assert load_state(stack.warehouse_url) == before
    assert_consistent(stack)

    run_in_process(stack)
    assert_same_warehouse(stack.warehouse_url, reference["tables"])


class HungServer:
    """A TCP server on loopback that accepts connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
                self.accepted.append(conn)
            except OSError:
                continue

    def close(self):
        self._stop = True
        self.thread.join(2)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def hung_server():
    server = HungServer()
    yield server
    server.close()


def test_hung_source_and_warehouse_connections_are_clear_errors_within_a_bounded_time(stack_after_s1, hung_server):
    """The source and the warehouse each point at a server that accepts and never answers; both runs
    (concurrently, to halve the waiting) fail on the 10 s connect timeout with an error saying where."""
    stack = stack_after_s1
    before = lake_heads(stack), load_state(stack.warehouse_url)
    hung_url = "postgresql://someone:pw-not-shown@127.0.0.1:{}/{}"
    to_source = Stack(**{**stack.__dict__, "totesys_url": hung_url.format(hung_server.port, "totesys")})
    to_warehouse = Stack(**{**stack.__dict__, "warehouse_url": hung_url.format(hung_server.port, "warehouse")})
    outcomes: dict[str, tuple[float, dict[str, str]]] = {}

    def attempt(name: str, target: Stack, selection) -> None:
        started = time.monotonic()
        result = run_in_process(target, selection=selection, raise_on_error=False)
        outcomes[name] = (time.monotonic() - started, step_failures(result))

    threads = [
        threading.Thread(target=attempt, args=("source", to_source, [extract_totesys])),
        threading.Thread(target=attempt, args=("warehouse", to_warehouse, [warehouse_key("dim_currency")])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(hung_server.accepted) >= 2, "the hung server was not contacted by both"
    source_seconds, source_failures = outcomes["source"]
    assert list(source_failures) == ["extract_totesys"]
    assert "cannot connect to the totesys source database postgresql://someone:***@" in source_failures["extract_totesys"]
    warehouse_seconds, warehouse_failures = outcomes["warehouse"]
    assert list(warehouse_failures) == ["warehouse__dim_currency"]
    assert "cannot connect to the warehouse at postgresql://someone:***@" in warehouse_failures["warehouse__dim_currency"]
    for message in (*source_failures.values(), *warehouse_failures.values()):
        assert "timeout" in message.lower() and "pw-not-shown" not in message
    assert source_seconds < 30 and warehouse_seconds < 30, outcomes  # the 10 s connect timeout, not forever
    assert (lake_heads(stack), load_state(stack.warehouse_url)) == before


def test_the_lake_bucket_deleted_mid_run_fails_cleanly_and_a_restored_bucket_recovers(
    stack_after_s1, reference, moto_endpoint
):
    """Both zones on S3 (moto), backed up before the run. Once the extraction has started (its reads held back
    by a lock on totesys' tables, so no table is committed yet), the bucket is emptied and deleted; the run fails with a lake error naming it
    and nothing downstream moves. Once the bucket is restored from the backup, the next run finishes the job."""
    stack = stack_after_s1
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="eu-west-2")
    bucket = f"lake-{uuid.uuid4().hex[:10]}"
    # The local copy of the lake is the backup: the state before the run, as a nightly copy would hold it.
    backup = Path(stack.ingestion_url.removeprefix("file://")).parent

    def restore_bucket_from_backup() -> None:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
        for path in backup.rglob("*"):
            if path.is_file():
                s3.upload_file(str(path), bucket, path.relative_to(backup).as_posix())

    def keys(name: str) -> list[str]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=name)
        return [item["Key"] for page in pages for item in page.get("Contents", ())]

    restore_bucket_from_backup()
    stack.ingestion_url, stack.processed_url = f"s3://{bucket}/ingestion", f"s3://{bucket}/processed"
    stack.endpoint = moto_endpoint
    heads_before, state_before = lake_heads(stack), load_state(stack.warehouse_url)

    holder = psycopg.connect(stack.totesys_url)
    # Every table: a table read is committed at once, while the others are still being read.
    holder.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
        sql.SQL(", ").join(map(sql.Identifier, TABLE_NAMES))))
    deleted = threading.Event()
    stop = threading.Event()

    def delete_bucket_while_the_extraction_waits():
        try:
            with psycopg.connect(stack.totesys_url, autocommit=True) as watcher:
                while not watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND application_name = 'totesys_platform extract'").fetchone()[0]:
                    if stop.is_set():
                        return
                    time.sleep(0.03)
            for start in range(0, len(batch := keys(bucket)), 1000):
                s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch[start:start + 1000]]})
            s3.delete_bucket(Bucket=bucket)
            deleted.set()
        finally:
            holder.rollback()  # let the extraction go on, into a lake that is gone

    saboteur = threading.Thread(target=delete_bucket_while_the_extraction_waits, daemon=True)
    saboteur.start()
    try:
        result = run_in_process(stack, raise_on_error=False)
    finally:
        stop.set()
        saboteur.join(30)
        holder.close()
    assert deleted.is_set(), "the bucket was not deleted"
    failures = step_failures(result)
    assert list(failures) == ["extract_totesys"], failures  # everything downstream was skipped
    message = failures["extract_totesys"]
    assert f"LakeUnavailableError: S3 bucket '{bucket}' does not exist (LAKE_INGESTION_URL=s3://{bucket}/ingestion" \
        in message, failures
    assert load_state(stack.warehouse_url) == state_before

    restore_bucket_from_backup()
    assert lake_heads(stack) == heads_before
    assert_consistent(stack)
    run_in_process(stack)
    assert_same_warehouse(stack.warehouse_url, reference["tables"])


# --------------------------------------------------------------------------------------------------
# The lake's processed zone lost or restored behind the warehouse's back


def insert_sales_order(url: str, at: datetime) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "INSERT INTO sales_order (created_at, last_updated, design_id, staff_id, counterparty_id, units_sold, "
            "unit_price, currency_id, agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id) "
            "VALUES (%s, %s, 2, 2, 2, 4321, 3.25, 2, '2023-07-10', '2023-07-11', 2) RETURNING sales_order_id",
            (at, at)).fetchone()[0]


def current_sales_orders(warehouse_url: str) -> set[int]:
    with psycopg.connect(warehouse_url) as conn:
        return {row[0] for row in conn.execute("SELECT sales_order_id FROM fact_sales_order_current")}


def test_a_lost_processed_zone_is_rebuilt_and_the_warehouse_merges_it_again_instead_of_skipping(stack_after_s1):
    stack = stack_after_s1
    run_in_process(stack)  # S2 loaded: the warehouse is now at processed version 1 of the changed tables
    processed_folder = Path(stack.processed_url.removeprefix("file://"))
    shutil.rmtree(processed_folder)  # the processed zone is lost; the ingestion zone is the source of truth
    new_order = insert_sales_order(stack.totesys_url, datetime(2023, 7, 3, 10, 0, 0, 500000))

    result = dg.materialize([*ASSETS, *ALL_CHECKS_FOR_FACTS], resources=stack.resources())
    assert result.success
    assert new_order in current_sales_orders(stack.warehouse_url)
    for evaluation in result.get_asset_check_evaluations():
        assert evaluation.passed, (evaluation.asset_key, evaluation.check_name, evaluation.metadata)
    assert_consistent(stack)


def test_a_lost_ingestion_zone_is_extracted_again_and_processing_rebuilds_instead_of_skipping(stack_after_s1):
    stack = stack_after_s1
    run_in_process(stack)  # S2: the processed tables have consumed ingestion version 1 of the changed tables
    shutil.rmtree(Path(stack.ingestion_url.removeprefix("file://")))  # lost: the next extraction starts afresh
    new_order = insert_sales_order(stack.totesys_url, datetime(2023, 7, 3, 10, 0, 0, 500000))
    versions_before = len(warehouse_tables(stack.warehouse_url)["fact_sales_order"])

    run_in_process(stack)
    assert new_order in current_sales_orders(stack.warehouse_url)
    # The re-extracted current versions were already loaded: only the new order's version is added.
    assert len(warehouse_tables(stack.warehouse_url)["fact_sales_order"]) == versions_before + 1
    assert_consistent(stack)


def test_an_ingestion_zone_restored_from_an_older_copy_and_overtaken_is_processed_again(stack_after_s1, tmp_path):
    """Restored one version behind, then extracted past that point again: the versions the processed
    tables consumed exist again, but hold other commits; processing must notice and rebuild."""
    stack = stack_after_s1
    ingestion_folder = Path(stack.ingestion_url.removeprefix("file://"))
    shutil.copytree(ingestion_folder, tmp_path / "ingestion_backup")  # a backup taken at S1
    run_in_process(stack)  # S2: processed tables consumed ingestion version 1 of the changed tables
    shutil.rmtree(ingestion_folder)
    shutil.copytree(tmp_path / "ingestion_backup", ingestion_folder)  # restored: one batch behind
    new_order = insert_sales_order(stack.totesys_url, datetime(2023, 7, 3, 10, 0, 0, 500000))

    run_in_process(stack)  # extraction re-archives S2's changes and the new order as version 1 again
    assert new_order in current_sales_orders(stack.warehouse_url)
    assert_consistent(stack)


def test_a_processed_zone_restored_from_an_older_copy_loses_nothing(stack_after_s1, tmp_path):
    stack = stack_after_s1
    processed_folder = Path(stack.processed_url.removeprefix("file://"))
    shutil.copytree(processed_folder, tmp_path / "processed_backup")  # a backup taken at S1
    run_in_process(stack)  # S2 loaded
    shutil.rmtree(processed_folder)
    shutil.copytree(tmp_path / "processed_backup", processed_folder)  # restored: one version behind the warehouse
    new_order = insert_sales_order(stack.totesys_url, datetime(2023, 7, 3, 10, 0, 0, 500000))
    run_in_process(stack)
    assert new_order in current_sales_orders(stack.warehouse_url)
