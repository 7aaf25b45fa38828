"""Writes for cluster connections, and "Check connection"."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from apps.audit.models import AuditEntry
from apps.audit.services import acting_user, audit_record
from apps.clusters import kube
from apps.clusters.models import Cluster

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

    Actor = AbstractBaseUser | AnonymousUser | None

# How a missing permission reads in the check's report.
_KIND_WORDS = {
    kube.WORKSPACES: "Workspaces",
    "configmaps": "ConfigMaps",
    "secrets": "Secrets",
    kube.NODECLAIMS: "NodeClaims",
}


def _permission_words(verb: str, permission: kube.Permission) -> str:
    noun = _KIND_WORDS.get(permission.resource, permission.resource)
    where = "" if permission.cluster_wide else " (namespaced)"
    return f"{verb} {noun}{where}"


def _missing_permissions(api: kube.Kube, namespace: str) -> list[str]:
    """Every verb kaitoweb's calls need (kube.REQUIRED_PERMISSIONS) that the credentials lack,
    by SelfSubjectAccessReview: cluster-wide ones across all namespaces, the rest in the
    cluster's default namespace."""
    missing = []
    for permission in kube.REQUIRED_PERMISSIONS:
        resource, _, subresource = permission.resource.partition("/")
        for verb in permission.verbs:
            allowed, _reason = api.can_i(
                verb,
                resource,
                group=permission.group,
                namespace="" if permission.cluster_wide else namespace,
                subresource=subresource,
            )
            if not allowed:
                missing.append(_permission_words(verb, permission))
    return missing


class ClusterRefused(Exception):
    """A cluster change the service will not make (the message says why)."""


def _connection_fields(*, auth: str, kubeconfig: str, context: str) -> dict[str, str]:
    if auth == Cluster.Auth.IN_CLUSTER:
        return {"kubeconfig": "", "context": "", "api_server": "in-cluster"}
    try:
        contexts, current = kube.kubeconfig_contexts(kubeconfig)
    except kube.KubeconfigInvalid as exc:
        raise ClusterRefused(str(exc)) from None
    chosen = context or current
    if chosen not in contexts:
        raise ClusterRefused(
            f"the kubeconfig has no context {chosen!r}; it has: {', '.join(contexts)}"
        )
    return {
        "kubeconfig": kubeconfig,
        "context": chosen,
        "api_server": kube.kubeconfig_server(kubeconfig, chosen),
    }


@transaction.atomic
def cluster_create(
    *,
    name: str,
    auth: str = Cluster.Auth.KUBECONFIG,
    kubeconfig: str = "",
    context: str = "",
    default_namespace: str = "default",
    region: str = "",
    notes: str = "",
    clock_speed: float = 1.0,
    actor: Actor = None,
) -> Cluster:
    connection = _connection_fields(auth=auth, kubeconfig=kubeconfig, context=context)
    cluster = Cluster.objects.create(
        name=name,
        auth=auth,
        default_namespace=default_namespace or "default",
        region=region,
        notes=notes,
        clock_speed=clock_speed,
        created_by=acting_user(actor),
        **connection,
    )
    audit_record(
        actor=actor,
        action="cluster.create",
        outcome=AuditEntry.Outcome.OK,
        target=name,
        cluster_name=name,
        detail=f"{cluster.connection_label}, API server {cluster.api_server or 'unknown'}",
    )
    return cluster


@transaction.atomic
def cluster_update(
    *,
    cluster: Cluster,
    default_namespace: str,
    region: str,
    notes: str,
    clock_speed: float,
    kubeconfig: str = "",
    context: str = "",
    actor: Actor = None,
) -> Cluster:
    """Change the settings; a new kubeconfig (if given) replaces the stored one."""
    cluster.default_namespace = default_namespace or "default"
    cluster.region = region
    cluster.notes = notes
    cluster.clock_speed = clock_speed
    changed_credentials = bool(kubeconfig) and cluster.auth == Cluster.Auth.KUBECONFIG
    if changed_credentials:
        for key, value in _connection_fields(
            auth=cluster.auth, kubeconfig=kubeconfig, context=context
        ).items():
            setattr(cluster, key, value)
        cluster.checked_at = None
        cluster.check_ok = None
    cluster.save()
    audit_record(
        actor=actor,
        action="cluster.update",
        outcome=AuditEntry.Outcome.OK,
        target=cluster.name,
        cluster_name=cluster.name,
        detail="new kubeconfig" if changed_credentials else "settings",
    )
    return cluster


@transaction.atomic
def cluster_delete(*, cluster: Cluster, actor: Actor = None) -> None:
    from apps.deployments.models import Deployment  # deployments depend on clusters

    active = cluster.deployments.exclude(status__in=Deployment.GONE_STATUSES)
    if active.exists():
        raise ClusterRefused(
            f"{active.count()} deployment(s) on this cluster are not torn down yet; tear them "
            "down (or wait for them to be deleted) first"
        )
    name = cluster.name
    cluster.deployments.all().delete()
    cluster.delete()
    audit_record(
        actor=actor,
        action="cluster.delete",
        outcome=AuditEntry.Outcome.OK,
        target=name,
        cluster_name=name,
    )


@dataclass
class CheckReport:
    ok: bool
    server_version: str = ""
    kaito_installed: bool | None = None
    can_create_workspaces: bool | None = None
    problems: list[str] = field(default_factory=list)


def _problem_for(error: kube.KubeError, cluster: Cluster) -> str:
    where = cluster.api_server or "the API server"
    if isinstance(error, kube.ClusterUnreachable):
        return (
            f"Unreachable: cannot reach {where} ({error.message}). Check the address, the "
            "network path (VPN, firewall, private cluster endpoint) and that the cluster is "
            "running."
        )
    if isinstance(error, kube.Unauthorized):
        return (
            "401 Unauthorized: the API server rejected our credentials. The token or client "
            "certificate in the kubeconfig is wrong or has expired; get a fresh kubeconfig "
            "(az aks get-credentials) and paste it here."
        )
    if isinstance(error, kube.Forbidden):
        return f"403 Forbidden: {error.message}"
    if isinstance(error, kube.KubeconfigInvalid):
        return f"The kubeconfig cannot be used: {error.message}"
    return f"The API server answered with an error: {error.message}"


def cluster_check(*, cluster: Cluster, actor: Actor = None) -> CheckReport:
    """Server version, KAITO's CRD, our permissions: each problem in plain words."""
    report = CheckReport(ok=False)
    try:
        with kube.Kube(cluster.credentials, timeout=(5.0, 15.0)) as api:
            report.server_version = api.server_version()
            # /version is often open to anyone: prove the credentials with an authenticated call.
            report.kaito_installed = api.workspaces_discoverable()
            if not report.kaito_installed:
                report.problems.append(
                    "No KAITO: the API server does not serve kaito.sh/v1beta1 Workspaces. Enable "
                    "the AI toolchain operator add-on (az aks update "
                    "--enable-ai-toolchain-operator) or install KAITO with its Helm chart."
                )
            missing = _missing_permissions(api, cluster.default_namespace)
            report.can_create_workspaces = not missing
            if missing:
                report.problems.append(
                    "403 Forbidden: our credentials may not "
                    + ", ".join(missing)
                    + f" (namespaced: in namespace {cluster.default_namespace}). Bind the "
                    "ClusterRoles in deploy/kubernetes/base/rbac.yaml, which grant exactly what "
                    "kaitoweb calls, or use another context."
                )
    except kube.KubeError as error:
        report.problems.append(_problem_for(error, cluster))
    report.ok = not report.problems
    Cluster.objects.filter(pk=cluster.pk).update(
        checked_at=timezone.now(),
        check_ok=report.ok,
        server_version=report.server_version,
        kaito_installed=report.kaito_installed,
        can_create_workspaces=report.can_create_workspaces,
        check_problems=report.problems,
    )
    cluster.refresh_from_db()
    audit_record(
        actor=actor,
        action="cluster.check",
        outcome=AuditEntry.Outcome.OK if report.ok else AuditEntry.Outcome.FAILED,
        target=cluster.name,
        cluster_name=cluster.name,
        detail="; ".join(report.problems) or f"Kubernetes {report.server_version}, KAITO ready",
    )
    return report


def cluster_reached(*, cluster: Cluster, error: str = "") -> None:
    """Note the outcome of talking to the cluster in a reconcile."""
    if error:
        Cluster.objects.filter(pk=cluster.pk).update(last_error=error)
    else:
        Cluster.objects.filter(pk=cluster.pk).update(reached_at=timezone.now(), last_error="")
