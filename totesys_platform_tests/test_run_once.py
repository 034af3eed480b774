"""Run-once commands and the CLI's failures, without a running platform (the walk in test_make_run runs them
against `make run`): where they look for the UI, what they say when nothing answers, `env`, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from totesys_platform import cli
from totesys_platform.local.postgres import free_port
from totesys_platform.local.stack import LocalStack
from totesys_platform.run_once import (
    COMMAND_JOBS, DEFAULT_UI_URL, DagsterUI, RunOnceError, RunOutcome, _error_line, resolve_ui_url, ui_url_file,
)


def test_the_ui_is_dagster_ui_url_else_the_one_make_run_serves_else_port_3000(tmp_path):
    env = {"TOTESYS_LOCAL_DIR": str(tmp_path)}
    assert resolve_ui_url(env) == DEFAULT_UI_URL
    ui_url_file(tmp_path).write_text("http://127.0.0.1:3007\n")
    assert resolve_ui_url(env) == "http://127.0.0.1:3007"
    assert resolve_ui_url({**env, "DAGSTER_UI_URL": "https://dagster.example.com/"}) == "https://dagster.example.com"


@pytest.mark.parametrize("command", sorted(COMMAND_JOBS))
def test_a_run_once_command_with_no_webserver_says_in_one_line_to_start_make_run(command, tmp_path, monkeypatch,
                                                                                   capsys):
    monkeypatch.setenv("TOTESYS_LOCAL_DIR", str(tmp_path))
    monkeypatch.setenv("DAGSTER_UI_URL", f"http://127.0.0.1:{free_port()}")
    assert cli.main([command]) == 1
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("totesys-platform: error: no Dagster webserver answers at http://127.0.0.1:")
    assert "make run" in err and "DAGSTER_UI_URL" in err
    assert captured.out == ""  # nothing was submitted


def test_a_ui_address_that_is_not_http_is_refused_with_the_form_expected(monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_UI_URL", "127.0.0.1:3000")
    assert cli.main(["etl"]) == 1
    assert "is not an http(s) address like http://127.0.0.1:3000" in capsys.readouterr().err
    with pytest.raises(RunOnceError):
        DagsterUI("ftp://example.com")


def test_a_failed_run_is_summed_up_by_its_first_failed_step():
    outcome = RunOutcome("totesys_etl", "abc", "FAILURE", "http://ui/runs/abc",
                         failures=["warehouse__dim_staff: WarehouseSchemaError: no", "run failed"], failed_steps=3)
    assert outcome.summary() == ("run abc of totesys_etl failed (3 steps failed): "
                                 "warehouse__dim_staff: WarehouseSchemaError: no")
    assert RunOutcome("j", "r", "CANCELED", "u").summary() == "run r of j was canceled"
    assert RunOutcome("j", "r", "SUCCESS", "u").summary() == "run r of j succeeded"
    assert _error_line("totesys_platform.warehouse.schema.WarehouseSchemaError: the tables differ\ntrace") == (
        "WarehouseSchemaError: the tables differ")
    assert _error_line("Error: a sentence. With dots: kept") == "Error: a sentence. With dots: kept"


def test_env_prints_exports_that_point_dagster_at_the_local_stack(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "TOTESYS_LOCAL_DIR": str(tmp_path / "local"), "TOTESYS_LOCAL_PG_PORT": "54999"}
    script = Path(sys.executable).parent / "totesys-platform"
    shown = subprocess.run(["bash", "-e", "-c", f'eval "$({script} env)"; env'], env=env, capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    exported = dict(line.split("=", 1) for line in shown.stdout.splitlines() if "=" in line)
    stack = LocalStack.from_env(env)
    for name, value in stack.env().items():
        assert exported[name] == value, name
    assert exported["DAGSTER_HOME"] == str(tmp_path / "local" / "dagster_home")
    assert exported["DAGSTER_PG_URL"].startswith("postgresql+psycopg2://postgres@127.0.0.1:54999/")
    assert exported["DAGSTER_UI_URL"] == DEFAULT_UI_URL


def test_an_unexpected_failure_is_one_line_and_verbose_shows_the_traceback(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {"PATH": "/usr/bin:/bin", "TOTESYS_LOCAL_DIR": str(blocker / "local"), "TOTESYS_LOCAL_PG_PORT": str(free_port())}
    command = [sys.executable, "-m", "totesys_platform.cli"]
    short = subprocess.run([*command, "stack", "up"], env=env, capture_output=True, text=True, timeout=60)
    assert short.returncode == 1
    lines = short.stderr.strip().splitlines()
    assert len(lines) == 2, short.stderr
    assert lines[0].startswith("totesys-platform: error: NotADirectoryError: ") and str(blocker) in lines[0]
    assert "--verbose" in lines[1]
    verbose = subprocess.run([*command, "--verbose", "stack", "up"], env=env, capture_output=True, text=True, timeout=60)
    assert verbose.returncode == 1 and "Traceback (most recent call last)" in verbose.stderr
