"""Log lines as JSON objects, one a line, for a log pipeline to index (LOG_FORMAT=json).

Every line has ``timestamp`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``; what it
was written under (`context.LogContext`: ``request_id``, ``user_id``, ``path``, or
``task_name`` and ``task_id`` in a Celery task); the request log line adds ``method``,
``status``, ``duration_ms`` and ``view``; an exception adds ``exception`` (the traceback).
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

from kaitoweb.observability import context

# Attributes every LogRecord has; anything else on a record came from `extra=` and is kept.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)
EXTRA_FIELDS = ("method", "status", "duration_ms", "view", "outcome")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in context.current().fields().items():
            line[key] = value
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class PlainFormatter(logging.Formatter):
    """The human format, with the request id or task when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        where = context.current()
        tags = []
        if where.request_id:
            tags.append(f"request_id={where.request_id}")
        if where.task_name:
            tags.append(f"task={where.task_name}[{where.task_id}]")
        for key in EXTRA_FIELDS:
            if hasattr(record, key):
                tags.append(f"{key}={getattr(record, key)}")
        return f"{text} ({' '.join(tags)})" if tags else text


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """The LOGGING dict for settings: one console handler in the chosen format."""
    if log_format not in ("json", "plain"):
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"LOG_FORMAT={log_format!r}: use json or plain")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": "kaitoweb.observability.logs.JsonFormatter"},
            "plain": {"()": "kaitoweb.observability.logs.PlainFormatter"},
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": log_format}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Our request line replaces Django's own 4xx/5xx warnings for the same request.
            "django.request": {"level": "ERROR"},
            "django.server": {"level": "WARNING"},
        },
    }
