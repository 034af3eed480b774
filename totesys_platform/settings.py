"""One typed settings object, read from environment variables; defaults point at the local stack.

| variable | meaning | default (local stack) |
|---|---|---|
| TOTESYS_DB_URL | source totesys database (read-only use) | postgresql://postgres@127.0.0.1:54329/totesys |
| WAREHOUSE_DB_URL | warehouse database | postgresql://postgres@127.0.0.1:54329/warehouse |
| LAKE_INGESTION_URL | ingestion zone: file:///folder or s3://bucket/prefix | file://<local dir>/lake/ingestion |
| LAKE_PROCESSED_URL | processed zone: file:///folder or s3://bucket/prefix | file://<local dir>/lake/processed |
| AWS_ENDPOINT_URL | optional S3-compatible endpoint | (AWS) |
| LAKE_S3_READ_TIMEOUT_SECONDS, LAKE_S3_MAX_ATTEMPTS | bound on one S3 call (resources.LakeResource) | 30, 3 |
| WAREHOUSE_LOCK_TIMEOUT_SECONDS, WAREHOUSE_STATEMENT_TIMEOUT_SECONDS | every warehouse session's lock_timeout and statement_timeout (warehouse/sessions.py) | 60, 1800 |
| DAGSTER_HOME | Dagster instance folder | <local dir>/dagster_home |
| TOTESYS_LOCAL_DIR | where the local stack keeps all its state | <project>/.local |
| TOTESYS_LOCAL_PG_PORT | loopback port of the embedded PostgreSQL | 54329 |
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


DEFAULT_PG_PORT = 54329
LOCAL_SUPERUSER = "postgres"


def project_root() -> Path:
    """The source checkout this package runs from, or the working directory for an installed package."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def local_dir(env: dict[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("TOTESYS_LOCAL_DIR") or project_root() / ".local").resolve()


def local_pg_port(env: dict[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    return int(env.get("TOTESYS_LOCAL_PG_PORT") or DEFAULT_PG_PORT)


def local_db_url(database: str, env: dict[str, str] | None = None) -> str:
    return f"postgresql://{LOCAL_SUPERUSER}@127.0.0.1:{local_pg_port(env)}/{database}"


@dataclass(frozen=True)
class Settings:
    totesys_db_url: str
    warehouse_db_url: str
    lake_ingestion_url: str
    lake_processed_url: str
    aws_endpoint_url: str | None
    dagster_home: str

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        base = local_dir(env)
        return cls(
            totesys_db_url=env.get("TOTESYS_DB_URL") or local_db_url("totesys", env),
            warehouse_db_url=env.get("WAREHOUSE_DB_URL") or local_db_url("warehouse", env),
            lake_ingestion_url=env.get("LAKE_INGESTION_URL") or (base / "lake" / "ingestion").as_uri(),
            lake_processed_url=env.get("LAKE_PROCESSED_URL") or (base / "lake" / "processed").as_uri(),
            aws_endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
            dagster_home=env.get("DAGSTER_HOME") or str(base / "dagster_home"),
        )
