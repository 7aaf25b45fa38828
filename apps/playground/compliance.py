"""Compliance profiles, prefilled from the facts that end reference/azure/foundry_models.yaml.

Those facts are YAML comments (prose, not data), so they are restated here as the sentences a
profile starts from; `tests/playground/test_compliance.py` checks that the reference file still
says each of them, so a change there is noticed. Every value stays editable on the target.
"""

from __future__ import annotations

from dataclasses import dataclass

from apps.catalog.models import FoundryModel, KaitoModel
from apps.playground import clients

REFERENCE_FILE = "azure/foundry_models.yaml"

# The phrases of the reference file each default below rests on.
REFERENCE_PHRASES = (
    "Global = any Azure region where the model is deployed",
    "Data Zone = within the US or EU data zone",
    "Standard/Regional = the deployment's region",
    "Data at rest stays in the resource's geography",
    "not used to train models",
    "up to 30 days with possible human review",
    "modified abuse monitoring",
    "Partner models (not sold by Azure) fall under the provider's terms",
    "prompts stay in the cluster's region and network; no provider-side retention",
    "the operator owns logging, retention, encryption, content filtering and the model licence",
)

SCOPE_BY_DEPLOYMENT_TYPE = {
    "global": "foundry_global",
    "data_zone": "foundry_data_zone",
    "regional": "foundry_regional",
}

FOUNDRY_RETENTION = (
    "Prompts and completions are not used to train models and are not shared with other "
    "customers or the model provider. Abuse monitoring may retain them for up to 30 days, with "
    "possible human review, unless the subscription is approved for modified abuse monitoring. "
    "Data at rest stays in the resource's geography."
)
FOUNDRY_RETENTION_EXEMPT = (
    "Prompts and completions are not used to train models and are not shared with other "
    "customers or the model provider. Approved for modified abuse monitoring: not retained for "
    "abuse monitoring. Data at rest stays in the resource's geography."
)
KAITO_RETENTION = (
    "None on a provider's side: prompts stay in the cluster's region and network. Your own "
    "logging and retention apply."
)
EXTERNAL_RETENTION = "The provider's policy: check it."

CERTIFICATIONS_AZURE = (
    "Sold by Azure (or Microsoft's own model): Microsoft's terms and the Foundry resource's "
    "compliance coverage apply."
)
CERTIFICATIONS_PARTNER = (
    "Partner model (not sold by Azure): the provider's terms apply; compliance coverage may differ."
)
CERTIFICATIONS_FOUNDRY_UNKNOWN = (
    "Microsoft's terms for the Foundry resource; for a partner model the provider's terms "
    "apply and coverage may differ."
)
CERTIFICATIONS_KAITO = (
    "Your cluster's and your organisation's: the operator owns logging, retention, encryption, "
    "content filtering and the model licence."
)
CERTIFICATIONS_EXTERNAL = "The provider's terms and certifications: check them."


@dataclass(frozen=True)
class ComplianceProfile:
    processing_scope: str
    data_leaves_network: bool
    provider_retention: str
    certifications: str
    model_license: str


def compliance_defaults(
    *,
    kind: str,
    deployment_type: str = "",
    foundry_model: FoundryModel | None = None,
    kaito_model: KaitoModel | None = None,
    abuse_monitoring_exempt: bool = False,
) -> ComplianceProfile:
    """The profile a target of this kind starts with, from the reference facts."""
    if kind in (clients.FOUNDRY_OPENAI, clients.FOUNDRY_INFERENCE):
        if foundry_model is None:
            certifications = CERTIFICATIONS_FOUNDRY_UNKNOWN
        elif "partner" in foundry_model.provider.lower():
            certifications = CERTIFICATIONS_PARTNER
        else:
            certifications = CERTIFICATIONS_AZURE
        licence_model = kaito_model or (foundry_model.kaito_model if foundry_model else None)
        return ComplianceProfile(
            processing_scope=SCOPE_BY_DEPLOYMENT_TYPE.get(deployment_type, "foundry_global"),
            data_leaves_network=True,
            provider_retention=FOUNDRY_RETENTION_EXEMPT
            if abuse_monitoring_exempt
            else FOUNDRY_RETENTION,
            certifications=certifications,
            model_license=_licence(licence_model, foundry_model),
        )
    if kind in (clients.KAITO_VLLM, clients.KAITO_TRANSFORMERS_CHAT):
        return ComplianceProfile(
            processing_scope="in_cluster",
            data_leaves_network=False,
            provider_retention=KAITO_RETENTION,
            certifications=CERTIFICATIONS_KAITO,
            model_license=_licence(kaito_model, None),
        )
    return ComplianceProfile(
        processing_scope="external",
        data_leaves_network=True,
        provider_retention=EXTERNAL_RETENTION,
        certifications=CERTIFICATIONS_EXTERNAL,
        model_license=_licence(kaito_model, foundry_model),
    )


def _licence(kaito_model: KaitoModel | None, foundry_model: FoundryModel | None) -> str:
    if kaito_model is not None and kaito_model.license:
        gated = " (gated on Hugging Face: accept the licence)" if kaito_model.gated else ""
        return f"{kaito_model.license}{gated}"
    if foundry_model is not None:
        return f"{foundry_model.provider}: the provider's model terms"
    return ""
