"""What a log line was written under: the request (id, user, path) or the Celery task (name, id).

Context variables, so each thread of a threaded server and each asyncio task sees its own.
"""

from __future__ import annotations

import contextvars
import re
import uuid
from dataclasses import dataclass, replace

# An incoming X-Request-ID is kept only if it is this tame: it ends up in every log line.
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass(frozen=True)
class LogContext:
    request_id: str = ""
    user_id: int | str | None = None
    path: str = ""
    task_name: str = ""
    task_id: str = ""

    def fields(self) -> dict[str, object]:
        """The non-empty fields, as a log record carries them."""
        return {k: v for k, v in self.__dict__.items() if v not in ("", None)}


_current: contextvars.ContextVar[LogContext] = contextvars.ContextVar(
    "kaitoweb_log_context",
    default=LogContext(),  # noqa: B039 (frozen: never mutated, only replaced)
)


def current() -> LogContext:
    return _current.get()


def bind(**fields: object) -> contextvars.Token[LogContext]:
    """Add fields to the current context; `unbind(token)` restores what was there before."""
    return _current.set(replace(_current.get(), **fields))  # type: ignore[arg-type]


def unbind(token: contextvars.Token[LogContext]) -> None:
    _current.reset(token)


def request_id_from(header: str | None) -> str:
    """The caller's X-Request-ID if it is well formed, else a new one."""
    if header and REQUEST_ID_PATTERN.match(header):
        return header
    return uuid.uuid4().hex
