from __future__ import annotations

import uuid
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect, HttpResponseStopPolling

from apps.accounts.roles import Role, has_role, role_required
from apps.catalog.models import KaitoModel
from apps.clusters.models import Cluster
from apps.deployments import selectors
from apps.deployments.failures import REASON_LABELS
from apps.deployments.forms import (
    CustomLaunchForm,
    LaunchBaseForm,
    ManifestLaunchForm,
    PresetLaunchForm,
)
from apps.deployments.models import Deployment
from apps.deployments.services import (
    DeploymentRefused,
    bundle_dry_run,
    deployment_chat,
    deployment_request,
    deployment_teardown_request,
)
from apps.deployments.services import deployment_take_over as take_over_service
from kaitoweb.htmx import htmx_partial


@require_GET
@vary_on_headers("HX-Request")
@role_required(Role.VIEWER)
def deployment_list(request: HttpRequest) -> HttpResponse:
    show = request.GET.get("show", "live")
    rows = selectors.deployment_rows(include_gone=show == "all")
    context = {
        "rows": rows,
        "show": show,
        "moving": selectors.any_moving(rows),
        "can_operate": has_role(request.user, Role.OPERATOR),
        "has_clusters": Cluster.objects.exists(),
    }
    if htmx_partial(request):
        response = render(request, "deployments/htmx/rows.html", context)
        if not context["moving"]:
            response.status_code = HttpResponseStopPolling.status_code
        return response
    return render(request, "deployments/deployment_list.html", context)


def _redirect(request: HttpRequest, url: str) -> HttpResponse:
    if htmx_partial(request):
        return HttpResponseClientRedirect(url)
    return redirect(url)


def _launched(uid: str | None) -> Deployment | None:
    try:
        return Deployment.objects.filter(uid=uuid.UUID(str(uid))).first()
    except ValueError:
        return None


def _launch_flow(
    request: HttpRequest, form: LaunchBaseForm, template: str, context: dict[str, Any]
) -> HttpResponse:
    """Preview (manifests + a server-side dry run), then launch the very same manifests."""
    preview = report = None
    warnings: list[str] = []
    asked = request.method == "POST" and request.POST.get("action") in ("preview", "launch")
    if asked:
        existing = _launched(request.POST.get("deployment_uid"))
        if existing is not None:  # a second click on Launch, or Back and Launch again
            return _redirect(request, existing.get_absolute_url())
    if asked and form.is_valid():
        bundle = form.bundle()
        cluster: Cluster = form.cleaned_data["cluster"]
        preview = bundle.to_yaml()
        warnings = form.warnings()
        report = bundle_dry_run(cluster=cluster, bundle=bundle)
        if request.POST.get("action") == "launch" and report.ok:
            try:
                deployment = deployment_request(
                    cluster=cluster,
                    bundle=bundle,
                    deployment_uid=str(form.cleaned_data["deployment_uid"]),
                    source=form.source_kind(),
                    kaito_model=form.kaito_model(),
                    settings=form.inference_settings(),
                    actor=request.user,
                )
            except DeploymentRefused as error:
                form.add_error(error.field if error.field in form.fields else None, error.message)
            else:
                messages.success(
                    request,
                    f"Launching {deployment.target} on {cluster}: this page follows it live.",
                )
                return _redirect(request, deployment.get_absolute_url())
    return render(
        request,
        template,
        {
            **context,
            "form": form,
            "preview": preview,
            "report": report,
            "warnings": warnings,
            "has_clusters": Cluster.objects.exists(),
        },
    )


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def deployment_launch(request: HttpRequest) -> HttpResponse:
    """Launch a catalog preset (?model=<Hugging Face id> preselects it)."""
    model = None
    if request.method == "GET":
        model_id = request.GET.get("model")
        model = KaitoModel.objects.filter(model_id=model_id).first() if model_id else None
        model = model or KaitoModel.objects.filter(preset_name="phi-4-mini-instruct").first()
        initial: dict[str, Any] = {}
        cluster = Cluster.objects.filter(pk=request.GET.get("cluster") or 0).first()
        if cluster is not None:
            initial = {"cluster": cluster.pk, "namespace": cluster.default_namespace}
        form = PresetLaunchForm(model=model, initial=initial)
    else:
        form = PresetLaunchForm(request.POST)
    return _launch_flow(
        request, form, "deployments/launch_preset.html", {"model": form.chosen_model}
    )


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def deployment_launch_manifest(request: HttpRequest) -> HttpResponse:
    form = ManifestLaunchForm(request.POST or None)
    return _launch_flow(request, form, "deployments/launch_manifest.html", {})


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def deployment_launch_custom(request: HttpRequest) -> HttpResponse:
    form = CustomLaunchForm(request.POST or None)
    return _launch_flow(request, form, "deployments/launch_custom.html", {})


def _detail_context(request: HttpRequest, deployment: Deployment) -> dict[str, Any]:
    vm = deployment.vm()
    return {
        "deployment": deployment,
        "vm": vm,
        "price_per_hour": deployment.price_per_hour(vm),
        "cost_so_far": deployment.cost_so_far(vm),
        "figure": selectors.timeline_figure(deployment),
        "phases": selectors.phase_rows(deployment),
        "proxy_url": selectors.proxy_url(deployment),
        "failure_label": REASON_LABELS.get(deployment.failure_reason, deployment.failure_reason),
        "can_operate": has_role(request.user, Role.OPERATOR),
    }


@require_GET
@vary_on_headers("HX-Request")
@role_required(Role.VIEWER)
def deployment_detail(request: HttpRequest, pk: int) -> HttpResponse:
    deployment = get_object_or_404(
        Deployment.objects.select_related("cluster", "kaito_model", "launched_by"), pk=pk
    )
    context = _detail_context(request, deployment)
    if htmx_partial(request):
        response = render(request, "deployments/htmx/live.html", context)
        if deployment.settled:
            response.status_code = HttpResponseStopPolling.status_code  # 286: stop polling
        return response
    return render(request, "deployments/deployment_detail.html", context)


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def deployment_teardown(request: HttpRequest, pk: int) -> HttpResponse:
    deployment = get_object_or_404(Deployment.objects.select_related("cluster"), pk=pk)
    if request.method == "POST":
        if request.POST.get("confirm_name") != deployment.name:
            messages.error(request, f"Type the deployment's name ({deployment.name}) to confirm.")
        else:
            try:
                deployment_teardown_request(deployment=deployment, actor=request.user)
            except DeploymentRefused as error:
                messages.error(request, f"Not torn down: {error.message}")
            else:
                messages.info(
                    request,
                    f"Tearing down {deployment.target}: the Workspace, its Secret and ConfigMap; "
                    "this page confirms when its nodes are gone.",
                )
                return _redirect(request, deployment.get_absolute_url())
    return render(
        request, "deployments/teardown_confirm.html", _detail_context(request, deployment)
    )


@require_POST
@role_required(Role.OPERATOR)
def deployment_take_over(request: HttpRequest, pk: int) -> HttpResponse:
    deployment = get_object_or_404(Deployment, pk=pk)
    try:
        take_over_service(deployment=deployment, actor=request.user)
    except DeploymentRefused as error:
        messages.error(request, f"Not taken over: {error.message}")
    else:
        messages.success(request, f"{deployment.target} is now managed by kaitoweb.")
    return _redirect(request, deployment.get_absolute_url())


@require_POST
@role_required(Role.OPERATOR)
def deployment_chat_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Stream one reply as plain text (the page's script appends it as it arrives)."""
    deployment = get_object_or_404(Deployment.objects.select_related("cluster"), pk=pk)
    prompt = (request.POST.get("prompt") or "").strip()[:4000]
    if not prompt:
        return HttpResponse("Write a prompt first.", status=400, content_type="text/plain")
    try:
        stream = deployment_chat(deployment=deployment, prompt=prompt, actor=request.user)
    except DeploymentRefused as error:
        return HttpResponse(error.message, status=409, content_type="text/plain")
    response = StreamingHttpResponse(stream, content_type="text/plain; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    # role_required is typed for HttpResponse; a streaming response is served the same way.
    return response  # type: ignore[return-value]
