"""Secret redaction and log shipping to CloudWatch Logs (moto server mode), including real Dagster runs."""

from __future__ import annotations

import io
import logging
import time
import uuid

import boto3
import dagster as dg
import pytest

from totesys_platform.automation.observability import (
    MAX_EVENT_BYTES,
    CloudWatchLogHandler,
    LogEvent,
    RedactingFilter,
    fit_message,
    flush_cloudwatch_handlers,
    plan_batches,
    redact_text,
    secrets_from_env,
)
from totesys_platform.defs.automation.run_logging import configure_run_logging
from totesys_platform.local.postgres import free_port

REGION = "eu-west-2"
URL_PASSWORD = "url-Pa55-secret"
DSN_PASSWORD = "dsn-Pa55-secret"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


# ---------------------------------------------------------------------------------------------
# Redaction
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("postgresql://app:pw1@db:5432/totesys", "postgresql://app:***@db:5432/totesys"),
        ("postgresql+psycopg2://app:s3cr%40t@db/w", "postgresql+psycopg2://app:***@db/w"),
        ("postgresql://app:p@ss@db/w and mail ops@example.com", "postgresql://app:***@db/w and mail ops@example.com"),
        ("see s3://bucket/key and http://host:8080/a@b", "see s3://bucket/key and http://host:8080/a@b"),
        ("host=db user=app password=pw1 dbname=w", "host=db user=app password=*** dbname=w"),
        ("host=db password='p w\\'1' dbname=w", "host=db password='***' dbname=w"),
        ("PGPASSWORD=pw1 psql", "PGPASSWORD=*** psql"),
        ("{'user': 'app', 'password': 'pw1'}", "{'user': 'app', 'password': '***'}"),
        ('{"client_secret": "abc", "n": 1}', '{"client_secret": "***", "n": 1}'),
        ("https://api/x?a=1&password=pw1&b=2", "https://api/x?a=1&password=***&b=2"),
        (f"aws_secret_access_key = {AWS_SECRET}", "aws_secret_access_key = ***"),
        (f"boto failed with key {AWS_SECRET}.", "boto failed with key ***."),
        ("commit 2c0a5a7e8a1f0c3e2f1a2b3c4d5e6f7a8b9c0d1e", "commit 2c0a5a7e8a1f0c3e2f1a2b3c4d5e6f7a8b9c0d1e"),
        ("password authentication failed for user app", "password authentication failed for user app"),
        ("loaded 1,234 rows into fact_sales_order", "loaded 1,234 rows into fact_sales_order"),
    ],
)
def test_redact_text_removes_secrets_and_keeps_everything_else(text, expected):
    assert redact_text(text) == expected


def test_redact_text_removes_literal_secrets_as_written_and_url_encoded():
    secret = "S3cret/With Odd@Chars"
    text = f"pw {secret} in url postgresql://u:S3cret%2FWith%20Odd%40Chars@h/db, short 'abc' kept"
    redacted = redact_text(text, [secret, "abc"])
    assert redacted == "pw *** in url postgresql://u:***@h/db, short 'abc' kept"


def test_secrets_from_env_reads_secret_named_variables_and_url_passwords():
    env = {
        "SMTP_PASSWORD": "smtp-pw-1",
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "GITHUB_TOKEN": "ghp_token_1",
        "WAREHOUSE_DB_URL": "postgresql://app:w%40rehouse@db/warehouse",
        "TOTESYS_DB_URL": "postgresql://app@db/totesys",  # no password: nothing to hide
        "HOME": "/root",
        "DB_PASSWORD": "x",  # too short to redact safely
    }
    assert secrets_from_env(env) == sorted(["smtp-pw-1", AWS_SECRET, "ghp_token_1", "w%40rehouse", "w@rehouse"])


def test_redacting_filter_cleans_message_args_exception_and_stack():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(["literal-secret-1"], include_env=False))
    logger = logging.Logger("redaction-test")
    logger.addHandler(handler)

    logger.warning("connecting to %s as %s", f"postgresql://u:{URL_PASSWORD}@h/db", "literal-secret-1")
    try:
        raise RuntimeError(f"connection failed: host=h password={DSN_PASSWORD}")
    except RuntimeError:
        logger.exception("load failed")
    logger.info("stack here", stack_info=True)
    logger.info("bad format %d", "not-a-number")

    output = stream.getvalue()
    assert "connecting to postgresql://u:***@h/db as ***" in output
    assert "RuntimeError: connection failed: host=h password=***" in output
    assert "bad format %d (unformattable log arguments)" in output
    for secret in (URL_PASSWORD, DSN_PASSWORD, "literal-secret-1"):
        assert secret not in output


def test_redacting_filter_reads_literal_secrets_from_the_environment(monkeypatch):
    monkeypatch.setenv("WAREHOUSE_PASSWORD", "env-secret-9")
    record = logging.makeLogRecord({"msg": "using env-secret-9 now"})
    RedactingFilter().filter(record)
    assert record.getMessage() == "using *** now"


# ---------------------------------------------------------------------------------------------
# Batching limits
# ---------------------------------------------------------------------------------------------


def test_plan_batches_respects_count_size_and_time_span():
    events = [LogEvent(1000 + i, "x" * 74) for i in range(25)]  # 100 bytes each with overhead
    assert [len(b) for b in plan_batches(events, max_events=10)] == [10, 10, 5]
    assert [len(b) for b in plan_batches(events, max_bytes=1000)] == [10, 10, 5]
    assert [len(b) for b in plan_batches(events, max_bytes=250)] == [2] * 12 + [1]
    spread = [LogEvent(0, "a"), LogEvent(10, "b"), LogEvent(11, "c")]
    assert [[e.message for e in b] for b in plan_batches(spread, max_span_ms=10)] == [["a", "b"], ["c"]]
    assert [e for b in plan_batches(events) for e in b] == events


def test_plan_batches_refuses_an_event_larger_than_a_batch():
    with pytest.raises(ValueError, match="exceeds the batch limit"):
        plan_batches([LogEvent(0, "x" * 500)], max_bytes=100)


def test_fit_message_cuts_to_the_event_limit_in_bytes_and_never_returns_empty():
    huge = "é" * MAX_EVENT_BYTES
    fitted = fit_message(huge)
    assert len(fitted.encode("utf-8")) <= MAX_EVENT_BYTES
    assert fitted.endswith("...[truncated]")
    assert fit_message("") == " "
    assert fit_message("short") == "short"


# ---------------------------------------------------------------------------------------------
# CloudWatchLogHandler against moto
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def logs_client(moto_endpoint):
    return boto3.client("logs", endpoint_url=moto_endpoint, region_name=REGION)


@pytest.fixture
def log_group() -> str:
    return f"/totesys/test-{uuid.uuid4().hex[:10]}"


def read_messages(client, group: str, stream: str) -> list[str]:
    messages, token = [], None
    while True:
        kwargs = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
        if token:
            kwargs["nextToken"] = token
        page = client.get_log_events(**kwargs)
        messages += [e["message"] for e in page["events"]]
        if not page["events"] or page.get("nextForwardToken") == token:
            return messages
        token = page["nextForwardToken"]


def wait_for_messages(client, group: str, stream: str, count: int, timeout: float = 10) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            messages = read_messages(client, group, stream)
        except client.exceptions.ResourceNotFoundException:
            messages = []
        if len(messages) >= count or time.monotonic() > deadline:
            return messages
        time.sleep(0.1)


def shipping_logger(handler: logging.Handler, name: str = "shipping-test") -> logging.Logger:
    logger = logging.Logger(name, level=logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger


def test_handler_creates_missing_group_and_stream_and_ships_records_in_order(moto_endpoint, logs_client, log_group):
    handler = CloudWatchLogHandler(
        log_group, "run-stream", region=REGION, endpoint_url=moto_endpoint, flush_interval=60
    )
    logger = shipping_logger(handler)
    for i in range(30):
        logger.info("row batch %d loaded", i)
    handler.close()

    assert read_messages(logs_client, log_group, "run-stream") == [f"INFO row batch {i} loaded" for i in range(30)]
    assert (handler.shipped_events, handler.dropped_events) == (30, 0)


def test_handler_adds_a_missing_stream_to_an_existing_group(moto_endpoint, logs_client, log_group):
    logs_client.create_log_group(logGroupName=log_group)
    handler = CloudWatchLogHandler(log_group, "second", region=REGION, endpoint_url=moto_endpoint)
    shipping_logger(handler).warning("hello")
    handler.close()
    assert read_messages(logs_client, log_group, "second") == ["WARNING hello"]


def test_handler_splits_a_large_backlog_into_batches_within_the_size_limit(moto_endpoint, logs_client, log_group):
    handler = CloudWatchLogHandler(log_group, "big", region=REGION, endpoint_url=moto_endpoint, flush_interval=60)
    logger = shipping_logger(handler)
    for i in range(6):  # ~1.2 MB in all: more than one PutLogEvents call may carry
        logger.info("%d %s", i, chr(ord("a") + i) * 200_000)
    handler.close()

    messages = read_messages(logs_client, log_group, "big")
    assert [m[:7] for m in messages] == [f"INFO {i} " for i in range(6)]
    assert [len(m) for m in messages] == [len("INFO 0 ") + 200_000] * 6


def test_handler_ships_error_records_at_once_and_the_rest_on_its_timer(moto_endpoint, logs_client, log_group):
    handler = CloudWatchLogHandler(log_group, "timed", region=REGION, endpoint_url=moto_endpoint, flush_interval=0.3)
    logger = shipping_logger(handler)
    logger.error("load failed")
    assert read_messages(logs_client, log_group, "timed") == ["ERROR load failed"]  # no waiting: sent in emit

    logger.info("later line")
    assert wait_for_messages(logs_client, log_group, "timed", 2) == ["ERROR load failed", "INFO later line"]
    handler.close()


def test_secrets_never_reach_cloudwatch(moto_endpoint, logs_client, log_group):
    handler = CloudWatchLogHandler(log_group, "redacted", region=REGION, endpoint_url=moto_endpoint)
    logger = shipping_logger(handler)
    logger.info("warehouse at postgresql://loader:%s@db:5432/warehouse", URL_PASSWORD)
    logger.info("source dsn: host=db port=5432 user=reader password=%s dbname=totesys", DSN_PASSWORD)
    handler.close()

    messages = read_messages(logs_client, log_group, "redacted")
    assert messages == [
        "INFO warehouse at postgresql://loader:***@db:5432/warehouse",
        "INFO source dsn: host=db port=5432 user=reader password=*** dbname=totesys",
    ]
    assert not any(URL_PASSWORD in m or DSN_PASSWORD in m for m in messages)


def test_shipping_failures_never_raise_are_counted_and_warned_once(capfd, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    dead_endpoint = f"http://127.0.0.1:{free_port()}"
    handler = CloudWatchLogHandler("/g", "s", region=REGION, endpoint_url=dead_endpoint, flush_interval=60)
    logger = shipping_logger(handler)
    logger.error("first failure")  # flushes at once, against a closed port
    assert handler.dropped_events == 1
    logger.error("second failure")  # CloudWatch is failing: left to the background thread, no wait here
    logger.info("buffered")
    assert handler.dropped_events == 1
    handler.close()

    assert (handler.shipped_events, handler.dropped_events) == (0, 3)
    warnings = [line for line in capfd.readouterr().err.splitlines() if "could not ship logs" in line]
    assert len(warnings) == 1
    assert "CloudWatch Logs group '/g' stream 's'" in warnings[0] and "EndpointConnectionError" in warnings[0]


def test_handler_without_a_group_is_disabled(monkeypatch):
    monkeypatch.delenv("CLOUDWATCH_LOG_GROUP", raising=False)
    handler = CloudWatchLogHandler()
    shipping_logger(handler).error("nowhere to go")
    handler.close()
    assert not handler.enabled
    assert (handler.shipped_events, handler.dropped_events) == (0, 0)


def test_handler_keeps_working_after_close(moto_endpoint, logs_client, log_group):
    # Dagster's yaml logging config re-runs dictConfig, which closes every handler in the process.
    handler = CloudWatchLogHandler(log_group, "reopened", region=REGION, endpoint_url=moto_endpoint, flush_interval=60)
    logger = shipping_logger(handler)
    logger.info("before close")
    handler.close()
    logger.info("after close")
    handler.close()
    assert read_messages(logs_client, log_group, "reopened") == ["INFO before close", "INFO after close"]


# ---------------------------------------------------------------------------------------------
# Dagster: the cloudwatch_logger and instance-wide handler config
# ---------------------------------------------------------------------------------------------


@dg.asset
def tiny_asset(context) -> int:
    context.log.info("tiny asset computed 42 rows")
    context.log.info(f"wrote to postgresql://loader:{URL_PASSWORD}@db/warehouse")
    return 42


def test_configure_run_logging_is_off_without_a_log_group():
    assert configure_run_logging({}).enabled is False
    assert configure_run_logging({}).loggers == {} and configure_run_logging({}).run_config == {}


def test_configure_run_logging_rejects_an_unknown_level():
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        configure_run_logging({"CLOUDWATCH_LOG_GROUP": "g", "CLOUDWATCH_LOG_LEVEL": "loud"})


def test_cloudwatch_logger_ships_a_real_runs_logs_redacted(moto_endpoint, logs_client, log_group, capfd):
    run_logging = configure_run_logging(
        {"CLOUDWATCH_LOG_GROUP": log_group, "AWS_REGION": REGION, "AWS_ENDPOINT_URL": moto_endpoint}
    )
    defs = dg.Definitions(assets=[tiny_asset], loggers=run_logging.loggers)
    job = defs.resolve_implicit_global_asset_job_def()

    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), run_config=run_logging.run_config)
    assert result.success
    flush_cloudwatch_handlers()

    messages = read_messages(logs_client, log_group, "totesys-platform")
    assert len(messages) == len(set(messages)), "Dagster builds the logger twice per run; lines must not double"
    computed = [m for m in messages if "tiny asset computed 42 rows" in m]
    assert len(computed) == 1
    assert computed[0] == f"INFO - __ASSET_JOB - {result.run_id} - tiny_asset - tiny asset computed 42 rows"
    # Dagster's own events arrive too (at DEBUG, the default level), the run's end last.
    assert f"RUN_SUCCESS - Finished execution of run for \"__ASSET_JOB\"" in messages[-1]
    assert any("wrote to postgresql://loader:***@db/warehouse" in m for m in messages)
    assert not any(URL_PASSWORD in m for m in messages)
    console = capfd.readouterr().err
    assert "tiny asset computed 42 rows" in console and URL_PASSWORD not in console


def test_instance_wide_handler_ships_a_materialize_run(moto_endpoint, logs_client, log_group, monkeypatch):
    # The dagster.yaml block of docs/alerts-and-logging.md: destination read from the environment.
    monkeypatch.setenv("CLOUDWATCH_LOG_GROUP", log_group)
    monkeypatch.setenv("CLOUDWATCH_LOG_STREAM", "instance-wide")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    handler_config = {
        "class": "totesys_platform.automation.observability.CloudWatchLogHandler",
        "level": "INFO",
        "flush_interval": 0.2,
    }
    overrides = {"python_logs": {"dagster_handler_config": {"handlers": {"cloudwatch": handler_config}}}}
    with dg.instance_for_test(overrides=overrides) as instance:
        result = dg.materialize([tiny_asset], instance=instance)
    assert result.success

    expected = f"{result.run_id} - tiny_asset - tiny asset computed 42 rows"
    deadline = time.monotonic() + 10
    messages = []
    while not any(expected in m for m in messages) and time.monotonic() < deadline:
        time.sleep(0.1)
        messages = wait_for_messages(logs_client, log_group, "instance-wide", 1)
    assert any(expected in m for m in messages)
    assert any("wrote to postgresql://loader:***@db/warehouse" in m for m in messages)
    assert not any(URL_PASSWORD in m for m in messages)
