"""The Celery app: configured from Django settings (CELERY_* names), tasks found in apps."""

from __future__ import annotations

import contextvars
import logging.config
import os
from pathlib import Path

from celery import Celery, Task, signals

from kaitoweb.env import env_int
from kaitoweb.observability import context, metrics

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kaitoweb.settings")

app = Celery("kaitoweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_configure.connect
def _make_broker_folders(sender: Celery, **kwargs: object) -> None:
    """The serverless default broker keeps messages in folders; make sure they exist.

    Reads Django's settings, not `sender.conf`: touching the app's configuration while it is
    being configured would configure it again, recursively.
    """
    from django.conf import settings

    if str(settings.CELERY_BROKER_URL).startswith("filesystem://"):
        options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
        for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
            if options.get(key):
                Path(str(options[key])).mkdir(parents=True, exist_ok=True)


# ------------------------------------------------------------------------------ observability
# Logs: the worker and beat use Django's LOGGING (JSON lines unless LOG_FORMAT=plain) instead of
# Celery's own format. A receiver of setup_logging stops Celery from configuring logging itself.
@signals.setup_logging.connect
def _configure_logging(**kwargs: object) -> None:
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)


_task_context: dict[str, contextvars.Token[context.LogContext]] = {}


@signals.task_prerun.connect
def _task_prerun(task_id: str = "", task: Task | None = None, **kwargs: object) -> None:
    name = task.name if task is not None else ""
    _task_context[task_id] = context.bind(task_name=name, task_id=task_id)
    metrics.task_started(task_id)


@signals.task_postrun.connect
def _task_postrun(
    task_id: str = "", task: Task | None = None, state: str | None = None, **kwargs: object
) -> None:
    metrics.task_finished(task.name if task is not None else "", task_id, state)
    token = _task_context.pop(task_id, None)
    if token is not None:
        context.unbind(token)


@signals.task_failure.connect
def _task_failure(
    sender: Task | None = None, exception: BaseException | None = None, **kwargs: object
) -> None:
    metrics.task_failed(sender.name if sender is not None else "", exception)


@signals.worker_ready.connect
def _serve_worker_metrics(**kwargs: object) -> None:
    """With CELERY_METRICS_PORT set, the worker serves its task metrics on that port (its
    processes are in another container or pod than the web app's /metrics)."""
    port = env_int("CELERY_METRICS_PORT", 0)
    if port:
        metrics.worker_exporter_start(port)
