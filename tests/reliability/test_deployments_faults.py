"""Deployments ride out crashes and a misbehaving API server, and do each thing once.

Real Celery worker processes (killed with SIGKILL, as a crash), kaitosim over real HTTPS, the
real kubernetes client. After each ordeal the cluster and the rows say the same, once: one
Workspace, one Secret and one ConfigMap while it lives and none after, each phase of the cold
start once on the timeline, and each transition once in the audit log.
"""

# The kubernetes client returns plain objects for custom resources; these tests read them.
# mypy: disable-error-code="union-attr,index"

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any, cast

import pytest
from django.utils import timezone
from kubernetes import client, config

from apps.audit.models import AuditEntry
from apps.clusters.models import Cluster
from apps.deployments import manifests, services
from apps.deployments.models import Deployment
from tests.conftest import CeleryWorker
from tests.deployments.conftest import (  # noqa: F401 (fixtures used by name)
    kube_admin,
    launch_request,
    simulator_cluster,
    wait_rows,
    workspaces_named,
)

Status = Deployment.Status
PHASES = ["provisioning", "node init", "image pull", "warm-up", "benchmark"]
LLAMA = "llama-3.1-8b-instruct"  # gated: the launch brings an HF_TOKEN Secret and a ConfigMap
# Follow every 0.2 s; a worker retries a transient error within a second.
FAST = {"DEPLOYMENTS_FOLLOW_SECONDS": "0.2", "DEPLOYMENTS_TASK_BACKOFF_MAX": "1"}


def launch_llama(cluster: Cluster, name: str) -> Deployment:
    return launch_request(
        cluster,
        model=LLAMA,
        name=name,
        hf_token="hf_reliability",
        settings=manifests.InferenceSettings(max_model_len=4096),
    )


def row(deployment: Deployment) -> Deployment:
    return Deployment.objects.get(pk=deployment.pk)


def api_for(handle: Any) -> client.ApiClient:
    return config.new_client_from_config(
        config_file=str(handle.kubeconfig_path), context="kaitosim"
    )


def in_cluster(api: client.ApiClient, deployment: Deployment) -> dict[str, list[str]]:
    """What the cluster holds for the deployment, by kind."""
    core = client.CoreV1Api(api)
    mine = f"{manifests.DEPLOYMENT_LABEL}={deployment.uid}"
    claims = cast(
        dict[str, Any],
        client.CustomObjectsApi(api).list_cluster_custom_object(
            "karpenter.sh",
            "v1",
            "nodeclaims",
            label_selector=f"kaito.sh/workspace={deployment.name},"
            f"kaito.sh/workspacenamespace={deployment.namespace}",
        ),
    )["items"]
    return {
        "workspaces": [
            w["metadata"]["name"]
            for w in workspaces_named(api, deployment.namespace, deployment.name)
        ],
        "secrets": [
            str(s.metadata.name)
            for s in core.list_namespaced_secret(deployment.namespace, label_selector=mine).items
        ],
        "configmaps": [
            str(c.metadata.name)
            for c in core.list_namespaced_config_map(
                deployment.namespace, label_selector=mine
            ).items
        ],
        "nodeclaims": [c["metadata"]["name"] for c in claims],
    }


def audit_lines(deployment: Deployment) -> list[tuple[str, str]]:
    """(action, outcome) of every audit line about the deployment, oldest first."""
    entries = AuditEntry.objects.filter(target=deployment.target).order_by("created_at", "id")
    return [(e.action, e.outcome) for e in entries]


def assert_ready_once(deployment: Deployment) -> None:
    """Ready, with each cold-start phase once and each transition audited once."""
    deployment = row(deployment)
    assert deployment.status == Status.READY
    assert [p["phase"] for p in deployment.timeline] == PHASES
    assert all(p["began"] and p["ended"] for p in deployment.timeline)
    events = [(e["time"], e["reason"], e["object"]) for e in deployment.events]
    assert len(events) == len(set(events))
    assert deployment.peak_tokens_per_minute and deployment.ready_at and deployment.launched_at
    assert deployment.secret_values == ""
    assert audit_lines(deployment) == [
        ("deployment.launch", AuditEntry.Outcome.REQUESTED),
        ("deployment.launch", AuditEntry.Outcome.OK),
        ("deployment.ready", AuditEntry.Outcome.OK),
    ]


def beat_until(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Run the reconcile as Celery beat would (here every half second) until `predicate`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        services.deployments_reconcile()
        time.sleep(0.5)


# ------------------------------------------------------------------------------ worker killed
def test_a_worker_killed_during_a_teardown_finishes_it_once_after_a_restart(
    celery_worker_factory: Callable[..., CeleryWorker],
    cluster: Cluster,
    catalog: object,
    kube_admin: client.ApiClient,  # noqa: F811
) -> None:
    worker = celery_worker_factory(env=FAST)
    deployment = launch_llama(cluster, "teardown-crash")
    wait_rows(lambda: row(deployment).status == Status.READY, what="ready")
    deployment = row(deployment)
    assert {k: len(v) for k, v in in_cluster(kube_admin, deployment).items()} == {
        "workspaces": 1,
        "secrets": 1,
        "configmaps": 1,
        "nodeclaims": 1,
    }
    offset = worker.log.stat().st_size
    services.deployment_teardown_request(deployment=deployment)
    wait_rows(
        lambda: b"deployment_teardown[" in worker.log.read_bytes()[offset:],
        what="the worker to take the teardown",
    )
    worker.kill()  # SIGKILL, somewhere in the teardown
    # Make the worst moment certain: the worker died after deleting the Workspace and before
    # deleting its Secret and ConfigMap, and the next to look is a plain sync (a follow step or
    # beat's), not a second teardown (the row was touched a moment ago).
    core = client.CoreV1Api(kube_admin)
    custom = client.CustomObjectsApi(kube_admin)
    labels = {manifests.DEPLOYMENT_LABEL: str(deployment.uid)}
    ns = deployment.namespace
    with contextlib.suppress(client.ApiException):  # a 404: the worker deleted it already
        custom.delete_namespaced_custom_object(
            "kaito.sh", "v1beta1", ns, "workspaces", deployment.name
        )
    wait_rows(lambda: not workspaces_named(kube_admin, ns, deployment.name), what="it gone")
    present = in_cluster(kube_admin, deployment)
    if not present["secrets"]:
        core.create_namespaced_secret(
            ns,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name=deployment.secret_name, labels=labels),
                string_data={"HF_TOKEN": "hf_reliability"},
            ),
        )
    if not present["configmaps"]:
        core.create_namespaced_config_map(
            ns,
            client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name=deployment.configmap_name, labels=labels),
                data={"inference_config.yaml": "vllm: {}\n"},
            ),
        )
    Deployment.objects.filter(pk=deployment.pk).update(synced_at=timezone.now())

    worker.start()
    beat_until(lambda: row(deployment).status == Status.DELETED, timeout=60, what="deleted")
    deployment = row(deployment)
    assert deployment.deleted_at is not None and deployment.nodes_left == []
    assert {k: v for k, v in in_cluster(kube_admin, deployment).items() if v} == {}
    teardown_lines = [a for a in audit_lines(deployment) if a[0] == "deployment.teardown"]
    assert teardown_lines == [
        ("deployment.teardown", AuditEntry.Outcome.REQUESTED),
        ("deployment.teardown", AuditEntry.Outcome.OK),
    ]
    # Beat keeps running and a late message still arrives: nothing changes, nothing is added.
    deleted_at = deployment.deleted_at
    for _ in range(2):
        services.deployments_reconcile()
        services.deployment_sync(deployment_id=deployment.pk)
        services.deployment_teardown(deployment_id=deployment.pk)
    time.sleep(1)
    assert row(deployment).deleted_at == deleted_at
    assert len([a for a in audit_lines(deployment) if a[0] == "deployment.teardown"]) == 2


def test_a_worker_killed_while_nodes_provision_is_followed_again_and_nothing_is_done_twice(
    celery_worker_factory: Callable[..., CeleryWorker],
    simulator_cluster: Callable[..., tuple[Any, Cluster]],  # noqa: F811
    catalog: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # At 60x a node takes ~5 s to provision: time enough to kill the worker in the middle.
    handle, cluster = simulator_cluster(speed=60.0)
    api = api_for(handle)
    worker = celery_worker_factory(env=FAST)
    deployment = launch_llama(cluster, "provision-crash")

    def provisioning() -> bool:
        claims = in_cluster(api, deployment)["nodeclaims"]
        workspace = workspaces_named(api, deployment.namespace, deployment.name)
        nodes = workspace and (workspace[0].get("status") or {}).get("workerNodes")
        return bool(claims) and not nodes

    wait_rows(provisioning, what="a NodeClaim without its node")
    assert row(deployment).status == Status.PROVISIONING
    worker.kill()  # the follow chain dies with the worker (its next step was in its hands)
    time.sleep(0.5)
    synced = row(deployment).synced_at
    time.sleep(1)
    assert row(deployment).synced_at == synced  # nobody follows it now

    worker.start()
    monkeypatch.setattr(services, "STALE_SECONDS", 1)  # beat takes an unfollowed row over
    beat_until(lambda: row(deployment).status == Status.READY, timeout=60, what="ready")
    assert_ready_once(deployment)
    assert {k: len(v) for k, v in in_cluster(api, deployment).items()} == {
        "workspaces": 1,
        "secrets": 1,
        "configmaps": 1,
        "nodeclaims": 1,
    }


# --------------------------------------------------------------------- a misbehaving API server
def test_bursts_of_500s_during_the_follow_and_the_teardown_are_ridden_out(
    celery_worker_factory: Callable[..., CeleryWorker],
    simulator_cluster: Callable[..., tuple[Any, Cluster]],  # noqa: F811
    catalog: object,
) -> None:
    handle, cluster = simulator_cluster(speed=300.0)
    faults = handle.simulator.faults
    api = api_for(handle)
    celery_worker_factory(env=FAST)
    deployment = launch_llama(cluster, "bursts")
    wait_rows(lambda: row(deployment).status != Status.PENDING, what="the launch")
    handle.set_faults(["api-500-burst"])  # 3 answers of 500 in a row, in every 20 requests
    sync_errors: set[str] = set()

    def ready() -> bool:
        current = row(deployment)
        if current.sync_error:
            sync_errors.add(current.sync_error)
        return current.status == Status.READY

    wait_rows(ready, timeout=90, what="ready despite the bursts")
    bursts_in_follow = faults.injected.get("api-500-burst", 0)
    assert bursts_in_follow >= 3
    assert all("the API server answered 500" in e for e in sync_errors)
    assert_ready_once(deployment)

    services.deployment_teardown_request(deployment=row(deployment))
    wait_rows(lambda: row(deployment).status == Status.DELETED, timeout=90, what="deleted")
    handle.set_faults([])
    assert faults.injected["api-500-burst"] > bursts_in_follow
    assert {k: v for k, v in in_cluster(api, deployment).items() if v} == {}
    assert [a for a in audit_lines(deployment) if a[0] == "deployment.teardown"] == [
        ("deployment.teardown", AuditEntry.Outcome.REQUESTED),
        ("deployment.teardown", AuditEntry.Outcome.OK),
    ]


def test_writes_whose_answers_are_lost_are_retried_and_adopted_not_done_twice(
    celery_worker_factory: Callable[..., CeleryWorker],
    simulator_cluster: Callable[..., tuple[Any, Cluster]],  # noqa: F811
    catalog: object,
) -> None:
    handle, cluster = simulator_cluster(speed=1000.0)
    faults = handle.simulator.faults
    api = api_for(handle)
    # Every second write is carried out and its connection closed before the answer: the
    # Namespace, the Secret, the ConfigMap, the Workspace or a retried replace may be made
    # without the worker hearing so.
    faults.drop_every = 2
    handle.set_faults(["api-drop"])
    worker = celery_worker_factory(env=FAST)
    deployment = launch_llama(cluster, "dropped")
    wait_rows(lambda: row(deployment).status == Status.READY, timeout=90, what="ready")
    assert faults.injected.get("api-drop POST", 0) >= 1
    assert "Retry in" in worker.log.read_text()
    assert_ready_once(deployment)
    assert {k: len(v) for k, v in in_cluster(api, deployment).items()} == {
        "workspaces": 1,
        "secrets": 1,
        "configmaps": 1,
        "nodeclaims": 1,
    }
    dropped_before = sum(faults.injected.values())
    services.deployment_teardown_request(deployment=row(deployment))
    wait_rows(lambda: row(deployment).status == Status.DELETED, timeout=90, what="deleted")
    handle.set_faults([])
    assert faults.injected.get("api-drop DELETE", 0) >= 1
    assert sum(faults.injected.values()) > dropped_before
    assert {k: v for k, v in in_cluster(api, deployment).items() if v} == {}
    assert [a for a in audit_lines(deployment) if a[0] == "deployment.teardown"] == [
        ("deployment.teardown", AuditEntry.Outcome.REQUESTED),
        ("deployment.teardown", AuditEntry.Outcome.OK),
    ]


# --------------------------------------------------------------------------- the faults exist
def test_the_burst_fault_outlasts_a_clients_quick_retries_then_lets_requests_through(
    simulator_cluster: Callable[..., tuple[Any, Cluster]],  # noqa: F811
) -> None:
    handle, _ = simulator_cluster(speed=1000.0)
    core = client.CoreV1Api(api_for(handle))
    handle.set_faults(["api-500-burst"])
    statuses = []
    for _ in range(20):
        try:
            core.list_namespaced_config_map("default")
            statuses.append(200)
        except client.ApiException as error:
            statuses.append(int(error.status))
    handle.set_faults([])
    assert statuses == [500] * 3 + [200] * 17


def test_the_drop_fault_carries_a_write_out_and_never_answers_it(
    simulator_cluster: Callable[..., tuple[Any, Cluster]],  # noqa: F811
) -> None:
    from apps.clusters import kube

    handle, cluster = simulator_cluster(speed=1000.0)
    handle.simulator.faults.drop_every = 1
    handle.set_faults(["api-drop"])
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "dropped"},
        "data": {"a": "b"},
    }
    with kube.Kube(cluster.credentials) as cluster_api:
        with pytest.raises(kube.ClusterUnreachable):
            cluster_api.object_create(configmap, namespace="default")
        handle.set_faults([])
        assert cluster_api.object_get("ConfigMap", "default", "dropped")["data"] == {"a": "b"}


# ---------------------------------------------------------------------------- Redis restarted
def test_a_redis_restart_while_nodes_provision_loses_nothing_and_does_nothing_twice(
    transactional_db: None,
    private_redis: Any,
    app_env: Callable[..., dict[str, str]],
    app_workers: Callable[..., Any],
    simulator_cluster: Callable[..., tuple[Any, Cluster]],  # noqa: F811
    catalog: object,
) -> None:
    from tests.reliability.conftest import django_run

    handle, cluster = simulator_cluster(speed=60.0)
    api = api_for(handle)
    # A Redis without persistence: a restart loses every queued message and every unacknowledged
    # one (the follow step a worker holds). Beat's reconcile, every second here, must take over.
    env = app_env(
        redis_url=private_redis.url(0),
        DEPLOYMENTS_FOLLOW_SECONDS="0.2",
        DEPLOYMENTS_TASK_BACKOFF_MAX="1",
        DEPLOYMENTS_STALE_SECONDS="2",
        DEPLOYMENTS_RECONCILE_SECONDS="1",
    )
    worker = app_workers(env, pool="threads", concurrency=2)
    app_workers(env, beat=True)
    pk = django_run(
        env,
        "from apps.clusters.models import Cluster\n"
        "from apps.deployments import manifests\n"
        "from tests.deployments.conftest import launch_request\n"
        f"d = launch_request(Cluster.objects.get(pk={cluster.pk}), model={LLAMA!r}, "
        "name='redis-restart', hf_token='hf_reliability', "
        "settings=manifests.InferenceSettings(max_model_len=4096))\n"
        "result = d.pk\n",
    )
    deployment = Deployment.objects.get(pk=pk)
    wait_rows(
        lambda: bool(in_cluster(api, deployment)["nodeclaims"]),
        what="nodes provisioning",
    )
    assert row(deployment).status == Status.PROVISIONING
    private_redis.restart(down_s=2)

    def ready() -> bool:
        # A worker that loses Redis while it holds a task may stop (kombu puts the message back
        # on the dead connection: "Unrecoverable error: AttributeError ... 'hostname'"); its
        # supervisor (docker-compose's restart: unless-stopped) starts it again.
        if worker.proc is not None and worker.proc.poll() is not None:
            worker.start()
        return row(deployment).status == Status.READY

    wait_rows(ready, timeout=120, what="ready")
    assert_ready_once(deployment)
    assert {k: len(v) for k, v in in_cluster(api, deployment).items()} == {
        "workspaces": 1,
        "secrets": 1,
        "configmaps": 1,
        "nodeclaims": 1,
    }


def test_a_launch_asked_for_while_redis_is_down_is_kept_and_launched_once_it_is_back(
    transactional_db: None,
    private_redis: Any,
    app_env: Callable[..., dict[str, str]],
    app_workers: Callable[..., Any],
    simulator_cluster: Callable[..., tuple[Any, Cluster]],  # noqa: F811
    catalog: object,
) -> None:
    from tests.reliability.conftest import django_run

    handle, cluster = simulator_cluster(speed=1000.0)
    env = app_env(
        redis_url=private_redis.url(0),
        DEPLOYMENTS_FOLLOW_SECONDS="0.2",
        DEPLOYMENTS_STALE_SECONDS="2",
        DEPLOYMENTS_RECONCILE_SECONDS="1",
    )
    private_redis.stop()
    # What the launch form does: the row is saved, then the task is sent, which fails. The
    # operator is not shown an error for a launch that was in fact recorded.
    pk = django_run(
        env,
        "from apps.clusters.models import Cluster\n"
        "from tests.deployments.conftest import launch_request\n"
        f"result = launch_request(Cluster.objects.get(pk={cluster.pk}), name='no-broker').pk\n",
    )
    deployment = Deployment.objects.get(pk=pk)
    assert deployment.status == Status.PENDING
    assert audit_lines(deployment) == [("deployment.launch", AuditEntry.Outcome.REQUESTED)]

    private_redis.start()
    app_workers(env, pool="threads", concurrency=2)
    app_workers(env, beat=True)
    wait_rows(lambda: row(deployment).status == Status.READY, timeout=90, what="ready")
    assert_ready_once(deployment)
    assert len(in_cluster(api_for(handle), deployment)["workspaces"]) == 1
