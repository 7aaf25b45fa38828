"""The playground: operators send one prompt to two targets at once; viewers read the history.

A run is a database row measured by a Celery worker; its page polls the row with htmx every
POLL_MS and shows the text as it arrives, stopping (286) when the run is over. Polling rather than
Server-Sent Events because it behaves the same under the dev server and gunicorn's sync workers
(an SSE response would hold a worker for the whole answer, and gunicorn's 30 s timeout would
kill a long one), because a closed tab loses nothing, and because the timing is taken by the
worker, not the browser, so how the page renders never touches the figures.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect

from apps.accounts.roles import Role, has_role, role_required
from apps.audit.services import audit_record
from apps.playground.forms import NoteForm, PlaygroundForm, TargetForm
from apps.playground.models import ABRun, Target
from apps.playground.selectors import (
    abrun_get,
    abrun_history,
    abrun_state,
    default_target_pair,
    target_list,
)
from apps.playground.services import (
    abrun_note_update,
    abrun_rerun,
    abrun_start,
    target_prefill,
    target_save,
)
from apps.playground.services import target_delete as target_delete_service
from kaitoweb.htmx import htmx_partial

POLL_MS = 300
RECENT_RUNS = 8


@require_GET
@role_required(Role.VIEWER)
def home(request: HttpRequest) -> HttpResponse:
    """The form (for operators) and the latest runs (for everyone)."""
    form = None
    if has_role(request.user, Role.OPERATOR):
        initial: dict[str, object] = {}
        again = request.GET.get("again")
        if again and again.isdigit():
            run = ABRun.objects.filter(pk=int(again)).prefetch_related("samples").first()
            if run is not None:
                initial = PlaygroundForm.initial_from_run(run)
        if not initial:
            a, b = default_target_pair()
            initial = {"target_a": a, "target_b": b}
        form = PlaygroundForm(initial=initial)
    return _home(request, form)


def _home(request: HttpRequest, form: PlaygroundForm | None, status: int = 200) -> HttpResponse:
    context = {
        "form": form,
        "targets_exist": Target.objects.filter(archived_at__isnull=True).exists(),
        "recent": abrun_history()[:RECENT_RUNS],
    }
    return render(request, "playground/home.html", context, status=status)


@require_POST
@role_required(Role.OPERATOR)
def run_create(request: HttpRequest) -> HttpResponse:
    form = PlaygroundForm(request.POST)
    if not form.is_valid():
        return _home(request, form, status=400)
    data = form.cleaned_data
    run = abrun_start(
        user=request.user,
        targets=[data["target_a"], data["target_b"]],
        prompt=data["prompt"],
        system_prompt=data["system_prompt"],
        max_tokens=data["max_tokens"],
        temperature=data["temperature"],
        top_p=data["top_p"],
        seed=data["seed"],
        timeout_s=data["timeout_s"],
        note=data["note"],
    )
    audit_record(
        actor=request.user, action="playground.run", outcome="requested", target=f"run {run.pk}"
    )
    return redirect(run)


@require_GET
@vary_on_headers("HX-Request")
@role_required(Role.VIEWER)
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        run = abrun_get(pk)
    except ABRun.DoesNotExist:
        raise Http404("No such run.") from None
    context = {
        "run": run,
        "samples": list(run.samples.all()),
        "state": abrun_state(run),
        "poll_ms": POLL_MS,
        "note_form": NoteForm(initial={"note": run.note}),
        "can_run": has_role(request.user, Role.OPERATOR),
    }
    if htmx_partial(request):
        response = render(request, "playground/htmx/run_sides.html", context)
        if run.finished:
            response.status_code = 286  # htmx stops polling (the fragment has no trigger either)
        return response
    return render(request, "playground/run_detail.html", context)


@require_GET
@vary_on_headers("HX-Request")
@role_required(Role.VIEWER)
def run_list(request: HttpRequest) -> HttpResponse:
    page = Paginator(abrun_history(), 25).get_page(request.GET.get("page"))
    context = {"page_obj": page, "runs": page}
    if htmx_partial(request):
        return render(request, "playground/htmx/run_results.html", context)
    return render(request, "playground/run_list.html", context)


@require_POST
@role_required(Role.OPERATOR)
def run_again(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(ABRun, pk=pk)
    try:
        new = abrun_rerun(run=run, user=request.user)
    except ValueError as exc:
        messages.error(request, str(exc))
        return redirect(run)
    audit_record(
        actor=request.user,
        action="playground.run",
        outcome="requested",
        target=f"run {new.pk}",
        detail=f"again, from run {run.pk}",
    )
    if request.headers.get("HX-Request"):
        return HttpResponseClientRedirect(new.get_absolute_url())
    return redirect(new)


@require_POST
@role_required(Role.OPERATOR)
def run_note(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(ABRun, pk=pk)
    form = NoteForm(request.POST)
    if form.is_valid():
        abrun_note_update(run=run, note=form.cleaned_data["note"])
        audit_record(
            actor=request.user, action="playground.note", outcome="ok", target=f"run {run.pk}"
        )
        messages.success(request, "Note saved.")
    return redirect(run)


@require_GET
@role_required(Role.VIEWER)
def targets(request: HttpRequest) -> HttpResponse:
    context = {"targets": target_list(), "can_edit": has_role(request.user, Role.OPERATOR)}
    return render(request, "playground/target_list.html", context)


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def target_create(request: HttpRequest) -> HttpResponse:
    return _target_form(request, Target())


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def target_edit(request: HttpRequest, pk: int) -> HttpResponse:
    return _target_form(request, get_object_or_404(Target, pk=pk, archived_at__isnull=True))


def _target_form(request: HttpRequest, target: Target) -> HttpResponse:
    notes: list[str] = []
    if request.method == "POST":
        form = TargetForm(request.POST, instance=target)
        if request.POST.get("action") == "prefill":
            # Fill the cost basis and compliance profile from the catalog and the reference
            # facts, and show them for editing; nothing is saved yet.
            form.is_valid()
            draft = form.instance
            notes = target_prefill(target=draft)
            data = request.POST.copy()
            linked = ["kind", "endpoint_url", "model_name", "auth", "region"]
            groups = TargetForm.GROUPS["Cost basis"] + TargetForm.GROUPS["Compliance profile"]
            for name in (linked if draft.deployment_id else []) + groups:
                value = getattr(draft, name)
                if hasattr(value, "pk"):
                    value = value.pk
                if isinstance(value, bool):
                    if value:
                        data[name] = "on"
                    else:
                        data.pop(name, None)
                else:
                    data[name] = "" if value is None else str(value)
            for name in ("foundry_model", "kaito_model"):
                linked = getattr(draft, name)
                data[name] = str(linked.pk) if linked else ""
            form = TargetForm(data, instance=target)
            form.errors.clear()
            if request.POST.get("api_key"):
                notes.append("Enter the API key again before saving: a key is never sent back.")
        elif form.is_valid():
            created = target.pk is None
            saved = target_save(target=form.save(commit=False))
            audit_record(
                actor=request.user,
                action="target.create" if created else "target.update",
                outcome="ok",
                target=saved.name,
                detail=f"fields: {', '.join(form.changed_data)}",  # names only, never values
            )
            messages.success(request, f"Target {saved.name} saved.")
            return redirect("playground:targets")
    else:
        form = TargetForm(instance=target)
    context = {"form": form, "target": target, "notes": notes}
    return render(request, "playground/target_form.html", context)


@require_POST
@role_required(Role.OPERATOR)
def target_delete(request: HttpRequest, pk: int) -> HttpResponse:
    target = get_object_or_404(Target, pk=pk, archived_at__isnull=True)
    name = target.name
    how = target_delete_service(target=target)
    audit_record(actor=request.user, action="target.delete", outcome="ok", target=name, detail=how)
    messages.success(request, f"Target {name} deleted; past runs keep what they measured.")
    return redirect("playground:targets")
