from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from apps.accounts.roles import Role, role_required
from apps.audit.models import AuditEntry
from kaitoweb.htmx import htmx_partial

PAGE_SIZE = 50


@require_GET
@role_required(Role.VIEWER)
def audit_list(request: HttpRequest) -> HttpResponse:
    entries = AuditEntry.objects.all()
    cluster = request.GET.get("cluster", "")
    action = request.GET.get("action", "")
    if cluster:
        entries = entries.filter(cluster_name=cluster)
    if action:
        entries = entries.filter(action__startswith=action)
    page = Paginator(entries, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    template = "audit/htmx/results.html" if htmx_partial(request) else "audit/audit_list.html"
    return render(
        request,
        template,
        {
            "page_obj": page,
            "cluster": cluster,
            "action": action,
            "base_query": query.urlencode(),
            "clusters": AuditEntry.objects.exclude(cluster_name="")
            .order_by("cluster_name")
            .values_list("cluster_name", flat=True)
            .distinct(),
            "actions": sorted(set(AuditEntry.objects.values_list("action", flat=True))),
        },
    )
