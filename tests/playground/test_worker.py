"""A run started from the page is measured by a real Celery worker process."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from apps.accounts.roles import Role
from apps.catalog.services import catalog_load
from apps.playground.models import ABRun, Sample
from kaitosim.foundry import FoundryServer
from kaitosim.inference import InferenceServer
from tests.conftest import wait_for
from tests.factories import UserFactory
from tests.playground.conftest import FOUNDRY_KEY
from tests.playground.factories import foundry_target, kaito_target

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_worker_measures_a_run_started_from_the_page(
    celery_worker_process: Path, foundry: FoundryServer, vllm: InferenceServer
) -> None:
    from django.test import Client

    catalog_load(reference_dir=settings.REFERENCE_DIR)
    kaito = kaito_target(vllm.url)
    azure = foundry_target(foundry.url, FOUNDRY_KEY)
    client = Client()
    client.force_login(UserFactory.create(username="olga", role=Role.OPERATOR))
    response = client.post(
        reverse("playground:run_create"),
        {
            "target_a": kaito.pk,
            "target_b": azure.pk,
            "prompt": "What does KAITO do?",
            "max_tokens": "16",
            "timeout_s": "30",
        },
    )
    run = ABRun.objects.get()
    assert response["Location"] == run.get_absolute_url()

    def finished() -> bool:
        run.refresh_from_db()
        return run.finished

    wait_for(finished, timeout=60, what="the worker to finish the run")
    assert run.status == ABRun.Status.DONE, run.error
    assert [s.status for s in run.samples.order_by("side")] == [Sample.Status.DONE] * 2
    assert "abrun_execute_task" in celery_worker_process.read_text()
