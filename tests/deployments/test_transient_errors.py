"""5xx answers from the API server are retried with backoff, never fatal; the transformers runtime
is KAITO's annotation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from apps.clusters.models import Cluster
from apps.deployments import services
from apps.deployments.models import Deployment
from tests.conftest import CeleryWorker
from tests.deployments.conftest import (
    FAULT_ANNOTATION,
    follow,
    launch_and_follow,
    launch_request,
    wait_rows,
)

Status = Deployment.Status


@pytest.mark.django_db
def test_reads_that_fail_with_500_every_other_time_are_retried_and_reach_ready(
    cluster: Cluster, catalog: object
) -> None:
    d = services.deployment_launch(
        deployment_id=launch_request(cluster, annotations={FAULT_ANNOTATION: "api-500"}).pk
    )
    errors: list[str] = []

    def seen(d: Deployment) -> bool:
        errors.extend([d.sync_error] if d.sync_error else [])
        return d.status == Status.READY

    follow(d, seen)
    assert errors == []  # each 500 was retried inside kube.py (0.1 s, then 0.3 s)


@pytest.mark.django_db
def test_a_sync_that_keeps_meeting_500s_records_the_error_and_keeps_the_last_state(
    simulator_cluster: Callable[..., tuple[Any, Cluster]],
    catalog: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from apps.clusters import kube

    handle, cluster = simulator_cluster(speed=1000.0)
    d = launch_and_follow(cluster, lambda d: d.status == Status.READY)
    monkeypatch.setattr(kube, "READ_RETRIES", 0)
    handle.set_faults(["api-500"])
    try:
        for _ in range(3):  # every third request fails: a snapshot of ~7 reads cannot pass
            d = services.deployment_sync(deployment_id=d.pk)
    finally:
        handle.set_faults([])
    assert d.status == Status.READY
    assert "the API server answered 500" in d.sync_error


def test_a_launch_meeting_500s_is_retried_by_celery_with_backoff(
    celery_worker_factory: Callable[..., CeleryWorker],
    simulator_cluster: Callable[..., tuple[Any, Cluster]],
    catalog: object,
) -> None:
    handle, cluster = simulator_cluster(speed=1000.0)
    handle.set_faults(["api-500"])  # every third API request answers 500
    worker = celery_worker_factory(
        env={"DEPLOYMENTS_FOLLOW_SECONDS": "0.2", "DEPLOYMENTS_TASK_BACKOFF_MAX": "1"}
    )
    launched = [launch_request(cluster, name=f"flaky-{n}") for n in range(3)]
    wait_rows(
        lambda: all(Deployment.objects.get(pk=d.pk).status == Status.READY for d in launched),
        timeout=60,
        what="ready despite the 500s",
    )
    assert "Retry in" in worker.log.read_text()
    handle.set_faults([])


@pytest.mark.django_db
def test_the_transformers_runtime_is_kaitos_annotation_and_skips_the_benchmark(
    cluster: Cluster, catalog: object
) -> None:
    d = launch_and_follow(cluster, lambda d: d.status == Status.READY, runtime="transformers")
    assert "kaito.sh/runtime: transformers" in d.manifests
    assert d.runtime == "transformers"
    assert [p["phase"] for p in d.timeline][-1] == "warm-up"
    assert d.peak_tokens_per_minute is None
