"""Experiments measured by a real Celery worker process: the fan-out finishes, and cancelling
stops a running experiment while keeping what was measured."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from apps.catalog.services import catalog_load
from apps.playground.experiments import experiment_cancel, experiment_create
from apps.playground.models import Experiment, Sample
from apps.playground.prompts import Prompt, PromptSet
from kaitosim.foundry import FoundryServer
from kaitosim.inference import InferenceServer
from tests.conftest import wait_for
from tests.kaitosim.loop_thread import LoopThread
from tests.playground.conftest import FOUNDRY_KEY, inference_start
from tests.playground.factories import foundry_target, kaito_target

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def slow_vllm(loop_thread: LoopThread) -> Iterator[InferenceServer]:
    server = inference_start(loop_thread, speed=1.0)
    yield server
    loop_thread.run(server.stop())


def test_a_worker_measures_every_sample_of_an_experiment(
    celery_worker_process: Path, foundry: FoundryServer, vllm: InferenceServer
) -> None:
    catalog_load(reference_dir=settings.REFERENCE_DIR)
    experiment = experiment_create(
        user=None,
        name="worker",
        targets=[kaito_target(vllm.url), foundry_target(foundry.url, FOUNDRY_KEY)],
        prompt_set=PromptSet("t", tuple(Prompt(f"Question {i}?") for i in range(5))),
        repetitions=4,
        concurrency=2,  # chunks of 16: each target's chain takes two tasks
        max_tokens=8,
    )

    def finished() -> bool:
        experiment.refresh_from_db()
        return experiment.finished

    wait_for(finished, timeout=60, what="the experiment to finish")
    assert experiment.status == Experiment.Status.DONE
    samples = Sample.objects.filter(experiment=experiment)
    assert samples.count() == 40
    assert set(samples.values_list("status", flat=True)) == {Sample.Status.DONE}
    log = celery_worker_process.read_text()
    assert log.count("experiment_target_task") >= 4


def test_cancelling_stops_a_running_experiment(
    celery_worker_process: Path, foundry: FoundryServer, slow_vllm: InferenceServer
) -> None:
    catalog_load(reference_dir=settings.REFERENCE_DIR)
    experiment = experiment_create(
        user=None,
        name="cancel me",
        targets=[kaito_target(slow_vllm.url), foundry_target(foundry.url, FOUNDRY_KEY)],
        prompt_set=PromptSet("t", tuple(Prompt(f"Question {i}?") for i in range(10))),
        repetitions=3,
        concurrency=1,
        max_tokens=32,
    )
    done = Sample.objects.filter(experiment=experiment, status=Sample.Status.DONE)
    wait_for(lambda: done.filter(target__name="kaito-phi-4-mini").exists(), timeout=60)
    experiment_cancel(experiment=experiment)

    def closed() -> bool:
        return not Sample.objects.filter(
            experiment=experiment, status__in=["pending", "streaming"]
        ).exists()

    wait_for(closed, timeout=30, what="the requests in flight to end")
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.CANCELLED
    kaito = Sample.objects.filter(experiment=experiment, target__name="kaito-phi-4-mini")
    assert 1 <= kaito.filter(status="done").count() < 30
    assert kaito.filter(status="skipped").exists()
