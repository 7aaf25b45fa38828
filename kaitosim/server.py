"""Assembling and running the simulator: API server, KAITO controller and the Foundry emulator.

Use :func:`start` from Python (it runs the asyncio loop in a background thread and returns a
:class:`SimulatorHandle`), or ``python -m kaitosim`` from a shell.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from aiohttp import web

from kaitosim.apiserver import ApiServer
from kaitosim.auth import TokenAuthority
from kaitosim.bootstrap import bootstrap
from kaitosim.cluster import Cluster
from kaitosim.crds import crd_schemas, installed_crds, printer_columns
from kaitosim.events import EventRecorder
from kaitosim.faults import FaultRegistry, parse_fault_list
from kaitosim.kaito_admission import KaitoWorkspaceWebhook
from kaitosim.kaito_controller import KaitoController
from kaitosim.kubeconfig import write_kubeconfig
from kaitosim.object_store import ObjectStore
from kaitosim.reference import load_reference
from kaitosim.resource_types import default_registry
from kaitosim.timing import SimulatedClock, speed_from_environment
from kaitosim.tls import ServingCertificate, issue_certificates

DEFAULT_STATE_DIR = Path("var/kaitosim")
T = TypeVar("T")


@dataclass
class SimulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0
    foundry_port: int = 0
    kubeconfig_path: Path | None = None
    state_dir: Path = DEFAULT_STATE_DIR
    speed: float = 1.0
    faults: set[str] = field(default_factory=set)
    admin_token: str | None = None
    viewer_token: str | None = None
    foundry_key: str | None = None
    watch_history: int = 5000
    start_foundry: bool = True

    @property
    def resolved_kubeconfig_path(self) -> Path:
        return self.kubeconfig_path or (self.state_dir / "kubeconfig")


class Simulator:
    """All of kaitosim inside one asyncio loop."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.reference = load_reference()
        self.crds = installed_crds(self.reference)
        schemas = crd_schemas(self.crds)
        self.store = ObjectStore(history_limit=config.watch_history)
        self.cluster = Cluster(default_registry(), self.store, schemas)
        self.faults = FaultRegistry(global_faults=set(config.faults))
        self.authority = TokenAuthority(config.admin_token, config.viewer_token)
        self.events = EventRecorder(self.cluster)
        self.clock = SimulatedClock(speed=config.speed)
        self.controller = KaitoController(
            self.cluster, self.events, self.reference, self.clock, self.faults
        )
        self.cluster.admission.append(KaitoWorkspaceWebhook(self.cluster, self.reference))
        self.apiserver = ApiServer(
            self.cluster,
            self.authority,
            self.faults,
            printer_columns(self.crds),
            schemas,
            runtime=self.controller.runtime,
        )
        self.foundry_key = config.foundry_key or secrets.token_hex(16)
        self.api_url = ""
        self.foundry_url = ""
        self._runner: web.AppRunner | None = None
        self._foundry: Any = None
        self.certificate: ServingCertificate | None = None

    async def start(self) -> None:
        bootstrap(self.cluster, self.crds)
        app = self.apiserver.build_app()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        self.certificate = issue_certificates(self.config.state_dir / "pki", [self.config.host])
        site = web.TCPSite(
            self._runner,
            self.config.host,
            self.config.port,
            ssl_context=self.certificate.server_context(),
        )
        await site.start()
        server = cast(asyncio.Server | None, site._server)
        sockets = server.sockets if server is not None else []
        port = sockets[0].getsockname()[1] if sockets else self.config.port
        self.api_url = f"https://{self.config.host}:{port}"
        self.apiserver.server_address = f"{self.config.host}:{port}"
        self.controller.start()
        if self.config.start_foundry:
            await self._start_foundry()
        write_kubeconfig(
            self.config.resolved_kubeconfig_path,
            self.api_url,
            self.authority.admin_token,
            self.authority.viewer_token,
            self.certificate.ca_pem,
        )
        self._write_endpoints()

    async def _start_foundry(self) -> None:
        try:
            from kaitosim.foundry import start_foundry_server
        except ImportError:
            return
        self._foundry = await start_foundry_server(
            self.config.host, self.config.foundry_port, [self.foundry_key]
        )
        self.foundry_url = str(self._foundry.url)

    def _write_endpoints(self) -> None:
        state_dir = self.config.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        endpoints = {
            "apiUrl": self.api_url,
            "kubeconfig": str(self.config.resolved_kubeconfig_path),
            "caCertificate": str(self.certificate.ca_path) if self.certificate else "",
            "foundryUrl": self.foundry_url,
            "foundryKey": self.foundry_key,
            "speed": self.config.speed,
        }
        (state_dir / "endpoints.json").write_text(json.dumps(endpoints, indent=2) + "\n")

    async def stop(self) -> None:
        await self.controller.stop()
        await self.cluster.shutdown()
        self.apiserver.shutdown_streams()
        if self._foundry is not None:
            await self._foundry.stop()
            self._foundry = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class SimulatorHandle:
    """A running simulator in a background thread, for tests and the Django dev runner."""

    def __init__(
        self, simulator: Simulator, loop: asyncio.AbstractEventLoop, thread: threading.Thread
    ) -> None:
        self.simulator = simulator
        self._loop = loop
        self._thread = thread
        self._stopped = False

    @property
    def api_url(self) -> str:
        return self.simulator.api_url

    @property
    def kubeconfig_path(self) -> Path:
        return self.simulator.config.resolved_kubeconfig_path

    @property
    def admin_token(self) -> str:
        return self.simulator.authority.admin_token

    @property
    def viewer_token(self) -> str:
        return self.simulator.authority.viewer_token

    @property
    def ca_cert_path(self) -> Path:
        """The cluster CA (PEM); the kubeconfig embeds it as certificate-authority-data."""
        assert self.simulator.certificate is not None
        return self.simulator.certificate.ca_path

    @property
    def foundry_url(self) -> str:
        return self.simulator.foundry_url

    @property
    def foundry_key(self) -> str:
        return self.simulator.foundry_key

    @property
    def speed(self) -> float:
        return self.simulator.config.speed

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the simulator's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def set_faults(self, names: Iterable[str]) -> None:
        parsed = parse_fault_list(",".join(names))

        async def apply() -> None:
            self.simulator.faults.set_global(parsed)

        self.run(apply())

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            self.run(self.simulator.stop(), timeout=30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)

    def __enter__(self) -> SimulatorHandle:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def start(
    host: str = "127.0.0.1",
    port: int = 0,
    foundry_port: int = 0,
    kubeconfig_path: str | Path | None = None,
    speed: float | None = None,
    faults: Iterable[str] = (),
    state_dir: str | Path | None = None,
    *,
    start_foundry: bool = True,
    watch_history: int = 5000,
) -> SimulatorHandle:
    """Start kaitosim in a background thread and return once it serves requests."""
    config = SimulatorConfig(
        host=host,
        port=port,
        foundry_port=foundry_port,
        kubeconfig_path=Path(kubeconfig_path) if kubeconfig_path else None,
        state_dir=Path(state_dir) if state_dir else DEFAULT_STATE_DIR,
        speed=speed if speed is not None else speed_from_environment(),
        faults=parse_fault_list(",".join(faults)),
        start_foundry=start_foundry,
        watch_history=watch_history,
    )
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def run_loop() -> None:
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            try:
                simulator = Simulator(config)
                await simulator.start()
                holder["simulator"] = simulator
            except BaseException as error:
                holder["error"] = error
            finally:
                ready.set()

        holder["boot"] = loop.create_task(boot())
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    thread = threading.Thread(target=run_loop, name="kaitosim", daemon=True)
    thread.start()
    ready.wait(timeout=60)
    if "error" in holder:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        raise RuntimeError("kaitosim failed to start") from holder["error"]
    if "simulator" not in holder:
        raise RuntimeError("kaitosim did not start within 60 s")
    return SimulatorHandle(holder["simulator"], loop, thread)
