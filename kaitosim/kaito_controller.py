"""KAITO's workspace controller, with the node provisioner and kubelets it relies on, in-process.

Each Workspace gets one asyncio task that walks it through a real AKS cold start (scaled by
the speed factor): NodeClaims -> Nodes -> GPU device plugin -> Service, inference ConfigMap and
StatefulSet (or a Deployment for a custom pod template) -> image pull -> engine warm-up ->
inference server -> startup benchmark. Conditions, ``status.state``, ``targetNodeCount``,
``workerNodes`` and ``performance`` follow ``pkg/workspace/controllers/workspace_controller.go``;
faults (annotation ``kaitosim.kaito.sh/fault`` or cluster-wide) and out-of-memory (whenever the
model does not fit by KAITO's sizing formula) make it fail the way a real cluster does.
Deleting a Workspace runs KAITO's finalizer: workload, Services, NodeClaims and Nodes go first.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kaitosim import node_provisioner as provisioner
from kaitosim import vllm_logs
from kaitosim.api_errors import ApiError
from kaitosim.bootstrap import INFERENCE_PARAMS_TEMPLATE, KAITO_RELEASE_NAMESPACE
from kaitosim.cluster import Cluster, now_rfc3339
from kaitosim.events import EventRecorder
from kaitosim.faults import FaultRegistry
from kaitosim.kaito_admission import max_model_len_from_config, runtime_of
from kaitosim.model_sizing import DeploymentPlan, plan_deployment
from kaitosim.object_store import StoredEvent
from kaitosim.pod_runtime import ContainerLog, RuntimeState
from kaitosim.reference import GpuSku, ModelPreset, ReferenceData
from kaitosim.timing import SimulatedClock

logger = logging.getLogger("kaitosim.controller")

WORKSPACE_FINALIZER = "workspace.finalizer.kaito.sh"
WORKSPACE_HASH_ANNOTATION = "workspace.kaito.io/hash"
WORKSPACE_REVISION_ANNOTATION = "workspace.kaito.io/revision"
DISABLE_BENCHMARK_ANNOTATION = "kaito.sh/disable-benchmark"
CONDITION_ORDER = (
    "NodeClaimReady",
    "NodesReady",
    "ResourceReady",
    "InferenceReady",
    "JobStarted",
    "BenchmarkCompleted",
    "WorkspaceSucceeded",
    "WorkspaceDeleting",
)
INFERENCE_PORT = 5000
KAITO_COMPONENT = "workspace-controller"
KARPENTER_COMPONENT = "karpenter"
SCHEDULER_COMPONENT = "default-scheduler"
KUBELET_COMPONENT = "kubelet"
BENCHMARK_DESCRIPTION = "stress/high-concurrency"


class WorkspaceGone(Exception):
    """The workspace was deleted (or replaced) under the reconcile task."""


@dataclass
class WorkloadPlan:
    """Everything decided at the first reconcile of a workspace."""

    kind: str  # "preset", "template" or "tuning"
    sku: GpuSku
    nodes: int
    runtime: str
    preset: ModelPreset | None = None
    plan: DeploymentPlan | None = None
    template: dict[str, Any] | None = None
    served_model: str = ""
    config_name: str = ""
    secret_name: str = ""
    faults: set[str] = field(default_factory=set)
    benchmark: bool = True

    @property
    def fits(self) -> bool:
        return self.kind != "preset" or (self.plan is not None and self.plan.fits)


def _condition_sort_key(condition: dict[str, Any]) -> int:
    try:
        return CONDITION_ORDER.index(condition.get("type", ""))
    except ValueError:
        return len(CONDITION_ORDER)


def set_condition(
    status: dict[str, Any],
    generation: int,
    condition_type: str,
    value: str,
    reason: str,
    message: str,
) -> None:
    """``meta.SetStatusCondition``: lastTransitionTime moves only when the status flips."""
    conditions: list[dict[str, Any]] = status.setdefault("conditions", [])
    existing = next((c for c in conditions if c.get("type") == condition_type), None)
    if existing is None:
        conditions.append(
            {
                "type": condition_type,
                "status": value,
                "observedGeneration": generation,
                "lastTransitionTime": now_rfc3339(),
                "reason": reason,
                "message": message,
            }
        )
    else:
        if existing.get("status") != value:
            existing["lastTransitionTime"] = now_rfc3339()
        existing.update(
            {
                "status": value,
                "reason": reason,
                "message": message,
                "observedGeneration": generation,
            }
        )
    conditions.sort(key=_condition_sort_key)


def remove_condition(status: dict[str, Any], condition_type: str) -> None:
    status["conditions"] = [
        c for c in status.get("conditions") or [] if c.get("type") != condition_type
    ]


class KaitoController:
    """Watches Workspaces and runs one reconcile task per workspace."""

    def __init__(
        self,
        cluster: Cluster,
        events: EventRecorder,
        reference: ReferenceData,
        clock: SimulatedClock,
        faults: FaultRegistry,
    ) -> None:
        self.cluster = cluster
        self.events = events
        self.reference = reference
        self.clock = clock
        self.faults = faults
        self.runtime = RuntimeState(cluster, self._status)
        self.workspaces = cluster.resource("kaito.sh", "v1beta1", "workspaces")
        self.nodeclaims = cluster.resource("karpenter.sh", "v1", "nodeclaims")
        self.nodes = cluster.resource("", "v1", "nodes")
        self.pods = cluster.resource("", "v1", "pods")
        self.services = cluster.resource("", "v1", "services")
        self.configmaps = cluster.resource("", "v1", "configmaps")
        self.secrets = cluster.resource("", "v1", "secrets")
        self.statefulsets = cluster.resource("apps", "v1", "statefulsets")
        self.deployments = cluster.resource("apps", "v1", "deployments")
        self._runs: dict[str, WorkspaceRun] = {}
        self._started = False
        self._node_index = 0
        self.succeeded_count = 0

    def start(self) -> None:
        if not self._started:
            self.cluster.store.add_listener(self._on_event)
            self._started = True

    async def stop(self) -> None:
        runs = list(self._runs.values())
        self._runs.clear()
        for run in runs:
            run.cancel()
        for run in runs:
            await run.shutdown()

    def _status(self) -> dict[str, Any]:
        return {
            "workspaceTasks": len(self._runs),
            "speed": self.clock.speed,
            "workspacesSucceeded": self.succeeded_count,
        }

    def next_node_index(self) -> int:
        self._node_index += 1
        return self._node_index

    def _on_event(self, event: StoredEvent) -> None:
        if event.bucket != self.workspaces.bucket:
            return
        uid = str(event.obj["metadata"].get("uid"))
        if event.type == "ADDED":
            run = WorkspaceRun(self, event.namespace, event.name, uid)
            self._runs[uid] = run
            run.begin()
            return
        existing = self._runs.get(uid)
        if existing is None:
            return
        run = existing
        if event.type == "DELETED":
            self._runs.pop(uid, None)
            run.cancel()
            run.spawn_cleanup()
            return
        if event.obj["metadata"].get("deletionTimestamp") and not run.deleting:
            run.request_deletion()

    def forget(self, uid: str) -> None:
        self._runs.pop(uid, None)


class WorkspaceRun:
    """The life of one Workspace: provisioning, serving, faults, then KAITO's finalizer."""

    def __init__(self, controller: KaitoController, namespace: str, name: str, uid: str) -> None:
        self.ctl = controller
        self.cluster = controller.cluster
        self.namespace = namespace
        self.name = name
        self.uid = uid
        self.deleting = False
        self._task: asyncio.Task[None] | None = None
        self._deletion_task: asyncio.Task[None] | None = None
        self._servers: list[Any] = []
        self.workload: WorkloadPlan | None = None
        self.claim_names: list[str] = []
        self.node_names: list[str] = []
        self.pod_names: list[str] = []
        self.last_error = ""
        self.performance: dict[str, Any] | None = None
        self._leader_log: ContainerLog | None = None

    # ------------------------------------------------------------ task control
    def begin(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._guarded(self.run()))

    def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def request_deletion(self) -> None:
        self.deleting = True
        self.cancel()
        self._deletion_task = asyncio.get_running_loop().create_task(self._guarded(self.finalize()))

    def spawn_cleanup(self) -> None:
        asyncio.get_running_loop().create_task(self._stop_servers())

    async def shutdown(self) -> None:
        for task in (self._task, self._deletion_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        await self._stop_servers()

    async def _guarded(self, coroutine: Any) -> None:
        try:
            await coroutine
        except (WorkspaceGone, asyncio.CancelledError):
            pass
        except Exception:
            logger.exception("workspace %s/%s: reconcile failed", self.namespace, self.name)

    async def sleep(self, simulated_seconds: float) -> None:
        await asyncio.sleep(self.ctl.clock.real_seconds(simulated_seconds))

    # --------------------------------------------------------------- accessors
    def workspace(self) -> dict[str, Any]:
        obj = self.cluster.find(self.ctl.workspaces, self.namespace, self.name)
        if obj is None or obj["metadata"].get("uid") != self.uid:
            raise WorkspaceGone()
        return obj

    def update_status(self, mutate: Callable[[dict[str, Any], int], None]) -> None:
        workspace = self.workspace()
        status = copy.deepcopy(workspace.get("status") or {})
        before = copy.deepcopy(status)
        mutate(status, int(workspace["metadata"].get("generation", 1)))
        if status == before:
            return
        workspace["status"] = status
        try:
            self.cluster.update(
                self.ctl.workspaces,
                self.namespace,
                self.name,
                workspace,
                subresource="status",
                internal=True,
            )
        except ApiError as error:
            if error.code == 404:
                raise WorkspaceGone() from None
            raise

    def event(self, event_type: str, reason: str, message: str) -> None:
        with contextlib.suppress(WorkspaceGone):
            self.ctl.events.record(self.workspace(), event_type, reason, message, KAITO_COMPONENT)

    def _with_error(self, message: str) -> str:
        return (
            f"{message} (last reconcile error: {self.last_error})" if self.last_error else message
        )

    # ------------------------------------------------------------------ phases
    async def run(self) -> None:
        workspace = self.workspace()
        self._ensure_finalizer(workspace)
        workload = self._plan(self.workspace())
        self.workload = workload
        self._initial_status(workload)
        await self._provision_nodes(workload)
        if workload.kind == "tuning":
            await self._run_tuning(workload)
            await asyncio.Event().wait()
        await self._deploy(workload)
        await self._start_pods(workload)
        if workload.kind == "preset" and workload.runtime == "vllm" and workload.benchmark:
            await self._benchmark(workload)
        self._succeed(workload)
        await self._monitor(workload)

    def _ensure_finalizer(self, workspace: dict[str, Any]) -> None:
        metadata = workspace["metadata"]
        finalizers = list(metadata.get("finalizers") or [])
        annotations = dict(metadata.get("annotations") or {})
        spec_hash = hashlib.sha256(
            repr(
                (workspace.get("resource"), workspace.get("inference"), workspace.get("tuning"))
            ).encode()
        ).hexdigest()
        changed = False
        if WORKSPACE_FINALIZER not in finalizers:
            finalizers.append(WORKSPACE_FINALIZER)
            changed = True
        if annotations.get(WORKSPACE_HASH_ANNOTATION) != spec_hash:
            annotations[WORKSPACE_HASH_ANNOTATION] = spec_hash
            annotations.setdefault(WORKSPACE_REVISION_ANNOTATION, "1")
            changed = True
        if not changed:
            return
        metadata["finalizers"] = finalizers
        metadata["annotations"] = annotations
        try:
            self.cluster.update(
                self.ctl.workspaces, self.namespace, self.name, workspace, internal=True
            )
        except ApiError as error:
            if error.code == 404:
                raise WorkspaceGone() from None
            raise

    def _plan(self, workspace: dict[str, Any]) -> WorkloadPlan:
        reference = self.ctl.reference
        resource = workspace.get("resource") or {}
        sku = (
            reference.sku(str(resource.get("instanceType", "")))
            or reference.skus["standard_nc24ads_a100_v4"]
        )
        faults = self.ctl.faults.for_workspace(workspace)
        annotations = workspace["metadata"].get("annotations") or {}
        benchmark = str(annotations.get(DISABLE_BENCHMARK_ANNOTATION, "")).lower() != "true"
        inference = workspace.get("inference") or {}
        if workspace.get("tuning") is not None:
            return WorkloadPlan(
                "tuning",
                sku,
                max(1, int(resource.get("count") or 1)),
                "transformers",
                faults=faults,
            )
        if inference.get("template") is not None:
            template = copy.deepcopy(inference["template"])
            return WorkloadPlan(
                "template",
                sku,
                max(1, int(resource.get("count") or 1)),
                "transformers",
                template=template,
                served_model=_served_model_of_template(template, self.name),
                faults=faults,
                benchmark=False,
            )
        preset_spec = inference.get("preset") or {}
        preset = reference.resolve_preset(str(preset_spec.get("name", "")))
        if preset is None:
            raise WorkspaceGone()  # admission keeps unknown presets out
        config_name = str(inference.get("config") or "")
        configured_len = None
        if config_name:
            configmap = self.cluster.find(self.ctl.configmaps, self.namespace, config_name)
            if configmap is not None:
                configured_len = max_model_len_from_config(
                    (configmap.get("data") or {}).get("inference_config.yaml", "")
                )
        runtime = runtime_of(workspace)
        plan = plan_deployment(preset, sku, configured_len)
        nodes = plan.nodes if runtime == "vllm" else max(1, int(resource.get("count") or 1))
        return WorkloadPlan(
            "preset",
            sku,
            nodes,
            runtime,
            preset=preset,
            plan=plan,
            served_model=str(preset_spec.get("name")),
            config_name=config_name,
            secret_name=str(
                (preset_spec.get("presetOptions") or {}).get("modelAccessSecret") or ""
            ),
            faults=faults,
            benchmark=benchmark,
        )

    def _initial_status(self, workload: WorkloadPlan) -> None:
        def mutate(status: dict[str, Any], generation: int) -> None:
            status["targetNodeCount"] = workload.nodes
            set_condition(
                status,
                generation,
                "NodeClaimReady",
                "False",
                "NodeClaimNotReady",
                "Ready NodeClaims are not enough",
            )
            set_condition(
                status,
                generation,
                "NodesReady",
                "False",
                "NodeNotReady",
                "Not enough Nodes are ready",
            )
            set_condition(
                status,
                generation,
                "ResourceReady",
                "False",
                "NodeClaimNotReady",
                "Ready NodeClaims are not enough",
            )
            if workload.kind == "tuning":
                set_condition(
                    status,
                    generation,
                    "JobStarted",
                    "False",
                    "WorkspaceTuningJobStatusPending",
                    "Tuning job has not started",
                )
                set_condition(
                    status,
                    generation,
                    "WorkspaceSucceeded",
                    "False",
                    "workspacePending",
                    "workspace is initializing, tuning job has not started",
                )
            else:
                set_condition(
                    status,
                    generation,
                    "InferenceReady",
                    "False",
                    "WorkspaceInferenceStatusPending",
                    "Inference workload is not ready",
                )
                set_condition(
                    status,
                    generation,
                    "WorkspaceSucceeded",
                    "False",
                    "workspacePending",
                    "workspace is waiting for inference workload readiness",
                )
            status["state"] = "Pending"

        self.update_status(mutate)

    # --------------------------------------------------------- node provision
    async def _provision_nodes(self, workload: WorkloadPlan) -> None:
        workspace = self.workspace()
        count = workload.nodes

        def creating(status: dict[str, Any], generation: int) -> None:
            message = f"Creating up {count} additional NodeClaims"
            set_condition(
                status, generation, "NodeClaimReady", "False", "CreatingUpNodeClaims", message
            )
            set_condition(
                status, generation, "ResourceReady", "False", "CreatingUpNodeClaims", message
            )

        self.update_status(creating)
        claims = []
        for index in range(count):
            name = provisioner.nodeclaim_name(self.namespace, self.name, index, self.uid)
            manifest = provisioner.nodeclaim_manifest(name, workspace, workload.sku)
            manifest["status"] = {"conditions": _karpenter_conditions_unknown()}
            try:
                result = self.cluster.create(self.ctl.nodeclaims, "", manifest, internal=True)
            except ApiError as error:
                self.event(
                    "Warning",
                    "NodeClaimCreationFailed",
                    f"Failed to create NodeClaim {name} for workspace {self.name}: {error.message}",
                )
                continue
            claims.append(result.obj)
            self.claim_names.append(name)
            self.event(
                "Normal",
                "NodeClaimCreated",
                f"Successfully created NodeClaim {name} for workspace {self.namespace}/{self.name}",
            )

        def waiting(status: dict[str, Any], generation: int) -> None:
            message = (
                f"Ready NodeClaims are not enough (TargetNodeClaims: {count}, "
                "CurrentReadyNodeClaims: 0)"
            )
            set_condition(
                status, generation, "NodeClaimReady", "False", "NodeClaimNotReady", message
            )
            set_condition(
                status, generation, "ResourceReady", "False", "NodeClaimNotReady", message
            )

        self.update_status(waiting)
        profile = self.ctl.clock.profile
        await self.sleep(min(15.0, profile.node_provisioning / 4))
        failure = (
            "quota"
            if "quota" in workload.faults
            else ("capacity" if "capacity" in workload.faults else "")
        )
        if failure:
            self._fail_launch(workload, failure)
            await asyncio.Event().wait()
        await self.sleep(profile.node_provisioning - min(15.0, profile.node_provisioning / 4))
        for claim_name in self.claim_names:
            self._launch(claim_name, workload.sku)
        self._sync_worker_nodes()
        await self.sleep(profile.node_initialisation * 0.55)
        for claim_name, node_name in zip(self.claim_names, self.node_names, strict=False):
            self._node_ready(claim_name, node_name)

        def claims_ready(status: dict[str, Any], generation: int) -> None:
            message = (
                f"Enough NodeClaims are ready (TargetNodeClaims: {count}, "
                f"CurrentReadyNodeClaims: {count})"
            )
            set_condition(status, generation, "NodeClaimReady", "True", "NodeClaimsReady", message)
            set_condition(
                status,
                generation,
                "NodesReady",
                "False",
                "NodePluginsNotReady",
                "waiting all node plugins to be ready",
            )
            set_condition(
                status,
                generation,
                "ResourceReady",
                "False",
                "NodePluginsNotReady",
                "waiting all node plugins to be ready",
            )

        self.update_status(claims_ready)
        self.event(
            "Normal",
            "NodeClaimsReady",
            f"Enough NodeClaims are ready (TargetNodeClaims: {count}, CurrentReadyNodeClaims: "
            f"{count})",
        )
        await self.sleep(profile.node_initialisation * 0.45)
        for node_name in self.node_names:
            self._gpu_plugin_ready(node_name, workload.sku)

        def nodes_ready(status: dict[str, Any], generation: int) -> None:
            set_condition(
                status, generation, "NodesReady", "True", "NodesReady", "Enough Nodes are ready"
            )
            set_condition(
                status,
                generation,
                "ResourceReady",
                "True",
                "workspaceResourceStatusSuccess",
                "workspace resource is ready",
            )

        self.update_status(nodes_ready)
        self.event(
            "Normal",
            "ResourceReady",
            f"{count} node(s) of {workload.sku.sku} are ready: {', '.join(self.node_names)}",
        )

    def _fail_launch(self, workload: WorkloadPlan, failure: str) -> None:
        sku = workload.sku
        message = (
            provisioner.quota_error(sku, workload.nodes)
            if failure == "quota"
            else provisioner.capacity_error(sku)
        )
        for claim_name in self.claim_names:
            claim = self.cluster.find(self.ctl.nodeclaims, "", claim_name)
            if claim is None:
                continue
            conditions = _karpenter_conditions_unknown()
            _set_karpenter_condition(conditions, "Launched", "False", "LaunchFailed", message)
            _set_karpenter_condition(conditions, "Ready", "False", "LaunchFailed", "Launched=False")
            claim["status"] = {"conditions": conditions}
            self.cluster.update(
                self.ctl.nodeclaims, "", claim_name, claim, subresource="status", internal=True
            )
            self.ctl.events.record(claim, "Warning", "FailedLaunch", message, KARPENTER_COMPONENT)
        if failure == "capacity":
            self.last_error = provisioner.INSTANCE_TYPES_UNAVAILABLE
        else:
            self.last_error = f"nodeClaim {', '.join(self.claim_names)} failed to launch: {message}"
        count = workload.nodes

        def failed(status: dict[str, Any], generation: int) -> None:
            message_text = self._with_error(
                f"Ready NodeClaims are not enough (TargetNodeClaims: {count}, "
                "CurrentReadyNodeClaims: 0)"
            )
            set_condition(
                status, generation, "NodeClaimReady", "False", "NodeClaimNotReady", message_text
            )
            set_condition(
                status, generation, "ResourceReady", "False", "NodeClaimNotReady", message_text
            )
            set_condition(
                status,
                generation,
                "WorkspaceSucceeded",
                "False",
                "workspacePending",
                self._with_error("workspace is waiting for inference workload readiness"),
            )

        self.update_status(failed)
        self.event("Warning", "NodeClaimLaunchFailed", message)

    def _launch(self, claim_name: str, sku: GpuSku) -> None:
        claim = self.cluster.find(self.ctl.nodeclaims, "", claim_name)
        if claim is None:
            raise WorkspaceGone()
        name = provisioner.node_name(claim_name)
        node = provisioner.node_manifest(name, claim, sku, self.ctl.next_node_index())
        self.cluster.create(self.ctl.nodes, "", node, internal=True)
        self.node_names.append(name)
        self.ctl.events.record(
            self.cluster.get(self.ctl.nodes, "", name),
            "Normal",
            "Starting",
            "Starting kubelet.",
            KUBELET_COMPONENT,
            name,
        )
        self.ctl.events.record(
            self.cluster.get(self.ctl.nodes, "", name),
            "Normal",
            "RegisteredNode",
            f"Node {name} event: Registered Node {name} in Controller",
            "node-controller",
        )
        conditions = claim["status"].get("conditions") or _karpenter_conditions_unknown()
        _set_karpenter_condition(conditions, "Launched", "True", "Launched", "")
        _set_karpenter_condition(conditions, "Registered", "True", "Registered", "")
        claim["status"] = {
            "conditions": conditions,
            "providerID": provisioner.provider_id(name),
            "nodeName": name,
            "imageID": (
                "/CommunityGalleries/AKSUbuntu-38d80f77-467a-481f-a8d4-09b6d4220bd2/images/"
                f"2204gen2containerd/versions/{provisioner.NODE_IMAGE.rsplit('-', 1)[1]}"
            ),
            "capacity": provisioner.node_capacity(sku, True),
            "allocatable": provisioner.node_allocatable(sku, True),
        }
        labels = dict(claim["metadata"].get("labels") or {})
        labels.update(
            {
                "node.kubernetes.io/instance-type": sku.sku,
                "karpenter.sh/capacity-type": "on-demand",
                "topology.kubernetes.io/zone": "0",
                "kubernetes.io/os": "linux",
            }
        )
        claim["metadata"]["labels"] = labels
        updated = self.cluster.update(self.ctl.nodeclaims, "", claim_name, claim, internal=True).obj
        self.ctl.events.record(
            updated,
            "Normal",
            "Launched",
            "Status condition transitioned, Type: Launched, Status: Unknown -> True, Reason: "
            "Launched",
            KARPENTER_COMPONENT,
        )
        self.ctl.events.record(
            updated,
            "Normal",
            "Registered",
            "Status condition transitioned, Type: Registered, Status: Unknown -> True, Reason: "
            "Registered",
            KARPENTER_COMPONENT,
        )

    def _node_ready(self, claim_name: str, node_name: str) -> None:
        node = self.cluster.find(self.ctl.nodes, "", node_name)
        if node is not None:
            node["status"]["conditions"] = provisioner.node_conditions(
                True, "KubeletReady", "kubelet is posting ready status"
            )
            node["spec"]["taints"] = [
                t
                for t in node["spec"].get("taints") or []
                if t.get("key") != "node.kubernetes.io/not-ready"
            ]
            node["metadata"]["labels"]["karpenter.sh/initialized"] = "true"
            self.cluster.update(self.ctl.nodes, "", node_name, node, internal=True)
            self.ctl.events.record(
                node,
                "Normal",
                "NodeReady",
                f"Node {node_name} status is now: NodeReady",
                KUBELET_COMPONENT,
                node_name,
            )
        claim = self.cluster.find(self.ctl.nodeclaims, "", claim_name)
        if claim is not None:
            conditions = claim["status"].get("conditions") or []
            _set_karpenter_condition(conditions, "Initialized", "True", "Initialized", "")
            _set_karpenter_condition(conditions, "Ready", "True", "Ready", "")
            claim["status"]["conditions"] = conditions
            updated = self.cluster.update(
                self.ctl.nodeclaims, "", claim_name, claim, subresource="status", internal=True
            ).obj
            self.ctl.events.record(
                updated,
                "Normal",
                "Ready",
                "Status condition transitioned, Type: Ready, Status: Unknown -> True, Reason: "
                "Ready",
                KARPENTER_COMPONENT,
            )

    def _gpu_plugin_ready(self, node_name: str, sku: GpuSku) -> None:
        node = self.cluster.find(self.ctl.nodes, "", node_name)
        if node is None:
            return
        node["metadata"]["labels"].update(provisioner.gpu_feature_labels(sku))
        node["status"]["capacity"] = provisioner.node_capacity(sku, True)
        node["status"]["allocatable"] = provisioner.node_allocatable(sku, True)
        self.cluster.update(self.ctl.nodes, "", node_name, node, internal=True)

    def _sync_worker_nodes(self) -> None:
        names = sorted(self.node_names)

        def mutate(status: dict[str, Any], _generation: int) -> None:
            status["workerNodes"] = names

        self.update_status(mutate)

    # ------------------------------------------------------------ workloads
    def _labels(self) -> dict[str, str]:
        return {provisioner.WORKSPACE_LABEL: self.name}

    def _owner_reference(self) -> dict[str, Any]:
        return {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "Workspace",
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    async def _deploy(self, workload: WorkloadPlan) -> None:
        workspace = self.workspace()
        while workload.kind == "preset" and workload.config_name:
            if (
                self.cluster.find(self.ctl.configmaps, self.namespace, workload.config_name)
                is not None
            ):
                self.last_error = ""
                break
            self.last_error = (
                f"user specified ConfigMap {workload.config_name} not found in "
                f"namespace {self.namespace}"
            )
            self._report_not_ready(
                f"ConfigMap {workload.config_name} not found in namespace {self.namespace}"
            )
            await self.sleep(10.0)
        self._ensure_services(workspace, workload)
        if workload.kind == "template":
            self._create_deployment(workload)
        else:
            self._ensure_inference_config(workload)
            self._create_statefulset(workload)

    def _ensure_services(self, workspace: dict[str, Any], workload: WorkloadPlan) -> None:
        target_port: Any = INFERENCE_PORT
        if workload.kind == "template":
            target_port = _template_port(workload.template or {}) or 80
        annotations = workspace["metadata"].get("annotations") or {}
        service_type = (
            "LoadBalancer" if annotations.get("kaito.sh/enablelb") == "True" else "ClusterIP"
        )
        service: dict[str, Any] = {
            "metadata": {
                "name": self.name,
                "labels": self._labels(),
                "ownerReferences": [self._owner_reference()],
            },
            "spec": {
                "type": service_type,
                "selector": self._labels(),
                "ports": [
                    {"name": "http", "port": 80, "protocol": "TCP", "targetPort": target_port},
                ],
            },
        }
        if workload.kind == "preset":
            service["spec"]["selector"] = {**self._labels(), "apps.kubernetes.io/pod-index": "0"}
            service["spec"]["ports"].append(
                {"name": "torch", "port": 29500, "protocol": "TCP", "targetPort": 29500}
            )
        with contextlib.suppress(ApiError):
            self.cluster.create(self.ctl.services, self.namespace, service, internal=True)
        if workload.kind == "preset":
            headless = {
                "metadata": {
                    "name": f"{self.name}-headless",
                    "labels": self._labels(),
                    "ownerReferences": [self._owner_reference()],
                },
                "spec": {
                    "clusterIP": "None",
                    "clusterIPs": ["None"],
                    "selector": self._labels(),
                    "publishNotReadyAddresses": True,
                    "ports": [
                        {"name": "torch", "port": 29500, "protocol": "TCP", "targetPort": 29500}
                    ],
                },
            }
            with contextlib.suppress(ApiError):
                self.cluster.create(self.ctl.services, self.namespace, headless, internal=True)

    def _ensure_inference_config(self, workload: WorkloadPlan) -> None:
        if workload.config_name:
            return
        if (
            self.cluster.find(self.ctl.configmaps, self.namespace, INFERENCE_PARAMS_TEMPLATE)
            is not None
        ):
            return
        template = self.cluster.find(
            self.ctl.configmaps, KAITO_RELEASE_NAMESPACE, INFERENCE_PARAMS_TEMPLATE
        )
        data = (template or {}).get("data") or {}
        with contextlib.suppress(ApiError):
            self.cluster.create(
                self.ctl.configmaps,
                self.namespace,
                {"metadata": {"name": INFERENCE_PARAMS_TEMPLATE}, "data": dict(data)},
                internal=True,
            )

    def _preset_container(self, workload: WorkloadPlan) -> dict[str, Any]:
        assert workload.preset is not None and workload.plan is not None
        plan = workload.plan
        gpus = str(workload.sku.gpu_count)
        args = (
            "python3 /workspace/vllm/inference_api.py "
            "--kaito-config-file=/mnt/config/inference_config.yaml "
            f"--served-model-name={workload.served_model} "
            f"--tensor-parallel-size={workload.sku.gpu_count} "
            f"--pipeline-parallel-size={plan.nodes} --gpu-memory-utilization=0.90"
        )
        if workload.runtime == "transformers":
            args = (
                "accelerate launch --num_processes 1 --num_machines 1 --gpu_ids all "
                "/workspace/tfs/inference_api.py --pipeline text-generation --torch_dtype "
                f"bfloat16 --model_id {workload.preset.model_id}"
            )
        container: dict[str, Any] = {
            "name": self.name,
            "image": workload.preset.image_name,
            "imagePullPolicy": "IfNotPresent",
            "command": ["/bin/sh", "-c", args],
            "ports": [{"containerPort": INFERENCE_PORT, "protocol": "TCP"}],
            "resources": {"requests": {"nvidia.com/gpu": gpus}, "limits": {"nvidia.com/gpu": gpus}},
            "readinessProbe": {
                "httpGet": {"path": "/health", "port": INFERENCE_PORT, "scheme": "HTTP"},
                "initialDelaySeconds": 30,
                "periodSeconds": 10,
                "timeoutSeconds": 1,
                "successThreshold": 1,
                "failureThreshold": 3,
            },
            "livenessProbe": {
                "httpGet": {"path": "/health", "port": INFERENCE_PORT, "scheme": "HTTP"},
                "initialDelaySeconds": 600,
                "periodSeconds": 10,
                "timeoutSeconds": 1,
                "successThreshold": 1,
                "failureThreshold": 3,
            },
            "volumeMounts": [
                {"name": "config-volume", "mountPath": "/mnt/config"},
                {"name": "dshm", "mountPath": "/dev/shm"},  # noqa: S108 - a pod mount path
            ],
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
        }
        if workload.secret_name:
            container["env"] = [
                {
                    "name": "HF_TOKEN",
                    "valueFrom": {
                        "secretKeyRef": {"name": workload.secret_name, "key": "HF_TOKEN"}
                    },
                }
            ]
        return container

    def _node_affinity(self) -> dict[str, Any]:
        match_labels = ((self.workspace().get("resource") or {}).get("labelSelector") or {}).get(
            "matchLabels"
        ) or {}
        expressions = [
            {"key": k, "operator": "In", "values": [str(v)]}
            for k, v in sorted(match_labels.items())
        ]
        return {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": expressions}]
                }
            }
        }

    def _create_statefulset(self, workload: WorkloadPlan) -> None:
        config_name = workload.config_name or INFERENCE_PARAMS_TEMPLATE
        pod_spec = {
            "containers": [self._preset_container(workload)],
            "volumes": [
                {"name": "config-volume", "configMap": {"name": config_name, "defaultMode": 420}},
                {"name": "dshm", "emptyDir": {"medium": "Memory"}},
            ],
            "tolerations": [
                {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            ],
            "affinity": self._node_affinity(),
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
        }
        statefulset = {
            "metadata": {
                "name": self.name,
                "labels": self._labels(),
                "annotations": {WORKSPACE_REVISION_ANNOTATION: "1"},
                "ownerReferences": [self._owner_reference()],
            },
            "spec": {
                "replicas": workload.nodes,
                "serviceName": f"{self.name}-headless",
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": self._labels()},
                "template": {"metadata": {"labels": self._labels()}, "spec": pod_spec},
            },
        }
        with contextlib.suppress(ApiError):
            self.cluster.create(self.ctl.statefulsets, self.namespace, statefulset, internal=True)
        owner = self.cluster.find(self.ctl.statefulsets, self.namespace, self.name)
        revision = f"{self.name}-{hashlib.sha256(self.uid.encode()).hexdigest()[:10]}"
        for index in range(workload.nodes):
            pod_name = f"{self.name}-{index}"
            labels = {
                **self._labels(),
                "apps.kubernetes.io/pod-index": str(index),
                "controller-revision-hash": revision,
                "statefulset.kubernetes.io/pod-name": pod_name,
            }
            self._create_pod(
                pod_name, labels, pod_spec, owner, "StatefulSet", index, hostname=pod_name
            )
        self._sync_workload_status(0)

    def _create_deployment(self, workload: WorkloadPlan) -> None:
        template = copy.deepcopy(workload.template or {})
        template_metadata = template.setdefault("metadata", {})
        template_metadata["labels"] = {**(template_metadata.get("labels") or {}), **self._labels()}
        pod_spec = template.setdefault("spec", {})
        deployment = {
            "metadata": {
                "name": self.name,
                "labels": self._labels(),
                "ownerReferences": [self._owner_reference()],
            },
            "spec": {
                "replicas": workload.nodes,
                "selector": {"matchLabels": self._labels()},
                "template": template,
            },
        }
        with contextlib.suppress(ApiError):
            self.cluster.create(self.ctl.deployments, self.namespace, deployment, internal=True)
        owner = self.cluster.find(self.ctl.deployments, self.namespace, self.name)
        template_hash = hashlib.sha256(repr(template).encode()).hexdigest()[:10]
        for index in range(workload.nodes):
            suffix = hashlib.sha256(f"{self.uid}{index}".encode()).hexdigest()[:5]
            pod_name = f"{self.name}-{template_hash}-{suffix}"
            labels = {**template_metadata["labels"], "pod-template-hash": template_hash}
            self._create_pod(pod_name, labels, pod_spec, owner, "ReplicaSet", index)
        self._sync_workload_status(0)

    def _create_pod(
        self,
        pod_name: str,
        labels: dict[str, str],
        pod_spec: dict[str, Any],
        owner: dict[str, Any] | None,
        owner_kind: str,
        index: int,
        hostname: str | None = None,
    ) -> None:
        node_name = self.node_names[index % max(1, len(self.node_names))] if self.node_names else ""
        spec = copy.deepcopy(pod_spec)
        spec["nodeName"] = node_name
        if hostname:
            spec["hostname"] = hostname
            spec["subdomain"] = f"{self.name}-headless"
        owner_references = []
        if owner is not None:
            owner_name = owner["metadata"]["name"]
            if owner_kind == "ReplicaSet":
                owner_name = f"{owner_name}-{labels.get('pod-template-hash', '')}"
            owner_references.append(
                {
                    "apiVersion": "apps/v1",
                    "kind": owner_kind,
                    "name": owner_name,
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            )
        containers = spec.get("containers") or []
        node_ip = ""
        node = self.cluster.find(self.ctl.nodes, "", node_name) if node_name else None
        if node is not None:
            node_ip = next(
                (
                    a["address"]
                    for a in node["status"].get("addresses", [])
                    if a["type"] == "InternalIP"
                ),
                "",
            )
        pod_ip = f"10.244.{1 + self.ctl.next_node_index() % 250}.{10 + index}"
        container_names = " ".join(c.get("name", "") for c in containers)
        now = now_rfc3339()
        pod = {
            "metadata": {"name": pod_name, "labels": labels, "ownerReferences": owner_references},
            "spec": spec,
            "status": {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodReadyToStartContainers",
                        "status": "False",
                        "lastTransitionTime": now,
                    },
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                    {
                        "type": "Ready",
                        "status": "False",
                        "lastTransitionTime": now,
                        "reason": "ContainersNotReady",
                        "message": f"containers with unready status: [{container_names}]",
                    },
                    {
                        "type": "ContainersReady",
                        "status": "False",
                        "lastTransitionTime": now,
                        "reason": "ContainersNotReady",
                        "message": f"containers with unready status: [{container_names}]",
                    },
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                ],
                "hostIP": node_ip,
                "hostIPs": [{"ip": node_ip}] if node_ip else [],
                "podIP": pod_ip,
                "podIPs": [{"ip": pod_ip}],
                "startTime": now,
                "qosClass": "BestEffort",
                "containerStatuses": [
                    {
                        "name": c.get("name", ""),
                        "image": c.get("image", ""),
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "started": False,
                        "state": {"waiting": {"reason": "ContainerCreating"}},
                        "lastState": {},
                    }
                    for c in containers
                ],
            },
        }
        try:
            created = self.cluster.create(self.ctl.pods, self.namespace, pod, internal=True).obj
        except ApiError:
            return
        self.pod_names.append(pod_name)
        self.ctl.events.record(
            created,
            "Normal",
            "Scheduled",
            f"Successfully assigned {self.namespace}/{pod_name} to {node_name}",
            SCHEDULER_COMPONENT,
        )

    def _update_pod(
        self, pod_name: str, mutate: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any] | None:
        pod = self.cluster.find(self.ctl.pods, self.namespace, pod_name)
        if pod is None:
            return None
        mutate(pod)
        return self.cluster.update(
            self.ctl.pods, self.namespace, pod_name, pod, subresource="status", internal=True
        ).obj

    def _pod_event(self, pod_name: str, event_type: str, reason: str, message: str) -> None:
        pod = self.cluster.find(self.ctl.pods, self.namespace, pod_name)
        if pod is not None:
            self.ctl.events.record(
                pod,
                event_type,
                reason,
                message,
                KUBELET_COMPONENT,
                (pod.get("spec") or {}).get("nodeName"),
            )

    def _set_container_state(
        self,
        pod_name: str,
        state: dict[str, Any],
        *,
        ready: bool = False,
        restarted: dict[str, Any] | None = None,
        phase: str | None = None,
    ) -> None:
        def mutate(pod: dict[str, Any]) -> None:
            status = pod["status"]
            now = now_rfc3339()
            for container in status.get("containerStatuses") or []:
                container["state"] = copy.deepcopy(state)
                container["ready"] = ready
                container["started"] = "running" in state
                if "running" in state and not container.get("containerID"):
                    container["containerID"] = (
                        "containerd://"
                        + hashlib.sha256(f"{pod_name}{time.time()}".encode()).hexdigest()
                    )
                if "running" in state or restarted is not None:
                    container["imageID"] = (
                        container["image"].split(":")[0]
                        + "@sha256:"
                        + hashlib.sha256(container["image"].encode()).hexdigest()
                    )
                if restarted is not None:
                    container["lastState"] = {"terminated": restarted}
                    container["restartCount"] = int(container.get("restartCount", 0)) + 1
            for condition in status.get("conditions") or []:
                if condition["type"] in ("Ready", "ContainersReady"):
                    value = "True" if ready else "False"
                    if condition.get("status") != value:
                        condition["lastTransitionTime"] = now
                    condition["status"] = value
                    if ready:
                        condition.pop("reason", None)
                        condition.pop("message", None)
                    else:
                        names = " ".join(c["name"] for c in status.get("containerStatuses") or [])
                        condition["reason"] = "ContainersNotReady"
                        condition["message"] = f"containers with unready status: [{names}]"
                if condition["type"] == "PodReadyToStartContainers":
                    condition["status"] = "True"
            if phase is not None:
                status["phase"] = phase

        self._update_pod(pod_name, mutate)

    def _sync_workload_status(self, ready: int) -> None:
        workload = self.workload
        if workload is None:
            return
        resource = self.ctl.deployments if workload.kind == "template" else self.ctl.statefulsets
        obj = self.cluster.find(resource, self.namespace, self.name)
        if obj is None:
            return
        replicas = int((obj.get("spec") or {}).get("replicas", 1))
        status: dict[str, Any] = {
            "observedGeneration": obj["metadata"].get("generation", 1),
            "replicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "updatedReplicas": replicas,
        }
        if workload.kind == "template":
            status["conditions"] = [
                {
                    "type": "Available",
                    "status": "True" if ready >= replicas else "False",
                    "reason": "MinimumReplicasAvailable"
                    if ready >= replicas
                    else "MinimumReplicasUnavailable",
                    "message": "Deployment has minimum availability."
                    if ready >= replicas
                    else "Deployment does not have minimum availability.",
                }
            ]
        else:
            status["currentReplicas"] = replicas
            status["currentRevision"] = (
                f"{self.name}-{hashlib.sha256(self.uid.encode()).hexdigest()[:10]}"
            )
            status["updateRevision"] = status["currentRevision"]
            status["collisionCount"] = 0
        if obj.get("status") != status:
            obj["status"] = status
            with contextlib.suppress(ApiError):
                self.cluster.update(
                    resource, self.namespace, self.name, obj, subresource="status", internal=True
                )

    # ----------------------------------------------------------- pod lifecycle
    def _report_not_ready(self, detail: str) -> None:
        message = self._with_error(
            f"Inference workload is not ready: {detail}"
            if detail
            else "Inference workload is not ready"
        )

        def mutate(status: dict[str, Any], generation: int) -> None:
            set_condition(
                status,
                generation,
                "InferenceReady",
                "False",
                "WorkspaceInferenceStatusPending",
                message,
            )
            set_condition(
                status,
                generation,
                "WorkspaceSucceeded",
                "False",
                "workspacePending",
                self._with_error("workspace is waiting for inference workload readiness"),
            )
            if status.get("state") in ("Ready", "NotReady"):
                status["state"] = "NotReady"
            else:
                status["state"] = "Pending"

        self.update_status(mutate)

    async def _start_pods(self, workload: WorkloadPlan) -> None:
        profile = self.ctl.clock.profile
        leader = self.pod_names[0] if self.pod_names else f"{self.name}-0"
        image = self._image(workload)
        await self.sleep(profile.workload_start)
        for pod_name in self.pod_names:
            self._pod_event(pod_name, "Normal", "Pulling", f'Pulling image "{image}"')
        if "image-pull" in workload.faults:
            await self._image_pull_backoff(workload, image)
        await self.sleep(profile.image_pull)
        for pod_name in self.pod_names:
            self._pod_event(
                pod_name,
                "Normal",
                "Pulled",
                f'Successfully pulled image "{image}" in {profile.image_pull:.3f}s '
                f"({profile.image_pull:.3f}s including waiting). "
                f"Image size: {_image_size(workload)} bytes.",
            )
        await self._wait_for_container_config(workload)
        attempt = 0
        while True:
            attempt += 1
            outcome = await self._run_container(workload, leader, attempt)
            if outcome == "ready":
                return
            backoff = min(300.0, profile.crash_backoff * (2 ** min(attempt - 1, 3)))
            await self.sleep(backoff)

    def _image(self, workload: WorkloadPlan) -> str:
        if workload.preset is not None:
            return workload.preset.image_name
        containers = ((workload.template or {}).get("spec") or {}).get("containers") or [{}]
        return str(containers[0].get("image", "unknown"))

    async def _image_pull_backoff(self, workload: WorkloadPlan, image: str) -> None:
        delay = 10.0
        while True:
            await self.sleep(delay)
            message = (
                f'Failed to pull image "{image}": rpc error: code = NotFound desc = '
                "failed to pull and unpack image "
                f'"{image}": failed to resolve reference "{image}": {image}: not found'
            )
            for pod_name in self.pod_names:
                self._set_container_state(
                    pod_name, {"waiting": {"reason": "ErrImagePull", "message": message}}
                )
                self._pod_event(pod_name, "Warning", "Failed", message)
                self._pod_event(pod_name, "Warning", "Failed", "Error: ErrImagePull")
            self._report_not_ready(f"pod {self.pod_names[0]}: ErrImagePull: {message}")
            self.event(
                "Warning",
                "InferenceNotReady",
                f"pod {self.pod_names[0]} cannot pull image {image}: ErrImagePull",
            )
            await self.sleep(delay)
            for pod_name in self.pod_names:
                backoff_message = f'Back-off pulling image "{image}"'
                self._set_container_state(
                    pod_name,
                    {"waiting": {"reason": "ImagePullBackOff", "message": backoff_message}},
                )
                self._pod_event(pod_name, "Normal", "BackOff", backoff_message)
                self._pod_event(pod_name, "Warning", "Failed", "Error: ImagePullBackOff")
            self._report_not_ready(
                f'pod {self.pod_names[0]}: ImagePullBackOff: Back-off pulling image "{image}"'
            )
            delay = min(300.0, delay * 2)

    async def _wait_for_container_config(self, workload: WorkloadPlan) -> None:
        if not workload.secret_name:
            return
        reported = ""
        while True:
            secret = self.cluster.find(self.ctl.secrets, self.namespace, workload.secret_name)
            if secret is None:
                problem = f'secret "{workload.secret_name}" not found'
            elif "HF_TOKEN" not in (secret.get("data") or {}):
                problem = (
                    f"couldn't find key HF_TOKEN in Secret {self.namespace}/{workload.secret_name}"
                )
            else:
                return
            if problem != reported:
                for pod_name in self.pod_names:
                    self._set_container_state(
                        pod_name,
                        {"waiting": {"reason": "CreateContainerConfigError", "message": problem}},
                    )
                    self._pod_event(pod_name, "Warning", "Failed", f"Error: {problem}")
                self._report_not_ready(
                    f"pod {self.pod_names[0]}: CreateContainerConfigError: {problem}"
                )
                self.event(
                    "Warning", "InferenceNotReady", f"model access secret missing: {problem}"
                )
                reported = problem
            await self.sleep(10.0)

    async def _run_container(self, workload: WorkloadPlan, leader: str, attempt: int) -> str:
        """One start of the inference container: warm-up, then ready, OOM or crash."""
        profile = self.ctl.clock.profile
        runtime_state = self.ctl.runtime
        container = self.name
        if workload.kind == "template":
            containers = ((workload.template or {}).get("spec") or {}).get("containers") or [{}]
            container = str(containers[0].get("name", self.name))
        logs = {
            pod: runtime_state.new_log(self.namespace, pod, container) for pod in self.pod_names
        }
        leader_log = logs.get(leader) or runtime_state.new_log(self.namespace, leader, container)
        self._leader_log = leader_log
        started_at = now_rfc3339()
        for pod_name in self.pod_names:
            self._pod_event(pod_name, "Normal", "Created", f"Created container: {container}")
            self._pod_event(pod_name, "Normal", "Started", f"Started container {container}")
            self._set_container_state(
                pod_name, {"running": {"startedAt": started_at}}, phase="Running"
            )
        for pod_name in self.pod_names[1:]:
            logs[pod_name].write(
                "INFO: worker joined the Ray cluster; waiting for the leader to load the model"
            )
        if workload.kind == "preset":
            assert workload.preset is not None and workload.plan is not None
            leader_log.write(
                *vllm_logs.launch_lines(workload.preset, workload.plan, workload.served_model)
            )
        else:
            leader_log.write(*vllm_logs.transformers_launch_lines(workload.served_model))
        warm_up = profile.engine_warm_up
        steps = 5
        downloads = workload.preset is not None and workload.preset.download_at_runtime
        for step in range(steps):
            await self.sleep(warm_up / steps)
            fraction = (step + 1) / steps
            if downloads and step < 2 and workload.preset is not None:
                leader_log.write(
                    *vllm_logs.download_lines(workload.preset, fraction * 2.5, workload.secret_name)
                )
            elif workload.kind == "preset":
                leader_log.write(*vllm_logs.weight_loading_lines(fraction, 4))
            if workload.kind == "preset" and not workload.fits and step >= 2:
                assert workload.plan is not None
                leader_log.write(
                    *vllm_logs.cuda_oom_lines(workload.plan, workload.sku.gpu_memory_per_gpu_gib)
                )
                detail = (
                    f"CUDA out of memory: {workload.served_model} needs about "
                    f"{workload.plan.required_gib:.1f} GiB of "
                    f"GPU memory but {workload.nodes} x {workload.sku.sku} offer "
                    f"{workload.plan.available_gib:.1f} GiB ({workload.plan.reason})"
                )
                self._crash(
                    leader_log,
                    logs,
                    started_at,
                    "Error",
                    1,
                    "CUDA out of memory",
                    detail,
                    container=container,
                )
                return "crashed"
            if "crashloop" in workload.faults and step >= 3:
                leader_log.write(*vllm_logs.crash_lines())
                self._crash(
                    leader_log,
                    logs,
                    started_at,
                    "Error",
                    1,
                    "Engine core initialization failed",
                    "engine core initialization failed (NCCL error)",
                    container=container,
                )
                return "crashed"
        server = await self._start_server(workload, leader)
        if server is None:
            self._crash(
                leader_log,
                logs,
                started_at,
                "Error",
                1,
                "inference server failed to start",
                "inference server failed to start",
                container=container,
            )
            return "crashed"
        leader_log.attach(server)
        self.ctl.runtime.set_backend(self.namespace, leader, server)
        for pod_name in self.pod_names:
            self._set_container_state(
                pod_name, {"running": {"startedAt": started_at}}, ready=True, phase="Running"
            )
        self._sync_workload_status(len(self.pod_names))

        def ready(status: dict[str, Any], generation: int) -> None:
            set_condition(
                status,
                generation,
                "InferenceReady",
                "True",
                "WorkspaceInferenceStatusSuccess",
                "Inference has been deployed successfully",
            )
            if workload.kind == "preset" and workload.runtime == "vllm" and workload.benchmark:
                set_condition(
                    status,
                    generation,
                    "BenchmarkCompleted",
                    "False",
                    "BenchmarkRunning",
                    "startup benchmark is running",
                )
                set_condition(
                    status,
                    generation,
                    "WorkspaceSucceeded",
                    "False",
                    "workspacePending",
                    "workspace is waiting for the startup benchmark",
                )

        self.last_error = ""
        self.update_status(ready)
        self.event("Normal", "InferenceReady", "Inference has been deployed successfully")
        return "ready"

    def _crash(
        self,
        leader_log: ContainerLog,
        logs: dict[str, ContainerLog],
        started_at: str,
        reason: str,
        exit_code: int,
        short: str,
        detail: str,
        container: str,
    ) -> None:
        for pod_name in logs:
            self.ctl.runtime.terminate(self.namespace, pod_name, container)
        leader_log.freeze()
        finished = now_rfc3339()
        terminated = {
            "exitCode": exit_code,
            "reason": reason,
            "message": short,
            "startedAt": started_at,
            "finishedAt": finished,
        }
        leader = self.pod_names[0] if self.pod_names else ""
        for pod_name in self.pod_names:
            message = (
                f"back-off 40s restarting failed container={self.name} "
                f"pod={pod_name}_{self.namespace}"
            )
            self._set_container_state(
                pod_name,
                {"waiting": {"reason": "CrashLoopBackOff", "message": message}},
                restarted=terminated,
                phase="Running",
            )
            self._pod_event(pod_name, "Warning", "BackOff", "Back-off restarting failed container")
        self._report_not_ready(
            f"pod {leader} is in CrashLoopBackOff: last termination {reason} (exit code "
            f"{exit_code}): {detail}"
        )
        self.event("Warning", "InferenceNotReady", f"pod {leader} crashed: {detail}")

    async def _start_server(self, workload: WorkloadPlan, leader: str) -> Any:
        try:
            from kaitosim.inference import InferenceSpec, start_inference_server
        except ImportError:
            return None
        plan = workload.plan
        spec = InferenceSpec(
            served_model=workload.served_model,
            runtime=workload.runtime,
            instance_type=workload.sku.sku,
            gpu_count=workload.sku.gpu_count,
            nodes=workload.nodes,
            max_model_len=plan.max_model_len if plan is not None and plan.max_model_len else 4096,
            max_concurrency=256,
            speed=self.ctl.clock.speed,
            pod_name=leader,
            container_port=INFERENCE_PORT,
        )
        try:
            server = await start_inference_server(spec)
        except Exception:
            logger.exception(
                "inference server for %s/%s failed to start", self.namespace, self.name
            )
            return None
        self._servers.append(server)
        return server

    async def _benchmark(self, workload: WorkloadPlan) -> None:
        profile = self.ctl.clock.profile
        await self.sleep(profile.benchmark)
        server = self._servers[-1] if self._servers else None
        if server is None:
            return
        lines = list(server.benchmark_log_lines()) if hasattr(server, "benchmark_log_lines") else []
        if self._leader_log is not None and lines:
            self._leader_log.write_after_live(*lines)
        peak = int(server.peak_tokens_per_minute())
        config = _benchmark_config(lines)
        metric: dict[str, Any] = {
            "description": BENCHMARK_DESCRIPTION,
            "value": str(peak),
            "unit": "tokens/min",
        }
        if config:
            metric["config"] = config
        self.performance = {"metrics": {"peakTokensPerMinute": metric}}

        def completed(status: dict[str, Any], generation: int) -> None:
            status["performance"] = copy.deepcopy(self.performance)
            set_condition(
                status,
                generation,
                "BenchmarkCompleted",
                "True",
                "BenchmarkCompleted",
                "benchmark result has been recorded",
            )

        self.update_status(completed)
        self.event(
            "Normal",
            "BenchmarkCompleted",
            f"benchmark result has been recorded: peakTokensPerMinute={peak}",
        )

    def _succeed(self, workload: WorkloadPlan) -> None:
        def succeeded(status: dict[str, Any], generation: int) -> None:
            set_condition(
                status,
                generation,
                "WorkspaceSucceeded",
                "True",
                "workspaceSucceeded",
                "workspace succeeds",
            )
            status["state"] = "Ready"

        self.update_status(succeeded)
        self.ctl.succeeded_count += 1
        self.event("Normal", "WorkspaceSucceeded", "workspace succeeds")

    async def _run_tuning(self, workload: WorkloadPlan) -> None:
        def started(status: dict[str, Any], generation: int) -> None:
            set_condition(
                status,
                generation,
                "JobStarted",
                "True",
                "WorkspaceTuningJobStatusStarted",
                "Tuning job has started",
            )
            set_condition(
                status,
                generation,
                "WorkspaceSucceeded",
                "False",
                "workspacePending",
                "workspace has not completed yet, tuning job is running",
            )
            status["state"] = "Running"

        self.update_status(started)
        await self.sleep(self.ctl.clock.profile.engine_warm_up + self.ctl.clock.profile.benchmark)

        def done(status: dict[str, Any], generation: int) -> None:
            set_condition(
                status,
                generation,
                "WorkspaceSucceeded",
                "True",
                "workspaceSucceeded",
                "workspace succeeds",
            )
            status["state"] = "Succeeded"

        self.update_status(done)
        self.event("Normal", "WorkspaceSucceeded", "workspace succeeds")

    async def _monitor(self, workload: WorkloadPlan) -> None:
        if "node-lost" in workload.faults and self.node_names:
            profile = self.ctl.clock.profile
            await self.sleep(profile.node_lost_after)
            await self._lose_node(workload)
            await self.sleep(profile.node_lost_for)
            await self._recover_node(workload)
        await asyncio.Event().wait()

    async def _lose_node(self, workload: WorkloadPlan) -> None:
        node_name = self.node_names[0]
        node = self.cluster.find(self.ctl.nodes, "", node_name)
        if node is not None:
            node["status"]["conditions"] = provisioner.node_conditions(
                None, "NodeStatusUnknown", "Kubelet stopped posting node status."
            )
            node["spec"]["taints"] = [
                *(node["spec"].get("taints") or []),
                {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"},
                {
                    "key": "node.kubernetes.io/unreachable",
                    "effect": "NoExecute",
                    "timeAdded": now_rfc3339(),
                },
            ]
            self.cluster.update(self.ctl.nodes, "", node_name, node, internal=True)
            self.ctl.events.record(
                node,
                "Normal",
                "NodeNotReady",
                f"Node {node_name} status is now: NodeNotReady",
                "node-controller",
            )
        for pod_name in self.pod_names:
            self._set_container_state(
                pod_name, {"running": {"startedAt": now_rfc3339()}}, ready=False
            )
            self._pod_event(pod_name, "Warning", "NodeNotReady", "Node is not ready")
        self._sync_workload_status(0)

        def lost(status: dict[str, Any], generation: int) -> None:
            set_condition(
                status,
                generation,
                "NodesReady",
                "False",
                "NodeNotReady",
                "Not enough Nodes are ready",
            )
            set_condition(
                status,
                generation,
                "ResourceReady",
                "False",
                "NodeNotReady",
                "Not enough Nodes are ready",
            )
            set_condition(
                status,
                generation,
                "InferenceReady",
                "False",
                "WorkspaceInferenceStatusPending",
                f"Inference workload is not ready: node {node_name} is NotReady (Kubelet "
                "stopped posting node status.)",
            )
            set_condition(
                status,
                generation,
                "WorkspaceSucceeded",
                "False",
                "workspacePending",
                "workspace is waiting for inference workload readiness",
            )
            remove_condition(status, "BenchmarkCompleted")
            status.pop("performance", None)
            status["state"] = "NotReady"

        self.update_status(lost)
        self.event(
            "Warning", "NodeNotReady", f"node {node_name} is NotReady; inference is unavailable"
        )

    async def _recover_node(self, workload: WorkloadPlan) -> None:
        node_name = self.node_names[0]
        node = self.cluster.find(self.ctl.nodes, "", node_name)
        if node is not None:
            node["status"]["conditions"] = provisioner.node_conditions(
                True, "KubeletReady", "kubelet is posting ready status"
            )
            node["spec"]["taints"] = [
                t
                for t in node["spec"].get("taints") or []
                if t.get("key") != "node.kubernetes.io/unreachable"
            ]
            self.cluster.update(self.ctl.nodes, "", node_name, node, internal=True)
            self.ctl.events.record(
                node,
                "Normal",
                "NodeReady",
                f"Node {node_name} status is now: NodeReady",
                KUBELET_COMPONENT,
                node_name,
            )
        for pod_name in self.pod_names:
            self._set_container_state(
                pod_name, {"running": {"startedAt": now_rfc3339()}}, ready=True
            )
        self._sync_workload_status(len(self.pod_names))

        def recovered(status: dict[str, Any], generation: int) -> None:
            set_condition(
                status, generation, "NodesReady", "True", "NodesReady", "Enough Nodes are ready"
            )
            set_condition(
                status,
                generation,
                "ResourceReady",
                "True",
                "workspaceResourceStatusSuccess",
                "workspace resource is ready",
            )
            set_condition(
                status,
                generation,
                "InferenceReady",
                "True",
                "WorkspaceInferenceStatusSuccess",
                "Inference has been deployed successfully",
            )
            if self.performance is not None:
                status["performance"] = copy.deepcopy(self.performance)
                set_condition(
                    status,
                    generation,
                    "BenchmarkCompleted",
                    "True",
                    "BenchmarkCompleted",
                    "benchmark result has been recorded",
                )
            set_condition(
                status,
                generation,
                "WorkspaceSucceeded",
                "True",
                "workspaceSucceeded",
                "workspace succeeds",
            )
            status["state"] = "Ready"

        self.update_status(recovered)
        self.event(
            "Normal", "InferenceReady", f"node {node_name} is Ready again; inference recovered"
        )

    # ---------------------------------------------------------------- deletion
    async def finalize(self) -> None:
        """KAITO's garbage collection: workload, Services, NodeClaims/Nodes, then the finalizer."""
        if self._task is not None and not self._task.done():
            with contextlib.suppress(BaseException):
                await self._task

        def deleting(status: dict[str, Any], generation: int) -> None:
            set_condition(
                status,
                generation,
                "WorkspaceDeleting",
                "True",
                "workspaceDeleted",
                "workspace is being deleted",
            )

        with contextlib.suppress(ApiError):
            self.update_status(deleting)
        self.event(
            "Normal", "WorkspaceDeleting", "workspace is being deleted; cleaning up its resources"
        )
        profile = self.ctl.clock.profile
        await self._stop_servers()
        selector_pods, _ = self.cluster.list(self.ctl.pods, self.namespace)
        for pod in selector_pods:
            labels = pod["metadata"].get("labels") or {}
            if labels.get(provisioner.WORKSPACE_LABEL) != self.name:
                continue
            pod_name = pod["metadata"]["name"]
            self._pod_event(pod_name, "Normal", "Killing", f"Stopping container {self.name}")
            self.ctl.runtime.forget_pod(self.namespace, pod_name)
            with contextlib.suppress(ApiError):
                self.cluster.delete(self.ctl.pods, self.namespace, pod_name, internal=True)
        for resource in (self.ctl.statefulsets, self.ctl.deployments):
            with contextlib.suppress(ApiError):
                self.cluster.delete(resource, self.namespace, self.name, internal=True)
        for service_name in (self.name, f"{self.name}-headless"):
            with contextlib.suppress(ApiError):
                self.cluster.delete(self.ctl.services, self.namespace, service_name, internal=True)
        await self.sleep(profile.deletion * 0.3)
        claims, _ = self.cluster.list(self.ctl.nodeclaims, None)
        owned = [
            c
            for c in claims
            if (c["metadata"].get("labels") or {}).get(provisioner.WORKSPACE_LABEL) == self.name
            and (c["metadata"].get("labels") or {}).get(provisioner.WORKSPACE_NAMESPACE_LABEL)
            == self.namespace
        ]
        for claim in owned:
            with contextlib.suppress(ApiError):
                self.cluster.delete(
                    self.ctl.nodeclaims, "", claim["metadata"]["name"], internal=True
                )
            self.event(
                "Normal",
                "NodeClaimDeleted",
                f"Deleting NodeClaim {claim['metadata']['name']} of workspace "
                f"{self.namespace}/{self.name}",
            )
        await self.sleep(profile.deletion * 0.7)
        for claim in owned:
            node_name = (claim.get("status") or {}).get("nodeName")
            if node_name:
                self._remove_finalized(self.ctl.nodes, node_name)
            self._remove_finalized(self.ctl.nodeclaims, claim["metadata"]["name"])
        workspace = self.cluster.find(self.ctl.workspaces, self.namespace, self.name)
        if workspace is None or workspace["metadata"].get("uid") != self.uid:
            return
        workspace["metadata"]["finalizers"] = [
            f for f in workspace["metadata"].get("finalizers") or [] if f != WORKSPACE_FINALIZER
        ]
        with contextlib.suppress(ApiError):
            self.cluster.update(
                self.ctl.workspaces, self.namespace, self.name, workspace, internal=True
            )
        self.ctl.forget(self.uid)

    def _remove_finalized(self, resource: Any, name: str) -> None:
        obj = self.cluster.find(resource, "", name)
        if obj is None:
            return
        if not obj["metadata"].get("deletionTimestamp"):
            with contextlib.suppress(ApiError):
                self.cluster.delete(resource, "", name, internal=True)
            obj = self.cluster.find(resource, "", name)
            if obj is None:
                return
        if resource is self.ctl.nodes:
            self.ctl.events.record(
                obj,
                "Normal",
                "RemovingNode",
                f"Node {name} event: Removing Node {name} from Controller",
                "node-controller",
            )
        obj["metadata"]["finalizers"] = [
            f
            for f in obj["metadata"].get("finalizers") or []
            if f != provisioner.NODECLAIM_FINALIZER
        ]
        with contextlib.suppress(ApiError):
            self.cluster.update(resource, "", name, obj, internal=True)

    async def _stop_servers(self) -> None:
        servers, self._servers = self._servers, []
        for pod_name in self.pod_names:
            self.ctl.runtime.set_backend(self.namespace, pod_name, None)
        if self._leader_log is not None:
            self._leader_log.freeze()
        for server in servers:
            with contextlib.suppress(Exception):
                await server.stop()


def _karpenter_conditions_unknown() -> list[dict[str, Any]]:
    now = now_rfc3339()
    return [
        {
            "type": condition_type,
            "status": "Unknown",
            "reason": "AwaitingReconciliation",
            "message": "object is awaiting reconciliation",
            "lastTransitionTime": now,
            "observedGeneration": 1,
        }
        for condition_type in ("Launched", "Registered", "Initialized", "Ready")
    ]


def _set_karpenter_condition(
    conditions: list[dict[str, Any]], condition_type: str, value: str, reason: str, message: str
) -> None:
    now = now_rfc3339()
    for condition in conditions:
        if condition.get("type") == condition_type:
            if condition.get("status") != value:
                condition["lastTransitionTime"] = now
            condition.update({"status": value, "reason": reason, "message": message})
            return
    conditions.append(
        {
            "type": condition_type,
            "status": value,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now,
            "observedGeneration": 1,
        }
    )


def _served_model_of_template(template: dict[str, Any], fallback: str) -> str:
    containers = (template.get("spec") or {}).get("containers") or []
    for container in containers:
        for env in container.get("env") or []:
            if env.get("name") in ("MODEL_ID", "MODEL_NAME", "MODEL") and env.get("value"):
                return str(env["value"])
        arguments = [
            str(a) for a in (container.get("args") or []) + (container.get("command") or [])
        ]
        for index, argument in enumerate(arguments):
            if argument.startswith("--model_id=") or argument.startswith("--model="):
                return argument.split("=", 1)[1]
            if argument in ("--model_id", "--model") and index + 1 < len(arguments):
                return arguments[index + 1]
            if " --model_id " in argument or " --model " in argument:
                words = argument.split()
                for position, word in enumerate(words[:-1]):
                    if word in ("--model_id", "--model"):
                        return words[position + 1]
    return fallback


def _template_port(template: dict[str, Any]) -> int | None:
    for container in (template.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if isinstance(port.get("containerPort"), int):
                return int(port["containerPort"])
    return None


def _image_size(workload: WorkloadPlan) -> int:
    if (
        workload.preset is not None
        and not workload.preset.download_at_runtime
        and workload.plan is not None
    ):
        return int(workload.plan.weights_gib * 1024**3 + 9_500_000_000)
    return 9_487_313_408


def _benchmark_config(lines: list[str]) -> dict[str, str]:
    for line in lines:
        if "KAITO_BENCHMARK_CONFIG" in line:
            payload = line.split(" ", 2)[-1]
            try:
                parsed = json.loads(payload)
            except ValueError:
                return {}
            return {
                "durationSec": str(parsed.get("duration_sec", "")),
                "inputTokens": str(parsed.get("input_tokens", "")),
                "outputTokens": str(parsed.get("output_tokens", "")),
                "maxConcurrency": str(parsed.get("max_concurrency", "")),
            }
    return {}
