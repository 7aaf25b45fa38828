"""A Celery worker killed (SIGKILL) in the middle of an experiment: a new worker finishes it with
exactly the expected samples, every sample finished before the kill kept as it was, and no
sample measured twice, on both brokers: kombu's filesystem transport (which never redelivers a
message a dead worker took) and Redis (which redelivers it after its visibility timeout, here
5 s, so a redelivered task and the resume path's new one both turn up).

The resume path is Celery beat's `experiments_resume`; beat runs beside the workers as in
docker-compose, every second, with a 5-second staleness (``RESUME_FAST``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from apps.catalog.services import catalog_load
from apps.playground.models import Experiment, Sample
from kaitosim.foundry import FoundryServer
from tests.conftest import wait_for
from tests.reliability.conftest import (
    EXPERIMENT_CONCURRENCY,
    EXPERIMENT_SAMPLES,
    RESUME_FAST,
    AppProcess,
    start_experiment_elsewhere,
)

pytestmark = pytest.mark.django_db(transaction=True)


def finished_rows(samples: Any) -> dict[int, tuple[Any, ...]]:
    """What a finished sample holds, to check it was neither lost nor measured again."""
    rows = samples.filter(status__in=["done", "failed"]).values_list(
        "pk", "status", "finished_at", "ttft_ms", "e2e_ms", "text_sha256", "attempts"
    )
    return {row[0]: row[1:] for row in rows}


def test_a_worker_killed_mid_experiment_loses_no_sample_and_measures_none_twice(
    broker_env: dict[str, str],
    broker: str,
    app_workers: Callable[..., AppProcess],
    slow_foundry: FoundryServer,
) -> None:
    catalog_load(reference_dir=settings.REFERENCE_DIR)
    app_workers(broker_env, beat=True)
    first = app_workers(broker_env)
    experiment = Experiment.objects.get(
        pk=start_experiment_elsewhere(broker_env, slow_foundry.url, f"killed worker ({broker})")
    )
    samples = Sample.objects.filter(experiment=experiment)

    def mid_way() -> bool:
        done = samples.filter(status="done").count()
        return done >= 4 and samples.filter(status="streaming").exists()

    wait_for(mid_way, timeout=120, what="the experiment to be under way")
    first.kill()
    kept = finished_rows(samples)
    assert 4 <= len(kept) < EXPERIMENT_SAMPLES
    assert samples.filter(status="streaming").exists()  # requests were in flight

    second = app_workers(broker_env)

    def finished() -> bool:
        experiment.refresh_from_db()
        return experiment.finished

    wait_for(finished, timeout=300, what="the experiment to finish after the restart")
    assert experiment.status == Experiment.Status.DONE, experiment.error
    assert samples.count() == EXPERIMENT_SAMPLES
    assert set(samples.values_list("status", flat=True)) == {Sample.Status.DONE}
    # Nothing finished before the kill was lost or measured again.
    assert finished_rows(samples.filter(pk__in=kept)) == kept
    # Every sample was measured by one request; the server saw no more than those, plus at most
    # the one request per target that was in flight when the worker died.
    assert set(samples.values_list("attempts", flat=True)) == {1}
    served = len(slow_foundry.records)
    assert EXPERIMENT_SAMPLES <= served <= EXPERIMENT_SAMPLES + 2 * EXPERIMENT_CONCURRENCY
    if broker == "filesystem":
        # Nothing was redelivered: the resume path restarted the chains the dead worker held.
        restarts = [entry.get("restarts", 0) for entry in experiment.chains.values()]
        assert max(restarts) >= 1, experiment.chains
    assert second.proc is not None and second.proc.poll() is None


@pytest.fixture(params=["filesystem", "redis"])
def broker(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def broker_env(
    broker: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    app_env: Callable[..., dict[str, str]],
) -> dict[str, str]:
    """The test database, and the broker under test: a private Redis with a short visibility
    timeout, or a filesystem broker in the test's tmp dir."""
    if broker == "redis":
        redis = request.getfixturevalue("private_redis")
        return app_env(redis_url=redis.url(0), REDIS_VISIBILITY_TIMEOUT="5", **RESUME_FAST)
    return app_env(broker_dir=tmp_path / "var", **RESUME_FAST)
