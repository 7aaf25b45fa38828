"""Server-side printing: ``meta.k8s.io/v1`` Table responses, as ``kubectl get`` requests them.

Custom resources use their CRD's ``additionalPrinterColumns`` (JSONPath), built-in types use
the same columns as the Kubernetes printers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kaitosim import jsonpath
from kaitosim.resource_types import ResourceType

_NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although some "
    "resources "
    "may allow a client to request the generation of an appropriate name automatically. Name is "
    "primarily "
    "intended for creation idempotence and configuration definition. Cannot be updated. "
    "More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
_AGE_DESCRIPTION = (
    "CreationTimestamp is a timestamp representing the server time when this object was created. "
    "It is not guaranteed to be set in happens-before order across separate operations. "
    "Clients may not set this value. It is represented in RFC3339 form and is in UTC."
)


def human_duration(seconds: float) -> str:
    """``k8s.io/apimachinery/pkg/util/duration.HumanDuration``."""
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    total = int(seconds)
    if total < 60 * 2:
        return f"{total}s"
    minutes = total // 60
    if minutes < 10:
        rest = total % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = hours // 24
        rest = days % 365
        return f"{days // 365}y{rest}d" if rest else f"{days // 365}y"
    return f"{hours // 24 // 365}y"


def age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    try:
        created = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<invalid>"
    return human_duration((datetime.now(UTC) - created).total_seconds())


def _column(
    name: str, type_: str = "string", description: str = "", priority: int = 0, format_: str = ""
) -> dict[str, Any]:
    return {
        "name": name,
        "type": type_,
        "format": format_,
        "description": description,
        "priority": priority,
    }


def _name_column() -> dict[str, Any]:
    return _column("Name", "string", _NAME_DESCRIPTION, 0, "name")


def _age_column() -> dict[str, Any]:
    return _column("Age", "string", _AGE_DESCRIPTION)


Row = list[Any]
_Printer = tuple[list[dict[str, Any]], Callable[[dict[str, Any]], Row]]


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _pod_status_reason(pod: dict[str, Any]) -> str:
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for container in reversed(status.get("containerStatuses") or []):
        state = container.get("state") or {}
        if "waiting" in state and state["waiting"].get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state:
            terminated = state["terminated"]
            reason = terminated.get("reason") or f"ExitCode:{terminated.get('exitCode', 0)}"
    if _meta(pod).get("deletionTimestamp"):
        reason = "Terminating"
    return reason


def _pod_row(pod: dict[str, Any]) -> Row:
    status = pod.get("status") or {}
    containers = (pod.get("spec") or {}).get("containers") or []
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(int(c.get("restartCount", 0)) for c in statuses)
    last_restart = max(
        (
            ((c.get("lastState") or {}).get("terminated") or {}).get("finishedAt") or ""
            for c in statuses
        ),
        default="",
    )
    restart_text = (
        f"{restarts} ({age(last_restart)} ago)" if restarts and last_restart else str(restarts)
    )
    return [
        _meta(pod).get("name"),
        f"{ready}/{len(containers)}",
        _pod_status_reason(pod),
        restart_text,
        age(_meta(pod).get("creationTimestamp")),
        status.get("podIP") or "<none>",
        (pod.get("spec") or {}).get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        "<none>",
    ]


def _node_row(node: dict[str, Any]) -> Row:
    status = node.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    state = (
        "Ready" if ready and ready.get("status") == "True" else ("NotReady" if ready else "Unknown")
    )
    if (node.get("spec") or {}).get("unschedulable"):
        state += ",SchedulingDisabled"
    labels = _meta(node).get("labels") or {}
    roles = sorted(
        key.split("/", 1)[1]
        for key in labels
        if key.startswith("node-role.kubernetes.io/") and "/" in key
    )
    info = status.get("nodeInfo") or {}
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    return [
        _meta(node).get("name"),
        state,
        ",".join(roles) or "<none>",
        age(_meta(node).get("creationTimestamp")),
        info.get("kubeletVersion", ""),
        addresses.get("InternalIP", "<none>"),
        addresses.get("ExternalIP", "<none>"),
        info.get("osImage", "<unknown>"),
        info.get("kernelVersion", "<unknown>"),
        info.get("containerRuntimeVersion", "<unknown>"),
    ]


def _port_text(port: dict[str, Any]) -> str:
    node_port = f":{port['nodePort']}" if port.get("nodePort") else ""
    return f"{port.get('port')}{node_port}/{port.get('protocol', 'TCP')}"


def _service_row(service: dict[str, Any]) -> Row:
    spec = service.get("spec") or {}
    ports = ",".join(_port_text(p) for p in spec.get("ports") or [])
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    external = ",".join(i.get("ip") or i.get("hostname") or "" for i in ingress)
    if not external:
        external = "<pending>" if spec.get("type") == "LoadBalancer" else "<none>"
    selector = (
        ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items())) or "<none>"
    )
    return [
        _meta(service).get("name"),
        spec.get("type", "ClusterIP"),
        spec.get("clusterIP") or "<none>",
        external,
        ports or "<none>",
        age(_meta(service).get("creationTimestamp")),
        selector,
    ]


def _event_row(event: dict[str, Any]) -> Row:
    involved = event.get("involvedObject") or {}
    last_seen = (
        event.get("lastTimestamp")
        or event.get("eventTime")
        or _meta(event).get("creationTimestamp")
    )
    return [
        age(last_seen),
        event.get("type", ""),
        event.get("reason", ""),
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
        event.get("message", ""),
    ]


def _builtin_printers() -> dict[str, _Printer]:
    return {
        "/pods": (
            [
                _name_column(),
                _column(
                    "Ready",
                    description="The aggregate readiness state of this pod for accepting traffic.",
                ),
                _column(
                    "Status", description="The aggregate status of the containers in this pod."
                ),
                _column(
                    "Restarts",
                    description=(
                        "The number of times the containers in this pod have been "
                        "restarted and when the last container in this pod has restarted."
                    ),
                ),
                _age_column(),
                _column("IP", priority=1, description="IP address allocated to the pod."),
                _column("Node", priority=1, description="Name of the node this pod is running on."),
                _column(
                    "Nominated Node",
                    priority=1,
                    description="Name of the node this pod is nominated to run on.",
                ),
                _column("Readiness Gates", priority=1, description="Readiness gates of this pod."),
            ],
            _pod_row,
        ),
        "/nodes": (
            [
                _name_column(),
                _column("Status", description="The status of the node"),
                _column("Roles", description="The roles of the node"),
                _age_column(),
                _column("Version", description="Kubelet Version reported by the node."),
                _column(
                    "Internal-IP",
                    priority=1,
                    description="List of addresses reachable to the node.",
                ),
                _column(
                    "External-IP",
                    priority=1,
                    description="List of addresses reachable to the node.",
                ),
                _column(
                    "OS-Image",
                    priority=1,
                    description="OS Image reported by the node from /etc/os-release.",
                ),
                _column(
                    "Kernel-Version", priority=1, description="Kernel Version reported by the node."
                ),
                _column(
                    "Container-Runtime",
                    priority=1,
                    description="Container Runtime Version reported by the node.",
                ),
            ],
            _node_row,
        ),
        "/services": (
            [
                _name_column(),
                _column("Type", description="type determines how the Service is exposed."),
                _column("Cluster-IP", description="clusterIP is the IP address of the service."),
                _column(
                    "External-IP",
                    description=(
                        "externalIPs is a list of IP addresses for which nodes in the "
                        "cluster will also accept traffic for this service."
                    ),
                ),
                _column(
                    "Port(s)", description="The list of ports that are exposed by this service."
                ),
                _age_column(),
                _column(
                    "Selector",
                    priority=1,
                    description=(
                        "Route service traffic to pods with label keys and values "
                        "matching this selector."
                    ),
                ),
            ],
            _service_row,
        ),
        "/events": (
            [
                _column("Last Seen", description="Time when this Event was last observed."),
                _column("Type", description="Type of this event (Normal, Warning)."),
                _column(
                    "Reason",
                    description=(
                        "This should be a short, machine understandable string that "
                        "gives the reason for the transition into the object's current status."
                    ),
                ),
                _column("Object", description="The object that this event is about."),
                _column(
                    "Message",
                    description="A human-readable description of the status of this operation.",
                ),
            ],
            _event_row,
        ),
        "/configmaps": (
            [
                _name_column(),
                _column("Data", "integer", "Number of data in configmap"),
                _age_column(),
            ],
            lambda cm: [
                _meta(cm).get("name"),
                len(cm.get("data") or {}) + len(cm.get("binaryData") or {}),
                age(_meta(cm).get("creationTimestamp")),
            ],
        ),
        "/secrets": (
            [
                _name_column(),
                _column("Type", description="The type of the secret"),
                _column("Data", "integer", "The number of data entries"),
                _age_column(),
            ],
            lambda s: [
                _meta(s).get("name"),
                s.get("type", "Opaque"),
                len(s.get("data") or {}),
                age(_meta(s).get("creationTimestamp")),
            ],
        ),
        "/namespaces": (
            [
                _name_column(),
                _column("Status", description="The status of the namespace"),
                _age_column(),
            ],
            lambda n: [
                _meta(n).get("name"),
                (n.get("status") or {}).get("phase", "Active"),
                age(_meta(n).get("creationTimestamp")),
            ],
        ),
        "apps/deployments": (
            [
                _name_column(),
                _column("Ready", description="Number of the pod with ready state"),
                _column(
                    "Up-to-date",
                    "integer",
                    "Total number of non-terminated pods targeted by this deployment that have "
                    "the desired template spec.",
                ),
                _column(
                    "Available",
                    "integer",
                    "Total number of available pods (ready for at least minReadySeconds) "
                    "targeted by this deployment.",
                ),
                _age_column(),
                _column(
                    "Containers", priority=1, description="Names of each container in the template."
                ),
                _column(
                    "Images",
                    priority=1,
                    description="Images referenced by each container in the template.",
                ),
                _column("Selector", priority=1, description="Label selector for pods."),
            ],
            _workload_row(with_counts=True),
        ),
        "apps/statefulsets": (
            [
                _name_column(),
                _column("Ready", description="Number of the pod with ready state"),
                _age_column(),
                _column(
                    "Containers", priority=1, description="Names of each container in the template."
                ),
                _column(
                    "Images",
                    priority=1,
                    description="Images referenced by each container in the template.",
                ),
            ],
            _workload_row(with_counts=False),
        ),
        "apiextensions.k8s.io/customresourcedefinitions": (
            [_name_column(), _column("Created At", "date", "")],
            lambda crd: [_meta(crd).get("name"), _meta(crd).get("creationTimestamp")],
        ),
    }


def _workload_row(with_counts: bool) -> Callable[[dict[str, Any]], Row]:
    def row(workload: dict[str, Any]) -> Row:
        spec = workload.get("spec") or {}
        status = workload.get("status") or {}
        containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
        ready = f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}"
        names = ",".join(c.get("name", "") for c in containers)
        images = ",".join(c.get("image", "") for c in containers)
        created = age(_meta(workload).get("creationTimestamp"))
        if with_counts:
            selector = ",".join(
                f"{k}={v}"
                for k, v in sorted(((spec.get("selector") or {}).get("matchLabels") or {}).items())
            )
            return [
                _meta(workload).get("name"),
                ready,
                status.get("updatedReplicas", 0),
                status.get("availableReplicas", 0),
                created,
                names,
                images,
                selector,
            ]
        return [_meta(workload).get("name"), ready, created, names, images]

    return row


_BUILTIN_PRINTERS = _builtin_printers()


def _custom_cell(column: dict[str, Any], obj: dict[str, Any]) -> Any:
    try:
        results = jsonpath.evaluate(column["jsonPath"], obj)
    except ValueError:
        return None
    if not results:
        return None
    value = results[0]
    column_type = column.get("type", "string")
    if column_type == "date":
        return age(value) if isinstance(value, str) else None
    if column_type == "integer":
        return (
            int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        )
    if column_type == "number":
        return value if isinstance(value, (int, float)) else None
    if column_type == "boolean":
        return value if isinstance(value, bool) else None
    if column_type == "string":
        return " ".join(_go_string(v) for v in results)
    return _go_string(value)


def _go_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _row_object(obj: dict[str, Any], include_object: str) -> dict[str, Any] | None:
    if include_object == "None":
        return None
    if include_object == "Object":
        return obj
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata") or {},
    }


def to_table(
    resource_type: ResourceType,
    objects: list[dict[str, Any]],
    resource_version: int | str,
    custom_columns: list[dict[str, Any]] | None,
    include_object: str = "Metadata",
) -> dict[str, Any]:
    """Render objects as a ``Table`` (``meta.k8s.io/v1``)."""
    if custom_columns is not None and resource_type.custom:
        definitions = [_name_column()]
        for column in custom_columns:
            description = column.get("description") or (
                f"Custom resource definition column (in JSONPath format): {column['jsonPath']}"
            )
            definitions.append(
                _column(
                    column["name"],
                    column.get("type", "string"),
                    description,
                    int(column.get("priority", 0)),
                    column.get("format", ""),
                )
            )

        def custom_row(obj: dict[str, Any]) -> Row:
            return [_meta(obj).get("name")] + [
                _custom_cell(column, obj) for column in custom_columns
            ]

        row_builder: Callable[[dict[str, Any]], Row] = custom_row
    elif resource_type.bucket in _BUILTIN_PRINTERS:
        definitions, row_builder = _BUILTIN_PRINTERS[resource_type.bucket]
    else:
        definitions = [_name_column(), _age_column()]

        def default_row(obj: dict[str, Any]) -> Row:
            return [_meta(obj).get("name"), age(_meta(obj).get("creationTimestamp"))]

        row_builder = default_row
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": row_builder(obj)}
        embedded = _row_object(obj, include_object)
        if embedded is not None:
            row["object"] = embedded
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": str(resource_version)},
        "columnDefinitions": definitions,
        "rows": rows,
    }
