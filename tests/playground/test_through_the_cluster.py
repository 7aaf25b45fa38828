"""The whole simulator: a KAITO workspace reached through the Kubernetes API's service proxy
(HTTPS with the cluster's own CA, a bearer token) against the simulator's Foundry, together."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from apps.playground import clients
from kaitosim.server import SimulatorHandle, start
from tests.kaitosim.conftest import create_workspace, wait_for_condition, workspace_manifest

CHAT = clients.ChatRequest(prompt="Say hello to the platform team.", max_tokens=12)


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorHandle]:
    handle = start(port=0, foundry_port=0, speed=1000.0, state_dir=tmp_path_factory.mktemp("sim"))
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def workspace_url(simulator: SimulatorHandle) -> str:
    """A ready phi-4-mini workspace; its service as the API server proxies it."""
    api = config.new_client_from_config(
        config_file=str(simulator.kubeconfig_path), context="kaitosim"
    )
    custom = client.CustomObjectsApi(api)
    name = f"phi-{uuid.uuid4().hex[:6]}"
    create_workspace(custom, "default", workspace_manifest(name))
    wait_for_condition(custom, "default", name, "InferenceReady", timeout=60)
    return f"{simulator.api_url}/api/v1/namespaces/default/services/{name}:80/proxy"


def through_proxy(simulator: SimulatorHandle, url: str, *, ca: bool = True) -> clients.Endpoint:
    return clients.Endpoint(
        kind=clients.KAITO_VLLM,
        url=url,
        model="phi-4-mini-instruct",
        auth=clients.AUTH_API_KEY,
        api_key=simulator.admin_token,
        ca_pem=Path(simulator.ca_cert_path).read_text() if ca else "",
    )


def test_a_workspace_behind_the_service_proxy_is_measured_with_the_clusters_ca(
    simulator: SimulatorHandle, workspace_url: str
) -> None:
    m = clients.measure_sync(through_proxy(simulator, workspace_url), CHAT, timeout_s=30)
    assert m.ok, m.error_message
    assert m.text and m.chunks > 0 and not m.tokens_estimated
    assert m.output_tokens is not None and m.chunks <= m.output_tokens <= 12  # vLLM counts EOS


def test_without_the_clusters_ca_the_certificate_is_refused(
    simulator: SimulatorHandle, workspace_url: str
) -> None:
    m = clients.measure_sync(through_proxy(simulator, workspace_url, ca=False), CHAT)
    assert m.error_kind == "connect"
    assert "CERTIFICATE_VERIFY_FAILED" in m.error_message


def test_a_ca_that_is_not_pem_is_a_configuration_error(simulator: SimulatorHandle) -> None:
    endpoint = clients.Endpoint(kind=clients.KAITO_VLLM, url=simulator.api_url, ca_pem="nope")
    m = clients.measure_sync(endpoint, CHAT)
    assert m.error_kind == "config" and "not valid PEM" in m.error_message


def test_kaito_and_the_simulators_foundry_are_compared_side_by_side(
    simulator: SimulatorHandle, workspace_url: str
) -> None:
    foundry = clients.Endpoint(
        kind=clients.FOUNDRY_OPENAI,
        url=simulator.foundry_url,
        model="Phi-4-mini-instruct",
        auth=clients.AUTH_API_KEY,
        api_key=simulator.foundry_key,
    )
    result = asyncio.run(
        clients.measure_together(
            [(through_proxy(simulator, workspace_url), CHAT), (foundry, CHAT)], timeout_s=30
        )
    )
    assert all(m.ok for m in result.measurements), [m.error_message for m in result.measurements]
    a, b = result.measurements
    assert result.start_skew_ms is not None
    # together: both requests were out before either side saw its first token
    assert a.sent_at is not None and b.sent_at is not None
    assert a.first_token_at is not None and b.first_token_at is not None
    assert max(a.sent_at, b.sent_at) <= min(a.first_token_at, b.first_token_at)
