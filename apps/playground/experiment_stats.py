"""Reads for experiments: the per-target summary (aggregated in the database), the progress and
the preference votes, the break-even between Foundry's per-token price and KAITO's node-hours,
and the plotly figures.

Percentiles: PostgreSQL's ``percentile_cont(ARRAY[f, ...]) WITHIN GROUP (ORDER BY x)`` interpolates
linearly between the nearest ranks, which is exactly `stats.percentile` (numpy's "linear"), and
returns every fraction from one sort (`PercentilesCont`). On SQLite, which has no such aggregate,
the values are fetched once and computed in Python with that function. Counts, sums and means
are aggregated in the database on both, in one grouped query per experiment (`experiment_results`).

ITL percentiles are over each request's mean inter-token latency (one figure per request, as
guidellm reports it), not over every gap of every request.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from functools import cache
from typing import Any

from django.db import connection
from django.db.models import (
    Aggregate,
    Avg,
    Count,
    F,
    FloatField,
    Max,
    Min,
    Q,
    QuerySet,
    Sum,
)

from apps.playground.costs import ONE_MILLION, CostBasis
from apps.playground.models import Experiment, PreferenceVote, Sample
from apps.playground.stats import PERCENTILES, percentile

HOURS_PER_MONTH = 730  # Azure's pricing month
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600
METRICS = ("ttft_ms", "itl_mean_ms", "e2e_ms")
BOX_PERCENTILES = (5, 25, 50, 75, 95)
SCATTER_POINTS = 2000


class PercentilesCont(Aggregate):
    """PostgreSQL's continuous percentiles of one column at several fractions in one aggregate:
    ``percentile_cont(ARRAY[f, ...]) WITHIN GROUP (ORDER BY x)`` sorts the group once and returns
    an array in the fractions' order (NULL for a group with no value: NULLs are ignored)."""

    function = "percentile_cont"
    name = "PercentilesCont"
    template = "%(function)s(%(fractions)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression: str, fractions: Sequence[float], **extra: Any) -> None:
        from django.contrib.postgres.fields import ArrayField

        if not fractions or any(not 0 <= f <= 1 for f in fractions):
            raise ValueError("fractions are between 0 and 1, at least one")
        # Our own floats, written as literals: nothing from a request reaches this SQL.
        literal = "ARRAY[{}]::double precision[]".format(
            ",".join(repr(float(f)) for f in fractions)
        )
        super().__init__(
            expression, fractions=literal, output_field=ArrayField(FloatField()), **extra
        )


def target_percentiles(
    samples: QuerySet[Sample], metric: str, ps: Sequence[float] = PERCENTILES
) -> dict[int | None, dict[float, float | None]]:
    """{target id: {p: value}} of one metric over the samples, None values left out. One query:
    a single array aggregate per target on PostgreSQL; over the fetched values in Python
    elsewhere (the same interpolation)."""
    rows = samples.filter(**{f"{metric}__isnull": False}).order_by()
    if connection.vendor == "postgresql":
        grouped = rows.values("target_id").annotate(
            q=PercentilesCont(metric, [p / 100 for p in ps])
        )
        return {r["target_id"]: dict(zip(ps, r["q"], strict=True)) for r in grouped}
    values: dict[int | None, list[float]] = defaultdict(list)
    for target_id, value in rows.values_list("target_id", metric).iterator(5000):
        values[target_id].append(value)
    return {t: percentiles_of(v, ps) for t, v in values.items()}


def percentiles_of(values: list[float], ps: Sequence[float]) -> dict[float, float | None]:
    """`stats.percentile` at every p, sorting the values once (what percentile_cont does)."""
    values.sort()
    return {p: percentile(values, p) for p in ps}


# Every percentile the results page shows: the summary's table and the figures' boxes.
PAGE_PERCENTILES = tuple(sorted(set(PERCENTILES) | set(BOX_PERCENTILES)))


def _percentiles_in_python(
    samples: QuerySet[Sample], ps: Sequence[float]
) -> dict[int | None, dict[str, dict[float, float | None]]]:
    """SQLite: every percentile of every metric over the done samples' values, fetched once."""
    values: dict[int | None, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    rows = samples.filter(status=Sample.Status.DONE).order_by()
    for target_id, *measured in rows.values_list("target_id", *METRICS).iterator(5000):
        for metric, value in zip(METRICS, measured, strict=True):
            if value is not None:
                values[target_id][metric].append(value)
    return {
        t: {m: percentiles_of(by_metric[m], ps) for m in METRICS if by_metric.get(m)}
        for t, by_metric in values.items()
    }


@dataclass
class TargetSummary:
    target_id: int | None
    name: str
    kind: str
    is_foundry: bool
    is_kaito: bool
    cost: CostBasis
    requests: int = 0
    finished: int = 0
    ok: int = 0
    errors: int = 0
    error_rate: float | None = None
    wall_s: float | None = None
    requests_per_s: float | None = None
    output_tokens_per_s: float | None = None
    mean_request_tokens_per_s: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal | None = None
    cost_per_request: Decimal | None = None
    cost_per_1m: Decimal | None = None
    # A linked KAITO deployment's benchmark (input + output tokens a minute, one replica).
    peak_tokens_per_minute: int | None = None
    # Preference votes: each person's pick for this target on one prompt, and the prompts where
    # it had more votes than any other choice (a tie included); see `VoteTally`.
    preferred_votes: int = 0
    preferred_prompts: int = 0
    percentiles: dict[str, dict[float, float | None]] = field(default_factory=dict)
    # p5/p25/p50/p75/p95 per metric for the box figures (not in the JSON: the page's only)
    box: dict[str, dict[float, float | None]] = field(default_factory=dict, repr=False)

    def percentile_rows(self) -> list[tuple[str, list[float | None]]]:
        """(metric label, [p50, p90, p95, p99]) for the page's table."""
        labels = {"ttft_ms": "TTFT (ms)", "itl_mean_ms": "ITL (ms)", "e2e_ms": "E2E (ms)"}
        return [
            (label, [self.percentiles.get(metric, {}).get(p) for p in PERCENTILES])
            for metric, label in labels.items()
        ]

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("box")
        data["cost"] = self.cost.as_json()
        data["percentiles"] = {
            metric: {f"p{p:g}": v for p, v in values.items()}
            for metric, values in self.percentiles.items()
        }
        for key in ("cost_usd", "cost_per_request", "cost_per_1m"):
            data[key] = None if data[key] is None else str(data[key])
        return data


@dataclass(frozen=True)
class VoteTally:
    """The experiment's preference votes (one per person and prompt; no target: a tie)."""

    total: int = 0
    ties: int = 0
    voters: int = 0
    prompts: int = 0  # prompts with at least one vote
    tied_prompts: int = 0  # prompts where no single choice had the most votes, or a tie did

    def as_json(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class ExperimentResults:
    """What the results page, the exports and the API read: the summary per target, the
    progress, and the votes, from three queries whatever the number of targets and samples."""

    summaries: list[TargetSummary]
    progress: dict[str, int]
    votes: VoteTally


CLOSED = (Sample.Status.DONE, Sample.Status.FAILED, Sample.Status.SKIPPED)


def experiment_results(experiment: Experiment) -> ExperimentResults:
    """Per target: counts, error rate, throughput, cost, votes and p50/p90/p95/p99 of TTFT, ITL
    and E2E (with the box figures' p5/p25/p75); and the progress over all targets.

    One grouped query over the samples does it (on PostgreSQL the percentiles too: one
    `PercentilesCont` per metric, so each metric is sorted once per target); one more reads each
    target's snapshot and its deployment's live peakTokensPerMinute by the first sample's
    primary key, and one the votes. On SQLite the percentiles take a fourth query and Python."""
    samples = Sample.objects.filter(experiment=experiment).order_by()
    in_database = connection.vendor == "postgresql"
    done = Q(status=Sample.Status.DONE)
    annotations: dict[str, Any] = {
        "requests": Count("id"),
        **{f"n_{status}": Count("id", filter=Q(status=status)) for status in Sample.Status},
        "first_id": Min("id"),
        "first": Min("started_at"),
        "last": Max("finished_at"),
        "in_tokens": Sum("input_tokens"),
        "out_tokens": Sum("output_tokens"),
        "cost": Sum("cost_usd"),
        "priced": Count("cost_usd"),
        "priced_tokens": Sum(
            F("input_tokens") + F("output_tokens"), filter=Q(cost_usd__isnull=False)
        ),
        "mean_tps": Avg("output_tokens_per_s", filter=done),
    }
    if in_database:
        fractions = [p / 100 for p in PAGE_PERCENTILES]
        for metric in METRICS:
            annotations[f"q_{metric}"] = PercentilesCont(metric, fractions, filter=done)
    grouped: Iterable[Any] = samples.values("target_id").annotate(**annotations)
    rows: list[dict[str, Any]] = list(grouped)
    # Each target's snapshot (history survives edits and deletion) from its first sample; and,
    # as a deployment's benchmark may land after the experiment started, today's figure.
    firsts = {
        pk: (snapshot or {}, live_peak)
        for pk, snapshot, live_peak in Sample.objects.filter(
            pk__in=[row["first_id"] for row in rows]
        ).values_list("pk", "target_snapshot", "target__deployment__peak_tokens_per_minute")
    }
    in_python = {} if in_database else _percentiles_in_python(samples, PAGE_PERCENTILES)
    votes, by_target = _votes(experiment)

    summaries: list[TargetSummary] = []
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        target_id = row["target_id"]
        for status in Sample.Status:
            counts[status] += row[f"n_{status}"]
        snapshot, live_peak = firsts.get(row["first_id"], ({}, None))
        kind = str(snapshot.get("kind", ""))
        closed = row[f"n_{Sample.Status.DONE}"] + row[f"n_{Sample.Status.FAILED}"]
        summary = TargetSummary(
            target_id=target_id,
            name=str(snapshot.get("name", "(deleted target)")),
            kind=kind,
            is_foundry=kind.startswith("foundry"),
            is_kaito=kind.startswith("kaito"),
            cost=CostBasis.from_json(snapshot.get("cost") or {}),
            requests=row["requests"],
            finished=closed,
            ok=row[f"n_{Sample.Status.DONE}"],
            errors=row[f"n_{Sample.Status.FAILED}"],
            input_tokens=row["in_tokens"] or 0,
            output_tokens=row["out_tokens"] or 0,
            mean_request_tokens_per_s=row["mean_tps"],
        )
        if summary.finished:
            summary.error_rate = summary.errors / summary.finished
        if row["first"] and row["last"]:
            summary.wall_s = max((row["last"] - row["first"]).total_seconds(), 1e-6)
            summary.requests_per_s = summary.finished / summary.wall_s
            summary.output_tokens_per_s = summary.output_tokens / summary.wall_s
        if row["priced"]:
            cost = Decimal(row["cost"])
            summary.cost_usd = cost
            summary.cost_per_request = cost / row["priced"]
            if row["priced_tokens"]:
                summary.cost_per_1m = cost * ONE_MILLION / row["priced_tokens"]
        peak = live_peak or (snapshot.get("deployment") or {}).get("peak_tokens_per_minute")
        summary.peak_tokens_per_minute = int(peak) if peak else None
        if target_id is not None:
            summary.preferred_votes, summary.preferred_prompts = by_target.get(target_id, (0, 0))
        # A metric with no value at all has no percentiles (as `target_percentiles` leaves out).
        found: dict[str, dict[float, float | None]]
        if in_database:
            found = {
                m: dict(zip(PAGE_PERCENTILES, row[f"q_{m}"], strict=True))
                for m in METRICS
                if row[f"q_{m}"] is not None
            }
        else:
            found = in_python.get(target_id, {})
        summary.percentiles = {
            m: {p: found[m][p] for p in PERCENTILES} if m in found else {} for m in METRICS
        }
        summary.box = {
            m: {p: found[m][p] for p in BOX_PERCENTILES} if m in found else {} for m in METRICS
        }
        summaries.append(summary)
    summaries.sort(key=lambda s: s.name)
    return ExperimentResults(summaries=summaries, progress=_progress(dict(counts)), votes=votes)


def experiment_summary(experiment: Experiment) -> list[TargetSummary]:
    """The per-target summary alone (see `experiment_results`)."""
    return experiment_results(experiment).summaries


def _progress(counts: dict[str, int]) -> dict[str, int]:
    """{total, closed, percent, and a count per status present} from the counts per status."""
    counts = {status: n for status, n in counts.items() if n}
    total = sum(counts.values())
    closed = sum(counts.get(s, 0) for s in CLOSED)
    return {
        "total": total,
        "closed": closed,
        "percent": math.floor(100 * closed / total) if total else 100,
        **{str(k): v for k, v in counts.items()},
    }


def experiment_progress(experiment: Experiment) -> dict[str, int]:
    """The progress alone (the polled fragment's): one small grouped count."""
    counts = dict(
        Sample.objects.filter(experiment=experiment)
        .order_by()
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    return _progress(counts)


def _votes(experiment: Experiment) -> tuple[VoteTally, dict[int, tuple[int, int]]]:
    """The tally, and {target id: (votes for it, prompts it won)}. A prompt is won by the choice
    with strictly the most votes on it; when two choices share the most, or a tie has the most,
    no target wins it and it counts as a tied prompt."""
    per_prompt: dict[int, Counter[int | None]] = defaultdict(Counter)
    voters: set[int] = set()
    for prompt_index, target_id, user_id in PreferenceVote.objects.filter(
        experiment=experiment
    ).values_list("prompt_index", "target_id", "user_id"):
        per_prompt[prompt_index][target_id] += 1
        voters.add(user_id)
    votes: Counter[int | None] = Counter()
    won: Counter[int] = Counter()
    tied_prompts = 0
    for choices in per_prompt.values():
        votes.update(choices)
        (top, most), *rest = choices.most_common()
        if top is None or any(n == most for _, n in rest):
            tied_prompts += 1
        else:
            won[top] += 1
    tally = VoteTally(
        total=sum(votes.values()),
        ties=votes.get(None, 0),
        voters=len(voters),
        prompts=len(per_prompt),
        tied_prompts=tied_prompts,
    )
    by_target = {t: (n, won.get(t, 0)) for t, n in votes.items() if t is not None}
    return tally, by_target


# --- break-even ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BreakEven:
    """Foundry's monthly bill against KAITO's, by monthly token volume (input + output).

    Foundry:  cost(V) = V x p / 1,000,000, p = the measured blended $ per 1M tokens
    KAITO:    one replica (the target's nodes) costs M = $/hour x nodes x 730 a month and serves
              C = peakTokensPerMinute x 60 x 730 tokens a month when the target is a linked
              deployment whose KAITO benchmark reported it (input + output tokens), else
              C = measured output tokens/s / output share x 3600 x 730;
              cost(V) = max(1, ceil(V / C)) x M
    The first volume where KAITO is cheaper: V* = M x 1,000,000 / p, if V* <= C (one replica
    at full load costs less than Foundry's price for the same tokens); else Foundry is cheaper
    at every volume, because each further replica adds exactly C tokens and M dollars again.
    """

    foundry: str
    kaito: str
    price_per_1m: Decimal
    replica_month_usd: Decimal
    capacity_per_month: float
    break_even_tokens: float | None
    capacity_source: str = "measured"  # or "peakTokensPerMinute"

    def foundry_cost(self, volume: float) -> float:
        return volume * float(self.price_per_1m) / 1_000_000

    def kaito_cost(self, volume: float) -> float:
        replicas = max(1, math.ceil(volume / self.capacity_per_month))
        return replicas * float(self.replica_month_usd)


def break_even(
    *,
    price_per_1m: Decimal,
    price_per_hour: Decimal,
    nodes: int,
    output_tokens_per_s: float,
    output_share: float,
    foundry: str = "Foundry",
    kaito: str = "KAITO",
    peak_tokens_per_minute: int | None = None,
) -> BreakEven:
    replica_month = price_per_hour * nodes * HOURS_PER_MONTH
    if peak_tokens_per_minute:
        capacity = float(peak_tokens_per_minute) * 60 * HOURS_PER_MONTH
    else:
        capacity = output_tokens_per_s / output_share * SECONDS_PER_MONTH
    point = float(replica_month * ONE_MILLION / price_per_1m) if price_per_1m > 0 else None
    if point is not None and point > capacity:
        point = None
    return BreakEven(
        foundry=foundry,
        kaito=kaito,
        price_per_1m=price_per_1m,
        replica_month_usd=replica_month,
        capacity_per_month=capacity,
        break_even_tokens=point,
        capacity_source="peakTokensPerMinute" if peak_tokens_per_minute else "measured",
    )


def experiment_break_evens(summaries: Iterable[TargetSummary]) -> list[BreakEven]:
    """Every (Foundry, KAITO) pair with the figures to compare them."""
    summaries = list(summaries)
    result = []
    for f in summaries:
        if not f.is_foundry or not f.cost_per_1m:
            continue
        for k in summaries:
            if not k.is_kaito or not k.cost.complete or not k.output_tokens_per_s:
                continue
            total = k.input_tokens + k.output_tokens
            if not total or not k.output_tokens:
                continue
            assert k.cost.price_per_hour is not None
            result.append(
                break_even(
                    price_per_1m=f.cost_per_1m,
                    price_per_hour=k.cost.price_per_hour,
                    nodes=k.cost.nodes,
                    output_tokens_per_s=k.output_tokens_per_s,
                    output_share=k.output_tokens / total,
                    foundry=f.name,
                    kaito=k.name,
                    peak_tokens_per_minute=k.peak_tokens_per_minute,
                )
            )
    return result


# --- figures -------------------------------------------------------------------------------------


def experiment_figures(
    experiment: Experiment, summaries: list[TargetSummary], evens: list[BreakEven]
) -> dict[str, Any]:
    """Plotly figures as plain JSON-ready dicts, for the page's vendored plotly.min.js to draw.

    Written as plotly.js's own figure JSON (traces with a ``type``, a layout) rather than built
    with plotly's graph objects, whose validation and copying cost more than the page's
    queries; each layout carries plotly's default template, so the charts look as before."""
    figures: dict[str, Any] = {}
    labels = {"ttft_ms": "TTFT (ms)", "itl_mean_ms": "mean ITL (ms)", "e2e_ms": "E2E (ms)"}
    for metric, label in labels.items():
        boxes = []
        for s in summaries:  # the summary's own percentiles: nothing is aggregated twice
            q = s.box.get(metric) or {}
            if q.get(50) is None:
                continue
            boxes.append(
                {
                    "type": "box",
                    "name": s.name,
                    "q1": [q[25]],
                    "median": [q[50]],
                    "q3": [q[75]],
                    "lowerfence": [q[5]],
                    "upperfence": [q[95]],
                }
            )
        figures[metric] = _figure(
            boxes,
            title=f"{label}: p5, p25, median, p75, p95",
            yaxis=label,
            showlegend=False,
        )

    points = _scatter_points(experiment)
    figures["scatter"] = _figure(
        [
            {
                "type": "scatter",
                "name": s.name,
                "mode": "markers",
                "x": [tokens for tokens, _ in points.get(s.target_id, [])],
                "y": [round(ttft, 1) for _, ttft in points.get(s.target_id, [])],
            }
            for s in summaries
        ],
        title="TTFT against output length (the first repetitions of every prompt, "
        f"at most {SCATTER_POINTS} a target)",
        xaxis="output tokens",
        yaxis="TTFT (ms)",
    )

    priced = [s for s in summaries if s.cost_per_1m is not None]
    figures["cost"] = _figure(
        [
            {
                "type": "bar",
                "x": [s.name for s in priced],
                "y": [float(s.cost_per_1m or 0) for s in priced],
            }
        ],
        title="Cost per 1M tokens (input + output)",
        yaxis="$ per 1M tokens",
    )

    if evens:
        top = max(max(3 * (e.break_even_tokens or 0), 3 * e.capacity_per_month) for e in evens)
        volumes = [top * i / 300 for i in range(301)]
        lines: list[dict[str, Any]] = []
        foundry_seen: set[str] = set()
        kaito_seen: set[str] = set()
        for e in evens:
            if e.foundry not in foundry_seen:
                foundry_seen.add(e.foundry)
                lines.append(
                    {
                        "type": "scatter",
                        "name": f"{e.foundry} (per token)",
                        "x": [0, top],
                        "y": [0, e.foundry_cost(top)],
                        "mode": "lines",
                    }
                )
            if e.kaito not in kaito_seen:
                kaito_seen.add(e.kaito)
                lines.append(
                    {
                        "type": "scatter",
                        "name": f"{e.kaito} (replicas of its nodes)",
                        "x": volumes,
                        "y": [e.kaito_cost(v) for v in volumes],
                        "mode": "lines",
                        "line": {"shape": "hv"},
                    }
                )
        figures["break_even"] = _figure(
            lines,
            title="Monthly cost against monthly token volume",
            xaxis="tokens a month (input + output)",
            yaxis="$ a month",
        )
    return figures


def _figure(
    data: list[dict[str, Any]],
    *,
    title: str,
    xaxis: str = "",
    yaxis: str = "",
    showlegend: bool | None = None,
) -> dict[str, Any]:
    layout: dict[str, Any] = {"template": _plotly_template(), "title": {"text": title}}
    if xaxis:
        layout["xaxis"] = {"title": {"text": xaxis}}
    if yaxis:
        layout["yaxis"] = {"title": {"text": yaxis}}
    if showlegend is not None:
        layout["showlegend"] = showlegend
    return {"data": data, "layout": layout}


@cache
def _plotly_template() -> dict[str, Any]:
    """plotly's default template as JSON, read once a process (it never changes)."""
    import plotly.io as pio
    from plotly.utils import PlotlyJSONEncoder

    template = pio.templates[pio.templates.default]
    data: dict[str, Any] = json.loads(json.dumps(template.to_plotly_json(), cls=PlotlyJSONEncoder))
    return data


def _scatter_points(experiment: Experiment) -> dict[int | None, list[tuple[int | None, float]]]:
    """(output tokens, TTFT) of at most SCATTER_POINTS done samples a target, in one query: the
    first repetitions of every prompt (all prompts alike, not the first prompts' every
    repetition). The filter is on the columns of the (experiment, target, prompt, repetition)
    unique index, so PostgreSQL reads only the rows it returns."""
    prompts = max(1, len(experiment.prompts))
    repetitions = max(1, SCATTER_POINTS // prompts)
    rows = (
        Sample.objects.filter(
            experiment=experiment,
            prompt_index__lt=SCATTER_POINTS,
            repetition__lt=repetitions,
            status=Sample.Status.DONE,
            ttft_ms__isnull=False,
        )
        .order_by("target_id", "prompt_index", "repetition")
        .values_list("target_id", "output_tokens", "ttft_ms")
    )
    points: dict[int | None, list[tuple[int | None, float]]] = defaultdict(list)
    for target_id, tokens, ttft in rows:
        if ttft is not None:  # filtered out above; for the type checker
            points[target_id].append((tokens, ttft))
    return points


# --- exports and side by side ---------------------------------------------------------------------

SAMPLE_EXPORT_FIELDS = (
    "id",
    "target_id",
    "prompt_index",
    "repetition",
    "status",
    "streamed",
    "ttft_ms",
    "itl_mean_ms",
    "itl_p95_ms",
    "e2e_ms",
    "connect_ms",
    "output_tokens_per_s",
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "tokens_estimated",
    "finish_reason",
    "cost_usd",
    "cost_per_1m_usd",
    "http_status",
    "error_kind",
    "error_message",
    "started_at",
    "finished_at",
)


def experiment_sample_columns(experiment: Experiment) -> list[str]:
    columns = ["target", *SAMPLE_EXPORT_FIELDS]
    if experiment.keeps_hashes:
        columns += ["prompt_sha256", "answer_sha256"]
    if experiment.keeps_text:
        columns += ["system_prompt", "prompt", "answer"]
    return columns


def experiment_sample_rows(experiment: Experiment) -> Iterable[dict[str, Any]]:
    """Every sample as a flat row, with only what the storage policy keeps (a target is named,
    never its key: the snapshot holds none)."""
    fields = [*SAMPLE_EXPORT_FIELDS, "target_snapshot", "prompt_sha256", "text_sha256", "text"]
    prompts = experiment.prompts
    for values in (
        Sample.objects.filter(experiment=experiment)
        .order_by("target_id", "prompt_index", "repetition")
        .values(*fields)
        .iterator(2000)
    ):
        snapshot = values.pop("target_snapshot") or {}
        prompt_hash, answer_hash, answer = (
            values.pop("prompt_sha256"),
            values.pop("text_sha256"),
            values.pop("text"),
        )
        row: dict[str, Any] = {"target": snapshot.get("name", ""), **values}
        for key in ("cost_usd", "cost_per_1m_usd"):
            row[key] = None if row[key] is None else str(row[key])
        for key in ("started_at", "finished_at"):
            row[key] = None if row[key] is None else row[key].isoformat()
        if experiment.keeps_hashes:
            row["prompt_sha256"] = prompt_hash
            row["answer_sha256"] = answer_hash
        if experiment.keeps_text:
            prompt = prompts[values["prompt_index"]] if values["prompt_index"] is not None else {}
            row["system_prompt"] = prompt.get("system", "")
            row["prompt"] = prompt.get("prompt", "")
            row["answer"] = answer
        yield row


def experiment_settings(experiment: Experiment) -> dict[str, Any]:
    return {
        "id": experiment.pk,
        "name": experiment.name,
        "status": experiment.status,
        "prompt_set": experiment.prompt_set_name,
        "prompts": len(experiment.prompts),
        "repetitions": experiment.repetitions,
        "concurrency_per_target": experiment.concurrency,
        "max_tokens": experiment.max_tokens,
        "timeout_s": experiment.timeout_s,
        "storage_policy": experiment.storage_policy,
        "created_at": experiment.created_at.isoformat(),
        "started_at": experiment.started_at.isoformat() if experiment.started_at else None,
        "finished_at": experiment.finished_at.isoformat() if experiment.finished_at else None,
    }


def experiment_side_by_side(experiment: Experiment, *, limit: int = 100) -> list[dict[str, Any]]:
    """Each prompt with every target's first answer (kept text only), for reading and voting."""
    if not experiment.keeps_text:
        return []
    answers: dict[int, dict[int | None, Sample]] = defaultdict(dict)
    for sample in (
        Sample.objects.filter(experiment=experiment, repetition=0, prompt_index__lt=limit)
        .only("prompt_index", "target_id", "target_snapshot", "text", "status", "error_message")
        .order_by("prompt_index", "target_id")
    ):
        answers[sample.prompt_index or 0][sample.target_id] = sample
    rows = []
    for index, prompt in enumerate(experiment.prompts[:limit]):
        rows.append(
            {
                "index": index,
                "prompt": prompt.get("prompt", ""),
                "system": prompt.get("system", ""),
                "answers": list(answers.get(index, {}).values()),
            }
        )
    return rows
