"""Percentiles and summaries of latencies.

Percentiles use linear interpolation between the two nearest ranks, numpy's default
(``numpy.percentile(..., method="linear")``, type 7 of Hyndman and Fan): for sorted values
``x[0..n-1]`` the p-th percentile sits at rank ``h = (n - 1) * p / 100`` and is
``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``. One value is its own every
percentile; no values have none (None, never 0, so "no data" is not read as "instant").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

PERCENTILES = (50, 90, 95, 99)


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0 <= p <= 100) by linear interpolation; None for no values."""
    if not 0 <= p <= 100:
        raise ValueError(f"a percentile is between 0 and 100, not {p}")
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (rank - low) * (ordered[high] - ordered[low])


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass(frozen=True)
class Summary:
    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    min: float | None
    max: float | None


def summarize(values: Sequence[float]) -> Summary:
    """Count, mean, p50/p90/p95/p99, min and max of a list of numbers."""
    return Summary(
        count=len(values),
        mean=mean(values),
        p50=percentile(values, 50),
        p90=percentile(values, 90),
        p95=percentile(values, 95),
        p99=percentile(values, 99),
        min=min(values) if values else None,
        max=max(values) if values else None,
    )
