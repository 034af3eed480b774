"""The four ways of moving totesys into PostgreSQL that the benchmark compares, each a command to run.

Each approach owns a fresh target per initial load (`reset`), and gives the command of one run
(`command`): the same command serves the initial load and every later tick, because each keeps its
own state (watermarks in its target, dlt's pipeline state, our lake's Delta commits).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from totesys_platform.local.postgres import LocalPostgres

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DLT_VENV = BENCH_DIR / ".venv-dlt"
DLT_REQUIREMENTS = BENCH_DIR / "requirements-dlt.txt"
VENV_BIN = Path(sys.executable).parent

# The job the 20-minute schedule and the new-data sensor launch: every lake and warehouse asset plus the
# blocking referential checks (the whole-history checks and the report run hourly in validate and refresh_sales_report).
OURS_COMMAND = ["dagster", "job", "execute", "-m", "totesys_platform.definitions", "-j", "totesys_etl"]


def _safe_name(text: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", text.lower())


@dataclass
class Approach:
    """One approach's target at one scale. `name` is the short key used in tables and JSON."""

    name: str
    label: str
    server: LocalPostgres
    source_url: str
    workdir: Path
    tag: str  # the scale's tag, part of database and folder names

    @property
    def db_name(self) -> str:
        return _safe_name(f"{self.name}_{self.tag}")

    @property
    def target_url(self) -> str:
        return self.server.url(self.db_name)

    @property
    def folder(self) -> Path:
        return self.workdir / self.db_name

    def reset(self) -> None:
        """A fresh, empty target: database, and folders for the approaches that keep files."""
        self.server.drop_database(self.db_name)
        self.server.create_database(self.db_name)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)

    def drop(self) -> None:
        self.server.drop_database(self.db_name)
        shutil.rmtree(self.folder, ignore_errors=True)

    def command(self, mode: str) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)


class Floor(Approach):
    def command(self, mode: str) -> list[str]:
        return [sys.executable, str(BENCH_DIR / "floor.py"), "--source", self.source_url,
                "--target", self.target_url, "--mode", mode]


class PandasSeeds(Approach):
    def command(self, mode: str) -> list[str]:
        return [sys.executable, str(BENCH_DIR / "pandas_seed.py"), "--source", self.source_url,
                "--target", self.target_url, "--mode", mode]


class Dlt(Approach):
    def command(self, mode: str) -> list[str]:
        return [str(DLT_VENV / "bin" / "python"), str(BENCH_DIR / "dlt_load.py"), "--source", self.source_url,
                "--target", self.target_url, "--pipelines-dir", str(self.folder / "pipelines")]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["RUNTIME__DLTHUB_TELEMETRY"] = "false"
        env.pop("VIRTUAL_ENV", None)
        return env


class Ours(Approach):
    """The platform, run the way users run it: the Dagster CLI running job `totesys_etl` (what the schedule
    and the sensor launch), in-process executor.

    The instance keeps runs and events in SQLite files in DAGSTER_HOME (`sqlite`, Dagster's default), or
    in a PostgreSQL database on the bench's server (`postgres`, as the local stack's dagster.yaml does).
    """

    dagster_storage = "sqlite"

    @property
    def dagster_home(self) -> Path:
        return self.folder / "dagster_home"

    @property
    def lake(self) -> Path:
        return self.folder / "lake"

    @property
    def dagster_db(self) -> str:
        return _safe_name(f"dagster_{self.tag}")

    def reset(self) -> None:
        super().reset()
        self.dagster_home.mkdir()
        config = "telemetry:\n  enabled: false\n"  # no network here
        if self.dagster_storage == "postgres":
            self.server.drop_database(self.dagster_db)
            self.server.create_database(self.dagster_db)
            # psycopg2 scheme: a bare postgresql:// means psycopg 3 to SQLAlchemy 2.1 (dagster-io/dagster 33958).
            url = self.server.url(self.dagster_db).replace("postgresql://", "postgresql+psycopg2://", 1)
            config += f"storage:\n  postgres:\n    postgres_url: \"{url}\"\n"
        (self.dagster_home / "dagster.yaml").write_text(config)

    def drop(self) -> None:
        super().drop()
        if self.dagster_storage == "postgres":
            self.server.drop_database(self.dagster_db)

    def command(self, mode: str) -> list[str]:
        return [str(VENV_BIN / OURS_COMMAND[0]), *OURS_COMMAND[1:]]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "DAGSTER_HOME": str(self.dagster_home),
            "TOTESYS_DB_URL": self.source_url,
            "WAREHOUSE_DB_URL": self.target_url,
            "LAKE_INGESTION_URL": (self.lake / "ingestion").as_uri(),
            "LAKE_PROCESSED_URL": (self.lake / "processed").as_uri(),
            "TOTESYS_AUTOMATION": "off",
        })
        return env


APPROACHES: dict[str, tuple[type[Approach], str]] = {
    "floor": (Floor, "floor: binary COPY + in-database SQL build"),
    "dlt": (Dlt, "dlt sql_database (pyarrow) -> PostgreSQL, extract+load only"),
    "pandas": (PandasSeeds, "seeds: pandas read_sql + transforms + to_sql"),
    "ours": (Ours, "ours: Dagster CLI, job totesys_etl (lake zones + warehouse + blocking checks)"),
}


def dlt_available() -> bool:
    return (DLT_VENV / "bin" / "python").exists() and subprocess.run(
        [str(DLT_VENV / "bin" / "python"), "-c", "import dlt"], capture_output=True).returncode == 0


def install_dlt(progress) -> str | None:
    """Create bench/.venv-dlt with the pinned dlt set; returns why it failed, or None."""
    if dlt_available():
        return None
    progress(f"installing dlt into {DLT_VENV} (once; from {DLT_REQUIREMENTS.name})")
    steps = [[sys.executable, "-m", "venv", "--clear", str(DLT_VENV)],
             [str(DLT_VENV / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(DLT_REQUIREMENTS)]]
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True)
        if result.returncode != 0:
            lines = [line for line in (result.stderr or result.stdout).splitlines() if "is ignored" not in line]
            return f"`{' '.join(step[-4:])}` failed: {' | '.join(lines[-3:])}"
    return None if dlt_available() else "dlt does not import in bench/.venv-dlt after installing"
