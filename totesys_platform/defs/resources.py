"""Dagster resources: thin, configurable handles on the three outside systems (source, lake, warehouse).

Each is a ConfigurableResource. `build_resources()` configures them from environment variables:
a variable that is set is passed as `dg.EnvVar` (so its value, possibly a password, never appears in
the UI or run config); an unset one falls back to the local stack's default, which holds no secret.
A database URL may also be `aws-secretsmanager:<secret-id>`: the secret is read only when connecting
(`connection_url()`), so config and metadata only ever hold the reference (see secrets.py).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import dagster as dg
import psycopg

from totesys_platform.lake.delta import LakeZone
from totesys_platform.lake.store import S3Timeouts
from totesys_platform.secrets import resolve_db_url
from totesys_platform.redaction import redact_url
from totesys_platform import settings

CONNECT_TIMEOUT_S = 10


class TotesysDatabase(dg.ConfigurableResource):
    """The operational totesys database, read-only."""

    db_url: str  # a postgresql:// URL or aws-secretsmanager:<secret-id>

    @property
    def safe_url(self) -> str:
        return redact_url(self.db_url)

    def connection_url(self) -> str:
        """The URL to connect with, a secret reference resolved now. Never log it: log `safe_url`."""
        return resolve_db_url(self.db_url, setting="TOTESYS_DB_URL")


class WarehouseDatabase(dg.ConfigurableResource):
    """The PostgreSQL warehouse holding the star schemas."""

    db_url: str  # a postgresql:// URL or aws-secretsmanager:<secret-id>

    def connection_url(self) -> str:
        """The URL to connect with, a secret reference resolved now. Never log it."""
        return resolve_db_url(self.db_url, setting="WAREHOUSE_DB_URL")

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        from totesys_platform.warehouse.sessions import connect_warehouse

        # A connection failure names the URL without its password (WarehouseConnectionError).
        with connect_warehouse(self.connection_url(), CONNECT_TIMEOUT_S) as conn:
            yield conn


class LakeResource(dg.ConfigurableResource):
    """The data lake's two zones; each URL is a `file://` folder or `s3://bucket/prefix`."""

    ingestion_url: str
    processed_url: str
    aws_endpoint_url: str = ""
    # A hung S3 call fails after about attempts x timeout (plus backoff) instead of holding the run.
    s3_read_timeout_seconds: float = S3Timeouts.read_seconds
    s3_max_attempts: int = S3Timeouts.max_attempts

    def _zone(self, url: str, setting: str) -> LakeZone:
        timeouts = S3Timeouts(read_seconds=self.s3_read_timeout_seconds, max_attempts=self.s3_max_attempts)
        return LakeZone(url, endpoint_url=self.aws_endpoint_url or None, setting=setting, s3_timeouts=timeouts)

    def ingestion(self) -> LakeZone:
        return self._zone(self.ingestion_url, "LAKE_INGESTION_URL")

    def processed(self) -> LakeZone:
        return self._zone(self.processed_url, "LAKE_PROCESSED_URL")


def _env_or(name: str, default: str) -> str | dg.EnvVar:
    return dg.EnvVar(name) if settings.is_set(name) else default


def build_resources() -> dict[str, object]:
    """Resources for the code location, from the environment (settings.py declares the variables)."""
    from totesys_platform.defs.lake_io_manager import LakeIOManager
    from totesys_platform.defs.warehouse.io_manager import WarehouseIOManager

    # The local stack's URLs, for the variables that are unset (those that are set become EnvVars).
    local = ("TOTESYS_LOCAL_DIR", "TOTESYS_LOCAL_PG_PORT")
    defaults = settings.Settings.from_env({name: settings.setting(name) for name in local if settings.is_set(name)})
    warehouse_url = _env_or("WAREHOUSE_DB_URL", defaults.warehouse_db_url)
    lake = LakeResource(
        ingestion_url=_env_or("LAKE_INGESTION_URL", defaults.lake_ingestion_url),
        processed_url=_env_or("LAKE_PROCESSED_URL", defaults.lake_processed_url),
        aws_endpoint_url=_env_or("AWS_ENDPOINT_URL", ""),
        s3_read_timeout_seconds=settings.positive_number("LAKE_S3_READ_TIMEOUT_SECONDS"),
        s3_max_attempts=int(settings.positive_number("LAKE_S3_MAX_ATTEMPTS", kind=int)),
    )
    return {
        "totesys": TotesysDatabase(db_url=_env_or("TOTESYS_DB_URL", defaults.totesys_db_url)),
        "lake": lake,
        "lake_io_manager": LakeIOManager(lake=lake),
        "warehouse": WarehouseDatabase(db_url=warehouse_url),
        "warehouse_io_manager": WarehouseIOManager(db_url=warehouse_url),
    }
