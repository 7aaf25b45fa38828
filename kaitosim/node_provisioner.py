"""KAITO's gpu-provisioner / Karpenter on Azure: NodeClaims, their Nodes, Azure's errors."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from kaitosim.reference import GpuSku

SUBSCRIPTION_ID = "00000000-0000-0000-0000-000000000000"
NODE_RESOURCE_GROUP = "mc_kaitosim_kaitosim_eastus"
REGION = "eastus"
KAITO_NODEPOOL = "kaito"
NODECLAIM_FINALIZER = "karpenter.sh/termination"
WORKSPACE_LABEL = "kaito.sh/workspace"
WORKSPACE_NAMESPACE_LABEL = "kaito.sh/workspacenamespace"
KUBELET_VERSION = "v1.32.6"
NODE_IMAGE = "AKSUbuntu-2204gen2containerd-202508.20.1"


@dataclass(frozen=True)
class AzureVmFacts:
    """Public facts of an Azure VM size that gpu_skus.yaml does not carry."""

    memory_gib: int
    quota_family: str
    gpu_product: str


_VM_FACTS: dict[str, AzureVmFacts] = {
    "standard_nv36ads_a10_v5": AzureVmFacts(440, "standardNVADSA10v5Family", "NVIDIA-A10"),
    "standard_nv72ads_a10_v5": AzureVmFacts(880, "standardNVADSA10v5Family", "NVIDIA-A10"),
    "standard_nc24ads_a100_v4": AzureVmFacts(
        220, "standardNCADSA100v4Family", "NVIDIA-A100-80GB-PCIe"
    ),
    "standard_nc48ads_a100_v4": AzureVmFacts(
        440, "standardNCADSA100v4Family", "NVIDIA-A100-80GB-PCIe"
    ),
    "standard_nc96ads_a100_v4": AzureVmFacts(
        880, "standardNCADSA100v4Family", "NVIDIA-A100-80GB-PCIe"
    ),
    "standard_nd96asr_a100_v4": AzureVmFacts(
        900, "standardNDASv4_A100Family", "NVIDIA-A100-SXM4-40GB"
    ),
    "standard_nd96amsr_a100_v4": AzureVmFacts(
        1900, "standardNDAMSv4_A100Family", "NVIDIA-A100-SXM4-80GB"
    ),
    "standard_nc40ads_h100_v5": AzureVmFacts(320, "standardNCadsH100v5Family", "NVIDIA-H100-NVL"),
    "standard_nc80adis_h100_v5": AzureVmFacts(640, "standardNCadsH100v5Family", "NVIDIA-H100-NVL"),
    "standard_nd96isr_h100_v5": AzureVmFacts(
        1900, "standardNDSH100v5Family", "NVIDIA-H100-80GB-HBM3"
    ),
    "standard_ncc40ads_h100_v5": AzureVmFacts(320, "standardNCCadsH100v5Family", "NVIDIA-H100-NVL"),
    "standard_nd96isr_h200_v5": AzureVmFacts(1850, "standardNDSH200v5Family", "NVIDIA-H200"),
    "standard_d16s_v5": AzureVmFacts(64, "standardDSv5Family", ""),
}


def vm_facts(sku: GpuSku) -> AzureVmFacts:
    facts = _VM_FACTS.get(sku.sku.lower())
    if facts is not None:
        return facts
    series = re.sub(r"^Standard_([A-Za-z]+)\d+([a-z]*)_?(.*)$", r"\1\2\3", sku.sku).replace("_", "")
    return AzureVmFacts(
        sku.vcpus * 8, f"standard{series}Family", (sku.gpu_model or "").replace(" ", "-")
    )


def nodeclaim_name(namespace: str, workspace: str, index: int, salt: str) -> str:
    digest = hashlib.sha256(f"{namespace}{workspace}{index}{salt}".encode()).hexdigest()
    return "ws" + digest[:9]


def node_name(claim_name: str) -> str:
    digest = hashlib.sha256(claim_name.encode()).hexdigest()
    return f"aks-{claim_name}-{int(digest[:8], 16) % 90000000 + 10000000}-vmss000000"


def provider_id(node: str) -> str:
    scale_set = node.rsplit("-", 1)[0]
    return (
        f"azure:///subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{NODE_RESOURCE_GROUP}/providers/"
        f"Microsoft.Compute/virtualMachineScaleSets/{scale_set}/virtualMachines/0"
    )


def nodeclaim_manifest(
    name: str, workspace: dict[str, Any], sku: GpuSku, storage: str = "1024Gi"
) -> dict[str, Any]:
    """The NodeClaim KAITO creates for a workspace (``GenerateNodeClaimManifest``)."""
    metadata = workspace["metadata"]
    match_labels = ((workspace.get("resource") or {}).get("labelSelector") or {}).get(
        "matchLabels"
    ) or {}
    labels = {
        "karpenter.sh/nodepool": KAITO_NODEPOOL,
        WORKSPACE_LABEL: metadata["name"],
        WORKSPACE_NAMESPACE_LABEL: metadata["namespace"],
        **{str(k): str(v) for k, v in match_labels.items()},
    }
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodeClaim",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"karpenter.sh/do-not-disrupt": "true"},
            "finalizers": [NODECLAIM_FINALIZER],
        },
        "spec": {
            "nodeClassRef": {
                "group": "karpenter.azure.com",
                "kind": "AKSNodeClass",
                "name": "default",
            },
            "requirements": [
                {"key": "karpenter.sh/nodepool", "operator": "In", "values": [KAITO_NODEPOOL]},
                {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": [sku.sku]},
                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                {"key": "karpenter.azure.com/sku-name", "operator": "In", "values": [sku.sku]},
            ],
            "resources": {"requests": {"ephemeral-storage": storage}},
            "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
            if sku.is_gpu
            else [],
        },
        "status": {},
    }


def node_capacity(sku: GpuSku, gpus_registered: bool) -> dict[str, str]:
    facts = vm_facts(sku)
    capacity = {
        "cpu": str(sku.vcpus),
        "memory": f"{facts.memory_gib * 1024 * 1024}Ki",
        "ephemeral-storage": "1073741824Ki",
        "pods": "110",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
    }
    if sku.is_gpu:
        capacity["nvidia.com/gpu"] = str(sku.gpu_count if gpus_registered else 0)
    return capacity


def node_allocatable(sku: GpuSku, gpus_registered: bool) -> dict[str, str]:
    facts = vm_facts(sku)
    allocatable = node_capacity(sku, gpus_registered)
    allocatable["cpu"] = f"{sku.vcpus * 1000 - 140}m"
    allocatable["memory"] = f"{int(facts.memory_gib * 1024 * 1024 * 0.92)}Ki"
    allocatable["ephemeral-storage"] = "989547486208"
    return allocatable


def node_manifest(name: str, claim: dict[str, Any], sku: GpuSku, index: int) -> dict[str, Any]:
    """A freshly registered node (NotReady until its kubelet and CNI are up)."""
    facts = vm_facts(sku)
    labels = dict(claim["metadata"].get("labels") or {})
    labels.update(
        {
            "agentpool": claim["metadata"]["name"],
            "kubernetes.azure.com/agentpool": claim["metadata"]["name"],
            "kubernetes.azure.com/cluster": NODE_RESOURCE_GROUP,
            "kubernetes.azure.com/mode": "user",
            "kubernetes.azure.com/node-image-version": NODE_IMAGE,
            "kubernetes.azure.com/os-sku": "Ubuntu",
            "kubernetes.azure.com/role": "agent",
            "kubernetes.io/arch": "amd64",
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "node.kubernetes.io/instance-type": sku.sku,
            "beta.kubernetes.io/instance-type": sku.sku,
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": "amd64",
            "karpenter.sh/capacity-type": "on-demand",
            "karpenter.sh/initialized": "false",
            "karpenter.sh/registered": "true",
            "karpenter.azure.com/sku-name": sku.sku,
            "karpenter.azure.com/sku-cpu": str(sku.vcpus),
            "karpenter.azure.com/sku-memory": str(facts.memory_gib * 1024),
            "topology.kubernetes.io/region": REGION,
            "topology.kubernetes.io/zone": "0",
        }
    )
    if sku.is_gpu:
        labels["kubernetes.azure.com/accelerator"] = "nvidia"
        labels["karpenter.azure.com/sku-gpu-count"] = str(sku.gpu_count)
        labels["karpenter.azure.com/sku-gpu-name"] = (sku.gpu_model or "").replace("NVIDIA ", "")
        labels["karpenter.azure.com/sku-gpu-manufacturer"] = "nvidia"
    address = f"10.224.0.{10 + index % 240}"
    return {
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                "karpenter.sh/nodeclaim-min-values-relaxed": "false",
            },
            "finalizers": [NODECLAIM_FINALIZER],
            "ownerReferences": [
                {
                    "apiVersion": "karpenter.sh/v1",
                    "kind": "NodeClaim",
                    "name": claim["metadata"]["name"],
                    "uid": claim["metadata"]["uid"],
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "providerID": provider_id(name),
            "podCIDR": f"10.244.{1 + index % 250}.0/24",
            "taints": (
                [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}] if sku.is_gpu else []
            )
            + [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}],
        },
        "status": {
            "capacity": node_capacity(sku, False),
            "allocatable": node_allocatable(sku, False),
            "conditions": node_conditions(
                False,
                "KubeletNotReady",
                "container runtime network not ready: NetworkReady=false "
                "reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin "
                "not initialized",
            ),
            "addresses": [
                {"type": "InternalIP", "address": address},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": hashlib.md5(name.encode()).hexdigest(),  # noqa: S324 - not security relevant
                "containerRuntimeVersion": "containerd://1.7.27-1",
                "kernelVersion": "5.15.0-1089-azure",
                "kubeProxyVersion": KUBELET_VERSION,
                "kubeletVersion": KUBELET_VERSION,
                "machineID": hashlib.sha1(name.encode()).hexdigest()[:32],  # noqa: S324
                "operatingSystem": "linux",
                "osImage": "Ubuntu 22.04.5 LTS",
                "systemUUID": hashlib.sha256(name.encode()).hexdigest()[:32],
            },
        },
    }


def node_conditions(ready: bool | None, reason: str, message: str) -> list[dict[str, Any]]:
    status = "Unknown" if ready is None else ("True" if ready else "False")
    return [
        {
            "type": "MemoryPressure",
            "status": "False",
            "reason": "KubeletHasSufficientMemory",
            "message": "kubelet has sufficient memory available",
        },
        {
            "type": "DiskPressure",
            "status": "False",
            "reason": "KubeletHasNoDiskPressure",
            "message": "kubelet has no disk pressure",
        },
        {
            "type": "PIDPressure",
            "status": "False",
            "reason": "KubeletHasSufficientPID",
            "message": "kubelet has sufficient PID available",
        },
        {"type": "Ready", "status": status, "reason": reason, "message": message},
    ]


def gpu_feature_labels(sku: GpuSku) -> dict[str, str]:
    """Labels NVIDIA's GPU feature discovery adds once the device plugin runs."""
    if not sku.is_gpu:
        return {}
    facts = vm_facts(sku)
    major, _, minor = f"{sku.cuda_cc or 8.0:.1f}".partition(".")
    return {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.count": str(sku.gpu_count),
        "nvidia.com/gpu.product": facts.gpu_product,
        "nvidia.com/gpu.memory": str(int(sku.gpu_memory_per_gpu_gib * 1024)),
        "nvidia.com/gpu.family": "hopper"
        if "H1" in facts.gpu_product or "H200" in facts.gpu_product
        else "ampere",
        "nvidia.com/cuda.compute.major": major,
        "nvidia.com/cuda.compute.minor": minor,
        "nvidia.com/cuda.driver.major": "550",
        "nvidia.com/mig.capable": "true"
        if "A100" in facts.gpu_product or "H100" in facts.gpu_product
        else "false",
    }


def quota_error(sku: GpuSku, nodes: int) -> str:
    """Azure's wording when a VM family's vCPU quota is exhausted."""
    family = vm_facts(sku).quota_family
    required = sku.vcpus * nodes
    blade = quote(
        '{"subscriptionId":"'
        + SUBSCRIPTION_ID
        + '","command":"openQuotaApprovalBlade","quotas":[{"location":"'
        + REGION
        + '","providerId":"Microsoft.Compute","resourceName":"'
        + family
        + '","quotaRequest":{"properties":{"limit":'
        + str(required)
        + ',"unit":"Count","name":{"value":"'
        + family
        + '"}}}}]}',
        safe=",:[]",
    )
    return (
        "OperationNotAllowed: Operation could not be completed as it results in exceeding approved "
        f"{family} Cores quota. Additional details - Deployment Model: Resource Manager, "
        f"Location: {REGION}, "
        f"Current Limit: 0, Current Usage: 0, Additional Required: {required}, (Minimum) New "
        "Limit Required: "
        f"{required}. Submit a request for Quota increase at "
        "https://aka.ms/ProdportalCRP/#blade/Microsoft_Azure_Capacity/UsageAndQuota.ReactView/"
        f"Parameters/{blade} "
        "by specifying parameters listed in the ‘Details’ section for deployment to succeed. "
        "Please read more "
        "about quota limits at https://docs.microsoft.com/en-us/azure/azure-supportability/per-vm-quota-requests"
    )


INSTANCE_TYPES_UNAVAILABLE = "all requested instance types were unavailable during launch"


def capacity_error(sku: GpuSku) -> str:
    """Azure's wording when the region has no capacity for the VM size."""
    return (
        f"{INSTANCE_TYPES_UNAVAILABLE}: SkuNotAvailable: The requested VM size for resource "
        "'Following SKUs "
        f"have failed for Capacity Restrictions: {sku.sku}' is currently not available in "
        f"location '{REGION}'. "
        "Please try another size or deploy to a different location or zones. See "
        "https://aka.ms/azureskunotavailable for details. (AllocationFailed: Allocation failed. "
        "We do not have "
        "sufficient capacity for the requested VM size in this region. Read more about "
        "improving likelihood "
        "of allocation success at http://aka.ms/allocation-guidance)"
    )
