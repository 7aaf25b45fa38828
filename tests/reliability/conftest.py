"""Fixtures for reliability tests: servers a test may stop, kill and restart, and the app's
processes run against them.

Nothing here touches the machine's shared Redis or PostgreSQL: each test gets servers of its own.

* ``private_redis`` (per test): a `RedisServer` on a free loopback port, no persistence (so a
  restart loses every queued message, as a Redis without a volume does). ``.url(db)``,
  ``.stop()``, ``.start()`` (same port), ``.restart(down_s)``, ``.kill()``.
* ``private_postgres`` (per session): a `PostgresCluster` initdb'd in a temp dir (as the
  ``postgres`` user when the tests run as root, since initdb refuses root), on a free port, its
  socket in its own directory. ``.url(name)``, ``.stop()`` (``pg_ctl stop -m fast``: every
  connection is cut), ``.start()``, ``.restart(down_s)``, ``.query(db, sql, params)``.
* ``private_database`` (per test): a fresh database on ``private_postgres``, copied from a
  template that was migrated and loaded with the catalog once per session; yields its URL.
  The cluster is started again afterwards if the test left it stopped.
* ``app_env`` (function): the environment for a Django process (``tests.settings``) on the
  database and broker a test chooses: `app_env(database_url=..., redis_url=..., broker_dir=...,
  **extra)`; without ``database_url`` it is the test's own pytest-django database (SQLite file
  or PostgreSQL); without ``redis_url`` the broker is kombu's filesystem transport in
  ``broker_dir`` (which must then be given).
* `django_run(env, code)`: run Python in a fresh Django process with that environment; the
  code may set ``result`` to something JSON can carry, which is returned.
* ``sim_loop`` (per module) and ``slow_foundry`` (per test): kaitosim's Foundry at speed 1 in a
  background loop of this process, whose ``.records`` count every request it received.
* ``app_workers`` (per test): start real Celery workers, ``app_workers(env, pool="threads",
  concurrency=4)``, and Celery beat, ``app_workers(env, beat=True)``, as separate processes in
  that environment. Each is an `AppProcess` in a process group of its own: ``.kill()`` is
  SIGKILL to the group, ``.start()`` starts it again. All are stopped after the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from kaitosim.foundry import FoundryServer
from tests.conftest import CeleryWorker, _worker_env
from tests.kaitosim.loop_thread import LoopThread
from tests.playground.conftest import foundry_start

PG_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1:] or [Path("/usr/bin")]
ENV_OWNED = ("DATABASE_URL", "REDIS_URL", "SQLITE_PATH", "KAITOWEB_VAR_DIR")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


# ------------------------------------------------------------------------------------- Redis
class RedisServer:
    """A redis-server of the test's own, without persistence."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.log = directory / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> RedisServer:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(self.directory),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        _wait(self.ping, timeout=20, what=f"redis-server on port {self.port}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory).start()
    try:
        yield server
    finally:
        server.stop()


# -------------------------------------------------------------------------------- PostgreSQL
class PostgresCluster:
    """A PostgreSQL cluster of the test session's own, trust auth, user ``postgres``."""

    def __init__(self) -> None:
        # Not under pytest's tmp dirs: they are private to root, and the server runs as postgres.
        self.directory = Path(tempfile.mkdtemp(prefix="kaitoweb-pg-"))
        self.data = self.directory / "data"
        self.log = self.directory / "postgres.log"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            owner = pwd.getpwnam("postgres")
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(PG_BIN[0] / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def init(self) -> PostgresCluster:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        return self.start()

    def url(self, name: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def running(self) -> bool:
        try:
            self.query("postgres", "SELECT 1")
        except Exception:
            return False
        return True

    def start(self) -> PostgresCluster:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        _wait(self.running, timeout=30, what=f"PostgreSQL on port {self.port}")
        return self

    def stop(self) -> None:
        """Fast shutdown: every client connection is terminated, as in a restart."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def query(self, database: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=database, autocommit=True
        ) as conn:
            cursor = conn.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description else []

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            if self.running():
                self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster().init()
    try:
        yield cluster
    finally:
        cluster.remove()


TEMPLATE_DB = "kaitoweb_template"


@pytest.fixture(scope="session")
def _private_template(private_postgres: PostgresCluster) -> str:
    """The migrated database, with the catalog loaded, that each test's database copies."""
    private_postgres.query("postgres", f"CREATE DATABASE {TEMPLATE_DB}")
    env = _base_env()
    env["DATABASE_URL"] = private_postgres.url(TEMPLATE_DB)
    env["KAITOWEB_VAR_DIR"] = str(private_postgres.directory)
    for command in (["migrate", "--noinput"], ["load_catalog"]):
        done = subprocess.run(
            [sys.executable, "manage.py", *command],
            env=env,
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {command[0]} failed:\n{done.stdout}\n{done.stderr}")
    return TEMPLATE_DB


@pytest.fixture
def private_database(private_postgres: PostgresCluster, _private_template: str) -> Iterator[str]:
    """A fresh database on the private cluster, migrated, with the catalog; yields its URL."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    private_postgres.query("postgres", f"CREATE DATABASE {name} TEMPLATE {_private_template}")
    try:
        yield private_postgres.url(name)
    finally:
        if not private_postgres.running():
            private_postgres.start()
        private_postgres.query("postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# ------------------------------------------------------------------------- the app's processes
def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_OWNED}
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env["CELERY_QUEUE"] = settings.CELERY_TASK_DEFAULT_QUEUE
    env["LOG_FORMAT"] = "plain"
    return env


@pytest.fixture
def app_env() -> Callable[..., dict[str, str]]:
    def make(
        *,
        database_url: str | None = None,
        redis_url: str | None = None,
        broker_dir: Path | None = None,
        **extra: str,
    ) -> dict[str, str]:
        env = _base_env()
        if database_url:
            env["DATABASE_URL"] = database_url
        else:
            own = _worker_env()
            for key in ("DATABASE_URL", "SQLITE_PATH"):
                if key in own:
                    env[key] = own[key]
        if redis_url:
            env["REDIS_URL"] = redis_url
        elif broker_dir is None:
            raise ValueError("give redis_url, or broker_dir for the filesystem broker")
        if broker_dir is not None:
            # VAR_DIR holds the filesystem broker's folders and beat's schedule file.
            broker_dir.mkdir(parents=True, exist_ok=True)
            env["KAITOWEB_VAR_DIR"] = str(broker_dir)
        env.update(extra)
        return env

    return make


_PRELUDE = """
import json, django
django.setup()
result = None
"""


def django_run(env: dict[str, str], code: str, *, timeout: float = 120) -> Any:
    """Run ``code`` in a fresh Django process; returns what it left in ``result``."""
    script = _PRELUDE + code + "\nprint('\\n@@result ' + json.dumps(result))\n"
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"django_run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    marker = done.stdout.rfind("\n@@result ")
    return json.loads(done.stdout[marker + len("\n@@result ") :])


class AppProcess(CeleryWorker):
    """A Celery worker or beat in a process group of its own: ``kill()`` SIGKILLs the whole
    group (a worker's embedded children die with it, as in a container that is killed),
    ``start()`` starts it again, ``stop()`` ends it gently."""

    new_session = True

    def __init__(self, log: Path, args: list[str], env: dict[str, str], ready: bytes) -> None:
        super().__init__(log, args, env)
        self.ready = ready

    def _signal_group(self, signum: int) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signum)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self._signal_group(signal.SIGKILL)
            self.proc.wait(timeout=15)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=15)
        self._signal_group(signal.SIGKILL)  # whatever of the group is left
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=15)


@pytest.fixture
def app_workers(tmp_path: Path) -> Iterator[Callable[..., AppProcess]]:
    """Start Celery workers (``app_workers(env, pool=, concurrency=)``) and Celery beat
    (``app_workers(env, beat=True)``, its schedule in the test's tmp dir) as separate processes,
    as docker-compose runs them; all are stopped after the test."""
    processes: list[AppProcess] = []

    def make(
        env: dict[str, str],
        *,
        beat: bool = False,
        pool: str = "threads",
        concurrency: int = 4,
        start: bool = True,
    ) -> AppProcess:
        index = len(processes)
        celery = [sys.executable, "-m", "celery", "-A", "kaitoweb"]
        if beat:
            args = [
                *celery,
                "beat",
                "--loglevel=INFO",
                "--schedule",
                str(tmp_path / f"beat-{index}"),
            ]
            process = AppProcess(tmp_path / f"beat-{index}.log", args, env, b"beat: Starting")
        else:
            args = [
                *celery,
                "worker",
                f"--pool={pool}",
                f"--concurrency={concurrency}",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-Q",
                env["CELERY_QUEUE"],
                "-n",
                f"reliability-{os.getpid()}-{index}@%h",
            ]
            process = AppProcess(tmp_path / f"worker-{index}.log", args, env, b" ready.")
        processes.append(process)
        return process.start() if start else process

    try:
        yield make
    finally:
        for process in processes:
            process.stop()


# ------------------------------------------------------------------ kaitosim's Foundry, slowed
@pytest.fixture(scope="module")
def sim_loop() -> Iterator[LoopThread]:
    """A background event loop for this module's simulated servers."""
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture
def slow_foundry(sim_loop: LoopThread) -> Iterator[FoundryServer]:
    """kaitosim's Foundry at real speed (a 24-token answer takes about half a second), so a
    test can act while an experiment is mid-way. ``.records`` lists every request it got."""
    server = foundry_start(sim_loop, speed=1.0)
    yield server
    sim_loop.run(server.stop())


# ------------------------------------------------------------------------- experiments on them
# The resume path fast enough for a test: beat every second, a target silent for 5 s is taken
# over, heartbeats every second.
RESUME_FAST = {
    "EXPERIMENTS_RESUME_SECONDS": "1",
    "EXPERIMENTS_STALE_SECONDS": "5",
    "EXPERIMENTS_HEARTBEAT_SECONDS": "1",
}
EXPERIMENT_PROMPTS = [f"Question {i}: what is KAITO?" for i in range(6)]
EXPERIMENT_REPETITIONS = 2
EXPERIMENT_CONCURRENCY = 1  # chunks of 8: each target's 12 samples take two tasks at least
EXPERIMENT_SAMPLES = 2 * len(EXPERIMENT_PROMPTS) * EXPERIMENT_REPETITIONS


def start_experiment_elsewhere(env: dict[str, str], foundry_url: str, name: str) -> int:
    """As the web server does, in a process of its own on ``env``'s database and broker: two
    Foundry targets on one simulated resource (deployments Phi-4 and Phi-4-mini-instruct, told
    apart in its records), and an experiment over them whose first tasks are sent on commit.
    The database needs the catalog. Returns the experiment's id."""
    from tests.playground.conftest import FOUNDRY_KEY

    code = f"""
from apps.catalog.models import FoundryModel
from apps.playground.experiments import experiment_create
from apps.playground.prompts import Prompt, PromptSet
from tests.playground.factories import foundry_target

targets = [
    foundry_target({foundry_url!r}, {FOUNDRY_KEY!r}, name="foundry-phi-4"),
    foundry_target(
        {foundry_url!r},
        {FOUNDRY_KEY!r},
        name="foundry-phi-4-mini",
        model_name="Phi-4-mini-instruct",
        foundry_model=FoundryModel.objects.get(name="Phi-4-mini-instruct"),
    ),
]
prompts = PromptSet("reliability", tuple(Prompt(p) for p in {EXPERIMENT_PROMPTS!r}))
result = experiment_create(
    user=None,
    name={name!r},
    targets=targets,
    prompt_set=prompts,
    repetitions={EXPERIMENT_REPETITIONS},
    concurrency={EXPERIMENT_CONCURRENCY},
    max_tokens=24,
).pk
"""
    return int(django_run(env, code))
