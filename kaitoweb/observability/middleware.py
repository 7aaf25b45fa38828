"""One middleware, first in the stack: a request id, a log line and metrics for every request.

The request id is the caller's ``X-Request-ID`` when it is well formed (a load balancer or
another service set it), else a new one; it is sent back in ``X-Request-ID`` and is on every
log line written while the request is served.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from kaitoweb.observability import context, metrics

logger = logging.getLogger("kaitoweb.request")

REQUEST_ID_HEADER = "X-Request-ID"
# Probes and scrapes come every few seconds; their request lines are logged at DEBUG only.
QUIET_VIEWS = frozenset({"healthz", "readyz", "metrics"})


def _view_label(request: HttpRequest) -> str:
    """The URL pattern's name, never the path: one label value per view, not per object."""
    match = getattr(request, "resolver_match", None)
    if match is not None:
        return match.view_name or getattr(match.func, "__name__", "unnamed")
    if request.path.startswith("/" + str(settings.STATIC_URL).lstrip("/")):
        return "static"
    return "unmatched"


def _user_id(request: HttpRequest) -> int | str | None:
    """The user's id if authentication already looked the user up (it never makes it look)."""
    user = getattr(request, "_cached_user", None)
    if user is not None and user.is_authenticated:
        return user.pk
    return None


class RequestObservationMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = context.request_id_from(request.headers.get(REQUEST_ID_HEADER))
        request.request_id = request_id  # type: ignore[attr-defined]
        token = context.bind(request_id=request_id, path=request.path)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
        except Exception:
            # Django turns view exceptions into 500 responses before they get here; this is
            # for one raised by middleware outside that handling.
            self._observe(request, 500, time.perf_counter() - started)
            context.unbind(token)
            raise
        response[REQUEST_ID_HEADER] = request_id
        self._observe(request, response.status_code, time.perf_counter() - started)
        context.unbind(token)
        return response

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> None:
        # A view that needs a login makes the auth middleware look the user up anyway; naming
        # the user on the view's log lines costs nothing more then. Exempt views (the probes)
        # must not touch the database, so they are left alone.
        if getattr(view_func, "login_required", True):
            user = getattr(request, "user", None)
            if user is not None and user.is_authenticated:
                context.bind(user_id=user.pk)

    def _observe(self, request: HttpRequest, status: int, seconds: float) -> None:
        view = _view_label(request)
        metrics.request_observed(
            view=view, method=request.method or "", status=status, seconds=seconds
        )
        level = logging.DEBUG if view in QUIET_VIEWS and status < 500 else logging.INFO
        if status >= 500:
            level = logging.ERROR
        elif status >= 400 and level == logging.INFO:
            level = logging.WARNING
        extra: dict[str, Any] = {
            "method": request.method,
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
            "view": view,
        }
        user_id = _user_id(request)
        if user_id is not None:
            extra["user_id"] = user_id
        logger.log(level, "%s %s %s", request.method, request.path, status, extra=extra)
