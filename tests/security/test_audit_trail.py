"""Every state change is in the audit log: each route the walk classifies as changing state is
done here for real, as an admin, and must add an audit entry naming the admin."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client

from apps.accounts.models import SecuritySettings
from apps.accounts.roles import Role
from apps.audit.models import AuditEntry
from apps.catalog.services import LoadReport
from apps.clusters.models import Cluster
from apps.clusters.services import cluster_create
from apps.deployments.models import Deployment
from apps.playground.experiment_views import token_sha256
from apps.playground.experiments import experiment_create
from apps.playground.models import ABRun, ApiToken, Experiment, Target
from apps.playground.prompts import Prompt, PromptSet
from tests.deployments.conftest import launch_request
from tests.playground.factories import foundry_target, kaito_target, queued_run
from tests.security.test_url_walk import TABLE

pytestmark = pytest.mark.django_db

PASSWORD = "walk-the-audit-trail-42"


@dataclass
class Scene:
    admin: Client
    user: Any
    cluster: Cluster
    kaitosim: Any
    deployment: Deployment
    run: ABRun
    experiment: Experiment
    targets: list[Target]


@pytest.fixture
def scene(
    catalog: LoadReport, cluster: Cluster, kaitosim: Any, client_as: Callable[..., Client]
) -> Scene:
    admin = client_as(Role.ADMIN)
    user = get_user_model().objects.get(username="admin-user")
    user.set_password(PASSWORD)
    user.save()
    admin.force_login(user)
    a = kaito_target("http://127.0.0.1:9/v1", name="trail-kaito")
    b = foundry_target("http://127.0.0.1:9", "trail-key-1234567", name="trail-foundry")
    experiment = experiment_create(
        user=user,
        name="trail",
        targets=[a, b],
        prompt_set=PromptSet(name="trail", prompts=(Prompt(prompt="Hello"),)),
        enqueue=False,
    )
    return Scene(
        admin=admin,
        user=user,
        cluster=cluster,
        kaitosim=kaitosim,
        deployment=launch_request(cluster, name=f"trail-{uuid.uuid4().hex[:6]}"),
        run=queued_run([a, b]),
        experiment=experiment,
        targets=[a, b],
    )


def kubeconfig(s: Scene) -> str:
    return str(s.kaitosim.kubeconfig_path.read_text())


def launch(s: Scene, url: str, data: dict[str, Any]) -> Any:
    data = {**data, "deployment_uid": str(uuid.uuid4())}
    preview = s.admin.post(url, {**data, "action": "preview"})
    assert 'id="dry-run-ok"' in preview.content.decode(), url
    return s.admin.post(url, {**data, "action": "launch"})


def sign_in(s: Scene) -> Any:
    return Client().post("/accounts/login/", {"username": "admin-user", "password": PASSWORD})


def password_change(s: Scene) -> Any:
    new = PASSWORD + "-2"
    return s.admin.post(
        "/accounts/password_change/",
        {"old_password": PASSWORD, "new_password1": new, "new_password2": new},
    )


def new_cluster(s: Scene) -> Any:
    return s.admin.post(
        "/clusters/new/",
        {
            "name": "trail-new",
            "auth": "kubeconfig",
            "kubeconfig": kubeconfig(s),
            "context": "kaitosim",
            "default_namespace": "default",
            "clock_speed": "1000",
        },
    )


def add_simulator(s: Scene, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("KAITOSIM_KUBECONFIG", str(s.kaitosim.kubeconfig_path))
    return s.admin.post("/clusters/new/simulator/")


def delete_cluster(s: Scene) -> Any:
    spare = cluster_create(name="trail-spare", kubeconfig=kubeconfig(s), context="kaitosim")
    return s.admin.post(f"/clusters/{spare.name}/delete/")


def take_over(s: Scene) -> Any:
    """A Workspace in the cluster that kaitoweb does not manage (as if found by a scan)."""
    from apps.deployments import services

    services.deployment_launch(deployment_id=s.deployment.pk)
    Deployment.objects.filter(pk=s.deployment.pk).update(managed=False)
    return s.admin.post(f"/deployments/{s.deployment.pk}/take-over/")


def api_create(s: Scene) -> Any:
    token = f"trail-{uuid.uuid4().hex}"
    ApiToken.objects.create(
        user=s.user, name="trail", token_sha256=token_sha256(token), prefix=token[:8]
    )
    payload = {"targets": [t.name for t in s.targets], "prompt_set": "platform-questions"}
    return Client().post(
        "/api/experiments/",
        json.dumps(payload),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def target_form(s: Scene, **overrides: Any) -> dict[str, Any]:
    data = {
        "name": "trail-new-target",
        "kind": Target.Kind.KAITO_VLLM,
        "endpoint_url": "http://127.0.0.1:9/v1",
        "model_name": "phi-4-mini-instruct",
        "auth": Target.Auth.NONE,
        "api_version": "2024-05-01-preview",
        "cost_basis": "none",
        "price_factor": "1",
        "node_count": "1",
    }
    data.update(overrides)
    return data


MANIFEST = """\
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: trail-pasted
resource:
  instanceType: Standard_NC24ads_A100_v4
  labelSelector:
    matchLabels:
      apps: trail-pasted
inference:
  preset:
    name: phi-4-mini-instruct
"""

# route -> (how to do it for real, the audit action it must add)
Action = Callable[..., Any]
ACTIONS: dict[str, tuple[Action, str]] = {
    "accounts/login/": (sign_in, "login"),
    "accounts/logout/": (lambda s: s.admin.post("/accounts/logout/"), "logout"),
    "accounts/password_change/": (password_change, "password.change"),
    "clusters/new/": (new_cluster, "cluster.create"),
    "clusters/new/simulator/": (add_simulator, "cluster.create"),
    "clusters/<slug:name>/check/": (
        lambda s: s.admin.post(f"/clusters/{s.cluster.name}/check/"),
        "cluster.check",
    ),
    "clusters/<slug:name>/scan/": (
        lambda s: s.admin.post(f"/clusters/{s.cluster.name}/scan/"),
        "cluster.scan",
    ),
    "clusters/<slug:name>/edit/": (
        lambda s: s.admin.post(
            f"/clusters/{s.cluster.name}/edit/",
            {"default_namespace": "trail", "region": "westus", "clock_speed": "1000"},
        ),
        "cluster.update",
    ),
    "clusters/<slug:name>/delete/": (delete_cluster, "cluster.delete"),
    "deployments/new/": (
        lambda s: launch(
            s,
            "/deployments/new/",
            {
                "model": "microsoft/Phi-4-mini-instruct",
                "cluster": s.cluster.pk,
                "namespace": s.cluster.default_namespace,
                "name": "trail-phi",
                "vm_size": "Standard_NC24ads_A100_v4",
                "node_count": 1,
                "runtime": "vllm",
            },
        ),
        "deployment.launch",
    ),
    "deployments/new/manifest/": (
        lambda s: launch(
            s,
            "/deployments/new/manifest/",
            {
                "cluster": s.cluster.pk,
                "namespace": s.cluster.default_namespace,
                "manifest": MANIFEST,
            },
        ),
        "deployment.launch",
    ),
    "deployments/new/custom/": (
        lambda s: launch(
            s,
            "/deployments/new/custom/",
            {
                "kind": "template",
                "cluster": s.cluster.pk,
                "namespace": s.cluster.default_namespace,
                "name": "trail-bloomz",
                "vm_size": "Standard_D16s_v5",
                "node_count": 1,
                "image": "mcr.microsoft.com/aks/kaito/kaito-base:0.0.8",
                "command": "accelerate",
                "args": "launch inference_api.py --model_id bigscience/bloomz-560m",
                "port": 5000,
                "served_model": "bigscience/bloomz-560m",
                "cpu": "4",
                "memory": "8Gi",
            },
        ),
        "deployment.launch",
    ),
    "deployments/<int:pk>/teardown/": (
        lambda s: s.admin.post(
            f"/deployments/{s.deployment.pk}/teardown/", {"confirm_name": s.deployment.name}
        ),
        "deployment.teardown",
    ),
    "deployments/<int:pk>/take-over/": (take_over, "deployment.adopt"),
    "playground/runs/new/": (
        lambda s: s.admin.post(
            "/playground/runs/new/",
            {
                "target_a": s.targets[0].pk,
                "target_b": s.targets[1].pk,
                "prompt": "Hello",
                "max_tokens": 16,
                "timeout_s": 10,
            },
        ),
        "playground.run",
    ),
    "playground/runs/<int:pk>/again/": (
        lambda s: s.admin.post(f"/playground/runs/{s.run.pk}/again/"),
        "playground.run",
    ),
    "playground/runs/<int:pk>/note/": (
        lambda s: s.admin.post(f"/playground/runs/{s.run.pk}/note/", {"note": "seen"}),
        "playground.note",
    ),
    "playground/experiments/": (
        lambda s: s.admin.post(
            "/playground/experiments/",
            {
                "targets": [t.pk for t in s.targets],
                "builtin": "platform-questions",
                "repetitions": 1,
                "concurrency": 1,
                "max_tokens": 16,
                "timeout_s": 10,
                "storage_policy": "text",
            },
        ),
        "experiment.create",
    ),
    "playground/experiments/<int:pk>/cancel/": (
        lambda s: s.admin.post(f"/playground/experiments/{s.experiment.pk}/cancel/"),
        "experiment.cancel",
    ),
    "playground/experiments/<int:pk>/vote/": (
        lambda s: s.admin.post(
            f"/playground/experiments/{s.experiment.pk}/vote/",
            {"prompt_index": 0, "target": s.targets[0].pk},
        ),
        "experiment.vote",
    ),
    "playground/targets/new/": (
        lambda s: s.admin.post("/playground/targets/new/", target_form(s)),
        "target.create",
    ),
    "playground/targets/<int:pk>/": (
        lambda s: s.admin.post(
            f"/playground/targets/{s.targets[0].pk}/",
            target_form(s, name=s.targets[0].name, model_name="renamed"),
        ),
        "target.update",
    ),
    "playground/targets/<int:pk>/delete/": (
        lambda s: s.admin.post(f"/playground/targets/{s.targets[1].pk}/delete/"),
        "target.delete",
    ),
    "api/experiments/": (api_create, "experiment.create"),
    "admin/logout/": (lambda s: s.admin.post("/admin/logout/"), "logout"),
    "admin/auth/user/<id>/password/": (
        lambda s: s.admin.post(
            f"/admin/auth/user/{s.user.pk}/password/",
            {"password1": "an0ther-passphrase!", "password2": "an0ther-passphrase!"},
        ),
        "admin.user.change",
    ),
}
# Django admin's add, change and delete of every model are audited through its own log
# (apps/audit mirrors LogEntry); these routes are covered by the admin tests below.
ADMIN_MODEL_ROUTE = ("add/", "<path:object_id>/change/", "<path:object_id>/delete/")


def test_every_state_changing_route_has_an_audited_action_here() -> None:
    changing = {route for route, rule in TABLE.items() if rule.changes}
    generic = {r for r in changing if r.startswith("admin/") and r.endswith(ADMIN_MODEL_ROUTE)}
    assert changing - generic == set(ACTIONS)


@pytest.mark.parametrize("route", sorted(ACTIONS))
def test_each_state_change_is_audited(
    route: str, scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    action, expected = ACTIONS[route]
    before = AuditEntry.objects.count()
    response = add_simulator(scene, monkeypatch) if action is add_simulator else action(scene)
    assert response.status_code in (200, 201, 302), (route, response.status_code)
    if response.status_code == 200 and hasattr(response, "context") and response.context:
        form = response.context.get("form")
        assert form is None or not form.errors, (route, form.errors)
    entries = list(AuditEntry.objects.order_by("id")[before:])
    assert [e for e in entries if e.action == expected], (route, [e.action for e in entries])
    entry = next(e for e in entries if e.action == expected)
    assert entry.actor_id == scene.user.pk and entry.actor_name == "admin-user"
    assert PASSWORD not in entry.detail


def test_changes_made_in_django_admin_are_audited(scene: Scene) -> None:
    admin = scene.admin
    before = AuditEntry.objects.count()
    added = admin.post("/admin/auth/group/add/", {"name": "trail-group"})
    assert added.status_code == 302
    group = Group.objects.get(name="trail-group")
    settings_row = SecuritySettings.objects.create(pk=1)
    changed = admin.post(
        f"/admin/accounts/securitysettings/{settings_row.pk}/change/",
        {"allow_link_local_endpoints": "on"},
    )
    assert changed.status_code == 302
    assert SecuritySettings.current().allow_link_local_endpoints
    token = ApiToken.objects.create(user=scene.user, name="gone", token_sha256="x" * 64)
    deleted = admin.post(f"/admin/playground/apitoken/{token.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302 and not ApiToken.objects.filter(pk=token.pk).exists()
    actions = list(AuditEntry.objects.order_by("id")[before:].values_list("action", "target"))
    assert ("admin.group.add", f"group {group}") in actions
    assert ("security.settings", "security settings") in actions
    assert ("admin.securitysettings.change", "securitysettings Security settings") in actions
    assert ("admin.apitoken.delete", "apitoken gone") in [(a, t[:13]) for a, t in actions]


def test_a_refused_hf_token_never_reaches_the_audit_log(scene: Scene) -> None:
    """The audit log names fields, never their values (the manifest's Secret included)."""
    token = "hf_" + uuid.uuid4().hex
    secret = MANIFEST.replace(
        "inference:\n  preset:\n    name: phi-4-mini-instruct\n",
        "inference:\n  preset:\n    name: llama-3.1-8b-instruct\n"
        "    presetOptions:\n      modelAccessSecret: trail-token\n",
    )
    secret = (
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: trail-token\ndata:\n"
        f"  HF_TOKEN: {base64.b64encode(token.encode()).decode()}\n---\n" + secret
    )
    launch(
        scene,
        "/deployments/new/manifest/",
        {
            "cluster": scene.cluster.pk,
            "namespace": scene.cluster.default_namespace,
            "manifest": secret,
        },
    )
    text = json.dumps(list(AuditEntry.objects.values("action", "target", "detail")))
    assert "deployment.launch" in text and token not in text
    page = scene.admin.get("/audit/").content.decode()
    assert token not in page
    deployment = Deployment.objects.get(name="trail-pasted")
    for url in [
        deployment.get_absolute_url(),
        f"/admin/deployments/deployment/{deployment.pk}/change/",
    ]:
        assert token not in scene.admin.get(url).content.decode()
