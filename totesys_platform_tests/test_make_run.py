"""`make run` end to end: `totesys-platform run` starts the stack, the simulator and Dagster, and a
SIGINT stops all of it, leaving no process behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest

from totesys_platform.local.postgres import free_port, new_temp_root
from totesys_platform_tests.readme_walk import (
    BLOCK_TIMEOUT_SECONDS, NOT_RUN, PROJECT, Block, blocks_to_run, readme_blocks, run_readme_blocks, stale_reasons,
)
from totesys_platform.local.stack import LocalStack
from totesys_platform.local.simulator import PURCHASE_ORDERS_AT_SCALE_1, SALES_ORDERS_AT_SCALE_1

UI_DEADLINE_SECONDS = 300  # dagster dev answers in ~10 s when idle; CI machines can be far busier
STOP_DEADLINE_SECONDS = 25


def _processes_mentioning(marker: str) -> dict[int, str]:
    """Live processes whose command line or environment contains `marker` (zombies are dead: skipped)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().decode(errors="replace")
        except (OSError, IndexError):
            continue  # gone meanwhile, or not ours to read
        if marker in cmdline or marker in environ:
            found[int(entry.name)] = cmdline.strip()[:160]
    return found


def _ui_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _orders(url: str) -> int:
    with psycopg.connect(url, connect_timeout=5) as conn:
        return conn.execute("SELECT (SELECT count(*) FROM sales_order) + (SELECT count(*) FROM purchase_order)").fetchone()[0]


FRESHNESS_DEADLINE_SECONDS = 240


def _insert_sales_order(url: str) -> int:
    """One new sales order, its transaction and payment under one timestamp, as totesys writes them."""
    with psycopg.connect(url, connect_timeout=5) as conn:
        return conn.execute("""
            WITH o AS (
                INSERT INTO sales_order (created_at, last_updated, design_id, staff_id, counterparty_id, units_sold,
                    unit_price, currency_id, agreed_delivery_date, agreed_payment_date, agreed_delivery_location_id)
                SELECT now()::timestamp(3), now()::timestamp(3), (SELECT min(design_id) FROM design),
                    (SELECT min(staff_id) FROM staff), (SELECT min(counterparty_id) FROM counterparty), 1234, 3.21,
                    1, '2026-12-01', '2026-12-02', (SELECT min(address_id) FROM address)
                RETURNING sales_order_id, created_at
            ), t AS (
                INSERT INTO transaction (transaction_type, sales_order_id, created_at, last_updated)
                SELECT 'SALE', sales_order_id, created_at, created_at FROM o RETURNING transaction_id, created_at
            ), p AS (
                INSERT INTO payment (created_at, last_updated, transaction_id, counterparty_id, payment_amount,
                    currency_id, payment_type_id, paid, payment_date, company_ac_number, counterparty_ac_number)
                SELECT created_at, created_at, transaction_id, (SELECT min(counterparty_id) FROM counterparty),
                    3961.14, 1, 1, false, '2026-12-02', 12345678, 87654321 FROM t
            )
            SELECT sales_order_id FROM o""").fetchone()[0]


def _in_warehouse(url: str, sales_order_id: int) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM fact_sales_order WHERE sales_order_id = %s",
                                (sales_order_id,)).fetchone()[0] > 0
    except psycopg.errors.UndefinedTable:
        return False  # the first load has not created the warehouse yet


@pytest.fixture
def run_env():
    """A private local folder (outside pytest's tmp tree, see conftest) and free ports."""
    folder = new_temp_root("totesys-make-run-")
    env = {**os.environ, "TOTESYS_LOCAL_DIR": str(folder / "local"), "TOTESYS_LOCAL_PG_PORT": str(free_port())}
    env.pop("DAGSTER_HOME", None)
    yield env
    # Belt and braces if the test failed half-way: nothing of this run may survive the test.
    try:
        LocalStack.from_env(env).postgres.stop()
    except subprocess.CalledProcessError:
        pass
    for pid in _processes_mentioning(str(folder)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(folder, ignore_errors=True)


def test_make_run_as_the_readme_writes_it_serves_the_ui_feeds_the_warehouse_runs_every_readme_block_and_stops_on_ctrl_c(
        run_env, tmp_path):
    """A new user's first session, in a folder laid out like a checkout: `make run`, then every README block."""
    stamp = PROJECT / ".venv" / ".installed"
    # The checkout shares this .venv: a stale install would make `make run` reinstall it from the temporary
    # checkout, leaving the project's .venv pointing at a folder this test deletes.
    assert stamp.exists() and stamp.stat().st_mtime >= (PROJECT / "pyproject.toml").stat().st_mtime, \
        "pyproject.toml changed since .venv was installed: run `make venv` (or `make test`) first"
    walk = Path(run_env["TOTESYS_LOCAL_DIR"]).parent / "checkout"
    walk.mkdir()
    for name in (".venv", "Makefile", "pyproject.toml", "deploy"):
        (walk / name).symlink_to(PROJECT / name)
    local_dir = str(walk / ".local")  # the README's paths (.local/lake/...) are relative to the checkout
    ui_port = free_port()
    env = {**run_env, "TOTESYS_LOCAL_DIR": local_dir,
           # `make run` as written; ARGS (read by make from the environment) gives the test's own port and sizes
           "ARGS": f"--port {ui_port} --seed-scale 0.01 --orders-per-minute 600"}
    output = walk / "run.out"
    with open(output, "wb") as out:
        launcher = subprocess.Popen(
            ["make", "run"], cwd=walk, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # like a terminal's foreground job: signals reach it only when we send them
        )
    log = lambda: output.read_text(errors="replace")  # noqa: E731
    try:
        deadline = time.monotonic() + UI_DEADLINE_SECONDS
        while not _ui_answers(f"http://127.0.0.1:{ui_port}/server_info"):
            assert launcher.poll() is None, f"`make run` exited early with {launcher.returncode}:\n{log()}"
            assert time.monotonic() < deadline, f"no UI after {UI_DEADLINE_SECONDS} s:\n{log()}"
            time.sleep(1)
        deadline = time.monotonic() + 30
        while f"Dagster UI: http://127.0.0.1:{ui_port}" not in log():
            assert time.monotonic() < deadline, log()
            time.sleep(0.5)

        # The live simulator writes into the seeded totesys database.
        stack = LocalStack.from_env(env)
        totesys = stack.url("totesys")
        seeded = round(SALES_ORDERS_AT_SCALE_1 * 0.01) + round(PURCHASE_ORDERS_AT_SCALE_1 * 0.01)
        deadline = time.monotonic() + 60
        while _orders(totesys) <= seeded:
            assert time.monotonic() < deadline, f"the simulator wrote nothing:\n{log()}"
            time.sleep(1)

        # Without anyone clicking anything, the new-data sensor carries a row inserted into totesys to the
        # warehouse (the promise is about a minute; the deadline leaves room for a loaded CI machine).
        marker = _insert_sales_order(totesys)
        inserted_at = time.monotonic()
        warehouse = stack.url("warehouse")
        while not _in_warehouse(warehouse, marker):
            assert time.monotonic() - inserted_at < FRESHNESS_DEADLINE_SECONDS, (
                f"sales order {marker} did not reach the warehouse in {FRESHNESS_DEADLINE_SECONDS} s:\n{log()}")
            time.sleep(2)
        print(f"sales order {marker} reached the warehouse in {time.monotonic() - inserted_at:.0f} s")

        # A new user also gets the sales report (and the hourly checks) right after the first load, not at :05.
        reports = Path(local_dir) / "lake" / "processed" / "reports"
        while not list(reports.rglob("*.html")):
            assert time.monotonic() - inserted_at < FRESHNESS_DEADLINE_SECONDS + 120, (
                f"no sales report after the first load:\n{log()}")
            time.sleep(2)

        # Every README block that can run here runs as written and succeeds (see readme_walk for the rules).
        ran = run_readme_blocks(cwd=walk, env=env, warehouse_url=warehouse)
        assert {"sh", "sql"} <= {block.lang for block in ran}, ran
        print(f"{len(ran)} README blocks ran")

        # A run-once command whose run fails ends with two lines: the failed step with its error, and the run's page.
        with psycopg.connect(warehouse, autocommit=True) as conn:
            conn.execute("ALTER TABLE fact_sales_order RENAME COLUMN units_sold TO units_sold_renamed")
        try:
            failed = subprocess.run([".venv/bin/totesys-platform", "etl"], cwd=walk, env=env, capture_output=True,
                                    text=True, timeout=BLOCK_TIMEOUT_SECONDS)
        finally:
            with psycopg.connect(warehouse, autocommit=True) as conn:
                conn.execute("ALTER TABLE fact_sales_order RENAME COLUMN units_sold_renamed TO units_sold")
        assert failed.returncode == 1, failed.stdout + failed.stderr
        first, second = failed.stderr.strip().splitlines()
        assert first.startswith("totesys-platform: error: run ") and " of totesys_etl failed" in first, first
        assert "WarehouseSchemaError: the warehouse tables do not match" in first and "units_sold_renamed" in first
        assert second.strip().startswith(f"the run's logs: http://127.0.0.1:{ui_port}/runs/"), second

        started = _processes_mentioning(local_dir)
        names = " | ".join(started.values())
        assert "postgres -D" in names and "dagster" in names and "simulate" in names, started

        os.killpg(launcher.pid, signal.SIGINT)  # what Ctrl-C in the terminal does: make and its child get it
        stop_started = time.monotonic()
        try:
            launcher.wait(timeout=STOP_DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`make run` did not stop within {STOP_DEADLINE_SECONDS} s of SIGINT:\n{log()}")
        while _processes_mentioning(local_dir) and time.monotonic() - stop_started < STOP_DEADLINE_SECONDS:
            time.sleep(0.5)  # make may exit before the launcher it started has stopped everything
        print(f"stopped in {time.monotonic() - stop_started:.1f} s")
        text = log()
        for line in ("SIGINT received: stopping", "simulator stopped", "dagster dev stopped", "stopped (data kept"):
            assert line in text, text
        assert _processes_mentioning(local_dir) == {}
        assert not stack.postgres.is_running()
        assert not _ui_answers(f"http://127.0.0.1:{ui_port}/server_info")
        assert not (Path(local_dir) / "ui_url").exists()  # run-once commands no longer find a UI that is gone
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()


def test_run_refuses_a_port_in_use_before_starting_anything(run_env):
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "totesys_platform.cli", "run", "--port", str(port)],
                                env=run_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr and "--port" in result.stderr
    assert not Path(run_env["TOTESYS_LOCAL_DIR"]).exists()  # nothing was started or created


def test_runs_left_in_progress_by_a_killed_make_run_are_failed_before_dagster_starts(run_env, monkeypatch):
    import dagster as dg
    from dagster._core.storage.dagster_run import DagsterRunStatus

    from totesys_platform.defs.instance import fail_runs_left_in_progress

    stack = LocalStack.from_env(run_env)
    stack.up(0.0, progress=lambda _line: None)
    for name, value in stack.env().items():
        monkeypatch.setenv(name, value)  # restored after the test (the function sets them for its process)

    @dg.op
    def noop():
        pass

    @dg.job
    def probe():
        noop()

    with dg.DagsterInstance.from_config(str(stack.dagster_home)) as instance:
        lost = instance.create_run_for_job(probe, status=DagsterRunStatus.STARTED)
        finished = instance.create_run_for_job(probe, status=DagsterRunStatus.SUCCESS)
        never_launched = instance.create_run_for_job(probe, status=DagsterRunStatus.NOT_STARTED)
    assert fail_runs_left_in_progress(stack) == [lost.run_id]
    with dg.DagsterInstance.from_config(str(stack.dagster_home)) as instance:
        assert instance.get_run_by_id(lost.run_id).status == DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(finished.run_id).status == DagsterRunStatus.SUCCESS
        assert instance.get_run_by_id(never_launched.run_id).status == DagsterRunStatus.NOT_STARTED
    assert fail_runs_left_in_progress(stack) == []


def test_the_readme_walk_runs_every_command_block_but_those_it_says_why_not():
    blocks = readme_blocks()
    assert stale_reasons(blocks) == []
    ran = blocks_to_run(blocks)
    texts = "\n".join(b.text for b in ran)
    for expected in ("totesys-platform etl", "totesys-platform materialize", "totesys-platform env",
                     "delta_scan", "fact_sales_order_current"):
        assert expected in texts, expected
    assert len(ran) + len(NOT_RUN) <= len([b for b in blocks if b.lang in ("sh", "sql")])
    # Blocks inside list items are found and dedented; an unknown reason is reported as stale.
    sample = "text\n\n- item:\n\n  ```sh\n  echo hi\n  ```\n"
    assert readme_blocks(sample) == [Block("sh", "echo hi\n", 5)]
    assert stale_reasons(readme_blocks(sample)) == list(NOT_RUN)
