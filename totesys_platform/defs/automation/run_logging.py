"""The run logger that ships run logs to CloudWatch Logs (the Dagster wiring of automation/observability.py).

`configure_run_logging` adds it to the code location only when `CLOUDWATCH_LOG_GROUP` is set; the variables are
declared in settings.py (docs/configuration.md).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from totesys_platform.automation.observability import (
    CONSOLE_FORMAT, DEFAULT_FLUSH_INTERVAL_SECONDS, DEFAULT_LOG_LEVEL, DEFAULT_LOG_STREAM, LOGGER_KEY,
    RedactingFilter, parse_log_level, shared_cloudwatch_handler,
)
from totesys_platform.settings import setting


@dg.logger(
    config_schema={
        "log_group": dg.Field(str, description="CloudWatch Logs group (created if missing)."),
        "log_stream": dg.Field(str, default_value=DEFAULT_LOG_STREAM, description="Stream in the group."),
        "region": dg.Field(dg.Noneable(str), default_value=None, description="AWS region; None = boto3 default."),
        "endpoint_url": dg.Field(dg.Noneable(str), default_value=None, description="AWS-compatible endpoint."),
        "level": dg.Field(str, default_value=DEFAULT_LOG_LEVEL, description="Lowest level logged."),
        "flush_interval_seconds": dg.Field(float, default_value=DEFAULT_FLUSH_INTERVAL_SECONDS),
    },
    description="Run logs to the console and to CloudWatch Logs, with secrets redacted from both.",
)
def cloudwatch_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    config = init_context.logger_config
    level = parse_log_level(config["level"])
    # An unregistered Logger (as Dagster's own console logger): no propagation to root, no reuse across runs.
    run_logger = logging.getLoggerClass()("totesys_platform", level=level)
    redaction = RedactingFilter()

    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter(CONSOLE_FORMAT))
    console.addFilter(redaction)
    run_logger.addHandler(console)

    shipper = shared_cloudwatch_handler(
        config["log_group"], config["log_stream"], config["region"], config["endpoint_url"],
        config["flush_interval_seconds"],
    )
    run_logger.addHandler(shipper)
    return run_logger


@dataclass(frozen=True)
class RunLogging:
    """What a code location needs to ship run logs: logger definitions and the run config selecting them.

    Dagster instantiates a Definitions-level logger only when the run config names it under
    `loggers`, so jobs must carry `run_config` (e.g. `define_asset_job(..., config=run_config)`).
    """

    loggers: dict[str, dg.LoggerDefinition] = field(default_factory=dict)
    run_config: dict[str, Any] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.loggers)


def configure_run_logging(env: Mapping[str, str] | None = None) -> RunLogging:
    """The CloudWatch logger, configured from the environment; empty when CLOUDWATCH_LOG_GROUP is unset."""
    env = os.environ if env is None else env
    log_group = setting("CLOUDWATCH_LOG_GROUP", env)
    if not log_group:
        return RunLogging()
    level = setting("CLOUDWATCH_LOG_LEVEL", env)
    parse_log_level(level)  # fail at load time, naming the variable's value, not mid-run
    configured = cloudwatch_logger.configured(
        {
            "log_group": log_group,
            "log_stream": setting("CLOUDWATCH_LOG_STREAM", env),
            "region": setting("AWS_REGION", env) or setting("AWS_DEFAULT_REGION", env) or None,
            "endpoint_url": setting("AWS_ENDPOINT_URL", env) or None,
            "level": level,
        }
    )
    return RunLogging(loggers={LOGGER_KEY: configured}, run_config={"loggers": {LOGGER_KEY: {}}})
