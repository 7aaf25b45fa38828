"""/healthz, /readyz and /metrics: no login (probes and scrapers have none)."""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kaitoweb.observability import metrics, probes


@login_not_required
@never_cache
@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """The process is up and serving. Touches nothing else, so a database outage does not get
    every web pod restarted (that is what /readyz is for)."""
    return JsonResponse({"status": "ok"})


@login_not_required
@never_cache
@require_GET
def readyz(request: HttpRequest) -> HttpResponse:
    """200 when the database and the broker answer; else 503 naming what is down and why."""
    results = probes.run_checks()
    down = [r for r in results if not r.ok]
    body: dict[str, object] = {
        "status": "unavailable" if down else "ok",
        "checks": {
            r.name: {"ok": r.ok, **({"error": r.detail} if r.detail else {})} for r in results
        },
    }
    if down:
        body["down"] = [r.name for r in down]
    return JsonResponse(body, status=503 if down else 200)


def _loopback(request: HttpRequest) -> bool:
    """A direct connection from this host. A proxy on this host forwards other hosts' requests
    from loopback, so a forwarded request never counts as local."""
    if request.headers.get("X-Forwarded-For") or request.headers.get("Forwarded"):
        return False
    try:
        return ipaddress.ip_address(str(request.META.get("REMOTE_ADDR", ""))).is_loopback
    except ValueError:
        return False


def metrics_allowed(request: HttpRequest) -> bool:
    """With METRICS_TOKEN set: only ``Authorization: Bearer <METRICS_TOKEN>``. Without it: only
    direct requests from loopback."""
    token = str(getattr(settings, "METRICS_TOKEN", "") or "")
    if not token:
        return _loopback(request)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


@login_not_required
@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not metrics_allowed(request):
        return HttpResponse(
            "Forbidden: send Authorization: Bearer <METRICS_TOKEN> (or, with no METRICS_TOKEN "
            "set, scrape from this host's loopback).\n",
            status=403,
            content_type="text/plain",
        )
    output = generate_latest(metrics.scrape_registry())
    return HttpResponse(output, content_type=CONTENT_TYPE_LATEST)
