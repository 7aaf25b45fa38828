"""Experiments measured against kaitosim: samples per target, storage policies, cancelling,
idempotent recording, and the summary's percentiles against hand-computed ones."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.catalog.services import catalog_load
from apps.playground.experiment_stats import (
    break_even,
    experiment_break_evens,
    experiment_figures,
    experiment_summary,
    target_percentiles,
)
from apps.playground.experiments import (
    _record,
    experiment_cancel,
    experiment_create,
    experiment_run_sync,
    experiment_target_chunk,
)
from apps.playground.models import Experiment, Sample, Target
from apps.playground.prompts import Prompt, PromptSet, builtin_load, prompt_sha256
from apps.playground.services import target_delete
from apps.playground.stats import percentile
from kaitosim.foundry import FoundryServer
from kaitosim.inference import InferenceServer
from tests.playground.conftest import FOUNDRY_KEY
from tests.playground.factories import foundry_target, kaito_target

pytestmark = pytest.mark.django_db(transaction=True)

SECRET_PROMPT = "Our Q3 revenue was 12.3M; summarise it."
PROMPTS = PromptSet(
    name="tiny",
    prompts=(Prompt("What is KAITO?", "Be brief."), Prompt(SECRET_PROMPT)),
)


@pytest.fixture(autouse=True)
def _catalog() -> None:
    catalog_load(reference_dir=settings.REFERENCE_DIR)


@pytest.fixture
def targets(foundry: FoundryServer, vllm: InferenceServer) -> list[Target]:
    return [kaito_target(vllm.url), foundry_target(foundry.url, FOUNDRY_KEY)]


def make(targets: list[Target], **options: object) -> Experiment:
    values: dict[str, object] = {
        "user": None,
        "name": "test",
        "targets": targets,
        "prompt_set": PROMPTS,
        "repetitions": 3,
        "concurrency": 2,
        "max_tokens": 16,
        "timeout_s": 20,
        "enqueue": False,
    }
    values.update(options)
    return experiment_create(**values)  # type: ignore[arg-type]


def test_every_target_prompt_and_repetition_is_measured(targets: list[Target]) -> None:
    experiment = experiment_run_sync(experiment=make(targets))
    assert experiment.status == Experiment.Status.DONE and experiment.finished_at
    samples = Sample.objects.filter(experiment=experiment)
    assert samples.count() == 2 * 2 * 3
    assert set(samples.values_list("status", flat=True)) == {Sample.Status.DONE}
    for sample in samples:
        assert sample.output_tokens == 16 and sample.ttft_ms and sample.e2e_ms
        assert sample.started_at and sample.finished_at and sample.cost_usd is not None
        assert sample.text
    assert experiment.prompts[1]["prompt"] == SECRET_PROMPT


def test_deleting_both_targets_keeps_their_results_apart(targets: list[Target]) -> None:
    experiment = experiment_run_sync(experiment=make(targets))
    names = sorted(t.name for t in targets)
    for target in targets:
        assert target_delete(target=target) == "archived"
    summaries = experiment_summary(experiment)
    assert sorted(s.name for s in summaries) == names
    assert [s.ok for s in summaries] == [2 * 3, 2 * 3]


def test_a_kaito_request_shares_node_time_with_its_concurrency(targets: list[Target]) -> None:
    experiment = experiment_run_sync(experiment=make(targets, concurrency=4, repetitions=1))
    sample = Sample.objects.filter(experiment=experiment, target=targets[0]).first()
    assert sample is not None and sample.e2e_ms is not None and sample.cost_usd is not None
    basis = sample.cost_basis
    assert basis.price_per_hour is not None
    expected = (
        Decimal(str(sample.e2e_ms / 1000)) * basis.price_per_hour * basis.nodes / 3600 / 4
    ).quantize(Decimal("1e-12"))
    assert sample.cost_usd == expected


def test_hashes_policy_keeps_no_text(targets: list[Target]) -> None:
    experiment = experiment_run_sync(
        experiment=make(targets, storage_policy=Experiment.StoragePolicy.HASHES, repetitions=1)
    )
    assert experiment.prompts == [
        {"sha256": prompt_sha256("What is KAITO?", "Be brief.")},
        {"sha256": prompt_sha256(SECRET_PROMPT)},
    ]
    for sample in Sample.objects.filter(experiment=experiment):
        assert sample.text == "" and len(sample.text_sha256) == 64
        assert len(sample.prompt_sha256) == 64


def test_nothing_policy_keeps_only_the_figures(targets: list[Target]) -> None:
    experiment = experiment_run_sync(
        experiment=make(targets, storage_policy=Experiment.StoragePolicy.NOTHING, repetitions=1)
    )
    assert experiment.prompts == [{}, {}]
    for sample in Sample.objects.filter(experiment=experiment):
        assert sample.text == sample.text_sha256 == sample.prompt_sha256 == ""
        assert sample.ttft_ms and sample.output_tokens == 16


def test_a_cancelled_experiment_runs_nothing_more(targets: list[Target]) -> None:
    experiment = make(targets)
    experiment_cancel(experiment=experiment)
    assert experiment.status == Experiment.Status.CANCELLED
    more = experiment_target_chunk(
        experiment_id=experiment.pk, target_id=targets[0].pk, claim="t1", limit=4
    )
    assert more is False
    statuses = set(Sample.objects.filter(experiment=experiment).values_list("status", flat=True))
    assert statuses == {Sample.Status.SKIPPED}
    experiment.refresh_from_db()
    assert experiment.finished_at is not None


def test_a_chunk_measures_its_share_and_says_more_remain(targets: list[Target]) -> None:
    experiment = make(targets)
    more = experiment_target_chunk(
        experiment_id=experiment.pk, target_id=targets[0].pk, claim="task-1", limit=4
    )
    assert more is True
    done = Sample.objects.filter(experiment=experiment, status=Sample.Status.DONE)
    assert done.count() == 4 and set(done.values_list("target_id", flat=True)) == {targets[0].pk}
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.RUNNING


def test_a_redelivered_task_records_no_sample_twice(targets: list[Target]) -> None:
    experiment = make(targets, repetitions=1)
    # A worker claimed two samples, finished one and died with the other in flight.
    first, second = Sample.objects.filter(experiment=experiment, target=targets[0])[:2]
    Sample.objects.filter(pk__in=[first.pk, second.pk]).update(status="streaming", claim="t-7")
    _record(first.pk, "t-7", {"status": Sample.Status.DONE, "ttft_ms": 1.0, "output_tokens": 3})
    # Celery redelivers the task (same id): it measures only the one still open.
    experiment_target_chunk(
        experiment_id=experiment.pk, target_id=targets[0].pk, claim="t-7", limit=10
    )
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.ttft_ms == 1.0 and first.output_tokens == 3  # not measured again
    assert second.status == Sample.Status.DONE and second.output_tokens == 16
    # Writing a finished sample again changes nothing.
    _record(first.pk, "t-7", {"ttft_ms": 99.0})
    first.refresh_from_db()
    assert first.ttft_ms == 1.0
    assert Sample.objects.filter(experiment=experiment).count() == 4


def test_percentiles_from_the_database_match_hand_computed_ones(targets: list[Target]) -> None:
    experiment = make(targets, repetitions=5)
    values = [12.0, 3.0, 7.5, 100.0, 42.0, 8.0, 9.0, 15.5, 1.0, 60.0]
    for sample, value in zip(
        Sample.objects.filter(experiment=experiment, target=targets[0]).order_by("id"),
        values,
        strict=True,
    ):
        Sample.objects.filter(pk=sample.pk).update(status="done", ttft_ms=value)
    result = target_percentiles(Sample.objects.filter(experiment=experiment), "ttft_ms")
    # sorted: 1 3 7.5 8 9 12 15.5 42 60 100; p50 at rank 4.5 = (9 + 12) / 2
    assert result[targets[0].pk][50] == pytest.approx(10.5)
    # p90 at rank 8.1 = 60 + 0.1 x 40; p99 at rank 8.91 = 60 + 0.91 x 40
    assert result[targets[0].pk][90] == pytest.approx(64.0)
    assert result[targets[0].pk][99] == pytest.approx(96.4)
    assert result[targets[0].pk][95] == pytest.approx(percentile(values, 95))
    assert targets[1].pk not in result  # no values, no percentiles


def test_percentiles_are_computed_by_postgresql_where_it_runs(targets: list[Target]) -> None:
    experiment = make(targets, repetitions=1)
    Sample.objects.filter(experiment=experiment).update(status="done", ttft_ms=5.0)
    with CaptureQueriesContext(connection) as queries:
        result = target_percentiles(Sample.objects.filter(experiment=experiment), "ttft_ms")
    sql = " ".join(q["sql"] for q in queries.captured_queries).lower()
    assert ("percentile_cont" in sql) == (connection.vendor == "postgresql")
    assert len(queries.captured_queries) == 1  # one query either way
    assert result[targets[0].pk] == {50: 5.0, 90: 5.0, 95: 5.0, 99: 5.0}


def test_the_summary_has_every_figure_per_target(targets: list[Target]) -> None:
    experiment = experiment_run_sync(experiment=make(targets))
    summaries = experiment_summary(experiment)
    assert {s.name for s in summaries} == {t.name for t in targets}
    for s in summaries:
        assert s.requests == s.finished == s.ok == 6 and s.error_rate == 0
        assert s.output_tokens == 96 and s.output_tokens_per_s and s.requests_per_s
        for metric in ("ttft_ms", "itl_mean_ms", "e2e_ms"):
            p = s.percentiles[metric]
            assert p[50] is not None and p[50] <= p[90] <= p[95] <= p[99]  # type: ignore[operator]
        assert s.cost_per_request and s.cost_per_1m
    foundry = next(s for s in summaries if s.is_foundry)
    # Phi-4 Data Zone: (in x 0.125 + out x 0.50) x 1.1 per 1M tokens
    blended = (
        (foundry.input_tokens * Decimal("0.125") + foundry.output_tokens * Decimal("0.5"))
        * Decimal("1.1")
        / (foundry.input_tokens + foundry.output_tokens)
    )
    assert foundry.cost_per_1m == pytest.approx(blended, rel=Decimal("1e-9"))
    evens = experiment_break_evens(summaries)
    assert len(evens) == 1 and evens[0].foundry == foundry.name
    figures = experiment_figures(experiment, summaries, evens)
    assert set(figures) == {"ttft_ms", "itl_mean_ms", "e2e_ms", "scatter", "cost", "break_even"}
    assert figures["ttft_ms"]["data"][0]["type"] == "box"


def test_break_even_against_a_hand_worked_example() -> None:
    # Foundry at $2 per 1M tokens. KAITO: 2 nodes x $3/hour x 730 h = $4,380 a month per
    # replica, serving 500 output tokens/s at an output share of 1/4: 2,000 tokens/s =
    # 2,000 x 3,600 x 730 = 5,256,000,000 tokens a month. Break-even: 4,380 / 2 x 1e6 =
    # 2,190,000,000 tokens a month (under one replica's capacity, so KAITO wins above it).
    even = break_even(
        price_per_1m=Decimal(2),
        price_per_hour=Decimal(3),
        nodes=2,
        output_tokens_per_s=500,
        output_share=0.25,
    )
    assert even.replica_month_usd == Decimal(4380)
    assert even.capacity_per_month == pytest.approx(5_256_000_000)
    assert even.break_even_tokens == pytest.approx(2_190_000_000)
    assert even.kaito_cost(6_000_000_000) == 2 * 4380  # a second replica
    assert even.foundry_cost(2_190_000_000) == pytest.approx(4380)
    # Slower hardware: 50 output tokens/s cannot pay for itself at Foundry's price.
    slow = break_even(
        price_per_1m=Decimal(2),
        price_per_hour=Decimal(3),
        nodes=2,
        output_tokens_per_s=50,
        output_share=0.25,
    )
    assert slow.break_even_tokens is None


def test_the_built_in_sets_load() -> None:
    platform = builtin_load("platform-questions")
    assert platform.prompts[0].prompt == "What is KAITO?"
    assert any("StatefulSet" in p.prompt for p in platform.prompts)
    assert len(builtin_load("long-summaries").prompts[0].prompt) > 2000
