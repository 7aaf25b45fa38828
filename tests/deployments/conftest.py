"""Helpers for the deployments tests: launch through the services, follow a row until a state."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client, config

from apps.clusters.models import Cluster
from apps.deployments import manifests, services
from apps.deployments.models import Deployment

PHI = "phi-4-mini-instruct"
A100 = "Standard_NC24ads_A100_v4"
FAULT_ANNOTATION = "kaitosim.kaito.sh/fault"


def launch_request(
    cluster: Cluster,
    *,
    model: str = PHI,
    vm_size: str = A100,
    name: str | None = None,
    namespace: str | None = None,
    annotations: dict[str, str] | None = None,
    settings: manifests.InferenceSettings | None = None,
    hf_token: str = "",
    runtime: str = "vllm",
) -> Deployment:
    """Record a launch as the preset form does (the task is queued on commit)."""
    uid = str(uuid.uuid4())
    spec = manifests.LaunchSpec(
        name=name or f"ws-{uuid.uuid4().hex[:6]}",
        namespace=namespace or cluster.default_namespace,
        vm_size=vm_size,
        node_count=1,
        deployment_uid=uid,
        model_name=model,
        runtime=runtime,
        settings=settings or manifests.InferenceSettings(),
        hf_token_secret=bool(hf_token),
        annotations=annotations or {},
    )
    bundle = manifests.bundle_render(spec, hf_token=hf_token)
    from apps.deployments.selectors import kaito_model_for

    return services.deployment_request(
        cluster=cluster,
        bundle=bundle,
        deployment_uid=uid,
        source=Deployment.Source.PRESET,
        kaito_model=kaito_model_for(model),
        settings=settings,
    )


def follow(
    deployment: Deployment,
    until: Callable[[Deployment], bool],
    *,
    timeout: float = 20.0,
    what: str = "",
) -> Deployment:
    """Sync the row from the cluster (in this process) until `until` holds."""
    deadline = time.monotonic() + timeout
    while True:
        deployment = services.deployment_sync(deployment_id=deployment.pk)
        if until(deployment):
            return deployment
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what or until}: {deployment.status} "
                f"{deployment.failure_reason} {deployment.conditions} {deployment.sync_error}"
            )
        time.sleep(0.05)


def launch_and_follow(
    cluster: Cluster, until: Callable[[Deployment], bool], **kwargs: Any
) -> Deployment:
    deployment = launch_request(cluster, **kwargs)
    deployment = services.deployment_launch(deployment_id=deployment.pk)
    return follow(deployment, until, what=str(until))


def wait_rows(predicate: Callable[[], bool], *, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def kube_admin(kaitosim: Any) -> client.ApiClient:
    """The real kubernetes client as the simulator's admin, to look at the cluster directly."""
    return config.new_client_from_config(
        config_file=str(kaitosim.kubeconfig_path), context="kaitosim"
    )


def workspaces_named(api: client.ApiClient, namespace: str, name: str) -> list[dict[str, Any]]:
    found = cast(
        dict[str, Any],
        client.CustomObjectsApi(api).list_namespaced_custom_object(
            "kaito.sh", "v1beta1", namespace, "workspaces"
        ),
    )
    return [w for w in found["items"] if w["metadata"]["name"] == name]


@pytest.fixture
def simulator_cluster(tmp_path: Path, db: None) -> Iterator[Callable[..., tuple[Any, Cluster]]]:
    """A simulator of the test's own (another speed, or one to stop), with its Cluster row."""
    from apps.clusters.services import cluster_create
    from kaitosim.server import start

    handles: list[Any] = []

    def make(*, speed: float, name: str = "private") -> tuple[Any, Cluster]:
        handle = start(
            port=0,
            foundry_port=0,
            speed=speed,
            state_dir=tmp_path / f"sim-{len(handles)}",
            start_foundry=False,
        )
        handles.append(handle)
        cluster = cluster_create(
            name=name,
            kubeconfig=handle.kubeconfig_path.read_text(),
            context="kaitosim",
            default_namespace="llm",
            clock_speed=speed,
        )
        return handle, cluster

    try:
        yield make
    finally:
        for handle in handles:
            handle.stop()
