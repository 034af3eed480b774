"""Log shipping to Amazon CloudWatch Logs, and redaction of secrets from every log record.

Plain Python, no Dagster: `redact_text`, `secrets_from_env`, `RedactingFilter`, `plan_batches`,
`CloudWatchLogHandler`. The Dagster wiring (the `cloudwatch_logger` logger definition and
`configure_run_logging`, which adds it to the code location only when `CLOUDWATCH_LOG_GROUP` is set) is in
`totesys_platform/defs/automation/run_logging.py`.

The variables (CLOUDWATCH_LOG_GROUP and the rest) are declared in settings.py (docs/configuration.md).

Secrets removed from every record: passwords in URLs, `password=` / `secret=` key-values (libpq DSNs,
query strings, dict reprs), AWS secret access keys, and the literal values of environment variables
whose names contain PASSWORD, SECRET or TOKEN, plus the password part of any URL held in an
environment variable (e.g. TOTESYS_DB_URL, WAREHOUSE_DB_URL).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from totesys_platform.redaction import (  # noqa: F401 - re-exported: the log redaction lives there
    MIN_LITERAL_SECRET_LENGTH, REDACTED, redact_text, secrets_from_env,
)
from totesys_platform.settings import VARIABLES, setting


# A literal shorter than this would shred ordinary words out of every log line.

# CloudWatch Logs PutLogEvents limits (AWS API reference).
MAX_BATCH_EVENTS = 10_000
MAX_BATCH_BYTES = 1_048_576
EVENT_OVERHEAD_BYTES = 26
MAX_EVENT_BYTES = 262_144 - EVENT_OVERHEAD_BYTES
MAX_BATCH_SPAN_MS = 24 * 60 * 60 * 1000

DEFAULT_LOG_STREAM = VARIABLES["CLOUDWATCH_LOG_STREAM"].default
# As Dagster's own console logger: its run and step events (RUN_SUCCESS, STEP_START...) are DEBUG.
DEFAULT_LOG_LEVEL = VARIABLES["CLOUDWATCH_LOG_LEVEL"].default
DEFAULT_FLUSH_INTERVAL_SECONDS = 5.0
# Records kept while CloudWatch is unreachable; beyond this new records are dropped (and counted).
MAX_PENDING_EVENTS = 50_000
TRUNCATION_MARKER = " ...[truncated]"

class RedactingFilter(logging.Filter):
    """Removes secrets from the message, exception text and stack of every record it sees.

    Attach it to handlers (handler filters also see records propagated from child loggers). It
    rewrites the record in place, so every handler after it sees the redacted text too.
    """

    _exception_formatter = logging.Formatter()

    def __init__(self, secrets: Iterable[str] = (), *, include_env: bool = True, name: str = "") -> None:
        super().__init__(name)
        literals = set(secrets)
        if include_env:
            literals.update(secrets_from_env())
        self.secrets: tuple[str, ...] = tuple(sorted(literals))

    def redact(self, text: str) -> str:
        return redact_text(text, self.secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad %-format must not lose the record (or leak its raw args)
            message = f"{record.msg} (unformattable log arguments)"
        record.msg = self.redact(message)
        record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = self._exception_formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


# ---------------------------------------------------------------------------------------------
# CloudWatch Logs batching (plain)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogEvent:
    timestamp_ms: int
    message: str

    @property
    def size(self) -> int:
        return len(self.message.encode("utf-8")) + EVENT_OVERHEAD_BYTES


def fit_message(message: str) -> str:
    """The message cut to CloudWatch's per-event size limit (and never empty, which it rejects)."""
    if not message:
        return " "
    encoded = message.encode("utf-8")
    if len(encoded) <= MAX_EVENT_BYTES:
        return message
    keep = MAX_EVENT_BYTES - len(TRUNCATION_MARKER.encode("utf-8"))
    return encoded[:keep].decode("utf-8", errors="ignore") + TRUNCATION_MARKER


def plan_batches(
    events: Sequence[LogEvent],
    *,
    max_events: int = MAX_BATCH_EVENTS,
    max_bytes: int = MAX_BATCH_BYTES,
    max_span_ms: int = MAX_BATCH_SPAN_MS,
) -> list[list[LogEvent]]:
    """Split events (already in time order) into PutLogEvents batches within its count, size and span limits."""
    batches: list[list[LogEvent]] = []
    current: list[LogEvent] = []
    current_bytes = 0
    for event in events:
        size = event.size
        if size > max_bytes:
            raise ValueError(f"log event of {size} bytes exceeds the batch limit of {max_bytes} bytes; use fit_message")
        if current and (
            len(current) >= max_events
            or current_bytes + size > max_bytes
            or event.timestamp_ms - current[0].timestamp_ms > max_span_ms
        ):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(event)
        current_bytes += size
    if current:
        batches.append(current)
    return batches


class CloudWatchLogHandler(logging.Handler):
    """Ships log records to CloudWatch Logs in batches; never lets a shipping failure reach the caller.

    Records are buffered and sent by a background thread every `flush_interval` seconds, at once
    when a batch is full or a record is ERROR or worse, and on `flush()` / `close()` (which
    `logging.shutdown` calls at interpreter exit). The group and stream are created the first time
    CloudWatch says they are missing, so an existing group needs no CreateLogGroup permission.
    Failures are counted in `dropped_events` and reported once on stderr.

    `log_group=None` reads CLOUDWATCH_LOG_GROUP (and the stream CLOUDWATCH_LOG_STREAM); with neither
    the handler is disabled and drops records, which lets dagster.yaml declare it unconditionally.
    Secrets are redacted before anything is buffered unless `redact=False`.
    """

    def __init__(
        self,
        log_group: str | None = None,
        log_stream: str | None = None,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL_SECONDS,
        redact: bool = True,
        level: int | str = logging.NOTSET,
        client: Any = None,
    ) -> None:
        super().__init__(level)
        self.log_group = log_group or setting("CLOUDWATCH_LOG_GROUP") or None
        self.log_stream = log_stream or setting("CLOUDWATCH_LOG_STREAM")
        self.region = region or setting("AWS_REGION") or setting("AWS_DEFAULT_REGION") or None
        self.endpoint_url = endpoint_url or setting("AWS_ENDPOINT_URL") or None
        self.flush_interval = float(flush_interval)
        if self.flush_interval <= 0:
            raise ValueError(f"flush_interval must be positive seconds, got {flush_interval!r}")
        if redact:
            self.addFilter(RedactingFilter())
        self.shipped_events = 0
        self.dropped_events = 0
        self._client = client
        self._pending: list[LogEvent] = []
        self._pending_bytes = 0
        self._last_timestamp_ms = 0
        # Own locks, never Handler.lock: logging.shutdown holds Handler.lock while it flushes, and
        # botocore logs through handlers while a batch is sent. Order: _send_lock, then _buffer_lock.
        self._send_lock = threading.Lock()
        self._buffer_lock = threading.Lock()
        self._sending = threading.local()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False
        self._last_ship_failed = False

    @property
    def enabled(self) -> bool:
        return self.log_group is not None

    @property
    def destination(self) -> str:
        return f"CloudWatch Logs group {self.log_group!r} stream {self.log_stream!r}"

    # -- logging.Handler interface ----------------------------------------------------------

    def handle(self, record: logging.LogRecord) -> Any:
        # Unlike logging.Handler.handle, no Handler.lock around emit: emit locks its own buffer.
        result = self.filter(record)
        if isinstance(result, logging.LogRecord):  # Python 3.12+ filters may return a new record
            record = result
        if result:
            self.emit(record)
        return result

    def emit(self, record: logging.LogRecord) -> None:
        # Records raised by botocore/urllib3 while this thread ships a batch would feed back forever.
        if not self.enabled or getattr(self._sending, "active", False):
            return
        try:
            message = fit_message(self.format(record))
            with self._buffer_lock:
                if len(self._pending) >= MAX_PENDING_EVENTS:
                    self.dropped_events += 1
                    return
                # PutLogEvents needs time order; clamp so events keep the order they were emitted in.
                timestamp_ms = max(int(record.created * 1000), self._last_timestamp_ms)
                self._last_timestamp_ms = timestamp_ms
                event = LogEvent(timestamp_ms, message)
                self._pending.append(event)
                self._pending_bytes += event.size
                batch_full = len(self._pending) >= MAX_BATCH_EVENTS or self._pending_bytes >= MAX_BATCH_BYTES
            if (batch_full or record.levelno >= logging.ERROR) and not self._last_ship_failed:
                self.flush()
            else:
                # While CloudWatch is failing, only the background thread waits on it, not the pipeline.
                self._ensure_flusher(wake=batch_full)
        except Exception as exc:  # shipping is best effort: never break the code that logged
            self.dropped_events += 1
            self._warn_once(exc)

    def flush(self) -> None:
        if not self.enabled:
            return
        if _holds_logging_module_lock():
            # Inside logging.config.dictConfig (Dagster runs it whenever it builds a run's log
            # manager): sending here would wait on botocore logging, which needs that lock.
            self._ensure_flusher(wake=True)
            return
        with self._send_lock:
            with self._buffer_lock:
                events, self._pending, self._pending_bytes = self._pending, [], 0
            if events:
                self._ship(events)

    def close(self) -> None:
        # dictConfig closes every handler in the process, including ones still attached to live
        # loggers, so closing only ships the buffer: a closed handler keeps working.
        self.flush()
        super().close()

    # -- internals ----------------------------------------------------------------------------

    def _ensure_flusher(self, wake: bool = False) -> None:
        with self._buffer_lock:
            if self._thread is None:
                thread = threading.Thread(
                    target=self._flush_periodically, name="cloudwatch-log-flusher", daemon=True
                )
                try:
                    thread.start()
                    self._thread = thread
                except RuntimeError:  # interpreter shutting down: no new threads
                    wake = False
                    started = False
                else:
                    started = True
            else:
                started = True
        if wake:
            self._wake.set()
        if not started and not _holds_logging_module_lock():
            self.flush()

    def _flush_periodically(self) -> None:
        # The thread lives while there is something to send; emit starts a new one when needed.
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            self.flush()
            with self._buffer_lock:
                if not self._pending:
                    self._thread = None
                    return

    def _logs_client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.session.Session().client(
                "logs",
                region_name=self.region,
                endpoint_url=self.endpoint_url,
                config=Config(connect_timeout=5, read_timeout=15, retries={"max_attempts": 3, "mode": "standard"}),
            )
        return self._client

    def _ship(self, events: list[LogEvent]) -> None:
        self._sending.active = True
        try:
            for batch in plan_batches(events):
                try:
                    self._put(batch)
                    self._last_ship_failed = False
                except Exception as exc:
                    self._last_ship_failed = True
                    self.dropped_events += len(batch)
                    self._warn_once(exc)
        finally:
            self._sending.active = False

    def _put(self, batch: list[LogEvent]) -> None:
        from botocore.exceptions import ClientError

        log_events = [{"timestamp": e.timestamp_ms, "message": e.message} for e in batch]
        client = self._logs_client()
        try:
            response = client.put_log_events(
                logGroupName=self.log_group, logStreamName=self.log_stream, logEvents=log_events
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
            self._create_destination(client)
            response = client.put_log_events(
                logGroupName=self.log_group, logStreamName=self.log_stream, logEvents=log_events
            )
        rejected = _count_rejected(response.get("rejectedLogEventsInfo") or {}, len(batch))
        self.shipped_events += len(batch) - rejected
        if rejected:
            self.dropped_events += rejected
            self._warn_once(RuntimeError(f"CloudWatch rejected {rejected} events as too old, too new or expired"))

    def _create_destination(self, client: Any) -> None:
        for create, kwargs in (
            (client.create_log_group, {"logGroupName": self.log_group}),
            (client.create_log_stream, {"logGroupName": self.log_group, "logStreamName": self.log_stream}),
        ):
            try:
                create(**kwargs)
            except client.exceptions.ResourceAlreadyExistsException:
                pass  # created meanwhile by another process: fine

    def _warn_once(self, exc: BaseException) -> None:
        if self._warned:
            return
        self._warned = True
        detail = redact_text(f"{type(exc).__name__}: {exc}", secrets_from_env())
        sys.stderr.write(
            f"WARNING totesys-platform: could not ship logs to {self.destination} "
            f"({detail}). The pipeline carries on; further failures are only counted "
            "(CloudWatchLogHandler.dropped_events). Check the AWS credentials, region and endpoint.\n"
        )


def _holds_logging_module_lock() -> bool:
    """Whether this thread is inside logging's module lock (e.g. in logging.config.dictConfig)."""
    is_owned = getattr(getattr(logging, "_lock", None), "_is_owned", None)
    return bool(is_owned and is_owned())


def _count_rejected(info: Mapping[str, int], batch_size: int) -> int:
    """Events CloudWatch refused, from PutLogEvents' rejectedLogEventsInfo (indexes are exclusive/inclusive)."""
    rejected: set[int] = set()
    if "tooOldLogEventEndIndex" in info:
        rejected.update(range(0, info["tooOldLogEventEndIndex"]))
    if "expiredLogEventEndIndex" in info:
        rejected.update(range(0, info["expiredLogEventEndIndex"]))
    if "tooNewLogEventStartIndex" in info:
        rejected.update(range(info["tooNewLogEventStartIndex"], batch_size))
    return len(rejected)


# ---------------------------------------------------------------------------------------------
# Dagster wiring
# ---------------------------------------------------------------------------------------------

CONSOLE_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
CLOUDWATCH_FORMAT = "%(levelname)s - %(message)s"
LOGGER_KEY = "cloudwatch"

_shared_handlers: dict[tuple[str, str, str | None, str | None], CloudWatchLogHandler] = {}
_shared_handlers_lock = threading.Lock()


def shared_cloudwatch_handler(
    log_group: str, log_stream: str, region: str | None, endpoint_url: str | None, flush_interval: float
) -> CloudWatchLogHandler:
    """One handler (and one flusher thread) per destination per process, however many runs it serves."""
    key = (log_group, log_stream, region, endpoint_url)
    with _shared_handlers_lock:
        handler = _shared_handlers.get(key)
        if handler is None:
            handler = CloudWatchLogHandler(
                log_group, log_stream, region=region, endpoint_url=endpoint_url, flush_interval=flush_interval
            )
            handler.setFormatter(logging.Formatter(CLOUDWATCH_FORMAT))
            _shared_handlers[key] = handler
        handler.flush_interval = min(handler.flush_interval, flush_interval)
        return handler


def flush_cloudwatch_handlers() -> None:
    """Ship everything the `cloudwatch_logger` handlers of this process still buffer."""
    with _shared_handlers_lock:
        handlers = list(_shared_handlers.values())
    for handler in handlers:
        handler.flush()


def parse_log_level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(str(level).strip().upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return value
