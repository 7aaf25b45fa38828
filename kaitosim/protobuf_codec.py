"""Decoding the Kubernetes protobuf wire format for the few kinds kubectl sends that way.

``kubectl create secret|configmap|namespace`` post ``application/vnd.kubernetes.protobuf``
bodies: the ``k8s\\x00`` magic, then a ``runtime.Unknown`` envelope whose ``raw`` field holds the
object. This decodes those kinds (and DeleteOptions) to the same dicts JSON would give.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

PROTOBUF_CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
_MAGIC = b"k8s\x00"

# field number -> (json name, kind); kinds: string, bytes, int, bool, time, map, bytesmap,
# strings (repeated string), or a nested schema name (prefix "msg:" / "msgs:" for repeated).
_Schema = dict[int, tuple[str, str]]
_SCHEMAS: dict[str, _Schema] = {
    "TypeMeta": {1: ("apiVersion", "string"), 2: ("kind", "string")},
    "Unknown": {
        1: ("typeMeta", "msg:TypeMeta"),
        2: ("raw", "bytes"),
        3: ("contentEncoding", "string"),
        4: ("contentType", "string"),
    },
    "OwnerReference": {
        1: ("kind", "string"),
        2: ("name", "string"),
        3: ("uid", "string"),
        4: ("controller", "bool"),
        5: ("apiVersion", "string"),
        7: ("blockOwnerDeletion", "bool"),
    },
    "ObjectMeta": {
        1: ("name", "string"),
        2: ("generateName", "string"),
        3: ("namespace", "string"),
        5: ("uid", "string"),
        6: ("resourceVersion", "string"),
        7: ("generation", "int"),
        8: ("creationTimestamp", "time"),
        9: ("deletionTimestamp", "time"),
        10: ("deletionGracePeriodSeconds", "int"),
        11: ("labels", "map"),
        12: ("annotations", "map"),
        13: ("ownerReferences", "msgs:OwnerReference"),
        14: ("finalizers", "strings"),
    },
    "Secret": {
        1: ("metadata", "msg:ObjectMeta"),
        2: ("data", "bytesmap"),
        3: ("type", "string"),
        4: ("stringData", "map"),
        5: ("immutable", "bool"),
    },
    "ConfigMap": {
        1: ("metadata", "msg:ObjectMeta"),
        2: ("data", "map"),
        3: ("binaryData", "bytesmap"),
        4: ("immutable", "bool"),
    },
    "NamespaceSpec": {1: ("finalizers", "strings")},
    "NamespaceStatus": {1: ("phase", "string")},
    "Namespace": {
        1: ("metadata", "msg:ObjectMeta"),
        2: ("spec", "msg:NamespaceSpec"),
        3: ("status", "msg:NamespaceStatus"),
    },
    "Preconditions": {1: ("uid", "string"), 2: ("resourceVersion", "string")},
    "DeleteOptions": {
        1: ("gracePeriodSeconds", "int"),
        2: ("preconditions", "msg:Preconditions"),
        3: ("orphanDependents", "bool"),
        4: ("propagationPolicy", "string"),
        5: ("dryRun", "strings"),
    },
    "ResourceAttributes": {
        1: ("namespace", "string"),
        2: ("verb", "string"),
        3: ("group", "string"),
        4: ("version", "string"),
        5: ("resource", "string"),
        6: ("subresource", "string"),
        7: ("name", "string"),
    },
    "NonResourceAttributes": {1: ("path", "string"), 2: ("verb", "string")},
    "SelfSubjectAccessReviewSpec": {
        1: ("resourceAttributes", "msg:ResourceAttributes"),
        2: ("nonResourceAttributes", "msg:NonResourceAttributes"),
    },
    "SelfSubjectAccessReview": {
        1: ("metadata", "msg:ObjectMeta"),
        2: ("spec", "msg:SelfSubjectAccessReviewSpec"),
    },
    "MapEntry": {1: ("key", "string"), 2: ("value", "bytes")},
    "Time": {1: ("seconds", "int"), 2: ("nanos", "int")},
}


class ProtobufDecodeError(ValueError):
    pass


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if offset >= len(data):
            raise ProtobufDecodeError("truncated varint")
        byte = data[offset]
        offset += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, offset
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    fields: list[tuple[int, int, Any]] = []
    offset = 0
    while offset < len(data):
        key, offset = _varint(data, offset)
        number, wire_type = key >> 3, key & 7
        value: int | bytes
        if wire_type == 0:
            value, offset = _varint(data, offset)
        elif wire_type == 2:
            length, offset = _varint(data, offset)
            value = data[offset : offset + length]
            offset += length
        elif wire_type == 1:
            value = data[offset : offset + 8]
            offset += 8
        elif wire_type == 5:
            value = data[offset : offset + 4]
            offset += 4
        else:
            raise ProtobufDecodeError(f"unsupported wire type {wire_type}")
        fields.append((number, wire_type, value))
    return fields


def _decode(data: bytes, schema_name: str) -> dict[str, Any]:
    schema = _SCHEMAS[schema_name]
    result: dict[str, Any] = {}
    for number, _wire_type, value in _fields(data):
        if number not in schema:
            continue
        name, kind = schema[number]
        if kind == "string":
            if value:  # gogo-protobuf writes empty strings; JSON would omit them
                result[name] = bytes(value).decode()
        elif kind == "bytes":
            result[name] = bytes(value)
        elif kind == "int":
            if value:
                result[name] = int(value)
        elif kind == "bool":
            if value:
                result[name] = bool(value)
        elif kind == "time":
            parsed = _decode(bytes(value), "Time")
            moment = datetime.fromtimestamp(int(parsed.get("seconds", 0)), UTC)
            result[name] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        elif kind in ("map", "bytesmap"):
            entry = _decode(bytes(value), "MapEntry")
            raw = entry.get("value", b"")
            converted = base64.b64encode(raw).decode() if kind == "bytesmap" else raw.decode()
            result.setdefault(name, {})[entry.get("key", "")] = converted
        elif kind == "strings":
            result.setdefault(name, []).append(bytes(value).decode())
        elif kind.startswith("msgs:"):
            result.setdefault(name, []).append(_decode(bytes(value), kind[5:]))
        elif kind.startswith("msg:"):
            result[name] = _decode(bytes(value), kind[4:])
    return result


def decode_object(body: bytes) -> dict[str, Any]:
    """Decode a ``k8s\\x00``-framed protobuf object into its JSON form."""
    if not body.startswith(_MAGIC):
        raise ProtobufDecodeError("missing the k8s protobuf magic prefix")
    envelope = _decode(body[len(_MAGIC) :], "Unknown")
    type_meta = envelope.get("typeMeta") or {}
    kind = str(type_meta.get("kind", ""))
    if kind not in _SCHEMAS or kind in ("Unknown", "TypeMeta", "MapEntry", "Time"):
        raise ProtobufDecodeError(
            f"kaitosim cannot decode protobuf bodies of kind {kind or 'unknown'}; send JSON"
        )
    obj = _decode(bytes(envelope.get("raw", b"")), kind)
    if type_meta.get("apiVersion"):
        obj["apiVersion"] = type_meta["apiVersion"]
    obj["kind"] = kind
    return obj
