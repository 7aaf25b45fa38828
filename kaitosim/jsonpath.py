"""The subset of Kubernetes JSONPath used by CRD ``additionalPrinterColumns``.

Supported: ``.field`` (with ``\\.`` escapes), ``['field']``, ``[n]``, ``[*]`` and filters
``[?(@.a.b=="v")]`` / ``!=``. Evaluation returns every match, in document order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_FILTER = re.compile(r"^\?\(@(?P<path>[^=!]*)\s*(?P<op>==|!=)\s*(?P<value>.+)\)$")


@dataclass(frozen=True)
class _Step:
    kind: str  # "field", "index", "wildcard", "filter"
    name: str = ""
    index: int = 0
    filter_path: tuple[str, ...] = ()
    filter_op: str = "=="
    filter_value: Any = None


def _parse_field_path(text: str) -> tuple[str, ...]:
    return tuple(part for part in _split_fields(text) if part)


def _split_fields(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            current.append(text[index + 1])
            index += 2
            continue
        if char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    parts.append("".join(current))
    return parts


def _parse_literal(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def parse(expression: str) -> list[_Step]:
    """Parse a JSONPath like ``.status.conditions[?(@.type=="Ready")].status``."""
    text = expression.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    if text.startswith("$"):
        text = text[1:]
    steps: list[_Step] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == ".":
            index += 1
            start = index
            while index < len(text) and text[index] not in ".[":
                if text[index] == "\\":
                    index += 1
                index += 1
            name = "".join(_split_fields(text[start:index]))
            if name:
                steps.append(_Step("field", name=name))
        elif char == "[":
            depth = 0
            end = index
            while end < len(text):
                if text[end] == "[":
                    depth += 1
                elif text[end] == "]":
                    depth -= 1
                    if depth == 0:
                        break
                end += 1
            inner = text[index + 1 : end].strip()
            index = end + 1
            if inner == "*":
                steps.append(_Step("wildcard"))
            elif inner.lstrip("-").isdigit():
                steps.append(_Step("index", index=int(inner)))
            elif inner[:1] in "'\"":
                steps.append(_Step("field", name=inner[1:-1]))
            else:
                match = _FILTER.match(inner)
                if not match:
                    raise ValueError(f"unsupported JSONPath expression: {expression}")
                steps.append(
                    _Step(
                        "filter",
                        filter_path=_parse_field_path(match.group("path")),
                        filter_op=match.group("op"),
                        filter_value=_parse_literal(match.group("value")),
                    )
                )
        else:
            start = index
            while index < len(text) and text[index] not in ".[":
                index += 1
            steps.append(_Step("field", name=text[start:index]))
    return steps


def _lookup(value: Any, path: tuple[str, ...]) -> Any:
    current = value
    for part in path:
        if not isinstance(current, dict) or part not in current:
            return None
        current = current[part]
    return current


def evaluate(expression: str, document: Any) -> list[Any]:
    """All values matched by ``expression`` in ``document``."""
    current: list[Any] = [document]
    for step in parse(expression):
        following: list[Any] = []
        for value in current:
            if step.kind == "field":
                if isinstance(value, dict) and step.name in value:
                    following.append(value[step.name])
            elif step.kind == "index":
                if isinstance(value, list) and -len(value) <= step.index < len(value):
                    following.append(value[step.index])
            elif step.kind == "wildcard":
                if isinstance(value, list):
                    following.extend(value)
                elif isinstance(value, dict):
                    following.extend(value.values())
            elif step.kind == "filter" and isinstance(value, list):
                for item in value:
                    actual = _lookup(item, step.filter_path)
                    if (actual == step.filter_value) == (step.filter_op == "=="):
                        following.append(item)
        current = following
    return current
