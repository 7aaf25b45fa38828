"""The objects a fresh AKS cluster with the KAITO add-on already has."""

from __future__ import annotations

from typing import Any

from kaitosim.cluster import Cluster

KAITO_RELEASE_NAMESPACE = "kube-system"
INFERENCE_PARAMS_TEMPLATE = "inference-params-template"

DEFAULT_INFERENCE_CONFIG = """\
# Maximum number of steps to find the max available seq len fitting in the GPU memory.
max_probe_steps: 6

vllm:
  cpu-offload-gb: 0
  gpu-memory-utilization: 0.95
  swap-space: 4

  # max-seq-len-to-capture: 8192
  # num-scheduler-steps: 1
  # enable-chunked-prefill: false
  # see https://docs.vllm.ai/en/stable/serving/engine_args.html for more options.

transformers:
  accelerate:
    num_processes: 1
    num_machines: 1
    machine_rank: 0
    gpu_ids: all
  torch_dtype: bfloat16
  pipeline: text-generation
  trust_remote_code: true
"""

SYSTEM_NODE_NAME = "aks-nodepool1-26419731-vmss000000"


def system_node() -> dict[str, Any]:
    """The AKS system pool node (no GPU), so the cluster is not empty of nodes."""
    return {
        "metadata": {
            "name": SYSTEM_NODE_NAME,
            "labels": {
                "agentpool": "nodepool1",
                "kubernetes.azure.com/agentpool": "nodepool1",
                "kubernetes.azure.com/mode": "system",
                "kubernetes.azure.com/role": "agent",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": SYSTEM_NODE_NAME,
                "kubernetes.io/os": "linux",
                "node.kubernetes.io/instance-type": "Standard_D4ds_v5",
                "beta.kubernetes.io/instance-type": "Standard_D4ds_v5",
                "topology.kubernetes.io/region": "eastus",
                "topology.kubernetes.io/zone": "0",
            },
        },
        "spec": {
            "providerID": "azure:///subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/"
            "mc_kaitosim_kaitosim_eastus/providers/Microsoft.Compute/virtualMachineScaleSets/"
            "aks-nodepool1-26419731-vmss/virtualMachines/0",
            "podCIDR": "10.244.0.0/24",
        },
        "status": {
            "capacity": {
                "cpu": "4",
                "memory": "16374584Ki",
                "pods": "110",
                "ephemeral-storage": "129886128Ki",
            },
            "allocatable": {
                "cpu": "3860m",
                "memory": "12880184Ki",
                "pods": "110",
                "ephemeral-storage": "119703055367",
            },
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": None,
                    "lastTransitionTime": None,
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": "10.224.0.4"},
                {"type": "Hostname", "address": SYSTEM_NODE_NAME},
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": "9c2f4c1e-0d2b-4f7c-9a0e-6a6f5d1b7e11",
                "containerRuntimeVersion": "containerd://1.7.27-1",
                "kernelVersion": "5.15.0-1089-azure",
                "kubeProxyVersion": "v1.32.6",
                "kubeletVersion": "v1.32.6",
                "machineID": "5b2f0d9a8c1e4f6a9d3b7c2e1f0a4d6b",
                "operatingSystem": "linux",
                "osImage": "Ubuntu 22.04.5 LTS",
                "systemUUID": "6f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b",
            },
        },
    }


def bootstrap(cluster: Cluster, crds: list[dict[str, Any]]) -> None:
    namespaces = cluster.resource("", "v1", "namespaces")
    for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
        cluster.create(namespaces, "", {"metadata": {"name": name}}, internal=True)
    services = cluster.resource("", "v1", "services")
    cluster.create(
        services,
        "default",
        {
            "metadata": {
                "name": "kubernetes",
                "labels": {"component": "apiserver", "provider": "kubernetes"},
            },
            "spec": {
                "clusterIP": "10.0.0.1",
                "clusterIPs": ["10.0.0.1"],
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 443}],
            },
        },
        internal=True,
    )
    configmaps = cluster.resource("", "v1", "configmaps")
    cluster.create(
        configmaps,
        KAITO_RELEASE_NAMESPACE,
        {
            "metadata": {
                "name": INFERENCE_PARAMS_TEMPLATE,
                "labels": {
                    "app.kubernetes.io/managed-by": "Helm",
                    "app.kubernetes.io/name": "workspace",
                },
            },
            "data": {"inference_config.yaml": DEFAULT_INFERENCE_CONFIG},
        },
        internal=True,
    )
    nodes = cluster.resource("", "v1", "nodes")
    cluster.create(nodes, "", system_node(), internal=True)
    crd_type = cluster.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    for crd in crds:
        body = {key: value for key, value in crd.items() if key not in ("apiVersion", "kind")}
        body["status"] = {
            "acceptedNames": crd["spec"]["names"],
            "conditions": [
                {
                    "type": "Established",
                    "status": "True",
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                }
            ],
            "storedVersions": [v["name"] for v in crd["spec"]["versions"] if v.get("storage")],
        }
        cluster.create(crd_type, "", body, internal=True)
