"""The simulated cluster through the real ``kubectl`` binary."""

# The kubernetes client types every field Optional and returns plain objects for custom
# resources; these tests assert on those values, so mypy's None/object checks are relaxed.
# mypy: disable-error-code="union-attr,index,arg-type,operator,return-value,type-var"
# mypy: disable-error-code="misc,attr-defined"

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kubernetes import client

from tests.kaitosim.conftest import (
    KUBECTL,
    create_workspace,
    wait_for,
    wait_for_condition,
    workspace_manifest,
)

EXAMPLES = sorted(
    (Path(__file__).resolve().parents[2] / "reference" / "kaito" / "examples").glob("*.yaml")
)
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def workspaces_in(kubectl: Kubectl, namespace: str) -> dict[str, dict[str, object]]:
    listed = json.loads(kubectl("get", "workspaces", "-n", namespace, "-o", "json").stdout)
    return {item["metadata"]["name"]: item for item in listed["items"]}


def succeeded(workspace: dict[str, object]) -> bool:
    conditions = (workspace.get("status") or {}).get("conditions") or []
    return any(c["type"] == "WorkspaceSucceeded" and c["status"] == "True" for c in conditions)


def test_it_applies_every_reference_example_to_workspace_succeeded(
    kubectl: Kubectl, namespace: str
) -> None:
    assert len(EXAMPLES) >= 6
    kubectl(
        "create",
        "secret",
        "generic",
        "hf-token",
        "--from-literal=HF_TOKEN=hf_simulated",
        "-n",
        namespace,
    )
    for example in EXAMPLES:
        applied = kubectl("apply", "-n", namespace, "-f", str(example))
        assert "created" in applied.stdout, applied.stdout
    names = set(workspaces_in(kubectl, namespace))
    assert len(names) == len(EXAMPLES)
    wait_for(
        lambda: all(succeeded(w) for w in workspaces_in(kubectl, namespace).values()),
        timeout=30,
        interval=0.2,
        message="every example to reach WorkspaceSucceeded",
    )
    again = kubectl("apply", "-n", namespace, "-f", str(EXAMPLES[0]))
    assert "unchanged" in again.stdout


def test_it_prints_the_crd_columns_for_kubectl_get_workspaces(
    kubectl: Kubectl, custom: client.CustomObjectsApi, namespace: str
) -> None:
    create_workspace(custom, namespace, workspace_manifest("columns"))
    wait_for_condition(custom, namespace, "columns", "WorkspaceSucceeded")
    output = kubectl("get", "workspaces", "-n", namespace).stdout.splitlines()
    assert output[0].split() == [
        "NAME",
        "INSTANCE",
        "RESOURCEREADY",
        "INFERENCEREADY",
        "JOBSTARTED",
        "WORKSPACESUCCEEDED",
        "TARGETNODECOUNT",
        "STATE",
        "AGE",
    ]
    row = output[1].split()
    assert row[:5] == ["columns", "Standard_NC24ads_A100_v4", "True", "True", "True"]
    assert row[5:7] == ["1", "Ready"]
    short = kubectl("get", "wk", "columns", "-n", namespace).stdout
    assert "columns" in short
    nodeclaims = kubectl(
        "get", "nodeclaims", "-l", f"kaito.sh/workspacenamespace={namespace}"
    ).stdout.splitlines()
    assert nodeclaims[0].split() == ["NAME", "TYPE", "CAPACITY", "ZONE", "NODE", "READY", "AGE"]
    assert "Standard_NC24ads_A100_v4" in nodeclaims[1]
    pods = kubectl("get", "pods", "-n", namespace).stdout.splitlines()
    assert pods[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert pods[1].split()[:3] == ["columns-0", "1/1", "Running"]


def test_it_watches_workspace_changes_with_kubectl_get_w(
    kaitosim_server: object, kubectl: Kubectl, custom: client.CustomObjectsApi, namespace: str
) -> None:
    command = [
        KUBECTL,
        "--kubeconfig",
        str(kaitosim_server.kubeconfig_path),
        "get",
        "workspaces",
        "-n",
        namespace,
        "-w",
        "--request-timeout=0",
    ]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            time.sleep(0.5)
            create_workspace(custom, namespace, workspace_manifest("watched"))
            wait_for_condition(custom, namespace, "watched", "WorkspaceSucceeded")
            time.sleep(0.3)
        finally:
            process.terminate()
        output, _ = process.communicate(timeout=10)
    lines = [line for line in output.splitlines() if line.startswith("watched")]
    assert len(lines) >= 3, output
    assert any("Pending" in line for line in lines)
    assert lines[-1].split()[1:8] == [
        "Standard_NC24ads_A100_v4",
        "True",
        "True",
        "True",
        "1",
        "Ready",
    ][:7] or ("Ready" in lines[-1])


def test_it_deletes_with_kubectl_and_waits_for_the_finalizer(
    kubectl: Kubectl, custom: client.CustomObjectsApi, namespace: str
) -> None:
    create_workspace(custom, namespace, workspace_manifest("deleted"))
    wait_for_condition(custom, namespace, "deleted", "WorkspaceSucceeded")
    result = kubectl("delete", "workspace", "deleted", "-n", namespace, "--timeout=20s")
    assert 'workspace.kaito.sh "deleted" deleted' in result.stdout
    missing = kubectl("get", "workspace", "deleted", "-n", namespace, check=False)
    assert missing.returncode != 0
    assert 'workspaces.kaito.sh "deleted" not found' in missing.stderr


def test_it_serves_pod_logs_and_the_service_proxy_to_kubectl(
    kubectl: Kubectl, custom: client.CustomObjectsApi, namespace: str
) -> None:
    create_workspace(custom, namespace, workspace_manifest("served"))
    wait_for_condition(custom, namespace, "served", "WorkspaceSucceeded")
    logs = kubectl("logs", "served-0", "-n", namespace).stdout
    assert "Application startup complete." in logs
    assert "KAITO_BENCHMARK_RESULT" in logs
    tail = kubectl("logs", "served-0", "-n", namespace, "--tail=2").stdout.splitlines()
    assert len(tail) == 2
    models = json.loads(
        kubectl(
            "get", "--raw", f"/api/v1/namespaces/{namespace}/services/served:80/proxy/v1/models"
        ).stdout
    )
    assert models["data"][0]["id"] == "phi-4-mini-instruct"


def test_it_supports_server_side_apply_and_describe(
    kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    manifest = tmp_path / "ws.json"
    manifest.write_text(json.dumps(workspace_manifest("ssa")))
    applied = kubectl("apply", "--server-side", "-n", namespace, "-f", str(manifest))
    assert "serverside-applied" in applied.stdout
    described = kubectl("describe", "workspace", "ssa", "-n", namespace).stdout
    assert "Standard_NC24ads_A100_v4" in described


def test_it_answers_kubectl_auth_can_i(kaitosim_server: object, kubectl: Kubectl) -> None:
    assert kubectl("auth", "can-i", "create", "workspaces.kaito.sh").stdout.strip() == "yes"
    viewer = kubectl(
        "--context",
        "kaitosim-viewer",
        "auth",
        "can-i",
        "create",
        "workspaces.kaito.sh",
        check=False,
    )
    assert viewer.stdout.strip() == "no"


def test_it_reports_admission_errors_to_kubectl(
    kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    manifest = tmp_path / "bad.json"
    manifest.write_text(json.dumps(workspace_manifest("bad", preset="my-org/my-private-model")))
    result = kubectl("apply", "-n", namespace, "-f", str(manifest), check=False)
    assert result.returncode != 0
    assert 'admission webhook "validation.workspace.kaito.sh" denied the request' in result.stderr
    assert "Unsupported inference preset name my-org/my-private-model" in result.stderr


@pytest.mark.parametrize(
    "resource", ["nodes", "namespaces", "services", "events", "nodeclaims", "configmaps"]
)
def test_it_lists_builtin_resources_with_kubectl(kubectl: Kubectl, resource: str) -> None:
    output = kubectl(
        "get",
        resource,
        "-A" if resource in ("services", "events", "configmaps") else "--ignore-not-found",
    )
    assert output.returncode == 0
