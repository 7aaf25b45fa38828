"""A KAITO deployment as a playground target, measured by real Celery worker processes: an A/B run
started from the page and an experiment started from its form, each reaching the workspace through
the API server's service proxy with the cluster's credentials, which the worker reads itself
(decrypting the kubeconfig, building the CA and the bearer token) from the database rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from apps.accounts.roles import Role
from apps.catalog.services import LoadReport
from apps.clusters.models import Cluster
from apps.deployments.models import Deployment
from apps.playground.models import ABRun, Experiment, Sample, Target
from apps.playground.services import target_save
from kaitosim.foundry import FoundryServer
from tests.conftest import CeleryWorker, wait_for
from tests.deployments.conftest import launch_and_follow
from tests.factories import UserFactory
from tests.playground.conftest import FOUNDRY_KEY
from tests.playground.factories import foundry_target

pytestmark = pytest.mark.django_db(transaction=True)


def ready(d: Deployment) -> bool:
    return d.status == Deployment.Status.READY and bool(d.endpoint_service)


@pytest.fixture
def kaito(cluster: Cluster, catalog: LoadReport) -> Target:
    """phi-4-mini launched on kaitosim through the deployments services, ready, as a target."""
    phi = launch_and_follow(cluster, ready)
    return target_save(target=Target(name="kaito-phi", kind=Target.Kind.KAITO_VLLM, deployment=phi))


@pytest.fixture
def operator() -> Client:
    client = Client()
    client.force_login(UserFactory.create(username="olga", role=Role.OPERATOR))
    return client


def through_the_proxy(sample: Sample, kaito: Target) -> bool:
    """The sample was measured against the workspace's service, through the API server."""
    assert kaito.deployment is not None
    url = str(sample.target_snapshot.get("endpoint_url", ""))
    return url.startswith(kaito.deployment.cluster.api_server.rstrip("/")) and url.endswith(
        f"/services/{kaito.deployment.endpoint_service}:80/proxy"
    )


def test_a_worker_runs_an_ab_run_against_a_deployment_target(
    celery_worker_factory: Callable[..., CeleryWorker],
    kaito: Target,
    foundry: FoundryServer,
    operator: Client,
) -> None:
    worker = celery_worker_factory()
    azure = foundry_target(foundry.url, FOUNDRY_KEY)
    response = operator.post(
        reverse("playground:run_create"),
        {
            "target_a": kaito.pk,
            "target_b": azure.pk,
            "prompt": "What does KAITO do?",
            "system_prompt": "Be brief.",
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
    a, b = run.samples.order_by("side")
    for sample in (a, b):
        assert sample.status == Sample.Status.DONE, sample.error_message
        assert sample.ttft_ms is not None and sample.chunks > 0 and not sample.tokens_estimated
        assert sample.text and sample.cost_usd is not None
    assert a.target == kaito and through_the_proxy(a, kaito)
    assert "abrun_execute_task" in worker.log.read_text()
    page = operator.get(run.get_absolute_url()).content.decode()
    assert "kaito-phi" in page and a.text[:20] in page


def test_a_worker_runs_an_experiment_against_a_deployment_target(
    celery_worker_factory: Callable[..., CeleryWorker],
    kaito: Target,
    foundry: FoundryServer,
    operator: Client,
) -> None:
    worker = celery_worker_factory()
    azure = foundry_target(foundry.url, FOUNDRY_KEY)
    form: dict[str, Any] = {
        "name": "through the cluster",
        "targets": [kaito.pk, azure.pk],
        "builtin": "short-prompts",
        "repetitions": "2",
        "concurrency": "2",
        "max_tokens": "12",
        "timeout_s": "30",
        "storage_policy": "text",
    }
    response = operator.post(reverse("playground:experiment_list"), form)
    experiment = Experiment.objects.get()
    assert response.status_code == 302, response.content.decode()[-2000:]

    def finished() -> bool:
        experiment.refresh_from_db()
        return experiment.finished

    wait_for(finished, timeout=120, what="the worker to finish the experiment")
    assert experiment.status == Experiment.Status.DONE, experiment.error
    samples = Sample.objects.filter(experiment=experiment)
    prompts = len(experiment.prompts)
    assert samples.count() == 2 * 2 * prompts
    failed = [s.error_message for s in samples.exclude(status=Sample.Status.DONE)]
    assert not failed, failed
    on_kaito = samples.filter(target=kaito)
    assert on_kaito.count() == 2 * prompts
    assert all(through_the_proxy(s, kaito) for s in on_kaito)
    assert not on_kaito.filter(ttft_ms__isnull=True).exists()
    assert not on_kaito.filter(tokens_estimated=True).exists()
    assert "experiment_target_task" in worker.log.read_text()

    # The results page reads what the worker wrote: both targets, KAITO's break-even from the
    # deployment's peakTokensPerMinute.
    page = operator.get(experiment.get_absolute_url()).content.decode()
    assert "kaito-phi" in page and "foundry-phi-4" in page
    assert "peakTokensPerMinute</td>" in page
    api = operator.get(
        reverse("playground:experiment_export", args=[experiment.pk, "summary", "json"])
    ).json()
    summary = {t["name"]: t for t in api["targets"]}
    assert summary["kaito-phi"]["ok"] == 2 * prompts and summary["foundry-phi-4"]["errors"] == 0
    assert kaito.deployment is not None
    kaito.deployment.refresh_from_db()
    assert summary["kaito-phi"]["peak_tokens_per_minute"] == kaito.deployment.peak_tokens_per_minute


def test_the_worker_reads_the_clusters_credentials_at_each_run(
    celery_worker_factory: Callable[..., CeleryWorker],
    kaito: Target,
    foundry: FoundryServer,
    operator: Client,
) -> None:
    """A kubeconfig rotated (here: to a revoked token) is what the already running worker uses
    for the next run; the KAITO side fails with the API server's 401 and the Foundry side is
    measured all the same."""
    import yaml

    celery_worker_factory()
    azure = foundry_target(foundry.url, FOUNDRY_KEY)
    assert kaito.deployment is not None
    cluster = kaito.deployment.cluster
    good = cluster.kubeconfig

    def run_once() -> ABRun:
        operator.post(
            reverse("playground:run_create"),
            {
                "target_a": kaito.pk,
                "target_b": azure.pk,
                "prompt": "Hi",
                "max_tokens": "8",
                "timeout_s": "30",
            },
        )
        run = ABRun.objects.order_by("-pk").first()
        assert run is not None

        def finished() -> bool:
            run.refresh_from_db()
            return run.finished

        wait_for(finished, timeout=60, what="the worker to finish the run")
        return run

    first = run_once()
    assert [s.status for s in first.samples.order_by("side")] == ["done", "done"]

    document = yaml.safe_load(good)
    for user in document["users"]:
        if "token" in user["user"]:
            user["user"]["token"] = "revoked-" + user["user"]["token"]
    cluster.kubeconfig = yaml.safe_dump(document)
    cluster.save()
    second = run_once()
    kaito_side, foundry_side = second.samples.order_by("side")
    assert second.status == ABRun.Status.DONE
    assert kaito_side.status == Sample.Status.FAILED and kaito_side.http_status == 401
    assert kaito_side.error_kind == "http" and kaito_side.error_message
    page = operator.get(second.get_absolute_url()).content.decode()
    assert "HTTP 401" in page and f"API server of cluster {cluster.name}" in page
    assert foundry_side.status == Sample.Status.DONE, foundry_side.error_message

    cluster.kubeconfig = good
    cluster.save()
    third = run_once()
    assert [s.status for s in third.samples.order_by("side")] == ["done", "done"]
