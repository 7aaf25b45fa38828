"""The ClusterRoles in deploy/kubernetes are enough, and all of them is needed: every flow that
talks to a cluster (check connection, dry run, launch, relaunch, follow, chat, scan, take over,
teardown) runs against kaitosim as a ServiceAccount that RBAC allows exactly those rules, and
each request it makes is recorded.

kaitosim's own authorizer knows two users (admin and viewer); here a third, the ServiceAccount,
is decided by the rendered ClusterRoles' rules, as Kubernetes' RBAC authorizer decides: a request
is allowed when a rule names its API group, its resource (with the subresource) and its verb.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from apps.clusters.services import cluster_check, cluster_create
from apps.deployments import manifests, services
from apps.deployments.models import Deployment
from kaitosim.auth import Decision, TokenAuthority, User
from kaitosim.kubeconfig import kubeconfig_document
from kaitosim.server import SimulatorHandle, start
from tests.deployments.conftest import follow, launch_request
from tests.ops.test_kubernetes_manifests import granted, render, required

SERVICE_ACCOUNT = "system:serviceaccount:kaitoweb:kaitoweb"
SA_TOKEN = "kaitoweb-service-account-token-for-the-rbac-test"
Triple = tuple[str, str, str]  # (API group, resource[/subresource], verb)


class RbacAuthority(TokenAuthority):
    """kaitosim's users, plus the ServiceAccount, whose requests the given rules decide."""

    def __init__(self, base: TokenAuthority, rules: set[Triple]) -> None:
        super().__init__(base.admin_token, base.viewer_token)
        self._users[SA_TOKEN] = User(
            SERVICE_ACCOUNT, ("system:serviceaccounts", "system:authenticated"), False
        )
        self.rules = rules
        self.asked: list[Triple] = []  # requests the ServiceAccount made
        self.reviewed: list[Triple] = []  # what it asked a SelfSubjectAccessReview about
        self.denied: list[Triple] = []
        self._next_is_review = False
        self._lock = threading.Lock()

    def authorize(
        self, user: User, verb: str, group: str, resource: str, subresource: str = ""
    ) -> Decision:
        if user.name != SERVICE_ACCOUNT:
            return super().authorize(user, verb, group, resource, subresource)
        triple = (group, f"{resource}/{subresource}" if subresource else resource, verb)
        with self._lock:
            if triple == ("authorization.k8s.io", "selfsubjectaccessreviews", "create"):
                # Allowed to every authenticated user by the default system:basic-user binding;
                # the server asks about the review's own attributes next.
                self._next_is_review = True
                return Decision(True, 'RBAC: allowed by ClusterRoleBinding "system:basic-user"')
            if self._next_is_review:
                self._next_is_review = False
                self.reviewed.append(triple)
            else:
                self.asked.append(triple)
            allowed = triple in self.rules
            if not allowed:
                self.denied.append(triple)
        return Decision(allowed, "RBAC: allowed by kaitoweb's ClusterRoles" if allowed else "")


@pytest.fixture(scope="module")
def rbac_simulator(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SimulatorHandle, RbacAuthority]]:
    handle = start(
        port=0,
        foundry_port=0,
        speed=1000.0,
        state_dir=tmp_path_factory.mktemp("rbac-sim"),
        start_foundry=False,
    )
    rules = set().union(*granted(render("external-services")).values())
    authority = RbacAuthority(handle.simulator.authority, rules)
    handle.simulator.authority = authority
    handle.simulator.apiserver.authority = authority
    yield handle, authority
    handle.stop()


def service_account_kubeconfig(handle: SimulatorHandle) -> str:
    """What kaitoweb would use in the pod: the ServiceAccount's token and the cluster's CA."""
    document: dict[str, Any] = kubeconfig_document(
        handle.api_url, SA_TOKEN, handle.viewer_token, Path(handle.ca_cert_path).read_bytes()
    )
    return yaml.safe_dump(document)


def workspace_made_by_hand(admin: client.ApiClient, namespace: str, name: str) -> None:
    """A Workspace someone applied with kubectl, as the cluster's admin."""
    client.CustomObjectsApi(admin).create_namespaced_custom_object(
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


def test_every_flow_runs_within_the_manifests_rbac_and_uses_all_of_it(
    rbac_simulator: tuple[SimulatorHandle, RbacAuthority], catalog: object
) -> None:
    handle, rbac = rbac_simulator
    cluster = cluster_create(
        name="in-cluster-like",
        kubeconfig=service_account_kubeconfig(handle),
        context="kaitosim",
        default_namespace="llm-team",
        region="eastus",
        clock_speed=handle.speed,
    )
    # Check connection asks about every permission the app needs, and each comes back allowed.
    report = cluster_check(cluster=cluster)
    assert report.ok, report.problems
    assert set(rbac.reviewed) == required()

    # Launch into a namespace that does not exist yet, with a Hugging Face token Secret and an
    # inference ConfigMap: the form's dry run first, then the launch.
    deployment = launch_request(
        cluster,
        model="llama-3.1-8b-instruct",
        namespace="new-team",
        hf_token="hf_rbac_test",
        settings=manifests.InferenceSettings(max_model_len=4096),
    )
    values = deployment.secret_values
    bundle = manifests.bundle_from_yaml(deployment.manifests, json.loads(values))
    dry_run = services.bundle_dry_run(cluster=cluster, bundle=bundle)
    assert not dry_run.problems, dry_run.problems
    deployment = services.deployment_launch(deployment_id=deployment.pk)
    assert deployment.status == Deployment.Status.PROVISIONING, deployment.failure_message
    # A relaunch (a worker that died after applying) adopts and updates what it made.
    deployment.status, deployment.secret_values = Deployment.Status.PENDING, values
    deployment.save(update_fields=["status", "secret_values"])
    deployment = services.deployment_launch(deployment_id=deployment.pk)
    assert deployment.status == Deployment.Status.PROVISIONING, deployment.failure_message

    deployment = follow(deployment, lambda d: d.status == Deployment.Status.READY, timeout=60)
    assert deployment.log_tail and deployment.events and deployment.nodeclaims
    reply = "".join(services.deployment_chat(deployment=deployment, prompt="Say hi."))
    assert reply.strip()

    # A workspace made with kubectl is found, then taken over.
    admin = config.new_client_from_config(
        config_file=str(handle.kubeconfig_path), context="kaitosim"
    )
    workspace_made_by_hand(admin, "new-team", "made-by-hand")
    found = services.cluster_scan(cluster=cluster)
    assert [d.name for d in found] == ["made-by-hand"]
    taken = services.deployment_take_over(deployment=found[0])
    assert taken.managed

    services.deployment_teardown_request(deployment=deployment)
    services.deployment_teardown(deployment_id=deployment.pk)
    follow(deployment, lambda d: d.status == Deployment.Status.DELETED, timeout=60)

    assert rbac.denied == []
    assert set(rbac.asked) == required()
