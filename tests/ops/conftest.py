"""Helpers for the operations tests: a port nobody listens on, and app subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from django.conf import settings


def closed_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def django_run(code: str, env: dict[str, str | None]) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh Python with Django set up, on this environment changed by `env`
    (None removes a variable)."""
    program = "import django\ndjango.setup()\n" + code
    changed = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-c", program],
        env={k: v for k, v in changed.items() if v is not None},
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
