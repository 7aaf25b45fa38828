from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

import pytest
from django.conf import settings
from django.test import Client

from apps.accounts.roles import Role
from apps.catalog.services import LoadReport, catalog_load
from tests.factories import UserFactory


@pytest.fixture
def catalog(db: None) -> LoadReport:
    """The catalog as `manage.py load_catalog` seeds it from the shipped reference data."""
    return catalog_load(reference_dir=settings.REFERENCE_DIR)


@pytest.fixture
def client_as(db: None) -> Callable[[Role | None], Client]:
    """A logged-in client for a user of the given role (None: a user with no role)."""

    def make(role: Role | None) -> Client:
        name = role.group_name if role else "norole"
        user = UserFactory.create(username=f"{name}-user", role=role)
        client = Client()
        client.force_login(user)
        return client

    return make


@pytest.fixture
def viewer_client(client_as: Callable[[Role | None], Client]) -> Client:
    return client_as(Role.VIEWER)


@pytest.fixture
def operator_client(client_as: Callable[[Role | None], Client]) -> Client:
    return client_as(Role.OPERATOR)


@pytest.fixture
def admin_client_role(client_as: Callable[[Role | None], Client]) -> Client:
    return client_as(Role.ADMIN)


def _worker_env() -> dict[str, str]:
    """The environment for a process that must see this test run's database and queue."""
    from django.db import connection

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    env["CELERY_QUEUE"] = settings.CELERY_TASK_DEFAULT_QUEUE
    db = connection.settings_dict
    if db["ENGINE"].endswith("postgresql"):
        user = quote(db["USER"] or "")
        password = f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else ""
        auth = f"{user}{password}@" if user else ""
        env["DATABASE_URL"] = f"postgres://{auth}{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"
    else:
        env["SQLITE_PATH"] = str(db["NAME"])
    return env


@pytest.fixture
def celery_worker_process(transactional_db: None, tmp_path: Path) -> Iterator[Path]:
    """A real Celery worker in its own process, on the configured broker (Redis or the
    serverless filesystem default), using the test database. Yields its log file."""
    log = tmp_path / "celery-worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "kaitoweb",
                "worker",
                "--pool=solo",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                "-Q",
                settings.CELERY_TASK_DEFAULT_QUEUE,
                "-n",
                f"test-{os.getpid()}@%h",
            ],
            env=_worker_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=settings.BASE_DIR,
        )
    try:
        deadline = time.monotonic() + 60
        while b" ready." not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("Celery worker did not start:\n" + log.read_text()[-3000:])
            time.sleep(0.2)
        yield log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(predicate: Callable[[], bool], *, timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.1)


ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def browser_page(live_server: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A Playwright page in Debian's Chromium (never a downloaded browser), against the live
    server. A screenshot of the last state is saved under test-artifacts/."""
    from django.db import connections
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls the test makes
    # around it are still plain synchronous calls.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(15_000)
        try:
            yield page
        finally:
            page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
            browser.close()
            # While Playwright's loop runs, Django keeps this thread's connections in a context
            # of their own; close them here, or they outlive the test and hold the database.
            connections.close_all()
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


def browser_login(page: Any, live_server: Any, *, username: str, password: str) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)


# --------------------------------------------------------------------- clusters and deployments
KAITOSIM_TEST_SPEED = 1000.0


@pytest.fixture(scope="session")
def kaitosim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The KAITO simulator over real HTTPS at 1000x (a 16-minute AKS cold start in ~1 s)."""
    from kaitosim.server import start

    handle = start(
        port=0,
        foundry_port=0,
        speed=KAITOSIM_TEST_SPEED,
        state_dir=tmp_path_factory.mktemp("kaitosim-app"),
        start_foundry=False,
    )
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def cluster(db: None, kaitosim: Any) -> Any:
    """A Cluster row for the simulator (admin context), with a namespace of the test's own."""
    import uuid

    from apps.clusters.services import cluster_create

    return cluster_create(
        name=f"sim-{uuid.uuid4().hex[:6]}",
        kubeconfig=kaitosim.kubeconfig_path.read_text(),
        context="kaitosim",
        default_namespace=f"t-{uuid.uuid4().hex[:8]}",
        region="eastus",
        clock_speed=kaitosim.speed,
    )


class CeleryWorker:
    """A Celery worker process a test can kill (SIGKILL, as a crash) and start again."""

    ready = b" ready."  # what the log says once the process serves
    new_session = False  # a process group of its own (see tests/reliability/conftest.py)

    def __init__(self, log: Path, args: list[str], env: dict[str, str]) -> None:
        self.log, self.args, self.env = log, args, env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=settings.BASE_DIR,
                start_new_session=self.new_session,
            )
        deadline = time.monotonic() + 60
        while self.ready not in self.log.read_bytes()[offset:]:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{' '.join(self.args[2:6])} did not start:\n" + self.log.read_text()[-3000:]
                )
            time.sleep(0.2)
        return self

    def kill(self) -> None:
        """SIGKILL: no warm shutdown, unacknowledged messages stay unacknowledged."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=15)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def celery_worker_factory(
    transactional_db: None, tmp_path: Path
) -> Iterator[Callable[..., CeleryWorker]]:
    """Start real Celery workers on the test database and broker, with extra environment
    (e.g. DEPLOYMENTS_FOLLOW_SECONDS) and a pool of choice. All are stopped afterwards."""
    workers: list[CeleryWorker] = []

    def make(
        *,
        pool: str = "solo",
        concurrency: int = 1,
        env: dict[str, str] | None = None,
        start: bool = True,
    ) -> CeleryWorker:
        index = len(workers)
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "kaitoweb",
            "worker",
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-Q",
            settings.CELERY_TASK_DEFAULT_QUEUE,
            "-n",
            f"test-{os.getpid()}-{index}@%h",
        ]
        worker = CeleryWorker(
            tmp_path / f"celery-worker-{index}.log", args, {**_worker_env(), **(env or {})}
        )
        workers.append(worker)
        return worker.start() if start else worker

    try:
        yield make
    finally:
        for worker in workers:
            worker.stop()
