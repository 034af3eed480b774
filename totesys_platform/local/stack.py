"""The local stack: everything `make run` needs on one machine, kept under `settings.local_dir()`.

    <local dir>/            (default <project>/.local, env TOTESYS_LOCAL_DIR)
        pg/data             one embedded PostgreSQL on 127.0.0.1:<TOTESYS_LOCAL_PG_PORT, default 54329>
                            with the databases totesys, warehouse and dagster
        lake/ingestion      the ingestion zone (file://)
        lake/processed      the processed zone (file://)
        dagster_home/       DAGSTER_HOME, holding a copy of the project's dagster.yaml
        logs/               logs of the processes `make run` starts

`up()` is idempotent and restart-safe: it starts what is stopped, creates what is missing, and
seeds totesys only while it is empty; data survives `down()` and `up()`. No Dagster import here.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psycopg
from psycopg import sql

from totesys_platform import settings
from totesys_platform.local.postgres import DataFolderUnreachable, LocalPostgres, PostgresStartError
from totesys_platform.local import simulator
from totesys_platform.source.contract import TABLE_NAMES

Progress = Callable[[str], None]

DATABASES = ("totesys", "warehouse", "dagster")


class StackError(RuntimeError):
    """The local stack cannot do what was asked; the message says why and what to do."""


@dataclass(frozen=True)
class StackStatus:
    root: Path
    port: int
    running: bool
    databases: tuple[str, ...]  # those of DATABASES that exist (empty when PostgreSQL is stopped)
    totesys_rows: dict[str, int]  # rows per source table (empty when stopped or not created)

    def describe(self) -> str:
        lines = [f"local stack in {self.root}",
                 f"  PostgreSQL 127.0.0.1:{self.port}: {'running' if self.running else 'stopped'}"]
        if self.running:
            lines.append(f"  databases: {', '.join(self.databases) or 'none yet'}")
        if self.totesys_rows:
            rows = self.totesys_rows
            lines.append(f"  totesys: {rows.get('sales_order', 0):,} sales orders, "
                         f"{rows.get('purchase_order', 0):,} purchase orders, {rows.get('payment', 0):,} payments")
        lines.append(f"  lake: {self.root / 'lake' / 'ingestion'}, {self.root / 'lake' / 'processed'}")
        lines.append(f"  DAGSTER_HOME: {self.root / 'dagster_home'}")
        return "\n".join(lines)


@dataclass(frozen=True)
class LocalStack:
    root: Path
    port: int

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "LocalStack":
        return cls(settings.local_dir(env), settings.local_pg_port(env))

    # -- layout --------------------------------------------------------------------------------
    @property
    def postgres(self) -> LocalPostgres:
        return LocalPostgres(self.root / "pg" / "data", self.port)

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def lake_dirs(self) -> tuple[Path, Path]:
        return self.root / "lake" / "ingestion", self.root / "lake" / "processed"

    def url(self, database: str) -> str:
        return self.postgres.url(database)

    def env(self) -> dict[str, str]:
        """The variables a process needs to use this stack (and only this stack).

        Derived from the stack's folder and port alone, through `settings`, so a TOTESYS_DB_URL or
        DAGSTER_HOME left in the shell for another system cannot send `make run` elsewhere.
        """
        own = {"TOTESYS_LOCAL_DIR": str(self.root), "TOTESYS_LOCAL_PG_PORT": str(self.port)}
        resolved = settings.Settings.from_env(own)
        return {
            **own,
            "TOTESYS_DB_URL": resolved.totesys_db_url,
            "WAREHOUSE_DB_URL": resolved.warehouse_db_url,
            "LAKE_INGESTION_URL": resolved.lake_ingestion_url,
            "LAKE_PROCESSED_URL": resolved.lake_processed_url,
            "DAGSTER_HOME": resolved.dagster_home,
            # dagster-postgres needs psycopg2 named explicitly (see dagster.yaml)
            "DAGSTER_PG_URL": settings.local_db_url("dagster", own).replace("postgresql://", "postgresql+psycopg2://", 1),
        }

    # -- state -----------------------------------------------------------------------------------
    def _running_port(self) -> int | None:
        """The port the server in our data folder listens on, from its postmaster.pid (None if unknown)."""
        try:
            lines = (self.postgres.pgdata / "postmaster.pid").read_text().splitlines()
            return int(lines[3])
        except (OSError, IndexError, ValueError):
            return None

    def status(self) -> StackStatus:
        """What runs in this stack's folder: on the port its server really listens on, which may not be the
        configured one (started with another TOTESYS_LOCAL_PG_PORT)."""
        running = self.postgres.is_running()
        databases: tuple[str, ...] = ()
        rows: dict[str, int] = {}
        port = (self._running_port() if running else None) or self.port
        if running:
            actual = LocalPostgres(self.postgres.pgdata, port)
            with psycopg.connect(actual.url("postgres"), connect_timeout=5) as conn:
                existing = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
            databases = tuple(d for d in DATABASES if d in existing)
            if "totesys" in databases:
                rows = _source_row_counts(actual.url("totesys"))
        return StackStatus(self.root, port, running, databases, rows)

    # -- lifecycle -------------------------------------------------------------------------------
    def up(self, seed_scale: float = 1.0, *, seed: int = 42, progress: Progress = print) -> StackStatus:
        """Start PostgreSQL, create the folders, databases and totesys schema that are missing, seed if empty."""
        for folder in (*self.lake_dirs, self.dagster_home, self.logs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._install_dagster_yaml()
        self._start_postgres(progress)
        for database in DATABASES:
            self.postgres.create_database(database)
        url = self.url("totesys")
        with simulator.connect(url, autocommit=True) as conn:
            simulator.ensure_schema(conn, url)
        if not any(_source_row_counts(url).values()):
            simulator.seed(url, scale=seed_scale, seed=seed, progress=progress)
        status = self.status()
        progress(status.describe())
        return status

    def down(self, *, progress: Progress = print) -> None:
        """Stop PostgreSQL; every file stays, so the next `up()` finds the same data."""
        if not self.postgres.is_running():
            progress(f"PostgreSQL in {self.postgres.pgdata} is not running")
            return
        port = self._running_port() or self.port
        self.postgres.stop()
        progress(f"PostgreSQL on 127.0.0.1:{port} stopped (data kept in {self.root})")

    def _start_postgres(self, progress: Progress) -> None:
        if self.postgres.is_running():
            running_port = self._running_port()
            if running_port not in (None, self.port):
                raise StackError(
                    f"the local PostgreSQL in {self.postgres.pgdata} is already running on port {running_port}, "
                    f"not {self.port}: run `totesys-platform stack down` first, or set TOTESYS_LOCAL_PG_PORT={running_port}."
                )
            return
        progress(f"starting PostgreSQL on 127.0.0.1:{self.port} (data in {self.postgres.pgdata})")
        try:
            self.postgres.start()
        except DataFolderUnreachable as err:
            raise StackError(
                f"{err.problem}: set TOTESYS_LOCAL_DIR to a folder it can enter "
                f"(e.g. TOTESYS_LOCAL_DIR=/var/tmp/totesys-local make run), or run as a normal user."
            ) from None
        except PostgresStartError as err:
            raise StackError(
                f"PostgreSQL did not start on 127.0.0.1:{self.port} (is the port in use?): set "
                f"TOTESYS_LOCAL_PG_PORT to a free port. Server log: {self.postgres.log_file}"
            ) from err

    def _install_dagster_yaml(self) -> None:
        source = settings.project_root() / "dagster.yaml"
        if not source.is_file():
            raise StackError(f"{source} not found: run from the totesys-platform source checkout (make run).")
        target = self.dagster_home / "dagster.yaml"
        if not target.exists() or target.read_bytes() != source.read_bytes():
            shutil.copyfile(source, target)


def _source_row_counts(url: str) -> dict[str, int]:
    """Rows per totesys table, for the tables that exist."""
    counts = {}
    with psycopg.connect(url, connect_timeout=5) as conn:
        existing = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename = ANY(%s)", (list(TABLE_NAMES),))}
        for table in TABLE_NAMES:
            if table in existing:
                query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
                counts[table] = conn.execute(query).fetchone()[0]
    return counts


# The module-level API the CLI and the launcher use; `env` defaults to os.environ.

def up(seed_scale: float = 1.0, *, seed: int = 42, progress: Progress = print,
       env: dict[str, str] | None = None) -> StackStatus:
    return LocalStack.from_env(env).up(seed_scale, seed=seed, progress=progress)


def down(*, progress: Progress = print, env: dict[str, str] | None = None) -> None:
    LocalStack.from_env(env).down(progress=progress)


def status(env: dict[str, str] | None = None) -> StackStatus:
    return LocalStack.from_env(env).status()


def stack_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """TOTESYS_DB_URL, WAREHOUSE_DB_URL, LAKE_*_URL, DAGSTER_HOME, DAGSTER_PG_URL (and the stack's own two)."""
    return LocalStack.from_env(env).env()
