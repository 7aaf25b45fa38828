"""Discovery documents (``/api``, ``/apis``, aggregated discovery) and OpenAPI v3 for kubectl.

kubectl reads OpenAPI v3 to decide whether the server validates fields itself
(``fieldValidation`` on PATCH operations) and which patch types a kind accepts; the
documents here carry exactly those facts plus the CRD schemas (enough for ``kubectl explain``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kaitosim.resource_types import ResourceRegistry, ResourceType

KUBERNETES_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.6",
    "gitCommit": "5b9c0bd2b2ae5e0ad5e8e1b1d2c41c3fa8cfd1ea",
    "gitTreeState": "clean",
    "buildDate": "2025-06-17T18:39:09Z",
    "goVersion": "go1.23.10",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_SUBRESOURCE_VERBS = {
    "status": ["get", "patch", "update"],
    "log": ["get"],
    "proxy": ["create", "delete", "get", "patch", "update"],
    "scale": ["get", "patch", "update"],
    "eviction": ["create"],
    "binding": ["create"],
    "finalize": ["update"],
}
_SUBRESOURCE_KINDS = {
    "log": "Pod",
    "proxy": "ServiceProxyOptions",
    "scale": "Scale",
    "eviction": "Eviction",
    "binding": "Binding",
}


def _storage_version_hash(resource_type: ResourceType) -> str:
    digest = hashlib.sha256(
        f"{resource_type.group}/{resource_type.version}/{resource_type.kind}".encode()
    ).digest()
    import base64

    return base64.b64encode(digest[:8]).decode()


def _resource_entry(resource_type: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": resource_type.plural,
        "singularName": resource_type.singular,
        "namespaced": resource_type.namespaced,
        "kind": resource_type.kind,
        "verbs": list(resource_type.verbs),
    }
    if resource_type.short_names:
        entry["shortNames"] = list(resource_type.short_names)
    if resource_type.categories:
        entry["categories"] = list(resource_type.categories)
    if "create" in resource_type.verbs and "get" in resource_type.verbs:
        entry["storageVersionHash"] = _storage_version_hash(resource_type)
    return entry


def api_resource_list(registry: ResourceRegistry, group: str, version: str) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for resource_type in registry.in_group_version(group, version):
        resources.append(_resource_entry(resource_type))
        for subresource in resource_type.subresources:
            resources.append(
                {
                    "name": f"{resource_type.plural}/{subresource}",
                    "singularName": "",
                    "namespaced": resource_type.namespaced,
                    "kind": _SUBRESOURCE_KINDS.get(subresource, resource_type.kind),
                    "verbs": _SUBRESOURCE_VERBS.get(subresource, ["get"]),
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _group_entry(group: str, versions: list[str]) -> dict[str, Any]:
    version_entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": version_entries, "preferredVersion": version_entries[0]}


def api_group_list(registry: ResourceRegistry) -> dict[str, Any]:
    groups = [
        _group_entry(group, versions)
        for group, versions in registry.group_versions().items()
        if group
    ]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: ResourceRegistry, group: str) -> dict[str, Any] | None:
    versions = registry.group_versions().get(group)
    if not versions or not group:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_entry(group, versions)}


def aggregated_discovery(registry: ResourceRegistry, legacy: bool) -> dict[str, Any]:
    """``apidiscovery.k8s.io/v2`` APIGroupDiscoveryList for ``/api`` (legacy) or ``/apis``."""
    items: list[dict[str, Any]] = []
    for group, versions in registry.group_versions().items():
        if legacy != (group == ""):
            continue
        version_items = []
        for version in versions:
            resources = []
            for resource_type in registry.in_group_version(group, version):
                resource: dict[str, Any] = {
                    "resource": resource_type.plural,
                    "responseKind": {
                        "group": group,
                        "version": version,
                        "kind": resource_type.kind,
                    },
                    "scope": "Namespaced" if resource_type.namespaced else "Cluster",
                    "singularResource": resource_type.singular,
                    "verbs": list(resource_type.verbs),
                }
                if resource_type.short_names:
                    resource["shortNames"] = list(resource_type.short_names)
                if resource_type.categories:
                    resource["categories"] = list(resource_type.categories)
                if resource_type.subresources:
                    resource["subresources"] = [
                        {
                            "subresource": subresource,
                            "responseKind": {
                                "group": "" if subresource in _SUBRESOURCE_KINDS else group,
                                "version": version,
                                "kind": _SUBRESOURCE_KINDS.get(subresource, resource_type.kind),
                            },
                            "verbs": _SUBRESOURCE_VERBS.get(subresource, ["get"]),
                        }
                        for subresource in resource_type.subresources
                    ]
                resources.append(resource)
            version_items.append(
                {"version": version, "resources": resources, "freshness": "Current"}
            )
        items.append(
            {"metadata": {"name": group, "creationTimestamp": None}, "versions": version_items}
        )
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }


# ----------------------------------------------------------------------------- OpenAPI v3

_PATCH_CONTENT_TYPES_CUSTOM = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
)


def _schema_name(resource_type: ResourceType) -> str:
    if resource_type.group:
        reversed_group = ".".join(reversed(resource_type.group.split(".")))
        return f"{reversed_group}.{resource_type.version}.{resource_type.kind}"
    return f"io.k8s.api.core.{resource_type.version}.{resource_type.kind}"


def _query_param(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "description": name,
        "schema": {"type": "string", "uniqueItems": True},
    }


def _operation(resource_type: ResourceType, action: str, write: bool) -> dict[str, Any]:
    gvk = {
        "group": resource_type.group,
        "version": resource_type.version,
        "kind": resource_type.kind,
    }
    reference = {"$ref": f"#/components/schemas/{_schema_name(resource_type)}"}
    operation: dict[str, Any] = {
        "operationId": f"{action}{resource_type.kind}",
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": reference}}}
        },
    }
    if write:
        operation["parameters"] = [
            _query_param("dryRun"),
            _query_param("fieldManager"),
            _query_param("fieldValidation"),
        ]
        if action == "patch":
            operation["requestBody"] = {
                "content": {
                    content: {"schema": {"type": "object"}}
                    for content in _PATCH_CONTENT_TYPES_CUSTOM
                },
                "required": True,
            }
        else:
            operation["requestBody"] = {"content": {"*/*": {"schema": reference}}, "required": True}
    return operation


def _object_paths(resource_type: ResourceType) -> dict[str, Any]:
    prefix = (
        f"/apis/{resource_type.group}/{resource_type.version}"
        if resource_type.group
        else f"/api/{resource_type.version}"
    )
    scope = "/namespaces/{namespace}" if resource_type.namespaced else ""
    collection = f"{prefix}{scope}/{resource_type.plural}"
    verbs = set(resource_type.verbs)
    paths: dict[str, Any] = {}
    collection_item: dict[str, Any] = {}
    if "list" in verbs:
        collection_item["get"] = _operation(resource_type, "list", False)
    if "create" in verbs:
        collection_item["post"] = _operation(resource_type, "post", True)
    if collection_item:
        paths[collection] = collection_item
    if resource_type.plural == "selfsubjectaccessreviews":
        return paths
    item: dict[str, Any] = {}
    if "get" in verbs:
        item["get"] = _operation(resource_type, "get", False)
    if "update" in verbs:
        item["put"] = _operation(resource_type, "put", True)
    if "patch" in verbs:
        item["patch"] = _operation(resource_type, "patch", True)
    if "delete" in verbs:
        item["delete"] = _operation(resource_type, "delete", False)
    if item:
        paths[f"{collection}/{{name}}"] = item
    return paths


def _builtin_schema(resource_type: ResourceType) -> dict[str, Any]:
    return {
        "type": "object",
        "description": f"{resource_type.kind} (schema not modelled by kaitosim)",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
        "x-kubernetes-preserve-unknown-fields": True,
    }


def openapi_v3_document(
    registry: ResourceRegistry,
    group: str,
    version: str,
    crd_schemas: dict[tuple[str, str, str], dict[str, Any]],
) -> dict[str, Any] | None:
    resource_types = registry.in_group_version(group, version)
    if not resource_types:
        return None
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for resource_type in resource_types:
        paths.update(_object_paths(resource_type))
        schema = crd_schemas.get((group, version, resource_type.plural))
        schema = dict(schema) if schema is not None else _builtin_schema(resource_type)
        schema["x-kubernetes-group-version-kind"] = [
            {"group": group, "version": version, "kind": resource_type.kind}
        ]
        schemas[_schema_name(resource_type)] = schema
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def openapi_v3_root(
    registry: ResourceRegistry, crd_schemas: dict[tuple[str, str, str], dict[str, Any]]
) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for group, versions in registry.group_versions().items():
        for version in versions:
            document = openapi_v3_document(registry, group, version, crd_schemas)
            digest = (
                hashlib.sha512(json.dumps(document, sort_keys=True).encode())
                .hexdigest()[:128]
                .upper()
            )
            key = f"apis/{group}/{version}" if group else f"api/{version}"
            paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
    return {"paths": paths}
