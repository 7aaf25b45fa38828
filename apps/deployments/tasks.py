"""Thin Celery tasks: take an id, call a service. The services make retries harmless.

Transient cluster errors (unreachable, 5xx, 429) retry with exponential backoff and jitter;
4xx answers never retry (the service records them on the row). When a launch spends its
retries, the row says the cluster did not answer.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from celery import Task, shared_task

from apps.clusters.kube import TransientError
from apps.deployments import services
from apps.deployments.models import Deployment
from kaitoweb.env import env_int

logger = logging.getLogger(__name__)

MAX_RETRIES = env_int("DEPLOYMENTS_TASK_RETRIES", 8)
BACKOFF_MAX = env_int("DEPLOYMENTS_TASK_BACKOFF_MAX", 120)


@contextlib.contextmanager
def _gone_is_fine(deployment_id: int) -> Iterator[None]:
    """A message about a row that no longer exists (its cluster was removed) is dropped."""
    try:
        yield
    except Deployment.DoesNotExist:
        logger.info("deployment %s no longer exists; nothing to do", deployment_id)


class ClusterTask(Task):
    """A task that talks to a cluster: retried on transient errors, with backoff."""

    acks_late = True
    autoretry_for = (TransientError,)
    retry_backoff = 2
    retry_backoff_max = BACKOFF_MAX
    retry_jitter = True
    max_retries = MAX_RETRIES

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        if self.name.endswith(".deployment_launch") and isinstance(exc, TransientError) and args:
            services.deployment_launch_give_up(deployment_id=int(args[0]), error=exc.message)


@shared_task(base=ClusterTask, soft_time_limit=90, time_limit=120)
def deployment_launch(deployment_id: int) -> None:
    with _gone_is_fine(deployment_id):
        services.deployment_launch(deployment_id=deployment_id)


@shared_task(acks_late=True, soft_time_limit=45, time_limit=60, ignore_result=True)
def deployment_sync(deployment_id: int, follow: str = "") -> None:
    """Read the cluster into the row. With `follow`, keep going every few seconds while the
    deployment moves (a newer follow chain or a settled state ends this one)."""
    with _gone_is_fine(deployment_id):
        if follow:
            if services.deployment_follow(deployment_id=deployment_id, token=follow):
                deployment_sync.apply_async(
                    (deployment_id,), {"follow": follow}, countdown=services.FOLLOW_SECONDS
                )
            return
        services.deployment_sync(deployment_id=deployment_id)


@shared_task(base=ClusterTask, soft_time_limit=90, time_limit=120)
def deployment_teardown(deployment_id: int) -> None:
    with _gone_is_fine(deployment_id):
        services.deployment_teardown(deployment_id=deployment_id)


@shared_task(acks_late=True, soft_time_limit=240, time_limit=300, ignore_result=True)
def deployments_reconcile() -> None:
    counts = services.deployments_reconcile()
    logger.info("deployments reconcile: %s", counts)
