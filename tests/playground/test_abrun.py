"""An A/B run measured end to end against kaitosim: both sides at once, progress as it streams,
costs from each target's basis, and one side failing without the other."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal

import pytest
from django.conf import settings

from apps.catalog.services import catalog_load
from apps.playground.models import ABRun, Sample, Target
from apps.playground.services import abrun_execute, target_delete
from kaitosim.foundry import FoundryServer
from kaitosim.inference import InferenceServer
from tests.conftest import wait_for
from tests.kaitosim.loop_thread import LoopThread
from tests.playground.conftest import FOUNDRY_KEY, foundry_start, inference_start
from tests.playground.factories import foundry_target, kaito_target, queued_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _catalog() -> None:
    catalog_load(reference_dir=settings.REFERENCE_DIR)


@pytest.fixture
def slow_vllm(loop_thread: LoopThread) -> Iterator[InferenceServer]:
    """A vLLM endpoint at real speed, so an answer takes long enough to be seen arriving."""
    server = inference_start(loop_thread, speed=1.0)
    yield server
    loop_thread.run(server.stop())


def test_both_sides_are_measured_and_priced(foundry: FoundryServer, vllm: InferenceServer) -> None:
    run = queued_run(
        [kaito_target(vllm.url, node_count=2), foundry_target(foundry.url, FOUNDRY_KEY)]
    )
    finished = abrun_execute(run_id=run.pk)
    assert finished is not None and finished.status == ABRun.Status.DONE
    assert finished.start_skew_ms is not None
    kaito, azure = Sample.objects.filter(run=run).order_by("side")
    # together: the second request left before the first one's first token came back
    assert kaito.ttft_ms is not None and azure.ttft_ms is not None
    assert finished.start_skew_ms <= min(kaito.ttft_ms, azure.ttft_ms)
    for sample in (kaito, azure):
        assert sample.status == Sample.Status.DONE, sample.error_message
        assert sample.output_tokens == 24 and not sample.tokens_estimated
        assert sample.ttft_ms and sample.e2e_ms and sample.ttft_ms < sample.e2e_ms
        assert len(sample.itl_ms) == 23 and sample.itl_mean_ms and sample.itl_p95_ms
        assert sample.text
    # Foundry: (input x 0.125 + output x 0.50) x 1.1 (Data Zone) / 1e6
    assert azure.input_tokens is not None and azure.output_tokens is not None
    expected = (
        (azure.input_tokens * Decimal("0.125") + azure.output_tokens * Decimal("0.50"))
        * Decimal("1.1")
        / Decimal(1_000_000)
    )
    assert azure.cost_usd == expected.quantize(Decimal("1e-12"))
    # KAITO: E2E seconds x $/hour x 2 nodes / 3600
    price = Target.objects.get(name="kaito-phi-4-mini").price_per_hour
    assert price is not None and kaito.e2e_ms is not None and kaito.cost_usd is not None
    assert float(kaito.cost_usd) == pytest.approx(kaito.e2e_ms / 1000 * float(price) * 2 / 3600)
    assert kaito.cost_per_1m_usd is not None and kaito.input_tokens is not None
    assert float(kaito.cost_per_1m_usd) == pytest.approx(
        float(kaito.cost_usd) * 1e6 / (kaito.input_tokens + 24), rel=1e-4
    )


def test_a_failing_side_never_loses_the_other(
    foundry: FoundryServer, vllm: InferenceServer
) -> None:
    run = queued_run([kaito_target(vllm.url), foundry_target(foundry.url, "wrong-key")])
    abrun_execute(run_id=run.pk)
    run.refresh_from_db()
    kaito, azure = run.samples.order_by("side")
    assert run.status == ABRun.Status.DONE
    assert kaito.status == Sample.Status.DONE and kaito.text
    assert azure.status == Sample.Status.FAILED
    assert (azure.http_status, azure.error_kind) == (401, "http")
    assert "invalid subscription key" in azure.error_message
    assert azure.cost_usd is None and azure.output_tokens is None


def test_a_429_is_recorded_with_its_retry_after(
    loop_thread: LoopThread, vllm: InferenceServer
) -> None:
    server = foundry_start(loop_thread)
    server.set_rate_limit(tpm=10)
    try:
        run = queued_run([kaito_target(vllm.url), foundry_target(server.url, FOUNDRY_KEY)])
        abrun_execute(run_id=run.pk)
    finally:
        loop_thread.run(server.stop())
    azure = run.samples.get(side="b")
    assert azure.http_status == 429 and azure.retry_after_s and azure.retry_after_s > 0


def test_partial_answers_are_saved_while_they_stream(
    foundry: FoundryServer, slow_vllm: InferenceServer
) -> None:
    run = queued_run(
        [kaito_target(slow_vllm.url), foundry_target(foundry.url, FOUNDRY_KEY)], max_tokens=120
    )
    worker = threading.Thread(target=abrun_execute, kwargs={"run_id": run.pk})
    worker.start()
    seen: list[tuple[str, int]] = []

    def streaming_seen() -> bool:
        sample = Sample.objects.get(run=run, side="a")
        seen.append((sample.status, len(sample.text)))
        return sample.status == Sample.Status.STREAMING and len(sample.text) > 0

    wait_for(streaming_seen, timeout=20, what="side A streaming with partial text")
    worker.join(30)
    final = Sample.objects.get(run=run, side="a")
    assert final.status == Sample.Status.DONE
    partial = max(length for status, length in seen if status == Sample.Status.STREAMING)
    assert 0 < partial < len(final.text)


def test_a_run_that_is_not_queued_is_not_run_again(
    foundry: FoundryServer, vllm: InferenceServer
) -> None:
    run = queued_run([kaito_target(vllm.url), foundry_target(foundry.url, FOUNDRY_KEY)])
    abrun_execute(run_id=run.pk)
    before = len(foundry.records)
    again = abrun_execute(run_id=run.pk)
    assert again is not None and again.status == ABRun.Status.DONE
    assert len(foundry.records) == before
    assert abrun_execute(run_id=run.pk + 1000) is None


def test_a_target_deleted_through_the_app_before_the_run_fails_only_its_side(
    foundry: FoundryServer, vllm: InferenceServer
) -> None:
    kaito = kaito_target(vllm.url)
    run = queued_run([kaito, foundry_target(foundry.url, FOUNDRY_KEY)])
    assert target_delete(target=kaito) == "archived"  # it has a sample: kept, not measured
    abrun_execute(run_id=run.pk)
    a, b = run.samples.order_by("side")
    assert a.status == Sample.Status.FAILED and "deleted" in a.error_message
    assert a.target == kaito and a.target_snapshot["name"] == "kaito-phi-4-mini"
    assert b.status == Sample.Status.DONE


def test_a_target_deleted_before_the_run_fails_only_its_side(
    foundry: FoundryServer, vllm: InferenceServer
) -> None:
    kaito = kaito_target(vllm.url)
    run = queued_run([kaito, foundry_target(foundry.url, FOUNDRY_KEY)])
    kaito.delete()
    abrun_execute(run_id=run.pk)
    a, b = run.samples.order_by("side")
    assert a.status == Sample.Status.FAILED and "deleted" in a.error_message
    assert a.target_snapshot["name"] == "kaito-phi-4-mini"  # history keeps what it was
    assert b.status == Sample.Status.DONE
