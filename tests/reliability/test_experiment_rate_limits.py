"""Provider 429s during an experiment, from kaitosim's Foundry rate limiter (429 with
``Retry-After`` and ``retry-after-ms``, as Azure answers): requests wait out the provider's
Retry-After, samples are measured once the limit lets them through, and a sample still limited
after its attempts (or told to wait longer than an experiment waits) is recorded as an error with
the provider's status and message, never as a success. Every request the server saw is
accounted for by exactly one sample's attempts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings

from apps.catalog.models import FoundryModel
from apps.catalog.services import catalog_load
from apps.playground import experiments
from apps.playground.experiments import experiment_create, experiment_target_chunk
from apps.playground.models import Experiment, Sample, Target
from apps.playground.prompts import Prompt, PromptSet
from kaitosim.foundry import FoundryServer
from tests.conftest import CeleryWorker, wait_for
from tests.kaitosim.loop_thread import LoopThread
from tests.playground.conftest import FOUNDRY_KEY, foundry_start
from tests.playground.factories import foundry_target

pytestmark = pytest.mark.django_db(transaction=True)

LIMITED = "Phi-4"  # the rate-limited deployment; the other target is not limited


@pytest.fixture
def foundry_sim(sim_loop: LoopThread) -> Iterator[Callable[..., FoundryServer]]:
    """kaitosim's Foundry at a chosen speed (its rate-limit windows run in simulated time, so
    Retry-After shrinks with the speed)."""
    servers: list[FoundryServer] = []

    def start(speed: float) -> FoundryServer:
        server = foundry_start(sim_loop, speed=speed)
        servers.append(server)
        return server

    yield start
    for server in servers:
        sim_loop.run(server.stop())


def _limit(sim_loop: LoopThread, server: FoundryServer, **limits: Any) -> None:
    """Change the server's limits on its own loop (it is running requests there)."""

    async def apply() -> None:
        server.set_rate_limit(limits.get("tpm"), limits.get("rpm"), deployment=LIMITED)

    sim_loop.run(apply())


def _targets(server: FoundryServer) -> list[Target]:
    catalog_load(reference_dir=settings.REFERENCE_DIR)
    return [
        foundry_target(server.url, FOUNDRY_KEY, name="foundry-phi-4"),
        foundry_target(
            server.url,
            FOUNDRY_KEY,
            name="foundry-phi-4-mini",
            model_name="Phi-4-mini-instruct",
            foundry_model=FoundryModel.objects.get(name="Phi-4-mini-instruct"),
        ),
    ]


def _experiment(targets: list[Target], prompts: int, concurrency: int, **kw: Any) -> Experiment:
    return experiment_create(
        user=None,
        name="rate limits",
        targets=targets,
        prompt_set=PromptSet("t", tuple(Prompt(f"Question {i}?") for i in range(prompts))),
        concurrency=concurrency,
        max_tokens=8,
        **kw,
    )


def _requests(server: FoundryServer) -> list[int]:
    return [r.status for r in server.records if r.deployment == LIMITED]


def test_requests_wait_out_retry_after_and_every_sample_is_measured_once(
    sim_loop: LoopThread, foundry_sim: Callable[..., FoundryServer]
) -> None:
    # 6 requests a minute: one per 10 simulated seconds, 1 s of real time at speed 10. One
    # request at a time, so each 429's Retry-After is all that separates it from the next.
    server = foundry_sim(10.0)
    _limit(sim_loop, server, rpm=6)
    targets = _targets(server)
    experiment = _experiment(targets, prompts=5, concurrency=1, enqueue=False)
    experiment_target_chunk(experiment_id=experiment.pk, target_id=targets[0].pk, claim="t")
    samples = Sample.objects.filter(experiment=experiment, target=targets[0])
    assert set(samples.values_list("status", flat=True)) == {Sample.Status.DONE}
    attempts = list(samples.values_list("attempts", flat=True))
    # Waiting out the Retry-After the server gave is always enough: never a third attempt. A
    # client that retried sooner would have met another 429.
    assert set(attempts) == {1, 2}
    statuses = _requests(server)
    assert statuses.count(429) == sum(a - 1 for a in attempts) >= 1
    assert statuses.count(200) == 5 == len(attempts)


def test_a_sample_still_limited_after_its_attempts_is_an_error_with_the_providers_message(
    sim_loop: LoopThread,
    foundry_sim: Callable[..., FoundryServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A token limit below a single request's tokens: every request is refused, Retry-After 60
    # simulated seconds (0.6 s at speed 100).
    monkeypatch.setattr(experiments, "RATE_LIMIT_ATTEMPTS", 3)
    server = foundry_sim(100.0)
    _limit(sim_loop, server, tpm=1)
    targets = _targets(server)
    experiment = _experiment(targets, prompts=3, concurrency=3, enqueue=False)
    experiment_target_chunk(experiment_id=experiment.pk, target_id=targets[0].pk, claim="t")
    samples = Sample.objects.filter(experiment=experiment, target=targets[0])
    for sample in samples:
        assert sample.status == Sample.Status.FAILED  # never counted as a success
        assert sample.http_status == 429 and sample.error_kind == "http"
        assert "exceeded token rate limit" in sample.error_message  # the provider's words
        assert "still rate limited after 3 attempts" in sample.error_message
        assert sample.attempts == 3
        assert sample.retry_after_s is not None and 0 < sample.retry_after_s <= 1
        assert sample.output_tokens is None and sample.ttft_ms is None
    assert _requests(server) == [429] * 9


def test_a_retry_after_longer_than_an_experiment_waits_is_not_waited_out(
    sim_loop: LoopThread,
    foundry_sim: Callable[..., FoundryServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(experiments, "RATE_LIMIT_WAIT_MAX_SECONDS", 0)
    server = foundry_sim(100.0)
    _limit(sim_loop, server, tpm=1)
    targets = _targets(server)
    experiment = _experiment(targets, prompts=2, concurrency=1, enqueue=False)
    experiment_target_chunk(experiment_id=experiment.pk, target_id=targets[0].pk, claim="t")
    samples = Sample.objects.filter(experiment=experiment, target=targets[0])
    assert set(samples.values_list("status", "http_status", "attempts")) == {("failed", 429, 1)}
    for message in samples.values_list("error_message", flat=True):
        assert "exceeded token rate limit" in message and "not retried" in message
    assert _requests(server) == [429, 429]


def test_a_worker_rides_out_a_429_storm(
    sim_loop: LoopThread,
    foundry_sim: Callable[..., FoundryServer],
    celery_worker_factory: Callable[..., CeleryWorker],
) -> None:
    """A storm: every request to one deployment answered 429 (Retry-After 0.6 s) until it
    passes; the worker's requests back off, and once it is over the experiment finishes with
    every sample measured, each by one successful request."""
    server = foundry_sim(100.0)
    _limit(sim_loop, server, tpm=1)
    targets = _targets(server)
    celery_worker_factory()
    experiment = _experiment(targets, prompts=6, concurrency=3, repetitions=2)
    wait_for(lambda: _requests(server).count(429) >= 6, timeout=120, what="the storm to bite")
    _limit(sim_loop, server)  # the storm passes

    def finished() -> bool:
        experiment.refresh_from_db()
        return experiment.finished

    wait_for(finished, timeout=180, what="the experiment to finish")
    assert experiment.status == Experiment.Status.DONE, experiment.error
    samples = Sample.objects.filter(experiment=experiment)
    assert samples.count() == 24
    assert set(samples.values_list("status", flat=True)) == {Sample.Status.DONE}
    limited = list(samples.filter(target=targets[0]).values_list("attempts", flat=True))
    assert max(limited) > 1  # the storm was waited out, not ignored
    assert max(limited) <= experiments.RATE_LIMIT_ATTEMPTS
    statuses = _requests(server)
    assert statuses.count(200) == 12  # one successful request per sample
    assert len(statuses) == sum(limited)  # every request the server saw belongs to a sample
