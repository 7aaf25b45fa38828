"""Thin Celery tasks for the playground: take ids, call a service (see `experiments` for how an
experiment survives dead workers, a restarted broker or database, and rate limits)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.db import InterfaceError, OperationalError
from kombu.exceptions import OperationalError as BrokerError

from apps.playground import experiments
from apps.playground.models import Experiment
from apps.playground.services import abrun_execute

logger = logging.getLogger(__name__)

# The form caps a run's timeout at 240 s, so a run always ends inside the soft limit.
MAX_RUN_TIMEOUT_S = 240
# Errors of the database or the broker being away: the task is retried, and past its retries the
# resume path takes the work over once they are back. Anything else fails the experiment.
TRANSIENT = (OperationalError, InterfaceError, BrokerError, ConnectionError, TimeoutError)


@shared_task(
    acks_late=True,
    soft_time_limit=MAX_RUN_TIMEOUT_S + 60,
    time_limit=MAX_RUN_TIMEOUT_S + 90,
    autoretry_for=(OperationalError,),
    retry_backoff=2,
    max_retries=3,
)
def abrun_execute_task(run_id: int) -> None:
    """Measure an A/B run (idempotent: a run that is not queued is left alone)."""
    abrun_execute(run_id=run_id)


class ExperimentTask(Task):
    """Measures a chunk of an experiment: retried while the database is away; a failure that is
    not about the database or the broker fails the experiment, visibly, with its reason."""

    acks_late = True
    autoretry_for = (OperationalError, InterfaceError)
    retry_backoff = 2
    retry_jitter = True
    max_retries = 3
    soft_time_limit = int(experiments.CHUNK_MAX_S) + 60
    time_limit = int(experiments.CHUNK_MAX_S) + 90

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        if isinstance(exc, TRANSIENT) or not args:
            logger.warning(
                "experiment task %s gave up (%s); the resume task takes over", task_id, exc
            )
            return
        if isinstance(exc, SoftTimeLimitExceeded):
            reason = f"A chunk of measurements ran past its time limit ({self.soft_time_limit} s)."
        else:
            reason = f"The worker measuring it failed: {type(exc).__name__}: {exc}"
        try:
            experiments.experiment_fail(experiment_id=int(args[0]), reason=reason)
        except TRANSIENT as error:
            logger.warning("could not mark experiment %s failed: %s", args[0], error)


@shared_task(bind=True, base=ExperimentTask)
def experiment_target_task(self: Task, experiment_id: int, target_id: int, chain: str = "") -> None:
    """Measure one chunk of a target's samples, then queue the next chunk of the same chain (one
    chain per target: its concurrency cap). Each execution claims under a claim of its own."""
    experiment = Experiment.objects.filter(pk=experiment_id).first()
    if experiment is None:
        return
    claim = f"{self.request.id or 'task'}/{uuid.uuid4().hex[:12]}"
    more = experiments.experiment_target_chunk(
        experiment_id=experiment_id,
        target_id=target_id,
        claim=claim,
        limit=experiment.concurrency * experiments.CHUNK_ROUNDS,
        chain=chain,
    )
    if more:
        experiments.experiment_send_chunk(experiment_id, target_id, chain)


@shared_task(acks_late=True, soft_time_limit=120, time_limit=150, ignore_result=True)
def experiments_resume() -> None:
    """Restart experiment task chains that nobody runs any more (Celery beat)."""
    counts = experiments.experiments_resume()
    if any(counts[k] for k in ("resumed", "finished", "failed", "orphaned")):
        logger.info("experiments resume: %s", counts)
