"""Percentiles by linear interpolation (numpy's default), against values worked by hand."""

from __future__ import annotations

import statistics

import pytest

from apps.playground.clients import Measurement
from apps.playground.stats import percentile, summarize


def test_percentiles_interpolate_between_the_nearest_ranks() -> None:
    values = [50.0, 15.0, 40.0, 20.0, 35.0]  # sorted: 15 20 35 40 50, ranks 0..4
    assert percentile(values, 50) == 35  # rank 2
    assert percentile(values, 90) == pytest.approx(46)  # rank 3.6: 40 + 0.6 x 10
    assert percentile(values, 95) == pytest.approx(48)  # rank 3.8: 40 + 0.8 x 10
    assert percentile(values, 99) == pytest.approx(49.6)  # rank 3.96
    assert percentile(values, 0) == 15
    assert percentile(values, 100) == 50


def test_an_even_count_has_its_median_between_the_middle_two() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 50) == pytest.approx(2.5)  # rank 1.5
    assert percentile(values, 90) == pytest.approx(3.7)  # rank 2.7
    assert percentile(values, 95) == pytest.approx(3.85)  # rank 2.85
    assert percentile(values, 99) == pytest.approx(3.97)  # rank 2.97


def test_percentiles_agree_with_the_standard_librarys_inclusive_quantiles() -> None:
    values = [3.1, 0.4, 9.9, 12.5, 7.0, 7.0, 1.2, 30.0, 4.4, 5.5, 18.25]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    for p in (1, 10, 25, 50, 75, 90, 95, 99):
        assert percentile(values, p) == pytest.approx(cuts[p - 1])


def test_one_value_is_every_percentile_and_no_values_have_none() -> None:
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    summary = summarize([])
    assert summary.count == 0 and summary.mean is None and summary.p95 is None


def test_a_percentile_outside_0_to_100_is_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0], 101)


def test_summary_gives_mean_and_the_four_percentiles() -> None:
    summary = summarize([10.0, 20.0, 30.0, 40.0])
    assert summary.mean == 25
    assert (summary.p50, summary.min, summary.max) == (25, 10, 40)
    assert summary.p90 == pytest.approx(37)  # rank 2.7: 30 + 0.7 x 10
    assert summary.p99 == pytest.approx(39.7)


def test_inter_token_latency_leaves_out_the_first_token() -> None:
    m = Measurement(kind="kaito_vllm", streamed=True, state="done", sent_at=0.0, ended_at=0.2)
    m.first_token_at = 0.100
    m.token_times = [0.100, 0.110, 0.130, 0.160]
    m.output_tokens = 4
    assert m.ttft_ms == pytest.approx(100)
    assert m.itl_ms == pytest.approx([10, 20, 30])  # three gaps for four tokens
    assert m.itl_mean_ms == pytest.approx(20)  # (160 - 100) ms / (4 - 1)
    assert m.itl_p95_ms == pytest.approx(29)  # rank 1.9 of 10 20 30
    assert m.e2e_ms == pytest.approx(200)
    assert m.output_tokens_per_s == pytest.approx(20)  # 4 tokens / 0.2 s


def test_mean_inter_token_latency_counts_content_tokens_not_reasoning_ones() -> None:
    m = Measurement(kind="foundry_openai", streamed=True, state="done", sent_at=0.0, ended_at=1)
    m.token_times = [0.5, 0.6, 0.7]
    m.first_token_at = 0.5
    m.output_tokens, m.reasoning_tokens = 103, 100  # 3 visible tokens after 100 reasoning ones
    assert m.itl_mean_ms == pytest.approx(100)  # (700 - 500) ms / (3 - 1)


def test_a_non_streamed_answer_has_no_ttft_and_no_inter_token_latency() -> None:
    m = Measurement(kind="kaito_transformers_chat", streamed=False, state="done")
    m.sent_at, m.ended_at = 1.0, 1.5
    assert m.ttft_ms is None and m.itl_mean_ms is None and m.itl_ms == []
    assert m.e2e_ms == pytest.approx(500)
