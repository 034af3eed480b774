"""Redaction of secrets for logs, errors, metadata and alerts: one place, used everywhere (plain, no Dagster).

`redact_url` shows a connection string (a URL, with the password in its user info or its query, or a libpq
keyword DSN) without its password; `redact_text` removes every secret it can recognise from free text.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, unquote, urlsplit

REDACTED = "***"
# Literal secrets shorter than this are not searched for in text (they would redact ordinary words).
MIN_LITERAL_SECRET_LENGTH = 4

_SECRET_ENV_NAME = re.compile(r"PASSWORD|SECRET|TOKEN", re.IGNORECASE)

# scheme://user:PASSWORD@host -- up to the last '@' of the authority: a raw password may hold '@' or '#'
# (libpq takes them); a raw '/' or '?' would end the authority for libpq too, so it cannot be in one.
_URL_PASSWORD = re.compile(
    r"(?P<prefix>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@]*:)(?P<secret>[^\s/?]+)(?=@[^\s@/?]*(?:[/?\s]|$))")

# password=..., 'password': '...', PGPASSWORD=..., aws_secret_access_key = ..., client_secret: ...
_SECRET_KEY_VALUE = re.compile(
    r"""(?P<key>\b[\w.\-]*(?:password|passwd|secret|session_token|access_token)[\w.\-]*)"""
    r"""(?P<key_quote>['"]?)(?P<sep>\s*[=:]\s*)"""
    # Unquoted: up to whitespace, a quote or a URL's next parameter (&key=); a trailing ',' or '}' of the text
    # around it is redacted too, which is the safe way to be wrong.
    r"""(?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s'"]+?(?=&[\w.\-]+=|[\s'"]|$))""",
    re.IGNORECASE,
)

# An AWS secret access key: exactly 40 base64 characters mixing upper case, lower case and digits
# (the mix keeps 40-character hex digests such as git SHAs out).
_AWS_SECRET_KEY = re.compile(
    r"(?<![A-Za-z0-9/+=])"
    r"(?=[A-Za-z0-9/+]{0,39}[A-Z])(?=[A-Za-z0-9/+]{0,39}[a-z])(?=[A-Za-z0-9/+]{0,39}[0-9])"
    r"[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"
)


# ---------------------------------------------------------------------------------------------
# Redaction (plain)
# ---------------------------------------------------------------------------------------------


def _redact_key_value(match: re.Match[str]) -> str:
    value = match.group("value")
    quote_char = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group('key')}{match.group('key_quote')}{match.group('sep')}{quote_char}{REDACTED}{quote_char}"


def _literal_variants(secrets: Iterable[str]) -> list[str]:
    """Each secret as written and URL-encoded, longest first so a secret containing another wins."""
    variants = set()
    for secret in secrets:
        if secret and len(secret) >= MIN_LITERAL_SECRET_LENGTH:
            variants.add(secret)
            variants.add(quote(secret, safe=""))
    return sorted(variants, key=len, reverse=True)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without passwords in URLs, secret key-values, AWS secret keys and the given literal secrets."""
    for literal in _literal_variants(secrets):
        text = text.replace(literal, REDACTED)
    text = _URL_PASSWORD.sub(lambda m: m.group("prefix") + REDACTED, text)
    text = _SECRET_KEY_VALUE.sub(_redact_key_value, text)
    return _AWS_SECRET_KEY.sub(REDACTED, text)


def secrets_from_env(env: Mapping[str, str] | None = None) -> list[str]:
    """Literal secret values found in the environment.

    The values of variables named *PASSWORD*, *SECRET* or *TOKEN*, and the password of every URL
    held in any variable (database URLs), both as written and percent-decoded.
    """
    env = os.environ if env is None else env
    found: set[str] = set()
    for name, value in env.items():
        if not value:
            continue
        if _SECRET_ENV_NAME.search(name):
            found.add(value)
        if "://" not in value and "password" in value.lower() and "=" in value:
            found.update(_keyword_passwords(value))  # a keyword DSN
        if "://" in value:
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password:
                found.update({password, unquote(password)})
    return sorted(s for s in found if len(s) >= MIN_LITERAL_SECRET_LENGTH)


# A libpq keyword DSN's password: quoted, or everything up to the next space (it may hold '&', ',', '=').
_KEYWORD_PASSWORD = re.compile(r"(?P<key>\bpassword\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def _keyword_passwords(dsn: str) -> list[str]:
    values = [m.group("value") for m in _KEYWORD_PASSWORD.finditer(dsn)]
    return [v[1:-1].replace("\\'", "'").replace("\\\\", "\\") if v.startswith("'") else v for v in values]


def dsn_secrets(dsn: str) -> list[str]:
    """The password of a connection string (URL or keyword DSN), as written and percent-decoded: the literal
    secrets to remove from a driver's message about it."""
    found = set(_keyword_passwords(dsn)) if "://" not in dsn else set()
    if "://" in dsn:
        rest = dsn.split("://", 1)[1]
        end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        userinfo = rest[:rest.rfind("@", 0, end)] if "@" in rest[:end] else ""
        if ":" in userinfo:
            found.add(userinfo.split(":", 1)[1])
        found.update(m.group("value").strip("'\"") for m in _SECRET_KEY_VALUE.finditer(rest))
    return sorted({v for s in found if s for v in (s, unquote(s))}, key=len, reverse=True)


def redact_url(dsn: str) -> str:
    """A connection string without its password: `scheme://user:***@host/db?password=***`, or a keyword DSN's
    `password=***`. The user info ends at the authority's last '@', so a raw '@' or '#' in a password is covered."""
    text = str(dsn)
    if "://" in text:
        scheme, rest = text.split("://", 1)
        end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        at = rest.rfind("@", 0, end)
        if at >= 0 and ":" in rest[:at]:
            rest = f"{rest[:at].split(':', 1)[0]}:{REDACTED}{rest[at:]}"
        return _SECRET_KEY_VALUE.sub(_redact_key_value, f"{scheme}://{rest}")
    return _KEYWORD_PASSWORD.sub(lambda m: m.group("key") + ("'***'" if m.group("value").startswith("'") else REDACTED),
                                 text)


__all__ = ["MIN_LITERAL_SECRET_LENGTH", "REDACTED", "dsn_secrets", "redact_text", "redact_url", "secrets_from_env"]
