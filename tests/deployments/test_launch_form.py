"""The preset launch form: manifests previewed, dry-run on the cluster, then launched as shown."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from kubernetes import client

from apps.accounts.roles import Role
from apps.audit.models import AuditEntry
from apps.clusters.models import Cluster
from apps.deployments.models import Deployment
from tests.deployments.conftest import A100, PHI, workspaces_named

pytestmark = pytest.mark.django_db

URL = "/deployments/new/"


def form_data(cluster: Cluster, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "model": "microsoft/Phi-4-mini-instruct",
        "cluster": cluster.pk,
        "namespace": cluster.default_namespace,
        "name": "phi-4-mini",
        "vm_size": A100,
        "node_count": 1,
        "runtime": "vllm",
        "deployment_uid": str(uuid.uuid4()),
        "action": "preview",
    }
    data.update(overrides)
    return data


@pytest.fixture
def operator(client_as: Callable[[Role | None], Client]) -> Client:
    return client_as(Role.OPERATOR)


def test_the_form_proposes_a_name_and_ranks_vm_sizes_by_kaitos_sizing(
    operator: Client, cluster: Cluster, catalog: object
) -> None:
    page = operator.get(URL, {"model": "microsoft/Phi-4-mini-instruct"}).content.decode()
    assert 'value="phi-4-mini-instruct"' in page  # a DNS-1123 name from the preset
    options = re.findall(r'<option value="(Standard_[^"]+)"[^>]*>([^<]+)</option>', page)
    assert options[0][1].startswith(f"{options[0][0]} · fits · 1 node · $")
    assert any("does not fit" in label for _, label in options) or len(options) > 3


def test_a_preview_shows_the_exact_manifests_and_a_clean_dry_run(
    operator: Client, cluster: Cluster, catalog: object, kube_admin: client.ApiClient
) -> None:
    response = operator.post(
        URL, form_data(cluster, max_model_len=4096, gpu_memory_utilization=0.85)
    )
    page = response.content.decode()
    assert 'id="dry-run-ok"' in page
    assert "kind: Workspace" in page and "kind: ConfigMap" in page
    assert "max-model-len: 4096" in page
    assert 'id="launch-button"' in page
    assert workspaces_named(kube_admin, cluster.default_namespace, "phi-4-mini") == []
    assert not Deployment.objects.exists()


def test_launch_records_a_pending_row_with_the_previewed_manifests_and_audits_it(
    operator: Client, cluster: Cluster, catalog: object
) -> None:
    data = form_data(cluster)
    preview = operator.post(URL, data).content.decode()
    response = operator.post(URL, {**data, "action": "launch"})
    deployment = Deployment.objects.get()
    assert response.status_code == 302 and response["Location"] == deployment.get_absolute_url()
    assert deployment.status == Deployment.Status.PENDING
    assert deployment.model_name == PHI and deployment.kaito_model is not None
    assert deployment.manifests.strip() in preview.replace("&#x27;", "'")
    entry = AuditEntry.objects.get(action="deployment.launch")
    assert entry.actor_name == "operator-user" and entry.outcome == "requested"
    assert entry.cluster_name == cluster.name


def test_a_second_click_on_launch_does_not_make_a_second_deployment(
    operator: Client, cluster: Cluster, catalog: object
) -> None:
    data = {**form_data(cluster), "action": "launch"}
    first = operator.post(URL, data)
    second = operator.post(URL, data)
    assert Deployment.objects.count() == 1
    assert first["Location"] == second["Location"]


def test_a_gated_model_without_a_token_is_a_form_error_on_the_token(
    operator: Client, cluster: Cluster, catalog: object, kube_admin: client.ApiClient
) -> None:
    page = operator.post(
        URL, form_data(cluster, model="meta-llama/Llama-3.1-8B-Instruct", name="llama")
    ).content.decode()
    assert "Hugging Face token:" in page
    assert "KAITO needs a Hugging Face token" in page
    assert 'id="preview"' not in page  # nothing was sent to the cluster
    assert workspaces_named(kube_admin, cluster.default_namespace, "llama") == []


def test_a_gated_model_with_a_token_gets_its_secret_and_launches(
    operator: Client, cluster: Cluster, catalog: object
) -> None:
    data = form_data(
        cluster, model="meta-llama/Llama-3.1-8B-Instruct", name="llama", hf_token="hf_test_token"
    )
    page = operator.post(URL, data).content.decode()
    assert 'id="dry-run-ok"' in page
    assert "modelAccessSecret: llama-hf-token" in page
    assert "hf_test_token" not in page.split('id="preview"')[1]  # masked in the preview
    operator.post(URL, {**data, "action": "launch"})
    deployment = Deployment.objects.get()
    assert deployment.uses_hf_secret
    assert "hf_test_token" not in deployment.manifests
    assert "hf_test_token" in deployment.secret_values  # encrypted at rest until applied


def test_field_errors_name_the_field_and_nothing_reaches_the_cluster(
    operator: Client, cluster: Cluster, catalog: object
) -> None:
    page = operator.post(
        URL, form_data(cluster, name="Not_A_Name", max_model_len=10_000_000)
    ).content.decode()
    assert "<strong>Name:</strong>" in page
    assert "<strong>Max model length:</strong>" in page and "at most 131,072" in page
    assert "Nothing was sent to the cluster" in page


def test_a_refusal_by_kaito_is_shown_with_kaitos_message(
    operator: Client, cluster: Cluster, catalog: object
) -> None:
    # A deprecated preset passes our form only if it is still in the catalog as GA; KAITO's
    # webhook refuses it at the dry run with its own words.
    from apps.catalog.models import KaitoModel

    KaitoModel.objects.filter(preset_name="phi-2").update(lifecycle="ga")
    page = operator.post(
        URL, form_data(cluster, model="microsoft/phi-2", name="phi-2")
    ).content.decode()
    assert 'class="alert alert-error dry-run-problem"' in page
    assert "Model phi-2 is deprecated and no longer supported" in page
    assert 'id="launch-button"' not in page


def test_a_422_from_the_api_server_is_shown_with_its_message(
    operator: Client, cluster: Cluster, catalog: object
) -> None:
    manifest = """\
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: no-selector
resource:
  instanceType: Standard_NC24ads_A100_v4
inference:
  preset:
    name: phi-4-mini-instruct
"""
    page = operator.post(
        "/deployments/new/manifest/",
        {
            "cluster": cluster.pk,
            "namespace": cluster.default_namespace,
            "manifest": manifest,
            "deployment_uid": str(uuid.uuid4()),
            "action": "launch",
        },
    ).content.decode()
    assert "dry-run-problem" in page
    assert "labelSelector" in page and "Required value" in page
    assert not Deployment.objects.exists()


def test_a_non_fitting_vm_size_is_a_warning_before_launch(
    operator: Client, cluster: Cluster, catalog: object
) -> None:
    page = operator.post(
        URL, form_data(cluster, model="tiiuae/falcon-40b-instruct", name="falcon")
    ).content.decode()
    assert "By KAITO&#x27;s sizing this does not fit" in page
    assert "out of GPU memory" in page


def test_the_load_balancer_option_carries_kaitos_testing_only_warning(
    operator: Client, cluster: Cluster, catalog: object
) -> None:
    page = operator.post(URL, form_data(cluster, load_balancer="on")).content.decode()
    assert "kaito.sh/enablelb: &#x27;True&#x27;" in page
    assert "for testing only" in page
