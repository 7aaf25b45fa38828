"""The playground's pages: who may do what, and what each page shows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.forms import ModelChoiceField
from django.test import Client
from django.urls import reverse

from apps.accounts.roles import Role
from apps.catalog.services import LoadReport
from apps.playground.forms import PlaygroundForm
from apps.playground.models import ABRun, Sample, Target
from tests.playground.factories import foundry_target, kaito_target, queued_run

ClientAs = Callable[[Role | None], Client]
FORM = {
    "system_prompt": "Be brief.",
    "prompt": "What is KAITO?",
    "max_tokens": "64",
    "temperature": "0.2",
    "top_p": "0.9",
    "seed": "11",
    "timeout_s": "30",
    "note": "first try",
}


@pytest.fixture
def targets(catalog: LoadReport) -> tuple[Target, Target]:
    return (
        kaito_target("http://workspace-phi-4-mini.default.svc"),
        foundry_target("https://res.openai.azure.com", "sk-secret-key-123"),
    )


@pytest.fixture
def run(targets: tuple[Target, Target]) -> ABRun:
    return queued_run(list(targets))


def pages(run: ABRun, target: Target) -> list[str]:
    return [
        reverse("playground:home"),
        reverse("playground:run_list"),
        reverse("playground:run_detail", args=[run.pk]),
        reverse("playground:targets"),
        reverse("playground:target_create"),
        reverse("playground:target_edit", args=[target.pk]),
    ]


def writes(run: ABRun, target: Target) -> list[str]:
    return [
        reverse("playground:run_create"),
        reverse("playground:run_again", args=[run.pk]),
        reverse("playground:run_note", args=[run.pk]),
        reverse("playground:target_create"),
        reverse("playground:target_edit", args=[target.pk]),
        reverse("playground:target_delete", args=[target.pk]),
    ]


def test_every_page_needs_a_login(client: Client, run: ABRun, targets: Any) -> None:
    for url in pages(run, targets[0]) + writes(run, targets[0]):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login")), url


def test_a_user_without_a_role_is_refused_everywhere(
    client_as: ClientAs, run: ABRun, targets: Any
) -> None:
    client = client_as(None)
    for url in pages(run, targets[0]):
        assert client.get(url).status_code == 403, url
    for url in writes(run, targets[0]):
        assert client.post(url).status_code == 403, url


def test_a_viewer_reads_runs_and_targets_but_sees_no_form(
    client_as: ClientAs, run: ABRun, targets: Any
) -> None:
    client = client_as(Role.VIEWER)
    home = client.get(reverse("playground:home"))
    assert home.status_code == 200
    assert home.context["form"] is None
    assert b"needs the operator role" in home.content
    assert b'id="playground-form"' not in home.content
    for url in pages(run, targets[0])[:4]:
        assert client.get(url).status_code == 200, url
    listing = client.get(reverse("playground:targets")).content
    assert b"sk-secret-key-123" not in listing
    assert b"stored encrypted" in listing


def test_a_viewer_cannot_run_or_edit_anything(
    client_as: ClientAs, run: ABRun, targets: Any
) -> None:
    client = client_as(Role.VIEWER)
    for url in writes(run, targets[0]):
        assert client.post(url, FORM).status_code == 403, url
    for url in pages(run, targets[0])[4:]:
        assert client.get(url).status_code == 403, url
    assert ABRun.objects.count() == 1 and Target.objects.count() == 2


def test_the_form_defaults_to_kaito_against_foundry(
    client_as: ClientAs, targets: tuple[Target, Target]
) -> None:
    response = client_as(Role.OPERATOR).get(reverse("playground:home"))
    form = response.context["form"]
    assert form.initial["target_a"] == targets[0] and targets[0].is_kaito
    assert form.initial["target_b"] == targets[1] and targets[1].is_foundry


def test_an_operator_starts_a_run_that_a_worker_is_asked_to_measure(
    client_as: ClientAs,
    targets: tuple[Target, Target],
    django_capture_on_commit_callbacks: Any,
) -> None:
    client = client_as(Role.OPERATOR)
    data = {**FORM, "target_a": targets[0].pk, "target_b": targets[1].pk}
    with django_capture_on_commit_callbacks() as queued:
        response = client.post(reverse("playground:run_create"), data)
    run = ABRun.objects.get()
    assert response.status_code == 302 and response["Location"] == run.get_absolute_url()
    assert len(queued) == 1  # the Celery task, sent once the run is committed
    assert run.status == ABRun.Status.QUEUED and run.created_by is not None
    assert (run.prompt, run.max_tokens, run.seed, run.note) == (
        "What is KAITO?",
        64,
        11,
        "first try",
    )
    a, b = run.samples.order_by("side")
    assert a.target_snapshot["name"] == targets[0].name
    assert b.target_snapshot["cost"]["factor"] == "1.100"
    assert b.target_snapshot["compliance"]["data_leaves_network"] is True


def test_an_invalid_form_is_shown_again_with_its_errors(
    client_as: ClientAs, targets: tuple[Target, Target]
) -> None:
    data = {**FORM, "target_a": targets[0].pk, "target_b": targets[1].pk, "temperature": "3"}
    response = client_as(Role.OPERATOR).post(reverse("playground:run_create"), data)
    assert response.status_code == 400
    assert "temperature" in response.context["form"].errors
    assert not ABRun.objects.exists()


def test_run_again_repeats_the_prompt_against_the_same_targets(
    client_as: ClientAs, run: ABRun, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks() as queued:
        response = client_as(Role.OPERATOR).post(reverse("playground:run_again", args=[run.pk]))
    again = ABRun.objects.exclude(pk=run.pk).get()
    assert response["Location"] == again.get_absolute_url()
    assert len(queued) == 1
    assert again.rerun_of == run and (again.prompt, again.seed) == (run.prompt, run.seed)
    assert [s.target for s in again.samples.order_by("side")] == [
        s.target for s in run.samples.order_by("side")
    ]


def test_edit_and_run_fills_the_form_from_a_past_run(client_as: ClientAs, run: ABRun) -> None:
    response = client_as(Role.OPERATOR).get(reverse("playground:home") + f"?again={run.pk}")
    initial = response.context["form"].initial
    assert initial["prompt"] == run.prompt and initial["max_tokens"] == run.max_tokens


def test_a_note_is_saved_with_the_run(client_as: ClientAs, run: ABRun) -> None:
    client = client_as(Role.OPERATOR)
    client.post(reverse("playground:run_note", args=[run.pk]), {"note": "Foundry won on TTFT"})
    run.refresh_from_db()
    assert run.note == "Foundry won on TTFT"


def test_the_run_fragment_polls_until_the_run_is_over_then_stops(
    client_as: ClientAs, run: ABRun
) -> None:
    client = client_as(Role.VIEWER)
    url = reverse("playground:run_detail", args=[run.pk])
    running = client.get(url, headers={"HX-Request": "true"})
    assert running.status_code == 200
    assert b'hx-trigger="every 300ms"' in running.content
    assert b"<html" not in running.content  # the fragment only
    run.status = ABRun.Status.DONE
    run.save()
    done = client.get(url, headers={"HX-Request": "true"})
    assert done.status_code == 286  # htmx stops polling
    assert b"hx-trigger" not in done.content


def test_the_run_page_shows_metrics_errors_and_both_compliance_profiles(
    client_as: ClientAs, run: ABRun
) -> None:
    run.status = ABRun.Status.DONE
    run.start_skew_ms = 0.42
    run.save()
    Sample.objects.filter(run=run, side="a").update(
        status=Sample.Status.DONE,
        text="KAITO runs models on AKS.",
        ttft_ms=81.5,
        itl_mean_ms=9.25,
        itl_p95_ms=12.5,
        e2e_ms=310.0,
        output_tokens_per_s=77.4,
        input_tokens=12,
        output_tokens=24,
        tokens_estimated=True,
        cost_usd="0.000316",
    )
    Sample.objects.filter(run=run, side="b").update(
        status=Sample.Status.FAILED,
        http_status=429,
        error_kind="http",
        error_message="Requests have exceeded call rate limit.",
        retry_after_s=3.0,
        e2e_ms=12.0,
    )
    page = client_as(Role.VIEWER).get(reverse("playground:run_detail", args=[run.pk]))
    html = page.content.decode()
    assert "KAITO runs models on AKS." in html
    assert "81.5 ms" in html and "9.25 / 12.50 ms" in html and "310.0 ms" in html
    assert "estimated" in html and "$0.000316" in html
    assert "HTTP 429" in html and "exceeded call rate limit" in html and "3 s" in html
    assert "0.420 ms of each other" in html
    assert "In your cluster&#x27;s region" in html
    assert "Foundry Data Zone: within the US or EU zone" in html
    assert "up to 30 days" in html
    assert "Run again" not in html  # a viewer reads; only operators run


def test_a_transformers_side_is_labelled_not_streamed(
    client_as: ClientAs, catalog: LoadReport
) -> None:
    chat = kaito_target(
        "http://workspace-falcon.default.svc",
        name="falcon-chat",
        kind=Target.Kind.KAITO_TRANSFORMERS_CHAT,
        model_name="",
    )
    run = queued_run([chat, chat])
    html = client_as(Role.VIEWER).get(run.get_absolute_url()).content.decode()
    assert "not streamed: E2E only" in html
    assert "Waiting for the whole answer (not streamed)" in html


def test_an_unknown_run_is_a_404(client_as: ClientAs, db: None) -> None:
    response = client_as(Role.VIEWER).get(reverse("playground:run_detail", args=[999]))
    assert response.status_code == 404


def test_an_operator_prefills_then_saves_a_target_with_its_key_encrypted(
    client_as: ClientAs, catalog: LoadReport
) -> None:
    client = client_as(Role.OPERATOR)
    data = {
        "name": "phi-4-dz",
        "kind": Target.Kind.FOUNDRY_OPENAI,
        "endpoint_url": "https://res.openai.azure.com/openai/v1/",
        "model_name": "Phi-4",
        "auth": Target.Auth.API_KEY,
        "api_key": "sk-typed-once",
        "api_version": "2024-05-01-preview",
        "deployment_type": Target.DeploymentType.DATA_ZONE,
        "region": "westeurope",
        "cost_basis": Target.CostBasisKind.NONE,
        "price_factor": "1",
        "node_count": "1",
    }
    prefilled = client.post(reverse("playground:target_create"), {**data, "action": "prefill"})
    assert prefilled.status_code == 200 and not Target.objects.exists()
    form = prefilled.context["form"]
    assert form.data["input_per_1m"] == "0.1250" and form.data["price_factor"] == "1.100"
    assert form.data["processing_scope"] == Target.ProcessingScope.FOUNDRY_DATA_ZONE
    assert form.data["data_leaves_network"] == "on"
    assert b"sk-typed-once" not in prefilled.content  # never rendered back
    assert "Enter the API key again before saving" in prefilled.content.decode()

    saved = client.post(reverse("playground:target_create"), {**form.data, "action": "save"})
    assert saved.status_code == 302
    target = Target.objects.get(name="phi-4-dz")
    assert target.api_key == "sk-typed-once" and target.input_per_1m is not None

    edit_url = reverse("playground:target_edit", args=[target.pk])
    assert b"sk-typed-once" not in client.get(edit_url).content
    client.post(edit_url, {**form.data, "action": "save", "api_key": "", "region": "swedencentral"})
    target.refresh_from_db()
    assert target.region == "swedencentral" and target.api_key == "sk-typed-once"


def test_a_key_target_needs_a_key_and_entra_id_is_for_foundry(
    client_as: ClientAs, catalog: LoadReport
) -> None:
    client = client_as(Role.OPERATOR)
    base = {
        "name": "x",
        "kind": Target.Kind.KAITO_VLLM,
        "endpoint_url": "http://svc",
        "model_name": "m",
        "api_version": "2024-05-01-preview",
        "cost_basis": "none",
        "price_factor": "1",
        "node_count": "1",
    }
    no_key = client.post(reverse("playground:target_create"), {**base, "auth": "api_key"})
    assert "api_key" in no_key.context["form"].errors
    entra = client.post(reverse("playground:target_create"), {**base, "auth": "entra_id"})
    assert "auth" in entra.context["form"].errors
    bad_ca = client.post(
        reverse("playground:target_create"), {**base, "auth": "none", "ca_certificate": "x"}
    )
    assert "ca_certificate" in bad_ca.context["form"].errors
    assert not Target.objects.exists()


def test_deleting_a_target_keeps_past_runs(client_as: ClientAs, run: ABRun) -> None:
    target = run.samples.get(side="a").target
    assert target is not None
    name = target.name
    operator = client_as(Role.OPERATOR)
    operator.post(reverse("playground:target_delete", args=[target.pk]))
    # It measured something, so it is archived: the run still tells its two sides apart ...
    sample = run.samples.get(side="a")
    assert sample.target == target and sample.target_snapshot["name"] == name
    assert client_as(Role.VIEWER).get(run.get_absolute_url()).status_code == 200
    # ... its request not yet sent is recorded as failed, not left to be measured ...
    assert sample.status == Sample.Status.FAILED and "deleted" in sample.error_message
    # ... and it is gone from the lists and pickers, its name free for a new target.
    operator.get(reverse("playground:targets"))  # shows (and uses up) "Target ... deleted"
    assert name not in operator.get(reverse("playground:targets")).content.decode()
    picker = PlaygroundForm().fields["target_a"]
    assert isinstance(picker, ModelChoiceField) and picker.queryset is not None
    assert target not in picker.queryset
    assert operator.get(reverse("playground:target_edit", args=[target.pk])).status_code == 404
    kaito_target("http://127.0.0.1:9/v1", name=name)
    assert Target.objects.get(name=name).pk != target.pk


def test_deleting_a_target_that_never_measured_anything_deletes_it(
    client_as: ClientAs, catalog: LoadReport
) -> None:
    unused = kaito_target("http://127.0.0.1:9/v1", name="unused")
    client_as(Role.OPERATOR).post(reverse("playground:target_delete", args=[unused.pk]))
    assert not Target.objects.filter(pk=unused.pk).exists()


def test_the_history_lists_runs_newest_first(
    client_as: ClientAs, targets: tuple[Target, Target]
) -> None:
    first = queued_run(list(targets), prompt="first")
    second = queued_run(list(targets), prompt="second")
    client = client_as(Role.VIEWER)
    page = client.get(reverse("playground:run_list"))
    assert [r.pk for r in page.context["runs"]] == [second.pk, first.pk]
    fragment = client.get(reverse("playground:run_list"), headers={"HX-Request": "true"})
    assert b"<html" not in fragment.content and b"run-table" in fragment.content


def test_the_navigation_offers_the_playground_to_viewers(client_as: ClientAs, db: None) -> None:
    response = client_as(Role.VIEWER).get(reverse("playground:home"))
    assert any(item["label"] == "Playground" for item in response.context["nav_items"])


def test_admins_see_targets_and_runs_in_django_admin_without_the_key(
    client_as: ClientAs, run: ABRun, targets: tuple[Target, Target]
) -> None:
    client = client_as(Role.ADMIN)
    for url in (
        reverse("admin:playground_target_changelist"),
        reverse("admin:playground_target_change", args=[targets[1].pk]),
        reverse("admin:playground_abrun_changelist"),
        reverse("admin:playground_abrun_change", args=[run.pk]),
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        assert b"sk-secret-key-123" not in response.content


def test_a_run_no_worker_took_or_that_outlived_its_timeout_says_so(
    client_as: ClientAs, run: ABRun
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    client = client_as(Role.VIEWER)
    ABRun.objects.filter(pk=run.pk).update(created_at=timezone.now() - timedelta(seconds=30))
    assert b"No worker has taken this run yet" in client.get(run.get_absolute_url()).content
    ABRun.objects.filter(pk=run.pk).update(
        status=ABRun.Status.RUNNING, started_at=timezone.now() - timedelta(seconds=200)
    )  # the run's timeout is 20 s
    assert b"the worker may have stopped" in client.get(run.get_absolute_url()).content
