from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from apps.accounts.roles import Role, has_role, role_required
from apps.audit.models import AuditEntry
from apps.audit.services import audit_record
from apps.clusters import kube
from apps.clusters.forms import ClusterForm
from apps.clusters.models import Cluster
from apps.clusters.selectors import cluster_list as select_clusters
from apps.clusters.selectors import local_simulator
from apps.clusters.services import (
    ClusterRefused,
    cluster_check,
    cluster_create,
    cluster_delete,
    cluster_update,
)
from apps.deployments.selectors import deployment_rows
from apps.deployments.services import cluster_scan
from kaitoweb.htmx import htmx_partial

SIMULATOR_NAME = "kaitosim"


@require_GET
@role_required(Role.VIEWER)
def cluster_list(request: HttpRequest) -> HttpResponse:
    simulator = local_simulator()
    return render(
        request,
        "clusters/cluster_list.html",
        {
            "clusters": select_clusters(),
            "can_operate": has_role(request.user, Role.OPERATOR),
            "simulator_available": simulator is not None
            and not Cluster.objects.filter(name=SIMULATOR_NAME).exists(),
        },
    )


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def cluster_new(request: HttpRequest) -> HttpResponse:
    form = ClusterForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            cluster = cluster_create(
                name=data["name"],
                auth=data["auth"],
                kubeconfig=data.get("kubeconfig") or "",
                context=data.get("context") or "",
                default_namespace=data["default_namespace"],
                region=data.get("region") or "",
                notes=data.get("notes") or "",
                clock_speed=data["clock_speed"],
                actor=request.user,
            )
        except ClusterRefused as error:
            form.add_error("kubeconfig", str(error))
        else:
            messages.success(request, f"Cluster {cluster} added. Check its connection next.")
            return redirect(cluster)
    return render(request, "clusters/cluster_form.html", {"form": form, "editing": None})


@require_POST
@role_required(Role.OPERATOR)
def cluster_add_simulator(request: HttpRequest) -> HttpResponse:
    """Add the kaitosim that `dev.py run` started beside the app, in one click."""
    simulator = local_simulator()
    if simulator is None:
        messages.error(request, "No local simulator: KAITOSIM_KUBECONFIG is not set.")
        return redirect("clusters:list")
    cluster = Cluster.objects.filter(name=SIMULATOR_NAME).first()
    if cluster is None:
        cluster = cluster_create(
            name=SIMULATOR_NAME,
            kubeconfig=simulator.kubeconfig,
            context="kaitosim",
            region="eastus",
            notes="The local KAITO simulator started by `python3 dev.py run`.",
            clock_speed=simulator.speed,
            actor=request.user,
        )
    cluster_check(cluster=cluster, actor=request.user)
    messages.success(request, f"Cluster {cluster} added and checked.")
    return redirect(cluster)


@require_GET
@role_required(Role.VIEWER)
def cluster_detail(request: HttpRequest, name: str) -> HttpResponse:
    cluster = get_object_or_404(Cluster, name=name)
    rows = deployment_rows(cluster=cluster)
    return render(
        request,
        "clusters/cluster_detail.html",
        {
            "cluster": cluster,
            "rows": rows,
            "can_operate": has_role(request.user, Role.OPERATOR),
        },
    )


@require_POST
@role_required(Role.OPERATOR)
def cluster_check_view(request: HttpRequest, name: str) -> HttpResponse:
    cluster = get_object_or_404(Cluster, name=name)
    cluster_check(cluster=cluster, actor=request.user)
    if htmx_partial(request):
        return render(request, "clusters/htmx/check.html", {"cluster": cluster})
    return redirect(cluster)


@require_POST
@role_required(Role.OPERATOR)
def cluster_scan_view(request: HttpRequest, name: str) -> HttpResponse:
    cluster = get_object_or_404(Cluster, name=name)
    try:
        found = cluster_scan(cluster=cluster, follow=True)
    except kube.KubeError as error:
        audit_record(
            actor=request.user,
            action="cluster.scan",
            outcome=AuditEntry.Outcome.FAILED,
            target=cluster.name,
            cluster_name=cluster.name,
            detail=error.message,
        )
        messages.error(request, f"Could not list the cluster's Workspaces: {error.message}")
    else:
        audit_record(
            actor=request.user,
            action="cluster.scan",
            outcome=AuditEntry.Outcome.OK,
            target=cluster.name,
            cluster_name=cluster.name,
            detail=f"{len(found)} Workspace(s) found that kaitoweb did not know",
        )
        messages.info(
            request,
            f"Found {len(found)} Workspace(s) kaitoweb did not know; they are listed read-only "
            "until an operator takes them over."
            if found
            else "No unknown Workspaces.",
        )
    return redirect(cluster)


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def cluster_edit(request: HttpRequest, name: str) -> HttpResponse:
    cluster = get_object_or_404(Cluster, name=name)
    initial = {
        "default_namespace": cluster.default_namespace,
        "region": cluster.region,
        "notes": cluster.notes,
        "clock_speed": cluster.clock_speed,
        "context": cluster.context,
    }
    form = ClusterForm(
        request.POST or None, request.FILES or None, editing=cluster, initial=initial
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            cluster_update(
                cluster=cluster,
                default_namespace=data["default_namespace"],
                region=data.get("region") or "",
                notes=data.get("notes") or "",
                clock_speed=data["clock_speed"],
                kubeconfig=data.get("kubeconfig") or "",
                context=data.get("context") or "",
                actor=request.user,
            )
        except ClusterRefused as error:
            form.add_error("kubeconfig", str(error))
        else:
            messages.success(request, f"Cluster {cluster} saved.")
            return redirect(cluster)
    return render(request, "clusters/cluster_form.html", {"form": form, "editing": cluster})


@require_POST
@role_required(Role.OPERATOR)
def cluster_delete_view(request: HttpRequest, name: str) -> HttpResponse:
    cluster = get_object_or_404(Cluster, name=name)
    try:
        cluster_delete(cluster=cluster, actor=request.user)
    except ClusterRefused as error:
        messages.error(request, f"Cluster {cluster} was not removed: {error}")
        return redirect(cluster)
    messages.success(request, f"Cluster {name} removed from kaitoweb (the cluster is untouched).")
    if htmx_partial(request):
        return HttpResponseClientRedirect("/clusters/")
    return redirect("clusters:list")
