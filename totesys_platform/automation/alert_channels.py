"""Failure alerts delivered: SMTP (with STARTTLS unless configured off) and Amazon SNS (plain Python, no Dagster)."""

from __future__ import annotations

import hashlib
import smtplib
import ssl
from email.message import EmailMessage

from totesys_platform.automation.alert_messages import (
    _SNS_TOPIC_ARN,
    PRODUCT,
    AlertConfigError,
    AlertDeliveryError,
)
from totesys_platform.redaction import redact_text, secrets_from_env


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


