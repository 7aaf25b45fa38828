"""Label selectors and field selectors, parsed from query strings or ``metav1.LabelSelector``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kaitosim.api_errors import ApiError, bad_request


@dataclass(frozen=True)
class Requirement:
    """One requirement of a label selector: ``key op values``."""

    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.operator == "=":
            return present and value == self.values[0]
        if self.operator == "!=":
            return not present or value != self.values[0]
        if self.operator == "in":
            return present and value in self.values
        if self.operator == "notin":
            return not present or value not in self.values
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if self.operator in (">", "<"):
            try:
                number = int(value or "")
            except ValueError:
                return False
            limit = int(self.values[0])
            return number > limit if self.operator == ">" else number < limit
        return False


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: dict[str, str] | None) -> bool:
        labels = labels or {}
        return all(requirement.matches(labels) for requirement in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


_SET_EXPR = re.compile(r"^(?P<key>\S+)\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)$")
_EQ_EXPR = re.compile(r"^(?P<key>[^=!<>\s]+)\s*(?P<op>==|=|!=|>|<)\s*(?P<value>\S*)$")


def _check_key(key: str, selector: str) -> None:
    if not _LABEL_KEY.match(key):
        raise bad_request(
            f'unable to parse requirement: invalid label key "{key}": in selector "{selector}"'
        )


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse the ``labelSelector`` query parameter syntax."""
    if not text:
        return LabelSelector()
    requirements: list[Requirement] = []
    for part in _split_top_level(text):
        set_match = _SET_EXPR.match(part)
        if set_match:
            key = set_match.group("key")
            _check_key(key, text)
            values = tuple(v.strip() for v in set_match.group("values").split(",") if v.strip())
            requirements.append(Requirement(key, set_match.group("op"), values))
            continue
        if part.startswith("!"):
            key = part[1:].strip()
            _check_key(key, text)
            requirements.append(Requirement(key, "!"))
            continue
        eq_match = _EQ_EXPR.match(part)
        if eq_match:
            key = eq_match.group("key")
            _check_key(key, text)
            operator = eq_match.group("op")
            operator = "=" if operator == "==" else operator
            requirements.append(Requirement(key, operator, (eq_match.group("value"),)))
            continue
        if re.match(r"^\S+$", part):
            _check_key(part, text)
            requirements.append(Requirement(part, "exists"))
            continue
        raise bad_request(f"unable to parse requirement: found '{part}', expected: valid selector")
    return LabelSelector(tuple(requirements))


def label_selector_from_object(selector: dict[str, Any] | None) -> LabelSelector:
    """Convert a ``metav1.LabelSelector`` (matchLabels/matchExpressions) to a selector."""
    if not selector:
        return LabelSelector()
    requirements = [
        Requirement(str(k), "=", (str(v),)) for k, v in (selector.get("matchLabels") or {}).items()
    ]
    operators = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expression in selector.get("matchExpressions") or []:
        operator = operators.get(str(expression.get("operator")))
        if operator is None:
            raise bad_request(
                f'"{expression.get("operator")}" is not a valid label selector operator'
            )
        requirements.append(
            Requirement(
                str(expression["key"]),
                operator,
                tuple(str(v) for v in expression.get("values") or []),
            )
        )
    return LabelSelector(tuple(requirements))


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    value: str
    negate: bool


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, obj: dict[str, Any]) -> bool:
        for requirement in self.requirements:
            actual = field_value(obj, requirement.path)
            if (actual == requirement.value) == requirement.negate:
                return False
        return True

    def exact_name(self) -> str | None:
        for requirement in self.requirements:
            if requirement.path == "metadata.name" and not requirement.negate:
                return requirement.value
        return None


def field_value(obj: dict[str, Any], path: str) -> str:
    """The string value of a selectable field (``a.b.c``); missing fields compare as ''."""
    if path == "source":
        return str((obj.get("source") or {}).get("component", ""))
    current: Any = obj
    for segment in path.split("."):
        if not isinstance(current, dict):
            return ""
        current = current.get(segment)
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)


def parse_field_selector(text: str | None, supported: set[str]) -> FieldSelector:
    """Parse the ``fieldSelector`` query parameter; unknown fields are a 400 as on a real server."""
    if not text:
        return FieldSelector()
    requirements: list[FieldRequirement] = []
    for part in _split_top_level(text):
        match = re.match(r"^(?P<path>[^=!]+?)\s*(?P<op>==|=|!=)\s*(?P<value>.*)$", part)
        if not match:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        path = match.group("path").strip()
        if path not in supported:
            raise ApiError(400, "BadRequest", f"field label not supported: {path}")
        requirements.append(
            FieldRequirement(path, match.group("value").strip(), match.group("op") == "!=")
        )
    return FieldSelector(tuple(requirements))
