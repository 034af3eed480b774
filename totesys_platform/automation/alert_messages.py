"""Failure alerts as messages: what an alert says, for e-mail and for SNS (plain Python, no Dagster).

`build_alert` turns a failed run's step errors into an `Alert` with every secret redacted; `format_email` and
`format_sns` render it for their channel within its limits. Delivery is in alert_channels.py, the Dagster
resource and sensor in alerts.py.
"""

from __future__ import annotations

import email.policy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid
from typing import Any

from totesys_platform.redaction import redact_text
from totesys_platform.settings import DEFAULT_UI_URL, VARIABLES  # noqa: F401 - DEFAULT_UI_URL re-exported

PRODUCT = "totesys-platform"
DEFAULT_EMAIL_FROM = VARIABLES["ALERT_EMAIL_FROM"].default
DEFAULT_SMTP_PORT = int(VARIABLES["SMTP_PORT"].default)

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


