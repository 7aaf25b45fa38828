"""Redis and PostgreSQL restarted in the middle of an experiment, on servers of the test's own
(never the machine's shared ones): the work resumes, and the experiment ends with exactly its
samples, none lost, none measured twice. And the resume path's own rules, row by row: a target
whose worker keeps dying fails the experiment with the reason; a task of a replaced chain
measures nothing; an experiment whose last task died before closing it is closed; the samples
of a deleted target are recorded as errors instead of waiting for ever."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from apps.catalog.services import catalog_load
from apps.playground import experiments
from apps.playground.experiments import (
    TARGET_DELETED,
    _chain_begin,
    _claim,
    _record,
    experiment_create,
    experiment_target_chunk,
    experiments_resume,
)
from apps.playground.models import Experiment, Sample, Target
from apps.playground.prompts import Prompt, PromptSet
from kaitosim.foundry import FoundryServer
from tests.conftest import wait_for
from tests.playground.conftest import FOUNDRY_KEY
from tests.playground.factories import foundry_target
from tests.reliability.conftest import (
    EXPERIMENT_CONCURRENCY,
    EXPERIMENT_SAMPLES,
    RESUME_FAST,
    AppProcess,
    PostgresCluster,
    RedisServer,
    start_experiment_elsewhere,
)
from tests.reliability.test_experiment_worker_kill import finished_rows

pytestmark = pytest.mark.django_db(transaction=True)


# ------------------------------------------------------------------------------ Redis restart
def test_a_redis_restart_mid_experiment_is_ridden_out(
    private_redis: RedisServer,
    app_env: Callable[..., dict[str, str]],
    app_workers: Callable[..., AppProcess],
    slow_foundry: FoundryServer,
) -> None:
    """Redis restarts empty (no persistence): the queued follow-up tasks are gone; beat
    reconnects, and the resume path sends the chains again.

    The worker may not survive it: when the connection drops while an acks_late task runs,
    kombu (5.7) tries to put the task's message back on the dead connection and the worker stops
    with "Unrecoverable error: AttributeError ... 'hostname'". So this test restarts a worker
    that exits, as docker-compose's ``restart: unless-stopped`` does; the experiment must still
    end exactly right."""
    catalog_load(reference_dir=settings.REFERENCE_DIR)
    env = app_env(redis_url=private_redis.url(0), **RESUME_FAST)
    app_workers(env, beat=True)
    worker = app_workers(env)
    experiment = Experiment.objects.get(
        pk=start_experiment_elsewhere(env, slow_foundry.url, "redis restart")
    )
    samples = Sample.objects.filter(experiment=experiment)
    wait_for(lambda: samples.filter(status="done").count() >= 4, timeout=120, what="progress")
    kept = finished_rows(samples)
    assert len(kept) < EXPERIMENT_SAMPLES

    private_redis.restart(down_s=3)

    def finished() -> bool:
        if worker.proc is not None and worker.proc.poll() is not None:
            worker.start()  # the supervisor's restart
        experiment.refresh_from_db()
        return experiment.finished

    wait_for(finished, timeout=300, what="the experiment to finish after the restart")
    assert experiment.status == Experiment.Status.DONE, experiment.error
    assert samples.count() == EXPERIMENT_SAMPLES
    assert set(samples.values_list("status", flat=True)) == {Sample.Status.DONE}
    assert finished_rows(samples.filter(pk__in=kept)) == kept
    assert set(samples.values_list("attempts", flat=True)) == {1}
    # At most the request per target in flight when the worker stopped was lost.
    served = len(slow_foundry.records)
    assert EXPERIMENT_SAMPLES <= served <= EXPERIMENT_SAMPLES + 2 * EXPERIMENT_CONCURRENCY


# ------------------------------------------------------------------------- PostgreSQL restarts
def _database(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _statuses(cluster: PostgresCluster, database: str, experiment_id: int) -> dict[str, int]:
    rows = cluster.query(
        database,
        "SELECT status, count(*) FROM playground_sample WHERE experiment_id = %s GROUP BY status",
        (experiment_id,),
    )
    return {status: count for status, count in rows}


def _finished_rows(
    cluster: PostgresCluster, database: str, experiment_id: int
) -> dict[int, tuple[Any, ...]]:
    rows = cluster.query(
        database,
        "SELECT id, status, finished_at, ttft_ms, e2e_ms, text_sha256, attempts "
        "FROM playground_sample WHERE experiment_id = %s AND status IN ('done', 'failed')",
        (experiment_id,),
    )
    return {row[0]: tuple(row[1:]) for row in rows}


def _experiment(cluster: PostgresCluster, database: str, experiment_id: int) -> tuple[str, str]:
    rows = cluster.query(
        database,
        "SELECT status, error FROM playground_experiment WHERE id = %s",
        (experiment_id,),
    )
    return rows[0][0], rows[0][1]


def _run_through_a_postgres_outage(
    *,
    cluster: PostgresCluster,
    database_url: str,
    redis: RedisServer,
    app_env: Callable[..., dict[str, str]],
    app_workers: Callable[..., AppProcess],
    foundry: FoundryServer,
    down_s: float,
    extra: dict[str, str],
) -> tuple[dict[int, tuple[Any, ...]], dict[int, tuple[Any, ...]], list[AppProcess]]:
    """Start an experiment on the private cluster, stop PostgreSQL (fast: every connection cut)
    once it is under way, start it again after ``down_s``, and wait for the end. Returns the
    samples finished before the outage, all finished samples, and the processes."""
    database = _database(database_url)
    env = app_env(database_url=database_url, redis_url=redis.url(0), **RESUME_FAST, **extra)
    processes = [app_workers(env, beat=True), app_workers(env)]
    experiment_id = start_experiment_elsewhere(env, foundry.url, "postgres restart")

    wait_for(
        lambda: _statuses(cluster, database, experiment_id).get("done", 0) >= 4,
        timeout=120,
        what="progress",
    )
    before = _finished_rows(cluster, database, experiment_id)
    assert len(before) < EXPERIMENT_SAMPLES
    cluster.restart(down_s=down_s)

    def finished() -> bool:
        try:
            return _experiment(cluster, database, experiment_id)[0] != "running"
        except Exception:
            return False

    wait_for(finished, timeout=300, what="the experiment to finish after the outage")
    status, error = _experiment(cluster, database, experiment_id)
    assert status == "done", error
    assert _statuses(cluster, database, experiment_id) == {"done": EXPERIMENT_SAMPLES}
    after = _finished_rows(cluster, database, experiment_id)
    assert {row[-1] for row in after.values()} == {1}  # one request each
    return before, after, processes


def test_a_postgres_restart_mid_experiment_loses_no_sample(
    private_postgres: PostgresCluster,
    private_database: str,
    private_redis: RedisServer,
    app_env: Callable[..., dict[str, str]],
    app_workers: Callable[..., AppProcess],
    slow_foundry: FoundryServer,
) -> None:
    """A short outage: a result measured while the database is away waits in the writer, which
    retries (EXPERIMENTS_WRITE_RETRY_SECONDS, 30 s by default) and writes it once it is back."""
    before, after, processes = _run_through_a_postgres_outage(
        cluster=private_postgres,
        database_url=private_database,
        redis=private_redis,
        app_env=app_env,
        app_workers=app_workers,
        foundry=slow_foundry,
        down_s=3,
        extra={},
    )
    assert {pk: after[pk] for pk in before} == before
    served = len(slow_foundry.records)
    assert EXPERIMENT_SAMPLES <= served <= EXPERIMENT_SAMPLES + 2 * EXPERIMENT_CONCURRENCY
    assert all(p.proc is not None and p.proc.poll() is None for p in processes)


def test_a_postgres_outage_longer_than_the_write_retries_is_resumed_after(
    private_postgres: PostgresCluster,
    private_database: str,
    private_redis: RedisServer,
    app_env: Callable[..., dict[str, str]],
    app_workers: Callable[..., AppProcess],
    slow_foundry: FoundryServer,
) -> None:
    """An outage past the writer's retries (2 s here): the chunk's task fails, the requests it
    had in flight are lost, and once the database is back the resume path (or Celery's retry of
    the task) measures what was left; what was finished before stays as it was."""
    before, after, processes = _run_through_a_postgres_outage(
        cluster=private_postgres,
        database_url=private_database,
        redis=private_redis,
        app_env=app_env,
        app_workers=app_workers,
        foundry=slow_foundry,
        down_s=10,
        extra={"EXPERIMENTS_WRITE_RETRY_SECONDS": "2"},
    )
    assert {pk: after[pk] for pk in before} == before
    # Lost: at most the requests in flight when the database went away, and the ones started in
    # the half second before the chunk noticed (one per target each, at concurrency 1).
    served = len(slow_foundry.records)
    assert EXPERIMENT_SAMPLES <= served <= EXPERIMENT_SAMPLES + 4 * EXPERIMENT_CONCURRENCY
    assert all(p.proc is not None and p.proc.poll() is None for p in processes)


# ------------------------------------------------------------------- the resume path's rules
UNREACHABLE = "http://127.0.0.1:9"  # never called: these tests measure nothing


def _two_targets() -> list[Target]:
    catalog_load(reference_dir=settings.REFERENCE_DIR)
    return [
        foundry_target(UNREACHABLE, FOUNDRY_KEY, name="foundry-a"),
        foundry_target(UNREACHABLE, FOUNDRY_KEY, name="foundry-b"),
    ]


def _experiment_of(targets: list[Target], prompts: int = 3) -> Experiment:
    return experiment_create(
        user=None,
        name="resume rules",
        targets=targets,
        prompt_set=PromptSet("t", tuple(Prompt(f"Q{i}?") for i in range(prompts))),
        concurrency=1,
        enqueue=False,
    )


def _later(periods: int = 1) -> Any:
    """A moment past the staleness: ``periods`` resume periods from now."""
    return timezone.now() + timedelta(seconds=(experiments.STALE_SECONDS + 1) * periods)


def test_a_target_whose_worker_keeps_dying_fails_the_experiment_with_the_reason() -> None:
    targets = _two_targets()
    experiment = _experiment_of(targets, prompts=10)
    first = Sample.objects.filter(experiment=experiment, target=targets[0]).first()
    assert first is not None
    Sample.objects.filter(pk=first.pk).update(status="streaming", claim="early")
    _record(first.pk, "early", {"status": "done", "ttft_ms": 5.0, "attempts": 1})
    rounds = 0
    while not experiment.finished:
        rounds += 1
        assert rounds <= experiments.MAX_RESTARTS + 1, "the resume path never gave up"
        # A task of the current chain starts, claims a sample, and its worker dies.
        token = experiment.chains[str(targets[0].pk)]["token"]
        claim = f"exec-{rounds}"
        assert _chain_begin(
            experiment_id=experiment.pk, target_id=targets[0].pk, chain=token, claim=claim
        )
        assert _claim(experiment, targets[0].pk, claim, 1)
        # The resume task runs once the target has been silent for STALE_SECONDS.
        experiments_resume(now=_later(rounds))
        experiment.refresh_from_db()
    # The first restart saw progress (the early sample); then MAX_RESTARTS without any.
    assert rounds == experiments.MAX_RESTARTS + 1
    assert experiment.status == Experiment.Status.FAILED
    assert "foundry-a" in experiment.error and "without finishing a sample" in experiment.error
    kept = Sample.objects.get(pk=first.pk)
    assert kept.status == "done" and kept.ttft_ms == 5.0  # what was measured stays
    rest = Sample.objects.filter(experiment=experiment).exclude(pk=first.pk)
    assert set(rest.values_list("status", flat=True)) == {Sample.Status.SKIPPED}
    # The other target's chain never started: restarted each time, never counted against it.
    other = experiment.chains[str(targets[1].pk)]
    assert other["strikes"] == 0 and other["restarts"] >= 1


def test_a_task_of_a_replaced_chain_measures_nothing() -> None:
    targets = _two_targets()
    experiment = _experiment_of(targets)
    old = experiment.chains[str(targets[0].pk)]["token"]
    counts = experiments_resume(now=_later())  # the first tasks never started: sent again
    assert counts["resumed"] == 2
    experiment.refresh_from_db()
    assert experiment.chains[str(targets[0].pk)]["token"] != old
    # The original message turns up after all (a redelivery): it does nothing.
    more = experiment_target_chunk(
        experiment_id=experiment.pk, target_id=targets[0].pk, claim="late", limit=8, chain=old
    )
    assert more is False
    samples = Sample.objects.filter(experiment=experiment)
    assert set(samples.values_list("status", flat=True)) == {Sample.Status.PENDING}
    assert not samples.exclude(claim="").exists()


def test_the_resume_closes_an_experiment_whose_last_task_died_before_closing_it() -> None:
    targets = _two_targets()
    experiment = _experiment_of(targets)
    Experiment.objects.filter(pk=experiment.pk).update(status="running")
    Sample.objects.filter(experiment=experiment).update(status="done", finished_at=timezone.now())
    counts = experiments_resume(now=_later())
    assert counts["finished"] == 1
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.DONE and experiment.finished_at is not None


def test_samples_of_a_deleted_target_are_recorded_as_errors_not_left_waiting() -> None:
    targets = _two_targets()
    experiment = _experiment_of(targets)
    Sample.objects.filter(experiment=experiment, target=targets[1]).update(
        status="done", finished_at=timezone.now()
    )
    targets[0].delete()
    experiments_resume(now=_later())
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.DONE
    orphans = Sample.objects.filter(experiment=experiment, target__isnull=True)
    assert orphans.count() == 3
    assert set(orphans.values_list("status", "error_message")) == {("failed", TARGET_DELETED)}
