"""Writes for deployments: launch, follow, tear down, take over, discover, reconcile.

Every function that talks to the cluster is safe to run twice or after a crash:

- `deployment_launch` creates the Namespace, Secret, ConfigMap and Workspace, each labelled with
  the deployment's uid. A 409 AlreadyExists on an object carrying our uid means an earlier
  attempt made it: adopt it and go on. One that is not ours fails the launch clearly.
- `deployment_sync` reads the cluster and writes the row with a status guard (an UPDATE ...
  WHERE status = the status it read), so it never overwrites a teardown requested meanwhile.
- `deployment_teardown` deletes what carries our uid; the sync that follows confirms that the
  Workspace, its NodeClaims and its nodes are gone, re-deletes a Workspace that a late launch
  made after the teardown began, and deletes a Secret or ConfigMap that a teardown which died
  half-way left behind.
- A status change and its audit line are written in one transaction: once each, never lost.

Services refuse work in the wrong status (`DeploymentRefused`), which makes retries harmless.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import kombu.exceptions
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.models import AuditEntry
from apps.audit.services import acting_user, audit_record
from apps.catalog.models import GpuVmSize, KaitoModel
from apps.catalog.selectors import vm_specs
from apps.catalog.sizing import DEFAULT_MAX_TOKENS, DEFAULT_UTILIZATION, size_over
from apps.clusters import kube
from apps.clusters.models import Cluster
from apps.clusters.services import cluster_reached
from apps.deployments import manifests, timeline
from apps.deployments.failures import Failure, failure_of
from apps.deployments.models import Deployment
from kaitoweb.env import env_int, env_str

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

    Actor = AbstractBaseUser | AnonymousUser | None

logger = logging.getLogger(__name__)

Status = Deployment.Status
KAITO_WORKSPACE_LABEL = "kaito.sh/workspace"
KAITO_WORKSPACE_NAMESPACE_LABEL = "kaito.sh/workspacenamespace"
INFERENCE_PORT = 80
EVENTS_KEPT = 60
LOG_LINES = 60

# How often a moving deployment is re-read (seconds), and when the reconcile takes over a launch,
# teardown or follow that nobody finished (a worker died, a message was lost).
FOLLOW_SECONDS = float(env_str("DEPLOYMENTS_FOLLOW_SECONDS", "2") or 2)
STALE_SECONDS = env_int("DEPLOYMENTS_STALE_SECONDS", 30)
# How long, on a real cluster, teardown waits for KAITO to remove NodeClaims and nodes before it
# reports what is left (still billing); divided by the cluster's clock speed.
TEARDOWN_NODES_GRACE = 15 * 60


class DeploymentRefused(Exception):
    """The service will not do this (wrong status, not ours, bad input); the message says why."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def _enqueue(task_name: str, deployment_id: int, **kwargs: Any) -> None:
    """Send a deployments task once the current transaction commits (the row is visible).

    A broker that does not answer is not an error the user must see: the row is saved, and the
    reconcile (Celery beat) sends what a pending, deleting or moving row needs once it is
    back (after DEPLOYMENTS_STALE_SECONDS)."""
    from apps.deployments import tasks

    task = getattr(tasks, task_name)
    countdown = kwargs.pop("countdown", None)

    def send() -> None:
        try:
            task.apply_async((deployment_id,), kwargs or None, countdown=countdown)
        except (kombu.exceptions.OperationalError, OSError) as error:
            logger.warning(
                "deployment %s: could not queue %s (%s: %s); the reconcile will take it over",
                deployment_id,
                task_name,
                type(error).__name__,
                error,
            )

    transaction.on_commit(send)


def _audit(
    deployment: Deployment, action: str, outcome: str, *, actor: Actor = None, detail: str = ""
) -> None:
    """One audit line about this deployment (its Workspace and cluster named)."""
    audit_record(
        actor=actor,
        action=action,
        outcome=outcome,
        target=deployment.target,
        cluster_name=deployment.cluster.name,
        detail=detail,
    )


def _follow_start(deployment_id: int) -> None:
    """Start a chain of syncs for a moving deployment; a newer chain supersedes this one."""
    token = uuid.uuid4().hex
    Deployment.objects.filter(pk=deployment_id).update(follow_token=token)
    _enqueue("deployment_sync", deployment_id, follow=token, countdown=FOLLOW_SECONDS)


# ------------------------------------------------------------------------------- validation
@dataclass
class DryRunReport:
    """A server-side dry run of a bundle: every object validated by the API server and KAITO."""

    ok: bool = False
    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unreachable: bool = False


def bundle_dry_run(*, cluster: Cluster, bundle: manifests.Bundle) -> DryRunReport:
    """Validate each object with dryRun=All, in apply order; nothing is stored.

    KAITO's webhook looks the inference ConfigMap up in the cluster, and a dry run cannot create
    it first: when the bundle brings that ConfigMap, the Workspace is checked without the
    reference (the ConfigMap itself is validated on its own, and KAITO checks the reference when
    the launch applies it). A namespace that does not exist yet is created by the launch; its
    objects are checked in the cluster's default namespace meanwhile.
    """
    report = DryRunReport()
    namespace = bundle.workspace["metadata"]["namespace"]
    try:
        with kube.Kube(cluster.credentials, timeout=(5.0, 20.0)) as api:
            check_namespace = namespace
            try:
                api.object_get("Namespace", "", namespace)
            except kube.NotFound:
                api.object_create(
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
                    dry_run=True,
                )
                check_namespace = "default"
                report.notes.append(
                    f"Namespace {namespace} does not exist yet; the launch creates it. Its "
                    f"objects were checked in namespace {check_namespace}."
                )
            except kube.Forbidden:
                report.notes.append(
                    f"Could not read namespace {namespace} (forbidden); assuming it exists."
                )
            config_names = {o["metadata"]["name"] for o in bundle.of_kind("ConfigMap")}
            for obj in bundle.objects:  # Secret values masked: a dry run needs no real token
                checked = json.loads(json.dumps(obj))
                checked["metadata"]["namespace"] = check_namespace
                inference = checked.get("inference") or {}
                if checked["kind"] == "Workspace" and inference.get("config") in config_names:
                    inference.pop("config")
                label = f"{obj['kind']} {obj['metadata']['name']}"
                try:
                    api.object_create(checked, namespace=check_namespace, dry_run=True)
                    report.checked.append(label)
                except kube.Conflict as error:
                    if error.already_exists:
                        report.notes.append(
                            f"{label} already exists; the launch adopts it only if kaitoweb made "
                            "it for this deployment, and refuses otherwise."
                        )
                        report.problems.append(
                            f"{label} already exists in namespace {namespace}: pick another name."
                        )
                    else:
                        report.problems.append(f"{label}: {error.message}")
                except (kube.Invalid, kube.Forbidden, kube.NotFound) as error:
                    report.problems.append(f"{label}: {error.message}")
    except kube.TransientError as error:
        report.unreachable = True
        report.problems.append(f"The cluster did not answer: {error.message}")
    except kube.KubeError as error:
        report.problems.append(error.message)
    report.ok = not report.problems
    return report


# ------------------------------------------------------------------------------------ launch
def _name_is_free(cluster: Cluster, namespace: str, name: str) -> bool:
    return (
        not Deployment.objects.filter(cluster=cluster, namespace=namespace, name=name)
        .exclude(status__in=Deployment.GONE_STATUSES)
        .exists()
    )


def deployment_name_propose(*, cluster: Cluster, namespace: str, base: str) -> str:
    """A DNS-1123 name from `base` that no live deployment in the namespace uses."""
    stem = manifests.dns_label(base, manifests.WORKSPACE_NAME_MAX - 4)
    if _name_is_free(cluster, namespace, stem):
        return stem
    for n in range(2, 1000):
        candidate = f"{stem}-{n}"
        if _name_is_free(cluster, namespace, candidate):
            return candidate
    return f"{stem}-{uuid.uuid4().hex[:6]}"


@transaction.atomic
def deployment_request(
    *,
    cluster: Cluster,
    bundle: manifests.Bundle,
    deployment_uid: str,
    source: str,
    kaito_model: KaitoModel | None = None,
    settings: manifests.InferenceSettings | None = None,
    actor: Actor = None,
) -> Deployment:
    """Record a launch (status pending) and queue it. The bundle was validated by a dry run."""
    workspace = bundle.workspace
    facts = manifests.workspace_facts(workspace)
    name = workspace["metadata"]["name"]
    namespace = workspace["metadata"]["namespace"]
    if not _name_is_free(cluster, namespace, name):
        raise DeploymentRefused(
            f"a deployment named {name} is already live in namespace {namespace}", field="name"
        )
    try:
        with transaction.atomic():
            deployment = Deployment.objects.create(
                uid=uuid.UUID(deployment_uid),
                cluster=cluster,
                source=source,
                name=name,
                namespace=namespace,
                kaito_model=kaito_model,
                model_name=facts["model_name"],
                vm_size=facts["vm_size"],
                node_count=facts["node_count"],
                runtime=facts["runtime"],
                load_balancer=facts["load_balancer"],
                uses_hf_secret=facts["uses_hf_secret"],
                inference_settings=(settings or manifests.InferenceSettings()).as_dict(),
                manifests=bundle.to_yaml(),
                secret_values=json.dumps(bundle.secret_values) if bundle.secret_values else "",
                launched_by=acting_user(actor),
                launch_requested_at=timezone.now(),
            )
    except IntegrityError:
        raise DeploymentRefused(
            f"a deployment named {name} is already live in namespace {namespace}", field="name"
        ) from None
    audit_record(
        actor=actor,
        action="deployment.launch",
        outcome=AuditEntry.Outcome.REQUESTED,
        target=deployment.target,
        cluster_name=cluster.name,
        detail=f"{deployment.model_name} on {deployment.node_count}x {deployment.vm_size} "
        f"({deployment.get_source_display()})",
    )
    _enqueue("deployment_launch", deployment.pk)
    return deployment


def _owned_by(obj: dict[str, Any], deployment: Deployment) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(manifests.DEPLOYMENT_LABEL) == str(deployment.uid)


def _apply(
    api: kube.Kube, obj: dict[str, Any], deployment: Deployment
) -> tuple[dict[str, Any], bool]:
    """Create `obj`; on AlreadyExists adopt it if it carries our uid. (object, created)."""
    kind, name, namespace = obj["kind"], obj["metadata"]["name"], deployment.namespace
    try:
        return api.object_create(obj, namespace=namespace), True
    except kube.Conflict as error:
        if not error.already_exists:
            raise
    existing = api.object_get(kind, namespace, name)
    if not _owned_by(existing, deployment):
        raise DeploymentRefused(
            f"{kind} {name} already exists in namespace {namespace} and was not made by this "
            "deployment; launch under another name, or take the existing Workspace over from "
            "the cluster page"
        )
    if kind in ("ConfigMap", "Secret"):
        replacement = json.loads(json.dumps(obj))
        replacement["metadata"]["resourceVersion"] = existing["metadata"].get("resourceVersion")
        return api.object_replace(replacement, namespace=namespace), False
    return existing, False


def deployment_launch(*, deployment_id: int) -> Deployment:
    """Apply the bundle of a pending deployment (idempotent; see the module docstring)."""
    deployment = Deployment.objects.select_related("cluster").get(pk=deployment_id)
    if deployment.status != Status.PENDING:
        logger.info("launch of %s skipped: it is %s", deployment, deployment.status)
        return deployment
    Deployment.objects.filter(pk=deployment.pk).update(synced_at=timezone.now())  # heartbeat
    values = json.loads(deployment.secret_values) if deployment.secret_values else {}
    bundle = manifests.bundle_from_yaml(deployment.manifests, values)
    workspace: dict[str, Any] | None = None
    try:
        with kube.Kube(deployment.cluster.credentials) as api:
            try:
                api.object_get("Namespace", "", deployment.namespace)
            except kube.NotFound:
                with contextlib.suppress(kube.Conflict):
                    api.object_create(
                        {
                            "apiVersion": "v1",
                            "kind": "Namespace",
                            "metadata": {
                                "name": deployment.namespace,
                                "labels": {manifests.MANAGED_BY_LABEL: manifests.MANAGED_BY},
                            },
                        }
                    )
            try:
                objects = bundle.with_secrets()
            except manifests.ManifestError as error:
                raise DeploymentRefused(str(error)) from None
            for obj in objects:
                if obj["kind"] == "Workspace":
                    if Deployment.objects.filter(pk=deployment.pk, status=Status.PENDING).exists():
                        workspace, _ = _apply(api, obj, deployment)
                else:
                    _apply(api, obj, deployment)
    except (
        DeploymentRefused,
        kube.Invalid,
        kube.Forbidden,
        kube.Unauthorized,
        kube.NotFound,
        kube.Conflict,
        kube.KubeconfigInvalid,
    ) as error:
        message = getattr(error, "message", str(error))
        _cleanup_after_refusal(deployment)
        return _launch_failed(
            deployment, "refused", message, "Fix what the message names, then launch again."
        )
    if workspace is None:  # a teardown was requested while the launch ran
        return Deployment.objects.get(pk=deployment.pk)
    launched_at = timeline.parse_time(workspace["metadata"].get("creationTimestamp"))
    with transaction.atomic():  # the row's new status and its audit line, or neither
        updated = Deployment.objects.filter(pk=deployment.pk, status=Status.PENDING).update(
            status=Status.PROVISIONING,
            status_changed_at=timezone.now(),
            workspace_uid=str(workspace["metadata"].get("uid") or ""),
            launched_at=launched_at or timezone.now(),
            secret_values="",
            sync_error="",
        )
        deployment.refresh_from_db()
        if updated:
            _audit(
                deployment,
                "deployment.launch",
                AuditEntry.Outcome.OK,
                actor=deployment.launched_by,
                detail=f"Workspace {deployment.target} applied (uid {deployment.workspace_uid})",
            )
        _follow_start(deployment.pk)
    return deployment


def _cleanup_after_refusal(deployment: Deployment) -> None:
    """Half a bundle must not stay behind: delete every Secret and ConfigMap carrying our uid
    (this attempt's and any earlier one's). A Workspace that is not ours is never touched."""
    with contextlib.suppress(kube.KubeError), kube.Kube(deployment.cluster.credentials) as api:
        _delete_owned_config(api, deployment)


def _delete_owned_config(api: kube.Kube, deployment: Deployment) -> list[str]:
    """Delete every Secret and ConfigMap carrying the deployment's uid; what was deleted."""
    selector = f"{manifests.DEPLOYMENT_LABEL}={deployment.uid}"
    deleted = []
    for kind in ("Secret", "ConfigMap"):
        for obj in api.objects_list(kind, deployment.namespace, label_selector=selector):
            if api.object_delete(kind, deployment.namespace, obj["metadata"]["name"]):
                deleted.append(f"{kind} {obj['metadata']['name']}")
    return deleted


@transaction.atomic
def _launch_failed(deployment: Deployment, reason: str, message: str, next_step: str) -> Deployment:
    updated = Deployment.objects.filter(pk=deployment.pk, status=Status.PENDING).update(
        status=Status.FAILED,
        status_changed_at=timezone.now(),
        failure_reason=reason,
        failure_message=message,
        next_step=next_step,
        secret_values="",
    )
    deployment.refresh_from_db()
    if updated:
        _audit(
            deployment,
            "deployment.launch",
            AuditEntry.Outcome.FAILED,
            actor=deployment.launched_by,
            detail=message,
        )
    return deployment


def deployment_launch_give_up(*, deployment_id: int, error: str) -> Deployment:
    """The launch's retries are spent and the cluster still does not answer."""
    deployment = Deployment.objects.select_related("cluster").get(pk=deployment_id)
    return _launch_failed(
        deployment,
        "unreachable",
        f"The cluster did not answer while launching: {error}",
        "Check the cluster's connection (Clusters > Check connection), then launch again.",
    )


# -------------------------------------------------------------------------------------- sync
@dataclass
class Snapshot:
    workspace: dict[str, Any] | None
    pods: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    nodeclaims: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    service: dict[str, Any] | None = None
    log_tail: str = ""


def _snapshot(api: kube.Kube, deployment: Deployment) -> Snapshot:
    try:
        workspace = api.workspace_get(deployment.namespace, deployment.name)
    except kube.NotFound:
        workspace = None
    selector = (
        f"{KAITO_WORKSPACE_LABEL}={deployment.name},"
        f"{KAITO_WORKSPACE_NAMESPACE_LABEL}={deployment.namespace}"
    )
    claims = api.nodeclaims(selector)
    if workspace is None:
        nodes = api.nodes(
            list(deployment.worker_nodes)
            + [
                str((c.get("status") or {}).get("nodeName"))
                for c in claims
                if (c.get("status") or {}).get("nodeName")
            ]
        )
        return Snapshot(workspace=None, nodeclaims=claims, nodes=nodes)
    worker_nodes = list((workspace.get("status") or {}).get("workerNodes") or [])
    pods = api.pods(deployment.namespace, f"{KAITO_WORKSPACE_LABEL}={deployment.name}")
    pod_names = {p["metadata"]["name"] for p in pods}
    claim_names = {c["metadata"]["name"] for c in claims}
    involved = {deployment.name} | pod_names
    events = [
        e
        for e in api.events(deployment.namespace)
        if (e.get("involvedObject") or {}).get("name") in involved
    ]
    if claim_names or worker_nodes:
        node_scope = claim_names | set(worker_nodes)
        events += [
            e
            for e in api.events("default")
            if (e.get("involvedObject") or {}).get("name") in node_scope and e not in events
        ]
    events.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    service = None
    with contextlib.suppress(kube.NotFound):
        service = api.service_get(deployment.namespace, deployment.name)
    return Snapshot(
        workspace=workspace,
        pods=pods,
        events=events[-EVENTS_KEPT:],
        nodeclaims=claims,
        nodes=api.nodes(worker_nodes),
        service=service,
        log_tail=_log_tail(api, deployment, pods),
    )


def _log_tail(api: kube.Kube, deployment: Deployment, pods: list[dict[str, Any]]) -> str:
    """The leader pod's log tail; the crashed container's when it is restarting."""
    if not pods:
        return ""
    pods = sorted(pods, key=lambda p: p["metadata"]["name"])
    leader = next(
        (
            p
            for p in pods
            if (p["metadata"].get("labels") or {}).get("apps.kubernetes.io/pod-index") == "0"
        ),
        pods[0],
    )
    statuses = (leader.get("status") or {}).get("containerStatuses") or []
    containers = [c.get("name") for c in (leader.get("spec") or {}).get("containers") or []]
    first = statuses[0] if statuses else {}
    crashed = bool((first.get("lastState") or {}).get("terminated")) and not first.get("ready")
    try:
        return api.pod_log(
            deployment.namespace,
            leader["metadata"]["name"],
            tail=LOG_LINES,
            previous=crashed,
            container=containers[0] if containers else None,
        )
    except kube.Invalid as error:  # 400: the container is not running yet
        return f"({error.message})"
    except kube.NotFound:
        return ""


def _sizing_hint(deployment: Deployment, *, other_family: bool) -> str:
    """VM sizes that fit this model by KAITO's sizing, cheapest first."""
    model = deployment.kaito_model
    if model is None:
        return ""
    settings = deployment.inference_settings or {}
    vms = list(GpuVmSize.objects.filter(gpu_count__gt=0))
    rows = size_over(
        model.sizing_spec(),
        vm_specs(vms),
        max_tokens=int(settings.get("max_model_len") or DEFAULT_MAX_TOKENS),
        utilization=float(settings.get("gpu_memory_utilization") or DEFAULT_UTILIZATION),
    )
    family = deployment.vm_size.rsplit("_", 1)[0]
    picks = [
        r
        for r in rows
        if r.fits
        and r.price_per_hour is not None
        and r.sku != deployment.vm_size
        and (not other_family or not r.sku.startswith(family))
    ][:3]
    if not picks:
        return ""
    return (
        " VM sizes that fit by KAITO's sizing: "
        + "; ".join(
            f"{r.sku} ({r.nodes} node{'s' if r.nodes > 1 else ''}, ${r.price_per_hour:,.2f}/h)"
            for r in picks
        )
        + "."
    )


def _explain(deployment: Deployment, failure: Failure) -> tuple[str, str]:
    next_step = failure.next_step
    if failure.reason == "oom":
        next_step += _sizing_hint(deployment, other_family=False)
    elif failure.reason in ("quota", "capacity"):
        next_step += _sizing_hint(deployment, other_family=True)
    return failure.message, next_step


def _observed_fields(deployment: Deployment, snap: Snapshot) -> dict[str, Any]:
    """The row's new values from a snapshot of a Workspace that exists."""
    assert snap.workspace is not None
    workspace = snap.workspace
    status = workspace.get("status") or {}
    conditions = [
        {k: c.get(k) for k in ("type", "status", "reason", "message", "lastTransitionTime")}
        for c in status.get("conditions") or []
    ]
    now = timezone.now()
    benchmarked = (
        deployment.runtime == "vllm"
        and "template" not in (workspace.get("inference") or {})
        and (workspace.get("metadata", {}).get("annotations") or {})
        .get("kaito.sh/disable-benchmark", "")
        .lower()
        != "true"
    )
    spans = timeline.phase_spans(
        workspace=workspace,
        pod_names=[p["metadata"]["name"] for p in snap.pods],
        events=snap.events,
        nodes=snap.nodes,
        benchmarked=benchmarked,
        previous=deployment.timeline,
    )
    succeeded = any(c["type"] == "WorkspaceSucceeded" and c["status"] == "True" for c in conditions)
    failure = (
        None
        if succeeded
        else failure_of(
            workspace=workspace,
            nodeclaims=snap.nodeclaims,
            pods=snap.pods,
            log_tail=snap.log_tail,
            vm_size=deployment.vm_size,
        )
    )
    if succeeded:
        new_status = Status.READY
    elif failure is not None and failure.fatal:
        new_status = Status.FAILED
    else:
        new_status = Status.PROVISIONING
    stuck = None
    if new_status == Status.PROVISIONING:
        stuck = timeline.stuck_phase(spans, now, deployment.cluster.clock_speed)
    perf = ((status.get("performance") or {}).get("metrics") or {}).get("peakTokensPerMinute")
    peak = None
    with contextlib.suppress(TypeError, ValueError, AttributeError):
        peak = int(float(perf.get("value"))) if perf else None
    message, next_step = _explain(deployment, failure) if failure else ("", "")
    fields: dict[str, Any] = {
        "status": new_status,
        "workspace_uid": str(workspace["metadata"].get("uid") or ""),
        "workspace_state": str(status.get("state") or ""),
        "conditions": conditions,
        "events": [_event_row(e) for e in snap.events],
        "worker_nodes": list(status.get("workerNodes") or []),
        "nodeclaims": [c["metadata"]["name"] for c in snap.nodeclaims],
        "timeline": [s.as_json() for s in spans],
        "log_tail": snap.log_tail[-20000:],
        "endpoint_service": (snap.service or {}).get("metadata", {}).get("name", ""),
        "service_type": ((snap.service or {}).get("spec") or {}).get("type", ""),
        "peak_tokens_per_minute": peak,
        "failure_reason": failure.reason if failure else "",
        "failure_message": message,
        "next_step": next_step,
        "stuck": stuck is not None,
        "stuck_reason": (
            f"In {stuck.phase} for {_duration(stuck.seconds(now) or 0, deployment)}, past the "
            f"usual limit. Likely cause: {timeline.LIKELY_CAUSE[stuck.phase]}"
            if stuck
            else ""
        ),
    }
    if deployment.launched_at is None:
        fields["launched_at"] = timeline.parse_time(workspace["metadata"].get("creationTimestamp"))
    if new_status == Status.READY and deployment.ready_at is None:
        fields["ready_at"] = now
    return fields


def _duration(seconds: float, deployment: Deployment) -> str:
    seconds = seconds * deployment.cluster.clock_speed  # in the cluster's own time
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def _event_row(event: dict[str, Any]) -> dict[str, Any]:
    involved = event.get("involvedObject") or {}
    return {
        "time": event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp"),
        "type": event.get("type"),
        "reason": event.get("reason"),
        "object": f"{involved.get('kind', '')}/{involved.get('name', '')}",
        "message": event.get("message"),
        "count": event.get("count") or 1,
    }


def _write(deployment: Deployment, fields: dict[str, Any]) -> bool:
    """Save `fields` unless the status changed since `deployment` was read."""
    now = timezone.now()
    fields = {**fields, "synced_at": now}
    if "status" in fields and fields["status"] != deployment.status:
        fields["status_changed_at"] = now
    updated = Deployment.objects.filter(pk=deployment.pk, status=deployment.status).update(**fields)
    return bool(updated)


def deployment_sync(*, deployment_id: int) -> Deployment:
    """Bring one row up to date from the cluster."""
    deployment = Deployment.objects.select_related("cluster", "kaito_model").get(pk=deployment_id)
    if deployment.is_gone or (deployment.status == Status.FAILED and not deployment.workspace_uid):
        return deployment  # nothing of it is in the cluster
    try:
        with kube.Kube(deployment.cluster.credentials) as api:
            snap = _snapshot(api, deployment)
            fields = _sync_fields(api, deployment, snap)
    except kube.KubeError as error:
        Deployment.objects.filter(pk=deployment.pk).update(
            sync_error=f"{timezone.now():%H:%M:%S} {error.message}"
        )
        deployment.refresh_from_db()
        return deployment
    fields.setdefault("sync_error", "")
    before = deployment.status
    with transaction.atomic():  # a transition and its audit line are saved together, or neither
        if _write(deployment, fields):
            deployment.refresh_from_db()
            _audit_transition(deployment, before)
        else:
            deployment.refresh_from_db()
    return deployment


def _sync_fields(api: kube.Kube, deployment: Deployment, snap: Snapshot) -> dict[str, Any]:
    if deployment.status == Status.PENDING:
        if snap.workspace is not None and _owned_by(snap.workspace, deployment):
            # An earlier launch made the Workspace and died before it could say so: adopt it.
            fields = _observed_fields(deployment, snap)
            fields["secret_values"] = ""
            return fields
        return {}
    if deployment.status == Status.DELETING:
        return _teardown_progress(api, deployment, snap)
    if snap.workspace is None:
        return {
            "status": Status.ORPHANED,
            "failure_reason": "",
            "failure_message": "",
            "next_step": "",
            "stuck": False,
            "deleted_at": timezone.now(),
            "sync_error": "",
            "log_tail": deployment.log_tail,
            "workspace_state": "gone",
            "stuck_reason": "The Workspace was deleted from the cluster outside kaitoweb.",
        }
    return _observed_fields(deployment, snap)


def _teardown_progress(api: kube.Kube, deployment: Deployment, snap: Snapshot) -> dict[str, Any]:
    if snap.workspace is not None:
        if not snap.workspace["metadata"].get("deletionTimestamp"):
            api.object_delete("Workspace", deployment.namespace, deployment.name)
        fields = _observed_fields(deployment, snap)
        fields["status"] = Status.DELETING
        fields["failure_reason"] = fields["failure_message"] = fields["next_step"] = ""
        fields["stuck"] = False
        return fields
    # A teardown that died between deleting the Workspace and its Secret and ConfigMap leaves
    # them behind (a Hugging Face token among them): whichever sync sees the Workspace gone
    # finishes the job before the row may say deleted.
    leftovers = _delete_owned_config(api, deployment)
    if leftovers:
        logger.info("teardown of %s: deleted what was left: %s", deployment, leftovers)
    left = sorted(
        {n["metadata"]["name"] for n in snap.nodes}
        | {c["metadata"]["name"] for c in snap.nodeclaims}
    )
    requested = deployment.teardown_requested_at or timezone.now()
    waited = (timezone.now() - requested).total_seconds() * deployment.cluster.clock_speed
    if left and waited < TEARDOWN_NODES_GRACE:
        return {
            "nodeclaims": [c["metadata"]["name"] for c in snap.nodeclaims],
            "workspace_state": "deleted; nodes draining",
        }
    spans = timeline.spans_from_json(deployment.timeline)
    now = timezone.now()
    closed = [timeline.PhaseSpan(s.phase, s.began, s.ended or now).as_json() for s in spans]
    return {
        "status": Status.DELETED,
        "deleted_at": now,
        "workspace_state": "deleted",
        "nodes_left": left,
        "timeline": closed,
        "stuck": False,
        "stuck_reason": "",
        "failure_reason": "",
        "failure_message": "",
        "next_step": (
            f"GPU nodes or NodeClaims are still there and still billing: {', '.join(left)}. "
            "Delete them (kubectl delete nodeclaim ...) or check Karpenter's logs."
            if left
            else ""
        ),
    }


def _audit_transition(deployment: Deployment, before: str) -> None:
    if deployment.status == before:
        return
    if before == Status.PENDING and deployment.status != Status.DELETING:
        # The launch made the Workspace and died before saying so; a sync adopted it.
        _audit(
            deployment,
            "deployment.launch",
            AuditEntry.Outcome.OK,
            actor=deployment.launched_by,
            detail=f"Workspace {deployment.target} found applied after an interrupted launch "
            f"(uid {deployment.workspace_uid})",
        )
    if deployment.status == Status.FAILED:
        _audit(
            deployment,
            "deployment.failed",
            AuditEntry.Outcome.FAILED,
            detail=f"{deployment.failure_reason}: {deployment.failure_message}",
        )
    elif deployment.status == Status.READY and before != Status.READY:
        _audit(
            deployment,
            "deployment.ready",
            AuditEntry.Outcome.OK,
            detail=f"peakTokensPerMinute {deployment.peak_tokens_per_minute or 'n/a'}",
        )
    elif deployment.status == Status.DELETED:
        _audit(
            deployment,
            "deployment.teardown",
            (AuditEntry.Outcome.FAILED if deployment.nodes_left else AuditEntry.Outcome.OK),
            detail=(
                f"left behind (still billing): {', '.join(deployment.nodes_left)}"
                if deployment.nodes_left
                else "Workspace, NodeClaims and nodes are gone"
            ),
        )
    elif deployment.status == Status.ORPHANED:
        _audit(
            deployment,
            "deployment.orphaned",
            AuditEntry.Outcome.FAILED,
            detail="the Workspace was deleted outside kaitoweb",
        )


def deployment_follow(*, deployment_id: int, token: str) -> bool:
    """One step of a follow chain: sync, and say whether to go on (the chain is current and the
    deployment still moving)."""
    if not Deployment.objects.filter(pk=deployment_id, follow_token=token).exists():
        return False
    deployment = deployment_sync(deployment_id=deployment_id)
    return not deployment.settled and deployment.follow_token == token


# ---------------------------------------------------------------------------------- teardown
@transaction.atomic
def deployment_teardown_request(*, deployment: Deployment, actor: Actor = None) -> Deployment:
    deployment = Deployment.objects.select_for_update().get(pk=deployment.pk)
    if not deployment.managed:
        raise DeploymentRefused(
            "this Workspace was found in the cluster and is read-only; take it over first"
        )
    if deployment.status in (Status.DELETING, *Deployment.GONE_STATUSES):
        raise DeploymentRefused(f"the deployment is already {deployment.get_status_display()}")
    deployment.status = Status.DELETING
    deployment.status_changed_at = deployment.teardown_requested_at = timezone.now()
    deployment.save(update_fields=["status", "status_changed_at", "teardown_requested_at"])
    _audit(
        deployment,
        "deployment.teardown",
        AuditEntry.Outcome.REQUESTED,
        actor=actor,
    )
    _enqueue("deployment_teardown", deployment.pk)
    return deployment


def deployment_teardown(*, deployment_id: int) -> Deployment:
    """Delete the Workspace and the Secret and ConfigMap we made; the follow confirms the rest."""
    deployment = Deployment.objects.select_related("cluster").get(pk=deployment_id)
    if deployment.status != Status.DELETING:
        return deployment
    with kube.Kube(deployment.cluster.credentials) as api:
        api.object_delete("Workspace", deployment.namespace, deployment.name)
        _delete_owned_config(api, deployment)
    with transaction.atomic():
        _follow_start(deployment.pk)
    return deployment


# ------------------------------------------------------------------------- take over, discover
def deployment_take_over(*, deployment: Deployment, actor: Actor = None) -> Deployment:
    """An operator takes a Workspace found in the cluster over: it gets our label, and kaitoweb
    may tear it down from now on."""
    refusal = ""
    with transaction.atomic():
        deployment = (
            Deployment.objects.select_for_update().select_related("cluster").get(pk=deployment.pk)
        )
        if deployment.managed:
            raise DeploymentRefused("kaitoweb already manages this deployment")
        if deployment.is_gone or deployment.status == Status.DELETING:
            raise DeploymentRefused(f"the deployment is {deployment.get_status_display()}")
        try:
            with kube.Kube(deployment.cluster.credentials) as api:
                api.object_merge_patch(
                    "Workspace",
                    deployment.namespace,
                    deployment.name,
                    {"metadata": {"labels": {manifests.DEPLOYMENT_LABEL: str(deployment.uid)}}},
                )
        except kube.KubeError as error:
            refusal = error.message
        else:
            deployment.managed = True
            deployment.launched_by = acting_user(actor)
            deployment.save(update_fields=["managed", "launched_by"])
            _audit(
                deployment,
                "deployment.adopt",
                AuditEntry.Outcome.OK,
                actor=actor,
                detail="taken over: kaitoweb may now tear it down",
            )
    if refusal:
        # Recorded after the transaction, which the refusal below must not take the entry with.
        _audit(
            deployment,
            "deployment.adopt",
            AuditEntry.Outcome.FAILED,
            actor=actor,
            detail=refusal,
        )
        raise DeploymentRefused(f"the cluster refused: {refusal}")
    return deployment


def deployments_discover(*, cluster: Cluster, workspaces: list[dict[str, Any]]) -> list[Deployment]:
    """Rows for Workspaces in the cluster that no live row knows (read-only until taken over)."""
    live = set(
        Deployment.objects.filter(cluster=cluster)
        .exclude(status__in=Deployment.GONE_STATUSES)
        .values_list("namespace", "name")
    )
    found = []
    for workspace in workspaces:
        metadata = workspace.get("metadata") or {}
        key = (str(metadata.get("namespace")), str(metadata.get("name")))
        if key in live or metadata.get("deletionTimestamp"):
            continue
        facts = manifests.workspace_facts(workspace)
        model = KaitoModel.objects.filter(preset_name=facts["model_name"]).first() or (
            KaitoModel.objects.filter(model_id__iexact=facts["model_name"]).first()
        )
        try:
            with transaction.atomic():
                row = Deployment.objects.create(
                    cluster=cluster,
                    source=Deployment.Source.DISCOVERED,
                    managed=False,
                    name=key[1],
                    namespace=key[0],
                    kaito_model=model,
                    model_name=facts["model_name"],
                    vm_size=facts["vm_size"],
                    node_count=facts["node_count"],
                    runtime=facts["runtime"],
                    load_balancer=facts["load_balancer"],
                    uses_hf_secret=facts["uses_hf_secret"],
                    status=Status.PROVISIONING,
                    workspace_uid=str(metadata.get("uid") or ""),
                    launched_at=timeline.parse_time(metadata.get("creationTimestamp")),
                )
        except IntegrityError:
            continue  # a launch or another reconcile recorded it meanwhile
        audit_record(
            actor=None,
            action="deployment.discovered",
            outcome=AuditEntry.Outcome.OK,
            target=row.target,
            cluster_name=cluster.name,
            detail=f"{row.model_name} on {row.vm_size}; read-only until taken over",
        )
        found.append(row)
    return found


def cluster_scan(*, cluster: Cluster, follow: bool = False) -> list[Deployment]:
    """List the cluster's Workspaces now and record the unknown ones (read-only). With `follow`,
    queue a sync of each new row (the reconcile syncs every row anyway)."""
    try:
        with kube.Kube(cluster.credentials, timeout=(5.0, 20.0)) as api:
            workspaces = api.workspace_list()
    except kube.KubeError as error:
        cluster_reached(cluster=cluster, error=error.message)
        raise
    cluster_reached(cluster=cluster)
    found = deployments_discover(cluster=cluster, workspaces=workspaces)
    if follow:
        with transaction.atomic():
            for row in found:
                _enqueue("deployment_sync", row.pk)
    return found


# --------------------------------------------------------------------------------- reconcile
def deployments_reconcile(
    *, enqueue: Callable[[str, int, dict[str, Any]], None] | None = None
) -> dict[str, int]:
    """Bring every active row up to date; take over launches, teardowns and follows that nobody
    finished. Called by Celery beat; safe at any moment."""
    from apps.deployments import tasks

    def send(task_name: str, deployment_id: int, kwargs: dict[str, Any]) -> None:
        getattr(tasks, task_name).apply_async((deployment_id,), kwargs or None)

    send_task = enqueue or send
    counts = {
        "clusters": 0,
        "unreachable": 0,
        "discovered": 0,
        "synced": 0,
        "relaunched": 0,
        "teardowns": 0,
    }
    now = timezone.now()
    stale = now - timedelta(seconds=STALE_SECONDS)
    for cluster in Cluster.objects.all():
        counts["clusters"] += 1
        try:
            counts["discovered"] += len(cluster_scan(cluster=cluster))
        except kube.KubeError as error:
            counts["unreachable"] += 1
            Deployment.objects.filter(cluster=cluster).exclude(
                status__in=Deployment.GONE_STATUSES
            ).update(sync_error=f"{now:%H:%M:%S} {error.message}")
            continue
        rows = Deployment.objects.filter(cluster=cluster).exclude(
            status__in=Deployment.GONE_STATUSES
        )
        for row in rows:
            last = row.synced_at or row.launch_requested_at or row.created_at
            if row.status == Status.PENDING:
                if (row.launch_requested_at or row.created_at) < stale and last < stale:
                    Deployment.objects.filter(pk=row.pk).update(synced_at=now)
                    send_task("deployment_sync", row.pk, {})
                    send_task("deployment_launch", row.pk, {})
                    counts["relaunched"] += 1
            elif row.status == Status.DELETING and last < stale:
                send_task("deployment_teardown", row.pk, {})
                counts["teardowns"] += 1
            elif not row.settled and last < stale:
                token = uuid.uuid4().hex
                Deployment.objects.filter(pk=row.pk).update(follow_token=token)
                send_task("deployment_sync", row.pk, {"follow": token})
                counts["synced"] += 1
            else:
                send_task("deployment_sync", row.pk, {})
                counts["synced"] += 1
    return counts


# ---------------------------------------------------------------------------------------- chat
CHAT_MAX_TOKENS = 256


def deployment_chat(*, deployment: Deployment, prompt: str, actor: Actor = None) -> Iterator[str]:
    """Stream one reply from the Workspace through the API server's service proxy.

    Presets serve KAITO's OpenAI-compatible API (/v1/chat/completions, streamed as server-sent
    events); a custom pod template answers KAITO's transformers API (/chat, one JSON reply).
    """
    if deployment.status != Status.READY or not deployment.endpoint_service:
        raise DeploymentRefused("the deployment is not ready to chat")
    _audit(
        deployment,
        "deployment.chat",
        AuditEntry.Outcome.OK,
        actor=actor,
        detail=f"one prompt of {len(prompt)} characters",
    )
    return _chat_stream(deployment, prompt)


def _chat_stream(deployment: Deployment, prompt: str) -> Iterator[str]:
    template = deployment.source == Deployment.Source.TEMPLATE
    try:
        with kube.Kube(deployment.cluster.credentials) as api:
            if template:
                body: dict[str, Any] = {
                    "prompt": prompt,
                    "generate_kwargs": {"max_new_tokens": CHAT_MAX_TOKENS},
                }
                raw = b"".join(
                    api.service_proxy_stream(
                        deployment.namespace,
                        deployment.endpoint_service,
                        INFERENCE_PORT,
                        "chat",
                        body,
                    )
                )
                try:
                    answer = json.loads(raw or b"{}")
                except ValueError:
                    answer = {"Result": raw.decode("utf-8", "replace")}
                yield str(answer.get("Result") or answer)
                return
            body = {
                "model": deployment.model_name,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": CHAT_MAX_TOKENS,
                "stream": True,
            }
            buffer = b""
            for chunk in api.service_proxy_stream(
                deployment.namespace,
                deployment.endpoint_service,
                INFERENCE_PORT,
                "v1/chat/completions",
                body,
            ):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    text = _sse_delta(line)
                    if text:
                        yield text
            text = _sse_delta(buffer)
            if text:
                yield text
    except kube.KubeError as error:
        yield f"\n[the endpoint did not answer: {error.message}]"


def _sse_delta(line: bytes) -> str:
    line = line.strip()
    if not line.startswith(b"data:"):
        return ""
    payload = line[5:].strip()
    if not payload or payload == b"[DONE]":
        return ""
    try:
        event = json.loads(payload)
    except ValueError:
        return ""
    choices = event.get("choices") or []
    if not choices:
        return ""
    delta = choices[0].get("delta") or {}
    return str(delta.get("content") or choices[0].get("text") or "")
