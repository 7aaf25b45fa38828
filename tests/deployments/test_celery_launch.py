"""Launch, follow and tear down through a real Celery worker process, against kaitosim."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest
from kubernetes import client

from apps.clusters.models import Cluster
from apps.deployments import manifests, services
from apps.deployments.models import Deployment
from tests.conftest import CeleryWorker
from tests.deployments.conftest import launch_request, wait_rows, workspaces_named

Status = Deployment.Status
# Follow every 0.2 s; the reconcile takes over what nobody finished after 2 s.
FAST = {"DEPLOYMENTS_FOLLOW_SECONDS": "0.2", "DEPLOYMENTS_STALE_SECONDS": "2"}


def status_of(deployment: Deployment) -> str:
    return Deployment.objects.get(pk=deployment.pk).status


def test_a_preset_launched_through_celery_becomes_ready_with_conditions_and_timeline(
    celery_worker_factory: Callable[..., CeleryWorker],
    cluster: Cluster,
    catalog: object,
    kube_admin: client.ApiClient,
) -> None:
    celery_worker_factory(env=FAST)
    deployment = launch_request(cluster)
    wait_rows(lambda: status_of(deployment) == Status.READY, what="ready")
    deployment.refresh_from_db()
    assert dict(deployment.chips) == {
        "ResourceReady": "True",
        "InferenceReady": "True",
        "JobStarted": "",
        "WorkspaceSucceeded": "True",
    }
    assert [p["phase"] for p in deployment.timeline] == [
        "provisioning",
        "node init",
        "image pull",
        "warm-up",
        "benchmark",
    ]
    assert all(p["began"] and p["ended"] for p in deployment.timeline)
    assert deployment.peak_tokens_per_minute and deployment.peak_tokens_per_minute > 1000
    assert deployment.endpoint_service == deployment.name
    assert deployment.worker_nodes and deployment.launched_at and deployment.ready_at
    assert deployment.secret_values == ""
    found = workspaces_named(kube_admin, deployment.namespace, deployment.name)
    assert len(found) == 1
    assert found[0]["metadata"]["labels"][manifests.DEPLOYMENT_LABEL] == str(deployment.uid)


def test_a_worker_killed_mid_launch_then_restarted_makes_one_workspace_not_two(
    celery_worker_factory: Callable[..., CeleryWorker],
    cluster: Cluster,
    catalog: object,
    kube_admin: client.ApiClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = celery_worker_factory(env=FAST)
    deployment = launch_request(cluster)
    wait_rows(
        lambda: bool(workspaces_named(kube_admin, deployment.namespace, deployment.name)),
        what="the Workspace to be created",
    )
    worker.kill()  # SIGKILL: the launch and its follow die with the worker
    # Make the worst case certain: the worker died after the Workspace was created and before
    # the row recorded it (the row still says pending), and the launch message comes again
    # (a broker redelivering an unacknowledged message). The second launch re-applies the
    # bundle and adopts the Workspace it finds (409 AlreadyExists, carrying our uid).
    from apps.deployments.tasks import deployment_launch

    Deployment.objects.filter(pk=deployment.pk).update(status=Status.PENDING, workspace_uid="")
    deployment_launch.delay(deployment.pk)
    worker.start()
    monkeypatch.setattr(services, "STALE_SECONDS", 0)
    services.deployments_reconcile()  # what beat does every few seconds
    wait_rows(lambda: status_of(deployment) == Status.READY, what="ready after the restart")
    found = workspaces_named(kube_admin, deployment.namespace, deployment.name)
    assert len(found) == 1
    assert found[0]["metadata"]["labels"][manifests.DEPLOYMENT_LABEL] == str(deployment.uid)
    assert Deployment.objects.filter(name=deployment.name).count() == 1


def test_twenty_concurrent_launches_all_become_ready_each_with_one_workspace(
    celery_worker_factory: Callable[..., CeleryWorker],
    cluster: Cluster,
    catalog: object,
    kube_admin: client.ApiClient,
) -> None:
    celery_worker_factory(env=FAST, pool="threads", concurrency=8)
    launched = [launch_request(cluster, name=f"many-{n:02d}") for n in range(20)]
    wait_rows(
        lambda: Deployment.objects.filter(status=Status.READY).count() == 20,
        timeout=120,
        what="20 deployments ready",
    )
    found = client.CustomObjectsApi(kube_admin).list_namespaced_custom_object(
        "kaito.sh", "v1beta1", cluster.default_namespace, "workspaces"
    )
    items = cast(dict[str, Any], found)["items"]
    names = sorted(w["metadata"]["name"] for w in items)
    assert names == sorted(d.name for d in launched)
    uids = {w["metadata"]["labels"][manifests.DEPLOYMENT_LABEL] for w in items}
    assert uids == {str(d.uid) for d in launched}


def _leftovers(api: client.ApiClient, deployment: Deployment) -> dict[str, Any]:
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    mine = f"{manifests.DEPLOYMENT_LABEL}={deployment.uid}"
    kaito = (
        f"kaito.sh/workspace={deployment.name},kaito.sh/workspacenamespace={deployment.namespace}"
    )
    nodes = {n.metadata.name for n in core.list_node().items if n.metadata}
    return {
        "workspaces": workspaces_named(api, deployment.namespace, deployment.name),
        "configmaps": core.list_namespaced_config_map(
            deployment.namespace, label_selector=mine
        ).items,
        "secrets": core.list_namespaced_secret(deployment.namespace, label_selector=mine).items,
        "pods": core.list_namespaced_pod(
            deployment.namespace, label_selector=f"kaito.sh/workspace={deployment.name}"
        ).items,
        "nodeclaims": cast(
            dict[str, Any],
            custom.list_cluster_custom_object(
                "karpenter.sh", "v1", "nodeclaims", label_selector=kaito
            ),
        )["items"],
        "nodes": sorted(nodes & set(deployment.worker_nodes)),
    }


def test_teardown_deletes_the_workspace_secret_and_configmap_and_confirms_the_nodes_are_gone(
    celery_worker_factory: Callable[..., CeleryWorker],
    cluster: Cluster,
    catalog: object,
    kube_admin: client.ApiClient,
) -> None:
    celery_worker_factory(env=FAST)
    deployment = launch_request(
        cluster,
        model="llama-3.1-8b-instruct",
        hf_token="hf_teardown",
        settings=manifests.InferenceSettings(max_model_len=4096),
    )
    wait_rows(lambda: status_of(deployment) == Status.READY, what="ready")
    deployment.refresh_from_db()
    before = _leftovers(kube_admin, deployment)
    assert before["configmaps"] and before["secrets"] and before["nodeclaims"] and before["nodes"]

    services.deployment_teardown_request(deployment=deployment)
    wait_rows(lambda: status_of(deployment) == Status.DELETED, what="deleted")
    deployment.refresh_from_db()
    assert deployment.nodes_left == []
    assert deployment.deleted_at is not None
    assert {k: v for k, v in _leftovers(kube_admin, deployment).items() if v} == {}
