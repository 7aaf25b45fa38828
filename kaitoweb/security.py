"""Security headers: a Content-Security-Policy with a per-request nonce, and Permissions-Policy.

Every asset is served by the app itself (htmx and plotly.js are vendored), so the policy allows
only 'self'. An inline <script> runs only if it carries ``nonce="{{ request.csp_nonce }}"``;
scripts inside htmx fragments get the page's nonce from htmx (``inlineScriptNonce`` in the
htmx-config meta tag of base.html). Inline event handlers (onclick=...) never run: behaviour
lives in static/js (e.g. ``data-confirm``, ``data-autosubmit`` in app.js).

Styles: 'unsafe-inline' because plotly.js injects <style> elements and sets style attributes on
every chart it draws, and templates use a few style attributes. Styles cannot run code, so this
leaves script injection as closed as before.

Referrer-Policy and Cross-Origin-Opener-Policy come from Django's SecurityMiddleware
(SECURE_REFERRER_POLICY, SECURE_CROSS_ORIGIN_OPENER_POLICY in settings).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from pprint import pformat
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter

from kaitoweb.redaction import redact

NONCE_BYTES = 18

PERMISSIONS_POLICY = ", ".join(
    f"{feature}=()"
    for feature in (
        "accelerometer",
        "camera",
        "display-capture",
        "geolocation",
        "gyroscope",
        "magnetometer",
        "microphone",
        "midi",
        "payment",
        "usb",
    )
)


def content_security_policy(nonce: str) -> str:
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src 'self' 'nonce-{nonce}'",
            # plotly.js injects <style> elements and style attributes (see the module doc).
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data: blob:",
            "font-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "object-src 'none'",
        ]
    )


def csp_nonce(request: HttpRequest) -> str:
    """This request's nonce (made by the middleware; a fresh one if it did not run)."""
    nonce: str | None = getattr(request, "csp_nonce", None)
    if nonce is None:
        nonce = secrets.token_urlsafe(NONCE_BYTES)
        request.csp_nonce = nonce  # type: ignore[attr-defined]
    return nonce


class ContentSecurityPolicyMiddleware:
    """Gives each request a nonce and each response the policy that allows only it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        nonce = csp_nonce(request)
        response = self.get_response(request)
        if settings.DEBUG and response.status_code >= 400:
            # Django's debug error pages run inline scripts of their own (DEBUG only).
            return response
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = content_security_policy(nonce)
        if "Permissions-Policy" not in response:
            response["Permissions-Policy"] = PERMISSIONS_POLICY
        if "Cross-Origin-Resource-Policy" not in response:
            response["Cross-Origin-Resource-Policy"] = "same-origin"
        return response


class SecretsExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's error reports (the debug page, the admins' e-mail), without our secrets."""

    hidden_settings = re.compile(
        r"API|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|KUBECONFIG|ENCRYPTION|DATABASE_URL|"
        r"REDIS_URL|BROKER_URL",
        flags=re.IGNORECASE,
    )
    hidden_post = re.compile(r"password|api_key|token|kubeconfig|secret|hf_", re.IGNORECASE)

    def get_post_parameters(self, request: Any) -> Any:
        params = super().get_post_parameters(request)
        if request is None or not params:
            return params
        cleansed = params.copy()
        for name in cleansed:
            if self.hidden_post.search(name):
                cleansed[name] = self.cleansed_substitute
        return cleansed

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        cleaned = super().cleanse_setting(key, value)
        return redact(cleaned) if isinstance(cleaned, str) else cleaned

    def get_traceback_frame_variables(self, request: Any, tb_frame: Any) -> Any:
        return [
            (name, _Shown(redact(_pformat(value))))
            for name, value in super().get_traceback_frame_variables(request, tb_frame)
        ]


def _pformat(value: Any) -> str:
    try:
        return pformat(value)
    except Exception as exc:  # what Django's own report does with a failing repr
        return f"Error in formatting: {exc.__class__.__name__}: {exc}"


class _Shown:
    """A frame variable already formatted (and redacted): the report prints it as it is."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class SecretsExceptionReporter(ExceptionReporter):
    """Django's error report with the exception messages redacted too (a provider's error text
    can quote a key); DEFAULT_EXCEPTION_REPORTER."""

    def get_traceback_data(self) -> dict[str, Any]:
        data = super().get_traceback_data()
        if data.get("exception_value") is not None:
            data["exception_value"] = redact(str(data["exception_value"]))
        for frame in data.get("frames", []):
            if frame.get("exc_cause") is not None:
                frame["exc_cause"] = redact(str(frame["exc_cause"]))
        return data
