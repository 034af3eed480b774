"""The local stack (a real embedded PostgreSQL in a temporary folder), its Dagster config files, and the CLI."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from datetime import date
from pathlib import Path

import psycopg
import pytest
import yaml

from totesys_platform import cli, settings
from totesys_platform.local import stack as stack_module
from totesys_platform.local.postgres import LocalPostgres, free_port, new_temp_root
from totesys_platform.local.stack import DATABASES, LocalStack, StackError

ROOT = settings.project_root()
QUIET = lambda _line: None  # noqa: E731


@pytest.fixture
def stack_dir() -> Path:
    """A new folder for a local stack, outside pytest's tmp tree: a concurrent pytest session resets
    that tree's permissions, which the server (an unprivileged user when we are root) would lose."""
    folder = new_temp_root("totesys-stack-")
    yield folder / "local"
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def stack_env_vars(stack_dir) -> dict[str, str]:
    """The two variables that place a local stack: its folder and a free port."""
    return {"TOTESYS_LOCAL_DIR": str(stack_dir), "TOTESYS_LOCAL_PG_PORT": str(free_port())}


@pytest.fixture(scope="module")
def initialised_pgdata() -> Path:
    """A cluster made by initdb once for the module; initdb is the slow part of a first `up`."""
    folder = new_temp_root("totesys-pg-template-")
    server = LocalPostgres(folder / "data", free_port())
    server.start()
    server.stop()
    yield server.pgdata
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def fresh_stack(stack_env_vars):
    """A stack whose folder does not exist yet: `up` does everything, initdb included."""
    stack = LocalStack.from_env(stack_env_vars)
    yield stack
    stack.postgres.stop()  # never leave a server behind, whatever the test did


@pytest.fixture
def local_stack(stack_env_vars, initialised_pgdata):
    """A stack whose PostgreSQL cluster exists (a copy of the module's) but was never started here."""
    stack = LocalStack.from_env(stack_env_vars)
    stack.postgres.pgdata.parent.mkdir(parents=True)
    # cp -a keeps the owner: the server may run as another user than us
    subprocess.run(["cp", "-a", str(initialised_pgdata), str(stack.postgres.pgdata)], check=True)
    yield stack
    stack.postgres.stop()


def _count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(psycopg.sql.SQL("SELECT count(*) FROM {}").format(psycopg.sql.Identifier(table))).fetchone()[0]


# ------------------------------------------------------------------------------------------------
# up / down / status
# ------------------------------------------------------------------------------------------------

def test_up_creates_the_databases_folders_and_config_and_seeds_totesys(fresh_stack):
    local_stack = fresh_stack
    lines: list[str] = []
    status = local_stack.up(0.01, progress=lines.append)
    root = local_stack.root
    assert status.running and status.databases == DATABASES
    assert status.totesys_rows["sales_order"] == 112 and status.totesys_rows["address"] == 30
    assert any("seeded 112 sales orders" in line for line in lines)
    for folder in ("pg/data", "lake/ingestion", "lake/processed", "dagster_home", "logs"):
        assert (root / folder).is_dir(), folder
    assert (root / "dagster_home" / "dagster.yaml").read_bytes() == (ROOT / "dagster.yaml").read_bytes()
    for database in DATABASES:
        with psycopg.connect(local_stack.url(database)) as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == database
    assert f"127.0.0.1:{local_stack.port}: running" in status.describe()


def test_stack_env_points_every_variable_at_this_stack(local_stack, stack_env_vars):
    env = stack_module.stack_env(stack_env_vars)
    root, port = local_stack.root, local_stack.port
    assert env["TOTESYS_DB_URL"] == f"postgresql://postgres@127.0.0.1:{port}/totesys"
    assert env["WAREHOUSE_DB_URL"] == f"postgresql://postgres@127.0.0.1:{port}/warehouse"
    assert env["DAGSTER_PG_URL"] == f"postgresql+psycopg2://postgres@127.0.0.1:{port}/dagster"
    assert env["LAKE_INGESTION_URL"] == (root / "lake" / "ingestion").as_uri()
    assert env["LAKE_PROCESSED_URL"] == (root / "lake" / "processed").as_uri()
    assert env["DAGSTER_HOME"] == str(root / "dagster_home")
    assert (env["TOTESYS_LOCAL_DIR"], env["TOTESYS_LOCAL_PG_PORT"]) == (str(root), str(port))
    # the platform's own settings read the same values back from this environment
    resolved = settings.Settings.from_env(env)
    assert (resolved.totesys_db_url, resolved.lake_processed_url) == (env["TOTESYS_DB_URL"], env["LAKE_PROCESSED_URL"])


def test_stack_env_ignores_urls_meant_for_other_systems(stack_env_vars):
    elsewhere = {**stack_env_vars, "TOTESYS_DB_URL": "postgresql://u:p@prod.example/totesys",
                 "DAGSTER_HOME": "/somewhere/else", "DAGSTER_PG_URL": "postgresql+psycopg2://prod.example/dagster",
                 "LAKE_INGESTION_URL": "s3://prod-bucket/ingestion"}
    assert stack_module.stack_env(elsewhere) == stack_module.stack_env(stack_env_vars)


def test_the_children_of_make_run_link_alerts_to_the_ui_on_its_own_port(stack_env_vars):
    from totesys_platform.defs.automation.alerts import AlertsResource
    from totesys_platform.local.launcher import child_environment

    stack = LocalStack.from_env(stack_env_vars)
    env = child_environment({**stack_env_vars, "DAGSTER_UI_URL": "http://127.0.0.1:3000"}, stack, "127.0.0.1", 3107)
    assert env["DAGSTER_UI_URL"] == "http://127.0.0.1:3107"
    assert env["TOTESYS_DB_URL"] == stack.env()["TOTESYS_DB_URL"]
    # ...and the alerts read it: a failed run's link points at that UI.
    alerts = AlertsResource.from_env(env)
    assert alerts.run_url("abc") == "http://127.0.0.1:3107/runs/abc"


def test_up_again_and_restart_keep_the_data_and_do_not_reseed(local_stack, stack_env_vars):
    local_stack.up(0.01, progress=QUIET)
    totesys = local_stack.url("totesys")
    with psycopg.connect(local_stack.url("warehouse"), autocommit=True) as conn:
        conn.execute("CREATE TABLE marker (note text)")
        conn.execute("INSERT INTO marker VALUES ('kept')")
    with psycopg.connect(totesys, autocommit=True) as conn:
        conn.execute("UPDATE staff SET first_name = 'Edited' WHERE staff_id = 1")
    lines: list[str] = []
    stack_module.up(0.01, progress=lines.append, env=stack_env_vars)  # already up: nothing to do
    assert not any("seeding" in line for line in lines)

    stack_module.down(progress=lines.append, env=stack_env_vars)
    assert not local_stack.status().running
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(totesys, connect_timeout=2)

    lines.clear()
    status = stack_module.up(0.01, progress=lines.append, env=stack_env_vars)
    assert status.running and any("starting PostgreSQL" in line for line in lines)
    assert not any("seeding" in line for line in lines)
    assert status.totesys_rows["sales_order"] == 112
    with psycopg.connect(totesys) as conn:
        assert conn.execute("SELECT first_name FROM staff WHERE staff_id = 1").fetchone()[0] == "Edited"
    with psycopg.connect(local_stack.url("warehouse")) as conn:
        assert conn.execute("SELECT note FROM marker").fetchall() == [("kept",)]


def test_up_recreates_a_dropped_database_and_seeds_an_emptied_totesys(local_stack):
    local_stack.up(0.01, progress=QUIET)
    local_stack.postgres.drop_database("totesys")
    local_stack.postgres.drop_database("warehouse")
    status = local_stack.up(0.01, progress=QUIET)
    assert status.databases == DATABASES and status.totesys_rows["payment"] == 158


def test_status_reports_the_port_the_server_really_listens_on(local_stack, stack_env_vars):
    """Started with another TOTESYS_LOCAL_PG_PORT, then asked without it: the status still finds the server."""
    local_stack.up(0.01, progress=QUIET)
    other = LocalStack(local_stack.root, free_port())  # the configured port, not the server's
    status = other.status()
    assert status.port == local_stack.port and status.databases == DATABASES
    assert f"127.0.0.1:{local_stack.port}: running" in status.describe() and "none yet" not in status.describe()


def test_up_refuses_a_totesys_database_with_part_of_the_schema(local_stack):
    local_stack.up(0.0, progress=QUIET)
    with psycopg.connect(local_stack.url("totesys"), autocommit=True) as conn:
        conn.execute("DROP TABLE payment")
    with pytest.raises(stack_module.simulator.SimulatorError, match="missing tables: payment"):
        local_stack.up(0.01, progress=QUIET)


def test_status_and_down_of_a_stack_never_started(local_stack):
    status = local_stack.status()
    assert not status.running and status.databases == () and status.totesys_rows == {}
    assert "stopped" in status.describe()
    lines: list[str] = []
    local_stack.down(progress=lines.append)
    assert "is not running" in lines[0]


def test_up_on_a_port_in_use_says_which_variable_to_change(local_stack):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", local_stack.port))
        blocker.listen()
        with pytest.raises(StackError, match=rf"did not start on 127.0.0.1:{local_stack.port}.*TOTESYS_LOCAL_PG_PORT"):
            local_stack.up(0.01, progress=QUIET)


def test_up_with_another_port_while_running_names_the_running_port(local_stack):
    local_stack.up(0.0, progress=QUIET)
    moved = LocalStack(local_stack.root, free_port())
    with pytest.raises(StackError, match=rf"already running on port {local_stack.port}.*stack down"):
        moved.up(0.0, progress=QUIET)


# ------------------------------------------------------------------------------------------------
# dagster.yaml and workspace.yaml
# ------------------------------------------------------------------------------------------------

def test_the_stack_dagster_yaml_is_a_working_postgres_instance(local_stack, monkeypatch):
    import dagster as dg
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    local_stack.up(0.0, progress=QUIET)
    for name, value in local_stack.env().items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.from_config(str(local_stack.dagster_home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert instance.run_coordinator.get_run_queue_config().max_concurrent_runs == 1
        assert not instance.telemetry_enabled and not instance.nux_enabled
        assert instance.run_monitoring_enabled
        home = local_stack.dagster_home
        assert Path(instance.compute_log_manager._base_dir).is_relative_to(home)  # noqa: SLF001
        assert Path(instance._local_artifact_storage.base_dir).is_relative_to(home)  # noqa: SLF001
        # a real run record goes through psycopg2 into the stack's "dagster" database and back
        @dg.op
        def noop():
            pass

        @dg.job
        def probe():
            noop()

        run = instance.create_run_for_job(probe)
        assert instance.get_run_by_id(run.run_id).job_name == "probe"
    with psycopg.connect(local_stack.url("dagster")) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 1


def test_workspace_yaml_loads_the_platform_definitions():
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    (location,) = workspace["load_from"]
    module = location["python_module"]
    assert module == {"module_name": "totesys_platform.definitions", "location_name": "totesys_platform"}


# ------------------------------------------------------------------------------------------------
# The CLI
# ------------------------------------------------------------------------------------------------

COMMANDS = [[], ["stack"], ["stack", "up"], ["stack", "down"], ["stack", "status"], ["seed"], ["simulate"], ["run"],
            ["etl"], ["validate"], ["report"], ["materialize"], ["rebuild"], ["maintain"], ["env"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main([*command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: totesys-platform {' '.join(command)}".rstrip())
    assert len(out.splitlines()) >= 4


def test_help_names_the_options_the_readme_documents(capsys):
    expected = {"seed": ["--scale", "--seed", "--end"], "simulate": ["--orders-per-minute", "--duration"],
                "run": ["--port", "--no-simulator", "--seed-scale"], "stack up": ["--seed-scale"]}
    for command, options in expected.items():
        with pytest.raises(SystemExit):
            cli.main([*command.split(), "--help"])
        out = capsys.readouterr().out
        for option in options:
            assert option in out, (command, option)


def test_the_module_and_the_console_script_both_run():
    by_module = subprocess.run([sys.executable, "-m", "totesys_platform.cli", "--help"], capture_output=True, text=True)
    assert by_module.returncode == 0 and "stack" in by_module.stdout and by_module.stderr == ""
    script = Path(sys.executable).parent / "totesys-platform"
    by_script = subprocess.run([str(script), "stack", "--help"], capture_output=True, text=True)
    assert by_script.returncode == 0 and "up" in by_script.stdout


@pytest.mark.parametrize("argv, message", [
    ([], "required: COMMAND"),
    (["stack"], "required: ACTION"),
    (["launch"], "invalid choice: 'launch'"),
    (["seed", "--scale", "-1"], "must be a number >= 0"),
    (["seed", "--scale", "lots"], "not a number: 'lots'"),
    (["seed", "--end", "2024-13-01"], "not a date in YYYY-MM-DD form"),
    (["simulate", "--interval", "0"], "must be > 0"),
    (["run", "--port", "70000"], "between 1 and 65535"),
])
def test_usage_errors_exit_2_and_say_what_is_wrong(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_a_failure_exits_1_with_one_line_and_no_password(capsys):
    url = f"postgresql://someone:s3cret@127.0.0.1:{free_port()}/totesys"
    assert cli.main(["seed", "--db-url", url, "--scale", "0.01"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) <= 2
    assert err.startswith("totesys-platform: error: cannot connect to totesys database")
    assert "s3cret" not in err and "stack up" in err


def test_cli_seed_then_simulate_write_into_totesys(totesys_url, capsys):
    assert cli.main(["seed", "--db-url", totesys_url, "--scale", "0.01", "--end", "2024-11-15"]) == 0
    assert "seeded 112 sales orders" in capsys.readouterr().out
    assert cli.main(["seed", "--db-url", totesys_url, "--scale", "0.01"]) == 1
    assert "is not empty" in capsys.readouterr().err
    before = _count(totesys_url, "sales_order") + _count(totesys_url, "purchase_order")
    assert cli.main(["simulate", "--db-url", totesys_url, "--duration", "1", "--interval", "0.2",
                     "--orders-per-minute", "600"]) == 0
    assert "simulator stopped" in capsys.readouterr().out
    assert _count(totesys_url, "sales_order") + _count(totesys_url, "purchase_order") > before


def test_cli_stack_up_status_down(local_stack, stack_env_vars, monkeypatch, capsys):
    for name, value in stack_env_vars.items():
        monkeypatch.setenv(name, value)
    try:
        assert cli.main(["stack", "up", "--seed-scale", "0.01"]) == 0
        assert "seeded 112 sales orders" in capsys.readouterr().out
        assert cli.main(["stack", "status"]) == 0
        out = capsys.readouterr().out
        assert "running" in out and "112 sales orders" in out
        assert cli.main(["stack", "down"]) == 0
        assert "stopped" in capsys.readouterr().out
        assert cli.main(["stack", "status"]) == 0
        assert "stopped" in capsys.readouterr().out
    finally:
        local_stack.postgres.stop()


def test_seed_end_defaults_to_today(totesys_url):
    assert cli.main(["seed", "--db-url", totesys_url, "--scale", "0.01"]) == 0
    with psycopg.connect(totesys_url) as conn:
        last = conn.execute("SELECT max(created_at) FROM sales_order").fetchone()[0]
    assert last.date() < date.today() and (date.today() - last.date()).days < 10
