"""One way to open a PostgreSQL connection to totesys or the warehouse (plain psycopg, no Dagster).

Every caller gets the same four things: an `aws-secretsmanager:` reference resolved to its URL, a connect
timeout, an `application_name` saying which part of the platform holds the session (so an operator's
`pg_stat_activity` tells extraction, loads, checks and the simulator apart), and, on failure, one line naming
the database without its password and what to check, raised as the caller's own error type.
"""

from __future__ import annotations

import psycopg

from totesys_platform.redaction import dsn_secrets, redact_text, redact_url
from totesys_platform.secrets import resolve_db_url

APPLICATION = "totesys_platform"


class ConnectError(RuntimeError):
    """A database cannot be reached; the message names it (without its password) and what to check."""


def scrub(text: str, url: str) -> str:
    """`text` without `url`'s password, in case the driver echoed connection details."""
    return redact_text(text.replace(url, redact_url(url)), dsn_secrets(url))


def driver_message(err: BaseException, url: str) -> str:
    """The first two lines of a driver error, on one line, without `url`'s password."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return scrub("; ".join(lines[:2]) or type(err).__name__, url)


def connect(
    url: str,
    *,
    purpose: str,
    what: str,
    hint: str,
    setting: str = "the database URL",
    error: type[Exception] = ConnectError,
    connect_timeout: float = 10,
    **options,
) -> psycopg.Connection:
    """A connection to `url` (a URL or a secret reference named by `setting`), for `purpose` (its
    application_name). A failure raises `error`: "cannot connect to <what> <url without password>: <driver's
    reason>. <hint>", without the driver's exception chained (libpq may echo the conninfo)."""
    resolved = resolve_db_url(url, setting=setting)
    try:
        return psycopg.connect(resolved, connect_timeout=max(1, round(connect_timeout)),
                               application_name=f"{APPLICATION} {purpose}", **options)
    except psycopg.Error as err:
        message = f"cannot connect to {what} {redact_url(resolved)}: {driver_message(err, resolved)}. {hint}"
    raise error(message) from None  # (outside the except: no driver exception chained either way)


__all__ = ["ConnectError", "connect", "driver_message", "scrub"]
