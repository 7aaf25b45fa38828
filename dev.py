#!/usr/bin/env python3
"""One command to run kaitoweb on a laptop, one to run its whole test suite.

    python3 dev.py run    venv, install, migrate, load the catalog, print a login, then start
                          the KAITO/Foundry simulator, a Celery worker (with beat) and the web
                          server on http://127.0.0.1:8000, all on the embedded defaults
                          (SQLite, a filesystem broker) unless DATABASE_URL / REDIS_URL are set.
    python3 dev.py test   venv, install with the test tools, ruff, mypy, then pytest
                          (extra arguments go to pytest: python3 dev.py test -k sizing).

Only the Python standard library is used here, so a machine with nothing but Python 3.11+
gets through it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
VAR = ROOT / "var"


def say(message: str) -> None:
    print(f"\033[1m==> {message}\033[0m", flush=True)


def sh(*args: str | Path, env: dict[str, str] | None = None) -> None:
    subprocess.run([str(a) for a in args], cwd=ROOT, env=env, check=True)


def ensure_venv(extras: str) -> None:
    """Create .venv and install the project; skip the install when nothing changed."""
    if sys.version_info < (3, 11):  # noqa: UP036 (dev.py runs on whatever python3 is there)
        sys.exit(f"kaitoweb needs Python 3.11 or newer, this is {sys.version.split()[0]}")
    if not PY.exists():
        say(f"creating a virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / f".installed-{extras or 'base'}"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    say("installing kaitoweb and its dependencies" + (f" [{extras}]" if extras else ""))
    sh(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    sh(PY, "-m", "pip", "install", "--quiet", "-e", f".[{extras}]" if extras else ".")
    stamp.write_text(digest)


def run() -> None:
    ensure_venv("")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "kaitoweb.settings"}
    env.setdefault("DEBUG", "1")
    VAR.mkdir(exist_ok=True)
    manage = [PY, ROOT / "manage.py"]
    say("migrating the database")
    sh(*manage, "migrate", "--no-input", "-v", "0", env=env)
    say("loading the model catalog")
    sh(*manage, "load_catalog", env=env)
    password_file = VAR / "admin-password.txt"
    if not password_file.exists():
        password_file.write_text(secrets.token_urlsafe(12))
        password_file.chmod(0o600)
    password = password_file.read_text().strip()
    sh(*manage, "create_admin", "--username", "admin", "--password", password, env=env)

    port = env.get("PORT", "8000")
    children: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str | Path) -> None:
        say(f"starting {name}")
        children.append(subprocess.Popen([str(a) for a in args], cwd=ROOT, env=env))

    if (ROOT / "kaitosim" / "__main__.py").exists():
        kubeconfig = VAR / "kaitosim" / "kubeconfig"
        env.setdefault("KAITOSIM_KUBECONFIG", str(kubeconfig))
        start(
            "kaitosim (simulated AKS + KAITO + Foundry)",
            PY,
            "-m",
            "kaitosim",
            "--kubeconfig",
            kubeconfig,
            "--speed",
            env.get("KAITOSIM_SPEED", "20"),
        )
        # Register it as the "kaitosim" cluster and its Foundry as targets (new credentials on
        # every start); the app still runs if this fails, and "Add the local simulator" remains.
        say("registering the simulator's cluster and Foundry targets")
        setup = [*manage, "demo_setup", "--state-dir", VAR / "kaitosim", "--wait", "60"]
        if subprocess.run([str(a) for a in setup], cwd=ROOT, env=env).returncode != 0:
            say("demo_setup failed (see above); add the simulator from the Clusters page")
    start(
        "the Celery worker (with beat)",
        PY,
        "-m",
        "celery",
        "-A",
        "kaitoweb",
        "worker",
        "--beat",
        "--loglevel=INFO",
        "--pool=threads",
        "--concurrency=8",
        "--schedule",
        VAR / "celerybeat-schedule",
    )
    start("the web server", *manage, "runserver", f"127.0.0.1:{port}", "--noreload")
    time.sleep(1.5)
    print(
        f"\n  kaitoweb: http://127.0.0.1:{port}/   log in as admin / {password}\n"
        f"  (the password is kept in {password_file.relative_to(ROOT)}; Ctrl-C stops everything)\n",
        flush=True,
    )
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        failed = [c for c in children if c.poll() not in (None, 0)]
        if failed:
            say(f"a process exited with code {failed[0].returncode}; stopping the others")
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()


def test(pytest_args: list[str]) -> int:
    ensure_venv("dev")
    say("ruff")
    sh(BIN / "ruff", "check", ".")
    say("mypy")
    sh(BIN / "mypy", ".")
    say(
        "pytest"
        + (
            f" on {os.environ['DATABASE_URL'].rsplit('@', 1)[-1]}"
            if os.environ.get("DATABASE_URL")
            else " on SQLite"
        )
    )
    return subprocess.run([str(PY), "-m", "pytest", *pytest_args], cwd=ROOT).returncode


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "run":
        run()
        return 0
    if command == "test":
        return test(sys.argv[2:])
    print(__doc__)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as exc:
        cmd = " ".join(str(a) for a in exc.cmd)
        sys.exit(f"failed ({exc.returncode}): {cmd}")
