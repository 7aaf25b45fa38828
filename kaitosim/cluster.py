"""Object semantics of the Kubernetes API server, independent of HTTP.

Create/update/patch/delete with uid, resourceVersion, generation, finalizers and
deletionTimestamp, namespaces, owner-reference garbage collection, CRD structural schemas,
status subresources, dry run and admission. The HTTP layer (:mod:`kaitosim.apiserver`) and
the in-process controllers both go through :class:`Cluster`, so watchers see every change.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import copy
import ipaddress
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from kaitosim import api_errors
from kaitosim.api_errors import ApiError, FieldCause
from kaitosim.object_store import ObjectStore
from kaitosim.patches import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    json_merge_patch,
    json_patch,
    server_side_apply,
    strategic_merge_patch,
)
from kaitosim.resource_types import ResourceRegistry, ResourceType
from kaitosim.schema_validation import apply_schema
from kaitosim.selectors import FieldSelector, LabelSelector

_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_GENERATE_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_SPEC_EXCLUDED_KEYS = ("metadata", "status", "apiVersion", "kind")


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def object_key(obj: dict[str, Any]) -> tuple[str, str]:
    metadata = obj.get("metadata") or {}
    return (metadata.get("namespace", "") or "", metadata.get("name", ""))


@dataclass
class AdmissionRequest:
    """What an admission plugin sees (like an AdmissionReview request)."""

    operation: str  # CREATE, UPDATE, DELETE
    resource_type: ResourceType
    obj: dict[str, Any]
    old_obj: dict[str, Any] | None
    dry_run: bool
    subresource: str = ""


class AdmissionPlugin(Protocol):
    """A validating (or mutating) admission step; raise :class:`ApiError` to deny."""

    def admit(self, request: AdmissionRequest) -> None: ...


@dataclass
class WriteResult:
    obj: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    created: bool = False


class Cluster:
    """The API server's storage-facing logic for all served resources."""

    def __init__(
        self,
        registry: ResourceRegistry,
        store: ObjectStore,
        crd_schemas: dict[tuple[str, str, str], dict[str, Any]] | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.crd_schemas = crd_schemas or {}
        self.admission: list[AdmissionPlugin] = []
        self._service_ips = ipaddress.ip_network("10.0.0.0/16").hosts()
        next(self._service_ips)  # 10.0.0.1 is the kubernetes service
        self._tasks: set[asyncio.Task[None]] = set()
        self._random = random.Random(20240501)  # noqa: S311 - names, not secrets
        self.on_namespace_deleted: list[Callable[[str], None]] = []

    # ----------------------------------------------------------------- helpers
    def resource(self, group: str, version: str, plural: str) -> ResourceType:
        resource_type = self.registry.lookup(group, version, plural)
        if resource_type is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        return resource_type

    def resource_for_kind(self, group: str, kind: str) -> ResourceType:
        resource_type = self.registry.by_kind(group, kind)
        if resource_type is None:
            raise KeyError(f"{group}/{kind}")
        return resource_type

    def _present(self, resource_type: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """A copy of a stored object as served by ``resource_type``'s version."""
        served = copy.deepcopy(obj)
        served["apiVersion"] = resource_type.group_version
        served["kind"] = resource_type.kind
        return _ordered(served)

    def _spawn(self, coroutine: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coroutine)
        except RuntimeError:
            coroutine.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self) -> None:
        """Cancel background work (namespace finalization)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    # -------------------------------------------------------------------- reads
    def get(self, resource_type: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        stored = self.store.get(
            resource_type.bucket, namespace if resource_type.namespaced else "", name
        )
        if stored is None:
            raise api_errors.not_found(resource_type.group, resource_type.plural, name)
        return self._present(resource_type, stored)

    def find(self, resource_type: ResourceType, namespace: str, name: str) -> dict[str, Any] | None:
        stored = self.store.get(
            resource_type.bucket, namespace if resource_type.namespaced else "", name
        )
        return None if stored is None else self._present(resource_type, stored)

    def list(
        self,
        resource_type: ResourceType,
        namespace: str | None,
        label_selector: LabelSelector | None = None,
        field_selector: FieldSelector | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        items = []
        for stored in self.store.list(
            resource_type.bucket, namespace if resource_type.namespaced else None
        ):
            metadata = stored["metadata"]
            if label_selector is not None and not label_selector.matches(metadata.get("labels")):
                continue
            if field_selector is not None and not field_selector.matches(stored):
                continue
            items.append(self._present(resource_type, stored))
        return items, self.store.resource_version

    def namespace_exists(self, namespace: str) -> bool:
        return self.store.get("/namespaces", "", namespace) is not None

    # ------------------------------------------------------------------ writes
    def _check_namespace(self, resource_type: ResourceType, namespace: str, name: str) -> None:
        if not resource_type.namespaced:
            return
        stored = self.store.get("/namespaces", "", namespace)
        if stored is None:
            raise api_errors.not_found("", "namespaces", namespace)
        if stored["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f'{resource_type.qualified_name} "{name}" is forbidden: unable to create new '
                f"content in namespace {namespace} because it is being terminated",
                {
                    "name": name,
                    "group": resource_type.group,
                    "kind": resource_type.plural,
                    "causes": [
                        {
                            "reason": "NamespaceTerminating",
                            "message": f"namespace {namespace} is being terminated",
                            "field": "metadata.namespace",
                        }
                    ],
                },
            )

    def _validate_name(self, resource_type: ResourceType, name: str) -> None:
        pattern = _DNS1123_LABEL if resource_type.plural == "namespaces" else _DNS1123_SUBDOMAIN
        if len(name) > 253 or not pattern.match(name):
            kind = "label" if resource_type.plural == "namespaces" else "subdomain"
            message = (
                f'Invalid value: "{name}": a lowercase RFC 1123 {kind} must consist of lower case '
                "alphanumeric characters, '-' or '.', and must start and end with an "
                "alphanumeric character"
            )
            raise api_errors.invalid(
                resource_type.group,
                resource_type.kind,
                name,
                [FieldCause("FieldValueInvalid", message, "metadata.name")],
            )

    def _apply_crd_schema(
        self, resource_type: ResourceType, obj: dict[str, Any], field_validation: str
    ) -> tuple[dict[str, Any], builtins.list[str]]:
        schema = self.crd_schemas.get(
            (resource_type.group, resource_type.version, resource_type.plural)
        )
        if schema is None:
            return obj, []
        outcome = apply_schema(obj, schema)
        name = (obj.get("metadata") or {}).get("name", "")
        warnings: list[str] = []
        if outcome.unknown_fields:
            if field_validation == "Strict":
                listed = ", ".join(f'unknown field "{path}"' for path in outcome.unknown_fields)
                raise ApiError(
                    400,
                    "BadRequest",
                    f'{resource_type.kind} in version "{resource_type.version}" cannot be '
                    f"handled as a {resource_type.kind}: strict decoding error: {listed}",
                )
            if field_validation != "Ignore":
                warnings.extend(f'unknown field "{path}"' for path in outcome.unknown_fields)
        if outcome.errors:
            raise api_errors.invalid(resource_type.group, resource_type.kind, name, outcome.errors)
        return outcome.obj, warnings

    def _admit(self, request: AdmissionRequest) -> None:
        for plugin in self.admission:
            plugin.admit(request)

    def _defaults(self, resource_type: ResourceType, obj: dict[str, Any]) -> None:
        """Built-in defaulting and storage normalisation for core/apps types."""
        key = resource_type.bucket
        if key == "/secrets":
            obj.setdefault("type", "Opaque")
            string_data = obj.pop("stringData", None) or {}
            if string_data:
                data = obj.setdefault("data", {})
                for data_key, value in string_data.items():
                    data[data_key] = base64.b64encode(str(value).encode()).decode()
        elif key == "/services":
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            spec.setdefault("internalTrafficPolicy", "Cluster")
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            if "clusterIP" not in spec:
                ip = str(next(self._service_ips))
                spec["clusterIP"] = ip
                spec["clusterIPs"] = [ip]
            for port in spec.get("ports") or []:
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))
            obj.setdefault("status", {"loadBalancer": {}})
        elif key == "/namespaces":
            metadata = obj["metadata"]
            metadata.setdefault("labels", {})["kubernetes.io/metadata.name"] = metadata["name"]
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj.setdefault("status", {"phase": "Active"})
        elif key == "apps/deployments":
            spec = obj.setdefault("spec", {})
            spec.setdefault("replicas", 1)
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            spec.setdefault(
                "strategy",
                {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
                },
            )
        elif key == "apps/statefulsets":
            spec = obj.setdefault("spec", {})
            spec.setdefault("replicas", 1)
            spec.setdefault("podManagementPolicy", "OrderedReady")
        elif key == "/pods":
            spec = obj.setdefault("spec", {})
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("dnsPolicy", "ClusterFirst")

    def _validate_builtin(self, resource_type: ResourceType, obj: dict[str, Any]) -> None:
        name = obj["metadata"].get("name", "")
        causes: list[FieldCause] = []
        if resource_type.bucket == "/pods" and not (obj.get("spec") or {}).get("containers"):
            causes.append(FieldCause("FieldValueRequired", "Required value", "spec.containers"))
        if resource_type.bucket in ("apps/deployments", "apps/statefulsets"):
            spec = obj.get("spec") or {}
            if not spec.get("selector"):
                causes.append(FieldCause("FieldValueRequired", "Required value", "spec.selector"))
            if not ((spec.get("template") or {}).get("spec") or {}).get("containers"):
                causes.append(
                    FieldCause(
                        "FieldValueRequired", "Required value", "spec.template.spec.containers"
                    )
                )
        if resource_type.bucket == "/services":
            for index, port in enumerate((obj.get("spec") or {}).get("ports") or []):
                if not isinstance(port.get("port"), int):
                    causes.append(
                        FieldCause(
                            "FieldValueRequired", "Required value", f"spec.ports[{index}].port"
                        )
                    )
        if causes:
            raise api_errors.invalid(resource_type.group, resource_type.kind, name, causes)

    def create(
        self,
        resource_type: ResourceType,
        namespace: str,
        body: dict[str, Any],
        *,
        dry_run: bool = False,
        field_validation: str = "Warn",
        internal: bool = False,
    ) -> WriteResult:
        if not isinstance(body, dict):
            raise api_errors.bad_request("the object provided is unrecognized")
        obj = copy.deepcopy(body)
        metadata = obj.setdefault("metadata", {})
        if not isinstance(metadata, dict):
            raise api_errors.bad_request("metadata must be an object")
        body_namespace = metadata.get("namespace")
        if resource_type.namespaced:
            if body_namespace and body_namespace != namespace:
                raise api_errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request"
                )
            metadata["namespace"] = namespace
        else:
            metadata.pop("namespace", None)
        if not metadata.get("name"):
            if metadata.get("generateName"):
                suffix = "".join(self._random.choice(_GENERATE_NAME_ALPHABET) for _ in range(5))
                metadata["name"] = f"{metadata['generateName']}{suffix}"
            else:
                raise api_errors.invalid(
                    resource_type.group,
                    resource_type.kind,
                    "",
                    [
                        FieldCause(
                            "FieldValueRequired",
                            "Required value: name or generateName is required",
                            "metadata.name",
                        )
                    ],
                )
        name = str(metadata["name"])
        self._validate_name(resource_type, name)
        self._check_namespace(resource_type, namespace, name)
        obj["apiVersion"] = resource_type.group_version
        obj["kind"] = resource_type.kind
        if resource_type.has_status_subresource and not internal:
            obj.pop("status", None)
        for managed in (
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "generation",
        ):
            metadata.pop(managed, None)
        warnings: list[str] = []
        if resource_type.custom:
            obj, warnings = self._apply_crd_schema(resource_type, obj, field_validation)
            metadata = obj["metadata"]
        else:
            self._defaults(resource_type, obj)
            self._validate_builtin(resource_type, obj)
        self._admit(AdmissionRequest("CREATE", resource_type, obj, None, dry_run))
        if self.store.get(resource_type.bucket, metadata.get("namespace", ""), name) is not None:
            raise api_errors.already_exists(resource_type.group, resource_type.plural, name)
        metadata["uid"] = str(uuid.uuid4())
        metadata["creationTimestamp"] = now_rfc3339()
        if resource_type.has_generation:
            metadata["generation"] = 1
        obj = _storage_form(resource_type, obj)
        if dry_run:
            return WriteResult(self._present(resource_type, obj), warnings, created=True)
        self.store.commit("ADDED", resource_type.bucket, obj)
        return WriteResult(self._present(resource_type, obj), warnings, created=True)

    def update(
        self,
        resource_type: ResourceType,
        namespace: str,
        name: str,
        body: dict[str, Any],
        *,
        subresource: str = "",
        dry_run: bool = False,
        field_validation: str = "Warn",
        internal: bool = False,
        require_resource_version: bool = True,
    ) -> WriteResult:
        if not isinstance(body, dict):
            raise api_errors.bad_request("the object provided is unrecognized")
        namespace = namespace if resource_type.namespaced else ""
        stored = self.store.get(resource_type.bucket, namespace, name)
        if stored is None:
            raise api_errors.not_found(resource_type.group, resource_type.plural, name)
        obj = copy.deepcopy(body)
        metadata = obj.setdefault("metadata", {})
        if metadata.get("name") and metadata["name"] != name:
            raise api_errors.bad_request(
                f"the name of the object ({metadata['name']}) does not match the name on the "
                f"URL ({name})"
            )
        if (
            resource_type.namespaced
            and metadata.get("namespace")
            and metadata["namespace"] != namespace
        ):
            raise api_errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        requested_version = metadata.get("resourceVersion")
        if requested_version:
            if str(requested_version) != stored["metadata"]["resourceVersion"]:
                raise api_errors.conflict(resource_type.group, resource_type.plural, name)
        elif resource_type.custom and require_resource_version and not internal:
            raise api_errors.invalid(
                resource_type.group,
                resource_type.kind,
                name,
                [
                    FieldCause(
                        "FieldValueInvalid",
                        "Invalid value: 0x0: must be specified for an update",
                        "metadata.resourceVersion",
                    )
                ],
            )
        old = stored
        if subresource == "status":
            new_obj = copy.deepcopy(old)
            if "status" in obj:
                new_obj["status"] = obj["status"]
            else:
                new_obj.pop("status", None)
        else:
            new_obj = obj
            new_obj["apiVersion"] = resource_type.group_version
            new_obj["kind"] = resource_type.kind
            if resource_type.has_status_subresource and not internal:
                if "status" in old:
                    new_obj["status"] = copy.deepcopy(old["status"])
                else:
                    new_obj.pop("status", None)
        new_metadata = new_obj.setdefault("metadata", {})
        old_metadata = old["metadata"]
        for preserved in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ):
            if preserved in old_metadata:
                new_metadata[preserved] = old_metadata[preserved]
            else:
                new_metadata.pop(preserved, None)
        new_metadata["name"] = name
        if resource_type.namespaced:
            new_metadata["namespace"] = namespace
        else:
            new_metadata.pop("namespace", None)
        warnings: list[str] = []
        if resource_type.custom:
            new_obj, warnings = self._apply_crd_schema(resource_type, new_obj, field_validation)
            new_metadata = new_obj["metadata"]
        else:
            if subresource != "status":
                self._defaults(resource_type, new_obj)
                if resource_type.bucket == "/services":
                    old_spec = old.get("spec") or {}
                    new_obj["spec"]["clusterIP"] = old_spec.get("clusterIP")
                    new_obj["spec"]["clusterIPs"] = old_spec.get("clusterIPs")
            self._validate_builtin(resource_type, new_obj)
        if old_metadata.get("deletionTimestamp"):
            added = set(new_metadata.get("finalizers") or []) - set(
                old_metadata.get("finalizers") or []
            )
            if added:
                raise api_errors.invalid(
                    resource_type.group,
                    resource_type.kind,
                    name,
                    [
                        FieldCause(
                            "FieldValueForbidden",
                            "Forbidden: no new finalizers can be added if the object is being "
                            "deleted, "
                            f"found new finalizers {sorted(added)!r}",
                            "metadata.finalizers",
                        )
                    ],
                )
        self._admit(AdmissionRequest("UPDATE", resource_type, new_obj, old, dry_run, subresource))
        if resource_type.has_generation and _spec_of(new_obj) != _spec_of(old):
            new_metadata["generation"] = int(old_metadata.get("generation", 1)) + 1
        new_metadata["resourceVersion"] = old_metadata["resourceVersion"]
        new_obj = _storage_form(resource_type, new_obj)
        if new_obj == old:
            return WriteResult(self._present(resource_type, old), warnings)
        if dry_run:
            return WriteResult(self._present(resource_type, new_obj), warnings)
        if new_metadata.get("deletionTimestamp") and not new_metadata.get("finalizers"):
            self._remove(resource_type, new_obj)
            return WriteResult(self._present(resource_type, new_obj), warnings)
        self.store.commit("MODIFIED", resource_type.bucket, new_obj)
        return WriteResult(self._present(resource_type, new_obj), warnings)

    def patch(
        self,
        resource_type: ResourceType,
        namespace: str,
        name: str,
        patch_type: str,
        patch_body: Any,
        *,
        subresource: str = "",
        dry_run: bool = False,
        field_validation: str = "Warn",
        internal: bool = False,
    ) -> WriteResult:
        namespace = namespace if resource_type.namespaced else ""
        stored = self.store.get(resource_type.bucket, namespace, name)
        if patch_type == APPLY_PATCH:
            if not isinstance(patch_body, dict):
                raise api_errors.bad_request("error decoding YAML: apply patch must be an object")
            if stored is None:
                if subresource:
                    raise api_errors.not_found(resource_type.group, resource_type.plural, name)
                body = copy.deepcopy(patch_body)
                body.setdefault("metadata", {})["name"] = name
                return self.create(
                    resource_type,
                    namespace,
                    body,
                    dry_run=dry_run,
                    field_validation=field_validation,
                    internal=internal,
                )
            current = self._present(resource_type, stored)
            patched = server_side_apply(current, patch_body)
        else:
            if stored is None:
                raise api_errors.not_found(resource_type.group, resource_type.plural, name)
            current = self._present(resource_type, stored)
            if patch_type == MERGE_PATCH:
                patched = json_merge_patch(current, patch_body)
            elif patch_type == JSON_PATCH:
                patched = json_patch(current, patch_body)
            elif patch_type == STRATEGIC_MERGE_PATCH:
                if resource_type.custom:
                    raise api_errors.unsupported_media_type(
                        patch_type, [JSON_PATCH, MERGE_PATCH, APPLY_PATCH]
                    )
                patched = strategic_merge_patch(current, patch_body)
            else:
                raise api_errors.unsupported_media_type(
                    patch_type,
                    [JSON_PATCH, MERGE_PATCH, APPLY_PATCH]
                    + ([] if resource_type.custom else [STRATEGIC_MERGE_PATCH]),
                )
        if not isinstance(patched, dict):
            raise api_errors.bad_request("the patch produced an object that is not a JSON object")
        patched_metadata = patched.setdefault("metadata", {})
        requested_version = _patch_requested_version(patch_type, patch_body)
        if requested_version is None:
            patched_metadata["resourceVersion"] = current["metadata"]["resourceVersion"]
        return self.update(
            resource_type,
            namespace,
            name,
            patched,
            subresource=subresource,
            dry_run=dry_run,
            field_validation=field_validation,
            internal=internal,
        )

    def delete(
        self,
        resource_type: ResourceType,
        namespace: str,
        name: str,
        *,
        dry_run: bool = False,
        precondition_uid: str | None = None,
        precondition_resource_version: str | None = None,
        internal: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """Delete an object. Returns (object, gone): gone is False while finalizers hold it."""
        namespace = namespace if resource_type.namespaced else ""
        stored = self.store.get(resource_type.bucket, namespace, name)
        if stored is None:
            raise api_errors.not_found(resource_type.group, resource_type.plural, name)
        metadata = stored["metadata"]
        if precondition_uid and precondition_uid != metadata.get("uid"):
            raise api_errors.conflict(
                resource_type.group,
                resource_type.plural,
                name,
                f"Precondition failed: UID in precondition: {precondition_uid}, UID in object "
                f"meta: {metadata.get('uid')}",
            )
        if precondition_resource_version and precondition_resource_version != metadata.get(
            "resourceVersion"
        ):
            raise api_errors.conflict(
                resource_type.group,
                resource_type.plural,
                name,
                "Precondition failed: ResourceVersion in precondition: "
                f"{precondition_resource_version}, ResourceVersion in object meta: "
                f"{metadata.get('resourceVersion')}",
            )
        self._admit(AdmissionRequest("DELETE", resource_type, stored, stored, dry_run))
        pending = bool(metadata.get("finalizers")) or (
            resource_type.bucket == "/namespaces"
            and bool((stored.get("spec") or {}).get("finalizers"))
        )
        if dry_run:
            return self._present(resource_type, stored), not pending
        if pending:
            if metadata.get("deletionTimestamp"):
                return self._present(resource_type, stored), False
            marked = copy.deepcopy(stored)
            marked["metadata"]["deletionTimestamp"] = now_rfc3339()
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            if resource_type.bucket == "/namespaces":
                marked.setdefault("status", {})["phase"] = "Terminating"
            self.store.commit("MODIFIED", resource_type.bucket, marked)
            if resource_type.bucket == "/namespaces":
                self._spawn(self._finalize_namespace(name))
            return self._present(resource_type, marked), False
        removed = copy.deepcopy(stored)
        self._remove(resource_type, removed)
        return self._present(resource_type, removed), True

    def _remove(self, resource_type: ResourceType, obj: dict[str, Any]) -> None:
        if not obj["metadata"].get("deletionTimestamp"):
            obj["metadata"]["deletionTimestamp"] = now_rfc3339()
        self.store.commit("DELETED", resource_type.bucket, obj)
        self._collect_dependents(obj["metadata"].get("uid", ""))

    def _collect_dependents(self, owner_uid: str) -> None:
        """Background garbage collection: delete objects whose owner is gone."""
        if not owner_uid:
            return
        for candidate in self.registry.types:
            if not candidate.is_storage_version:
                continue
            for stored in list(self.store.list(candidate.bucket)):
                owners = stored["metadata"].get("ownerReferences") or []
                if any(owner.get("uid") == owner_uid for owner in owners):
                    namespace, name = object_key(stored)
                    if self.store.get(candidate.bucket, namespace, name) is None:
                        continue
                    try:
                        self.delete(candidate, namespace, name, internal=True)
                    except ApiError:
                        continue

    async def _finalize_namespace(self, namespace: str) -> None:
        """The namespace controller: empty a terminating namespace, then remove it."""
        namespaced = [t for t in self.registry.types if t.namespaced and t.is_storage_version]
        while True:
            remaining = 0
            for resource_type in namespaced:
                for stored in list(self.store.list(resource_type.bucket, namespace)):
                    remaining += 1
                    if not stored["metadata"].get("deletionTimestamp"):
                        with contextlib.suppress(ApiError):
                            self.delete(
                                resource_type, namespace, stored["metadata"]["name"], internal=True
                            )
            if remaining == 0:
                break
            await asyncio.sleep(0.05)
        stored_namespace = self.store.get("/namespaces", "", namespace)
        if stored_namespace is not None:
            final = copy.deepcopy(stored_namespace)
            final.setdefault("spec", {})["finalizers"] = []
            self.store.commit("DELETED", "/namespaces", final)
        for callback in self.on_namespace_deleted:
            callback(namespace)


def _patch_requested_version(patch_type: str, patch_body: Any) -> str | None:
    if patch_type == JSON_PATCH:
        for operation in patch_body if isinstance(patch_body, list) else []:
            if operation.get("path") == "/metadata/resourceVersion" and operation.get("op") in (
                "add",
                "replace",
            ):
                return str(operation.get("value"))
        return None
    if isinstance(patch_body, dict):
        version = (patch_body.get("metadata") or {}).get("resourceVersion")
        return str(version) if version else None
    return None


def _spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in _SPEC_EXCLUDED_KEYS}


def _storage_form(resource_type: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    obj["apiVersion"] = resource_type.stored_api_version
    return obj


_KEY_ORDER = ("apiVersion", "kind", "metadata")
_METADATA_ORDER = (
    "name",
    "generateName",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
)


def _ordered(obj: dict[str, Any]) -> dict[str, Any]:
    """Key order as the API server serialises objects (cosmetic, helps humans reading output)."""
    result: dict[str, Any] = {}
    for key in _KEY_ORDER:
        if key in obj:
            result[key] = obj[key]
    metadata = result.get("metadata")
    if isinstance(metadata, dict):
        ordered_metadata = {key: metadata[key] for key in _METADATA_ORDER if key in metadata}
        ordered_metadata.update({k: v for k, v in metadata.items() if k not in ordered_metadata})
        result["metadata"] = ordered_metadata
    for key, value in obj.items():
        if key not in result:
            result[key] = value
    return result
