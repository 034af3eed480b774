"""Failure alerts by e-mail (SMTP) and Amazon SNS, and the Dagster sensor that sends them.

The messages are built and formatted in alert_messages.py and delivered by alert_channels.py (plain Python);
this module is the Dagster wiring: `AlertsResource` (bind it under the resource key "alerts"),
`alert_on_run_failure` and `ALERT_SENSORS`.

Every variable is optional; a channel is active only when configured (e-mail: ALERT_EMAIL_TO;
SNS: ALERT_SNS_TOPIC_ARN). With no channel configured the sensor logs a warning and sends nothing.

The variables (ALERT_EMAIL_TO, SMTP_*, ALERT_SNS_TOPIC_ARN...) are declared in settings.py
(docs/configuration.md).

A run whose BLOCKING asset check fails with ERROR severity fails (Dagster 1.13 raises
DagsterAssetCheckFailedError in the step that yielded the check), so `alert_on_run_failure` covers
failed blocking checks too and names them in the alert; no second sensor is needed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

from totesys_platform.automation.alert_channels import (
    publish_sns,
    send_email,
    sns_region,
)
from totesys_platform.automation.alert_messages import (
    _FALSE,
    _TRUE,
    DEFAULT_EMAIL_FROM,
    DEFAULT_SMTP_PORT,
    DEFAULT_UI_URL,
    Alert,
    AlertConfigError,
    AlertDeliveryError,
    _innermost_cause,
    build_alert,
    format_email,
    format_sns,
    parse_recipients,
    run_url,
)
from totesys_platform.redaction import secrets_from_env
from totesys_platform.settings import setting

# Each field and its variable (declared, with its default, in settings.py).
_ENV_FIELDS = {
    "email_to": "ALERT_EMAIL_TO", "email_from": "ALERT_EMAIL_FROM", "smtp_host": "SMTP_HOST", "smtp_port": "SMTP_PORT",
    "smtp_username": "SMTP_USERNAME", "smtp_password": "SMTP_PASSWORD", "smtp_starttls": "SMTP_STARTTLS",
    "sns_topic_arn": "ALERT_SNS_TOPIC_ARN", "aws_endpoint_url": "AWS_ENDPOINT_URL", "ui_url": "DAGSTER_UI_URL",
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
        for attribute, variable in _ENV_FIELDS.items():
            value = setting(variable, source, strip=attribute != "smtp_password") or (
                DEFAULT_UI_URL if attribute == "ui_url" else "")
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
