"""A KAITO deployment kaitoweb launched, as a playground target: reached through the API server's
service proxy with its cluster's credentials (resolved at request time), priced from its VM size
and nodes, and its benchmark's peakTokensPerMinute used by the experiments' break-even."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from django.test import Client

from apps.accounts.roles import Role
from apps.catalog.services import LoadReport
from apps.clusters import kube
from apps.clusters.models import Cluster
from apps.deployments.models import Deployment
from apps.playground import clients
from apps.playground.experiment_stats import experiment_break_evens, experiment_summary
from apps.playground.experiments import experiment_create, experiment_run_sync
from apps.playground.models import Experiment, Sample, Target
from apps.playground.prompts import Prompt, PromptSet
from apps.playground.services import abrun_execute, target_save
from kaitosim.foundry import FoundryServer
from tests.deployments.conftest import A100, launch_and_follow
from tests.playground.conftest import FOUNDRY_KEY
from tests.playground.factories import foundry_target, queued_run

pytestmark = pytest.mark.django_db(transaction=True)

PROMPTS = PromptSet(name="tiny", prompts=(Prompt("What is KAITO?", "Be brief."),))


def ready(d: Deployment) -> bool:
    return d.status == Deployment.Status.READY and bool(d.endpoint_service)


@pytest.fixture
def phi(cluster: Cluster, catalog: LoadReport) -> Deployment:
    """phi-4-mini on kaitosim, launched through the deployments services, ready."""
    return launch_and_follow(cluster, ready)


@pytest.fixture
def kaito(phi: Deployment) -> Target:
    return target_save(target=Target(name="kaito-phi", kind=Target.Kind.KAITO_VLLM, deployment=phi))


def test_a_deployment_target_takes_its_kind_model_cost_and_compliance_from_the_deployment(
    kaito: Target, phi: Deployment
) -> None:
    assert kaito.kind == Target.Kind.KAITO_VLLM and kaito.endpoint_url == ""
    assert kaito.model_name == "phi-4-mini-instruct"
    assert kaito.vm_size is not None and kaito.vm_size.sku == A100 and kaito.node_count == 1
    assert kaito.cost_basis == Target.CostBasisKind.PER_HOUR
    assert kaito.price_per_hour == kaito.vm_size.price_per_hour is not None
    assert kaito.region == phi.cluster.region == "eastus"
    assert kaito.processing_scope == "in_cluster" and not kaito.data_leaves_network
    assert kaito.endpoint_url_resolved.endswith(
        f"/api/v1/namespaces/{phi.namespace}/services/{phi.endpoint_service}:80/proxy"
    )


def test_the_endpoint_is_resolved_from_the_clusters_credentials_at_request_time(
    kaito: Target, phi: Deployment
) -> None:
    endpoint = kaito.endpoint()
    assert endpoint.url == f"{phi.cluster.api_server.rstrip('/')}/api/v1/namespaces/" + (
        f"{phi.namespace}/services/{phi.endpoint_service}:80/proxy"
    )
    assert endpoint.extra_headers["Authorization"].startswith("Bearer ")
    assert endpoint.tls is not None and endpoint.tls is not True  # the cluster's CA
    m = clients.measure_sync(endpoint, clients.ChatRequest(prompt="Hello", max_tokens=8))
    assert m.ok, m.error_message
    assert m.chunks > 0 and not m.tokens_estimated


def test_a_deployment_that_is_not_ready_is_a_configuration_error(
    kaito: Target, phi: Deployment
) -> None:
    Deployment.objects.filter(pk=phi.pk).update(status=Deployment.Status.DELETING)
    kaito.refresh_from_db()
    with pytest.raises(clients.ClientConfigError, match="deleting, not ready"):
        kaito.endpoint()


def test_an_ab_run_and_an_experiment_measure_the_deployment_against_foundry(
    kaito: Target, phi: Deployment, foundry: FoundryServer
) -> None:
    other = foundry_target(foundry.url, FOUNDRY_KEY)
    run = abrun_execute(run_id=queued_run([kaito, other]).pk)
    assert run is not None and run.status == run.Status.DONE
    for sample in run.samples.all():
        assert sample.status == Sample.Status.DONE, sample.error_message
        assert sample.ttft_ms is not None and sample.chunks > 0 and not sample.tokens_estimated

    experiment = experiment_create(
        user=None,
        name="deployment",
        targets=[kaito, other],
        prompt_set=PROMPTS,
        repetitions=2,
        concurrency=2,
        max_tokens=16,
        timeout_s=20,
        enqueue=False,
    )
    experiment = experiment_run_sync(experiment=experiment)
    assert experiment.status == Experiment.Status.DONE
    samples = list(experiment.samples.all())
    assert len(samples) == 4
    assert all(s.status == Sample.Status.DONE for s in samples), [s.error_message for s in samples]
    assert all(s.ttft_ms is not None and not s.tokens_estimated for s in samples)

    summaries = {s.name: s for s in experiment_summary(experiment)}
    assert phi.peak_tokens_per_minute
    assert summaries["kaito-phi"].peak_tokens_per_minute == phi.peak_tokens_per_minute
    (even,) = experiment_break_evens(summaries.values())
    assert even.capacity_source == "peakTokensPerMinute"
    assert even.capacity_per_month == pytest.approx(phi.peak_tokens_per_minute * 60 * 730)
    assert even.replica_month_usd == kaito.price_per_hour * 730  # type: ignore[operator]
    assert isinstance(even.price_per_1m, Decimal)


def test_the_target_form_lists_ready_deployments_and_prefills_from_one(
    client_as: Callable[[Role | None], Client], phi: Deployment
) -> None:
    operator = client_as(Role.OPERATOR)
    page = operator.get("/playground/targets/new/")
    assert str(phi) in page.content.decode()
    response = operator.post(
        "/playground/targets/new/",
        {  # what the page sends with its defaults, a deployment picked
            "name": "from-form",
            "kind": Target.Kind.FOUNDRY_OPENAI,
            "deployment": phi.pk,
            "auth": Target.Auth.API_KEY,
            "api_version": clients.INFERENCE_API_VERSION,
            "cost_basis": Target.CostBasisKind.NONE,
            "price_factor": "1",
            "node_count": "1",
        },
    )
    assert response.status_code == 302, response.context["form"].errors
    target = Target.objects.get(name="from-form")
    assert target.deployment == phi and target.kind == Target.Kind.KAITO_VLLM
    assert target.model_name == phi.model_name and target.price_per_hour is not None


def test_picking_a_deployment_is_enough_and_neither_kind_nor_deployment_is_an_error(
    client_as: Callable[[Role | None], Client], phi: Deployment
) -> None:
    operator = client_as(Role.OPERATOR)
    page = operator.get("/playground/targets/new/").content.decode()
    start = page.index('<select name="kind"')
    kind_select = page[start : page.index(">", start)]
    assert "required" not in kind_select  # the browser lets a deployment stand for the kind
    base = {
        "auth": Target.Auth.NONE,
        "api_version": clients.INFERENCE_API_VERSION,
        "cost_basis": Target.CostBasisKind.NONE,
        "price_factor": "1",
        "node_count": "1",
    }
    picked = operator.post(
        "/playground/targets/new/", {**base, "name": "only-deployment", "deployment": phi.pk}
    )
    assert picked.status_code == 302, picked.context["form"].errors
    assert Target.objects.get(name="only-deployment").kind == Target.Kind.KAITO_VLLM
    neither = operator.post(
        "/playground/targets/new/",
        {**base, "name": "nothing", "endpoint_url": "http://127.0.0.1:9/v1"},
    )
    assert neither.status_code == 200
    assert neither.context["form"].errors["kind"] == [
        "Pick what the endpoint speaks, or a KAITO deployment."
    ]
    assert not Target.objects.filter(name="nothing").exists()


def test_a_kubeconfig_with_a_client_certificate_is_used_for_tls(
    cluster: Cluster, tmp_path: object
) -> None:
    """AKS non-AAD admin kubeconfigs authenticate with a client certificate, not a token."""
    import base64
    import datetime

    import yaml
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "masterclient")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    document = yaml.safe_load(cluster.kubeconfig)
    client_cert = {
        "client-certificate-data": base64.b64encode(
            cert.public_bytes(serialization.Encoding.PEM)
        ).decode(),
        "client-key-data": base64.b64encode(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        ).decode(),
    }
    for user in document["users"]:  # whichever the context names
        user["user"] = client_cert
    credentials = kube.Credentials(kubeconfig=yaml.safe_dump(document), context=cluster.context)
    proxy = kube.proxy_http_settings(credentials, namespace="default", service="phi")
    assert proxy.headers == {}
    assert not isinstance(proxy.verify, bool)  # the CA and the client certificate
    assert proxy.base_url.endswith("/api/v1/namespaces/default/services/phi:80/proxy")
