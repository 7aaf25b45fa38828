"""Injected faults: per workspace (annotation) and cluster-wide (admin endpoint)."""

# The kubernetes client types every field Optional and returns plain objects for custom
# resources; these tests assert on those values, so mypy's None/object checks are relaxed.
# mypy: disable-error-code="union-attr,index,arg-type,operator,return-value,type-var,misc"

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import urllib3
from kubernetes import client, watch

from kaitosim.faults import FAULT_ANNOTATION
from kaitosim.server import SimulatorHandle
from tests.kaitosim.conftest import (
    condition,
    create_workspace,
    get_workspace,
    raw_request,
    wait_for,
    wait_for_condition,
    workspace_manifest,
)


def faulty(name: str, fault: str, **kwargs: Any) -> dict[str, Any]:
    return workspace_manifest(name, annotations={FAULT_ANNOTATION: fault}, **kwargs)


@pytest.fixture
def cluster_fault(api_client: client.ApiClient) -> Iterator[Any]:
    """Switch a cluster-wide fault on through the admin endpoint; always switched off afterwards."""

    def switch_on(name: str) -> None:
        status, body = raw_request(api_client, "POST", "/kaitosim/faults", {"fault": name})
        assert status == 200, body

    try:
        yield switch_on
    finally:
        raw_request(api_client, "DELETE", "/kaitosim/faults")


def nodeclaim_of(
    custom: client.CustomObjectsApi, namespace: str, workspace: str
) -> dict[str, Any] | None:
    items = custom.list_cluster_custom_object(
        "karpenter.sh",
        "v1",
        "nodeclaims",
        label_selector=f"kaito.sh/workspace={workspace},kaito.sh/workspacenamespace={namespace}",
    )["items"]
    return items[0] if items else None


def launched_condition(claim: dict[str, Any] | None) -> dict[str, Any] | None:
    if claim is None:
        return None
    found = next(
        (c for c in (claim.get("status") or {}).get("conditions") or [] if c["type"] == "Launched"),
        None,
    )
    return found if found and found["status"] == "False" else None


def test_it_fails_the_nodeclaim_with_azures_quota_error(
    custom: client.CustomObjectsApi, core: client.CoreV1Api, namespace: str
) -> None:
    create_workspace(custom, namespace, faulty("quota", "quota"))
    launched = wait_for(
        lambda: launched_condition(nodeclaim_of(custom, namespace, "quota")),
        message="Launched=False",
    )
    assert launched["reason"] == "LaunchFailed"
    assert launched["message"].startswith(
        "OperationNotAllowed: Operation could not be completed as it results in exceeding approved "
        "standardNCADSA100v4Family Cores quota."
    )
    assert "Additional Required: 24" in launched["message"]
    workspace = get_workspace(custom, namespace, "quota")
    claim_condition = condition(workspace, "NodeClaimReady")
    assert claim_condition["status"] == "False"
    assert "exceeding approved standardNCADSA100v4Family Cores quota" in claim_condition["message"]
    assert condition(workspace, "WorkspaceSucceeded")["status"] == "False"
    events = core.list_namespaced_event(
        namespace, field_selector="involvedObject.name=quota,reason=NodeClaimLaunchFailed"
    )
    assert len(events.items) == 1


def test_it_fails_the_nodeclaim_when_the_region_has_no_capacity(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    create_workspace(
        custom,
        namespace,
        faulty(
            "capacity",
            "capacity",
            instance_type="Standard_NV36ads_A10_v5",
            preset="phi-3-mini-4k-instruct",
        ),
    )
    launched = wait_for(
        lambda: launched_condition(nodeclaim_of(custom, namespace, "capacity")),
        message="Launched=False",
    )
    assert "all requested instance types were unavailable during launch" in launched["message"]
    assert "SkuNotAvailable" in launched["message"]
    assert "Standard_NV36ads_A10_v5" in launched["message"]
    resource = condition(get_workspace(custom, namespace, "capacity"), "ResourceReady")
    assert (
        "last reconcile error: all requested instance types were unavailable during launch"
        in resource["message"]
    )


def test_it_backs_off_pulling_an_image_that_cannot_be_pulled(
    custom: client.CustomObjectsApi, core: client.CoreV1Api, namespace: str
) -> None:
    create_workspace(custom, namespace, faulty("pull", "image-pull"))

    def backing_off() -> bool:
        try:
            pod = core.read_namespaced_pod("pull-0", namespace)
        except client.ApiException:
            return False
        waiting = pod.status.container_statuses[0].state.waiting
        return bool(waiting and waiting.reason == "ImagePullBackOff")

    wait_for(backing_off, message="ImagePullBackOff")
    reasons = {
        e.reason
        for e in core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=pull-0"
        ).items
    }
    assert {"Pulling", "Failed", "BackOff"} <= reasons
    inference = condition(get_workspace(custom, namespace, "pull"), "InferenceReady")
    assert inference["status"] == "False"
    assert "ImagePullBackOff" in inference["message"] or "ErrImagePull" in inference["message"]


def test_it_crash_loops_a_failing_engine(
    custom: client.CustomObjectsApi, core: client.CoreV1Api, namespace: str
) -> None:
    create_workspace(custom, namespace, faulty("crash", "crashloop"))

    def restarted_twice() -> Any:
        try:
            status = core.read_namespaced_pod("crash-0", namespace).status.container_statuses[0]
        except client.ApiException:
            return None
        return status if status.restart_count >= 2 else None

    status = wait_for(restarted_twice, message="two restarts")
    assert status.last_state.terminated.reason == "Error"
    pods = core.list_namespaced_pod(namespace).items
    assert any(
        (p.status.container_statuses[0].state.waiting or client.V1ContainerStateWaiting()).reason
        == "CrashLoopBackOff"
        or p.status.container_statuses[0].state.running is not None
        for p in pods
    )
    assert (
        condition(get_workspace(custom, namespace, "crash"), "InferenceReady")["status"] == "False"
    )
    assert "Engine core initialization failed" in core.read_namespaced_pod_log(
        "crash-0", namespace, previous=True
    )


def test_it_loses_a_node_and_recovers(custom: client.CustomObjectsApi, namespace: str) -> None:
    create_workspace(custom, namespace, faulty("lost", "node-lost"))
    transitions: list[str] = []
    stream = watch.Watch()
    for event in stream.stream(
        custom.list_namespaced_custom_object,
        "kaito.sh",
        "v1beta1",
        namespace,
        "workspaces",
        field_selector="metadata.name=lost",
        timeout_seconds=15,
    ):
        inference = condition(event["object"], "InferenceReady")
        state = (event["object"].get("status") or {}).get("state")
        if inference:
            marker = f"{inference['status']}/{state}"
            if not transitions or transitions[-1] != marker:
                transitions.append(marker)
        if transitions[-2:] == ["False/NotReady", "True/Ready"]:
            stream.stop()
    assert "True/Ready" in transitions
    assert transitions.index("False/NotReady") > transitions.index("True/Ready")
    assert transitions[-1] == "True/Ready"
    final = get_workspace(custom, namespace, "lost")
    assert condition(final, "WorkspaceSucceeded")["status"] == "True"


def test_it_answers_500_to_some_requests_under_the_api_500_fault(
    cluster_fault: Any, core: client.CoreV1Api, namespace: str
) -> None:
    cluster_fault("api-500")
    statuses = []
    bodies = []
    for _ in range(9):
        try:
            core.list_namespaced_config_map(namespace)
            statuses.append(200)
        except client.ApiException as error:
            statuses.append(error.status)
            bodies.append(error.body)
    assert all("InternalError" in body for body in bodies)
    assert 500 in statuses
    assert 200 in statuses


def test_it_fails_one_workspace_api_requests_under_its_annotation(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    create_workspace(custom, namespace, faulty("flaky", "api-500"))
    statuses = []
    for _ in range(6):
        try:
            get_workspace(custom, namespace, "flaky")
            statuses.append(200)
        except client.ApiException as error:
            statuses.append(error.status)
    assert statuses.count(500) >= 2
    assert 200 in statuses


def test_it_cuts_watches_under_the_watch_drop_fault(
    cluster_fault: Any, kaitosim_server: SimulatorHandle, core: client.CoreV1Api, namespace: str
) -> None:
    cluster_fault("watch-drop")
    started = time.monotonic()
    with pytest.raises(
        (urllib3.exceptions.ProtocolError, requests.exceptions.ChunkedEncodingError, Exception)
    ):
        for _event in watch.Watch().stream(
            core.list_namespaced_config_map, namespace, timeout_seconds=20
        ):
            pass
    assert time.monotonic() - started < 10


def test_it_applies_a_cluster_wide_workspace_fault(
    cluster_fault: Any, custom: client.CustomObjectsApi, namespace: str
) -> None:
    cluster_fault("quota")
    create_workspace(custom, namespace, workspace_manifest("global-quota"))
    launched = wait_for(lambda: launched_condition(nodeclaim_of(custom, namespace, "global-quota")))
    assert "OperationNotAllowed" in launched["message"]


def test_it_serves_a_healthy_workspace_when_no_fault_is_set(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    create_workspace(custom, namespace, workspace_manifest("healthy"))
    wait_for_condition(custom, namespace, "healthy", "WorkspaceSucceeded")
