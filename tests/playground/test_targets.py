"""Targets: the cost basis and compliance profile they start with, and their key at rest."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection

from apps.catalog.models import FoundryModel, GpuVmSize
from apps.catalog.services import LoadReport
from apps.playground import compliance
from apps.playground.models import Target
from apps.playground.services import target_prefill, target_save
from tests.playground.factories import foundry_target, kaito_target


def test_a_foundry_target_is_priced_from_the_catalog_times_its_deployment_type(
    catalog: LoadReport,
) -> None:
    target = foundry_target("https://res.openai.azure.com", "k")
    assert target.cost_basis == Target.CostBasisKind.PER_TOKEN
    assert (target.input_per_1m, target.output_per_1m) == (Decimal("0.125"), Decimal("0.5"))
    assert target.price_factor == Decimal("1.1")  # Data Zone
    assert target.cost().effective_output_per_1m == Decimal("0.55")


def test_a_foundry_target_gets_the_data_zone_compliance_profile(catalog: LoadReport) -> None:
    target = foundry_target("https://res.openai.azure.com", "k")
    assert target.processing_scope == Target.ProcessingScope.FOUNDRY_DATA_ZONE
    assert target.data_leaves_network is True
    assert "up to 30 days" in target.provider_retention
    assert "not used to train models" in target.provider_retention
    assert target.certifications == compliance.CERTIFICATIONS_AZURE  # Microsoft's own Phi-4
    assert target.model_license == "mit"  # from the KAITO preset of the same model


def test_a_partner_model_says_the_providers_terms_apply(catalog: LoadReport) -> None:
    target = foundry_target(
        "https://res.services.ai.azure.com",
        "k",
        name="llama",
        model_name="Llama-3.3-70B-Instruct",
        foundry_model=None,
        deployment_type=Target.DeploymentType.GLOBAL,
    )
    assert target.foundry_model == FoundryModel.objects.get(name="Llama-3.3-70B-Instruct")
    assert target.processing_scope == Target.ProcessingScope.FOUNDRY_GLOBAL
    assert target.certifications == compliance.CERTIFICATIONS_PARTNER
    assert target.model_license.startswith("llama")
    assert "gated" in target.model_license


def test_an_exemption_from_abuse_monitoring_changes_the_retention(catalog: LoadReport) -> None:
    target = foundry_target("https://res.openai.azure.com", "k", abuse_monitoring_exempt=True)
    assert "not retained for abuse monitoring" in target.provider_retention
    assert "30 days" not in target.provider_retention


def test_a_regional_deployment_of_unknown_factor_says_so(catalog: LoadReport) -> None:
    target = Target(
        name="regional",
        kind=Target.Kind.FOUNDRY_OPENAI,
        endpoint_url="https://res.openai.azure.com",
        model_name="Phi-4",
        deployment_type=Target.DeploymentType.REGIONAL,
    )
    notes = target_prefill(target=target)
    assert target.price_factor == Decimal(1)
    assert notes == [
        "The catalog does not know Phi-4's Regional (Standard) price factor; 1.0 is assumed: "
        "edit it."
    ]
    assert target.processing_scope == Target.ProcessingScope.FOUNDRY_REGIONAL


def test_a_kaito_target_is_priced_per_node_hour_and_stays_in_the_cluster(
    catalog: LoadReport,
) -> None:
    target = kaito_target("http://workspace-phi-4-mini.default.svc", node_count=2)
    vm = GpuVmSize.objects.get(sku="Standard_NC24ads_A100_v4")
    assert target.cost_basis == Target.CostBasisKind.PER_HOUR
    assert target.price_per_hour == vm.price_per_hour
    assert target.cost().cluster_price_per_hour == vm.price_per_hour * 2  # type: ignore[operator]
    assert target.processing_scope == Target.ProcessingScope.IN_CLUSTER
    assert target.data_leaves_network is False
    assert target.provider_retention == compliance.KAITO_RETENTION
    assert target.kaito_model is not None and target.kaito_model.preset_name == (
        "phi-4-mini-instruct"
    )
    assert target.model_license == "mit"


def test_prices_entered_by_hand_are_kept_on_save(catalog: LoadReport) -> None:
    target = foundry_target(
        "https://res.openai.azure.com",
        "k",
        cost_basis=Target.CostBasisKind.PER_TOKEN,
        input_per_1m=Decimal("0.2"),
        output_per_1m=Decimal("0.8"),
        price_factor=Decimal("1.0"),
    )
    target.refresh_from_db()
    assert (target.input_per_1m, target.output_per_1m) == (Decimal("0.2"), Decimal("0.8"))


def test_an_api_key_is_encrypted_at_rest_and_dropped_when_auth_changes(
    catalog: LoadReport,
) -> None:
    target = foundry_target("https://res.openai.azure.com", "sk-very-secret")
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key FROM playground_target WHERE id = %s", [target.pk])
        (raw,) = cursor.fetchone()
    assert raw.startswith("fernet:") and "sk-very-secret" not in raw
    assert Target.objects.get(pk=target.pk).api_key == "sk-very-secret"
    assert "sk-very-secret" not in repr(target.endpoint())
    target.auth = Target.Auth.NONE
    target_save(target=target)
    assert Target.objects.get(pk=target.pk).api_key == ""


@pytest.mark.parametrize("phrase", compliance.REFERENCE_PHRASES)
def test_the_compliance_defaults_rest_on_facts_the_reference_file_still_states(
    phrase: str,
) -> None:
    text = (settings.REFERENCE_DIR / compliance.REFERENCE_FILE).read_text()
    comments = " ".join(
        line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")
    )
    assert phrase in re.sub(r"\s+", " ", comments)


def test_an_in_cluster_service_name_is_a_valid_endpoint_but_ftp_is_not(db: None) -> None:
    from django.core.exceptions import ValidationError

    from apps.playground.models import validate_endpoint_url

    for url in (
        "http://workspace-phi-4",
        "http://phi-4.default.svc:80",
        "https://x.openai.azure.com",
    ):
        validate_endpoint_url(url)
    for url in ("ftp://host", "workspace-phi-4", "http://", "http://169.254.169.254/metadata"):
        with pytest.raises(ValidationError):
            validate_endpoint_url(url)
