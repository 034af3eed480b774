"""Every environment variable the platform reads, declared and documented once (`VARIABLES`), and read here only.

Modules ask for a value with `setting(name)` (its text, or its default when unset or empty), `is_set`, `flag` or
`positive_number`; a name not declared below is a KeyError, so a variable cannot be read without being
documented. docs/configuration.md is this registry rendered (`render_markdown`; a test keeps them equal).
Defaults point at the local stack. Plain Python, no Dagster.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

DEFAULT_PG_PORT = 54329
LOCAL_SUPERUSER = "postgres"
DEFAULT_UI_URL = "http://127.0.0.1:3000"


@dataclass(frozen=True)
class Variable:
    name: str
    group: str
    meaning: str
    default: str = ""  # what an unset or empty variable means; "" = unset (off)
    shown: str = ""  # the default as documented, when it is computed (the local stack's URLs) or "" means off
    secret: bool = False  # may hold a password: passed to resources as dg.EnvVar, never as a value (test_settings)


_V = Variable
VARIABLES: dict[str, Variable] = {v.name: v for v in (
    _V("TOTESYS_DB_URL", "Where the data is", "the source totesys database (read only); may also be "
       "`aws-secretsmanager:<secret-id>` (the URL, or an RDS-style JSON secret, fetched when connecting)",
       shown="`postgresql://postgres@127.0.0.1:54329/totesys`", secret=True),
    _V("WAREHOUSE_DB_URL", "Where the data is", "the warehouse database; may also be `aws-secretsmanager:<secret-id>`",
       shown="`postgresql://postgres@127.0.0.1:54329/warehouse`", secret=True),
    _V("LAKE_INGESTION_URL", "Where the data is", "ingestion zone: `file:///folder` or `s3://bucket/prefix`",
       shown="`file://<local dir>/lake/ingestion`"),
    _V("LAKE_PROCESSED_URL", "Where the data is", "processed zone: `file:///folder` or `s3://bucket/prefix`",
       shown="`file://<local dir>/lake/processed`"),
    _V("AWS_ENDPOINT_URL", "Where the data is", "an S3- or AWS-compatible endpoint (moto, MinIO, LocalStack) for "
       "the lake, SNS and CloudWatch Logs", shown="AWS itself"),
    _V("LAKE_S3_READ_TIMEOUT_SECONDS", "Where the data is", "bound on one S3 call: a hung endpoint fails it after "
       "about attempts x timeout (connect timeout 5 s)", default="30"),
    _V("LAKE_S3_MAX_ATTEMPTS", "Where the data is", "attempts of one S3 call", default="3"),
    _V("WAREHOUSE_LOCK_TIMEOUT_SECONDS", "Warehouse sessions", "every warehouse session's `lock_timeout`: a load "
       "held up by an analyst's open transaction fails after it, naming the session, and the next run catches up",
       default="60"),
    _V("WAREHOUSE_STATEMENT_TIMEOUT_SECONDS", "Warehouse sessions", "every warehouse session's `statement_timeout`",
       default="1800"),
    _V("DAGSTER_HOME", "Dagster", "the Dagster instance folder", shown="`<local dir>/dagster_home`"),
    _V("DAGSTER_PG_URL", "Dagster", "Dagster's own storage (runs, events, schedules), read by `dagster.yaml`; "
       "`postgresql+psycopg2://`", shown="`postgresql+psycopg2://postgres@127.0.0.1:54329/dagster`", secret=True),
    _V("TOTESYS_AUTOMATION", "Dagster", "`off` (or `0`, `false`, `no`) leaves the schedules and sensors stopped "
       "(a staging copy, say)", default="on"),
    _V("DAGSTER_UI_URL", "Dagster", "the webserver: where run-once commands submit runs, and the base of the links "
       "in alerts", shown="the UI `make run` serves, else `http://127.0.0.1:3000`"),
    _V("ALERT_EMAIL_TO", "Failure alerts", "comma-separated recipients (`ops@example.com, Data Team "
       "<data@example.com>`); turns e-mail on", shown="(e-mail off)"),
    _V("ALERT_EMAIL_FROM", "Failure alerts", "sender", default="totesys-platform@localhost"),
    _V("SMTP_HOST", "Failure alerts", "SMTP server; required when e-mail is on"),
    _V("SMTP_PORT", "Failure alerts", "SMTP port", default="25"),
    _V("SMTP_USERNAME", "Failure alerts", "log in as this user when set", shown="(no login)"),
    _V("SMTP_PASSWORD", "Failure alerts", "the SMTP login's password", secret=True),
    _V("SMTP_STARTTLS", "Failure alerts", "`auto`: STARTTLS whenever the server offers it, and no login (no password "
       "sent) over a connection it could not encrypt; `true`: always STARTTLS (port 587); `false`: never, for a "
       "trusted relay", default="auto"),
    _V("ALERT_SNS_TOPIC_ARN", "Failure alerts", "`arn:aws:sns:<region>:<account>:<topic>`; turns SNS on; the region "
       "is taken from it; FIFO topics work", shown="(SNS off)"),
    _V("CLOUDWATCH_LOG_GROUP", "Log shipping", "CloudWatch Logs group that receives run logs; unset = no shipping",
       shown="(no shipping)"),
    _V("CLOUDWATCH_LOG_STREAM", "Log shipping", "stream in the group", default="totesys-platform"),
    _V("CLOUDWATCH_LOG_LEVEL", "Log shipping", "lowest level shipped; Dagster logs its run and step events "
       "(RUN_START, STEP_SUCCESS...) at DEBUG", default="DEBUG"),
    _V("AWS_REGION", "Log shipping", "region of the log group (or `AWS_DEFAULT_REGION`)", shown="boto3's default"),
    _V("AWS_DEFAULT_REGION", "Log shipping", "read when `AWS_REGION` is unset", shown="boto3's default"),
    _V("TOTESYS_LOCAL_DIR", "Local stack", "where the local stack (`make run`, `make test`) keeps all its state",
       shown="`<project>/.local`"),
    _V("TOTESYS_LOCAL_PG_PORT", "Local stack", "the loopback port of the local PostgreSQL", default=str(DEFAULT_PG_PORT)),
    _V("ARROW_DEFAULT_MEMORY_POOL", "Memory", "pyarrow's memory pool: `jemalloc`, `mimalloc` or `system`; unset, "
       "the platform's processes take `jemalloc` on Linux x86_64 (mimalloc, pyarrow's default, keeps freed memory: "
       "a ~90 MiB higher peak at scale 100) and pyarrow's default elsewhere", shown="`jemalloc` on Linux x86_64"),
)}
FALSE_WORDS = ("off", "0", "false", "no")


def _variable(name: str) -> Variable:
    try:
        return VARIABLES[name]
    except KeyError:
        raise KeyError(f"{name} is not declared in totesys_platform/settings.py VARIABLES") from None


def setting(name: str, env: Mapping[str, str] | None = None, *, strip: bool = True) -> str:
    """The variable's value (stripped unless asked not to: a password keeps its spaces), or its default when it
    is unset or empty."""
    variable = _variable(name)
    env = os.environ if env is None else env
    value = env.get(name) or ""
    return (value.strip() if strip else value) or variable.default


def is_set(name: str, env: Mapping[str, str] | None = None) -> bool:
    """Set to anything but the empty string (a value of spaces is set, and fails where it is used, rather than
    falling back to the local stack unnoticed)."""
    _variable(name)
    env = os.environ if env is None else env
    return bool(env.get(name))


def flag(name: str, env: Mapping[str, str] | None = None) -> bool:
    """An on/off variable: anything but off, 0, false or no is on."""
    return setting(name, env).lower() not in FALSE_WORDS


def positive_number(name: str, env: Mapping[str, str] | None = None, kind: type = float) -> float:
    """A positive number (`kind` int: a whole number); ValueError naming the variable and its default."""
    raw, default = setting(name, env), _variable(name).default
    try:
        value = kind(raw)
    except ValueError:
        value = 0
    if not 0 < value < math.inf:
        noun = "whole number" if kind is int else "number"
        raise ValueError(f"{name} must be a positive {noun}, got {raw!r}; fix or unset it (default {default})")
    return value


def render_markdown() -> str:
    """docs/configuration.md: every variable, by group."""
    lines = ["# Configuration", "",
             "Every environment variable the platform reads, generated from `totesys_platform/settings.py` "
             "(`VARIABLES`, the one place they are declared; `test_settings.py` keeps this page equal to it). "
             "Unset variables fall back to the local stack, so nothing needs setting for `make run` or `make test`. "
             "Variables marked secret may hold a password: they reach Dagster's resources as `EnvVar`s, so their "
             "values are never stored in the run config or shown in the UI.", ""]
    for group in dict.fromkeys(v.group for v in VARIABLES.values()):
        lines += [f"## {group}", "", "| variable | meaning | default |", "|---|---|---|"]
        for v in (v for v in VARIABLES.values() if v.group == group):
            default = v.shown or (f"`{v.default}`" if v.default else "(unset)")
            lines.append(f"| `{v.name}`{' (secret)' if v.secret else ''} | {v.meaning} | {default} |")
        lines.append("")
    return "\n".join(lines)


def project_root() -> Path:
    """The source checkout this package runs from, or the working directory for an installed package."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def local_dir(env: Mapping[str, str] | None = None) -> Path:
    return Path(setting("TOTESYS_LOCAL_DIR", env) or project_root() / ".local").resolve()


def local_pg_port(env: Mapping[str, str] | None = None) -> int:
    return int(positive_number("TOTESYS_LOCAL_PG_PORT", env, int))


def local_db_url(database: str, env: Mapping[str, str] | None = None) -> str:
    return f"postgresql://{LOCAL_SUPERUSER}@127.0.0.1:{local_pg_port(env)}/{database}"


@dataclass(frozen=True)
class Settings:
    """Where the data is: the variables with a computed default (the local stack's), resolved."""

    totesys_db_url: str
    warehouse_db_url: str
    lake_ingestion_url: str
    lake_processed_url: str
    aws_endpoint_url: str | None
    dagster_home: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        base = local_dir(env)
        return cls(
            totesys_db_url=setting("TOTESYS_DB_URL", env) or local_db_url("totesys", env),
            warehouse_db_url=setting("WAREHOUSE_DB_URL", env) or local_db_url("warehouse", env),
            lake_ingestion_url=setting("LAKE_INGESTION_URL", env) or (base / "lake" / "ingestion").as_uri(),
            lake_processed_url=setting("LAKE_PROCESSED_URL", env) or (base / "lake" / "processed").as_uri(),
            aws_endpoint_url=setting("AWS_ENDPOINT_URL", env) or None,
            dagster_home=setting("DAGSTER_HOME", env) or str(base / "dagster_home"),
        )


if __name__ == "__main__":
    print(render_markdown(), end="")
