"""As root, PostgreSQL runs as the system user embedded_postgres: folders that user cannot enter (a clone in
/root, mode 700) must not break `make run` and `make test`, and must never be opened up for it.

Real parts: the wheel's PostgreSQL, really copied below a folder of mode 700, started from the shared copy;
the OS deciding what the user embedded_postgres can enter.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from totesys_platform import cli
from totesys_platform.local import pg_install
from totesys_platform.local.postgres import DataFolderUnreachable, LocalPostgres, free_port, new_temp_root
from totesys_platform.local.stack import LocalStack, StackError

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="only as root does PostgreSQL run as another user (embedded_postgres); "
                              "as a normal user it runs as you and reaches what you reach")


@pytest.fixture
def base() -> Path:
    folder = new_temp_root("totesys-root-")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def locked(base) -> Path:
    """A folder only root may enter, like /root."""
    folder = base / "locked"
    folder.mkdir(mode=0o700)
    folder.chmod(0o700)
    return folder


@pytest.fixture
def wheel_in_locked(locked) -> Path:
    """The wheel's PostgreSQL installation, copied with its layout into site-packages below `locked`."""
    site = locked / "site-packages"
    for place, original in pg_install._layout(pg_install.WHEEL_INSTALL):  # noqa: SLF001
        shutil.copytree(original, site / place, symlinks=True)
    return site / "embedded_postgres" / "pginstall"


def _modes_writable_by_others(folder: Path) -> list[Path]:
    return [path for path in [folder, *folder.rglob("*")]
            if not path.is_symlink() and (path.stat().st_mode & 0o022 or path.stat().st_uid != 0)]


def test_as_root_the_server_runs_from_a_shared_copy_when_its_binaries_sit_below_a_folder_others_cannot_enter(
        base, locked, wheel_in_locked):
    assert not pg_install.usable_by_system_user(wheel_in_locked)  # the fault is real
    cache = base / "cache"

    install = pg_install.postgres_install(wheel_in_locked, cache)

    copy = install.parent.parent
    assert copy.parent == cache and copy.name.startswith("postgres-")
    assert pg_install.usable_by_system_user(install)
    assert _modes_writable_by_others(copy) == []  # root's alone: nobody else can swap a binary in
    server = LocalPostgres(base / "pg" / "data", free_port(), install=install).start()
    try:
        with psycopg.connect(server.url()) as conn:
            assert conn.execute("SHOW server_version").fetchone()[0].startswith("18")
        pid = int((server.pgdata / "postmaster.pid").read_text().split()[0])
        assert os.readlink(f"/proc/{pid}/exe") == str(install / "bin" / "postgres")
        assert os.stat(f"/proc/{pid}").st_uid == pwd.getpwnam(pg_install.SYSTEM_USER).pw_uid
    finally:
        server.stop()
    # made once, reused: a second process (no in-memory cache) finds the same copy and copies nothing
    postgres_file = install / "bin" / "postgres"
    inode = postgres_file.stat().st_ino
    assert pg_install.shared_copy(wheel_in_locked, cache) == install
    assert postgres_file.stat().st_ino == inode
    assert sorted(path.name for path in cache.iterdir()) == [copy.name]  # no temporary folder left
    # nothing of the user's was opened up
    assert locked.stat().st_mode & 0o777 == 0o700


def test_as_root_a_shared_copy_changeable_by_others_or_incomplete_is_replaced(base, wheel_in_locked):
    cache = base / "cache"
    install = pg_install.shared_copy(wheel_in_locked, cache)
    copy = install.parent.parent
    initdb = install / "bin" / "initdb"
    initdb.chmod(0o777)  # another user could have changed it: it must not be run
    assert pg_install.shared_copy(wheel_in_locked, cache) == install
    assert initdb.stat().st_mode & 0o777 == 0o755 and _modes_writable_by_others(copy) == []

    (install / "lib" / "plpgsql.so").unlink()  # e.g. a cleaner removed old files
    assert pg_install.shared_copy(wheel_in_locked, cache) == install
    assert (install / "lib" / "plpgsql.so").is_file()
    assert sorted(path.name for path in cache.iterdir()) == [copy.name]


def test_as_root_a_cache_folder_others_can_write_is_refused_with_one_line(base, wheel_in_locked):
    cache = base / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    with pytest.raises(pg_install.PostgresAccessError) as refused:
        pg_install.shared_copy(wheel_in_locked, cache)
    message = str(refused.value)
    assert len(message.splitlines()) == 1 and str(cache) in message and "mode 777" in message
    assert list(cache.iterdir()) == []


def test_as_root_a_data_folder_below_a_folder_others_cannot_enter_stops_with_one_line_naming_it(
        locked, monkeypatch, capsys):
    server = LocalPostgres(locked / "pg" / "data", free_port())
    with pytest.raises(DataFolderUnreachable) as refused:
        server.start()
    message = str(refused.value)
    assert len(message.splitlines()) == 1
    assert f"cannot enter {locked} (mode 700)" in message and "embedded_postgres" in message

    stack = LocalStack(locked / "local", free_port())
    with pytest.raises(StackError, match=rf"cannot enter {locked} \(mode 700\).*set TOTESYS_LOCAL_DIR"):
        stack.up(0.0, progress=lambda _line: None)

    # the command line (`make run` goes the same way): exit 1, one line naming the folder and the fix
    monkeypatch.setenv("TOTESYS_LOCAL_DIR", str(locked / "local"))
    monkeypatch.setenv("TOTESYS_LOCAL_PG_PORT", str(free_port()))
    assert cli.main(["stack", "up", "--seed-scale", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"cannot enter {locked} (mode 700)" in err and "TOTESYS_LOCAL_DIR=" in err
    assert locked.stat().st_mode & 0o777 == 0o700  # never opened up
    assert not stack.postgres.is_running()


def test_the_session_server_answers(pg_server):
    """The test `make test` runs below: its only need is the session's PostgreSQL."""
    with psycopg.connect(pg_server.url()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_as_root_make_test_with_a_tmpdir_others_cannot_enter_stops_with_one_line(locked):
    env = {**os.environ, "TMPDIR": str(locked)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"{__file__}::test_the_session_server_answers"],
        capture_output=True, text=True, env=env, cwd=Path(__file__).parent.parent, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    lines = [line for line in output.splitlines() if f"cannot enter {locked} (mode 700)" in line]
    assert len(lines) == 1 and "TMPDIR" in lines[0], output
    assert "Traceback" not in output and "PermissionError" not in output
    assert list(locked.iterdir()) == []  # the session cleaned up its folder
