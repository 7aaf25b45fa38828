"""Benchmark of kaitoweb's deployment control loop against kaitosim, over real HTTPS.

In one process, on a throw-away SQLite database: starts kaitosim, adds it as a cluster, then
times what the web request and the Celery tasks do, without the queue in between:

    dry run      bundle_dry_run (the preview's server-side validation) per launch
    launch       deployment_launch (namespace, ConfigMap, Workspace) per deployment
    sync         deployment_sync (Workspace, pods, events, NodeClaims, nodes, log tail) per call
    to ready     from the launch to the row saying ready, syncing every 0.1 s
    reconcile    one deployments_reconcile pass over every live row (tasks not sent)

    .venv/bin/python bench/deployments_control_loop.py [--deployments 20] [--speed 1000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def report(label: str, seconds: list[float]) -> None:
    ms = [s * 1000 for s in seconds]
    print(
        f"{label:<12} n={len(ms):<4} p50={statistics.median(ms):8.1f} ms  "
        f"p95={percentile(ms, 0.95):8.1f} ms  max={max(ms):8.1f} ms"
    )


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=20)
    parser.add_argument("--speed", type=float, default=1000.0)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="kaitoweb-bench-"))
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "kaitoweb.settings",
            "DEBUG": "1",
            "KAITOWEB_VAR_DIR": str(workdir),
            "LOG_LEVEL": "WARNING",
        }
    )
    os.environ.pop("DATABASE_URL", None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from apps.catalog.services import catalog_load
    from apps.clusters.services import cluster_create
    from apps.deployments import manifests, services
    from apps.deployments.models import Deployment
    from kaitosim.server import start

    call_command("migrate", verbosity=0)
    catalog_load(reference_dir=settings.REFERENCE_DIR)
    handle = start(
        port=0,
        foundry_port=0,
        speed=args.speed,
        state_dir=workdir / "kaitosim",
        start_foundry=False,
    )
    try:
        cluster = cluster_create(
            name="bench",
            kubeconfig=handle.kubeconfig_path.read_text(),
            context="kaitosim",
            default_namespace="bench",
            clock_speed=args.speed,
        )
        dry_runs, launches, syncs, to_ready = [], [], [], []
        rows = []
        for index in range(args.deployments):
            uid = str(uuid.uuid4())
            bundle = manifests.bundle_render(
                manifests.LaunchSpec(
                    name=f"bench-{index:03d}",
                    namespace="bench",
                    deployment_uid=uid,
                    vm_size="Standard_NC24ads_A100_v4",
                    node_count=1,
                    model_name="phi-4-mini-instruct",
                    settings=manifests.InferenceSettings(max_model_len=4096),
                )
            )
            seconds, dry = timed(
                lambda b=bundle: services.bundle_dry_run(cluster=cluster, bundle=b)
            )
            assert dry.ok, dry.problems
            dry_runs.append(seconds)
            row = services.deployment_request(
                cluster=cluster, bundle=bundle, deployment_uid=uid, source=Deployment.Source.PRESET
            )
            began = time.perf_counter()
            seconds, _ = timed(lambda r=row: services.deployment_launch(deployment_id=r.pk))
            launches.append(seconds)
            rows.append((row, began))
        for row, began in rows:
            while True:
                seconds, current = timed(lambda r=row: services.deployment_sync(deployment_id=r.pk))
                syncs.append(seconds)
                if current.status == Deployment.Status.READY:
                    to_ready.append(time.perf_counter() - began)
                    break
                time.sleep(0.1)
        seconds, counts = timed(lambda: services.deployments_reconcile(enqueue=lambda *_: None))
        print(
            f"kaitosim at {args.speed:g}x; a real AKS cold start of 966 s takes "
            f"{966 / args.speed:.2f} s here"
        )
        report("dry run", dry_runs)
        report("launch", launches)
        report("sync", syncs)
        report("to ready", to_ready)
        print(
            f"{'reconcile':<12} {len(rows)} live rows on {counts['clusters']} cluster: "
            f"{seconds * 1000:.1f} ms"
        )
    finally:
        handle.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
