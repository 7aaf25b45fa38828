"""Several processes, one scrape: gunicorn's workers and a prefork Celery worker's children all
write to PROMETHEUS_MULTIPROC_DIR, and /metrics adds them up. Their logs are JSON lines naming
the request or the task."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from kaitoweb.celery import app
from tests.conftest import CeleryWorker, _worker_env, wait_for
from tests.ops.conftest import closed_port
from tests.ops.test_metrics import samples

RELOAD = "apps.catalog.tasks.catalog_reload"


def get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    assert url.startswith("http://127.0.0.1:")
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (checked above)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()
    except OSError:
        return 0, {}, b""


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for raw in path.read_text().splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    return directory


@pytest.fixture
def gunicorn(
    transactional_db: None, tmp_path: Path, metrics_dir: Path
) -> Iterator[tuple[str, Path]]:
    """gunicorn with two workers, as the image runs it, on the test database. (URL, its log)."""
    port = closed_port()
    log = tmp_path / "gunicorn.log"
    env = {
        **_worker_env(),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "LOG_FORMAT": "json",
        "SECURE_SSL_REDIRECT": "0",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "kaitoweb.wsgi:application",
                "--config=python:kaitoweb.observability.gunicorn",
                f"--bind=127.0.0.1:{port}",
                "--workers=2",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=settings.BASE_DIR,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: proc.poll() is not None or get(f"{url}/healthz")[0] == 200,
            timeout=60,
            what="gunicorn to answer /healthz",
        )
        assert proc.poll() is None, log.read_text()[-3000:]
        yield url, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_requests_to_every_gunicorn_worker_and_a_celery_workers_tasks_add_up_in_one_scrape(
    gunicorn: tuple[str, Path],
    metrics_dir: Path,
    celery_worker_factory: Callable[..., CeleryWorker],
) -> None:
    url, web_log = gunicorn
    exporter_port = closed_port()
    worker = celery_worker_factory(
        pool="prefork",
        concurrency=2,
        env={
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "CELERY_METRICS_PORT": str(exporter_port),
            "LOG_FORMAT": "json",
        },
    )
    for _ in range(6):
        assert get(f"{url}/healthz")[0] == 200
    status, headers, _body = get(f"{url}/accounts/login/", **{"X-Request-ID": "trace-abc-123"})
    assert status == 200
    assert headers["X-Request-ID"] == "trace-abc-123"

    app.send_task(RELOAD, queue=settings.CELERY_TASK_DEFAULT_QUEUE)
    # An unexpected argument: the task raises TypeError in the worker.
    app.send_task(RELOAD, kwargs={"bogus": True}, queue=settings.CELERY_TASK_DEFAULT_QUEUE)

    def task_counts(text: str) -> dict[str, float]:
        found = samples(text)
        return {
            outcome: found.get(
                (
                    "kaitoweb_celery_task_duration_seconds_count",
                    (("outcome", outcome), ("task", RELOAD)),
                ),
                0.0,
            )
            for outcome in ("success", "failure")
        }

    # The worker's own exporter, as a Prometheus in another pod would scrape it.
    exporter = f"http://127.0.0.1:{exporter_port}/metrics"
    wait_for(
        lambda: task_counts(get(exporter)[2].decode()) == {"success": 1.0, "failure": 1.0},
        timeout=120,
        what="both tasks in the worker's metrics",
    )
    exported = get(exporter)[2].decode()
    assert "kaitoweb_experiments" not in exported  # the database counts are the web app's

    status, _headers, body = get(f"{url}/metrics")
    assert status == 200
    scraped = body.decode()
    found = samples(scraped)
    healthz = (
        "kaitoweb_http_requests_total",
        (("method", "GET"), ("status", "200"), ("view", "healthz")),
    )
    # Six probes here plus the ones the fixture made while waiting for gunicorn; across workers.
    assert found[healthz] >= 6
    login = [
        value
        for (name, labels), value in found.items()
        if name == "kaitoweb_http_requests_total"
        and ("status", "200") in labels
        and any(k == "view" and "login" in v for k, v in labels)
    ]
    assert login == [1.0]
    assert task_counts(scraped) == {"success": 1.0, "failure": 1.0}
    failures = (
        "kaitoweb_celery_task_failures_total",
        (("exception", "TypeError"), ("task", RELOAD)),
    )
    assert found[failures] == 1.0
    assert ("kaitoweb_experiments", (("status", "queued"),)) in found
    pids = {p.name.rsplit("_", 1)[-1] for p in metrics_dir.glob("*.db")}
    assert len(pids) >= 3  # two gunicorn workers and at least one worker child wrote values

    # Logs: one JSON object a line, naming the request...
    request_lines = [
        line for line in json_lines(web_log) if line.get("request_id") == "trace-abc-123"
    ]
    assert request_lines, web_log.read_text()[-3000:]
    line = request_lines[-1]
    assert line["logger"] == "kaitoweb.request"
    assert line["level"] == "INFO"
    assert line["path"] == "/accounts/login/"
    assert line["method"] == "GET" and line["status"] == 200
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0
    assert line["timestamp"].endswith("Z")
    # ... or the task.
    worker_lines = json_lines(worker.log)
    reload_lines = [
        entry
        for entry in worker_lines
        if str(entry.get("message", "")).startswith("catalog reload:")
    ]
    assert reload_lines, worker.log.read_text()[-3000:]
    assert {entry["task_name"] for entry in reload_lines} == {RELOAD}
    assert all(len(entry["task_id"]) == 36 for entry in reload_lines)
    failed = [
        entry
        for entry in worker_lines
        if entry.get("level") == "ERROR" and "TypeError" in entry.get("exception", "")
    ]
    assert failed and failed[0]["task_name"] == RELOAD
