"""Fixtures for kaitosim's tests: one simulator per session, real clients pointed at it."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

import pytest
import requests
from kubernetes import client, config

from kaitosim.server import SimulatorHandle, start
from tests.kaitosim.loop_thread import LoopThread

KUBECTL = "/usr/bin/kubectl"
TEST_SPEED = 1000.0


@pytest.fixture(scope="session")
def kaitosim_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorHandle]:
    """kaitosim on free ports at 1000x speed (a 966 s AKS cold start takes about 1 s)."""
    state_dir = tmp_path_factory.mktemp("kaitosim")
    handle = start(port=0, foundry_port=0, speed=TEST_SPEED, state_dir=state_dir)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def api_client(kaitosim_server: SimulatorHandle) -> client.ApiClient:
    return config.new_client_from_config(
        config_file=str(kaitosim_server.kubeconfig_path), context="kaitosim"
    )


@pytest.fixture(scope="session")
def viewer_client(kaitosim_server: SimulatorHandle) -> client.ApiClient:
    return config.new_client_from_config(
        config_file=str(kaitosim_server.kubeconfig_path), context="kaitosim-viewer"
    )


@pytest.fixture(scope="session")
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def custom(api_client: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


@pytest.fixture
def namespace(core: client.CoreV1Api) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        with contextlib.suppress(client.ApiException):
            core.delete_namespace(name)


@pytest.fixture(scope="session")
def kubectl(kaitosim_server: SimulatorHandle) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real kubectl against the simulator; returns the completed process."""

    def run(
        *arguments: str, check: bool = True, timeout: float = 30.0, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        command = [KUBECTL, "--kubeconfig", str(kaitosim_server.kubeconfig_path), *arguments]
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, input=input_text, check=False
        )
        if check and completed.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(arguments)} failed "
                f"({completed.returncode}):\n{completed.stderr}"
            )
        return completed

    return run


def wait_for(
    predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, message: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy (bounded; never a fixed long sleep)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {message or predicate}; last value: {last!r}"
    )


def condition(workspace: dict[str, Any], condition_type: str) -> dict[str, Any] | None:
    for item in (workspace.get("status") or {}).get("conditions") or []:
        if item.get("type") == condition_type:
            return dict(item)
    return None


def workspace_manifest(
    name: str,
    preset: str = "phi-4-mini-instruct",
    instance_type: str = "Standard_NC24ads_A100_v4",
    annotations: dict[str, str] | None = None,
    **inference_extra: Any,
) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "resource": {
            "instanceType": instance_type,
            "labelSelector": {"matchLabels": {"apps": name}},
        },
        "inference": {"preset": {"name": preset}, **inference_extra},
    }
    if annotations:
        manifest["metadata"]["annotations"] = annotations
    return manifest


def get_workspace(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    found = custom.get_namespaced_custom_object(
        "kaito.sh", "v1beta1", namespace, "workspaces", name
    )
    return cast(dict[str, Any], found)


def create_workspace(
    custom: client.CustomObjectsApi, namespace: str, manifest: dict[str, Any]
) -> dict[str, Any]:
    created = custom.create_namespaced_custom_object(
        "kaito.sh", "v1beta1", namespace, "workspaces", manifest
    )
    return cast(dict[str, Any], created)


def wait_for_condition(
    custom: client.CustomObjectsApi,
    namespace: str,
    name: str,
    condition_type: str,
    status: str = "True",
    timeout: float = 20.0,
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        workspace = get_workspace(custom, namespace, name)
        found = condition(workspace, condition_type)
        return workspace if found and found["status"] == status else None

    return wait_for(check, timeout=timeout, message=f"{name} {condition_type}={status}")


def api_error_body(error: client.ApiException) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(error.body or "{}"))


def raw_request(
    api: client.ApiClient,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = "application/json",
    query: list[tuple[str, str]] | None = None,
) -> tuple[int, Any]:
    """Call the API directly (for content types the generated client does not offer)."""
    configuration = api.configuration
    url = configuration.host + path
    if query:
        url += "?" + urlencode(query)
    headers = {"Content-Type": content_type, "Accept": "application/json"}
    token = configuration.get_api_key_with_prefix(
        "authorization"
    ) or configuration.get_api_key_with_prefix("BearerToken")
    if token:
        headers["Authorization"] = (
            token if token.lower().startswith("bearer ") else f"Bearer {token}"
        )
    data = None if body is None else json.dumps(body).encode()
    response = requests.request(
        method,
        url,
        data=data,
        headers=headers,
        verify=configuration.ssl_ca_cert or True,
        timeout=30,
    )
    parsed = response.json() if response.content else None
    return response.status_code, parsed


def path_of(p: Path | str) -> str:
    return str(p)


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    """A background event loop for the inference and Foundry servers a test module starts."""
    thread = LoopThread()
    yield thread
    thread.close()
