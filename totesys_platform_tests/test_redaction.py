"""No password survives redaction, whatever form the connection string takes (property test, hypothesis).

Forms libpq accepts: a URL with the password in its user info (raw, or percent-encoded), a URL with
`?password=`, and a keyword DSN (`host=h password=...`, quoted when it holds spaces or quotes). Passwords are
drawn from an alphabet of the characters that broke earlier redaction: '@', '#', '/', '?', ':', '&', '=', '%'.
"""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import given, settings, strategies as st

from totesys_platform.redaction import redact_text, redact_url, secrets_from_env

HOSTILE = "abcXYZ0129@#/?:&=%!$^*()[]{}+,;~-._"
passwords = st.text(alphabet=HOSTILE, min_size=6, max_size=24).filter(lambda p: any(c.isalnum() for c in p))


def _forms(password: str) -> list[str]:
    quoted = password.replace("\\", "\\\\").replace("'", "\\'")
    raw = [] if any(c in password for c in "/?") else [  # raw '/' or '?' end the authority: no libpq URL has them
        f"postgresql://totesys:{password}@db.example.com:5432/totesys"]
    return raw + [
        f"postgresql://totesys:{quote(password, safe='')}@db.example.com:5432/totesys",
        f"postgresql://totesys@db.example.com/totesys?sslmode=require&password={quote(password, safe='')}",
        f"postgresql://totesys@db.example.com/totesys?password={quote(password, safe='')}&sslmode=require",
        f"host=db.example.com user=totesys password='{quoted}' dbname=totesys",
    ]


def _leaks(password: str, text: str) -> bool:
    return any(form in text for form in {password, quote(password, safe="")})


@settings(max_examples=300, deadline=None)
@given(passwords)
def test_no_password_survives_redaction_in_any_connection_string_form(password):
    for dsn in _forms(password):
        for shown in (redact_url(dsn), redact_text(dsn), redact_text(f"connect to {dsn} failed: timeout")):
            assert not _leaks(password, shown), (dsn, shown)
        assert "db.example.com" in redact_url(dsn)  # still useful


@settings(max_examples=100, deadline=None)
@given(passwords.filter(lambda p: not any(c in p for c in " '\"\\")))
def test_an_unquoted_keyword_password_is_redacted_too(password):
    dsn = f"host=db.example.com password={password} user=totesys"
    assert not _leaks(password, redact_url(dsn))
    # In free text such a value has no end but a space; the logs also know it from the environment.
    secrets = secrets_from_env({"TOTESYS_DB_URL": dsn})
    assert not _leaks(password, redact_text(f"could not connect with {dsn}: timeout", secrets))


@settings(max_examples=200, deadline=None)
@given(passwords)
def test_a_drivers_message_echoing_the_connection_string_loses_the_password(password):
    """What the extraction and the warehouse connect helper do with a driver's error about a DSN."""
    from totesys_platform.redaction import dsn_secrets

    for dsn in _forms(password):
        message = f'connection to server failed: could not parse "{dsn}" (password "{password}")'
        assert not _leaks(password, redact_text(message, dsn_secrets(dsn))), dsn
