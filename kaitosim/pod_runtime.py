"""What the simulated kubelets hold: container logs and the inference servers behind pods."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from kaitosim.apiserver import LogView
from kaitosim.cluster import Cluster
from kaitosim.selectors import label_selector_from_object


class LogSource(Protocol):
    """Anything with growing log lines (an inference server)."""

    def log_lines(self) -> list[str]: ...


class ServingBackend(Protocol):
    @property
    def url(self) -> str: ...


def rfc3339_nano() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}000Z"


@dataclass
class _LiveSegment:
    source: LogSource
    start: int
    end: int | None = None

    def lines(self) -> list[str]:
        current = self.source.log_lines()
        return current[self.start : self.end]


@dataclass
class ContainerLog:
    """One container's log: static lines written by the simulator plus live lines of its server."""

    segments: list[list[str] | _LiveSegment] = field(default_factory=list)
    finished: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    _stamps: list[str] = field(default_factory=list)

    def write(self, *lines: str) -> None:
        if self.segments and isinstance(self.segments[-1], list):
            self.segments[-1].extend(lines)
        else:
            self.segments.append(list(lines))
        self.changed.set()

    def attach(self, source: LogSource) -> None:
        """Stream ``source``'s lines from now on (until :meth:`detach_and_write`)."""
        self.segments.append(_LiveSegment(source, 0))
        self.changed.set()

    def write_after_live(self, *lines: str) -> None:
        """Append lines at the live source's current end; its later lines follow them."""
        live = self.segments[-1] if self.segments else None
        if isinstance(live, _LiveSegment) and live.end is None:
            cut = len(live.source.log_lines())
            live.end = cut
            self.segments.append(list(lines))
            self.segments.append(_LiveSegment(live.source, cut))
        else:
            self.write(*lines)
        self.changed.set()

    def freeze(self) -> None:
        """Stop following the live source (the process exited): keep what it printed."""
        frozen: list[list[str] | _LiveSegment] = []
        for segment in self.segments:
            frozen.append(list(segment.lines()) if isinstance(segment, _LiveSegment) else segment)
        self.segments = frozen
        self.finished = True
        self.changed.set()

    def plain_lines(self) -> list[str]:
        result: list[str] = []
        for segment in self.segments:
            result.extend(segment.lines() if isinstance(segment, _LiveSegment) else segment)
        return result

    def entries(self) -> list[tuple[str, str]]:
        lines = self.plain_lines()
        while len(self._stamps) < len(lines):
            self._stamps.append(rfc3339_nano())
        return list(zip(self._stamps, lines, strict=False))


class _LiveLogView:
    """A LogView whose ``lines`` are re-read on each access."""

    def __init__(self, log: ContainerLog) -> None:
        self._log = log

    @property
    def lines(self) -> list[tuple[str, str]]:
        return self._log.entries()

    @property
    def finished(self) -> bool:
        return self._log.finished

    @property
    def changed(self) -> asyncio.Event:
        return self._log.changed


class RuntimeState:
    """Container logs and ready inference backends per pod (the API server's ClusterRuntime)."""

    def __init__(
        self, cluster: Cluster, status: Callable[[], dict[str, Any]] | None = None
    ) -> None:
        self._cluster = cluster
        self._logs: dict[tuple[str, str, str], ContainerLog] = {}
        self._previous_logs: dict[tuple[str, str, str], ContainerLog] = {}
        self._backends: dict[tuple[str, str], ServingBackend] = {}
        self._round_robin = itertools.count()
        self._status = status

    # logs -------------------------------------------------------------------
    def new_log(self, namespace: str, pod: str, container: str) -> ContainerLog:
        """A new container instance's log; the last one stays readable with ``previous=true``."""
        key = (namespace, pod, container)
        if key in self._logs:
            self._logs[key].freeze()
            self._previous_logs[key] = self._logs[key]
        log = ContainerLog()
        self._logs[key] = log
        return log

    def terminate(self, namespace: str, pod: str, container: str) -> None:
        """The container exited: its log is final and is the ``previous=true`` log from now on."""
        key = (namespace, pod, container)
        log = self._logs.get(key)
        if log is not None:
            log.freeze()
            self._previous_logs[key] = log

    def log(self, namespace: str, pod: str, container: str) -> ContainerLog | None:
        return self._logs.get((namespace, pod, container))

    def forget_pod(self, namespace: str, pod: str) -> None:
        for key in [k for k in self._logs if k[0] == namespace and k[1] == pod]:
            self._logs[key].finished = True
            self._logs[key].changed.set()
            del self._logs[key]
            self._previous_logs.pop(key, None)
        self._backends.pop((namespace, pod), None)

    def container_log(
        self, namespace: str, pod: str, container: str, previous: bool = False
    ) -> LogView | None:
        logs = self._previous_logs if previous else self._logs
        log = logs.get((namespace, pod, container))
        return None if log is None else _LiveLogView(log)

    # serving ----------------------------------------------------------------
    def set_backend(self, namespace: str, pod: str, backend: ServingBackend | None) -> None:
        if backend is None:
            self._backends.pop((namespace, pod), None)
        else:
            self._backends[(namespace, pod)] = backend

    def service_backend(self, namespace: str, service: dict[str, Any], port: str) -> str | None:
        """A ready pod's server behind ``service`` (like kube-proxy picking an endpoint)."""
        selector = (service.get("spec") or {}).get("selector") or {}
        if not selector:
            return None
        pods = self._cluster.resource("", "v1", "pods")
        items, _ = self._cluster.list(
            pods, namespace, label_selector_from_object({"matchLabels": selector})
        )
        ready = []
        for pod in items:
            conditions = (pod.get("status") or {}).get("conditions") or []
            is_ready = any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in conditions
            )
            backend = self._backends.get((namespace, pod["metadata"]["name"]))
            if is_ready and backend is not None and not pod["metadata"].get("deletionTimestamp"):
                ready.append(backend)
        if not ready:
            return None
        return ready[next(self._round_robin) % len(ready)].url

    def status(self) -> dict[str, Any]:
        base = {"backends": len(self._backends), "containerLogs": len(self._logs)}
        if self._status is not None:
            base.update(self._status())
        return base
