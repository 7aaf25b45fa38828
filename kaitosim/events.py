"""An event recorder like client-go's: core/v1 Events about objects, aggregated by count."""

from __future__ import annotations

import contextlib
import copy
import time
from typing import Any

from kaitosim.api_errors import ApiError
from kaitosim.cluster import Cluster, now_rfc3339


class EventRecorder:
    """Records Events in the involved object's namespace (``default`` if cluster-scoped)."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._events = cluster.resource("", "v1", "events")
        self._names: dict[tuple[str, str, str, str, str], str] = {}
        self._last_nanos = 0

    def _unique_nanos(self) -> int:
        nanos = max(time.time_ns(), self._last_nanos + 1)
        self._last_nanos = nanos
        return nanos

    def record(
        self,
        involved: dict[str, Any],
        event_type: str,
        reason: str,
        message: str,
        component: str,
        host: str | None = None,
    ) -> None:
        metadata = involved.get("metadata") or {}
        namespace = metadata.get("namespace") or "default"
        if not self._cluster.namespace_exists(namespace):
            return
        key = (str(metadata.get("uid")), event_type, reason, message, component)
        timestamp = now_rfc3339()
        existing_name = self._names.get(key)
        if existing_name is not None:
            existing = self._cluster.find(self._events, namespace, existing_name)
            if existing is not None:
                updated = copy.deepcopy(existing)
                updated["count"] = int(updated.get("count", 1)) + 1
                updated["lastTimestamp"] = timestamp
                with contextlib.suppress(ApiError):
                    self._cluster.update(
                        self._events, namespace, existing_name, updated, internal=True
                    )
                return
        name = f"{metadata.get('name')}.{self._unique_nanos():x}"
        source: dict[str, str] = {"component": component}
        if host:
            source["host"] = host
        event: dict[str, Any] = {
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {
                "kind": involved.get("kind"),
                "namespace": metadata.get("namespace"),
                "name": metadata.get("name"),
                "uid": metadata.get("uid"),
                "apiVersion": involved.get("apiVersion"),
                "resourceVersion": metadata.get("resourceVersion"),
            },
            "reason": reason,
            "message": message,
            "source": source,
            "firstTimestamp": timestamp,
            "lastTimestamp": timestamp,
            "count": 1,
            "type": event_type,
            "eventTime": None,
            "reportingComponent": component,
            "reportingInstance": host or "",
        }
        if not event["involvedObject"]["namespace"]:
            del event["involvedObject"]["namespace"]
        try:
            self._cluster.create(self._events, namespace, event, internal=True)
        except ApiError:
            return
        self._names[key] = name
