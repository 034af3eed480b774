"""Security: least-privilege database roles, hostile values, secrets from AWS Secrets Manager, no leaked password.

One dedicated PostgreSQL server (password authentication over TCP for every role but the test's own
superuser) carries a full pipeline run as the shipped least-privilege roles (deploy/sql), with the
source URL held in Secrets Manager (moto server mode) and the warehouse URL, password included, in an
environment variable. Several tests then look at that one run from different sides.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
from datetime import date, datetime
from pathlib import Path
from urllib.parse import quote

import boto3
import dagster as dg
import psycopg
import pytest
from dagster._serdes import serialize_value
from psycopg import sql

from totesys_platform import secrets
from totesys_platform.defs.analytics.assets import sales_report
from totesys_platform.defs.automation.checks import ALL_CHECKS
from totesys_platform.defs.ingestion.assets import extract_totesys
from totesys_platform.defs.processed.assets import PROCESSED_ASSETS
from totesys_platform.local.postgres import LocalPostgres, free_port, new_temp_root
from totesys_platform.defs.resources import WarehouseDatabase, build_resources
from totesys_platform.local import simulator
from totesys_platform.source.contract import TABLE_NAMES
from totesys_platform.star_schema import TARGET_TABLES
from totesys_platform.defs.warehouse.assets import WAREHOUSE_ASSETS
from totesys_platform.warehouse.sessions import WarehouseConnectionError

REPO = Path(__file__).resolve().parents[1]
SQL_DIR = REPO / "deploy" / "sql"
# URL-special characters on purpose: the raw and the percent-encoded spellings are both searched for.
PASSWORD = "h9/Sekr1t@p%ss:w0rd"
ENCODED_PASSWORD = quote(PASSWORD, safe="")
ADMIN = "postgres"  # the server's superuser, trusted on loopback; every other role needs its password
SECRET_NAME = "totesys/test/totesys-db-url"
ALL_ASSETS = [extract_totesys, *PROCESSED_ASSETS, *WAREHOUSE_ASSETS, sales_report]

# Hostile text for the source's free-text columns: SQL, CSV and COPY metacharacters, NULL look-alikes,
# unicode (combining marks, emoji, right-to-left override, zero-width joiner) and one very long value.
HOSTILE = {
    ("design", "design_name"): "'; DROP TABLE fact_sales_order; --",
    ("design", "file_location"): 'C:\\"quoted"\\path\\.\n\\.\n',
    ("design", "file_name"): "Robert'); DROP TABLE design;-- .json",
    ("address", "address_line_1"): 'a,"b"\n,c\r\n\td',
    ("address", "address_line_2"): "",  # empty text, not NULL
    ("address", "district"): "NULL",
    ("address", "city"): "\\N",
    ("address", "country"): "Zoë 🚀 \u202egninrael\u202c 漢字 e\u0301 👩\u200d💻",
    ("staff", "first_name"): "O'Brien",
    ("staff", "last_name"): "x" * 1_000_000,
    ("staff", "email_address"): "\"'; SELECT pg_sleep(10); --\"@example.com",
    ("department", "department_name"): "$$; DROP SCHEMA public CASCADE; $$",
    ("counterparty", "counterparty_legal_name"): "Bobby Tables & Sons; DELETE FROM dim_counterparty",
    ("purchase_order", "item_code"): "\\.",
}
# Where each hostile value must arrive: warehouse (table, key column, column) for source row id 1.
ARRIVES_AT = {
    ("design", "design_name"): ("dim_design", "design_id", "design_name"),
    ("design", "file_location"): ("dim_design", "design_id", "file_location"),
    ("design", "file_name"): ("dim_design", "design_id", "file_name"),
    ("address", "address_line_1"): ("dim_location", "location_id", "address_line_1"),
    ("address", "address_line_2"): ("dim_location", "location_id", "address_line_2"),
    ("address", "district"): ("dim_location", "location_id", "district"),
    ("address", "city"): ("dim_location", "location_id", "city"),
    ("address", "country"): ("dim_location", "location_id", "country"),
    ("staff", "first_name"): ("dim_staff", "staff_id", "first_name"),
    ("staff", "last_name"): ("dim_staff", "staff_id", "last_name"),
    ("staff", "email_address"): ("dim_staff", "staff_id", "email_address"),
    ("counterparty", "counterparty_legal_name"): ("dim_counterparty", "counterparty_id", "counterparty_legal_name"),
}
HOSTILE_AT = datetime(2023, 7, 1, 12, 0, 0, 123000)


def role_url(port: int, role: str, database: str, password: str | None = PASSWORD) -> str:
    auth = f"{role}:{quote(password, safe='')}" if password else role
    return f"postgresql://{auth}@127.0.0.1:{port}/{database}"


def start_password_server() -> tuple[LocalPostgres, Path]:
    """A PostgreSQL server of our own whose loopback TCP connections need a password (scram-sha-256),
    except for the superuser, which the test uses to set things up."""
    root = new_temp_root("totesys-security-")
    server = LocalPostgres(root / "data", free_port()).start()
    (server.pgdata / "pg_hba.conf").write_text(
        f"local all all trust\n"
        f"host all {ADMIN} 127.0.0.1/32 trust\n"
        f"host all all 127.0.0.1/32 scram-sha-256\n"
    )
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
        errors = conn.execute("SELECT count(*) FROM pg_hba_file_rules WHERE error IS NOT NULL").fetchone()[0]
        assert errors == 0
    return server, root


def run_sql_script(url: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute((SQL_DIR / name).read_text())


def set_password(url: str, role: str, password: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))


def write_hostile_rows(url: str) -> None:
    """Row 1 of each table gets its hostile values (bound parameters) and a new last_updated."""
    by_table: dict[str, dict[str, str]] = {}
    for (table, column), value in HOSTILE.items():
        by_table.setdefault(table, {})[column] = value
    with psycopg.connect(url) as conn:
        for table, values in by_table.items():
            assignments = sql.SQL(", ").join(
                sql.SQL("{} = %s").format(sql.Identifier(column)) for column in [*values, "last_updated"])
            conn.execute(
                sql.SQL("UPDATE {} SET {} WHERE {} = 1").format(
                    sql.Identifier(table), assignments, sql.Identifier(f"{table}_id")),
                [*values.values(), HOSTILE_AT],
            )
        # Staff 1 works in department 1, so the hostile department name must reach dim_staff.
        conn.execute("UPDATE staff SET department_id = 1 WHERE staff_id = 1")


@contextlib.contextmanager
def captured_output():
    """Everything written to file descriptors 1 and 2, to sys.stdout / sys.stderr and every Python log
    record while the block runs; the text is in the yielded dict's "text" afterwards."""
    sink = tempfile.TemporaryFile(mode="w+b")
    text_sink = io.TextIOWrapper(open(sink.fileno(), "wb", closefd=False), encoding="utf-8", write_through=True)
    handler = logging.StreamHandler(text_sink)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    os.dup2(sink.fileno(), 1)
    os.dup2(sink.fileno(), 2)
    out: dict[str, str] = {}
    try:
        with contextlib.redirect_stdout(text_sink), contextlib.redirect_stderr(text_sink):
            yield out
    finally:
        text_sink.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        root.removeHandler(handler)
        root.setLevel(old_level)
        sink.seek(0)
        out["text"] = sink.read().decode("utf-8", "replace")
        sink.close()


def everything_dagster_recorded(instance: dg.DagsterInstance, run_id: str) -> str:
    """The run's config and tags and every event of it (messages, metadata, errors), serialised."""
    parts = [serialize_value(instance.get_run_by_id(run_id))]
    parts += [serialize_value(entry) for entry in instance.all_logs(run_id)]
    return "\n".join(parts)


def leaks(text: str, urls: list[str]) -> list[str]:
    secrets_to_find = [PASSWORD, ENCODED_PASSWORD, *urls]
    return [s if s in urls else "<the password>" for s in secrets_to_find if s in text]


@pytest.fixture(scope="module")
def secured(moto_endpoint):
    """Seeded totesys and an empty warehouse on a password server, the shipped roles, the source URL in
    Secrets Manager; then one full run (every asset and check) with everything it printed or recorded."""
    server, root = start_password_server()
    port = server.port
    try:
        server.create_database("totesys")
        server.create_database("warehouse")
        admin_totesys, admin_warehouse = server.url("totesys"), server.url("warehouse")
        simulator.seed(admin_totesys, scale=0.01, seed=5, end=date(2023, 6, 30), progress=lambda *a: None)
        write_hostile_rows(admin_totesys)
        run_sql_script(admin_totesys, "totesys_extractor.sql")
        set_password(admin_totesys, "totesys_extractor", PASSWORD)
        run_sql_script(admin_warehouse, "warehouse_loader.sql")
        set_password(admin_warehouse, "warehouse_loader", PASSWORD)

        totesys_url = role_url(port, "totesys_extractor", "totesys")
        warehouse_url = role_url(port, "warehouse_loader", "warehouse")
        sm = boto3.client("secretsmanager", endpoint_url=moto_endpoint, region_name="eu-west-2")
        with contextlib.suppress(sm.exceptions.ResourceNotFoundException):
            sm.delete_secret(SecretId=SECRET_NAME, ForceDeleteWithoutRecovery=True)
        sm.create_secret(Name=SECRET_NAME, SecretString=json.dumps({
            "engine": "postgres", "username": "totesys_extractor", "password": PASSWORD,
            "host": "127.0.0.1", "port": port, "dbname": "totesys"}))
        lake = root / "lake"  # removed with the server's folder
        env = {
            "TOTESYS_DB_URL": f"{secrets.SECRET_PREFIX}{SECRET_NAME}",
            "WAREHOUSE_DB_URL": warehouse_url,
            "LAKE_INGESTION_URL": (lake / "ingestion").as_uri(),
            "LAKE_PROCESSED_URL": (lake / "processed").as_uri(),
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": moto_endpoint,
        }
        with pytest.MonkeyPatch.context() as mp:
            for name, value in env.items():
                mp.setenv(name, value)
            mp.delenv("AWS_ENDPOINT_URL", raising=False)
            secrets.clear_cache()
            instance = dg.DagsterInstance.ephemeral()
            with captured_output() as output:
                result = dg.materialize(
                    [*ALL_ASSETS, *ALL_CHECKS], resources=build_resources(), instance=instance, raise_on_error=False)
                # The same, failing: the warehouse URL (password included) names a database that does not exist.
                mp.setenv("WAREHOUSE_DB_URL", role_url(port, "warehouse_loader", "no_such_warehouse"))
                failed = dg.materialize(
                    [*ALL_ASSETS], resources=build_resources(), instance=instance, raise_on_error=False)
        yield {
            "server": server, "port": port, "result": result, "failed": failed, "instance": instance,
            "output": output["text"], "totesys_url": totesys_url, "warehouse_url": warehouse_url,
            "admin_totesys": admin_totesys, "admin_warehouse": admin_warehouse,
        }
    finally:
        secrets.clear_cache()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def count(url: str, query: sql.Composable | str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchone()[0]


# --------------------------------------------------------------------------------------------------
# Least privilege


def test_the_server_really_demands_the_password(secured):
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(role_url(secured["port"], "totesys_extractor", "totesys", password=None), connect_timeout=5)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(role_url(secured["port"], "warehouse_loader", "warehouse", password="wrong"), connect_timeout=5)


def test_a_full_run_succeeds_as_the_read_only_extractor_and_the_warehouse_loader(secured):
    result = secured["result"]
    failures = [e.message for e in result.all_events if e.is_failure]
    assert result.success, failures
    for evaluation in result.get_asset_check_evaluations():
        assert evaluation.passed, (evaluation.asset_key, evaluation.check_name, evaluation.metadata)
    admin_totesys, admin_warehouse = secured["admin_totesys"], secured["admin_warehouse"]
    assert count(admin_warehouse, "SELECT count(*) FROM fact_sales_order") == count(
        admin_totesys, "SELECT count(*) FROM sales_order") > 0
    assert count(admin_warehouse, "SELECT count(*) FROM fact_payment") == count(admin_totesys, "SELECT count(*) FROM payment")
    with psycopg.connect(admin_warehouse) as conn:
        owners = {row[0] for row in conn.execute(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname IN ('public', 'totesys_meta')")}
    assert owners == {"warehouse_loader"}  # the loader created (and owns) everything it writes


def test_the_extractor_cannot_read_prisma_migrations_nor_write_anything(secured):
    with psycopg.connect(secured["totesys_url"], autocommit=True) as conn:
        for statement in (
            "SELECT * FROM _prisma_migrations",
            "UPDATE sales_order SET units_sold = 1",
            "INSERT INTO currency (currency_code, last_updated) VALUES ('USD', now())",
            "DELETE FROM payment",
            "CREATE TABLE public.scratch (x int)",
        ):
            # Past the role's read-only default: the privileges themselves must refuse.
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute("SET TRANSACTION READ WRITE")
                conn.execute(statement)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("UPDATE sales_order SET units_sold = 1")


def test_the_loader_cannot_touch_another_schema_or_database(secured):
    port = secured["port"]
    with psycopg.connect(secured["admin_warehouse"], autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS finance")
        conn.execute("CREATE TABLE IF NOT EXISTS finance.budget (amount numeric)")
    with psycopg.connect(secured["warehouse_url"], autocommit=True) as conn:
        for statement in ("SELECT * FROM finance.budget", "INSERT INTO finance.budget VALUES (1)",
                          "CREATE TABLE finance.mine (x int)", "DROP SCHEMA finance CASCADE",
                          "CREATE DATABASE stolen", "CREATE ROLE intruder"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    # PUBLIC may connect to any database by default; inside totesys the loader can read and write nothing.
    with psycopg.connect(role_url(port, "warehouse_loader", "totesys"), autocommit=True) as conn:
        for statement in ("SELECT * FROM sales_order", "SELECT * FROM _prisma_migrations",
                          "DELETE FROM sales_order", "CREATE TABLE public.scratch (x int)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


# --------------------------------------------------------------------------------------------------
# Injection: hostile values are data


def test_hostile_source_values_arrive_in_the_warehouse_as_data(secured):
    admin_totesys, admin_warehouse = secured["admin_totesys"], secured["admin_warehouse"]
    with psycopg.connect(admin_warehouse) as conn:
        for (source, column), (table, key, target_column) in ARRIVES_AT.items():
            value = conn.execute(
                sql.SQL("SELECT {} FROM {} WHERE {} = 1").format(
                    sql.Identifier(target_column), sql.Identifier(table), sql.Identifier(key))).fetchone()[0]
            assert value == HOSTILE[(source, column)], (source, column)
        department = conn.execute("SELECT department_name FROM dim_staff WHERE staff_id = 1").fetchone()[0]
        assert department == HOSTILE[("department", "department_name")]
        item_codes = [r[0] for r in conn.execute(
            "SELECT item_code FROM fact_purchase_order WHERE purchase_order_id = 1 "
            "ORDER BY last_updated_date, last_updated_time")]
        assert item_codes[-1] == "\\." and len(item_codes) >= 1
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert set(TARGET_TABLES) <= tables
    with psycopg.connect(admin_totesys) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert set(TABLE_NAMES) | {"_prisma_migrations"} == tables
        assert conn.execute("SELECT count(*) FROM design").fetchone()[0] > 1


# --------------------------------------------------------------------------------------------------
# No secret in logs, events, metadata or config


def test_the_password_and_connection_strings_never_appear_in_output_events_or_metadata(secured):
    instance = secured["instance"]
    urls = [secured["totesys_url"], secured["warehouse_url"],
            role_url(secured["port"], "warehouse_loader", "no_such_warehouse")]
    # The capture works, and Dagster only ever saw the reference, never the URL it stands for.
    assert f"Extracting {len(TABLE_NAMES)} tables from {secrets.SECRET_PREFIX}{SECRET_NAME}" in secured["output"]
    assert leaks(secured["output"], urls) == []
    recorded = {name: everything_dagster_recorded(instance, secured[name].run_id) for name in ("result", "failed")}
    assert "rows_inserted" in recorded["result"]  # materialization metadata is part of what is searched
    assert "WarehouseConnectionError" in recorded["failed"]  # and so are errors with their stack traces
    for text in recorded.values():
        assert leaks(text, urls) == []
    # The failing run did fail, at the warehouse, saying where (without the password).
    failed = secured["failed"]
    assert not failed.success
    messages = "\n".join(serialize_value(e) for e in failed.all_events if e.is_step_failure)
    assert "WarehouseConnectionError" in messages and "no_such_warehouse" in messages
    assert "warehouse_loader:***@" in messages


# --------------------------------------------------------------------------------------------------
# Secrets Manager


@pytest.fixture
def secrets_manager(moto_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_endpoint)
    secrets.clear_cache()
    client = boto3.client("secretsmanager", endpoint_url=moto_endpoint, region_name="eu-west-2")
    created = []

    def make(value: str | bytes) -> str:
        name = f"test/secret-{len(created)}-{os.urandom(4).hex()}"
        kwargs = {"SecretBinary": value} if isinstance(value, bytes) else {"SecretString": value}
        client.create_secret(Name=name, **kwargs)
        created.append(name)
        return name

    make.client = client
    yield make
    secrets.clear_cache()
    for name in created:
        client.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)


def test_a_plain_url_is_used_as_it_is_without_asking_aws(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://127.0.0.1:9")  # nothing listens there
    assert secrets.resolve_db_url("postgresql://u:p@h:5432/db") == "postgresql://u:p@h:5432/db"


def test_a_secret_holding_a_url_resolves_to_it(secrets_manager):
    url = "postgresql://someone:pw@db.internal:5432/totesys"
    name = secrets_manager(url)
    assert secrets.resolve_db_url(f"aws-secretsmanager:{name}") == url


def test_a_json_secret_becomes_a_url_that_connects(secrets_manager, secured):
    name = secrets_manager(json.dumps({
        "username": "warehouse_loader", "password": PASSWORD, "host": "127.0.0.1",
        "port": str(secured["port"]), "dbname": "warehouse", "engine": "postgres"}))
    url = secrets.resolve_db_url(f"aws-secretsmanager:{name}")
    assert url == secured["warehouse_url"]
    with WarehouseDatabase(db_url=f"aws-secretsmanager:{name}").connect() as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "warehouse_loader"


def test_the_port_defaults_to_5432_and_an_arn_names_its_region(secrets_manager):
    name = secrets_manager(json.dumps({"username": "u", "password": "p w", "host": "h", "dbname": "d"}))
    assert secrets.resolve_db_url(f"aws-secretsmanager:{name}") == "postgresql://u:p%20w@h:5432/d"
    arn = secrets_manager.client.describe_secret(SecretId=name)["ARN"]
    assert secrets._region_of(arn) == "eu-west-2"
    secrets.clear_cache()
    assert secrets.resolve_db_url(f"aws-secretsmanager:{arn}") == "postgresql://u:p%20w@h:5432/d"


def test_a_rotated_secret_is_picked_up_after_the_cache_expires(secrets_manager, monkeypatch):
    name = secrets_manager("postgresql://u:old@h/d")
    reference = f"aws-secretsmanager:{name}"
    assert secrets.resolve_db_url(reference) == "postgresql://u:old@h/d"
    secrets_manager.client.put_secret_value(SecretId=name, SecretString="postgresql://u:new@h/d")
    assert secrets.resolve_db_url(reference) == "postgresql://u:old@h/d"  # cached: one call per process
    monkeypatch.setattr(secrets, "CACHE_SECONDS", 0.0)
    secrets.clear_cache()
    assert secrets.resolve_db_url(reference) == "postgresql://u:new@h/d"


@pytest.mark.parametrize("value, expected", [
    ("not a url and not json: hunter2", "holds neither a postgresql:// URL nor a JSON object"),
    ('["hunter2"]', "JSON that is not an object"),
    ('{"username": "u", "password": "hunter2", "host": "h"}', "lacks dbname"),
    ('{"username": "u", "password": "hunter2", "host": "h", "dbname": "d", "port": "x"}', "port is not a number"),
    (b"hunter2", "holds binary data"),
])
def test_a_malformed_secret_is_named_without_quoting_its_value(secrets_manager, value, expected):
    name = secrets_manager(value)
    with pytest.raises(secrets.SecretResolutionError) as caught:
        secrets.resolve_db_url(f"aws-secretsmanager:{name}", setting="WAREHOUSE_DB_URL")
    message = str(caught.value)
    assert expected in message and name in message and "WAREHOUSE_DB_URL" in message
    assert "hunter2" not in message


def test_a_missing_secret_says_which_and_what_to_do(secrets_manager):
    with pytest.raises(secrets.SecretResolutionError, match=r"'test/absent'.*TOTESYS_DB_URL.*ResourceNotFound.*create it"):
        secrets.resolve_db_url("aws-secretsmanager:test/absent", setting="TOTESYS_DB_URL")
    with pytest.raises(secrets.SecretResolutionError, match="names no secret"):
        secrets.resolve_db_url("aws-secretsmanager:  ")


def test_an_unreachable_secrets_manager_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-2")
    secrets.clear_cache()
    with pytest.raises(secrets.SecretResolutionError, match="cannot reach AWS Secrets Manager.*'db/url'"):
        secrets.resolve_db_url("aws-secretsmanager:db/url")


def test_a_warehouse_connection_failure_names_the_url_without_the_password(secured):
    port = secured["port"]
    with pytest.raises(WarehouseConnectionError) as caught:
        with WarehouseDatabase(db_url=role_url(port, "warehouse_loader", "warehouse", password="wrong pw")).connect():
            pass
    message = str(caught.value)
    assert "password authentication failed" in message and f"127.0.0.1:{port}/warehouse" in message
    assert "wrong pw" not in message and "wrong%20pw" not in message


def test_botocore_debug_logging_never_shows_the_secret_value(secrets_manager, caplog):
    name = secrets_manager(json.dumps({"username": "u", "password": "hunter2-secret", "host": "h", "dbname": "d"}))
    with caplog.at_level(logging.DEBUG):
        assert "hunter2-secret" in secrets.resolve_db_url(f"aws-secretsmanager:{name}")
        # Other botocore calls still log their bodies: only the secret's fetch is silenced.
        secrets_manager.client.describe_secret(SecretId=name)
    assert "hunter2-secret" not in caplog.text
    assert "Response body" in caplog.text


def test_the_grants_shown_in_docs_reliability_are_those_the_deploy_scripts_run():
    docs = (REPO / "docs" / "reliability.md").read_text()
    block = docs.split("## Least-privilege roles", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    shipped = {line.strip() for name in ("totesys_extractor.sql", "warehouse_loader.sql")
               for line in (SQL_DIR / name).read_text().splitlines()}
    shown = [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("--")]
    assert len(shown) >= 8
    assert [line for line in shown if line not in shipped] == []


def test_the_seeding_cli_resolves_a_secret_reference_and_names_a_missing_one(secrets_manager, totesys_url, monkeypatch,
                                                                            capsys):
    from totesys_platform import cli

    name = secrets_manager(totesys_url)
    monkeypatch.setenv("TOTESYS_DB_URL", f"aws-secretsmanager:{name}")
    assert cli.main(["seed", "--scale", "0.001"]) == 0
    with psycopg.connect(totesys_url) as conn:
        assert conn.execute("SELECT count(*) FROM currency").fetchone()[0] > 0

    assert cli.main(["seed", "--scale", "0.001", "--db-url", "aws-secretsmanager:no-such-secret"]) == 1
    error = capsys.readouterr().err
    assert "no-such-secret" in error and "--db-url" in error and "Traceback" not in error
