"""The periodic reconcile takes over unfinished work; a cluster that vanishes is reported, not
fatal; a launch to a cluster that never answers gives up with a clear failure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from apps.accounts.roles import Role
from apps.clusters.models import Cluster
from apps.clusters.services import cluster_check
from apps.deployments import services
from apps.deployments.models import Deployment
from tests.conftest import CeleryWorker
from tests.deployments.conftest import follow, launch_and_follow, launch_request, wait_rows

Status = Deployment.Status


class Sent:
    """Captures what the reconcile would send to the queue, and runs it here on demand."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, dict[str, Any]]] = []

    def __call__(self, task: str, deployment_id: int, kwargs: dict[str, Any]) -> None:
        self.calls.append((task, deployment_id, kwargs))

    def names(self, deployment_id: int) -> list[str]:
        return [task for task, pk, _ in self.calls if pk == deployment_id]


@pytest.fixture
def no_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "STALE_SECONDS", 0)


@pytest.mark.django_db
def test_a_launch_whose_message_was_lost_is_relaunched_by_the_reconcile(
    cluster: Cluster, catalog: object, no_grace: None
) -> None:
    d = launch_request(cluster)  # in this test the queued task never runs: it is "lost"
    sent = Sent()
    services.deployments_reconcile(enqueue=sent)
    assert sent.names(d.pk) == ["deployment_sync", "deployment_launch"]
    services.deployment_launch(deployment_id=d.pk)
    assert follow(d, lambda d: d.status == Status.READY).status == Status.READY


@pytest.mark.django_db
def test_a_pending_row_whose_workspace_exists_is_adopted_by_a_sync(
    cluster: Cluster, catalog: object
) -> None:
    d = launch_request(cluster)
    services.deployment_launch(deployment_id=d.pk)
    # The worker died before recording the launch: the row still says pending.
    Deployment.objects.filter(pk=d.pk).update(status=Status.PENDING, workspace_uid="")
    d = follow(d, lambda d: d.status != Status.PENDING)
    assert d.workspace_uid and d.status in (Status.PROVISIONING, Status.READY)


@pytest.mark.django_db
def test_a_follow_that_stopped_is_restarted_and_a_settled_row_is_refreshed(
    cluster: Cluster, catalog: object, no_grace: None
) -> None:
    moving = services.deployment_launch(deployment_id=launch_request(cluster).pk)
    settled = launch_and_follow(cluster, lambda d: d.status == Status.READY)
    sent = Sent()
    services.deployments_reconcile(enqueue=sent)
    [(task, _, kwargs)] = [c for c in sent.calls if c[1] == moving.pk]
    assert task == "deployment_sync" and kwargs["follow"]
    assert Deployment.objects.get(pk=moving.pk).follow_token == kwargs["follow"]
    assert [c for c in sent.calls if c[1] == settled.pk] == [("deployment_sync", settled.pk, {})]


@pytest.fixture
def doomed(simulator_cluster: Callable[..., tuple[Any, Cluster]]) -> tuple[Any, Cluster]:
    """A simulator of this test's own, to stop mid-test."""
    return simulator_cluster(speed=1000.0, name="doomed")


@pytest.mark.django_db
def test_a_cluster_that_vanishes_keeps_the_last_state_and_says_it_is_not_answering(
    doomed: tuple[Any, Cluster],
    catalog: object,
    client_as: Callable[[Role | None], Client],
) -> None:
    handle, cluster = doomed
    d = launch_and_follow(cluster, lambda d: d.status == Status.READY)
    handle.stop()
    d = services.deployment_sync(deployment_id=d.pk)
    assert d.status == Status.READY  # what we last knew, not a guess
    assert "cannot reach the API server" in d.sync_error
    page = client_as(Role.VIEWER).get(d.get_absolute_url()).content.decode()
    assert 'id="sync-error"' in page and "The cluster is not answering." in page
    counts = services.deployments_reconcile(enqueue=Sent())
    assert counts["unreachable"] == 1
    cluster.refresh_from_db()
    assert "cannot reach" in cluster.last_error
    assert cluster_check(cluster=cluster).problems[0].startswith("Unreachable")


def test_a_launch_to_a_cluster_that_never_answers_retries_then_fails_clearly(
    celery_worker_factory: Callable[..., CeleryWorker],
    doomed: tuple[Any, Cluster],
    catalog: object,
) -> None:
    handle, cluster = doomed
    handle.stop()
    worker = celery_worker_factory(
        env={"DEPLOYMENTS_TASK_RETRIES": "2", "DEPLOYMENTS_TASK_BACKOFF_MAX": "1"}
    )
    d = launch_request(cluster)
    wait_rows(
        lambda: Deployment.objects.get(pk=d.pk).status == Status.FAILED,
        what="the launch to give up",
    )
    d.refresh_from_db()
    assert d.failure_reason == "unreachable"
    assert "did not answer" in d.failure_message and "Check connection" in d.next_step
    # One log record a line (plain or JSON); a JSON record names the retry twice.
    assert sum("Retry in" in line for line in worker.log.read_text().splitlines()) == 2
