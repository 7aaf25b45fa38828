"""Experiments through the web: the form and its prompt-set errors, roles, the results page and
its progress polling, exports under each storage policy, votes, the abtest command and the API."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from apps.accounts.roles import Role
from apps.catalog.services import LoadReport
from apps.playground.experiment_views import token_sha256
from apps.playground.experiments import experiment_create, experiment_run_sync
from apps.playground.models import ApiToken, Experiment, PreferenceVote, Sample, Target
from apps.playground.prompts import Prompt, PromptSet, PromptSetError, parse_csv, parse_jsonl
from kaitosim.foundry import FoundryServer
from kaitosim.inference import InferenceServer
from tests.factories import UserFactory
from tests.playground.conftest import FOUNDRY_KEY
from tests.playground.factories import foundry_target, kaito_target

ClientAs = Callable[[Role | None], Client]
SECRET = "Top secret roadmap: launch phi-5 in March. Summarise."


@pytest.fixture
def targets(catalog: LoadReport, foundry: FoundryServer, vllm: InferenceServer) -> list[Target]:
    return [kaito_target(vllm.url), foundry_target(foundry.url, FOUNDRY_KEY)]


def measured(targets: list[Target], policy: str = "text") -> Experiment:
    experiment = experiment_create(
        user=None,
        name="measured",
        targets=targets,
        prompt_set=PromptSet("t", (Prompt("What is KAITO?"), Prompt(SECRET, "Be brief."))),
        repetitions=2,
        concurrency=2,
        max_tokens=8,
        storage_policy=policy,
        enqueue=False,
    )
    return experiment_run_sync(experiment=experiment)


def _body(response: Any) -> str:
    if response.streaming:
        return b"".join(response.streaming_content).decode()
    return str(response.content.decode())


# --- prompt files ---------------------------------------------------------------------------------


def test_jsonl_errors_name_their_lines() -> None:
    content = '{"prompt": "ok"}\n\nnot json\n{"system": "x"}\n["a"]\n{"prompt": "b", "system": 3}\n'
    with pytest.raises(PromptSetError) as caught:
        parse_jsonl(content, name="f.jsonl")
    assert caught.value.errors == [
        "Line 3: not valid JSON (Expecting value).",
        'Line 4: "prompt" is missing or empty.',
        'Line 5: expected an object like {"prompt": "..."}.',
        'Line 6: "system" must be a string.',
    ]


def test_csv_needs_a_prompt_column_and_names_empty_lines() -> None:
    with pytest.raises(PromptSetError, match="Line 1: the header has no prompt column"):
        parse_csv("question\nhi\n", name="f.csv")
    with pytest.raises(PromptSetError) as caught:
        parse_csv("Prompt,System\nhello,be nice\n,\n", name="f.csv")
    assert caught.value.errors == ["Line 3: the prompt is empty."]
    assert parse_csv("prompt\nhello\n", name="f.csv").prompts == (Prompt("hello"),)


# --- the form and roles ---------------------------------------------------------------------------


def test_viewers_read_experiments_but_cannot_start_one(
    client_as: ClientAs, catalog: LoadReport
) -> None:
    viewer = client_as(Role.VIEWER)
    page = viewer.get(reverse("playground:experiment_list"))
    assert page.status_code == 200 and b"experiment-form" not in page.content
    assert viewer.post(reverse("playground:experiment_list"), {}).status_code == 403
    assert client_as(None).get(reverse("playground:experiment_list")).status_code == 403


def test_an_operator_starts_an_experiment_from_an_upload(
    client_as: ClientAs, targets: list[Target]
) -> None:
    operator = client_as(Role.OPERATOR)
    upload = SimpleUploadedFile("p.csv", b"prompt,system\nWhat is KAITO?,\nHi,Be brief\n")
    form = {
        "name": "upload",
        "targets": [t.pk for t in targets],
        "upload": upload,
        "repetitions": "2",
        "concurrency": "3",
        "max_tokens": "16",
        "timeout_s": "30",
        "storage_policy": "hashes",
    }
    response = operator.post(reverse("playground:experiment_list"), form)
    experiment = Experiment.objects.get()
    assert response["Location"] == experiment.get_absolute_url()
    assert experiment.prompt_set_name == "p.csv" and experiment.concurrency == 3
    assert Sample.objects.filter(experiment=experiment).count() == 2 * 2 * 2


def test_the_form_shows_an_uploads_line_errors(client_as: ClientAs, targets: list[Target]) -> None:
    operator = client_as(Role.OPERATOR)
    upload = SimpleUploadedFile("p.jsonl", b'{"prompt": "fine"}\n{"prompt": ""}\n')
    form = {
        "targets": [t.pk for t in targets],
        "upload": upload,
        "repetitions": "1",
        "concurrency": "1",
        "max_tokens": "16",
        "timeout_s": "30",
        "storage_policy": "text",
    }
    response = operator.post(reverse("playground:experiment_list"), form)
    assert response.status_code == 400
    assert "Line 2: &quot;prompt&quot; is missing or empty." in response.content.decode()
    single = {**form, "targets": [targets[0].pk], "upload": "", "builtin": "short-prompts"}
    response = operator.post(reverse("playground:experiment_list"), single)
    assert response.status_code == 400 and b"Pick at least two targets." in response.content
    assert not Experiment.objects.exists()


# --- the results page -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_results_page_shows_figures_charts_and_answers(
    client_as: ClientAs, targets: list[Target]
) -> None:
    experiment = measured(targets)
    viewer = client_as(Role.VIEWER)
    page = viewer.get(experiment.get_absolute_url()).content.decode()
    for name in (t.name for t in targets):
        assert name in page
    assert 'id="figure-ttft_ms"' in page and 'id="figure-break_even"' in page
    assert "vendor/plotly/plotly.min.js" in page
    assert "V* = M × 1,000,000 ÷ p" in page  # the formulas are on the page
    assert SECRET in page and 'id="prompt-1"' in page
    poll = viewer.get(experiment.get_absolute_url(), headers={"HX-Request": "true"})
    assert poll.status_code == 286 and b'value="100"' in poll.content


def test_the_progress_fragment_polls_while_running(
    client_as: ClientAs, targets: list[Target]
) -> None:
    experiment = experiment_create(
        user=None,
        name="x",
        targets=targets,
        prompt_set=PromptSet("t", (Prompt("a"),)),
        enqueue=False,
    )
    poll = client_as(Role.VIEWER).get(experiment.get_absolute_url(), headers={"HX-Request": "true"})
    assert poll.status_code == 200 and b'hx-trigger="every 2000ms"' in poll.content
    assert b"0 / 2 requests" in poll.content


@pytest.mark.django_db(transaction=True)
def test_hashed_experiments_show_and_export_no_text(
    client_as: ClientAs, targets: list[Target]
) -> None:
    experiment = measured(targets, policy="hashes")
    viewer = client_as(Role.VIEWER)
    assert SECRET not in viewer.get(experiment.get_absolute_url()).content.decode()
    for what in ("samples", "summary"):
        for fmt in ("csv", "json"):
            url = reverse("playground:experiment_export", args=[experiment.pk, what, fmt])
            response = viewer.get(url)
            text = _body(response)
            assert response.status_code == 200 and "attachment" in response["Content-Disposition"]
            assert SECRET not in text and "What is KAITO" not in text
            assert FOUNDRY_KEY not in text
    url = reverse("playground:experiment_export", args=[experiment.pk, "samples", "csv"])
    rows = list(csv.DictReader(io.StringIO(_body(viewer.get(url)))))
    assert len(rows) == 8 and "answer" not in rows[0] and len(rows[0]["prompt_sha256"]) == 64


@pytest.mark.django_db(transaction=True)
def test_exports_keep_text_when_the_policy_does(client_as: ClientAs, targets: list[Target]) -> None:
    experiment = measured(targets)
    viewer = client_as(Role.VIEWER)
    url = reverse("playground:experiment_export", args=[experiment.pk, "samples", "json"])
    data = viewer.get(url).json()
    assert len(data["samples"]) == 8 and data["experiment"]["storage_policy"] == "text"
    assert {s["prompt"] for s in data["samples"]} == {"What is KAITO?", SECRET}
    assert all(s["answer"] and s["ttft_ms"] for s in data["samples"])
    assert FOUNDRY_KEY not in json.dumps(data)
    summary = viewer.get(
        reverse("playground:experiment_export", args=[experiment.pk, "summary", "csv"])
    ).content.decode()
    rows = list(csv.DictReader(io.StringIO(summary)))
    assert len(rows) == 2 and rows[0]["ttft_ms_p50"] and rows[0]["cost_per_1m"]


@pytest.mark.django_db(transaction=True)
def test_nothing_policy_pages_keep_only_figures(client_as: ClientAs, targets: list[Target]) -> None:
    experiment = measured(targets, policy="nothing")
    page = client_as(Role.VIEWER).get(experiment.get_absolute_url()).content.decode()
    assert SECRET not in page and "keeps nothing of its prompts" in page


@pytest.mark.django_db(transaction=True)
def test_an_operator_votes_for_an_answer(client_as: ClientAs, targets: list[Target]) -> None:
    experiment = measured(targets)
    operator = client_as(Role.OPERATOR)
    url = reverse("playground:experiment_vote", args=[experiment.pk])
    operator.post(url, {"prompt_index": 1, "target": targets[1].pk})
    operator.post(url, {"prompt_index": 1, "target": targets[0].pk})  # changed mind
    vote = PreferenceVote.objects.get()
    assert vote.prompt_index == 1 and vote.target == targets[0]
    assert operator.post(url, {"prompt_index": 9}).status_code == 400
    assert client_as(Role.VIEWER).post(url, {"prompt_index": 0}).status_code == 403


def test_an_operator_cancels(client_as: ClientAs, targets: list[Target]) -> None:
    experiment = experiment_create(
        user=None,
        name="x",
        targets=targets,
        prompt_set=PromptSet("t", (Prompt("a"),)),
        enqueue=False,
    )
    assert (
        client_as(Role.VIEWER)
        .post(reverse("playground:experiment_cancel", args=[experiment.pk]))
        .status_code
        == 403
    )
    client_as(Role.OPERATOR).post(reverse("playground:experiment_cancel", args=[experiment.pk]))
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.CANCELLED


# --- the command ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_abtest_runs_a_file_and_writes_the_result(targets: list[Target], tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "What is KAITO?"}\n{"prompt": "Hi", "system": "Be brief"}\n')
    output = tmp_path / "result.json"
    out = io.StringIO()
    call_command(
        "abtest",
        "--targets",
        ",".join(t.name for t in targets),
        "--prompts",
        str(prompts),
        "--concurrency",
        "8",
        "--repetitions",
        "2",
        "--max-tokens",
        "8",
        "--output",
        str(output),
        stdout=out,
    )
    table = out.getvalue()
    assert "done" in table and "TTFT p50" in table
    assert all(f"{t.name}" in table and "4/4" in table for t in targets)
    result = json.loads(output.read_text())
    assert len(result["samples"]) == 8 and len(result["summary"]) == 2
    with pytest.raises(CommandError, match="No target is called 'nope'"):
        call_command("abtest", "--targets", "nope,x", "--prompts", str(prompts))


# --- the API --------------------------------------------------------------------------------------


def _token(role: Role) -> str:
    user = UserFactory.create(username=f"api-{role.group_name}", role=role)
    token = f"tok-{role.group_name}"
    ApiToken.objects.create(user=user, name="ci", token_sha256=token_sha256(token), prefix="tok")
    return token


@pytest.mark.django_db(transaction=True)
def test_the_api_starts_an_experiment_and_reports_it(
    targets: list[Target], monkeypatch: pytest.MonkeyPatch
) -> None:
    queued: list[Experiment] = []
    monkeypatch.setattr(
        "apps.playground.experiments.experiment_enqueue",
        lambda *, experiment: queued.append(experiment),
    )
    client = Client()
    token = _token(Role.OPERATOR)
    body = {
        "targets": [t.name for t in targets],
        "prompts": [{"prompt": "What is KAITO?"}],
        "repetitions": 2,
        "concurrency": 2,
        "max_tokens": 8,
        "storage_policy": "nothing",
    }
    response = client.post(
        "/api/experiments/",
        json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.content
    experiment = Experiment.objects.get(pk=response.json()["id"])
    assert experiment.storage_policy == "nothing" and experiment.samples.count() == 4
    assert queued == [experiment]  # on commit, one task chain per target
    experiment_run_sync(experiment=experiment)
    status = client.get(
        f"/api/experiments/{experiment.pk}/", headers={"Authorization": f"Bearer {token}"}
    ).json()
    assert status["status"] == "done" and status["progress"]["closed"] == 4
    assert {s["name"] for s in status["summary"]} == {t.name for t in targets}
    assert status["summary"][0]["percentiles"]["ttft_ms"]["p50"] is not None
    assert ApiToken.objects.get().last_used_at is not None


def test_the_api_refuses_bad_tokens_and_viewers(catalog: LoadReport) -> None:
    client = Client()
    assert client.get("/api/experiments/1/").status_code == 401
    bad = client.get("/api/experiments/1/", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    viewer = _token(Role.VIEWER)
    refused = client.get("/api/experiments/1/", headers={"Authorization": f"Bearer {viewer}"})
    assert refused.status_code == 403
    operator = _token(Role.OPERATOR)
    missing = client.get("/api/experiments/999/", headers={"Authorization": f"Bearer {operator}"})
    assert missing.status_code == 404
    invalid = client.post(
        "/api/experiments/",
        json.dumps({"targets": ["a"]}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {operator}"},
    )
    assert invalid.status_code == 400 and "two or more" in invalid.json()["error"]


def test_tokens_are_stored_hashed_and_shown_once_in_admin(db: None) -> None:
    admin = UserFactory.create(username="root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin)
    response = client.post(
        reverse("admin:playground_apitoken_add"), {"user": admin.pk, "name": "ci"}, follow=True
    )
    token = ApiToken.objects.get()
    message = next(m.message for m in response.context["messages"])
    shown = message.split("shown only now: ")[1].split(" ")[0]
    assert token.token_sha256 == token_sha256(shown) and shown not in token.token_sha256
    assert token.prefix == shown[:8]


@pytest.mark.django_db(transaction=True)
def test_the_results_page_draws_its_charts_without_inline_script(
    client_as: ClientAs, targets: list[Target]
) -> None:
    """The Content-Security-Policy runs no inline script: each chart names its figure's
    json_script and static/js/charts.js draws it."""
    import re

    experiment = measured(targets)
    page = client_as(Role.VIEWER).get(experiment.get_absolute_url()).content.decode()
    for key in ("ttft_ms", "itl_mean_ms", "e2e_ms", "scatter", "cost", "break_even"):
        assert f'data-plotly-source="figure-{key}"' in page
        assert f'<script id="figure-{key}" type="application/json">' in page
    inline = [
        tag
        for tag in re.findall(r"<script[^>]*>", page)
        if "src=" not in tag and 'type="application/json"' not in tag
    ]
    assert inline == []
    assert "js/charts.js" in page
