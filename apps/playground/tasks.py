from __future__ import annotations

from celery import Task, shared_task
from django.db import OperationalError

from apps.playground.experiments import CHUNK_ROUNDS, experiment_target_chunk
from apps.playground.experiments import MAX_TIMEOUT_S as EXPERIMENT_MAX_TIMEOUT_S
from apps.playground.models import Experiment
from apps.playground.services import abrun_execute

# The form caps a run's timeout at 240 s, so a run always ends inside the soft limit.
MAX_RUN_TIMEOUT_S = 240


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


@shared_task(
    bind=True,
    acks_late=True,
    soft_time_limit=CHUNK_ROUNDS * EXPERIMENT_MAX_TIMEOUT_S + 60,
    time_limit=CHUNK_ROUNDS * EXPERIMENT_MAX_TIMEOUT_S + 90,
    autoretry_for=(OperationalError,),
    retry_backoff=2,
    max_retries=3,
)
def experiment_target_task(self: Task, experiment_id: int, target_id: int) -> None:
    """Measure one chunk of a target's samples, then queue the next chunk (one chain per
    target: its concurrency cap). A redelivery (same task id) reclaims its unfinished samples."""
    experiment = Experiment.objects.filter(pk=experiment_id).first()
    if experiment is None:
        return
    more = experiment_target_chunk(
        experiment_id=experiment_id,
        target_id=target_id,
        claim=str(self.request.id or ""),
        limit=experiment.concurrency * CHUNK_ROUNDS,
    )
    if more:
        experiment_target_task.delay(experiment_id, target_id)
