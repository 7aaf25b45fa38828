"""Rendering and parsing the bundle kaitoweb applies (no cluster needed)."""

from __future__ import annotations

import base64

import pytest
import yaml

from apps.deployments import manifests
from apps.deployments.manifests import InferenceSettings, LaunchSpec, ManifestError

UID = "6a1f6c1e-2f0b-4b8e-9d1e-2b6c3f9a0d11"


def spec(**overrides: object) -> LaunchSpec:
    values: dict[str, object] = {
        "name": "phi-4-mini-instruct",
        "namespace": "llm",
        "vm_size": "Standard_NC24ads_A100_v4",
        "node_count": 1,
        "deployment_uid": UID,
        "model_name": "phi-4-mini-instruct",
    }
    values.update(overrides)
    return LaunchSpec(**values)  # type: ignore[arg-type]


def test_a_plain_preset_is_one_workspace_with_our_labels() -> None:
    bundle = manifests.bundle_render(spec())
    assert [o["kind"] for o in bundle.objects] == ["Workspace"]
    workspace = bundle.workspace
    assert workspace["apiVersion"] == "kaito.sh/v1beta1"
    assert workspace["metadata"]["labels"][manifests.DEPLOYMENT_LABEL] == UID
    assert workspace["resource"] == {
        "count": 1,
        "instanceType": "Standard_NC24ads_A100_v4",
        "labelSelector": {"matchLabels": {"apps": "phi-4-mini-instruct"}},
    }
    assert workspace["inference"] == {"preset": {"name": "phi-4-mini-instruct"}}


def test_inference_settings_become_a_configmap_the_workspace_references() -> None:
    bundle = manifests.bundle_render(
        spec(settings=InferenceSettings(max_model_len=8192, gpu_memory_utilization=0.85))
    )
    assert [o["kind"] for o in bundle.objects] == ["ConfigMap", "Workspace"]
    configmap = bundle.of_kind("ConfigMap")[0]
    config = yaml.safe_load(configmap["data"]["inference_config.yaml"])
    assert config["vllm"]["max-model-len"] == 8192
    assert config["vllm"]["gpu-memory-utilization"] == 0.85
    assert bundle.workspace["inference"]["config"] == configmap["metadata"]["name"]


def test_a_hugging_face_token_is_a_secret_shown_masked_and_applied_for_real() -> None:
    bundle = manifests.bundle_render(
        spec(model_name="llama-3.1-8b-instruct", hf_token_secret=True), hf_token="hf_secret"
    )
    assert [o["kind"] for o in bundle.objects] == ["Secret", "Workspace"]
    assert "hf_secret" not in bundle.to_yaml()
    assert manifests.SECRET_MASK in bundle.to_yaml()
    secret = next(o for o in bundle.with_secrets() if o["kind"] == "Secret")
    assert secret["stringData"] == {"HF_TOKEN": "hf_secret"}
    preset = bundle.workspace["inference"]["preset"]
    assert preset["presetOptions"]["modelAccessSecret"] == secret["metadata"]["name"]


def test_transformers_and_the_load_balancer_are_kaito_annotations() -> None:
    bundle = manifests.bundle_render(spec(runtime="transformers", load_balancer=True))
    annotations = bundle.workspace["metadata"]["annotations"]
    assert annotations["kaito.sh/runtime"] == "transformers"
    assert annotations["kaito.sh/enablelb"] == "True"


def test_a_pod_template_replaces_the_preset() -> None:
    template = manifests.template_render(
        name="bloomz",
        image="example/bloomz:1",
        command=["accelerate"],
        args=["launch"],
        port=5000,
        model_id="bigscience/bloomz-560m",
        cpu="4",
    )
    bundle = manifests.bundle_render(
        spec(name="bloomz", vm_size="Standard_D16s_v5", template=template)
    )
    inference = bundle.workspace["inference"]
    assert "preset" not in inference
    container = inference["template"]["spec"]["containers"][0]
    assert container["ports"] == [{"containerPort": 5000}]
    assert manifests.workspace_facts(bundle.workspace)["model_name"] == "bigscience/bloomz-560m"


def test_names_are_made_valid_dns_labels() -> None:
    assert manifests.dns_label("microsoft/Phi-4-mini_instruct") == "phi-4-mini-instruct"
    assert manifests.dns_label("--Qwen2.5--Coder--") == "qwen2-5-coder"
    assert manifests.is_dns_label(manifests.dns_label("x" * 100))


PASTED = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: ds-inference-params
data:
  inference_config.yaml: |
    vllm:
      max-model-len: 4096
---
apiVersion: v1
kind: Secret
metadata:
  name: hf-token
data:
  HF_TOKEN: {token}
---
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: workspace-llama
resource:
  instanceType: Standard_NC24ads_A100_v4
  labelSelector:
    matchLabels:
      apps: llama
inference:
  preset:
    name: llama-3.1-8b-instruct
    presetOptions:
      modelAccessSecret: hf-token
  config: ds-inference-params
"""


def test_a_pasted_bundle_is_ordered_labelled_and_its_secret_kept_apart() -> None:
    token = base64.b64encode(b"hf_pasted").decode()
    bundle = manifests.bundle_parse(PASTED.format(token=token), namespace="llm", deployment_uid=UID)
    assert [o["kind"] for o in bundle.objects] == ["Secret", "ConfigMap", "Workspace"]
    assert all(o["metadata"]["namespace"] == "llm" for o in bundle.objects)
    assert all(o["metadata"]["labels"][manifests.DEPLOYMENT_LABEL] == UID for o in bundle.objects)
    assert bundle.secret_values == {"hf-token": {"HF_TOKEN": "hf_pasted"}}
    assert "hf_pasted" not in bundle.to_yaml() and token not in bundle.to_yaml()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [", "the YAML cannot be read"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "exactly one Workspace"),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
            "document 1 (Deployment x): kaitoweb applies only",
        ),
        (
            "apiVersion: kaito.sh/v1beta1\nkind: Workspace\n"
            "metadata: {name: x, namespace: other}\n",
            "is for namespace other, but the launch is in llm",
        ),
        ("apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata: {name: Bad_Name}\n", "DNS-1123"),
    ],
)
def test_a_bad_pasted_bundle_names_the_document_and_the_problem(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        manifests.bundle_parse(text, namespace="llm", deployment_uid=UID)
