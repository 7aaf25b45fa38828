"""Adding a cluster: pasted or uploaded kubeconfig, kept encrypted and never shown again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client

from apps.accounts.roles import Role
from apps.clusters.models import Cluster

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client_as: Callable[[Role | None], Client]) -> Client:
    return client_as(Role.OPERATOR)


def new_cluster(**overrides: Any) -> dict[str, Any]:
    data = {
        "name": "aks-eastus",
        "auth": "kubeconfig",
        "context": "kaitosim",
        "default_namespace": "llm",
        "region": "eastus",
        "notes": "",
        "clock_speed": "1000",
    }
    data.update(overrides)
    return data


def test_a_pasted_kubeconfig_is_stored_encrypted_and_never_shown_again(
    operator: Client, kaitosim: Any
) -> None:
    text = kaitosim.kubeconfig_path.read_text()
    response = operator.post("/clusters/new/", new_cluster(kubeconfig=text))
    cluster = Cluster.objects.get(name="aks-eastus")
    assert response.status_code == 302 and response["Location"] == "/clusters/aks-eastus/"
    assert cluster.api_server == kaitosim.api_url
    assert cluster.kubeconfig == text
    with connection.cursor() as cursor:
        cursor.execute("SELECT kubeconfig FROM clusters_cluster WHERE id = %s", [cluster.pk])
        stored = cursor.fetchone()[0]
    assert stored.startswith("fernet:") and kaitosim.admin_token not in stored
    for url in ("/clusters/aks-eastus/", "/clusters/aks-eastus/edit/", "/clusters/"):
        assert kaitosim.admin_token not in operator.get(url).content.decode()


def test_an_uploaded_kubeconfig_works_the_same(operator: Client, kaitosim: Any) -> None:
    upload = SimpleUploadedFile("config", kaitosim.kubeconfig_path.read_bytes())
    operator.post("/clusters/new/", {**new_cluster(), "kubeconfig_file": upload})
    assert Cluster.objects.get(name="aks-eastus").context == "kaitosim"


def test_a_kubeconfig_without_the_context_is_an_error_naming_the_contexts(
    operator: Client, kaitosim: Any
) -> None:
    page = operator.post(
        "/clusters/new/",
        new_cluster(kubeconfig=kaitosim.kubeconfig_path.read_text(), context="prod"),
    ).content.decode()
    assert "<strong>Context:</strong>" in page
    assert "has no context &#x27;prod&#x27;; it has: kaitosim, kaitosim-viewer" in page
    assert not Cluster.objects.exists()


def test_text_that_is_not_a_kubeconfig_is_an_error_on_the_kubeconfig(operator: Client) -> None:
    page = operator.post("/clusters/new/", new_cluster(kubeconfig="just: text")).content.decode()
    assert "<strong>Kubeconfig:</strong> the kubeconfig has no contexts" in page


def test_editing_keeps_the_stored_kubeconfig_unless_a_new_one_is_given(
    operator: Client, cluster: Cluster
) -> None:
    before = cluster.kubeconfig
    operator.post(
        f"/clusters/{cluster.name}/edit/",
        {
            "default_namespace": "other",
            "region": "westus",
            "notes": "n",
            "clock_speed": "1000",
            "context": "kaitosim",
        },
    )
    cluster.refresh_from_db()
    assert cluster.default_namespace == "other" and cluster.kubeconfig == before


def test_the_local_simulator_is_added_in_one_click(
    operator: Client, kaitosim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAITOSIM_KUBECONFIG", str(kaitosim.kubeconfig_path))
    assert b'id="add-simulator"' in operator.get("/clusters/").content
    operator.post("/clusters/new/simulator/")
    cluster = Cluster.objects.get(name="kaitosim")
    assert cluster.check_ok is True
    assert cluster.clock_speed == kaitosim.speed


def test_a_cluster_with_live_deployments_cannot_be_removed(
    operator: Client, cluster: Cluster, catalog: object
) -> None:
    from tests.deployments.conftest import launch_request

    launch_request(cluster)
    operator.post(f"/clusters/{cluster.name}/delete/")
    assert Cluster.objects.filter(pk=cluster.pk).exists()
