"""Prometheus metrics: HTTP requests, Celery tasks, and experiments and deployments by status.

Request and task metrics are recorded in the process that serves the request or runs the task.
Gunicorn's workers and a prefork Celery worker's children are separate processes, so with more
than one process set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory that all of them can
write (prometheus_client's multiprocess mode: each process keeps its values in files there, and
a scrape adds them up). It must be set in the environment before the process starts, and the
processes sharing it must share a PID namespace (one host, one container or one pod). Without
it each process has its own registry, which is right for a single process (``runserver``).

The counts of experiments, A/B runs and deployments by status are read from the database at
scrape time (`DatabaseCollector`), so they are right whichever process is scraped, and only the
web app's ``/metrics`` includes them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

HTTP_REQUESTS = Counter(
    "kaitoweb_http_requests",
    "HTTP requests answered, by view name, method and status code.",
    ["view", "method", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "kaitoweb_http_request_duration_seconds",
    "Time to answer an HTTP request (the whole middleware stack), by view name and method.",
    ["view", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
TASK_SECONDS = Histogram(
    "kaitoweb_celery_task_duration_seconds",
    "Time a Celery task ran, by task name and outcome (success, failure, retry).",
    ["task", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
)
TASK_FAILURES = Counter(
    "kaitoweb_celery_task_failures",
    "Celery tasks that raised, by task name and exception class.",
    ["task", "exception"],
)


def multiprocess_dir() -> str:
    return os.environ.get(MULTIPROC_ENV, "")


class _ProcessMetrics(Collector):
    """This process's own registry, re-exposed in a scrape registry of our making."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


class DatabaseCollector(Collector):
    """Experiments, A/B runs and deployments by status, counted in the database per scrape.

    Every status is reported (0 when none), so a series never vanishes. If the database does
    not answer, these families are left out of the scrape and the error is logged.
    """

    def collect(self) -> Iterator[Metric]:
        from django.db import DatabaseError
        from django.db.models import Count

        from apps.deployments.models import Deployment
        from apps.playground.models import ABRun, Experiment

        families: list[Metric] = []
        try:
            for model, name, what in (
                (Experiment, "kaitoweb_experiments", "Experiments"),
                (ABRun, "kaitoweb_ab_runs", "A/B runs"),
                (Deployment, "kaitoweb_deployments", "Deployments"),
            ):
                counts: dict[str, int] = {status: 0 for status in model.Status.values}
                for row in model.objects.values("status").annotate(n=Count("pk")):
                    counts[str(row["status"])] = int(row["n"])
                family = GaugeMetricFamily(name, f"{what} by status.", labels=["status"])
                for status, n in sorted(counts.items()):
                    family.add_metric([status], n)
                families.append(family)
        except DatabaseError as error:
            logger.warning("metrics: the database did not answer: %s", error)
            return
        yield from families


def scrape_registry(*, database: bool = True) -> CollectorRegistry:
    """A registry for one scrape: every process's metrics (multiprocess mode) or this one's,
    plus the database counts unless `database` is False."""
    registry = CollectorRegistry()
    directory = multiprocess_dir()
    if directory:
        multiprocess.MultiProcessCollector(registry, path=directory)
    else:
        registry.register(_ProcessMetrics())
    if database:
        registry.register(DatabaseCollector())
    return registry


# ---------------------------------------------------------------------------- Celery signals
_task_started: dict[str, float] = {}


def task_started(task_id: str) -> None:
    _task_started[task_id] = time.perf_counter()


def task_finished(task_name: str, task_id: str, state: str | None) -> None:
    started = _task_started.pop(task_id, None)
    if started is None:
        return
    outcome = {"SUCCESS": "success", "FAILURE": "failure", "RETRY": "retry"}.get(
        str(state or ""), str(state or "unknown").lower()
    )
    TASK_SECONDS.labels(task=task_name, outcome=outcome).observe(time.perf_counter() - started)


def task_failed(task_name: str, exception: BaseException | None) -> None:
    TASK_FAILURES.labels(
        task=task_name, exception=type(exception).__name__ if exception else "unknown"
    ).inc()


def request_observed(*, view: str, method: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(view=view, method=method, status=str(status)).inc()
    HTTP_REQUEST_SECONDS.labels(view=view, method=method).observe(seconds)


def worker_exporter_start(port: int) -> Any:
    """Serve this worker's task metrics on `port` (all its processes' in multiprocess mode)."""
    from prometheus_client import start_http_server

    logger.info("serving Celery task metrics on :%s/metrics", port)
    return start_http_server(port, registry=scrape_registry(database=False))
