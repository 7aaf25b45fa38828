"""The cold start of a Workspace, phase by phase, from its conditions and Events.

    provisioning  Workspace created        -> its node(s) registered (Azure made the VM)
    node init     node(s) registered        -> the inference pod starts pulling its image
                  (kubelet ready, GPU driver and device plugin, KAITO's requeues, pod sandbox)
    image pull    first "Pulling" Event     -> last "Pulled" Event
    warm-up       image pulled              -> InferenceReady=True (weights download and load,
                  engine start-up, CUDA graphs)
    benchmark     InferenceReady=True       -> BenchmarkCompleted=True (KAITO's startup
                  benchmark; vLLM presets only)

Timestamps are the cluster's own (second precision). A phase that began but has not ended is
in progress. Earlier observations are kept: Events expire and nodes go away at teardown, but
a phase once seen keeps its times.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

PHASES = ("provisioning", "node init", "image pull", "warm-up", "benchmark")

# How long a phase may take on a real AKS cluster before the deployment is flagged as stuck,
# with the likely cause (seconds; divided by the cluster's clock speed for the simulator).
STUCK_AFTER = {
    "provisioning": 20 * 60,
    "node init": 15 * 60,
    "image pull": 20 * 60,
    "warm-up": 30 * 60,
    "benchmark": 15 * 60,
}
LIKELY_CAUSE = {
    "provisioning": "Azure has not delivered the VM: usually quota for the VM family, no "
    "capacity for that size in the region, or a slow region. Look at the NodeClaim's events.",
    "node init": "The node registered but is not ready for GPU work: the NVIDIA driver or "
    "device plugin is not up, or the pod cannot be scheduled (taints, node selector).",
    "image pull": "The inference image (several GB) is still downloading: registry throttling "
    "or slow egress from the node; check the pod's events.",
    "warm-up": "The engine has not answered its readiness probe: a slow or blocked model "
    "download from Hugging Face (egress, token), or a very large model loading; read the log.",
    "benchmark": "KAITO's startup benchmark has not finished; the endpoint may already answer.",
}


@dataclass(frozen=True)
class PhaseSpan:
    phase: str
    began: datetime | None
    ended: datetime | None

    def as_json(self) -> dict[str, str | None]:
        return {
            "phase": self.phase,
            "began": self.began.isoformat() if self.began else None,
            "ended": self.ended.isoformat() if self.ended else None,
        }

    def seconds(self, now: datetime) -> float | None:
        if self.began is None:
            return None
        return max(0.0, ((self.ended or now) - self.began).total_seconds())


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _condition_true_at(conditions: Iterable[Mapping[str, Any]], kind: str) -> datetime | None:
    for c in conditions:
        if c.get("type") == kind and c.get("status") == "True":
            return parse_time(c.get("lastTransitionTime"))
    return None


def _event_times(
    events: Iterable[Mapping[str, Any]], reason: str, names: set[str]
) -> list[datetime]:
    times = []
    for event in events:
        involved = event.get("involvedObject") or {}
        if event.get("reason") != reason or involved.get("name") not in names:
            continue
        for key in ("firstTimestamp", "eventTime", "lastTimestamp"):
            moment = parse_time(event.get(key))
            if moment is not None:
                times.append(moment)
                break
    return times


def phase_spans(
    *,
    workspace: Mapping[str, Any],
    pod_names: Iterable[str],
    events: Iterable[Mapping[str, Any]],
    nodes: Iterable[Mapping[str, Any]],
    benchmarked: bool,
    previous: Iterable[Mapping[str, Any]] = (),
) -> list[PhaseSpan]:
    """The phases seen so far, in order (a phase not reached yet is left out)."""
    events = list(events)
    conditions = (workspace.get("status") or {}).get("conditions") or []
    created = parse_time((workspace.get("metadata") or {}).get("creationTimestamp"))
    worker_nodes = set((workspace.get("status") or {}).get("workerNodes") or [])
    node_times = [
        parse_time((n.get("metadata") or {}).get("creationTimestamp"))
        for n in nodes
        if (n.get("metadata") or {}).get("name") in worker_nodes
    ]
    registered = max((t for t in node_times if t), default=None) if node_times else None
    if registered is None:
        registered = _condition_true_at(conditions, "NodeClaimReady")
    pods = set(pod_names)
    pulling = min(_event_times(events, "Pulling", pods), default=None)
    pulled_times = _event_times(events, "Pulled", pods)
    pulled = max(pulled_times, default=None) if pulled_times else None
    inference_ready = _condition_true_at(conditions, "InferenceReady")
    benchmark_done = _condition_true_at(conditions, "BenchmarkCompleted")
    if inference_ready is not None and pulled is None:
        pulled = pulling  # the pull Events expired; keep the order at least
    points: list[tuple[str, datetime | None, datetime | None]] = [
        ("provisioning", created, registered),
        ("node init", registered, pulling),
        ("image pull", pulling, pulled),
        ("warm-up", pulled, inference_ready),
    ]
    if benchmarked:
        points.append(("benchmark", inference_ready, benchmark_done))
    known = {str(p.get("phase")): p for p in previous}
    spans = []
    for phase, began, ended in points:
        before = known.get(phase) or {}
        began = parse_time(before.get("began")) or began
        ended = parse_time(before.get("ended")) or ended
        if began is None:
            break
        spans.append(PhaseSpan(phase, began, ended))
        if ended is None:
            break  # the phase in progress; later ones have not begun
    return spans


def stuck_phase(spans: list[PhaseSpan], now: datetime, clock_speed: float) -> PhaseSpan | None:
    """The phase in progress, if it has run past its limit."""
    if not spans or spans[-1].ended is not None:
        return None
    current = spans[-1]
    limit = STUCK_AFTER.get(current.phase, 30 * 60) / max(clock_speed, 1e-9)
    seconds = current.seconds(now)
    return current if seconds is not None and seconds > limit else None


def spans_from_json(items: Iterable[Mapping[str, Any]]) -> list[PhaseSpan]:
    return [
        PhaseSpan(str(i.get("phase")), parse_time(i.get("began")), parse_time(i.get("ended")))
        for i in items
    ]
