"""Workspaces kaitoweb did not launch are listed read-only until an operator takes them over."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import yaml
from django.test import Client
from kubernetes import client

from apps.accounts.roles import Role
from apps.audit.models import AuditEntry
from apps.clusters.models import Cluster
from apps.deployments import manifests, services
from apps.deployments.models import Deployment
from tests.deployments.conftest import follow, workspaces_named

pytestmark = pytest.mark.django_db


def foreign_workspace(api: client.ApiClient, namespace: str, name: str) -> None:
    core = client.CoreV1Api(api)
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    except client.ApiException as error:
        if error.status != 409:
            raise
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        "kaito.sh",
        "v1beta1",
        namespace,
        "workspaces",
        {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "Workspace",
            "metadata": {"name": name},
            "resource": {
                "instanceType": "Standard_NC24ads_A100_v4",
                "labelSelector": {"matchLabels": {"apps": name}},
            },
            "inference": {"preset": {"name": "phi-4-mini-instruct"}},
        },
    )


def test_a_scan_lists_a_workspace_made_with_kubectl_as_read_only(
    client_as: Callable[[Role | None], Client],
    cluster: Cluster,
    catalog: object,
    kube_admin: client.ApiClient,
) -> None:
    foreign_workspace(kube_admin, cluster.default_namespace, "made-by-hand")
    operator = client_as(Role.OPERATOR)
    operator.post(f"/clusters/{cluster.name}/scan/")
    found = Deployment.objects.get(namespace=cluster.default_namespace, name="made-by-hand")
    assert found.source == Deployment.Source.DISCOVERED and not found.managed
    assert found.model_name == "phi-4-mini-instruct" and found.kaito_model is not None
    page = operator.get(f"/clusters/{cluster.name}/").content.decode()
    assert "made-by-hand" in page and "read-only" in page
    detail = operator.get(found.get_absolute_url()).content.decode()
    assert 'id="take-over"' in detail and 'id="teardown"' not in detail
    with pytest.raises(services.DeploymentRefused, match="read-only; take it over first"):
        services.deployment_teardown_request(deployment=found)
    follow(found, lambda d: d.status == Deployment.Status.READY)


def test_taking_over_labels_the_workspace_and_allows_teardown(
    client_as: Callable[[Role | None], Client],
    cluster: Cluster,
    catalog: object,
    kube_admin: client.ApiClient,
) -> None:
    foreign_workspace(kube_admin, cluster.default_namespace, "adopt-me")
    [found] = [
        d
        for d in services.cluster_scan(cluster=cluster)
        if d.namespace == cluster.default_namespace
    ]
    client_as(Role.OPERATOR).post(f"/deployments/{found.pk}/take-over/")
    found.refresh_from_db()
    assert found.managed
    [workspace] = workspaces_named(kube_admin, cluster.default_namespace, "adopt-me")
    assert workspace["metadata"]["labels"][manifests.DEPLOYMENT_LABEL] == str(found.uid)
    services.deployment_teardown_request(deployment=found)
    services.deployment_teardown(deployment_id=found.pk)
    follow(found, lambda d: d.status == Deployment.Status.DELETED)
    assert workspaces_named(kube_admin, cluster.default_namespace, "adopt-me") == []


def test_a_refused_take_over_says_why_and_stays_in_the_audit_log(
    cluster: Cluster, catalog: object, kube_admin: client.ApiClient
) -> None:
    foreign_workspace(kube_admin, cluster.default_namespace, "gone-soon")
    [found] = [
        d
        for d in services.cluster_scan(cluster=cluster)
        if d.namespace == cluster.default_namespace
    ]
    document = yaml.safe_load(cluster.kubeconfig)
    for user in document["users"]:  # the cluster's token is revoked meanwhile
        user["user"]["token"] = "revoked-" + user["user"].get("token", "")
    cluster.kubeconfig = yaml.safe_dump(document)
    cluster.save()
    with pytest.raises(services.DeploymentRefused, match="the cluster refused"):
        services.deployment_take_over(deployment=found)
    found.refresh_from_db()
    assert not found.managed
    entry = AuditEntry.objects.get(action="deployment.adopt")
    assert entry.outcome == AuditEntry.Outcome.FAILED and entry.detail


def test_a_launch_onto_a_name_someone_else_uses_fails_clearly_and_leaves_theirs_alone(
    cluster: Cluster, catalog: object, kube_admin: client.ApiClient
) -> None:
    from tests.deployments.conftest import launch_request

    foreign_workspace(kube_admin, cluster.default_namespace, "taken")
    d = launch_request(cluster, name="taken")
    d = services.deployment_launch(deployment_id=d.pk)
    assert d.status == Deployment.Status.FAILED
    assert d.failure_reason == "refused"
    assert "was not made by this deployment" in d.failure_message
    [workspace] = workspaces_named(kube_admin, cluster.default_namespace, "taken")
    assert manifests.DEPLOYMENT_LABEL not in (workspace["metadata"].get("labels") or {})


def test_a_workspace_deleted_outside_kaitoweb_leaves_an_orphaned_row(
    cluster: Cluster, catalog: object, kube_admin: client.ApiClient
) -> None:
    from tests.deployments.conftest import launch_and_follow

    d = launch_and_follow(cluster, lambda d: d.status == Deployment.Status.READY)
    client.CustomObjectsApi(kube_admin).delete_namespaced_custom_object(
        "kaito.sh", "v1beta1", d.namespace, "workspaces", d.name
    )
    d = follow(d, lambda d: d.status == Deployment.Status.ORPHANED)
    assert "outside kaitoweb" in d.stuck_reason
