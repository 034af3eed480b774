"""Database URLs kept in AWS Secrets Manager, resolved only at the moment of connecting.

A database setting (TOTESYS_DB_URL, WAREHOUSE_DB_URL) holds either a plain ``postgresql://`` URL or a
reference ``aws-secretsmanager:<secret-id>`` (a name or a full ARN). The secret's value is either the
URL itself or a JSON object ``{"username", "password", "host", "port", "dbname"}`` (the shape RDS
writes; ``port`` defaults to 5432, other keys are ignored).

Only the reference ever lives in Dagster config, run metadata or logs; the resolved URL exists in
memory, for the connection. Plain Python (boto3), no Dagster. Errors name the secret and the setting
and say what to do; they never contain the secret's value.

Resolved values are cached per process for `CACHE_SECONDS`, so a run does not call Secrets Manager
once per asset, and a rotated password is picked up within that time.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import contextmanager
from urllib.parse import quote

SECRET_PREFIX = "aws-secretsmanager:"
CACHE_SECONDS = 300.0
_URL_SCHEMES = ("postgresql://", "postgres://")
_REQUIRED_KEYS = ("username", "password", "host", "dbname")

_cache: dict[tuple[str, str | None], tuple[float, str]] = {}
_cache_lock = threading.Lock()
# botocore logs whole response bodies at DEBUG ("Response body: ... SecretString ..."): while this
# thread fetches a secret, those records are dropped, whatever the logging configuration.
_BOTOCORE_BODY_LOGGERS = ("botocore.parsers", "botocore.endpoint")
_fetching = threading.local()


class _DropWhileFetching(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_fetching, "active", False)


_DROP_FILTER = _DropWhileFetching()
for _name in _BOTOCORE_BODY_LOGGERS:
    logging.getLogger(_name).addFilter(_DROP_FILTER)


@contextmanager
def _quiet_botocore():
    _fetching.active = True
    try:
        yield
    finally:
        _fetching.active = False


class SecretResolutionError(RuntimeError):
    """A secret reference could not be turned into a database URL; says which secret, why, and what to do."""


def is_secret_reference(value: str) -> bool:
    return isinstance(value, str) and value.startswith(SECRET_PREFIX)


def secret_id(reference: str) -> str:
    """The secret name or ARN of ``aws-secretsmanager:<secret-id>``."""
    if not is_secret_reference(reference):
        raise ValueError(f"not a Secrets Manager reference (expected {SECRET_PREFIX}<secret-id>)")
    name = reference[len(SECRET_PREFIX):].strip()
    if not name:
        raise SecretResolutionError(f"{reference!r} names no secret: use {SECRET_PREFIX}<secret name or ARN>")
    return name


def clear_cache() -> None:
    """Forget every resolved value (the next connection asks Secrets Manager again)."""
    with _cache_lock:
        _cache.clear()


def resolve_db_url(value: str, *, setting: str = "the database URL", endpoint_url: str | None = None) -> str:
    """`value` itself if it is a plain URL, else the URL held by the Secrets Manager secret it references.

    `setting` names the variable the value came from (for error messages). The endpoint is
    `endpoint_url`, else botocore's own configuration (AWS_ENDPOINT_URL_SECRETS_MANAGER, AWS_ENDPOINT_URL).
    """
    if not is_secret_reference(value):
        return value
    name = secret_id(value)
    key = (name, endpoint_url)
    now = time.monotonic()
    with _cache_lock:
        cached = _cache.get(key)
        if cached and cached[0] > now:
            return cached[1]
    url = _url_from_secret(_fetch(name, setting, endpoint_url), name, setting)
    with _cache_lock:
        _cache[key] = (now + CACHE_SECONDS, url)
    return url


def _region_of(name: str) -> str | None:
    # arn:aws:secretsmanager:<region>:<account>:secret:<name>
    parts = name.split(":")
    return parts[3] if name.startswith("arn:") and len(parts) > 6 and parts[3] else None


def _fetch(name: str, setting: str, endpoint_url: str | None) -> str:
    import boto3
    from botocore import exceptions as bx
    from botocore.config import Config

    where = f"secret {name!r} ({setting})"
    config = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 3, "mode": "standard"})
    try:
        client = boto3.session.Session().client(
            "secretsmanager", endpoint_url=endpoint_url, region_name=_region_of(name), config=config
        )
        with _quiet_botocore():
            response = client.get_secret_value(SecretId=name)
    except bx.NoRegionError:
        raise SecretResolutionError(
            f"cannot read {where} from AWS Secrets Manager: no AWS region configured; set AWS_REGION "
            "(or AWS_DEFAULT_REGION), or reference the secret by its full ARN"
        ) from None
    except bx.NoCredentialsError:
        raise SecretResolutionError(
            f"cannot read {where} from AWS Secrets Manager: no AWS credentials; give this process a role "
            "(or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) allowed secretsmanager:GetSecretValue on it"
        ) from None
    except bx.ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code == "ResourceNotFoundException":
            todo = f"create it, or fix {setting}"
        elif code in ("AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException"):
            todo = "allow this identity secretsmanager:GetSecretValue on it (and kms:Decrypt on its key)"
        elif code in ("InvalidRequestException", "DecryptionFailure"):
            todo = "check that the secret is not scheduled for deletion and its KMS key is usable"
        else:
            todo = "check the secret in AWS Secrets Manager"
        raise SecretResolutionError(f"cannot read {where} from AWS Secrets Manager ({code}): {todo}") from None
    except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError, bx.ConnectionClosedError) as err:
        raise SecretResolutionError(
            f"cannot reach AWS Secrets Manager to read {where} ({type(err).__name__}): check the network and "
            "AWS_ENDPOINT_URL_SECRETS_MANAGER / AWS_ENDPOINT_URL"
        ) from None
    except bx.BotoCoreError as err:
        raise SecretResolutionError(f"cannot read {where} from AWS Secrets Manager ({type(err).__name__})") from None
    text = response.get("SecretString")
    if text is None:
        raise SecretResolutionError(
            f"{where} holds binary data; store the database URL (or its JSON fields) as the secret string"
        )
    return text


def _url_from_secret(text: str, name: str, setting: str) -> str:
    value = text.strip()
    if value.startswith(_URL_SCHEMES):
        return value
    shape = "a postgresql:// URL or a JSON object with username, password, host, port (optional) and dbname"
    try:
        fields = json.loads(value)
    except ValueError:
        # Never quote the value: it may be a password.
        raise SecretResolutionError(
            f"secret {name!r} ({setting}) holds neither a postgresql:// URL nor a JSON object; store {shape}"
        ) from None
    if not isinstance(fields, dict):
        raise SecretResolutionError(f"secret {name!r} ({setting}) holds JSON that is not an object; store {shape}")
    missing = [k for k in _REQUIRED_KEYS if not isinstance(fields.get(k), str) or not fields.get(k)]
    if missing:
        raise SecretResolutionError(
            f"secret {name!r} ({setting}) lacks {', '.join(missing)} (or they are not strings); store {shape}"
        )
    port = fields.get("port", 5432)
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise SecretResolutionError(f"secret {name!r} ({setting}): port is not a number") from None
    host = fields["host"]
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    return (
        f"postgresql://{quote(fields['username'], safe='')}:{quote(fields['password'], safe='')}"
        f"@{host}:{port}/{quote(fields['dbname'], safe='')}"
    )


__all__ = [
    "CACHE_SECONDS", "SECRET_PREFIX", "SecretResolutionError", "clear_cache", "is_secret_reference",
    "resolve_db_url", "secret_id",
]
