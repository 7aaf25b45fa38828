"""A deployment stuck in a phase is flagged with the likely cause; nodes left after a teardown are
flagged as still billing."""

from __future__ import annotations

import pytest
from kubernetes import client

from apps.clusters.models import Cluster
from apps.deployments import services
from apps.deployments.models import Deployment
from tests.deployments.conftest import FAULT_ANNOTATION, follow, launch_and_follow, launch_request

pytestmark = pytest.mark.django_db


def test_a_phase_that_runs_past_its_limit_is_flagged_stuck_with_the_likely_cause(
    cluster: Cluster, catalog: object
) -> None:
    # At this clock speed, the 20-minute provisioning limit is over in a moment.
    Cluster.objects.filter(pk=cluster.pk).update(clock_speed=1e7)
    d = services.deployment_launch(deployment_id=launch_request(cluster).pk)
    d = follow(d, lambda d: d.stuck, what="stuck")
    assert d.status == Deployment.Status.PROVISIONING
    assert d.stuck_reason.startswith("In ")
    assert "Likely cause:" in d.stuck_reason
    assert d.timeline and d.timeline[-1]["ended"] is None


def test_a_stuck_deployment_is_unflagged_once_it_moves_on(
    cluster: Cluster, catalog: object
) -> None:
    d = launch_and_follow(cluster, lambda d: d.status == Deployment.Status.READY)
    assert not d.stuck and d.stuck_reason == ""


def test_nodeclaims_left_behind_after_teardown_are_flagged_as_still_billing(
    cluster: Cluster, catalog: object, kube_admin: client.ApiClient
) -> None:
    d = launch_and_follow(cluster, lambda d: d.status == Deployment.Status.READY)
    # A NodeClaim of this Workspace that something else holds on to (another finalizer).
    held = f"{d.name}-held"
    client.CustomObjectsApi(kube_admin).create_cluster_custom_object(
        "karpenter.sh",
        "v1",
        "nodeclaims",
        {
            "apiVersion": "karpenter.sh/v1",
            "kind": "NodeClaim",
            "metadata": {
                "name": held,
                "labels": {
                    "kaito.sh/workspace": d.name,
                    "kaito.sh/workspacenamespace": d.namespace,
                },
                "finalizers": ["example.com/hold"],
            },
            "spec": {
                "nodeClassRef": {
                    "group": "karpenter.azure.com",
                    "kind": "AKSNodeClass",
                    "name": "default",
                },
                "requirements": [],
            },
        },
    )
    services.deployment_teardown_request(deployment=d)
    services.deployment_teardown(deployment_id=d.pk)
    d = follow(d, lambda d: d.status == Deployment.Status.DELETED, what="deleted")
    assert held in d.nodes_left
    assert "still billing" in d.next_step


def test_a_failed_launch_can_be_torn_down_and_its_nodes_go(
    cluster: Cluster, catalog: object
) -> None:
    d = launch_and_follow(
        cluster,
        lambda d: d.status == Deployment.Status.FAILED,
        annotations={FAULT_ANNOTATION: "image-pull"},
    )
    services.deployment_teardown_request(deployment=d)
    services.deployment_teardown(deployment_id=d.pk)
    d = follow(d, lambda d: d.status == Deployment.Status.DELETED)
    assert d.nodes_left == []
