"""CRDs installed in the simulated cluster: KAITO's Workspace and Karpenter's NodeClaim."""

from __future__ import annotations

import copy
from typing import Any

from kaitosim.reference import ReferenceData

# Printer columns of karpenter.sh/v1 NodeClaim (from Karpenter's CRD).
_NODECLAIM_COLUMNS: list[dict[str, Any]] = [
    {
        "jsonPath": ".metadata.labels.node\\.kubernetes\\.io/instance-type",
        "name": "Type",
        "type": "string",
    },
    {
        "jsonPath": ".metadata.labels.karpenter\\.sh/capacity-type",
        "name": "Capacity",
        "type": "string",
    },
    {
        "jsonPath": ".metadata.labels.topology\\.kubernetes\\.io/zone",
        "name": "Zone",
        "type": "string",
    },
    {"jsonPath": ".status.nodeName", "name": "Node", "type": "string"},
    {
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "name": "Ready",
        "type": "string",
    },
    {"jsonPath": ".metadata.creationTimestamp", "name": "Age", "type": "date"},
    {"jsonPath": ".status.providerID", "name": "ID", "priority": 1, "type": "string"},
    {
        "jsonPath": ".metadata.labels.karpenter\\.sh/nodepool",
        "name": "NodePool",
        "priority": 1,
        "type": "string",
    },
    {"jsonPath": ".spec.nodeClassRef.name", "name": "NodeClass", "priority": 1, "type": "string"},
    {
        "jsonPath": '.status.conditions[?(@.type=="Drifted")].status',
        "name": "Drifted",
        "priority": 1,
        "type": "string",
    },
]

_PRESERVE = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def nodeclaim_crd() -> dict[str, Any]:
    """A reduced karpenter.sh NodeClaim CRD (schema kept open; printer columns as Karpenter's)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "nodeclaims.karpenter.sh"},
        "spec": {
            "group": "karpenter.sh",
            "names": {
                "categories": ["karpenter"],
                "kind": "NodeClaim",
                "listKind": "NodeClaimList",
                "plural": "nodeclaims",
                "singular": "nodeclaim",
            },
            "scope": "Cluster",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "additionalPrinterColumns": _NODECLAIM_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "NodeClaim is the Schema for the NodeClaims API",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": _PRESERVE,
                                "status": _PRESERVE,
                            },
                        }
                    },
                    "subresources": {"status": {}},
                }
            ],
        },
    }


def installed_crds(reference: ReferenceData) -> list[dict[str, Any]]:
    return [copy.deepcopy(reference.workspace_crd), nodeclaim_crd()]


def crd_schemas(crds: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """``(group, version, plural) -> openAPIV3Schema`` for every served version."""
    schemas: dict[tuple[str, str, str], dict[str, Any]] = {}
    for crd in crds:
        spec = crd["spec"]
        for version in spec["versions"]:
            schemas[(spec["group"], version["name"], spec["names"]["plural"])] = version["schema"][
                "openAPIV3Schema"
            ]
    return schemas


def printer_columns(crds: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    columns: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for crd in crds:
        spec = crd["spec"]
        for version in spec["versions"]:
            columns[(spec["group"], version["name"], spec["names"]["plural"])] = list(
                version.get("additionalPrinterColumns") or []
            )
    return columns
