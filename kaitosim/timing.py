"""How long a cold start takes on AKS, scaled by the simulator's speed factor."""

from __future__ import annotations

import os
from dataclasses import dataclass

SPEED_ENV = "KAITOSIM_SPEED"


@dataclass(frozen=True)
class ColdStartProfile:
    """Seconds of each phase of a real AKS cold start (~966 s to WorkspaceSucceeded).

    The five measured phases add up to 798 s; ``workload_start`` (168 s) is the rest of the
    measured total: KAITO's requeues, the NVIDIA device plugin and pod sandbox creation
    between ResourceReady and the image pull.
    """

    node_provisioning: float = 284.0
    node_initialisation: float = 126.0
    workload_start: float = 168.0
    image_pull: float = 101.0
    engine_warm_up: float = 195.0
    benchmark: float = 92.0
    crash_backoff: float = 40.0
    node_lost_after: float = 120.0
    node_lost_for: float = 90.0
    deletion: float = 30.0

    @property
    def total(self) -> float:
        return (
            self.node_provisioning
            + self.node_initialisation
            + self.workload_start
            + self.image_pull
            + self.engine_warm_up
            + self.benchmark
        )


@dataclass(frozen=True)
class SimulatedClock:
    """Converts simulated seconds into wall-clock seconds: ``real = simulated / speed``."""

    speed: float = 1.0
    profile: ColdStartProfile = ColdStartProfile()

    def real_seconds(self, simulated: float) -> float:
        return simulated / self.speed if self.speed > 0 else simulated


def speed_from_environment(default: float = 1.0) -> float:
    raw = os.environ.get(SPEED_ENV)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        return default
    return value if value > 0 else default
