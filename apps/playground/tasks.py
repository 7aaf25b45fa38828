from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

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
