"""structlog setup: JSON lines in containers, readable lines on a terminal.

Every line carries the app id and instance id, from whichever thread it is
logged (the HTTP server has its own threads, which context variables would not
reach). Secrets are scrubbed from every line last, after exceptions are turned
into text, so a traceback quoting a password cannot leak it either.

librdkafka logs through a standard-library logger that is handed to each
client (``kafka_logger``); its lines are rendered here like any other, instead
of the raw ``%3|…|FAIL|…`` lines librdkafka would print on stderr.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from service.config.secrets import REDACTED, is_secret, scrub
from service.runtime.clients import KAFKA_LOGGER, kafka_logger

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(level: str = "info", fmt: str = "auto", *, secrets: Iterable[str] = (), **context: str) -> None:
    """Configure structlog once; ``context`` (app id, instance id) goes on every line."""
    json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    render: list[Processor] = (
        [leading_keys, structlog.processors.JSONRenderer()]
        if json
        else [structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            AddFields(context),
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            RedactSecrets(secrets),
            *render,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    _route_stdlib_logging(_LEVELS[level])


class AddFields:
    """Adds fixed fields (app id, instance id) to every line, in any thread."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        self.fields = dict(fields)

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        for key, value in self.fields.items():
            event.setdefault(key, value)
        return event


class RedactSecrets:
    """Replaces secret values wherever they appear, and any field named like a secret."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        cleaned: EventDict = self._clean(event)
        return cleaned

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return scrub(value, self.secrets) if self.secrets else value
        if isinstance(value, dict):
            return {k: (REDACTED if isinstance(k, str) and is_secret(k) else self._clean(v)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._clean(v) for v in value]
        return value


_LEADING = ("timestamp", "level", "event", "app_id", "instance_id")


def leading_keys(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    """JSON lines start with when, how bad, what and who; the details follow."""
    ordered = {key: event.pop(key) for key in _LEADING if key in event}
    ordered.update(event)
    return ordered


class _ToStructlog(logging.Handler):
    """Standard-library records (librdkafka, libraries) rendered as structlog lines."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = structlog.get_logger(record.name)
        if record.name == KAFKA_LOGGER and isinstance(record.args, tuple) and len(record.args) == 3:
            # confluent-kafka logs ("%s [%s] %s", facility, client name, message)
            facility, client, message = record.args
            if facility == "FAIL":
                return  # every failed connection attempt: reported once in a while by the error callback
            logger.log(record.levelno, "librdkafka", facility=facility, client=client, message=message)
            return
        logger.log(record.levelno, record.getMessage(), logger=record.name)


def _route_stdlib_logging(level: int) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _ToStructlog):
            root.removeHandler(handler)
    root.addHandler(_ToStructlog())
    root.setLevel(level)
    kafka_logger().setLevel(level)
    # The schema registry client's HTTP library logs every request at info: a line
    # per schema fetched says nothing the service's own lines do not.
    for name in ("httpx2", "httpx", "httpcore2", "httpcore"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
