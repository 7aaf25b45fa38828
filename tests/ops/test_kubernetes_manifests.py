"""deploy/kubernetes, rendered by kubectl's kustomize as `kubectl apply -k` would: every object
is there, the RBAC is exactly what the app's Kubernetes module calls, and the pods run locked
down with the probes, image and settings the app expects."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from apps.clusters.kube import REQUIRED_PERMISSIONS

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ROOT / "deploy" / "kubernetes" / "overlays"
APP_IMAGE = "kaitoweb:0.1.0"
SERVICE_ACCOUNT = ("kaitoweb", "kaitoweb")  # namespace, name

_rendered: dict[str, list[dict[str, Any]]] = {}


def render(overlay: str) -> list[dict[str, Any]]:
    if overlay not in _rendered:
        result = subprocess.run(
            ["kubectl", "kustomize", str(OVERLAYS / overlay)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        _rendered[overlay] = [d for d in yaml.safe_load_all(result.stdout) if d]
    return _rendered[overlay]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod_specs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        f"{o['kind']}/{o['metadata']['name']}": o["spec"]["template"]["spec"]
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet", "Job")
    }


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("initContainers") or []) + list(spec["containers"])


def app_containers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        c
        for spec in pod_specs(objects).values()
        for c in containers(spec)
        if c["image"].startswith("kaitoweb")
    ]


OVERLAY_NAMES = ["external-services", "bundled"]


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_every_object_the_app_needs_is_rendered(overlay: str) -> None:
    objects = render(overlay)
    kinds = Counter(o["kind"] for o in objects)
    assert kinds["Namespace"] == 1
    assert kinds["ServiceAccount"] == 1
    assert kinds["ClusterRole"] == 2 and kinds["ClusterRoleBinding"] == 2
    assert kinds["Job"] == 1 and kinds["ConfigMap"] == 1
    for name in ("kaitoweb-web", "kaitoweb-worker", "kaitoweb-beat"):
        one(objects, "Deployment", name)
    one(objects, "Job", "kaitoweb-migrate")
    service = one(objects, "Service", "kaitoweb")
    assert (
        service["spec"]["selector"]
        == one(objects, "Deployment", "kaitoweb-web")["spec"]["selector"]["matchLabels"]
    )
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    # Everything namespaced lands in kaitoweb's namespace.
    for o in objects:
        if o["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert o["metadata"]["namespace"] == "kaitoweb", o["metadata"]["name"]
    assert (
        one(objects, "Namespace", "kaitoweb")["metadata"]["labels"][
            "pod-security.kubernetes.io/enforce"
        ]
        == "restricted"
    )
    if overlay == "bundled":
        assert kinds["StatefulSet"] == 2 and kinds["NetworkPolicy"] == 1
        one(objects, "StatefulSet", "kaitoweb-postgres")
        one(objects, "StatefulSet", "kaitoweb-redis")
    else:
        assert kinds["StatefulSet"] == 0


def granted(objects: list[dict[str, Any]]) -> dict[str, set[tuple[str, str, str]]]:
    """(group, resource, verb) the ServiceAccount gets, per ClusterRole bound to it cluster-wide;
    asserting along the way that nothing else grants it anything."""
    roles = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ClusterRole"}
    assert not [o for o in objects if o["kind"] in ("Role", "RoleBinding")]
    out: dict[str, set[tuple[str, str, str]]] = {}
    for binding in (o for o in objects if o["kind"] == "ClusterRoleBinding"):
        subjects = {(s["kind"], s.get("namespace"), s["name"]) for s in binding["subjects"]}
        assert subjects == {("ServiceAccount", *SERVICE_ACCOUNT)}
        role = roles[binding["roleRef"]["name"]]
        triples = out.setdefault(role["metadata"]["name"], set())
        for rule in role["rules"]:
            assert set(rule) <= {"apiGroups", "resources", "verbs"}, rule  # no resourceNames
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        triples.add((group, resource, verb))
    return out


def required(*, cluster_wide: bool | None = None) -> set[tuple[str, str, str]]:
    return {
        (p.group, p.resource, verb)
        for p in REQUIRED_PERMISSIONS
        if cluster_wide is None or p.cluster_wide == cluster_wide
        for verb in p.verbs
    }


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_the_rbac_grants_exactly_what_the_apps_kubernetes_module_calls(overlay: str) -> None:
    by_role = granted(render(overlay))
    assert set().union(*by_role.values()) == required()
    # What must hold across the cluster is in the role that is only about that.
    assert by_role["kaitoweb-cluster"] == required(cluster_wide=True)
    assert by_role["kaitoweb-workloads"] == required(cluster_wide=False)


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_no_rule_uses_a_wildcard_or_a_dangerous_verb(overlay: str) -> None:
    for role in (o for o in render(overlay) if o["kind"] in ("ClusterRole", "Role")):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (role["metadata"]["name"], rule)
            assert not {"escalate", "bind", "impersonate", "watch", "deletecollection"} & set(
                rule["verbs"]
            )


def test_the_required_permissions_cover_every_kind_kaitoweb_applies() -> None:
    """Each kind `Kube.object_*` can apply is created, read and deleted under the list."""
    from apps.clusters.kube import KIND_PATHS

    needed = required()
    for kind, (prefix, plural, _namespaced) in KIND_PATHS.items():
        group = prefix.split("/")[2] if prefix.startswith("/apis/") else ""
        assert (group, plural, "create") in needed, kind
        assert (group, plural, "get") in needed, kind


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_the_web_pods_probes_are_healthz_and_readyz(overlay: str) -> None:
    web = one(render(overlay), "Deployment", "kaitoweb-web")["spec"]["template"]["spec"]
    container = next(c for c in web["containers"] if c["name"] == "web")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000}
    assert "--bind=0.0.0.0:8000" in container["command"]
    assert container["command"][0] == "gunicorn"
    assert "--config=python:kaitoweb.observability.gunicorn" in container["command"]
    probes = {
        kind: container[kind]["httpGet"]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["startupProbe"]["path"] == "/healthz"
    for probe in probes.values():
        assert probe["port"] == "http"
        # The probe's Host must be one ALLOWED_HOSTS names, or Django answers 400.
        assert probe["httpHeaders"] == [{"name": "Host", "value": "localhost"}]
    env = {e["name"]: e for e in container["env"]}
    hosts = env["ALLOWED_HOSTS"]["value"].split(",")
    assert "localhost" in hosts and "$(POD_IP)" in hosts
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    # The probe answers well inside its timeout: the readiness checks give up after 2 s.
    from kaitoweb.observability.probes import TIMEOUT

    assert container["readinessProbe"]["timeoutSeconds"] > TIMEOUT


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_every_container_runs_locked_down_with_resources(overlay: str) -> None:
    for where, spec in pod_specs(render(overlay)).items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for container in containers(spec):
            name = f"{where}/{container['name']}"
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            resources = container["resources"]
            assert resources["requests"]["cpu"] and resources["requests"]["memory"], name
            assert resources["limits"]["memory"], name
        # A read-only root needs somewhere to write temporary files (kubeconfig CA files,
        # gunicorn's heartbeat): every mounted path is an emptyDir or a claimed volume.
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        for container in containers(spec):
            for mount in container.get("volumeMounts") or []:
                volume = volumes.get(mount["name"])
                assert volume is None or "emptyDir" in volume, (where, mount)


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_the_app_containers_share_one_pinned_image_and_one_configuration(overlay: str) -> None:
    objects = render(overlay)
    config_maps = [o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"]
    assert len(config_maps) == 1 and config_maps[0].startswith("kaitoweb-config-")  # hashed
    app = app_containers(objects)
    assert len(app) == 6  # web, worker, beat, migrate, and the two wait-for-migrations
    for container in app:
        assert container["image"] == APP_IMAGE, container["name"]
        sources = container["envFrom"]
        assert {"configMapRef": {"name": config_maps[0]}} in sources
        assert {"secretRef": {"name": "kaitoweb-secrets"}} in sources
    for spec in pod_specs(objects).values():
        for container in containers(spec):
            image = container["image"]
            assert ":" in image and not image.endswith(":latest"), image
            assert re.search(r":\d+\.\d+", image), f"{image}: pin a minor version at least"


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_no_secret_is_in_the_manifests(overlay: str) -> None:
    objects = render(overlay)
    assert not [o for o in objects if o["kind"] == "Secret"]  # the user creates it
    config = next(o for o in objects if o["kind"] == "ConfigMap")
    for key in config["data"]:
        assert not re.search(r"SECRET|KEY|TOKEN|PASSWORD", key), key
    for spec in pod_specs(objects).values():
        for container in containers(spec):
            for entry in container.get("env") or []:
                assert not re.search(r"SECRET|KEY|TOKEN|PASSWORD", entry["name"]) or (
                    "valueFrom" in entry and "secretKeyRef" in entry["valueFrom"]
                ), entry


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_only_the_processes_that_talk_to_clusters_get_a_kubernetes_token(overlay: str) -> None:
    objects = render(overlay)
    specs = pod_specs(objects)
    for name in ("Deployment/kaitoweb-web", "Deployment/kaitoweb-worker"):
        assert specs[name]["serviceAccountName"] == "kaitoweb"
        assert specs[name].get("automountServiceAccountToken", True) is True
    for name in ("Deployment/kaitoweb-beat", "Job/kaitoweb-migrate"):
        assert specs[name]["automountServiceAccountToken"] is False
    for name, spec in specs.items():
        if "postgres" in name or "redis" in name:
            assert spec["automountServiceAccountToken"] is False


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_metrics_are_kept_per_pod_and_the_worker_serves_its_own(overlay: str) -> None:
    specs = pod_specs(render(overlay))
    for name, container_name in (
        ("Deployment/kaitoweb-web", "web"),
        ("Deployment/kaitoweb-worker", "worker"),
    ):
        spec = specs[name]
        container = next(c for c in spec["containers"] if c["name"] == container_name)
        env = {e["name"]: e.get("value") for e in container["env"]}
        directory = env["PROMETHEUS_MULTIPROC_DIR"]
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == directory)
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        assert volume["emptyDir"]["medium"] == "Memory"  # empty at each pod start
    worker = next(c for c in specs["Deployment/kaitoweb-worker"]["containers"])
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert {"name": "metrics", "containerPort": int(env["CELERY_METRICS_PORT"])} in worker["ports"]
    assert worker["command"][:4] == ["celery", "--app=kaitoweb", "worker", "--loglevel=INFO"]


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_there_is_only_ever_one_beat(overlay: str) -> None:
    beat = one(render(overlay), "Deployment", "kaitoweb-beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    command = beat["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["celery", "--app=kaitoweb", "beat"]


def test_the_migrate_job_migrates_and_loads_the_catalog_before_the_app_starts() -> None:
    objects = render("external-services")
    job = one(objects, "Job", "kaitoweb-migrate")["spec"]["template"]["spec"]
    script = job["containers"][0]["command"][-1]
    assert "manage.py migrate --no-input" in script and "manage.py load_catalog" in script
    for name in ("kaitoweb-web", "kaitoweb-worker"):
        init = one(objects, "Deployment", name)["spec"]["template"]["spec"]["initContainers"]
        assert "manage.py migrate --check" in init[0]["command"][-1]


def test_the_bundled_datastores_are_wired_to_the_app_and_fenced_off() -> None:
    objects = render("bundled")
    config = next(o for o in objects if o["kind"] == "ConfigMap")
    redis_service = one(objects, "Service", "kaitoweb-redis")
    port = redis_service["spec"]["ports"][0]["port"]
    assert config["data"]["REDIS_URL"] == f"redis://kaitoweb-redis:{port}/0"
    postgres = one(objects, "StatefulSet", "kaitoweb-postgres")["spec"]
    env = {e["name"]: e for e in postgres["template"]["spec"]["containers"][0]["env"]}
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "kaitoweb-secrets",
        "key": "POSTGRES_PASSWORD",
    }
    assert postgres["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    # The overlay's instructions build DATABASE_URL for the Service that exists.
    instructions = (OVERLAYS / "bundled" / "kustomization.yaml").read_text()
    service = one(objects, "Service", "kaitoweb-postgres")
    assert f"@kaitoweb-postgres:{service['spec']['ports'][0]['port']}/kaitoweb" in instructions
    policy = one(objects, "NetworkPolicy", "kaitoweb-datastores")["spec"]
    allowed = policy["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][0]["values"]
    assert set(allowed) == {"web", "worker", "beat", "migrate"}
