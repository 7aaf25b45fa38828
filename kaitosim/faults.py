"""Injected failures, per Workspace (annotation) or cluster-wide (CLI / admin endpoint)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FAULT_ANNOTATION = "kaitosim.kaito.sh/fault"

WORKSPACE_FAULTS = ("quota", "capacity", "image-pull", "crashloop", "node-lost")
API_FAULTS = ("api-500", "api-500-burst", "api-drop", "watch-drop")
KNOWN_FAULTS = WORKSPACE_FAULTS + API_FAULTS
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


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
    """Which faults are switched on.

    ``api-500``        every ``api_500_every``-th API request answers 500.
    ``api-500-burst``  runs of ``burst_length`` consecutive API requests answer 500, one run in
                       every ``burst_period`` requests (longer than a client's quick retries).
    ``api-drop``       every ``drop_every``-th write (POST, PUT, PATCH, DELETE) is carried out,
                       then its connection is closed before the answer: the client cannot tell
                       whether it happened.
    ``watch-drop``     watches are cut half a second after they start.

    ``injected`` counts what was done (by fault; by method for drops), so a test can tell.
    """

    global_faults: set[str] = field(default_factory=set)
    api_500_every: int = 3
    burst_length: int = 3
    burst_period: int = 20
    drop_every: int = 3
    injected: dict[str, int] = field(default_factory=dict)
    _api_requests: int = 0
    _burst_requests: int = 0
    _drop_requests: int = 0
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
        if "api-500-burst" in self.global_faults:
            self._burst_requests += 1
            failed = (self._burst_requests - 1) % self.burst_period < self.burst_length
            return self._counted("api-500-burst", failed)
        if "api-500" in self.global_faults:
            self._api_requests += 1
            return self._counted("api-500", self._api_requests % self.api_500_every == 0)
        if workspace is not None and "api-500" in self.annotation_faults(workspace):
            uid = str((workspace.get("metadata") or {}).get("uid"))
            count = self._workspace_requests.get(uid, 0) + 1
            self._workspace_requests[uid] = count
            return count % 2 == 0
        return False

    def should_drop_connection(self, method: str) -> bool:
        """Under ``api-drop``: whether to close this request's connection after carrying it out."""
        if "api-drop" not in self.global_faults or method not in WRITE_METHODS:
            return False
        self._drop_requests += 1
        return self._counted(f"api-drop {method}", self._drop_requests % self.drop_every == 0)

    def _counted(self, key: str, injected: bool) -> bool:
        if injected:
            self.injected[key] = self.injected.get(key, 0) + 1
        return injected

    def watch_drop(self) -> bool:
        return "watch-drop" in self.global_faults
