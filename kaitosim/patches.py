"""PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge, apply."""

from __future__ import annotations

import copy
from typing import Any

from kaitosim.api_errors import ApiError

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
APPLY_PATCH_CBOR = "application/apply-patch+cbor"

# Merge keys of lists that strategic merge patch merges element-wise (from the Kubernetes types).
_MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
}
_PORT_MERGE_KEYS = ("containerPort", "port")
_MERGED_PRIMITIVE_LISTS = {"finalizers"}


def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


def _decode_pointer(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise ApiError(422, "Invalid", f"invalid JSON pointer: {pointer!r}")
    return [token.replace("~1", "/").replace("~0", "~") for token in pointer[1:].split("/")]


def _resolve_parent(document: Any, tokens: list[str], op: str) -> tuple[Any, str]:
    current = document
    for token in tokens[:-1]:
        if isinstance(current, dict):
            if token not in current:
                raise ApiError(
                    422,
                    "Invalid",
                    f"{op} operation does not apply: doc is missing path: /{'/'.join(tokens)}",
                )
            current = current[token]
        elif isinstance(current, list):
            try:
                current = current[int(token)]
            except (ValueError, IndexError):
                raise ApiError(
                    422,
                    "Invalid",
                    f"{op} operation does not apply: doc is missing path: /{'/'.join(tokens)}",
                ) from None
        else:
            raise ApiError(
                422,
                "Invalid",
                f"{op} operation does not apply: doc is missing path: /{'/'.join(tokens)}",
            )
    return current, tokens[-1]


def _get_pointer(document: Any, pointer: str) -> Any:
    current = document
    for token in _decode_pointer(pointer):
        if isinstance(current, dict) and token in current:
            current = current[token]
        elif isinstance(current, list) and token.isdigit() and int(token) < len(current):
            current = current[int(token)]
        else:
            raise ApiError(422, "Invalid", f"doc is missing path: {pointer}")
    return current


def _add(document: Any, pointer: str, value: Any) -> Any:
    tokens = _decode_pointer(pointer)
    if not tokens:
        return copy.deepcopy(value)
    parent, last = _resolve_parent(document, tokens, "add")
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        if last == "-":
            parent.append(copy.deepcopy(value))
        else:
            index = int(last)
            if index > len(parent):
                raise ApiError(
                    422, "Invalid", f"add operation does not apply: index out of range: {pointer}"
                )
            parent.insert(index, copy.deepcopy(value))
    else:
        raise ApiError(
            422, "Invalid", f"add operation does not apply: doc is missing path: {pointer}"
        )
    return document


def _remove(document: Any, pointer: str) -> Any:
    tokens = _decode_pointer(pointer)
    parent, last = _resolve_parent(document, tokens, "remove")
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        del parent[int(last)]
    else:
        raise ApiError(
            422, "Invalid", f"remove operation does not apply: doc is missing path: {pointer}"
        )
    return document


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 operations applied in order; a failed ``test`` aborts the whole patch."""
    if not isinstance(operations, list):
        raise ApiError(
            400, "BadRequest", "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
        )
    document = copy.deepcopy(target)
    for operation in operations:
        op = operation.get("op")
        path = operation.get("path", "")
        if op == "add":
            document = _add(document, path, operation.get("value"))
        elif op == "remove":
            document = _remove(document, path)
        elif op == "replace":
            _get_pointer(document, path)
            document = _remove(document, path) if _decode_pointer(path) else document
            document = _add(document, path, operation.get("value"))
        elif op in ("move", "copy"):
            value = copy.deepcopy(_get_pointer(document, operation.get("from", "")))
            if op == "move":
                document = _remove(document, operation.get("from", ""))
            document = _add(document, path, value)
        elif op == "test":
            if _get_pointer(document, path) != operation.get("value"):
                raise ApiError(422, "Invalid", f"testing value {path} failed: test failed")
        else:
            raise ApiError(422, "Invalid", f"Unexpected kind: {op}")
    return document


def _list_merge_key(field: str, items: list[Any]) -> str | None:
    if field in _MERGE_KEYS:
        return _MERGE_KEYS[field]
    if field == "ports":
        for key in _PORT_MERGE_KEYS:
            if items and all(isinstance(item, dict) and key in item for item in items):
                return key
    return None


def strategic_merge_patch(target: Any, patch: Any, field: str = "") -> Any:
    """Strategic merge patch for built-in types: merge-keyed lists merge, directives honoured."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain_keys = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            list_field = key.split("/", 1)[1]
            remaining = [v for v in result.get(list_field, []) if v not in (value or [])]
            result[list_field] = remaining
            continue
        if value is None:
            result.pop(key, None)
            continue
        current = result.get(key)
        if isinstance(value, dict):
            merged = strategic_merge_patch(current, value, key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list) and isinstance(current, list):
            result[key] = _merge_list(key, current, value)
        else:
            result[key] = copy.deepcopy(value)
    if isinstance(retain_keys, list):
        result = {k: v for k, v in result.items() if k in retain_keys}
    return result


def _merge_list(field: str, current: list[Any], patch: list[Any]) -> list[Any]:
    if field in _MERGED_PRIMITIVE_LISTS:
        merged = list(current)
        for item in patch:
            if item not in merged:
                merged.append(item)
        return merged
    merge_key = _list_merge_key(field, current + patch)
    if merge_key is None:
        return copy.deepcopy(patch)
    merged = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict):
            continue
        key_value = item.get(merge_key)
        index = next(
            (
                i
                for i, existing in enumerate(merged)
                if isinstance(existing, dict) and existing.get(merge_key) == key_value
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                merged.pop(index)
            continue
        if index is None:
            merged.append({k: v for k, v in item.items() if not k.startswith("$")})
        else:
            merged[index] = strategic_merge_patch(merged[index], item, field)
    return merged


def server_side_apply(existing: dict[str, Any] | None, applied: dict[str, Any]) -> dict[str, Any]:
    """Merge an applied configuration into the live object (lists replaced, maps merged).

    Field ownership and conflict detection of real server-side apply are not modelled:
    every apply behaves as ``--force-conflicts``.
    """
    if existing is None:
        return copy.deepcopy(applied)

    def merge(live: Any, config: Any) -> Any:
        if isinstance(live, dict) and isinstance(config, dict):
            result = copy.deepcopy(live)
            for key, value in config.items():
                result[key] = merge(live.get(key), value)
            return result
        return copy.deepcopy(config)

    return merge(existing, applied)
