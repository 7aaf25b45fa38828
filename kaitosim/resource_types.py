"""The API resources the simulated cluster serves, and how each behaves."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
READ_VERBS = ("get", "list", "watch")


@dataclass(frozen=True)
class ResourceType:
    """One served resource of one group/version (like an entry of an APIResourceList)."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    verbs: tuple[str, ...] = ALL_VERBS
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    custom: bool = False
    """Served from a CustomResourceDefinition (no strategic merge patch, kind in list items)."""
    has_generation: bool = False
    storage_key: str = ""
    """Objects of versions sharing this key are the same objects (multi-version CRDs)."""
    storage_version: str = ""
    """For multi-version resources: the version objects are stored (and garbage-collected) as."""
    returns_deleted_object: bool = True
    field_selectors: tuple[str, ...] = ()

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def bucket(self) -> str:
        return self.storage_key or f"{self.group}/{self.plural}"

    @property
    def is_storage_version(self) -> bool:
        return not self.storage_version or self.storage_version == self.version

    @property
    def stored_api_version(self) -> str:
        version = self.storage_version or self.version
        return f"{self.group}/{version}" if self.group else version

    @property
    def qualified_name(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def has_status_subresource(self) -> bool:
        return "status" in self.subresources

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def supported_field_selectors(self) -> set[str]:
        base = {"metadata.name"}
        if self.namespaced:
            base.add("metadata.namespace")
        return base | set(self.field_selectors)


@dataclass
class ResourceRegistry:
    """Lookup of served resource types by group/version/plural, kind and short name."""

    types: list[ResourceType] = field(default_factory=list)

    def add(self, resource_type: ResourceType) -> None:
        self.types.append(resource_type)

    def extend(self, resource_types: Iterable[ResourceType]) -> None:
        for resource_type in resource_types:
            self.add(resource_type)

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        for candidate in self.types:
            if (
                candidate.group == group
                and candidate.version == version
                and candidate.plural == plural
            ):
                return candidate
        return None

    def by_kind(self, group: str, kind: str) -> ResourceType | None:
        for candidate in self.types:
            if candidate.group == group and candidate.kind == kind:
                return candidate
        return None

    def group_versions(self) -> dict[str, list[str]]:
        """Served versions per group, preferred (storage) version first."""
        found: dict[str, list[str]] = {}
        for candidate in self.types:
            versions = found.setdefault(candidate.group, [])
            if candidate.version not in versions:
                versions.append(candidate.version)
        return found

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [t for t in self.types if t.group == group and t.version == version]


_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)
_POD_FIELDS = (
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)


def default_registry() -> ResourceRegistry:
    """The resources of the simulated AKS cluster with the KAITO add-on."""
    registry = ResourceRegistry()
    registry.extend(
        [
            ResourceType(
                "",
                "v1",
                "namespaces",
                "namespace",
                "Namespace",
                False,
                verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
                short_names=("ns",),
                subresources=("status", "finalize"),
                field_selectors=("status.phase",),
            ),
            ResourceType(
                "",
                "v1",
                "pods",
                "pod",
                "Pod",
                True,
                short_names=("po",),
                categories=("all",),
                subresources=("status", "log", "eviction", "binding"),
                field_selectors=_POD_FIELDS,
            ),
            ResourceType(
                "",
                "v1",
                "services",
                "service",
                "Service",
                True,
                short_names=("svc",),
                categories=("all",),
                subresources=("status", "proxy"),
                returns_deleted_object=False,
            ),
            ResourceType(
                "",
                "v1",
                "events",
                "event",
                "Event",
                True,
                short_names=("ev",),
                returns_deleted_object=False,
                field_selectors=_EVENT_FIELDS,
            ),
            ResourceType(
                "",
                "v1",
                "secrets",
                "secret",
                "Secret",
                True,
                returns_deleted_object=False,
                field_selectors=("type",),
            ),
            ResourceType(
                "",
                "v1",
                "configmaps",
                "configmap",
                "ConfigMap",
                True,
                short_names=("cm",),
                returns_deleted_object=False,
            ),
            ResourceType(
                "",
                "v1",
                "nodes",
                "node",
                "Node",
                False,
                short_names=("no",),
                subresources=("status", "proxy"),
                field_selectors=("spec.unschedulable",),
            ),
            ResourceType(
                "apps",
                "v1",
                "deployments",
                "deployment",
                "Deployment",
                True,
                short_names=("deploy",),
                categories=("all",),
                subresources=("status", "scale"),
                has_generation=True,
                returns_deleted_object=False,
            ),
            ResourceType(
                "apps",
                "v1",
                "statefulsets",
                "statefulset",
                "StatefulSet",
                True,
                short_names=("sts",),
                categories=("all",),
                subresources=("status", "scale"),
                has_generation=True,
                returns_deleted_object=False,
            ),
            ResourceType(
                "kaito.sh",
                "v1beta1",
                "workspaces",
                "workspace",
                "Workspace",
                True,
                short_names=("wk", "wks"),
                categories=("workspace",),
                subresources=("status",),
                custom=True,
                has_generation=True,
                storage_key="kaito.sh/workspaces",
                storage_version="v1beta1",
            ),
            ResourceType(
                "kaito.sh",
                "v1alpha1",
                "workspaces",
                "workspace",
                "Workspace",
                True,
                verbs=READ_VERBS,
                short_names=("wk", "wks"),
                categories=("workspace",),
                subresources=("status",),
                custom=True,
                has_generation=True,
                storage_key="kaito.sh/workspaces",
                storage_version="v1beta1",
            ),
            ResourceType(
                "karpenter.sh",
                "v1",
                "nodeclaims",
                "nodeclaim",
                "NodeClaim",
                False,
                categories=("karpenter",),
                subresources=("status",),
                custom=True,
                has_generation=True,
            ),
            ResourceType(
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "customresourcedefinition",
                "CustomResourceDefinition",
                False,
                verbs=READ_VERBS,
                short_names=("crd", "crds"),
                categories=("api-extensions",),
            ),
            ResourceType(
                "authorization.k8s.io",
                "v1",
                "selfsubjectaccessreviews",
                "selfsubjectaccessreview",
                "SelfSubjectAccessReview",
                False,
                verbs=("create",),
            ),
        ]
    )
    return registry
