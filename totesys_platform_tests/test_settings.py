"""Every environment variable is declared once (settings.VARIABLES), read only through settings.py, documented by
docs/configuration.md, which is that declaration rendered."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pytest

from totesys_platform import settings
from totesys_platform.defs.automation.alerts import AlertsResource
from totesys_platform.defs.resources import build_resources
from totesys_platform.settings import VARIABLES, flag, positive_number, render_markdown, setting

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "totesys_platform"
# A read of a named variable: os.environ.get("X"), env.get("X"), environ["X"], env["X"] (not an assignment).
DIRECT_READ = re.compile(r"""(?:getenv\(\s*|(?:environ|env|source)(?:\.get\(\s*|\[))["']([A-Z][A-Z0-9_]+)["'](?!\]\s*=[^=])""")


def test_the_configuration_page_is_the_declaration_rendered():
    page = ROOT / "docs" / "configuration.md"
    assert page.read_text() == render_markdown(), (
        "docs/configuration.md differs from settings.VARIABLES: regenerate it with "
        "`.venv/bin/python -m totesys_platform.settings > docs/configuration.md`")


def test_no_module_but_settings_reads_a_variable_by_name():
    reads = [f"{path.relative_to(ROOT)}: {name}" for path in PACKAGE.rglob("*.py") if path.name != "settings.py"
             for name in DIRECT_READ.findall(path.read_text())]
    assert reads == [], "read these through totesys_platform.settings (declared in VARIABLES)"
    # (The pattern does find a direct read.)
    assert DIRECT_READ.findall('x = os.environ.get("SMTP_HOST")') == ["SMTP_HOST"]
    assert DIRECT_READ.findall('env["DAGSTER_HOME"] = home') == []
    assert DIRECT_READ.findall("os.getenv('SMTP_PORT')") == ["SMTP_PORT"]


def test_every_declared_variable_is_used_somewhere():
    """No dead declaration: each name is read by the package (quoted; in settings.py, past the declarations) or by
    a deployment's Dagster instance config."""
    own = (PACKAGE / "settings.py").read_text()
    texts = [p.read_text() for p in PACKAGE.rglob("*.py") if p.name != "settings.py"]
    texts += [own[own.index("FALSE_WORDS"):], *(p.read_text() for p in (ROOT / "deploy").glob("*.yaml"))]
    unused = [name for name in VARIABLES if not any(f'"{name}"' in text or f"env: {name}" in text for text in texts)]
    assert unused == []


def test_a_variable_that_is_not_declared_cannot_be_read():
    with pytest.raises(KeyError, match="NOT_DECLARED is not declared in totesys_platform/settings.py"):
        setting("NOT_DECLARED", {"NOT_DECLARED": "x"})


def test_values_defaults_flags_and_positive_numbers():
    assert setting("SMTP_PORT", {}) == "25" and setting("SMTP_PORT", {"SMTP_PORT": " 587 "}) == "587"
    assert setting("SMTP_PORT", {"SMTP_PORT": ""}) == "25"  # empty means unset
    assert flag("TOTESYS_AUTOMATION", {}) and not flag("TOTESYS_AUTOMATION", {"TOTESYS_AUTOMATION": "Off"})
    assert positive_number("LAKE_S3_MAX_ATTEMPTS", {"LAKE_S3_MAX_ATTEMPTS": "4"}, int) == 4
    with pytest.raises(ValueError, match=r"LAKE_S3_MAX_ATTEMPTS must be a positive whole number, got '0'; "
                                         r"fix or unset it \(default 3\)"):
        positive_number("LAKE_S3_MAX_ATTEMPTS", {"LAKE_S3_MAX_ATTEMPTS": "0"}, int)
    with pytest.raises(ValueError, match="LAKE_S3_READ_TIMEOUT_SECONDS must be a positive number, got 'inf'"):
        positive_number("LAKE_S3_READ_TIMEOUT_SECONDS", {"LAKE_S3_READ_TIMEOUT_SECONDS": "inf"})
    # A value of spaces is set (it fails where it is used), not a silent fall-back to the local stack.
    assert settings.is_set("TOTESYS_DB_URL", {"TOTESYS_DB_URL": " "}) and not settings.is_set("TOTESYS_DB_URL", {})
    assert setting("SMTP_PASSWORD", {"SMTP_PASSWORD": " pa ss "}, strip=False) == " pa ss "


def test_the_plain_defaults_are_the_declared_ones():
    from totesys_platform.automation.alert_messages import DEFAULT_EMAIL_FROM, DEFAULT_SMTP_PORT
    from totesys_platform.lake.store import S3Timeouts
    from totesys_platform.warehouse.sessions import session_timeouts

    assert (S3Timeouts().read_seconds, S3Timeouts().max_attempts) == (
        float(VARIABLES["LAKE_S3_READ_TIMEOUT_SECONDS"].default), int(VARIABLES["LAKE_S3_MAX_ATTEMPTS"].default))
    assert (DEFAULT_EMAIL_FROM, str(DEFAULT_SMTP_PORT)) == (
        VARIABLES["ALERT_EMAIL_FROM"].default, VARIABLES["SMTP_PORT"].default)
    assert session_timeouts({}) == {"WAREHOUSE_LOCK_TIMEOUT_SECONDS": 60.0, "WAREHOUSE_STATEMENT_TIMEOUT_SECONDS": 1800.0}
    assert settings.Settings.from_env({"TOTESYS_LOCAL_PG_PORT": "5999"}).warehouse_db_url.endswith(":5999/warehouse")


# Where each variable marked secret is read: by a resource (as a dg.EnvVar), or by an instance file (as `env:`).
SECRETS_READ_BY_INSTANCE_FILES = {"DAGSTER_PG_URL": ("dagster.yaml", "deploy/dagster.prod.yaml")}
SECRETS_READ_BY_RESOURCES = sorted(v.name for v in VARIABLES.values()
                                   if v.secret and v.name not in SECRETS_READ_BY_INSTANCE_FILES)


def _field_values(resource) -> list:
    """Every configured value of a resource, nested resources included."""
    values = []
    for name in type(resource).model_fields:
        value = getattr(resource, name)
        values += _field_values(value) if isinstance(value, dg.ConfigurableResource) else [value]
    return values


@pytest.mark.parametrize("name", SECRETS_READ_BY_RESOURCES)
def test_a_variable_marked_secret_reaches_the_resources_only_as_an_env_var(monkeypatch, name):
    secret = "s3cr3t-SENTINEL"
    monkeypatch.setenv(name, f"postgresql://loader:{secret}@db.example:5432/db" if name.endswith("_URL") else secret)
    resources = [*build_resources().values(), AlertsResource.from_env()]
    values = [value for resource in resources for value in _field_values(resource)]
    env_vars = [v.env_var_name for v in values if isinstance(v, dg.EnvVar)]  # resolved only in a run
    assert [v for v in values if not isinstance(v, dg.EnvVar) and secret in str(v)] == []
    assert name in env_vars


@pytest.mark.parametrize("name, files", SECRETS_READ_BY_INSTANCE_FILES.items())
def test_a_secret_read_by_the_instance_files_is_an_env_reference_there(name, files):
    assert {v.name for v in VARIABLES.values() if v.secret} >= {name}
    for file in files:
        assert f"env: {name}" in (ROOT / file).read_text(), file
