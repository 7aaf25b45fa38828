"""Experiments: start one (operators), follow its progress, read its summary and charts, export
it, vote on answers; and the token-authenticated JSON API for pipelines."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.core.paginator import Paginator
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from apps.accounts.roles import Role, has_role, role_required
from apps.audit.services import audit_record
from apps.playground.experiment_stats import (
    experiment_break_evens,
    experiment_figures,
    experiment_progress,
    experiment_results,
    experiment_sample_columns,
    experiment_sample_rows,
    experiment_settings,
    experiment_side_by_side,
)
from apps.playground.experiments import experiment_cancel, experiment_create
from apps.playground.forms import ExperimentForm, VoteForm
from apps.playground.models import ApiToken, Experiment, PreferenceVote, Target
from apps.playground.prompts import Prompt, PromptSet, PromptSetError, builtin_load
from kaitoweb.htmx import htmx_partial

POLL_MS = 2000


@require_http_methods(["GET", "POST"])
@role_required(Role.VIEWER)
def experiment_list(request: HttpRequest) -> HttpResponse:
    can_run = has_role(request.user, Role.OPERATOR)
    form = None
    status = 200
    if request.method == "POST":
        if not can_run:
            return HttpResponse("Operators start experiments.", status=403)
        form = ExperimentForm(request.POST, request.FILES)
        if form.is_valid():
            data = form.cleaned_data
            experiment = experiment_create(
                user=request.user,
                name=data["name"],
                targets=list(data["targets"]),
                prompt_set=data["prompt_set"],
                repetitions=data["repetitions"],
                concurrency=data["concurrency"],
                max_tokens=data["max_tokens"],
                timeout_s=data["timeout_s"],
                storage_policy=data["storage_policy"],
            )
            audit_record(
                actor=request.user,
                action="experiment.create",
                outcome="requested",
                target=f"experiment {experiment.pk}",
            )
            return redirect(experiment)
        status = 400
    elif can_run:
        form = ExperimentForm()
    page = Paginator(Experiment.objects.select_related("created_by"), 25).get_page(
        request.GET.get("page")
    )
    context = {"form": form, "page_obj": page, "experiments": page}
    return render(request, "playground/experiment_list.html", context, status=status)


def _results_context(experiment: Experiment) -> dict[str, Any]:
    results = experiment_results(experiment)
    evens = experiment_break_evens(results.summaries)
    return {
        "progress": results.progress,
        "summaries": results.summaries,
        "votes": results.votes,
        "break_evens": evens,
        "figures": {
            f"figure-{key}": figure
            for key, figure in experiment_figures(experiment, results.summaries, evens).items()
        },
    }


@require_GET
@vary_on_headers("HX-Request")
@role_required(Role.VIEWER)
def experiment_detail(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = get_object_or_404(Experiment.objects.select_related("created_by"), pk=pk)
    context: dict[str, Any] = {
        "experiment": experiment,
        "poll_ms": POLL_MS,
        "can_run": has_role(request.user, Role.OPERATOR),
    }
    if htmx_partial(request):
        context["partial"] = True
        context["progress"] = experiment_progress(experiment)
        response = render(request, "playground/htmx/experiment_progress.html", context)
        if experiment.finished:
            response.status_code = 286  # htmx stops polling; the fragment links the final page
        return response
    context.update(_results_context(experiment))  # the progress comes with the summary
    context["side_by_side"] = experiment_side_by_side(experiment)
    votes: dict[int, int | None] = {}
    if context["side_by_side"] and request.user.is_authenticated:
        votes = dict(
            PreferenceVote.objects.filter(experiment=experiment, user=request.user).values_list(
                "prompt_index", "target_id"
            )
        )
    for row in context["side_by_side"]:
        row["voted"] = votes.get(row["index"], "none")
    return render(request, "playground/experiment_detail.html", context)


@require_POST
@role_required(Role.OPERATOR)
def experiment_stop(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = experiment_cancel(experiment=get_object_or_404(Experiment, pk=pk))
    audit_record(
        actor=request.user,
        action="experiment.cancel",
        outcome="ok",
        target=f"experiment {experiment.pk}",
    )
    messages.success(request, f"Experiment {experiment.pk} cancelled; finished samples are kept.")
    return redirect(experiment)


@require_POST
@role_required(Role.OPERATOR)
def experiment_vote(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = get_object_or_404(Experiment, pk=pk)
    form = VoteForm(request.POST)
    if not form.is_valid() or not experiment.keeps_text:
        return HttpResponse("Not a vote.", status=400)
    index = form.cleaned_data["prompt_index"]
    target_id = form.cleaned_data["target"]
    if index >= len(experiment.prompts) or (
        target_id is not None and not experiment.targets.filter(pk=target_id).exists()
    ):
        return HttpResponse("Not a prompt or a target of this experiment.", status=400)
    PreferenceVote.objects.update_or_create(
        experiment=experiment,
        prompt_index=index,
        user=request.user,  # type: ignore[misc]
        defaults={"target_id": target_id},
    )
    audit_record(
        actor=request.user,
        action="experiment.vote",
        outcome="ok",
        target=f"experiment {experiment.pk}",
        detail=f"prompt {index}: target {target_id if target_id is not None else 'tie'}",
    )
    return redirect(f"{experiment.get_absolute_url()}#prompt-{index}")


@require_GET
@role_required(Role.VIEWER)
def experiment_export(request: HttpRequest, pk: int, what: str, fmt: str) -> HttpResponse:
    experiment = get_object_or_404(Experiment, pk=pk)
    filename = f"experiment-{experiment.pk}-{what}.{fmt}"
    if what == "summary":
        results = experiment_results(experiment)
        summaries = [s.as_json() for s in results.summaries]
        if fmt == "json":
            payload = {
                "experiment": experiment_settings(experiment),
                "targets": summaries,
                "votes": results.votes.as_json(),
            }
            return _attachment(JsonResponse(payload), filename)
        rows = _summary_rows(summaries, votes=results.votes.as_json())
        return _attachment(_csv_response(rows), filename)
    if what != "samples":
        raise Http404("No such export.")
    if fmt == "json":
        body = {
            "experiment": experiment_settings(experiment),
            "samples": list(experiment_sample_rows(experiment)),
        }
        return _attachment(JsonResponse(body), filename)
    columns = experiment_sample_columns(experiment)
    response = StreamingHttpResponse(
        _csv_lines(columns, experiment_sample_rows(experiment)), content_type="text/csv"
    )
    return _attachment(response, filename)


def _attachment(response: HttpResponse | StreamingHttpResponse, filename: str) -> Any:
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _summary_rows(
    summaries: list[dict[str, Any]], *, votes: dict[str, int]
) -> list[dict[str, Any]]:
    """One row per target, its percentiles flattened (ttft_ms_p50, ...); the experiment's vote
    totals (all votes, and the ties, which belong to no target) repeated on every row."""
    rows = []
    for s in summaries:
        row = {k: v for k, v in s.items() if k not in ("percentiles", "cost")}
        for metric, values in s["percentiles"].items():
            for p, value in values.items():
                row[f"{metric}_{p}"] = value
        row["experiment_votes"] = votes["total"]
        row["experiment_tie_votes"] = votes["ties"]
        rows.append(row)
    return rows


def _csv_response(rows: list[dict[str, Any]]) -> HttpResponse:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return HttpResponse(out.getvalue(), content_type="text/csv")


def _csv_lines(columns: list[str], rows: Any) -> Any:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
        yield out.getvalue()
        out.seek(0)
        out.truncate()
    yield out.getvalue()


# --- the JSON API --------------------------------------------------------------------------------

ApiView = Callable[..., HttpResponse]


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def api_token_required(view: ApiView) -> ApiView:
    """``Authorization: Bearer <token>``; the user behind it needs the operator role."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return JsonResponse({"error": "Send Authorization: Bearer <token>."}, status=401)
        found = (
            ApiToken.objects.select_related("user")
            .filter(token_sha256=token_sha256(token.strip()), user__is_active=True)
            .first()
        )
        if found is None:
            return JsonResponse({"error": "Unknown token."}, status=401)
        if not has_role(found.user, Role.OPERATOR):
            return JsonResponse({"error": "The token's user is not an operator."}, status=403)
        ApiToken.objects.filter(pk=found.pk).update(last_used_at=timezone.now())
        request.user = found.user
        return view(request, *args, **kwargs)

    return wrapper


@login_not_required
@csrf_exempt
@require_POST
@api_token_required
def api_experiments(request: HttpRequest) -> HttpResponse:
    """Start an experiment: {"targets": [names or ids], "prompts": [{"prompt", "system"}] or
    "prompt_set": "<built-in name>", "repetitions", "concurrency", "max_tokens",
    "storage_policy", "name"}."""
    try:
        body = json.loads(request.body or b"{}")
        if not isinstance(body, dict):
            raise ValueError("send a JSON object")
        targets = _api_targets(body.get("targets"))
        if isinstance(body.get("prompts"), list):
            prompt_set = PromptSet(
                name=str(body.get("name") or "api"),
                prompts=tuple(
                    Prompt(prompt=str(p["prompt"]), system=str(p.get("system") or ""))
                    for p in body["prompts"]
                ),
            )
        else:
            prompt_set = builtin_load(str(body.get("prompt_set") or ""))
        policy = str(body.get("storage_policy") or Experiment.StoragePolicy.TEXT)
        if policy not in Experiment.StoragePolicy.values:
            raise ValueError(f"storage_policy is one of {Experiment.StoragePolicy.values}")
        experiment = experiment_create(
            user=request.user,
            name=str(body.get("name") or ""),
            targets=targets,
            prompt_set=prompt_set,
            repetitions=int(body.get("repetitions") or 1),
            concurrency=int(body.get("concurrency") or 4),
            max_tokens=int(body.get("max_tokens") or 256),
            timeout_s=float(body.get("timeout_s") or 60),
            storage_policy=policy,
        )
    except (PromptSetError, ValueError, TypeError, KeyError) as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    audit_record(
        actor=request.user,
        action="experiment.create",
        outcome="requested",
        target=f"experiment {experiment.pk}",
        detail="through the API",
    )
    return JsonResponse(_api_status(experiment), status=201)


def _api_targets(value: Any) -> list[Target]:
    if not isinstance(value, list) or len(value) < 2:
        raise ValueError("targets: a list of two or more target names or ids")
    found = []
    for item in value:
        lookup = {"pk": item} if isinstance(item, int) else {"name": str(item)}
        target = Target.objects.filter(archived_at__isnull=True, **lookup).first()
        if target is None:
            raise ValueError(f"no target {item!r}")
        found.append(target)
    return found


def _api_status(experiment: Experiment) -> dict[str, Any]:
    results = experiment_results(experiment)
    return {
        **experiment_settings(experiment),
        "progress": results.progress,
        "summary": [s.as_json() for s in results.summaries],
        "votes": results.votes.as_json(),
        "url": experiment.get_absolute_url(),
    }


@login_not_required
@csrf_exempt
@require_GET
@api_token_required
def api_experiment_detail(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = Experiment.objects.filter(pk=pk).first()
    if experiment is None:
        return JsonResponse({"error": "No such experiment."}, status=404)
    return JsonResponse(_api_status(experiment))
