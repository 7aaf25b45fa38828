"""Why a Workspace is not serving, in plain words, with the next step.

`failure_of` reads what the cluster shows (NodeClaims, pods, the Workspace's conditions, the
log tail) and names the cause. `fatal` failures will not fix themselves (KAITO would retry
for ever), so the deployment is marked failed; the others explain a wait.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Failure:
    reason: str  # quota, capacity, image-pull, oom, crashloop, model-access, gated, node-lost, ...
    message: str
    next_step: str
    fatal: bool = True


REASON_LABELS = {
    "quota": "Azure quota exceeded",
    "capacity": "No Azure capacity",
    "image-pull": "Image cannot be pulled",
    "oom": "Out of GPU memory",
    "crashloop": "Crash loop",
    "model-access": "Model access secret missing",
    "gated": "Gated model: download refused",
    "node-lost": "Node lost",
    "refused": "Refused by the cluster",
    "unreachable": "Cluster unreachable",
    "stuck": "Stuck",
}

_QUOTA_FAMILY = re.compile(r"exceeding approved (\S+) Cores quota")
_REGION = re.compile(r"Location: ([A-Za-z0-9]+)")


def _conditions(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list((obj.get("status") or {}).get("conditions") or [])


def _launch_failure(nodeclaims: Iterable[Mapping[str, Any]]) -> str:
    for claim in nodeclaims:
        for c in _conditions(claim):
            if c.get("type") == "Launched" and c.get("status") == "False" and c.get("message"):
                return str(c["message"])
    return ""


def _container_statuses(pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for pod in pods:
        out.extend((pod.get("status") or {}).get("containerStatuses") or [])
    return out


def failure_of(
    *,
    workspace: Mapping[str, Any],
    nodeclaims: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    log_tail: str = "",
    vm_size: str = "",
) -> Failure | None:
    pods = list(pods)
    launch = _launch_failure(nodeclaims)
    if launch:
        if "quota" in launch.lower():
            family = _QUOTA_FAMILY.search(launch)
            region = _REGION.search(launch)
            what = f"{family.group(1)} cores" if family else "the VM family's cores"
            where = f" in {region.group(1)}" if region else ""
            return Failure(
                "quota",
                f"Azure refused to create the {vm_size or 'GPU'} VM: the subscription's quota for "
                f"{what}{where} is exhausted. ({launch.split('. Submit')[0]})",
                "Request a quota increase for that VM family in the Azure portal (Subscriptions "
                "> Usage + quotas), then tear down and launch again; or tear down and launch on "
                "another VM size.",
            )
        if "capacity" in launch.lower() or "unavailable" in launch.lower():
            return Failure(
                "capacity",
                f"Azure has no capacity for {vm_size or 'this VM size'} in the cluster's region "
                f"right now. ({launch.split(' Please try')[0]})",
                "Tear down and launch on another VM size, retry later, or use a cluster in "
                "another region.",
            )
        return Failure(
            "provisioning",
            f"The GPU node could not be created: {launch}",
            "Read the NodeClaim's events; tear down and launch again once the cause is fixed.",
        )
    for status in _container_statuses(pods):
        waiting = (status.get("state") or {}).get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        message = str(waiting.get("message") or "")
        if reason in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName"):
            image = status.get("image") or "the image"
            return Failure(
                "image-pull",
                f"The node cannot pull {image}: {message or reason}",
                "Check the image name and tag, that the nodes can reach the registry "
                "(mcr.microsoft.com for KAITO's presets: egress and firewall rules), and "
                "imagePullSecrets for a private registry. Then tear down and launch again.",
            )
        if reason == "CreateContainerConfigError" and "secret" in message.lower():
            return Failure(
                "model-access",
                f"The model needs a Hugging Face token, but the pod cannot read it: {message}",
                "Tear down and launch again with a Hugging Face token whose account accepted "
                "the model's licence (the launch form creates the HF_TOKEN Secret), or create "
                "the Secret with key HF_TOKEN in the namespace.",
            )
        last = (status.get("lastState") or {}).get("terminated") or {}
        crashed = reason == "CrashLoopBackOff" or (
            int(status.get("restartCount") or 0) > 0 and last and not status.get("ready")
        )
        if crashed:
            detail = str(last.get("message") or last.get("reason") or "exited")
            oom = "out of memory" in detail.lower() or "out of memory" in log_tail.lower()
            inference = next(
                (c for c in _conditions(workspace) if c.get("type") == "InferenceReady"), {}
            )
            if not oom and "out of memory" in str(inference.get("message", "")).lower():
                oom = True
            if oom:
                message_text = str(inference.get("message") or detail)
                return Failure(
                    "oom",
                    "The model does not fit in GPU memory: the engine ran out of memory while "
                    f"loading (CUDA out of memory). {message_text}",
                    "Tear down and launch on a VM size that fits by KAITO's sizing (more GPU "
                    "memory or more nodes), or set a shorter max model length.",
                )
            if _gated_in_log(log_tail):
                return _gated()
            return Failure(
                "crashloop",
                f"The inference container keeps crashing (exit code {last.get('exitCode', '?')}"
                f": {detail}); Kubernetes restarts it with back-off.",
                "Read the log tail (the crashed container's log): an architecture the runtime "
                "does not support, a bad inference setting in the ConfigMap, or a driver/NCCL "
                "error on multi-GPU. Fix it, then tear down and launch again.",
            )
    if _gated_in_log(log_tail):
        return _gated()
    state = str((workspace.get("status") or {}).get("state") or "")
    for c in _conditions(workspace):
        if (
            c.get("type") == "NodesReady"
            and c.get("status") == "False"
            and (c.get("reason") == "NodeNotReady" and state == "NotReady")
        ):
            inference = next(
                (x for x in _conditions(workspace) if x.get("type") == "InferenceReady"), {}
            )
            return Failure(
                "node-lost",
                "A GPU node stopped reporting (NotReady); inference is unavailable until it "
                f"returns. {inference.get('message', '')}".strip(),
                "KAITO waits for the node to come back. If it does not within minutes, look at "
                "the VM in the cluster's node resource group, or tear down and launch again.",
                fatal=False,
            )
    return None


def _gated_in_log(log_tail: str) -> bool:
    lowered = log_tail.lower()
    return (
        "gatedrepoerror" in lowered
        or ("401" in lowered and "huggingface" in lowered)
        or ("access to model" in lowered and "is restricted" in lowered)
    )


def _gated() -> Failure:
    return Failure(
        "gated",
        "Hugging Face refused to download the model (a gated model): the token is missing, "
        "wrong, or its account has not accepted the model's licence.",
        "Accept the licence on huggingface.co with the token's account, then tear down and "
        "launch again with that token.",
    )
