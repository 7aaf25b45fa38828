"""Structural-schema handling of custom resources: pruning, defaulting and OpenAPI v3 validation.

This follows what the API server does for a CRD's ``openAPIV3Schema``: unknown fields are
pruned (or reported under ``fieldValidation=Strict``), ``default`` values are applied, then
types, ``required``, ``enum``, ``pattern``, length and range constraints are checked.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any

from kaitosim.api_errors import FieldCause

_ROOT_META_FIELDS = ("apiVersion", "kind", "metadata")
_JSON_TYPE_NAMES = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


@dataclass
class SchemaOutcome:
    """The pruned/defaulted object plus what was wrong with it."""

    obj: dict[str, Any]
    errors: list[FieldCause] = field(default_factory=list)
    unknown_fields: list[str] = field(default_factory=list)


def _render(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(_JSON_TYPE_NAMES.get(type(value), "null"))


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return _JSON_TYPE_NAMES.get(type(value), "object")


def _matches_type(value: Any, expected: str) -> bool:
    actual = _type_of(value)
    if expected == "number":
        return actual in ("integer", "number")
    if expected == "integer" and actual == "number":
        return float(value).is_integer()
    return actual == expected


class _Walker:
    def __init__(self, strict_unknown: bool) -> None:
        self.errors: list[FieldCause] = []
        self.unknown: list[str] = []
        self.strict_unknown = strict_unknown

    def walk(self, value: Any, schema: dict[str, Any], path: str) -> Any:
        if value is None:
            if schema.get("nullable"):
                return None
            if "type" in schema:
                self.errors.append(
                    FieldCause(
                        "FieldValueTypeInvalid",
                        f'Invalid value: "null": {path} in body must be of type '
                        f'{schema["type"]}: "null"',
                        path,
                    )
                )
            return None
        if schema.get("x-kubernetes-int-or-string"):
            if not isinstance(value, (int, str)) or isinstance(value, bool):
                self.errors.append(
                    FieldCause(
                        "FieldValueInvalid",
                        f"Invalid value: {_render(value)}: {path} in body must be of type "
                        "integer,string",
                        path,
                    )
                )
            return value
        expected = schema.get("type")
        if expected and not _matches_type(value, expected):
            self.errors.append(
                FieldCause(
                    "FieldValueTypeInvalid",
                    f'Invalid value: "{_type_of(value)}": {path} in body must be of type '
                    f'{expected}: "{_type_of(value)}"',
                    path,
                )
            )
            return value
        if isinstance(value, dict):
            return self._walk_object(value, schema, path)
        if isinstance(value, list):
            items = schema.get("items")
            if isinstance(items, dict):
                return [
                    self.walk(item, items, f"{path}[{index}]") for index, item in enumerate(value)
                ]
            return value
        self._check_scalar(value, schema, path)
        return value

    def _walk_object(
        self, value: dict[str, Any], schema: dict[str, Any], path: str
    ) -> dict[str, Any]:
        properties: dict[str, Any] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        result: dict[str, Any] = {}
        for key, item in value.items():
            child_path = f"{path}.{key}" if path else key
            if key in properties:
                result[key] = self.walk(item, properties[key], child_path)
            elif isinstance(additional, dict):
                result[key] = self.walk(item, additional, child_path)
            elif (
                additional is True
                or preserve
                or (not properties and additional is None and not schema.get("type"))
            ) or (
                not properties
                and additional is None
                and schema.get("type") == "object"
                and path.endswith("metadata")
            ):
                result[key] = item
            else:
                self.unknown.append(child_path)
        for key, child in properties.items():
            if key not in result and "default" in child:
                result[key] = copy.deepcopy(child["default"])
                if isinstance(result[key], dict):
                    result[key] = self.walk(result[key], child, f"{path}.{key}" if path else key)
        for required in schema.get("required") or []:
            if required not in result:
                child_path = f"{path}.{required}" if path else required
                self.errors.append(FieldCause("FieldValueRequired", "Required value", child_path))
        return result

    def _check_scalar(self, value: Any, schema: dict[str, Any], path: str) -> None:
        enum = schema.get("enum")
        if enum is not None and value not in enum:
            supported = ", ".join(_render(v) for v in enum)
            self.errors.append(
                FieldCause(
                    "FieldValueNotSupported",
                    f"Unsupported value: {_render(value)}: supported values: {supported}",
                    path,
                )
            )
        if isinstance(value, str):
            pattern = schema.get("pattern")
            if pattern and not re.search(pattern, value):
                self.errors.append(
                    FieldCause(
                        "FieldValueInvalid",
                        f"Invalid value: {_render(value)}: {path} in body should match '{pattern}'",
                        path,
                    )
                )
            max_length = schema.get("maxLength")
            if max_length is not None and len(value) > int(max_length):
                self.errors.append(
                    FieldCause(
                        "FieldValueTooLong",
                        f"Too long: may not be more than {max_length} bytes",
                        path,
                    )
                )
            min_length = schema.get("minLength")
            if min_length is not None and len(value) < int(min_length):
                self.errors.append(
                    FieldCause(
                        "FieldValueInvalid",
                        f"Invalid value: {_render(value)}: {path} in body should be at least "
                        f"{min_length} chars long",
                        path,
                    )
                )
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            minimum = schema.get("minimum")
            if minimum is not None and value < minimum:
                self.errors.append(
                    FieldCause(
                        "FieldValueInvalid",
                        f"Invalid value: {_render(value)}: {path} in body should be greater "
                        f"than or equal to {minimum}",
                        path,
                    )
                )
            maximum = schema.get("maximum")
            if maximum is not None and value > maximum:
                self.errors.append(
                    FieldCause(
                        "FieldValueInvalid",
                        f"Invalid value: {_render(value)}: {path} in body should be less than "
                        f"or equal to {maximum}",
                        path,
                    )
                )


def apply_schema(
    obj: dict[str, Any], schema: dict[str, Any], *, strict_unknown: bool = False
) -> SchemaOutcome:
    """Prune, default and validate a custom resource against its version's ``openAPIV3Schema``."""
    walker = _Walker(strict_unknown)
    properties: dict[str, Any] = schema.get("properties") or {}
    result: dict[str, Any] = {}
    for key, value in obj.items():
        if key in _ROOT_META_FIELDS:
            result[key] = value
        elif key in properties:
            result[key] = walker.walk(value, properties[key], key)
        elif schema.get("x-kubernetes-preserve-unknown-fields"):
            result[key] = value
        else:
            walker.unknown.append(key)
    for key, child in properties.items():
        if key not in result and key not in _ROOT_META_FIELDS and "default" in child:
            result[key] = copy.deepcopy(child["default"])
    for required in schema.get("required") or []:
        if required not in result:
            walker.errors.append(FieldCause("FieldValueRequired", "Required value", required))
    return SchemaOutcome(result, walker.errors, walker.unknown)
