"""Control-plane benchmark of kaitosim: many Workspaces at once, watch latency, memory.

Creates N Workspaces at once with the real ``kubernetes`` client, waits until every one is
WorkspaceSucceeded (each runs its own simulated inference server), measures how long a change
takes to reach a watcher (annotation patch -> MODIFIED event), and reports the process RSS.

    .venv/bin/python bench/kaitosim_control_plane.py [--workspaces 200] [--speed 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

ROOT = Path(__file__).resolve().parent.parent


NAMESPACE = "bench"
SENT_ANNOTATION = "bench.kaitosim/sent-at"


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def manifest(index: int) -> dict[str, Any]:
    name = f"bench-{index:03d}"
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "resource": {
            "instanceType": "Standard_NC24ads_A100_v4",
            "labelSelector": {"matchLabels": {"apps": name}},
        },
        "inference": {"preset": {"name": "phi-4-mini-instruct"}},
    }


def succeeded(item: dict[str, Any]) -> bool:
    conditions = (item.get("status") or {}).get("conditions") or []
    return any(c["type"] == "WorkspaceSucceeded" and c["status"] == "True" for c in conditions)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workspaces", type=int, default=200)
    parser.add_argument(
        "--speed",
        type=float,
        default=200.0,
        help="simulator speed factor (966 s cold start / speed)",
    )
    parser.add_argument("--timeout", type=float, default=300.0)
    arguments = parser.parse_args()

    state_dir = Path(tempfile.mkdtemp(prefix="kaitosim-bench-"))
    endpoints = state_dir / "endpoints.json"
    simulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kaitosim",
            "--speed",
            str(arguments.speed),
            "--state-dir",
            str(state_dir),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 30
        while not endpoints.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        kubeconfig = json.loads(endpoints.read_text())["kubeconfig"]
        rss_before = rss_mib(simulator.pid)
        api = config.new_client_from_config(config_file=kubeconfig)
        api.configuration.connection_pool_maxsize = 32
        core = client.CoreV1Api(api)
        custom = client.CustomObjectsApi(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))

        delays_ms: list[float] = []
        watch_ready = threading.Event()
        stop_watch = threading.Event()

        def watcher() -> None:
            stream = watch.Watch()
            start_version = custom.list_namespaced_custom_object(
                "kaito.sh", "v1beta1", NAMESPACE, "workspaces"
            )["metadata"]["resourceVersion"]
            watch_ready.set()
            seen: set[str] = set()
            for event in stream.stream(
                custom.list_namespaced_custom_object,
                "kaito.sh",
                "v1beta1",
                NAMESPACE,
                "workspaces",
                resource_version=start_version,
                timeout_seconds=int(arguments.timeout),
            ):
                received = time.time()
                metadata = event["object"].get("metadata") or {}
                sent = (metadata.get("annotations") or {}).get(SENT_ANNOTATION)
                key = f"{metadata.get('name')}/{sent}"
                if sent and key not in seen:
                    seen.add(key)
                    delays_ms.append((received - float(sent)) * 1000)
                if stop_watch.is_set():
                    stream.stop()

        watch_thread = threading.Thread(target=watcher, daemon=True)
        watch_thread.start()
        watch_ready.wait(10)

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(
                pool.map(
                    lambda i: custom.create_namespaced_custom_object(
                        "kaito.sh", "v1beta1", NAMESPACE, "workspaces", manifest(i)
                    ),
                    range(arguments.workspaces),
                )
            )
        created_s = time.monotonic() - started

        def patch(index: int) -> None:
            custom.patch_namespaced_custom_object(
                "kaito.sh",
                "v1beta1",
                NAMESPACE,
                "workspaces",
                f"bench-{index:03d}",
                {"metadata": {"annotations": {SENT_ANNOTATION: repr(time.time())}}},
            )

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(patch, range(arguments.workspaces)))

        done = 0
        peak_rss = rss_mib(simulator.pid)
        while time.monotonic() - started < arguments.timeout:
            items = custom.list_namespaced_custom_object(
                "kaito.sh", "v1beta1", NAMESPACE, "workspaces"
            )["items"]
            done = sum(1 for item in items if succeeded(item))
            peak_rss = max(peak_rss, rss_mib(simulator.pid))
            if done == arguments.workspaces:
                break
            time.sleep(0.25)
        wall_s = time.monotonic() - started
        busy_delays = list(delays_ms)
        delays_ms.clear()
        for index in range(min(arguments.workspaces, 100)):
            patch(index)
            time.sleep(0.01)
        time.sleep(0.5)
        idle_delays = list(delays_ms)
        stop_watch.set()
        patch(0)
        watch_thread.join(timeout=10)

        cold_start_s = 966 / arguments.speed
        print(f"workspaces:                 {done}/{arguments.workspaces} WorkspaceSucceeded")
        print(f"create requests:            {created_s:.2f} s for {arguments.workspaces} creates")
        print(
            f"wall time to all succeeded: {wall_s:.2f} s "
            f"(one cold start at speed {arguments.speed:g} = {cold_start_s:.2f} s)"
        )
        for label, delays in (
            ("during the cold starts", busy_delays),
            ("idle cluster", idle_delays),
        ):
            if delays:
                print(
                    f"watch event delay, {label + ':':23s} p50 {statistics.median(delays):.1f} ms, "
                    f"p95 {percentile(delays, 0.95):.1f} ms, max {max(delays):.1f} ms "
                    f"({len(delays)} patches)"
                )
        pid = simulator.pid
        print(
            f"simulator RSS:              {rss_mib(pid):.0f} MiB now, "
            f"{peak_rss:.0f} MiB peak sampled, "
            f"{rss_mib(pid, 'VmHWM'):.0f} MiB high-water ({rss_before:.0f} MiB idle after start)"
        )
        return 0 if done == arguments.workspaces else 1
    finally:
        simulator.terminate()
        simulator.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
