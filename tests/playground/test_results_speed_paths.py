"""The results page's reads: percentiles in one array aggregate per metric on PostgreSQL, in
Python on SQLite, equal to each other and to hand-computed values; a fixed number of queries
whatever the number of targets; the progress, the scatter's sample and the figures' JSON."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.accounts.roles import Role
from apps.playground import experiment_stats
from apps.playground.experiment_stats import (
    PAGE_PERCENTILES,
    PercentilesCont,
    _percentiles_in_python,
    experiment_figures,
    experiment_progress,
    experiment_results,
    target_percentiles,
)
from apps.playground.experiments import experiment_create
from apps.playground.models import Experiment, Sample, Target
from apps.playground.prompts import Prompt, PromptSet

pytestmark = pytest.mark.django_db

# Ten values, sorted: 1 3 7.5 8 9 12 15.5 42 60 100. The p-th percentile is at rank 9p/100,
# interpolated linearly between the ranks either side (percentile_cont, numpy's "linear").
TTFT = [12.0, 3.0, 7.5, 100.0, 42.0, 8.0, 9.0, 15.5, 1.0, 60.0]
TTFT_BY_HAND = {
    5: 1.9,  # rank 0.45: 1 + 0.45 x (3 - 1)
    25: 7.625,  # rank 2.25: 7.5 + 0.25 x (8 - 7.5)
    50: 10.5,  # rank 4.5: (9 + 12) / 2
    75: 35.375,  # rank 6.75: 15.5 + 0.75 x (42 - 15.5)
    90: 64.0,  # rank 8.1: 60 + 0.1 x 40
    95: 82.0,  # rank 8.55: 60 + 0.55 x 40
    99: 96.4,  # rank 8.91: 60 + 0.91 x 40
}
# The other target: one value is every percentile; its E2E has none at all.
OTHER_TTFT = 5.0


def make_targets(n: int, prefix: str = "t") -> list[Target]:
    return [
        Target.objects.create(
            name=f"{prefix}{i}", kind=Target.Kind.KAITO_VLLM, endpoint_url="http://127.0.0.1:9/"
        )
        for i in range(n)
    ]


def make_experiment(targets: list[Target], prompts: int = 5, repetitions: int = 2) -> Experiment:
    return experiment_create(
        user=None,
        name="paths",
        targets=targets,
        prompt_set=PromptSet("p", tuple(Prompt(f"q{i}") for i in range(prompts))),
        repetitions=repetitions,
        enqueue=False,
    )


@pytest.fixture
def measured() -> tuple[Experiment, list[Target]]:
    """Target 0: ten done samples with TTFT_BY_HAND's values (ITL = TTFT / 10, E2E = TTFT x 2)
    and nothing else; target 1: one done sample, one failed, the rest skipped."""
    targets = make_targets(2)
    experiment = make_experiment(targets)
    first = Sample.objects.filter(experiment=experiment, target=targets[0]).order_by("id")
    for sample, value in zip(first, TTFT, strict=True):
        Sample.objects.filter(pk=sample.pk).update(
            status="done", ttft_ms=value, itl_mean_ms=value / 10, e2e_ms=value * 2
        )
    other = list(Sample.objects.filter(experiment=experiment, target=targets[1]).order_by("id"))
    Sample.objects.filter(pk=other[0].pk).update(status="done", ttft_ms=OTHER_TTFT, itl_mean_ms=0.5)
    Sample.objects.filter(pk=other[1].pk).update(status="failed", ttft_ms=999.0)
    Sample.objects.filter(pk__in=[s.pk for s in other[2:]]).update(status="skipped")
    return experiment, targets


def test_the_summary_has_the_hand_computed_percentiles_on_either_backend(
    measured: tuple[Experiment, list[Target]],
) -> None:
    experiment, targets = measured
    by_id = {s.target_id: s for s in experiment_results(experiment).summaries}
    first, other = by_id[targets[0].pk], by_id[targets[1].pk]
    for p in (50, 90, 95, 99):
        assert first.percentiles["ttft_ms"][p] == pytest.approx(TTFT_BY_HAND[p])
        assert first.percentiles["itl_mean_ms"][p] == pytest.approx(TTFT_BY_HAND[p] / 10)
        assert first.percentiles["e2e_ms"][p] == pytest.approx(TTFT_BY_HAND[p] * 2)
    for p in (5, 25, 50, 75, 95):
        assert first.box["ttft_ms"][p] == pytest.approx(TTFT_BY_HAND[p])
    # a failed sample's figures are not in the percentiles; a metric with no value has none
    assert other.percentiles["ttft_ms"] == {p: OTHER_TTFT for p in (50, 90, 95, 99)}
    assert other.percentiles["e2e_ms"] == {} and other.box["e2e_ms"] == {}
    assert (other.requests, other.finished, other.ok, other.errors) == (10, 2, 1, 1)


def test_the_database_and_python_paths_give_identical_percentiles(
    measured: tuple[Experiment, list[Target]],
) -> None:
    """On PostgreSQL `experiment_results` asks percentile_cont; the Python fallback (SQLite's
    path) is called directly here on the same rows: the figures are the same."""
    experiment, targets = measured
    samples = Sample.objects.filter(experiment=experiment)
    in_python = _percentiles_in_python(samples, PAGE_PERCENTILES)
    for p in PAGE_PERCENTILES:
        assert in_python[targets[0].pk]["ttft_ms"][p] == pytest.approx(TTFT_BY_HAND[p])
    for summary in experiment_results(experiment).summaries:
        computed = in_python[summary.target_id]
        for metric, values in summary.percentiles.items():
            for q, value in values.items():
                assert value == pytest.approx(computed[metric][q], rel=1e-12)
        assert "e2e_ms" in computed or summary.percentiles["e2e_ms"] == {}
    by_target = target_percentiles(samples.filter(status="done"), "ttft_ms", PAGE_PERCENTILES)
    assert by_target[targets[0].pk] == pytest.approx(TTFT_BY_HAND)
    assert by_target[targets[1].pk] == {p: OTHER_TTFT for p in PAGE_PERCENTILES}


def test_each_metric_is_one_percentile_aggregate_on_postgresql(
    measured: tuple[Experiment, list[Target]],
) -> None:
    experiment, _ = measured
    with CaptureQueriesContext(connection) as queries:
        experiment_results(experiment)
    sql = " ".join(q["sql"] for q in queries.captured_queries)
    if connection.vendor == "postgresql":
        assert sql.count("percentile_cont(ARRAY[") == 3  # TTFT, ITL, E2E: one array each
        assert len(queries.captured_queries) == 3  # grouped figures, snapshots, votes
    else:
        assert "percentile_cont" not in sql
        assert len(queries.captured_queries) == 4  # and the values for Python


def test_a_fraction_outside_0_to_1_is_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        PercentilesCont("ttft_ms", [0.5, 1.5])
    with pytest.raises(ValueError, match="at least one"):
        PercentilesCont("ttft_ms", [])


def test_the_page_makes_as_many_queries_for_four_targets_as_for_two(
    client_as: Callable[[Role | None], Client],
) -> None:
    viewer = client_as(Role.VIEWER)
    counts = []
    for n in (2, 4):
        experiment = make_experiment(make_targets(n, prefix=f"of-{n}-"))
        experiment.samples.filter(repetition=0).update(status="done", ttft_ms=10, text="Hi")
        viewer.get(experiment.get_absolute_url())  # the session and the template, warmed
        with CaptureQueriesContext(connection) as queries:
            response = viewer.get(experiment.get_absolute_url())
        assert response.status_code == 200
        counts.append(len(queries.captured_queries))
    assert counts[0] == counts[1]


def test_the_progress_comes_with_the_summary_and_matches_the_polled_one(
    measured: tuple[Experiment, list[Target]],
) -> None:
    experiment, _ = measured
    progress = experiment_results(experiment).progress
    assert progress == experiment_progress(experiment)
    # 20 samples: 11 done, 1 failed, 8 skipped (closed), none pending
    assert progress == {
        "total": 20,
        "closed": 20,
        "percent": 100,
        "done": 11,
        "failed": 1,
        "skipped": 8,
    }


def test_the_scatter_samples_every_prompt_not_only_the_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At most SCATTER_POINTS a target, from the first repetitions of every prompt."""
    monkeypatch.setattr(experiment_stats, "SCATTER_POINTS", 6)
    targets = make_targets(2)
    experiment = make_experiment(targets, prompts=3, repetitions=4)
    Sample.objects.filter(experiment=experiment).update(
        status="done", ttft_ms=10.0, output_tokens=7
    )
    results = experiment_results(experiment)
    figures = experiment_figures(experiment, results.summaries, [])
    traces = figures["scatter"]["data"]
    assert [len(t["x"]) for t in traces] == [6, 6]  # 3 prompts x the first 2 repetitions
    points = experiment_stats._scatter_points(experiment)
    assert {len(v) for v in points.values()} == {6}
    rows = Sample.objects.filter(experiment=experiment, repetition__lt=2)
    assert rows.values("prompt_index").distinct().count() == 3


def test_the_figures_are_plotly_json_with_its_template(
    measured: tuple[Experiment, list[Target]],
) -> None:
    experiment, _ = measured
    results = experiment_results(experiment)
    figures = experiment_figures(experiment, results.summaries, [])
    assert set(figures) == {"ttft_ms", "itl_mean_ms", "e2e_ms", "scatter", "cost"}
    json.dumps(figures)  # plain data, for json_script
    box = figures["ttft_ms"]["data"][0]
    assert box["type"] == "box" and box["name"] == "t0"
    assert box["median"] == [pytest.approx(10.5)] and box["q3"] == [pytest.approx(35.375)]
    assert len(figures["e2e_ms"]["data"]) == 1  # t1 has no E2E: no box for it
    layout = figures["ttft_ms"]["layout"]
    assert layout["title"]["text"].startswith("TTFT (ms)")
    assert "layout" in layout["template"] and "data" in layout["template"]
