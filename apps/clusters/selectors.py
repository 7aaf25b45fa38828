from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from django.db.models import Count, Q, QuerySet

from apps.clusters.models import Cluster

SIMULATOR_KUBECONFIG_ENV = "KAITOSIM_KUBECONFIG"  # set by `python3 dev.py run`


def cluster_list() -> QuerySet[Cluster]:
    return Cluster.objects.annotate(
        live_deployments=Count(
            "deployments", filter=~Q(deployments__status__in=["deleted", "orphaned"])
        )
    ).order_by("name")


@dataclass(frozen=True)
class LocalSimulator:
    kubeconfig: str
    speed: float


def local_simulator() -> LocalSimulator | None:
    """The kaitosim that `dev.py run` started next to the app, if there is one."""
    path = os.environ.get(SIMULATOR_KUBECONFIG_ENV)
    if not path or not Path(path).is_file():
        return None
    speed = 1.0
    endpoints = Path(path).parent / "endpoints.json"
    with contextlib.suppress(OSError, ValueError, TypeError):
        speed = float(json.loads(endpoints.read_text()).get("speed") or 1.0)
    return LocalSimulator(kubeconfig=Path(path).read_text(), speed=speed)
