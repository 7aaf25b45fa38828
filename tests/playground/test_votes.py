"""Preference votes through the views: operators vote (a target, or a tie), change their minds, and
the results page, the summary exports (CSV and JSON) and the JSON API show per target how many
votes it got and on how many prompts it was preferred, with the ties."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

import pytest
from django.test import Client
from django.urls import reverse

from apps.accounts.roles import Role
from apps.playground.experiment_views import token_sha256
from apps.playground.experiments import experiment_create
from apps.playground.models import ApiToken, Experiment, PreferenceVote, Target
from apps.playground.prompts import Prompt, PromptSet
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

FOUR = PromptSet("four", tuple(Prompt(f"Question {i}?") for i in range(4)))


@pytest.fixture
def targets(db: None) -> list[Target]:
    """Two targets never called: votes need no measurement."""
    return [
        Target.objects.create(
            name=name, kind=Target.Kind.KAITO_VLLM, endpoint_url="http://127.0.0.1:9/"
        )
        for name in ("alpha", "beta")
    ]


@pytest.fixture
def experiment(targets: list[Target]) -> Experiment:
    return experiment_create(
        user=None, name="votes", targets=targets, prompt_set=FOUR, enqueue=False
    )


def operators(n: int) -> list[Client]:
    clients = []
    for i in range(n):
        client = Client()
        client.force_login(UserFactory.create(username=f"voter-{i}", role=Role.OPERATOR))
        clients.append(client)
    return clients


def vote(client: Client, experiment: Experiment, prompt: int, target: Target | None) -> None:
    response = client.post(
        reverse("playground:experiment_vote", args=[experiment.pk]),
        {"prompt_index": prompt, "target": "" if target is None else target.pk},
    )
    assert response.status_code == 302, response.content
    assert response["Location"].endswith(f"#prompt-{prompt}")


@pytest.fixture
def voted(experiment: Experiment, targets: list[Target]) -> Experiment:
    """Worked by hand: alpha 2 votes, beta 5, ties 2 (9 votes) from 3 people on 4 prompts.

    prompt 0: alpha, alpha, beta  -> alpha preferred
    prompt 1: beta, tie           -> no winner: a tied prompt
    prompt 2: tie, beta, beta     -> beta preferred
    prompt 3: beta                -> beta preferred
    """
    alpha, beta = targets
    ann, bob, cat = operators(3)
    vote(cat, experiment, 0, alpha)  # cat first prefers alpha on prompt 0...
    vote(ann, experiment, 0, alpha)
    vote(bob, experiment, 0, alpha)
    vote(cat, experiment, 0, beta)  # ...then changes her mind: one vote each, the last counts
    vote(ann, experiment, 1, beta)
    vote(bob, experiment, 1, None)
    vote(ann, experiment, 2, None)
    vote(bob, experiment, 2, beta)
    vote(cat, experiment, 2, beta)
    vote(cat, experiment, 3, beta)
    assert PreferenceVote.objects.filter(experiment=experiment).count() == 9
    return experiment


def test_the_results_page_tallies_the_votes_per_target(
    voted: Experiment, client_as: Callable[[Role | None], Client]
) -> None:
    page = client_as(Role.VIEWER).get(voted.get_absolute_url()).content.decode()
    assert (
        '<span class="preferred" data-target="alpha">preferred on 1 prompt (2 votes)</span>' in page
    )
    assert (
        '<span class="preferred" data-target="beta">preferred on 2 prompts (5 votes)</span>' in page
    )
    assert "Preference votes: 9 from 3 people on 4 prompts; 2 ties (neither answer better)" in page
    assert "1 prompt had no such winner" in page


def test_a_page_with_no_votes_says_so(
    experiment: Experiment, client_as: Callable[[Role | None], Client]
) -> None:
    page = client_as(Role.VIEWER).get(experiment.get_absolute_url()).content.decode()
    assert "No preference votes yet" in page and 'class="preferred"' not in page


def test_the_summary_exports_carry_the_votes(
    voted: Experiment, targets: list[Target], client_as: Callable[[Role | None], Client]
) -> None:
    viewer = client_as(Role.VIEWER)
    url = reverse("playground:experiment_export", args=[voted.pk, "summary", "json"])
    data = viewer.get(url).json()
    by_name = {t["name"]: t for t in data["targets"]}
    assert (by_name["alpha"]["preferred_votes"], by_name["alpha"]["preferred_prompts"]) == (2, 1)
    assert (by_name["beta"]["preferred_votes"], by_name["beta"]["preferred_prompts"]) == (5, 2)
    assert data["votes"] == {"total": 9, "ties": 2, "voters": 3, "prompts": 4, "tied_prompts": 1}

    url = reverse("playground:experiment_export", args=[voted.pk, "summary", "csv"])
    rows = {r["name"]: r for r in csv.DictReader(io.StringIO(viewer.get(url).content.decode()))}
    assert rows["alpha"]["preferred_votes"] == "2" and rows["alpha"]["preferred_prompts"] == "1"
    assert rows["beta"]["preferred_votes"] == "5" and rows["beta"]["preferred_prompts"] == "2"
    assert {r["experiment_votes"] for r in rows.values()} == {"9"}
    assert {r["experiment_tie_votes"] for r in rows.values()} == {"2"}


def test_the_api_reports_the_votes(voted: Experiment) -> None:
    user = UserFactory.create(username="pipeline", role=Role.OPERATOR)
    ApiToken.objects.create(user=user, name="ci", token_sha256=token_sha256("tok"), prefix="tok")
    status = (
        Client()
        .get(f"/api/experiments/{voted.pk}/", headers={"Authorization": "Bearer tok"})
        .json()
    )
    by_name = {s["name"]: s for s in status["summary"]}
    assert by_name["alpha"]["preferred_votes"] == 2 and by_name["beta"]["preferred_prompts"] == 2
    assert status["votes"]["ties"] == 2 and status["votes"]["total"] == 9


def test_a_tie_is_a_choice_on_the_page_and_is_marked_as_yours(
    experiment: Experiment, targets: list[Target]
) -> None:
    # The page shows answers side by side only for kept text, once measured: fill them in.
    experiment.samples.filter(repetition=0).update(status="done", text="An answer.")
    (ann,) = operators(1)
    page = ann.get(experiment.get_absolute_url()).content.decode()
    assert page.count("Tie: neither is better") == len(FOUR.prompts)
    assert page.count("Prefer this") == len(FOUR.prompts) * len(targets)
    assert "your choice" not in page
    vote(ann, experiment, 2, None)
    page = ann.get(experiment.get_absolute_url()).content.decode()
    prompt_2 = page.split('id="prompt-2"')[1].split('id="prompt-3"')[0]
    assert prompt_2.count("your choice") == 1
    assert prompt_2.index("your choice") > prompt_2.index("Tie: neither is better")
    assert "your choice" not in page.split('id="prompt-2"')[0]


def test_votes_for_a_target_outside_the_experiment_or_by_viewers_are_refused(
    experiment: Experiment, client_as: Callable[[Role | None], Client]
) -> None:
    other = Target.objects.create(
        name="other", kind=Target.Kind.KAITO_VLLM, endpoint_url="http://127.0.0.1:9/"
    )
    url = reverse("playground:experiment_vote", args=[experiment.pk])
    (ann,) = operators(1)
    assert ann.post(url, {"prompt_index": 0, "target": other.pk}).status_code == 400
    assert ann.post(url, {"prompt_index": 4, "target": ""}).status_code == 400
    assert client_as(Role.VIEWER).post(url, {"prompt_index": 0}).status_code == 403
    assert not PreferenceVote.objects.exists()
    page = ann.get(experiment.get_absolute_url()).content.decode()
    assert "No preference votes yet" in page
