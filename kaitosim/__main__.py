"""``python -m kaitosim``: run the simulated AKS + KAITO cluster and the Foundry emulator."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from kaitosim.faults import KNOWN_FAULTS, parse_fault_list
from kaitosim.server import DEFAULT_STATE_DIR, Simulator, SimulatorConfig
from kaitosim.timing import speed_from_environment


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kaitosim",
        description=(
            "Simulated AKS cluster with the KAITO add-on (Kubernetes API + KAITO "
            "controller) and Microsoft Foundry."
        ),
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=0, help="Kubernetes API port (0 = a free port)")
    parser.add_argument(
        "--foundry-port", type=int, default=0, help="Foundry emulator port (0 = a free port)"
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="kubeconfig to write (default <state-dir>/kubeconfig)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="where kubeconfig and endpoints.json go (default var/kaitosim)",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=None,
        help=(
            "time compression: a 966 s AKS cold start takes 966/speed seconds (default "
            "$KAITOSIM_SPEED or 1)"
        ),
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        help=f"cluster-wide fault, repeatable or comma-separated: {', '.join(KNOWN_FAULTS)}",
    )
    parser.add_argument(
        "--log-level", default="WARNING", help="Python logging level (default WARNING)"
    )
    return parser.parse_args(argv)


async def serve(config: SimulatorConfig) -> None:
    simulator = Simulator(config)
    await simulator.start()
    print(f"Kubernetes API:   {simulator.api_url}", flush=True)
    print(
        f"kubeconfig:       {config.resolved_kubeconfig_path}   (kubectl --kubeconfig "
        f"{config.resolved_kubeconfig_path} get workspaces)",
        flush=True,
    )
    print(f"Foundry endpoint: {simulator.foundry_url or '(not started)'}", flush=True)
    print(f"Foundry key:      {simulator.foundry_key}", flush=True)
    print(
        f"speed:            {config.speed:g}x (cold start ~{966 / config.speed:.1f} s)", flush=True
    )
    if config.faults:
        print(f"faults:           {', '.join(sorted(config.faults))}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await simulator.stop()


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    logging.basicConfig(
        level=arguments.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        faults = parse_fault_list(",".join(arguments.fault))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    config = SimulatorConfig(
        host=arguments.host,
        port=arguments.port,
        foundry_port=arguments.foundry_port,
        kubeconfig_path=arguments.kubeconfig,
        state_dir=arguments.state_dir,
        speed=arguments.speed if arguments.speed is not None else speed_from_environment(),
        faults=faults,
    )
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
