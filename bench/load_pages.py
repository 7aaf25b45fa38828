"""Load on loopback: simulated users browse the dashboard while two experiments run.

Starts, in a temporary folder, what a production install runs: gunicorn (``kaitoweb.wsgi``, the
Dockerfile's options, DEBUG off, static files collected into a temporary STATIC_ROOT and served
by WhiteNoise, a SECRET_KEY and ENCRYPTION_KEYS made for the run), a Celery worker with beat, and
kaitosim (KAITO and Foundry). Seeds the catalog, the simulator as a cluster with two ready
deployments, Foundry targets, and two experiments that keep running during the load. Then each
of ``--users`` users signs in with a session of its own and browses: the catalog (with filters),
model pages, deployments and their live fragment, experiments and their results and progress
fragment, until it has made ``--requests`` requests or ``--duration`` seconds have passed.

Prints the request and error counts (every error is listed), p50/p95/p99 per page and overall,
and the throughput. On PostgreSQL and Redis when DATABASE_URL and REDIS_URL are set (a database
of its own is created on that server and dropped afterwards; the broker queue is the run's own),
else on the embedded default (SQLite and the filesystem broker, in the temporary folder).

    .venv/bin/python bench/load_pages.py [--users 50] [--requests 40] [--duration 60]
        [--think 0.5] [--workers 3] [--threads 1] [--keep]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SIM_SPEED = 100.0  # a 966 s AKS cold start in about 10 s
FOUNDRY_MODELS = ("Phi-4-mini-instruct", "Phi-4")
OK_STATUSES = (200, 286)  # 286: htmx's "stop polling", sent with a finished fragment


# ------------------------------------------------------------------------------ processes
@dataclass
class Stack:
    workdir: Path
    env: dict[str, str]
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    bench_database: tuple[str, str] | None = None  # (maintenance URL, database name)

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            args,
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append((name, proc))
        return proc

    def run(self, args: list[str]) -> str:
        done = subprocess.run(
            args, env=self.env, cwd=ROOT, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise SystemExit(
                f"{' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
            )
        return done.stdout

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self.bench_database is not None:
            drop_database(*self.bench_database)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Any, *, timeout: float, what: str, stack: Stack, log: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}; {log} log:\n{stack.log_tail(log)}")
        time.sleep(0.2)


def create_database(url: str) -> tuple[str, str, str]:
    """A fresh database beside the one DATABASE_URL names: (its URL, maintenance URL, name)."""
    import psycopg

    parts = urlsplit(url)
    name = f"kaitoweb_bench_{os.getpid()}"
    maintenance = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}")), maintenance, name


def drop_database(maintenance: str, name: str) -> None:
    import psycopg

    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ----------------------------------------------------------------------------------- seed
@dataclass
class Seeded:
    users: list[tuple[str, str]]
    kaito_models: list[str]
    foundry_models: list[str]
    families: list[str]
    vm_sizes: list[str]
    deployments: list[int]
    experiments: list[int]


def seed(stack: Stack, *, users: int, sim_dir: Path) -> Seeded:
    """Through the ORM, with the server's settings: users, the cluster and its deployments,
    Foundry targets and two running experiments."""
    os.environ.update(stack.env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from apps.accounts.roles import Role
    from apps.accounts.services import user_grant_role
    from apps.catalog.models import FoundryModel, GpuVmSize, KaitoModel, ModelFamily
    from apps.clusters.services import cluster_create
    from apps.deployments import manifests, services
    from apps.deployments.models import Deployment
    from apps.deployments.selectors import kaito_model_for
    from apps.playground.experiments import experiment_create
    from apps.playground.models import Target
    from apps.playground.prompts import builtin_load, builtin_names
    from apps.playground.services import target_save

    endpoints = json.loads((sim_dir / "endpoints.json").read_text())
    cluster = cluster_create(
        name="kaitosim",
        kubeconfig=(sim_dir / "kubeconfig").read_text(),
        context="kaitosim",
        default_namespace="bench",
        region="eastus",
        clock_speed=SIM_SPEED,
    )
    deployments = []
    for name, model in (
        ("phi-4-mini", "phi-4-mini-instruct"),
        ("phi-3-mini", "phi-3-mini-4k-instruct"),
    ):
        uid = str(uuid.uuid4())
        bundle = manifests.bundle_render(
            manifests.LaunchSpec(
                name=name,
                namespace="bench",
                vm_size="Standard_NC24ads_A100_v4",
                node_count=1,
                deployment_uid=uid,
                model_name=model,
                settings=manifests.InferenceSettings(max_model_len=4096),
            )
        )
        row = services.deployment_request(
            cluster=cluster,
            bundle=bundle,
            deployment_uid=uid,
            source=Deployment.Source.PRESET,
            kaito_model=kaito_model_for(model),
        )
        deployments.append(row.pk)
    wait_until(
        lambda: (
            Deployment.objects.filter(pk__in=deployments, status=Deployment.Status.READY).count()
            == len(deployments)
        ),
        timeout=180,
        what="two ready deployments",
        stack=stack,
        log="worker",
    )
    targets = []
    for model in FOUNDRY_MODELS:
        targets.append(
            target_save(
                target=Target(
                    name=f"foundry-{model.lower()}",
                    kind=Target.Kind.FOUNDRY_OPENAI,
                    model_name=model,
                    endpoint_url=str(endpoints["foundryUrl"]).rstrip("/") + "/openai/v1/",
                    auth=Target.Auth.API_KEY,
                    api_key=str(endpoints["foundryKey"]),
                    deployment_type=Target.DeploymentType.GLOBAL,
                    region="eastus",
                )
            )
        )
    prompt_set = builtin_load(builtin_names()[0])
    experiments = [
        experiment_create(
            user=None,
            name=f"load bench {n}",
            targets=targets,
            prompt_set=prompt_set,
            repetitions=max(1, 600 // len(prompt_set.prompts)),  # outlasts the load
            concurrency=4,
            max_tokens=128,
        ).pk
        for n in (1, 2)
    ]
    people = []
    user_model = get_user_model()
    for n in range(users):
        password = secrets.token_urlsafe(12)
        user = user_model.objects.create_user(f"viewer{n:02d}", password=password)
        user_grant_role(user=user, role=Role.VIEWER)
        people.append((user.get_username(), password))
    return Seeded(
        users=people,
        kaito_models=list(KaitoModel.objects.values_list("model_id", flat=True)),
        foundry_models=list(FoundryModel.objects.values_list("name", flat=True)),
        families=list(ModelFamily.objects.values_list("key", flat=True)),
        vm_sizes=list(GpuVmSize.objects.filter(gpu_count__gt=0).values_list("sku", flat=True)),
        deployments=deployments,
        experiments=experiments,
    )


def experiments_state(ids: list[int]) -> list[str]:
    from apps.playground.models import Experiment, Sample

    states = []
    for experiment in Experiment.objects.filter(pk__in=ids).order_by("pk"):
        done = experiment.samples.filter(status=Sample.Status.DONE).count()
        states.append(f"#{experiment.pk} {experiment.status}, {done} samples done")
    return states


def experiments_cancel(ids: list[int]) -> None:
    from apps.playground.experiments import experiment_cancel
    from apps.playground.models import Experiment

    for experiment in Experiment.objects.filter(pk__in=ids):
        experiment_cancel(experiment=experiment)


# ----------------------------------------------------------------------------------- users
@dataclass
class Result:
    page: str
    seconds: float
    error: str = ""


def pages(seeded: Seeded, rng: random.Random) -> tuple[str, str, dict[str, str]]:
    """One page a user opens next: (page kind, path, headers)."""
    htmx = {"HX-Request": "true"}
    choice = rng.choices(
        [
            "catalog",
            "catalog filtered",
            "model page",
            "deployments",
            "deployment page",
            "deployment live (htmx)",
            "experiments",
            "experiment results",
            "experiment progress (htmx)",
        ],
        weights=[2, 4, 4, 2, 2, 2, 2, 3, 2],
    )[0]
    if choice == "catalog":
        return choice, "/catalog/", {}
    if choice == "catalog filtered":
        filters = rng.choice(
            [
                {"family": rng.choice(seeded.families)},
                {"source": rng.choice(["kaito", "foundry", "both"])},
                {"gated": rng.choice(["yes", "no"]), "runtime": "vllm"},
                {"fits_on": rng.choice(seeded.vm_sizes), "sort": "cost"},
                {"q": rng.choice(["llama", "phi", "mistral", "qwen", "instruct"])},
                {"lifecycle": "ga", "sort": "-context"},
            ]
        )
        return choice, "/catalog/?" + "&".join(f"{k}={v}" for k, v in filters.items()), {}
    if choice == "model page":
        if rng.random() < 0.7:
            return choice, f"/catalog/kaito/{rng.choice(seeded.kaito_models)}/", {}
        return choice, f"/catalog/foundry/{rng.choice(seeded.foundry_models)}/", {}
    if choice == "deployments":
        return choice, "/deployments/", {}
    if choice == "deployment page":
        return choice, f"/deployments/{rng.choice(seeded.deployments)}/", {}
    if choice == "deployment live (htmx)":
        return choice, f"/deployments/{rng.choice(seeded.deployments)}/", htmx
    if choice == "experiments":
        return choice, "/playground/experiments/", {}
    if choice == "experiment results":
        return choice, f"/playground/experiments/{rng.choice(seeded.experiments)}/", {}
    return choice, f"/playground/experiments/{rng.choice(seeded.experiments)}/", htmx


def sign_in(http: httpx.Client, username: str, password: str) -> str:
    """Sign in through the login form (CSRF token and all); "" or what went wrong."""
    form = http.get("/accounts/login/")
    if form.status_code != 200:
        return f"GET /accounts/login/ answered {form.status_code}"
    token = http.cookies.get("csrftoken") or ""
    answer = http.post(
        "/accounts/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{http.base_url}accounts/login/"},
    )
    if answer.status_code != 302 or "/accounts/login/" in answer.headers.get("location", ""):
        return f"POST /accounts/login/ answered {answer.status_code}"
    return ""


def user_loop(
    index: int,
    base_url: str,
    account: tuple[str, str],
    seeded: Seeded,
    args: argparse.Namespace,
    signed_in: threading.Barrier,
    start_at: list[float],
    results: list[Result],
    lock: threading.Lock,
) -> None:
    rng = random.Random(index)  # noqa: S311 (which page to open next, not a secret)
    mine: list[Result] = []
    with httpx.Client(base_url=base_url, timeout=60.0, follow_redirects=False) as http:
        began = time.perf_counter()
        try:
            problem = sign_in(http, *account)
        except httpx.HTTPError as failure:
            problem = f"sign-in: {type(failure).__name__}: {failure}"
        mine.append(Result("sign-in", time.perf_counter() - began, problem))
        signed_in.wait()
        deadline = start_at[0] + args.duration
        for _ in range(args.requests):
            if problem or time.monotonic() >= deadline:
                break
            page, path, headers = pages(seeded, rng)
            began = time.perf_counter()
            try:
                answer = http.get(path, headers=headers)
                error: str = (
                    ""
                    if answer.status_code in OK_STATUSES
                    else f"GET {path} answered {answer.status_code}"
                    + (f" -> {answer.headers.get('location')}" if answer.is_redirect else "")
                )
            except httpx.HTTPError as exc:
                error = f"GET {path}: {type(exc).__name__}: {exc}"
            mine.append(Result(page, time.perf_counter() - began, error))
            if args.think > 0:
                time.sleep(rng.uniform(0, 2 * args.think))
    with lock:
        results.extend(mine)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=1000, method="inclusive")[round(fraction * 1000) - 1]


def report(results: list[Result], wall: float) -> int:
    browsing = [r for r in results if r.page != "sign-in"]
    errors = [r for r in results if r.error]
    by_page: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        by_page[r.page].append(r)
    print(f"\n{'page':<28}{'requests':>9}{'errors':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for page in sorted(by_page, key=lambda p: (p != "sign-in", p)):
        rows = by_page[page]
        ms = [r.seconds * 1000 for r in rows]
        print(
            f"{page:<28}{len(rows):>9}{sum(1 for r in rows if r.error):>8}"
            f"{percentile(ms, 0.50):>9.0f}{percentile(ms, 0.95):>9.0f}{percentile(ms, 0.99):>9.0f}"
        )
    if browsing:
        ms = [r.seconds * 1000 for r in browsing]
        print(
            f"{'all pages (not sign-in)':<28}{len(browsing):>9}"
            f"{sum(1 for r in browsing if r.error):>8}{percentile(ms, 0.50):>9.0f}"
            f"{percentile(ms, 0.95):>9.0f}{percentile(ms, 0.99):>9.0f}"
        )
    print(
        f"\nrequests: {len(browsing)} pages + {len(results) - len(browsing)} sign-ins; "
        f"errors: {len(errors)}; throughput: {len(browsing) / wall:.1f} pages/s over {wall:.1f} s"
    )
    for r in errors[:50]:
        print(f"  error ({r.page}): {r.error}")
    if len(errors) > 50:
        print(f"  ... and {len(errors) - 50} more")
    return 1 if errors else 0


# ------------------------------------------------------------------------------------ main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40, help="pages per user at most")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load at most")
    parser.add_argument(
        "--think", type=float, default=0.5, help="mean pause between a user's pages (s)"
    )
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers (Dockerfile: 3)")
    parser.add_argument("--threads", type=int, default=1, help="gunicorn threads per worker")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    from cryptography.fernet import Fernet

    workdir = Path(tempfile.mkdtemp(prefix="kaitoweb-load-"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "kaitoweb.settings",
        "DEBUG": "0",
        "SECRET_KEY": base64.urlsafe_b64encode(os.urandom(48)).decode(),
        "ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "KAITOWEB_VAR_DIR": str(workdir / "var"),
        "STATIC_ROOT": str(workdir / "static"),
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
        "CELERY_QUEUE": f"kaitoweb-load-{os.getpid()}",
        # Plain HTTP on loopback: no TLS redirect, cookies without the Secure flag.
        "SECURE_SSL_REDIRECT": "0",
        "SESSION_COOKIE_SECURE": "0",
        "CSRF_COOKIE_SECURE": "0",
        "SECURE_HSTS_SECONDS": "0",
        "LOG_LEVEL": "WARNING",
    }
    (workdir / "metrics").mkdir()
    stack = Stack(workdir=workdir, env=env)
    if os.environ.get("DATABASE_URL"):
        url, maintenance, name = create_database(os.environ["DATABASE_URL"])
        env["DATABASE_URL"] = url
        stack.bench_database = (maintenance, name)
    backend = (
        f"PostgreSQL ({urlsplit(env['DATABASE_URL']).path.lstrip('/')}) and Redis"
        if env.get("DATABASE_URL") and env.get("REDIS_URL")
        else ("PostgreSQL" if env.get("DATABASE_URL") else "SQLite")
        + (" and Redis" if env.get("REDIS_URL") else " and the filesystem broker")
    )
    try:
        print(f"== load bench in {workdir} on {backend}")
        manage = [PYTHON, "manage.py"]
        stack.run([*manage, "migrate", "--noinput", "-v", "0"])
        stack.run([*manage, "collectstatic", "--noinput", "-v", "0"])
        stack.run([*manage, "load_catalog"])
        sim_dir = workdir / "kaitosim"
        stack.start(
            "kaitosim",
            [PYTHON, "-m", "kaitosim", "--state-dir", str(sim_dir), "--speed", str(SIM_SPEED)],
        )
        wait_until(
            lambda: (sim_dir / "endpoints.json").exists() and (sim_dir / "kubeconfig").exists(),
            timeout=60,
            what="kaitosim",
            stack=stack,
            log="kaitosim",
        )
        stack.start(
            "worker",
            [
                PYTHON, "-m", "celery", "-A", "kaitoweb", "worker", "--beat",
                "-s", str(workdir / "celerybeat-schedule"), "--pool=threads", "--concurrency=8",
                "-Q", env["CELERY_QUEUE"], "-n", f"load-{os.getpid()}@%h", "--loglevel=WARNING",
            ],
        )  # fmt: skip
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        stack.start(
            "gunicorn",
            [
                PYTHON, "-m", "gunicorn", "kaitoweb.wsgi:application",
                "--config=python:kaitoweb.observability.gunicorn", f"--bind=127.0.0.1:{port}",
                f"--workers={args.workers}", f"--threads={args.threads}", "--timeout=120",
            ],
        )  # fmt: skip

        def serving() -> bool:
            try:
                return httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(serving, timeout=60, what="gunicorn", stack=stack, log="gunicorn")
        static = httpx.get(f"{base_url}/static/vendor/htmx/htmx.min.js", timeout=5)
        print(
            f"   gunicorn {args.workers} worker(s) x {args.threads} thread(s) on {base_url}; "
            f"a static file answers {static.status_code} "
            f"({static.headers.get('cache-control', 'no cache-control')})"
        )
        seeded = seed(stack, users=args.users, sim_dir=sim_dir)
        print(
            f"   seeded: {len(seeded.kaito_models)} KAITO and {len(seeded.foundry_models)} "
            f"Foundry models, deployments {seeded.deployments} ready, {len(seeded.users)} users"
        )
        time.sleep(5)  # the experiments' first requests are under way
        print("   experiments before the load: " + "; ".join(experiments_state(seeded.experiments)))
        print(
            f"== {args.users} users, at most {args.requests} pages each or {args.duration:g} s, "
            f"think time {args.think:g} s on average"
        )
        results: list[Result] = []
        lock = threading.Lock()
        start_at = [0.0]
        barrier = threading.Barrier(
            args.users + 1, action=lambda: start_at.__setitem__(0, time.monotonic())
        )
        threads = [
            threading.Thread(
                target=user_loop,
                args=(i, base_url, seeded.users[i], seeded, args, barrier, start_at, results, lock),
                daemon=True,
            )
            for i in range(args.users)
        ]
        for thread in threads:
            thread.start()
        barrier.wait()
        for thread in threads:
            thread.join(timeout=args.duration + 180)
        wall = time.monotonic() - start_at[0]
        print("   experiments after the load: " + "; ".join(experiments_state(seeded.experiments)))
        status = report(results, wall)
        experiments_cancel(seeded.experiments)
        return status
    finally:
        stack.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
