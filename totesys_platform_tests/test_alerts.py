"""Failure alerts delivered for real: an aiosmtpd SMTP server on loopback and SNS -> SQS on moto server mode."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import json
import ssl
import uuid

import boto3
import dagster as dg
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from totesys_platform.automation.alert_channels import publish_sns, send_email
from totesys_platform.automation.alert_messages import (
    Alert,
    AlertConfigError,
    AlertDeliveryError,
    build_alert,
    format_email,
    format_sns,
)
from totesys_platform.defs.automation.alerts import ALERT_SENSORS, AlertsResource, alert_on_run_failure
from totesys_platform.local.postgres import free_port

# The login fixture allows AUTH without TLS on loopback on purpose; aiosmtpd warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

REGION = "eu-west-2"
SMTP_USER = "alerts"
SMTP_PASSWORD = "smtp-Pa55word-xyz"
DB_PASSWORD = "db-Pa55word-leak"
UI = "http://dagster.example.com:3000"


# ---------------------------------------------------------------------------------------------
# Fixtures: a real SMTP server and a real SNS topic with an SQS subscriber
# ---------------------------------------------------------------------------------------------


class Inbox:
    """aiosmtpd handler keeping every delivered message, parsed."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], email.message.EmailMessage]] = []

    async def handle_DATA(self, server, session, envelope):
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 Message accepted for delivery"


class SmtpServer:
    def __init__(self, **server_kwargs) -> None:
        self.inbox = Inbox()
        self.port = free_port()
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **server_kwargs)

    @property
    def messages(self):
        return self.inbox.messages


def _check_login(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = auth_data.login == SMTP_USER.encode() and auth_data.password == SMTP_PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_server():
    server = SmtpServer()
    server.controller.start()
    yield server
    server.controller.stop()


@pytest.fixture
def smtp_server_with_login():
    server = SmtpServer(authenticator=_check_login, auth_require_tls=False, auth_required=True)
    server.controller.start()
    yield server
    server.controller.stop()


@pytest.fixture
def tls_certificate(tmp_path):
    """A self-signed certificate for 127.0.0.1: (server SSLContext, client SSLContext trusting it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_path, key_path)
    return server_context, ssl.create_default_context(cafile=str(cert_path))


class SnsInbox:
    """An SNS topic whose messages land in an SQS queue we can read."""

    def __init__(self, endpoint: str) -> None:
        self.sns = boto3.client("sns", endpoint_url=endpoint, region_name=REGION)
        self.sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=REGION)
        suffix = uuid.uuid4().hex[:8]
        self.topic_arn = self.sns.create_topic(Name=f"alerts-{suffix}")["TopicArn"]
        self.queue_url = self.sqs.create_queue(QueueName=f"alerts-{suffix}")["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self.sns.subscribe(TopicArn=self.topic_arn, Protocol="sqs", Endpoint=queue_arn)

    def receive(self) -> list[dict]:
        """The SNS envelopes delivered so far (Subject, Message, ...)."""
        response = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        return [json.loads(m["Body"]) for m in response.get("Messages", [])]


@pytest.fixture
def sns_inbox(moto_endpoint) -> SnsInbox:
    return SnsInbox(moto_endpoint)


def sample_alert(**overrides) -> Alert:
    values = dict(
        run_id="3f0c1f7e-1111-2222-3333-444455556666",
        job_name="daily_warehouse_job",
        title="daily_warehouse_job: run failed in load_fact_sales_order",
        failed_steps=["load_fact_sales_order"],
        error="load_fact_sales_order: ValueError: fact_sales_order has no column 'units_sold'",
        run_url=f"{UI}/runs/3f0c1f7e-1111-2222-3333-444455556666",
    )
    values.update(overrides)
    return Alert(**values)


def text_of(received: email.message.EmailMessage) -> str:
    """The body as sent, with SMTP's CRLF line ends back to newlines."""
    return received.get_content().replace("\r\n", "\n")


def smtp_resource(server: SmtpServer, **overrides) -> AlertsResource:
    values = dict(
        email_to="ops@example.com, Data Team <data@example.com>",
        email_from="pipeline@example.com",
        smtp_host="127.0.0.1",
        smtp_port=str(server.port),
        ui_url=UI,
    )
    values.update(overrides)
    return AlertsResource(**values)


# ---------------------------------------------------------------------------------------------
# Building and formatting
# ---------------------------------------------------------------------------------------------


def test_build_alert_summarises_each_failed_step_links_the_run_and_redacts_secrets():
    alert = build_alert(
        run_id="run-1",
        job_name="etl",
        step_errors=[
            ("extract", "OperationalError: cannot reach db", f"trace postgresql://app:{DB_PASSWORD}@db/totesys"),
            ("load", "ValueError: bad row", f"trace password={DB_PASSWORD} host=db"),
        ],
        ui_url="http://ui:3000/",
        secrets=[DB_PASSWORD],
    )
    assert alert.failed_steps == ["extract", "load"]
    assert alert.error.splitlines()[:2] == ["extract: OperationalError: cannot reach db", "load: ValueError: bad row"]
    assert "--- step load ---" in alert.error
    assert alert.run_url == "http://ui:3000/runs/run-1"
    assert alert.title == "etl: run failed in extract, load"
    assert DB_PASSWORD not in alert.error
    assert "postgresql://app:***@db/totesys" in alert.error


def test_build_alert_for_a_run_that_failed_outside_its_steps_uses_the_run_error():
    alert = build_alert(run_id="r", job_name="etl", step_errors=[], run_error="Run worker crashed\nstack...")
    assert alert.failed_steps == []
    assert alert.error.startswith("Run worker crashed")
    assert alert.title == "etl: run failed"


def test_format_email_addresses_every_recipient_and_names_run_job_step_error_and_link():
    msg = format_email(sample_alert(), "pipeline@example.com", "ops@example.com, Data Team <data@example.com>")
    assert msg["Subject"] == "[totesys-platform] daily_warehouse_job: run failed in load_fact_sales_order"
    assert msg["To"] == "ops@example.com, Data Team <data@example.com>"
    assert msg["X-Dagster-Run-Id"] == "3f0c1f7e-1111-2222-3333-444455556666"
    body = msg.get_content()
    for expected in ("daily_warehouse_job", "3f0c1f7e-1111-2222-3333-444455556666", "  - load_fact_sales_order",
                     "no column 'units_sold'", f"{UI}/runs/3f0c1f7e-1111-2222-3333-444455556666"):
        assert expected in body


def test_format_email_keeps_a_title_with_line_breaks_to_one_header_line():
    msg = format_email(sample_alert(title="job failed\r\nBcc: victim@example.com"), "a@example.com", "b@example.com")
    assert msg["Subject"] == "[totesys-platform] job failed Bcc: victim@example.com"
    assert msg["Bcc"] is None


@pytest.mark.parametrize("recipients", ["", "  ", "not-an-address", "ops@example.com, nobody"])
def test_format_email_rejects_bad_recipients_naming_the_variable(recipients):
    with pytest.raises(AlertConfigError, match="ALERT_EMAIL_TO"):
        format_email(sample_alert(), "pipeline@example.com", recipients)


def test_format_email_rejects_a_sender_that_is_not_an_address():
    with pytest.raises(AlertConfigError, match="ALERT_EMAIL_FROM"):
        format_email(sample_alert(), "pipeline", "ops@example.com")


def test_format_sns_subject_is_one_ascii_line_under_100_chars_and_message_fits_256_kib():
    alert = sample_alert(title="résumé\nfailure " + "x" * 300, error="é" * 300_000)
    subject, message = format_sns(alert)
    assert len(subject) <= 100
    assert subject.isascii() and "\n" not in subject
    assert subject.startswith("[totesys-platform] r?sum? failure xxx") and subject.endswith("...")
    assert len(message.encode("utf-8")) <= 262_144
    assert message.endswith("[truncated]")


def test_format_sns_keeps_a_short_alert_whole():
    subject, message = format_sns(sample_alert())
    assert subject == "[totesys-platform] daily_warehouse_job: run failed in load_fact_sales_order"
    assert "no column 'units_sold'" in message and "Run id: 3f0c1f7e" in message


# ---------------------------------------------------------------------------------------------
# Delivery: SMTP
# ---------------------------------------------------------------------------------------------


def test_send_email_delivers_to_a_real_smtp_server(smtp_server):
    msg = format_email(sample_alert(), "pipeline@example.com", ["ops@example.com", "data@example.com"])
    send_email(msg, host="127.0.0.1", port=smtp_server.port)

    [(mail_from, rcpt_tos, received)] = smtp_server.messages
    assert mail_from == "pipeline@example.com"
    assert rcpt_tos == ["ops@example.com", "data@example.com"]
    assert received["Subject"] == "[totesys-platform] daily_warehouse_job: run failed in load_fact_sales_order"
    body = text_of(received)
    assert "load_fact_sales_order" in body and "no column 'units_sold'" in body
    assert f"{UI}/runs/3f0c1f7e-1111-2222-3333-444455556666" in body


def test_send_email_logs_in_without_encryption_only_when_told_to(smtp_server_with_login):
    msg = format_email(sample_alert(), "pipeline@example.com", "ops@example.com")
    # By default a password never crosses an unencrypted connection: this server offers no STARTTLS.
    with pytest.raises(AlertDeliveryError, match="offers no STARTTLS.*SMTP_STARTTLS=false") as caught:
        send_email(msg, host="127.0.0.1", port=smtp_server_with_login.port, username=SMTP_USER,
                   password=SMTP_PASSWORD)
    assert SMTP_PASSWORD not in str(caught.value) and smtp_server_with_login.messages == []
    # SMTP_STARTTLS=false: a trusted relay, the operator's explicit choice.
    send_email(msg, host="127.0.0.1", port=smtp_server_with_login.port, username=SMTP_USER, password=SMTP_PASSWORD,
               starttls=False)
    assert len(smtp_server_with_login.messages) == 1


def test_send_email_with_a_wrong_password_names_the_setting_and_hides_the_password(smtp_server_with_login):
    msg = format_email(sample_alert(), "pipeline@example.com", "ops@example.com")
    with pytest.raises(AlertDeliveryError, match="SMTP_USERNAME and SMTP_PASSWORD") as caught:
        send_email(msg, host="127.0.0.1", port=smtp_server_with_login.port, username=SMTP_USER, password="wrong-pw-123",
                   starttls=False)
    assert "wrong-pw-123" not in str(caught.value)
    assert smtp_server_with_login.messages == []


def test_send_email_upgrades_with_starttls_before_logging_in(tls_certificate):
    server_context, client_context = tls_certificate
    server = SmtpServer(tls_context=server_context, require_starttls=True, authenticator=_check_login)
    server.controller.start()
    try:
        msg = format_email(sample_alert(), "pipeline@example.com", "ops@example.com")
        send_email(
            msg, host="127.0.0.1", port=server.port, username=SMTP_USER, password=SMTP_PASSWORD,
            starttls=True, ssl_context=client_context,
        )
        assert len(server.messages) == 1
        # By default (auto) the offered STARTTLS is used before the login.
        send_email(msg, host="127.0.0.1", port=server.port, username=SMTP_USER, password=SMTP_PASSWORD,
                   ssl_context=client_context)
        assert len(server.messages) == 2
        # Without STARTTLS the server refuses to go on, and the error says which setting to change.
        with pytest.raises(AlertDeliveryError, match="SMTP_STARTTLS"):
            send_email(msg, host="127.0.0.1", port=server.port, username=SMTP_USER, password=SMTP_PASSWORD,
                       starttls=False)
    finally:
        server.controller.stop()


def test_send_email_to_a_closed_port_is_a_one_line_error_naming_host_and_port():
    port = free_port()
    msg = format_email(sample_alert(), "pipeline@example.com", "ops@example.com")
    with pytest.raises(AlertDeliveryError) as caught:
        send_email(msg, host="127.0.0.1", port=port, password=SMTP_PASSWORD, timeout=2)
    text = str(caught.value)
    assert f"127.0.0.1:{port}" in text and "SMTP_HOST" in text and "\n" not in text
    assert SMTP_PASSWORD not in text


# ---------------------------------------------------------------------------------------------
# Delivery: SNS
# ---------------------------------------------------------------------------------------------


def test_publish_sns_delivers_subject_and_message_to_a_subscribed_queue(sns_inbox, moto_endpoint):
    subject, message = format_sns(sample_alert())
    message_id = publish_sns(subject, message, topic_arn=sns_inbox.topic_arn, endpoint_url=moto_endpoint)

    [envelope] = sns_inbox.receive()
    assert envelope["MessageId"] == message_id
    assert envelope["Subject"] == "[totesys-platform] daily_warehouse_job: run failed in load_fact_sales_order"
    assert "no column 'units_sold'" in envelope["Message"]
    assert f"{UI}/runs/3f0c1f7e-1111-2222-3333-444455556666" in envelope["Message"]


def test_publish_sns_rejects_a_malformed_arn_naming_the_variable():
    with pytest.raises(AlertConfigError, match="ALERT_SNS_TOPIC_ARN 'alerts-topic' is not an SNS topic ARN"):
        publish_sns("s", "m", topic_arn="alerts-topic")
    with pytest.raises(AlertConfigError, match="ALERT_SNS_TOPIC_ARN"):
        publish_sns("s", "m", topic_arn="arn:aws:sqs:eu-west-2:123456789012:q", region=REGION)


def test_publish_sns_to_a_missing_topic_is_a_clear_error(moto_endpoint):
    arn = f"arn:aws:sns:{REGION}:123456789012:no-such-topic-{uuid.uuid4().hex[:6]}"
    expected = r"SNS refused the alert for topic .*no-such-topic.*ALERT_SNS_TOPIC_ARN"
    with pytest.raises(AlertDeliveryError, match=expected):
        publish_sns("s", "m", topic_arn=arn, endpoint_url=moto_endpoint)


# ---------------------------------------------------------------------------------------------
# AlertsResource
# ---------------------------------------------------------------------------------------------


def test_from_env_maps_every_variable_and_defaults():
    env = {
        "ALERT_EMAIL_TO": "ops@example.com",
        "SMTP_HOST": "smtp.example.com",
        "SMTP_USERNAME": "u",
        "SMTP_PASSWORD": "p4ssword",
        "SMTP_STARTTLS": "true",
        "ALERT_SNS_TOPIC_ARN": f"arn:aws:sns:{REGION}:123456789012:alerts",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
    }
    resource = AlertsResource.from_env(env)
    assert resource.channels() == ["email", "sns"]
    assert (resource.smtp_port, resource.email_from, resource.ui_url) == (
        "25", "totesys-platform@localhost", "http://127.0.0.1:3000")
    assert (resource.smtp_host, resource.smtp_starttls, resource.aws_endpoint_url) == (
        "smtp.example.com", "true", "http://127.0.0.1:5000")
    assert resource.run_url("abc") == "http://127.0.0.1:3000/runs/abc"
    resource.validate()
    assert AlertsResource.from_env({}).channels() == []


def test_from_env_keeps_the_smtp_password_out_of_the_definitions(monkeypatch):
    monkeypatch.setenv("SMTP_PASSWORD", SMTP_PASSWORD)
    resource = AlertsResource.from_env()
    assert isinstance(resource.smtp_password, dg.EnvVar)
    assert resource.setting("smtp_password") == SMTP_PASSWORD


@pytest.mark.parametrize(
    "overrides, variable",
    [
        ({"smtp_host": ""}, "SMTP_HOST"),
        ({"smtp_port": "twenty-five"}, "SMTP_PORT"),
        ({"smtp_port": "70000"}, "SMTP_PORT"),
        ({"smtp_starttls": "maybe"}, "SMTP_STARTTLS"),
        ({"email_to": "nobody"}, "ALERT_EMAIL_TO"),
        ({"sns_topic_arn": "arn:aws:s3:::bucket"}, "ALERT_SNS_TOPIC_ARN"),
    ],
)
def test_validate_names_the_variable_to_fix(overrides, variable):
    values = {"email_to": "ops@example.com", "smtp_host": "smtp.example.com", **overrides}
    with pytest.raises(AlertConfigError, match=variable):
        AlertsResource(**values).validate()


def test_send_uses_every_configured_channel(smtp_server, sns_inbox, moto_endpoint):
    resource = smtp_resource(smtp_server, sns_topic_arn=sns_inbox.topic_arn, aws_endpoint_url=moto_endpoint)
    assert resource.send(sample_alert()) == ["email", "sns"]
    assert len(smtp_server.messages) == 1
    assert len(sns_inbox.receive()) == 1


def test_send_tries_every_channel_then_raises_naming_the_one_that_failed(sns_inbox, moto_endpoint):
    dead_port = free_port()
    resource = AlertsResource(
        email_to="ops@example.com", smtp_host="127.0.0.1", smtp_port=str(dead_port), smtp_password=SMTP_PASSWORD,
        sns_topic_arn=sns_inbox.topic_arn, aws_endpoint_url=moto_endpoint,
    )
    with pytest.raises(AlertDeliveryError, match=rf"delivered on: sns\): email: .*127.0.0.1:{dead_port}") as caught:
        resource.send(sample_alert())
    assert SMTP_PASSWORD not in str(caught.value)
    assert len(sns_inbox.receive()) == 1  # the healthy channel still delivered


# ---------------------------------------------------------------------------------------------
# The run-failure sensor, end to end: a real failing run, then the sensor, then the inbox
# ---------------------------------------------------------------------------------------------


@dg.op
def extract_orders():
    url = f"postgresql://app:{DB_PASSWORD}@db/totesys"
    raise ValueError(f"table sales_order has no column units_sold (connected to {url})")


@dg.job
def failing_job():
    extract_orders()


@dg.asset(check_specs=[dg.AssetCheckSpec("no_negative_amounts", asset="payments", blocking=True)])
def payments():
    yield dg.Output([10, -5])
    yield dg.AssetCheckResult(check_name="no_negative_amounts", passed=False, description="1 negative amount")


@dg.asset(deps=[payments])
def payments_report():
    return "report"


def evaluate_sensor(result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance, resource: AlertsResource) -> None:
    context = dg.build_run_status_sensor_context(
        sensor_name=alert_on_run_failure.name,
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={"alerts": resource},
    )
    alert_on_run_failure(context)


def test_sensor_emails_the_failed_step_its_error_and_the_run_link(smtp_server):
    instance = dg.DagsterInstance.ephemeral()
    result = failing_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success

    evaluate_sensor(result, instance, smtp_resource(smtp_server))

    [(_, rcpt_tos, received)] = smtp_server.messages
    assert rcpt_tos == ["ops@example.com", "data@example.com"]
    assert received["Subject"] == "[totesys-platform] failing_job: run failed in extract_orders"
    body = text_of(received)
    assert f"Run id: {result.run_id}" in body
    assert "Job:    failing_job" in body
    assert "  - extract_orders" in body
    assert "extract_orders: ValueError: table sales_order has no column units_sold" in body
    assert f"{UI}/runs/{result.run_id}" in body
    assert DB_PASSWORD not in received.as_string()


def test_sensor_publishes_the_alert_to_sns(sns_inbox, moto_endpoint):
    instance = dg.DagsterInstance.ephemeral()
    result = failing_job.execute_in_process(instance=instance, raise_on_error=False)

    evaluate_sensor(result, instance, AlertsResource(sns_topic_arn=sns_inbox.topic_arn, aws_endpoint_url=moto_endpoint))

    [envelope] = sns_inbox.receive()
    assert envelope["Subject"] == "[totesys-platform] failing_job: run failed in extract_orders"
    assert result.run_id in envelope["Message"] and "no column units_sold" in envelope["Message"]
    assert DB_PASSWORD not in envelope["Message"]


def test_a_failed_blocking_check_fails_the_run_so_the_sensor_alerts_naming_the_check(smtp_server):
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([payments, payments_report], instance=instance, raise_on_error=False)
    # Dagster 1.13: the step that yields a failed blocking ERROR check fails, the run fails and
    # downstream assets are skipped -- so the run-failure sensor is enough.
    assert not result.success
    assert result.dagster_run.status == dg.DagsterRunStatus.FAILURE
    assert dg.AssetKey("payments_report") not in {e.asset_key for e in result.get_asset_materialization_events()}

    evaluate_sensor(result, instance, smtp_resource(smtp_server))

    [(_, _, received)] = smtp_server.messages
    assert received["Subject"] == "[totesys-platform] __ephemeral_asset_job__: blocking asset check failed in payments"
    body = text_of(received)
    assert "Failed asset checks:\n  - payments:no_negative_amounts (ERROR): 1 negative amount" in body
    assert (
        "payments: DagsterAssetCheckFailedError: 1 blocking asset check failed with ERROR severity:"
        " payments: no_negative_amounts" in body
    )


@pytest.mark.parametrize(
    "blocking, severity",
    [(False, dg.AssetCheckSeverity.ERROR), (True, dg.AssetCheckSeverity.WARN)],
    ids=["non-blocking-error", "blocking-warn"],
)
def test_a_failed_check_that_does_not_block_leaves_the_run_successful(blocking, severity):
    @dg.asset(check_specs=[dg.AssetCheckSpec("soft", asset="soft_asset", blocking=blocking)])
    def soft_asset():
        yield dg.Output(1)
        yield dg.AssetCheckResult(check_name="soft", passed=False, severity=severity)

    result = dg.materialize([soft_asset], instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    # Documented limit: no run failure, so no alert; the failed check shows in the UI only.
    assert result.success
    assert [(e.passed, e.severity) for e in result.get_asset_check_evaluations()] == [(False, severity)]


def test_sensor_with_no_channel_configured_sends_nothing_and_does_not_fail(smtp_server):
    instance = dg.DagsterInstance.ephemeral()
    result = failing_job.execute_in_process(instance=instance, raise_on_error=False)
    evaluate_sensor(result, instance, AlertsResource())
    assert smtp_server.messages == []


def test_sensor_raises_when_a_configured_channel_fails():
    instance = dg.DagsterInstance.ephemeral()
    result = failing_job.execute_in_process(instance=instance, raise_on_error=False)
    resource = AlertsResource(email_to="ops@example.com", smtp_host="127.0.0.1", smtp_port=str(free_port()))
    with pytest.raises(AlertDeliveryError, match="email: could not send the alert e-mail"):
        evaluate_sensor(result, instance, resource)


def test_alert_sensors_load_in_definitions_running_by_default():
    defs = dg.Definitions(
        jobs=[failing_job], sensors=ALERT_SENSORS, resources={"alerts": AlertsResource.from_env({})}
    )
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("failing_job").name == "failing_job"
    [sensor] = ALERT_SENSORS
    assert sensor.name == "alert_on_run_failure"
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
