"""KAITO's admission webhook and workspace controller as the simulator runs them."""

# The kubernetes client types every field Optional and returns plain objects for custom
# resources; these tests assert on those values, so mypy's None/object checks are relaxed.
# mypy: disable-error-code="union-attr,index,arg-type,operator,return-value,type-var,misc"

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tests.kaitosim.conftest import (
    api_error_body,
    condition,
    create_workspace,
    get_workspace,
    raw_request,
    wait_for,
    wait_for_condition,
    workspace_manifest,
)


def rejected(
    custom: client.CustomObjectsApi, namespace: str, manifest: dict[str, Any]
) -> tuple[int, str]:
    with pytest.raises(client.ApiException) as error:
        create_workspace(custom, namespace, manifest)
    return error.value.status, api_error_body(error.value)["message"]


def secret(name: str = "hf-token") -> client.V1Secret:
    return client.V1Secret(
        metadata=client.V1ObjectMeta(name=name), string_data={"HF_TOKEN": "hf_simulated"}
    )


def test_it_walks_a_workspace_through_kaitos_conditions(
    custom: client.CustomObjectsApi, core: client.CoreV1Api, namespace: str
) -> None:
    create_workspace(custom, namespace, workspace_manifest("phi"))
    workspace = wait_for_condition(custom, namespace, "phi", "WorkspaceSucceeded")
    status = workspace["status"]
    assert [c["type"] for c in status["conditions"]] == [
        "NodeClaimReady",
        "NodesReady",
        "ResourceReady",
        "InferenceReady",
        "BenchmarkCompleted",
        "WorkspaceSucceeded",
    ]
    assert all(c["status"] == "True" and c["observedGeneration"] == 1 for c in status["conditions"])
    assert condition(workspace, "ResourceReady")["reason"] == "workspaceResourceStatusSuccess"
    assert condition(workspace, "InferenceReady")["reason"] == "WorkspaceInferenceStatusSuccess"
    assert condition(workspace, "WorkspaceSucceeded")["reason"] == "workspaceSucceeded"
    assert status["state"] == "Ready"
    assert status["targetNodeCount"] == 1
    assert len(status["workerNodes"]) == 1
    metric = status["performance"]["metrics"]["peakTokensPerMinute"]
    assert metric["unit"] == "tokens/min"
    assert metric["description"] == "stress/high-concurrency"
    assert int(metric["value"]) > 0
    assert "workspace.finalizer.kaito.sh" in workspace["metadata"]["finalizers"]
    reasons = [
        e.reason
        for e in sorted(
            core.list_namespaced_event(namespace, field_selector="involvedObject.name=phi").items,
            key=lambda e: e.metadata.name,
        )
    ]
    assert (
        reasons.index("NodeClaimCreated")
        < reasons.index("ResourceReady")
        < reasons.index("InferenceReady")
    )
    assert (
        reasons.index("InferenceReady")
        < reasons.index("BenchmarkCompleted")
        < reasons.index("WorkspaceSucceeded")
    )


def test_it_provisions_gpu_nodes_services_and_an_inference_config(
    custom: client.CustomObjectsApi, core: client.CoreV1Api, namespace: str
) -> None:
    create_workspace(
        custom, namespace, workspace_manifest("infra", instance_type="Standard_NC48ads_A100_v4")
    )
    workspace = wait_for_condition(custom, namespace, "infra", "WorkspaceSucceeded")
    claims = custom.list_cluster_custom_object(
        "karpenter.sh",
        "v1",
        "nodeclaims",
        label_selector=f"kaito.sh/workspace=infra,kaito.sh/workspacenamespace={namespace}",
    )["items"]
    assert len(claims) == 1
    claim = claims[0]
    assert claim["metadata"]["labels"]["apps"] == "infra"
    assert {
        "key": "node.kubernetes.io/instance-type",
        "operator": "In",
        "values": ["Standard_NC48ads_A100_v4"],
    } in claim["spec"]["requirements"]
    node = core.read_node(claim["status"]["nodeName"])
    labels = node.metadata.labels
    assert labels["node.kubernetes.io/instance-type"] == "Standard_NC48ads_A100_v4"
    assert labels["kubernetes.azure.com/accelerator"] == "nvidia"
    assert labels["nvidia.com/gpu.count"] == "2"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-80GB-PCIe"
    assert node.status.allocatable["nvidia.com/gpu"] == "2"
    assert workspace["status"]["workerNodes"] == [node.metadata.name]
    service = core.read_namespaced_service("infra", namespace)
    assert (service.spec.ports[0].port, service.spec.ports[0].target_port) == (80, 5000)
    assert core.read_namespaced_config_map("inference-params-template", namespace).data[
        "inference_config.yaml"
    ]
    pod = core.read_namespaced_pod("infra-0", namespace)
    assert pod.spec.node_name == node.metadata.name
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "2"


def test_it_spreads_a_model_that_needs_more_gpus_over_several_nodes(
    custom: client.CustomObjectsApi, core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_secret(namespace, secret())
    manifest = workspace_manifest("big", preset="llama-3.3-70b-instruct", presetOptions=None)
    manifest["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf-token"}
    manifest["inference"].pop("presetOptions", None)
    create_workspace(custom, namespace, manifest)
    workspace = wait_for_condition(custom, namespace, "big", "WorkspaceSucceeded")
    assert workspace["status"]["targetNodeCount"] == 2
    assert len(workspace["status"]["workerNodes"]) == 2
    pods = sorted(
        p.metadata.name
        for p in core.list_namespaced_pod(namespace, label_selector="kaito.sh/workspace=big").items
    )
    assert pods == ["big-0", "big-1"]


def test_it_rejects_unsupported_presets_like_kaitos_webhook(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    status, message = rejected(
        custom, namespace, workspace_manifest("hub", preset="someone/some-model-7b")
    )
    assert status == 400
    assert message.startswith(
        'admission webhook "validation.workspace.kaito.sh" denied the request: validation failed:'
    )
    assert "Unsupported inference preset name someone/some-model-7b" in message
    assert "cannot look up an arbitrary Hugging Face model id" in message


def test_it_accepts_catalog_model_ids_case_insensitively(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    created = create_workspace(
        custom, namespace, workspace_manifest("byid", preset="MICROSOFT/phi-4-mini-instruct")
    )
    assert created["inference"]["preset"]["name"] == "MICROSOFT/phi-4-mini-instruct"


def test_it_requires_a_model_access_secret_for_gated_models(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    status, message = rejected(
        custom, namespace, workspace_manifest("gated", preset="llama-3.1-8b-instruct")
    )
    assert status == 400
    assert (
        "This preset requires authentication and needs a modelAccessSecret with HF_TOKEN key "
        "under presetOptions" in message
    )


def test_it_rejects_a_secret_for_a_preset_baked_into_its_image(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    manifest = workspace_manifest("baked")
    manifest["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf-token"}
    status, message = rejected(custom, namespace, manifest)
    assert status == 400
    assert (
        "This preset does not require a modelAccessSecret with HF_TOKEN key under presetOptions"
        in message
    )


@pytest.mark.parametrize("instance_type", ["Standard_NC6s_v3", "Standard_D16s_v5"])
def test_it_rejects_unsupported_instance_types_for_presets(
    custom: client.CustomObjectsApi, namespace: str, instance_type: str
) -> None:
    status, message = rejected(
        custom, namespace, workspace_manifest("sku", instance_type=instance_type)
    )
    assert status == 400
    assert f"Unsupported instance type {instance_type}. Supported SKUs:" in message


def test_it_rejects_inference_and_tuning_together(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    manifest = workspace_manifest("both")
    manifest["tuning"] = {
        "preset": {"name": "phi-4-mini-instruct"},
        "method": "lora",
        "input": {"urls": ["https://example.com/data.parquet"]},
        "output": {"image": "myregistry.azurecr.io/out:1", "imagePushSecret": "push"},
    }
    status, message = rejected(custom, namespace, manifest)
    assert status == 400
    assert "Either Inference or Tuning must be specified, but not both" in message


def test_it_rejects_a_missing_inference_configmap_at_admission(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    status, message = rejected(
        custom, namespace, workspace_manifest("nocm", config="missing-params")
    )
    assert status == 400
    assert (
        f"ConfigMap 'missing-params' specified in 'config' not found in namespace '{namespace}'"
        in message
    )


def test_it_rejects_deprecated_presets(custom: client.CustomObjectsApi, namespace: str) -> None:
    status, message = rejected(custom, namespace, workspace_manifest("old", preset="phi-2"))
    assert status == 400
    assert "Model phi-2 is deprecated and no longer supported" in message


def test_it_stays_not_ready_until_the_named_secret_exists(
    custom: client.CustomObjectsApi, core: client.CoreV1Api, namespace: str
) -> None:
    manifest = workspace_manifest("waiting", preset="llama-3.1-8b-instruct")
    manifest["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf-token"}
    create_workspace(custom, namespace, manifest)

    def blocked() -> dict[str, Any] | None:
        found = condition(get_workspace(custom, namespace, "waiting"), "InferenceReady")
        return found if found and 'secret "hf-token" not found' in found["message"] else None

    inference = wait_for(blocked, message="InferenceReady to name the missing secret")
    assert inference["status"] == "False"
    pod = core.read_namespaced_pod("waiting-0", namespace)
    assert pod.status.container_statuses[0].state.waiting.reason == "CreateContainerConfigError"
    core.create_namespaced_secret(namespace, secret())
    wait_for_condition(custom, namespace, "waiting", "WorkspaceSucceeded")


def test_it_runs_out_of_memory_when_the_model_does_not_fit(
    custom: client.CustomObjectsApi, core: client.CoreV1Api, namespace: str
) -> None:
    create_workspace(custom, namespace, workspace_manifest("oom", preset="falcon-40b-instruct"))

    def out_of_memory() -> dict[str, Any] | None:
        found = condition(get_workspace(custom, namespace, "oom"), "InferenceReady")
        return found if found and "CUDA out of memory" in found["message"] else None

    inference = wait_for(out_of_memory, message="InferenceReady to report CUDA OOM")
    assert inference["status"] == "False"

    def backing_off() -> Any:
        status = core.read_namespaced_pod("oom-0", namespace).status.container_statuses[0]
        waiting = status.state.waiting
        return status if waiting is not None and waiting.reason == "CrashLoopBackOff" else None

    status = wait_for(backing_off, interval=0.005, message="CrashLoopBackOff")
    assert status.restart_count >= 1
    assert status.last_state.terminated.exit_code == 1
    log = core.read_namespaced_pod_log("oom-0", namespace, previous=True)
    assert "torch.OutOfMemoryError: CUDA out of memory" in log
    assert get_workspace(custom, namespace, "oom")["status"]["state"] == "Pending"


def test_it_deploys_a_custom_template_as_a_deployment_on_cpu(
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    api_client: client.ApiClient,
    namespace: str,
) -> None:
    manifest = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "bloom"},
        "resource": {
            "instanceType": "Standard_D16s_v5",
            "labelSelector": {"matchLabels": {"apps": "bloom"}},
        },
        "inference": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "custom-llm",
                            "image": "mcr.microsoft.com/aks/kaito/kaito-base:0.5.0",
                            "command": ["accelerate"],
                            "args": [
                                "launch",
                                "inference_api.py",
                                "--pipeline",
                                "text-generation",
                                "--model_id",
                                "bigscience/bloomz-560m",
                            ],
                            "ports": [{"containerPort": 5000}],
                        }
                    ]
                }
            }
        },
    }
    create_workspace(custom, namespace, manifest)
    workspace = wait_for_condition(custom, namespace, "bloom", "WorkspaceSucceeded")
    assert condition(workspace, "BenchmarkCompleted") is None
    deployment = client.AppsV1Api(api_client).read_namespaced_deployment("bloom", namespace)
    assert deployment.status.ready_replicas == 1
    assert core.read_namespaced_service("bloom", namespace).spec.ports[0].target_port == 5000
    status, body = raw_request(
        api_client,
        "POST",
        f"/api/v1/namespaces/{namespace}/services/bloom:80/proxy/chat",
        {"prompt": "Hello", "generate_kwargs": {"max_new_tokens": 8}},
    )
    assert status == 200
    assert "Result" in body


def test_it_deletes_everything_a_workspace_created(
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    api_client: client.ApiClient,
    namespace: str,
) -> None:
    create_workspace(custom, namespace, workspace_manifest("cleanup"))
    workspace = wait_for_condition(custom, namespace, "cleanup", "WorkspaceSucceeded")
    node_name = workspace["status"]["workerNodes"][0]
    custom.delete_namespaced_custom_object(
        "kaito.sh", "v1beta1", namespace, "workspaces", "cleanup"
    )
    deleting = get_workspace(custom, namespace, "cleanup")
    assert deleting["metadata"]["deletionTimestamp"]

    def gone() -> bool:
        try:
            get_workspace(custom, namespace, "cleanup")
        except client.ApiException as error:
            return error.status == 404
        return False

    wait_for(gone, message="the workspace to be finalized")
    selector = "kaito.sh/workspace=cleanup"
    assert core.list_namespaced_pod(namespace, label_selector=selector).items == []
    assert core.list_namespaced_service(namespace, label_selector=selector).items == []
    assert (
        client.AppsV1Api(api_client)
        .list_namespaced_stateful_set(namespace, label_selector=selector)
        .items
        == []
    )
    claims = custom.list_cluster_custom_object(
        "karpenter.sh",
        "v1",
        "nodeclaims",
        label_selector=f"{selector},kaito.sh/workspacenamespace={namespace}",
    )
    assert claims["items"] == []
    assert node_name not in {n.metadata.name for n in core.list_node().items}
    reasons = {
        e.reason
        for e in core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=cleanup"
        ).items
    }
    assert {"WorkspaceDeleting", "NodeClaimDeleted"} <= reasons
