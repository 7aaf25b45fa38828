"""Readiness checks: does the database answer, does the broker answer, each within a deadline.

Each check runs in a thread of its own and is waited for at most `timeout` seconds, so a
database or broker that hangs (a dropped packet, not a refused connection) makes /readyz answer
503 in time instead of holding the probe until the kubelet gives up on it.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connections

# Seconds each check may take. Short: a probe must answer well inside the kubelet's timeout.
TIMEOUT = 2.0


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str = ""


def database_check(timeout: float) -> None:
    """SELECT 1 on a connection of this thread's own, closed afterwards."""
    connection = connections["default"]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close()


def broker_check(timeout: float) -> None:
    """PING Redis; for the serverless filesystem broker, write a file into its queue folder."""
    url = str(settings.CELERY_BROKER_URL)
    if url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout, retry_on_timeout=False
        )
        try:
            client.ping()
        finally:
            client.close()
        return
    if url.startswith("filesystem://"):
        # The Celery app makes the folder when it is first configured; so may this check.
        folder = Path(str(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]))
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".readyz-", delete=True):
            pass
        return
    from kombu import Connection

    with Connection(url, connect_timeout=timeout) as broker:
        broker.ensure_connection(max_retries=1, timeout=max(1, round(timeout)))


CHECKS: dict[str, Callable[[float], None]] = {"database": database_check, "broker": broker_check}


def run_checks(timeout: float = TIMEOUT) -> list[CheckResult]:
    """Every check at once; one that has not answered after `timeout` seconds has failed."""
    outcomes: dict[str, CheckResult] = {}

    def run(name: str, check: Callable[[float], None]) -> None:
        try:
            check(timeout)
        except Exception as error:
            outcomes[name] = CheckResult(name, False, f"{type(error).__name__}: {error}")
        else:
            outcomes[name] = CheckResult(name, True)

    threads = [
        threading.Thread(target=run, args=(name, check), name=f"readyz-{name}", daemon=True)
        for name, check in CHECKS.items()
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [
        outcomes.get(name) or CheckResult(name, False, f"no answer within {timeout:g} s")
        for name in CHECKS
    ]
