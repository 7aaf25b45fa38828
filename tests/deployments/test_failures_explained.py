"""Every kaitosim fault ends in the right state, with the cause in plain words and a next step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from apps.clusters.models import Cluster
from apps.deployments.models import Deployment
from tests.deployments.conftest import FAULT_ANNOTATION, launch_and_follow

pytestmark = pytest.mark.django_db

Status = Deployment.Status


def failed(d: Deployment) -> bool:
    return d.status == Status.FAILED


def test_a_quota_fault_fails_with_azures_quota_and_suggests_other_sizes(
    cluster: Cluster, catalog: object
) -> None:
    d = launch_and_follow(cluster, failed, annotations={FAULT_ANNOTATION: "quota"})
    assert d.failure_reason == "quota"
    assert "quota" in d.failure_message and "standardNCADSA100v4Family cores" in d.failure_message
    assert "Request a quota increase" in d.next_step
    assert "VM sizes that fit by KAITO's sizing: Standard_" in d.next_step
    assert "Standard_NC24ads_A100_v4 (" not in d.next_step  # another family is suggested


def test_a_capacity_fault_fails_with_no_capacity_in_the_region(
    cluster: Cluster, catalog: object
) -> None:
    d = launch_and_follow(cluster, failed, annotations={FAULT_ANNOTATION: "capacity"})
    assert d.failure_reason == "capacity"
    assert "no capacity" in d.failure_message
    assert "another VM size" in d.next_step


def test_an_image_that_cannot_be_pulled_fails_naming_the_image(
    cluster: Cluster, catalog: object
) -> None:
    d = launch_and_follow(cluster, failed, annotations={FAULT_ANNOTATION: "image-pull"})
    assert d.failure_reason == "image-pull"
    assert "cannot pull" in d.failure_message and "kaito" in d.failure_message
    assert "registry" in d.next_step
    assert any(e["reason"] == "Failed" for e in d.events)


def test_a_crash_loop_fails_with_the_exit_code_and_the_log(
    cluster: Cluster, catalog: object
) -> None:
    d = launch_and_follow(cluster, failed, annotations={FAULT_ANNOTATION: "crashloop"})
    assert d.failure_reason == "crashloop"
    assert "keeps crashing" in d.failure_message and "exit code 1" in d.failure_message
    assert "log" in d.next_step
    assert d.log_tail


def test_a_model_that_does_not_fit_fails_out_of_memory_and_names_a_size_that_fits(
    cluster: Cluster, catalog: object
) -> None:
    d = launch_and_follow(cluster, failed, model="falcon-40b-instruct")
    assert d.failure_reason == "oom"
    assert "CUDA out of memory" in d.failure_message
    assert "VM sizes that fit by KAITO's sizing:" in d.next_step
    assert "OutOfMemoryError" in d.log_tail


def test_a_lost_node_is_explained_while_it_lasts_and_the_deployment_recovers(
    simulator_cluster: Callable[..., tuple[Any, Cluster]], catalog: object
) -> None:
    # At 1000x the node is lost for 90 ms; at 150x for 0.6 s, long enough to be seen.
    _, cluster = simulator_cluster(speed=150.0)
    d = launch_and_follow(
        cluster,
        lambda d: d.failure_reason == "node-lost",
        annotations={FAULT_ANNOTATION: "node-lost"},
    )
    assert d.status == Status.PROVISIONING  # not failed: KAITO waits for the node
    assert "NotReady" in d.failure_message
    assert "KAITO waits for the node" in d.next_step
    from tests.deployments.conftest import follow

    d = follow(d, lambda d: d.status == Status.READY and not d.failure_reason, what="recovery")
    assert d.chips[-1] == ("WorkspaceSucceeded", "True")


def test_a_failed_deployment_says_its_gpu_nodes_are_still_billing(
    cluster: Cluster, catalog: object, client_as: object
) -> None:
    from apps.accounts.roles import Role

    d = launch_and_follow(cluster, failed, annotations={FAULT_ANNOTATION: "crashloop"})
    page = client_as(Role.VIEWER).get(d.get_absolute_url())  # type: ignore[operator]
    assert b"Its GPU nodes are still running and billing" in page.content
    assert b"Next step:" in page.content
