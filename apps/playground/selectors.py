"""Reads for the playground pages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Prefetch, QuerySet
from django.utils import timezone

from apps.playground.models import ABRun, Sample, Target

# A queued run no worker took after this long, or a running one past its timeout plus this, is
# shown as stuck (the page says to check the worker, or to run it again).
QUEUED_PATIENCE = timedelta(seconds=15)
RUNNING_GRACE = timedelta(seconds=60)


def target_list() -> QuerySet[Target]:
    return Target.objects.filter(archived_at__isnull=True).select_related(
        "foundry_model", "kaito_model", "vm_size", "deployment__cluster"
    )


def default_target_pair() -> tuple[Target | None, Target | None]:
    """A KAITO target against a Foundry one by default (the comparison this app is for)."""
    targets = list(Target.objects.filter(archived_at__isnull=True).order_by("name"))
    kaito = next((t for t in targets if t.is_kaito), None)
    foundry = next((t for t in targets if t.is_foundry), None)
    a = kaito or (targets[0] if targets else None)
    b = foundry or next((t for t in targets if t != a), a)
    return a, b


def _with_samples(runs: QuerySet[ABRun]) -> QuerySet[ABRun]:
    return runs.select_related("created_by").prefetch_related(
        Prefetch("samples", queryset=Sample.objects.order_by("side"))
    )


def abrun_history() -> QuerySet[ABRun]:
    return _with_samples(ABRun.objects.all())


def abrun_get(pk: int) -> ABRun:
    return _with_samples(ABRun.objects.filter(pk=pk)).get()


@dataclass(frozen=True)
class RunState:
    """What the run page says about a run that has not finished."""

    waiting_for_worker: bool
    stuck: bool


def abrun_state(run: ABRun) -> RunState:
    now = timezone.now()
    waiting = run.status == ABRun.Status.QUEUED and now - run.created_at > QUEUED_PATIENCE
    stuck = (
        run.status == ABRun.Status.RUNNING
        and run.started_at is not None
        and now - run.started_at > timedelta(seconds=run.timeout_s) + RUNNING_GRACE
    )
    return RunState(waiting_for_worker=waiting, stuck=stuck)
