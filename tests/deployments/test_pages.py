"""The deployment pages: the list, the live page that stops polling, the chat box, the audit log."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.test import Client

from apps.accounts.roles import Role
from apps.clusters.models import Cluster
from apps.deployments import services
from apps.deployments.models import Deployment
from tests.deployments.conftest import follow, launch_and_follow, launch_request

pytestmark = pytest.mark.django_db
Status = Deployment.Status


def ready(d: Deployment) -> bool:
    return d.status == Status.READY


@pytest.fixture
def viewer(client_as: Callable[[Role | None], Client]) -> Client:
    return client_as(Role.VIEWER)


@pytest.fixture
def operator(client_as: Callable[[Role | None], Client]) -> Client:
    return client_as(Role.OPERATOR)


def test_the_list_shows_model_cluster_size_conditions_state_age_and_cost(
    viewer: Client, cluster: Cluster, catalog: object
) -> None:
    d = launch_and_follow(cluster, ready)
    page = viewer.get("/deployments/").content.decode()
    row = page.split(f'data-deployment="{d.pk}"')[1].split("</tr>")[0]
    assert d.name in row and "phi-4-mini-instruct" in row and cluster.name in row
    assert "Standard_NC24ads_A100_v4 × 1" in row
    for condition in ("ResourceReady", "InferenceReady", "JobStarted", "WorkspaceSucceeded"):
        assert f'data-condition="{condition}"' in row
    assert 'data-condition="WorkspaceSucceeded" data-value="True"' in row
    assert 'data-status="ready"' in row
    assert re.search(r"\$3\.\d\d", row)  # the A100 VM's $/hour


def test_the_list_polls_while_something_moves_and_stops_with_286(
    viewer: Client, cluster: Cluster, catalog: object
) -> None:
    d = launch_request(cluster)
    page = viewer.get("/deployments/").content.decode()
    assert 'hx-trigger="every 3s"' in page
    services.deployment_launch(deployment_id=d.pk)
    follow(d, ready)
    response = viewer.get("/deployments/", HTTP_HX_REQUEST="true")
    assert response.status_code == 286
    assert b'hx-trigger="every 3s"' not in response.content


def test_the_live_fragment_polls_every_two_seconds_until_a_terminal_state(
    viewer: Client, cluster: Cluster, catalog: object
) -> None:
    d = services.deployment_launch(deployment_id=launch_request(cluster).pk)
    moving = viewer.get(d.get_absolute_url(), HTTP_HX_REQUEST="true")
    assert moving.status_code == 200
    assert b'hx-trigger="every 2s"' in moving.content
    assert b"<html" not in moving.content
    d = follow(d, ready)
    settled = viewer.get(d.get_absolute_url(), HTTP_HX_REQUEST="true")
    assert settled.status_code == 286  # htmx stops polling
    assert b'hx-trigger="every 2s"' not in settled.content


def test_the_page_shows_conditions_timeline_events_log_endpoint_and_throughput(
    viewer: Client, cluster: Cluster, catalog: object
) -> None:
    d = launch_and_follow(cluster, ready)
    page = viewer.get(d.get_absolute_url()).content.decode()
    for condition in (
        "NodeClaimReady",
        "NodesReady",
        "ResourceReady",
        "InferenceReady",
        "BenchmarkCompleted",
        "WorkspaceSucceeded",
    ):
        assert f'data-condition="{condition}"' in page
    for phase in ("provisioning", "node init", "image pull", "warm-up", "benchmark"):
        assert f'data-phase="{phase}"' in page
    assert 'id="timeline-chart"' in page and 'id="timeline-figure"' in page
    # Drawn by static/js/charts.js from the figure's JSON (no inline script, for the CSP).
    assert 'data-plotly-source="timeline-figure"' in page
    assert "vendor/plotly/plotly.min.js" in page and "js/charts.js" in page
    assert "WorkspaceSucceeded" in page.split('id="events"')[1]
    assert "KAITO_BENCHMARK_RESULT" in page.split('id="log-tail"')[1]
    assert f"/api/v1/namespaces/{d.namespace}/services/{d.name}:80/proxy/v1/chat/completions" in (
        page
    )
    assert f"{d.peak_tokens_per_minute:,}" in page


def test_the_quick_chat_streams_one_reply_through_the_service_proxy(
    operator: Client, cluster: Cluster, catalog: object
) -> None:
    d = launch_and_follow(cluster, ready)
    assert b'id="chat-form"' in operator.get(d.get_absolute_url()).content
    response = operator.post(f"/deployments/{d.pk}/chat/", {"prompt": "Say hello in five words"})
    assert response.status_code == 200
    assert response.streaming
    chunks = [c.decode() for c in response.streaming_content]  # type: ignore[attr-defined]
    text = "".join(chunks)
    assert len(chunks) > 1, "the reply streams in pieces"
    assert text.strip() and "did not answer" not in text


def test_chat_is_refused_until_the_deployment_is_ready(
    operator: Client, cluster: Cluster, catalog: object
) -> None:
    d = launch_request(cluster)
    response = operator.post(f"/deployments/{d.pk}/chat/", {"prompt": "hi"})
    assert response.status_code == 409


def test_teardown_needs_the_name_typed_as_confirmation(
    operator: Client, cluster: Cluster, catalog: object
) -> None:
    d = launch_and_follow(cluster, ready)
    operator.post(f"/deployments/{d.pk}/teardown/", {"confirm_name": "wrong"})
    assert Deployment.objects.get(pk=d.pk).status == Status.READY
    operator.post(f"/deployments/{d.pk}/teardown/", {"confirm_name": d.name})
    assert Deployment.objects.get(pk=d.pk).status == Status.DELETING


def test_every_action_is_in_the_audit_log_with_who_what_cluster_and_outcome(
    operator: Client, viewer: Client, cluster: Cluster, catalog: object
) -> None:
    d = launch_and_follow(cluster, ready)
    operator.post(f"/deployments/{d.pk}/teardown/", {"confirm_name": d.name})
    page = viewer.get("/audit/").content.decode()
    for action in (
        "cluster.create",
        "deployment.launch",
        "deployment.ready",
        "deployment.teardown",
    ):
        assert f'data-action="{action}"' in page
    teardown = page.split('data-action="deployment.teardown"')[1].split("</tr>")[0]
    assert "operator-user" in teardown and cluster.name in teardown and d.target in teardown
    filtered = viewer.get("/audit/", {"action": "deployment.ready"}).content.decode()
    assert 'data-action="cluster.create"' not in filtered
