"""The cluster's object storage: objects, the global resourceVersion counter, the watch event log.

Like etcd behind the API server, every write gets the next global resourceVersion and is
appended to a bounded event history. Watchers resume from any resourceVersion still in the
history; an older one gets ``410 Gone`` ("too old resource version").
"""

from __future__ import annotations

import asyncio
import builtins
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kaitosim.api_errors import ApiError
from kaitosim.selectors import FieldSelector, LabelSelector

ObjectKey = tuple[str, str]  # (namespace, name); namespace is "" for cluster-scoped objects


@dataclass(frozen=True)
class StoredEvent:
    """One committed change."""

    resource_version: int
    type: str  # ADDED, MODIFIED, DELETED
    bucket: str
    namespace: str
    name: str
    obj: dict[str, Any]
    previous: dict[str, Any] | None


@dataclass(eq=False)
class Watcher:
    """A live watch: receives the (filtered) events of one bucket on its queue."""

    bucket: str
    namespace: str | None
    label_selector: LabelSelector
    field_selector: FieldSelector
    queue: asyncio.Queue[tuple[str, dict[str, Any], int] | None] = field(
        default_factory=asyncio.Queue
    )
    closed: bool = False

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        metadata = obj.get("metadata") or {}
        if self.namespace is not None and metadata.get("namespace", "") != self.namespace:
            return False
        return self.label_selector.matches(metadata.get("labels")) and self.field_selector.matches(
            obj
        )

    def translate(self, event: StoredEvent) -> tuple[str, dict[str, Any]] | None:
        """The event as this watcher sees it, with selector transitions (ADDED/DELETED)."""
        now_matches = self.matches(event.obj)
        if event.type == "ADDED":
            return ("ADDED", event.obj) if now_matches else None
        if event.type == "DELETED":
            return ("DELETED", event.obj) if now_matches else None
        was_matching = self.matches(event.previous)
        if now_matches and was_matching:
            return ("MODIFIED", event.obj)
        if now_matches:
            return ("ADDED", event.obj)
        if was_matching:
            return ("DELETED", event.obj)
        return None

    def offer(self, event: StoredEvent) -> None:
        if self.closed or event.bucket != self.bucket:
            return
        translated = self.translate(event)
        if translated is not None:
            self.queue.put_nowait((translated[0], translated[1], event.resource_version))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)


class ObjectStore:
    """In-memory objects per bucket, with a bounded history of events for watch resumption."""

    def __init__(self, history_limit: int = 5000) -> None:
        self._objects: dict[str, dict[ObjectKey, dict[str, Any]]] = {}
        self._resource_version = 0
        self._history: deque[StoredEvent] = deque(maxlen=history_limit)
        self._compacted_through = 0
        self._watchers: set[Watcher] = set()
        self._listeners: list[Callable[[StoredEvent], None]] = []

    @property
    def resource_version(self) -> int:
        return self._resource_version

    def next_resource_version(self) -> int:
        self._resource_version += 1
        return self._resource_version

    def get(self, bucket: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects.get(bucket, {}).get((namespace, name))

    def list(self, bucket: str, namespace: str | None = None) -> list[dict[str, Any]]:
        objects = self._objects.get(bucket, {})
        items = [obj for (ns, _), obj in objects.items() if namespace is None or ns == namespace]
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return items

    def buckets(self) -> builtins.list[str]:
        return list(self._objects)

    def commit(self, event_type: str, bucket: str, obj: dict[str, Any]) -> StoredEvent:
        """Store (or remove, for DELETED) ``obj``, stamping it with the next resourceVersion.

        The stored dict must not be mutated afterwards: writers always store fresh copies.
        """
        metadata = obj["metadata"]
        key = (metadata.get("namespace", "") or "", metadata["name"])
        previous = self._objects.get(bucket, {}).get(key)
        version = self.next_resource_version()
        metadata["resourceVersion"] = str(version)
        if event_type == "DELETED":
            self._objects.get(bucket, {}).pop(key, None)
        else:
            self._objects.setdefault(bucket, {})[key] = obj
        event = StoredEvent(version, event_type, bucket, key[0], key[1], obj, previous)
        if self._history.maxlen is not None and len(self._history) == self._history.maxlen:
            self._compacted_through = self._history[0].resource_version
        self._history.append(event)
        for watcher in list(self._watchers):
            watcher.offer(event)
        for listener in list(self._listeners):
            listener(event)
        return event

    def add_listener(self, listener: Callable[[StoredEvent], None]) -> None:
        self._listeners.append(listener)

    def compact(self) -> int:
        """Forget the event history (as etcd compaction does); returns the compacted revision."""
        self._compacted_through = self._resource_version
        self._history.clear()
        return self._compacted_through

    def oldest_resumable_version(self) -> int:
        return self._compacted_through

    def watch(
        self,
        bucket: str,
        namespace: str | None,
        label_selector: LabelSelector,
        field_selector: FieldSelector,
        since: int | None,
    ) -> Watcher:
        """Start a watch. ``since=None`` starts now; otherwise replays events after ``since``.

        Raises a 410 ApiError when ``since`` predates the retained history.
        """
        watcher = Watcher(bucket, namespace, label_selector, field_selector)
        if since is not None:
            if since < self._compacted_through:
                raise ApiError(
                    410,
                    "Expired",
                    f"too old resource version: {since} ({self._compacted_through + 1})",
                )
            for event in self._history:
                if event.resource_version > since:
                    watcher.offer(event)
        self._watchers.add(watcher)
        return watcher

    def stop_watch(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)
        watcher.close()

    def close_all_watches(self) -> None:
        for watcher in list(self._watchers):
            self.stop_watch(watcher)

    def watcher_count(self) -> int:
        return len(self._watchers)
