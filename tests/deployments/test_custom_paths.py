"""Paste a manifest, or launch a custom model: a pod template on a CPU VM, or a Hugging Face
id."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from apps.accounts.roles import Role
from apps.clusters.models import Cluster
from apps.deployments import services
from apps.deployments.models import Deployment
from tests.deployments.conftest import follow

pytestmark = pytest.mark.django_db
Status = Deployment.Status


@pytest.fixture
def operator(client_as: Callable[[Role | None], Client]) -> Client:
    return client_as(Role.OPERATOR)


def post_twice(operator: Client, url: str, data: dict[str, Any]) -> tuple[str, Any]:
    """Preview, then launch the same form; the preview page and the launch response."""
    data = {**data, "deployment_uid": str(uuid.uuid4())}
    preview = operator.post(url, {**data, "action": "preview"}).content.decode()
    return preview, operator.post(url, {**data, "action": "launch"})


MANIFEST = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: pasted-params
data:
  inference_config.yaml: |
    vllm:
      max-model-len: 4096
      gpu-memory-utilization: 0.9
---
apiVersion: v1
kind: Secret
metadata:
  name: pasted-token
data:
  HF_TOKEN: {token}
---
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: pasted-llama
resource:
  instanceType: Standard_NC24ads_A100_v4
  labelSelector:
    matchLabels:
      apps: pasted-llama
inference:
  preset:
    name: llama-3.1-8b-instruct
    presetOptions:
      modelAccessSecret: pasted-token
  config: pasted-params
"""


def test_a_pasted_bundle_is_dry_run_then_launched_to_ready(
    operator: Client, cluster: Cluster, catalog: object
) -> None:
    token = base64.b64encode(b"hf_pasted").decode()
    preview, response = post_twice(
        operator,
        "/deployments/new/manifest/",
        {
            "cluster": cluster.pk,
            "namespace": cluster.default_namespace,
            "manifest": MANIFEST.format(token=token),
        },
    )
    assert 'id="dry-run-ok"' in preview
    assert "Secret pasted-token, ConfigMap pasted-params, Workspace pasted-llama" in preview
    assert "hf_pasted" not in preview and token not in preview.split('id="preview"')[1]
    d = Deployment.objects.get()
    assert response["Location"] == d.get_absolute_url()
    assert d.source == Deployment.Source.MANIFEST and d.model_name == "llama-3.1-8b-instruct"
    assert d.kaito_model is not None and d.uses_hf_secret
    d = services.deployment_launch(deployment_id=d.pk)
    assert follow(d, lambda d: d.status == Status.READY).peak_tokens_per_minute


def test_a_bad_pasted_bundle_is_an_error_on_the_manifest_field(
    operator: Client, cluster: Cluster
) -> None:
    page = operator.post(
        "/deployments/new/manifest/",
        {
            "cluster": cluster.pk,
            "namespace": cluster.default_namespace,
            "manifest": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
            "deployment_uid": str(uuid.uuid4()),
            "action": "preview",
        },
    ).content.decode()
    assert "<strong>Manifests (YAML):</strong> document 1 (Deployment web)" in page


def test_a_custom_pod_template_runs_bloomz_on_a_cpu_vm_and_answers_a_chat(
    operator: Client, cluster: Cluster, catalog: object
) -> None:
    form = operator.get("/deployments/new/custom/").content.decode()
    assert 'value="Standard_D16s_v5" selected' in form
    preview, _ = post_twice(
        operator,
        "/deployments/new/custom/",
        {
            "kind": "template",
            "cluster": cluster.pk,
            "namespace": cluster.default_namespace,
            "name": "bloomz-560m",
            "vm_size": "Standard_D16s_v5",
            "node_count": 1,
            "image": "mcr.microsoft.com/aks/kaito/kaito-base:0.0.8",
            "command": "accelerate",
            "args": "launch inference_api.py --pipeline text-generation "
            "--model_id bigscience/bloomz-560m",
            "port": 5000,
            "served_model": "bigscience/bloomz-560m",
            "cpu": "4",
            "memory": "8Gi",
        },
    )
    assert 'id="dry-run-ok"' in preview and "template:" in preview
    d = Deployment.objects.get()
    assert d.source == Deployment.Source.TEMPLATE and d.vm_size == "Standard_D16s_v5"
    assert d.model_name == "bigscience/bloomz-560m"
    d = follow(services.deployment_launch(deployment_id=d.pk), lambda d: d.status == Status.READY)
    assert [p["phase"] for p in d.timeline][-1] == "warm-up"  # no benchmark for templates
    reply = operator.post(f"/deployments/{d.pk}/chat/", {"prompt": "Hello"})
    text = b"".join(reply.streaming_content).decode()  # type: ignore[attr-defined]
    assert text.strip() and "did not answer" not in text


def test_a_hugging_face_id_is_sized_from_its_architecture_and_dry_run_on_the_cluster(
    operator: Client, cluster: Cluster, catalog: object
) -> None:
    page = operator.post(
        "/deployments/new/custom/",
        {
            "kind": "hf_model",
            "cluster": cluster.pk,
            "namespace": cluster.default_namespace,
            "name": "smollm",
            "vm_size": "Standard_NC24ads_A100_v4",
            "node_count": 1,
            "model_id": "HuggingFaceTB/SmolLM2-1.7B-Instruct",
            "weights_gib": 3.4,
            "token_limit": 8192,
            "num_hidden_layers": 24,
            "hidden_size": 2048,
            "num_attention_heads": 32,
            "num_kv_heads": 32,
            "deployment_uid": str(uuid.uuid4()),
            "action": "preview",
        },
    ).content.decode()
    assert 'id="custom-sizing"' in page and "· fits · 1 node ·" in page
    assert "name: HuggingFaceTB/SmolLM2-1.7B-Instruct" in page
    assert "best effort" in page
    # kaitosim knows only KAITO's catalog (it cannot look a model up on the hub), so its
    # webhook refuses the id: the refusal is shown with KAITO's own message.
    assert "dry-run-problem" in page
    assert "Unsupported inference preset name HuggingFaceTB/SmolLM2-1.7B-Instruct" in page


def test_a_hugging_face_id_without_its_architecture_names_the_missing_fields(
    operator: Client, cluster: Cluster, catalog: object
) -> None:
    page = operator.post(
        "/deployments/new/custom/",
        {
            "kind": "hf_model",
            "cluster": cluster.pk,
            "namespace": cluster.default_namespace,
            "name": "x",
            "vm_size": "Standard_NC24ads_A100_v4",
            "node_count": 1,
            "model_id": "org/model",
            "deployment_uid": str(uuid.uuid4()),
            "action": "preview",
        },
    ).content.decode()
    for label in ("Weight size (GiB)", "Context length", "Layers", "Hidden size"):
        assert f"<strong>{label}:</strong> Needed to size the model" in page
