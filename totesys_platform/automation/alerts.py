"""Failure alerts by e-mail (SMTP) and Amazon SNS, and the Dagster sensor that sends them.

Plain parts (no Dagster): `Alert`, `build_alert`, `format_email`, `format_sns`, `send_email`,
`publish_sns`. Dagster wiring: `AlertsResource` (bind it under the resource key "alerts"),
`alert_on_run_failure` and `ALERT_SENSORS`.

Every variable is optional; a channel is active only when configured (e-mail: ALERT_EMAIL_TO;
SNS: ALERT_SNS_TOPIC_ARN). With no channel configured the sensor logs a warning and sends nothing.

| variable | meaning | default |
|---|---|---|
| ALERT_EMAIL_TO | comma-separated recipients, e.g. `ops@example.com, Data Team <data@example.com>` | (e-mail off) |
| ALERT_EMAIL_FROM | sender address | totesys-platform@localhost |
| SMTP_HOST | SMTP server (required when ALERT_EMAIL_TO is set) | |
| SMTP_PORT | SMTP port | 25 |
| SMTP_USERNAME / SMTP_PASSWORD | log in when SMTP_USERNAME is set | (no login) |
| SMTP_STARTTLS | auto: STARTTLS whenever the server offers it, and no login without it; true: always; false: never (a trusted relay) | auto |
| ALERT_SNS_TOPIC_ARN | SNS topic, `arn:aws:sns:<region>:<account>:<name>` (region taken from it) | (SNS off) |
| AWS_ENDPOINT_URL | optional AWS-compatible endpoint (moto, LocalStack) | (AWS) |
| DAGSTER_UI_URL | base of run links, `<ui>/runs/<run_id>` | http://127.0.0.1:3000 |

A run whose BLOCKING asset check fails with ERROR severity fails (Dagster 1.13 raises
DagsterAssetCheckFailedError in the step that yielded the check), so `alert_on_run_failure` covers
failed blocking checks too and names them in the alert; no second sensor is needed.
"""

from __future__ import annotations

import email.policy
import hashlib
import os
import re
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid

import dagster as dg

from totesys_platform.automation.observability import redact_text, secrets_from_env

PRODUCT = "totesys-platform"
DEFAULT_UI_URL = "http://127.0.0.1:3000"
DEFAULT_EMAIL_FROM = "totesys-platform@localhost"
DEFAULT_SMTP_PORT = 25

# SNS: subject under 100 ASCII characters without line breaks; message at most 256 KiB.
SNS_SUBJECT_MAX_CHARS = 99
SNS_MESSAGE_MAX_BYTES = 262_144
# Long enough for a full Dagster error chain, short enough for any mail server.
MAX_ERROR_CHARS = 20_000
TRUNCATED = "\n...[truncated]"
MAX_CAUSE_CHARS = 300
BLOCKING_CHECK_ERROR = "DagsterAssetCheckFailedError"
_MODULE_PATH = re.compile(r"^(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_]\w*:)")

_SNS_TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:(?P<region>[a-z0-9-]+):\d{12}:[A-Za-z0-9_-]{1,256}(?:\.fifo)?$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


class AlertConfigError(ValueError):
    """An alert channel is configured wrongly (names the environment variable to fix)."""


class AlertDeliveryError(RuntimeError):
    """A configured alert channel could not deliver the alert."""


@dataclass
class Alert:
    run_id: str
    job_name: str
    title: str
    failed_steps: list[str]
    error: str
    run_url: str
    failed_checks: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Building and formatting (plain)
# ---------------------------------------------------------------------------------------------


def run_url(ui_url: str, run_id: str) -> str:
    return f"{(ui_url or DEFAULT_UI_URL).rstrip('/')}/runs/{run_id}"


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(TRUNCATED)] + TRUNCATED


def build_alert(
    *,
    run_id: str,
    job_name: str,
    step_errors: Sequence[tuple[str, str, str]],
    failed_checks: Sequence[str] = (),
    run_error: str | None = None,
    ui_url: str = DEFAULT_UI_URL,
    secrets: Sequence[str] = (),
) -> Alert:
    """An alert for a failed run, with every secret redacted.

    `step_errors` holds (step key, one-line root cause, full error text) per failed step;
    `run_error` explains a run that failed outside any step (e.g. its worker crashed).
    """
    summary = [f"{step}: {cause}" for step, cause, _ in step_errors]
    details = [f"--- step {step} ---\n{full.rstrip()}" for step, _, full in step_errors]
    if not step_errors and run_error:
        summary.append(run_error.strip().splitlines()[0] if run_error.strip() else "run failed")
        details.append(run_error.rstrip())
    error = "\n".join(summary)
    if details:
        error += "\n\n" + "\n\n".join(details)
    blocking_check = bool(step_errors) and all(BLOCKING_CHECK_ERROR in cause for _, cause, _ in step_errors)
    what = "blocking asset check failed" if blocking_check else "run failed"
    title = f"{job_name}: {what}" + (f" in {', '.join(s for s, _, _ in step_errors)}" if step_errors else "")
    return Alert(
        run_id=run_id,
        job_name=job_name,
        title=redact_text(" ".join(title.split()), secrets),
        failed_steps=[step for step, _, _ in step_errors],
        error=_truncate(redact_text(error or "no error was recorded for this run", secrets), MAX_ERROR_CHARS),
        run_url=run_url(ui_url, run_id),
        failed_checks=[redact_text(check, secrets) for check in failed_checks],
    )


def format_text(alert: Alert) -> str:
    """The plain-text body shared by e-mail and SNS."""
    lines = [
        f"Dagster run failed: {alert.job_name}",
        "",
        f"Job:    {alert.job_name}",
        f"Run id: {alert.run_id}",
        f"Link:   {alert.run_url}",
        "",
        "Failed steps:",
        *([f"  - {step}" for step in alert.failed_steps] or ["  (none: the run failed outside its steps)"]),
    ]
    if alert.failed_checks:
        lines += ["", "Failed asset checks:", *[f"  - {check}" for check in alert.failed_checks]]
    lines += ["", "Error:", alert.error, ""]
    return "\n".join(lines)


def parse_recipients(recipients: str | Sequence[str]) -> list[str]:
    """Addresses from "a@x, Name <b@y>" or a list of such strings; raises if none is valid."""
    raw = [recipients] if isinstance(recipients, str) else list(recipients)
    parsed = getaddresses([r for r in raw if r and r.strip()])
    bad = [name or address for name, address in parsed if "@" not in address]
    if bad:
        raise AlertConfigError(
            f"ALERT_EMAIL_TO has entries that are not e-mail addresses: {bad}; use 'a@x.com, b@y.com'"
        )
    if not parsed:
        raise AlertConfigError("ALERT_EMAIL_TO names no recipient; set it to comma-separated e-mail addresses")
    return [f"{name} <{address}>" if name else address for name, address in parsed]


def format_email(alert: Alert, sender: str, recipients: str | Sequence[str]) -> EmailMessage:
    to = parse_recipients(recipients)
    if "@" not in (sender or ""):
        raise AlertConfigError(f"ALERT_EMAIL_FROM {sender!r} is not an e-mail address")
    # RFC 5322's hard line limit: the default 78 folds a long subject onto a continuation line,
    # which some clients show with a leading space.
    msg = EmailMessage(policy=email.policy.default.clone(max_line_length=998))
    # Header values must be one line: a title with line breaks would be a header injection.
    msg["Subject"] = f"[{PRODUCT}] " + " ".join(alert.title.split())
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1].strip("> ") or None)
    msg["X-Dagster-Run-Id"] = alert.run_id
    msg["X-Dagster-Job"] = " ".join(alert.job_name.split())
    msg.set_content(format_text(alert))
    return msg


def _ascii_one_line(text: str) -> str:
    return " ".join(text.encode("ascii", errors="replace").decode("ascii").split())


def format_sns(alert: Alert) -> tuple[str, str]:
    """(subject, message) within SNS's limits: subject ASCII, one line, under 100 characters."""
    subject = _ascii_one_line(f"[{PRODUCT}] {alert.title}")
    if len(subject) > SNS_SUBJECT_MAX_CHARS:
        subject = subject[: SNS_SUBJECT_MAX_CHARS - 3].rstrip() + "..."
    message = format_text(alert)
    encoded = message.encode("utf-8")
    if len(encoded) > SNS_MESSAGE_MAX_BYTES:
        marker = TRUNCATED.encode("utf-8")
        message = encoded[: SNS_MESSAGE_MAX_BYTES - len(marker)].decode("utf-8", errors="ignore") + TRUNCATED
    return subject, message


# ---------------------------------------------------------------------------------------------
# Delivery (plain)
# ---------------------------------------------------------------------------------------------


def send_email(
    msg: EmailMessage,
    *,
    host: str,
    port: int,
    username: str | None = None,
    password: str | None = None,
    starttls: bool | None = None,
    timeout: float = 10,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Deliver `msg` over SMTP; raises AlertDeliveryError (one line, no credentials) on any failure.

    `starttls` None (auto): upgrade with STARTTLS when the server offers it, and refuse to send a password over
    a connection that is not encrypted; True: always; False: never (an explicit choice for a trusted relay)."""
    where = f"SMTP server {host}:{port}"
    secrets = [password] if password else []
    try:
        with smtplib.SMTP(host, port, timeout=timeout) as smtp:
            smtp.ehlo()
            encrypted = False
            if starttls or (starttls is None and smtp.has_extn("starttls")):
                smtp.starttls(context=ssl_context or ssl.create_default_context())
                encrypted = True
            if username and starttls is None and not encrypted:
                raise AlertDeliveryError(
                    f"{where} offers no STARTTLS, so the login would send SMTP_PASSWORD unencrypted; use a server "
                    "with STARTTLS, or set SMTP_STARTTLS=false for a trusted relay")
            if username:
                smtp.login(username, password or "")
            refused = smtp.send_message(msg)
    except smtplib.SMTPAuthenticationError as exc:
        raise AlertDeliveryError(
            f"{where} rejected the login of user {username!r} (SMTP {exc.smtp_code}); "
            "check SMTP_USERNAME and SMTP_PASSWORD"
        ) from None
    except smtplib.SMTPNotSupportedError as exc:
        hint = "set SMTP_STARTTLS=false" if starttls else "the server may need SMTP_STARTTLS=true before login"
        raise AlertDeliveryError(f"{where} does not support what was asked ({exc}); {hint}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise AlertDeliveryError(
            f"{where} refused every recipient {sorted(exc.recipients)}; check ALERT_EMAIL_TO"
        ) from None
    except smtplib.SMTPSenderRefused as exc:
        raise AlertDeliveryError(
            f"{where} refused the sender {exc.sender!r} (SMTP {exc.smtp_code}); check ALERT_EMAIL_FROM"
        ) from None
    except (smtplib.SMTPException, OSError) as exc:
        detail = redact_text(" ".join(f"{type(exc).__name__}: {exc}".split()), secrets)
        raise AlertDeliveryError(
            f"could not send the alert e-mail via {where}: {detail}; check SMTP_HOST, SMTP_PORT and SMTP_STARTTLS"
        ) from None
    if refused:
        raise AlertDeliveryError(f"{where} refused recipients {sorted(refused)}; check ALERT_EMAIL_TO")


def sns_region(topic_arn: str) -> str:
    match = _SNS_TOPIC_ARN.match(topic_arn or "")
    if match is None:
        raise AlertConfigError(
            f"ALERT_SNS_TOPIC_ARN {topic_arn!r} is not an SNS topic ARN; "
            "expected arn:aws:sns:<region>:<account id>:<topic>"
        )
    return match.group("region")


def publish_sns(
    subject: str, message: str, *, topic_arn: str, endpoint_url: str | None = None, region: str | None = None
) -> str:
    """Publish to an SNS topic and return the message id; raises AlertDeliveryError on failure."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    arn_region = sns_region(topic_arn)  # a malformed ARN fails here, before any AWS call
    region = region or arn_region
    request = {"TopicArn": topic_arn, "Subject": subject, "Message": message}
    if topic_arn.endswith(".fifo"):
        request["MessageGroupId"] = PRODUCT
        request["MessageDeduplicationId"] = hashlib.sha256(message.encode("utf-8")).hexdigest()
    try:
        client = boto3.session.Session().client(
            "sns",
            region_name=region,
            endpoint_url=endpoint_url or None,
            config=Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 3, "mode": "standard"}),
        )
        return client.publish(**request)["MessageId"]
    except NoCredentialsError:
        raise AlertDeliveryError(
            f"no AWS credentials to publish to SNS topic {topic_arn}; "
            "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or use a role"
        ) from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise AlertDeliveryError(
            f"SNS refused the alert for topic {topic_arn}: {error.get('Code')}: {error.get('Message')}; "
            "check ALERT_SNS_TOPIC_ARN and that the credentials may sns:Publish to it"
        ) from None
    except BotoCoreError as exc:
        detail = redact_text(" ".join(str(exc).split()), secrets_from_env())
        raise AlertDeliveryError(
            f"could not reach SNS for topic {topic_arn}: {detail}; check AWS_ENDPOINT_URL and the network"
        ) from None


# ---------------------------------------------------------------------------------------------
# Dagster wiring
# ---------------------------------------------------------------------------------------------

_ENV_FIELDS = {
    "email_to": ("ALERT_EMAIL_TO", ""),
    "email_from": ("ALERT_EMAIL_FROM", DEFAULT_EMAIL_FROM),
    "smtp_host": ("SMTP_HOST", ""),
    "smtp_port": ("SMTP_PORT", str(DEFAULT_SMTP_PORT)),
    "smtp_username": ("SMTP_USERNAME", ""),
    "smtp_password": ("SMTP_PASSWORD", ""),
    "smtp_starttls": ("SMTP_STARTTLS", "auto"),
    "sns_topic_arn": ("ALERT_SNS_TOPIC_ARN", ""),
    "aws_endpoint_url": ("AWS_ENDPOINT_URL", ""),
    "ui_url": ("DAGSTER_UI_URL", DEFAULT_UI_URL),
}


class AlertsResource(dg.ConfigurableResource):
    """Where failure alerts go. String fields so each can be a `dg.EnvVar`; "" means not configured."""

    email_to: str = ""
    email_from: str = DEFAULT_EMAIL_FROM
    smtp_host: str = ""
    smtp_port: str = str(DEFAULT_SMTP_PORT)
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: str = "auto"
    sns_topic_arn: str = ""
    aws_endpoint_url: str = ""
    ui_url: str = DEFAULT_UI_URL

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "AlertsResource":
        """Configured from the variables in the module docstring.

        Read from the process environment, SMTP_PASSWORD becomes `dg.EnvVar("SMTP_PASSWORD")`, so
        its value is resolved at run time and never stored in the definitions the UI shows.
        """
        source = os.environ if env is None else env
        values: dict[str, object] = {}
        for attribute, (variable, default) in _ENV_FIELDS.items():
            value = source.get(variable) or default
            if attribute == "smtp_password" and env is None and value:
                values[attribute] = dg.EnvVar(variable)
            else:
                values[attribute] = value
        return cls(**values)

    def setting(self, attribute: str) -> str:
        """A field's value, stripped; an EnvVar not yet resolved (resource used outside a run) is read now."""
        value = getattr(self, attribute)
        if isinstance(value, dg.EnvVar):
            value = value.get_value() or ""
        return value if attribute == "smtp_password" else value.strip()

    @property
    def email_enabled(self) -> bool:
        return bool(self.setting("email_to"))

    @property
    def sns_enabled(self) -> bool:
        return bool(self.setting("sns_topic_arn"))

    def channels(self) -> list[str]:
        """The configured channels ("email", "sns"), whether or not their settings are valid."""
        return [name for name, on in (("email", self.email_enabled), ("sns", self.sns_enabled)) if on]

    def validate(self) -> None:
        """Raises AlertConfigError naming the variable to fix, for the first bad setting of a configured channel."""
        if self.email_enabled:
            self._email_settings()
        if self.sns_enabled:
            sns_region(self.setting("sns_topic_arn"))

    def _email_settings(self) -> tuple[str, int, bool]:
        parse_recipients(self.setting("email_to"))
        host = self.setting("smtp_host")
        if not host:
            raise AlertConfigError("ALERT_EMAIL_TO is set but SMTP_HOST is not; set SMTP_HOST (and SMTP_PORT)")
        return host, self._port(), self._starttls()

    def _port(self) -> int:
        raw = self.setting("smtp_port")
        try:
            port = int(raw or DEFAULT_SMTP_PORT)
        except ValueError:
            port = -1
        if not 0 < port < 65536:
            raise AlertConfigError(f"SMTP_PORT {raw!r} is not a TCP port number (1-65535)")
        return port

    def _starttls(self) -> bool | None:
        raw = self.setting("smtp_starttls")
        if raw.strip().lower() in ("", "auto"):
            return None
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise AlertConfigError(f"SMTP_STARTTLS {raw!r} is not one of auto, true, false")

    def run_url(self, run_id: str) -> str:
        return run_url(self.setting("ui_url"), run_id)

    def send(self, alert: Alert) -> list[str]:
        """Send `alert` on every configured channel; returns the channels used.

        Every channel is tried even if one fails; then AlertDeliveryError lists each failure.
        """
        failures: list[str] = []
        delivered: list[str] = []
        if self.email_enabled:
            try:
                host, port, starttls = self._email_settings()
                send_email(
                    format_email(alert, self.setting("email_from"), self.setting("email_to")),
                    host=host,
                    port=port,
                    username=self.setting("smtp_username") or None,
                    password=self.setting("smtp_password") or None,
                    starttls=starttls,
                )
                delivered.append("email")
            except (AlertDeliveryError, AlertConfigError) as exc:
                failures.append(f"email: {exc}")
        if self.sns_enabled:
            try:
                subject, message = format_sns(alert)
                publish_sns(
                    subject,
                    message,
                    topic_arn=self.setting("sns_topic_arn"),
                    endpoint_url=self.setting("aws_endpoint_url") or None,
                )
                delivered.append("sns")
            except (AlertDeliveryError, AlertConfigError) as exc:
                failures.append(f"sns: {exc}")
        if failures:
            raise AlertDeliveryError(
                f"alert for run {alert.run_id} not delivered on {len(failures)} channel(s)"
                f" (delivered on: {', '.join(delivered) or 'none'}): " + " | ".join(failures)
            )
        return delivered


def root_cause(message: str, cls_name: str | None = None) -> str:
    """An error message as one short line, its class without the module path ("ValueError: ...")."""
    text = " ".join(message.split())
    text = _MODULE_PATH.sub("", text, count=1)
    if not text:
        return cls_name or "unknown error"
    return text if len(text) <= MAX_CAUSE_CHARS else text[: MAX_CAUSE_CHARS - 3] + "..."


def _innermost_cause(error: Any) -> str:
    """The user's exception rather than Dagster's wrapper around it."""
    while error.cause is not None:
        error = error.cause
    return root_cause(error.message, error.cls_name)


def alert_from_run_failure(context: dg.RunFailureSensorContext, ui_url: str = DEFAULT_UI_URL) -> Alert:
    """The Alert for the failed run of `context`, read from the run's events in the instance."""
    run = context.dagster_run
    step_errors = []
    for event in context.get_step_failure_events():
        error = event.event_specific_data.error if event.event_specific_data else None
        if error is None:
            step_errors.append((event.step_key, event.message or "step failed", event.message or ""))
        else:
            step_errors.append((event.step_key, _innermost_cause(error), error.to_string()))
    failed_checks = []
    for record in context.instance.get_records_for_run(
        run_id=run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ).records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if not evaluation.passed:
            text = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name} ({evaluation.severity.value})"
            failed_checks.append(text + (f": {evaluation.description}" if evaluation.description else ""))
    failure = context.failure_event
    run_error = None
    failure_error = getattr(failure.event_specific_data, "error", None)
    if failure_error is not None:
        run_error = failure_error.to_string()
    elif failure.message:
        run_error = failure.message
    return build_alert(
        run_id=run.run_id,
        job_name=run.job_name,
        step_errors=step_errors,
        failed_checks=failed_checks,
        run_error=run_error,
        ui_url=ui_url,
        secrets=secrets_from_env(),
    )


@dg.run_failure_sensor(
    name="alert_on_run_failure",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="E-mails and/or publishes to SNS when any run of this code location fails "
    "(including a failed blocking asset check); channels come from the `alerts` resource.",
)
def alert_on_run_failure(context: dg.RunFailureSensorContext, alerts: AlertsResource) -> None:
    channels = alerts.channels()
    if not channels:
        context.log.warning(
            f"run {context.dagster_run.run_id} failed but no alert channel is configured "
            "(set ALERT_EMAIL_TO + SMTP_HOST and/or ALERT_SNS_TOPIC_ARN)"
        )
        return
    alert = alert_from_run_failure(context, ui_url=alerts.setting("ui_url"))
    delivered = alerts.send(alert)
    context.log.info(f"alert for run {alert.run_id} ({alert.job_name}) sent via {', '.join(delivered)}")


ALERT_SENSORS: list[dg.SensorDefinition] = [alert_on_run_failure]
