"""Injected failures, per Workspace (annotation) or cluster-wide (CLI / admin endpoint)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FAULT_ANNOTATION = "kaitosim.kaito.sh/fault"

WORKSPACE_FAULTS = ("quota", "capacity", "image-pull", "crashloop", "node-lost")
API_FAULTS = ("api-500", "watch-drop")
KNOWN_FAULTS = WORKSPACE_FAULTS + API_FAULTS


def parse_fault_list(text: str | None) -> set[str]:
    """``"quota, api-500"`` -> {"quota", "api-500"}; unknown names raise ValueError."""
    names = {part.strip() for part in (text or "").split(",") if part.strip()}
    unknown = names - set(KNOWN_FAULTS)
    if unknown:
        raise ValueError(
            f"unknown fault(s): {', '.join(sorted(unknown))}; known: {', '.join(KNOWN_FAULTS)}"
        )
    return names


@dataclass
class FaultRegistry:
    """Which faults are switched on. ``api-500`` fails every ``api_500_every``-th API request."""

    global_faults: set[str] = field(default_factory=set)
    api_500_every: int = 3
    _api_requests: int = 0
    _workspace_requests: dict[str, int] = field(default_factory=dict)

    def set_global(self, names: set[str]) -> None:
        self.global_faults = set(names)

    def add_global(self, names: set[str]) -> None:
        self.global_faults |= names

    def clear(self) -> None:
        self.global_faults.clear()

    def for_workspace(self, workspace: dict[str, Any]) -> set[str]:
        annotations = (workspace.get("metadata") or {}).get("annotations") or {}
        try:
            annotated = parse_fault_list(annotations.get(FAULT_ANNOTATION))
        except ValueError:
            annotated = set()
        return (self.global_faults | annotated) & set(WORKSPACE_FAULTS)

    def annotation_faults(self, workspace: dict[str, Any] | None) -> set[str]:
        if workspace is None:
            return set()
        annotations = (workspace.get("metadata") or {}).get("annotations") or {}
        try:
            return parse_fault_list(annotations.get(FAULT_ANNOTATION))
        except ValueError:
            return set()

    def should_fail_request(self, workspace: dict[str, Any] | None = None) -> bool:
        """Deterministically pick requests to fail with 500 (cluster-wide or for one workspace)."""
        if "api-500" in self.global_faults:
            self._api_requests += 1
            return self._api_requests % self.api_500_every == 0
        if workspace is not None and "api-500" in self.annotation_faults(workspace):
            uid = str((workspace.get("metadata") or {}).get("uid"))
            count = self._workspace_requests.get(uid, 0) + 1
            self._workspace_requests[uid] = count
            return count % 2 == 0
        return False

    def watch_drop(self) -> bool:
        return "watch-drop" in self.global_faults
