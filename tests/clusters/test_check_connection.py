"""Check connection reports the server version, KAITO's CRD and our permissions, in plain words."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from django.test import Client

from apps.accounts.roles import Role
from apps.audit.models import AuditEntry
from apps.clusters import kube
from apps.clusters.models import Cluster
from apps.clusters.services import cluster_check, cluster_create

pytestmark = pytest.mark.django_db


def kubeconfig_with(kaitosim: Any, *, token: str | None = None, server: str | None = None) -> str:
    document = yaml.safe_load(kaitosim.kubeconfig_path.read_text())
    if token is not None:
        for user in document["users"]:
            user["user"]["token"] = token
    if server is not None:
        for entry in document["clusters"]:
            entry["cluster"]["server"] = server
    return yaml.safe_dump(document)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_healthy_cluster_reports_its_version_kaito_and_our_permissions(
    cluster: Cluster,
) -> None:
    report = cluster_check(cluster=cluster)
    assert report.ok, report.problems
    cluster.refresh_from_db()
    assert cluster.server_version == "v1.32.6"
    assert cluster.kaito_installed is True
    assert cluster.can_create_workspaces is True
    assert cluster.check_ok is True
    assert AuditEntry.objects.filter(action="cluster.check", outcome="ok").exists()


def test_a_read_only_context_is_told_which_permissions_are_missing(kaitosim: Any) -> None:
    cluster = cluster_create(
        name="viewer", kubeconfig=kaitosim.kubeconfig_path.read_text(), context="kaitosim-viewer"
    )
    report = cluster_check(cluster=cluster)
    assert not report.ok
    assert report.kaito_installed is True
    assert report.can_create_workspaces is False
    [problem] = report.problems
    assert problem.startswith("403 Forbidden: our credentials may not ")
    # every verb kaitoweb needs and the viewer lacks is named, reads stay allowed
    for missing in ("create Workspaces (namespaced)", "delete Workspaces", "create Secrets"):
        assert missing in problem
    assert "list Workspaces" not in problem and "get pods/log" not in problem
    assert "deploy/kubernetes/base/rbac.yaml" in problem


def test_a_wrong_token_is_reported_as_401_with_what_to_do(kaitosim: Any) -> None:
    cluster = cluster_create(
        name="badtoken",
        kubeconfig=kubeconfig_with(kaitosim, token="not-a-token"),
        context="kaitosim",
    )
    report = cluster_check(cluster=cluster)
    assert not report.ok
    assert report.problems[0].startswith("401 Unauthorized")
    assert "az aks get-credentials" in report.problems[0]


def test_an_unreachable_api_server_is_reported_as_unreachable(kaitosim: Any) -> None:
    cluster = cluster_create(
        name="gone",
        kubeconfig=kubeconfig_with(kaitosim, server=f"https://127.0.0.1:{free_port()}"),
        context="kaitosim",
    )
    report = cluster_check(cluster=cluster)
    assert not report.ok
    assert report.problems[0].startswith("Unreachable: cannot reach https://127.0.0.1:")
    assert cluster.__class__.objects.get(pk=cluster.pk).check_problems == report.problems


def test_a_cluster_without_kaito_is_told_to_install_it(
    kaitosim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # kaitosim always serves KAITO's CRD and cannot delete it (DELETE on the CRD is a 405), so
    # "no KAITO" is the real API server's discovery answering 404 for a group version it does
    # not serve: the check is pointed at such a version for this one test.
    cluster = cluster_create(
        name="nokaito", kubeconfig=kaitosim.kubeconfig_path.read_text(), context="kaitosim"
    )
    monkeypatch.setattr(kube, "KAITO_VERSION", "v9nonexistent")
    report = cluster_check(cluster=cluster)
    assert report.kaito_installed is False
    assert any(p.startswith("No KAITO: the API server does not serve") for p in report.problems)


def test_check_connection_answers_the_htmx_fragment_for_operators(
    client_as: Callable[[Role | None], Client], cluster: Cluster
) -> None:
    response = client_as(Role.OPERATOR).post(
        f"/clusters/{cluster.name}/check/", HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert b'id="check-ok"' in response.content
    assert b"<html" not in response.content


def test_kube_errors_are_translated_into_our_own(kaitosim: Any, cluster: Cluster) -> None:
    with kube.Kube(cluster.credentials) as api:
        with pytest.raises(kube.NotFound):
            api.workspace_get("default", "no-such-workspace")
        bad = {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "Workspace",
            "metadata": {"name": "x"},
            "resource": {"instanceType": "Standard_NC24ads_A100_v4"},
            "inference": {"preset": {"name": "phi-4-mini-instruct"}},
        }
        with pytest.raises(kube.Invalid) as invalid:
            api.object_create(bad, namespace="default", dry_run=True)
        assert invalid.value.status == 422
        bad["resource"]["labelSelector"] = {"matchLabels": {"apps": "x"}}  # type: ignore[index]
        bad["inference"] = {"preset": {"name": "phi-2"}}
        with pytest.raises(kube.Invalid) as denied:
            api.object_create(bad, namespace="default", dry_run=True)
        assert denied.value.status == 400
        assert "deprecated" in denied.value.message
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dup"}, "data": {}}
        api.object_create(cm, namespace="default")
        try:
            with pytest.raises(kube.Conflict) as conflict:
                api.object_create(cm, namespace="default")
            assert conflict.value.already_exists
        finally:
            api.object_delete("ConfigMap", "default", "dup")
    viewer = Cluster(kubeconfig=kaitosim.kubeconfig_path.read_text(), context="kaitosim-viewer")
    with kube.Kube(viewer.credentials) as api, pytest.raises(kube.Forbidden):
        api.object_create(cm, namespace="default")
