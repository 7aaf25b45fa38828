"""Reads for experiments: the per-target summary (aggregated in the database), the break-even
between Foundry's per-token price and KAITO's node-hours, and the plotly figures.

Percentiles: PostgreSQL's ``percentile_cont(f) WITHIN GROUP (ORDER BY x)`` interpolates linearly
between the nearest ranks, which is exactly `stats.percentile` (numpy's "linear"), so on SQLite,
which has no such aggregate, `target_percentiles` fetches the values and computes them in Python
with that function. Counts, sums and means are aggregated in the database on both.

ITL percentiles are over each request's mean inter-token latency (one figure per request, as
guidellm reports it), not over every gap of every request.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
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
from apps.playground.models import Experiment, Sample, Target
from apps.playground.stats import PERCENTILES, percentile

HOURS_PER_MONTH = 730  # Azure's pricing month
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600
METRICS = ("ttft_ms", "itl_mean_ms", "e2e_ms")
BOX_PERCENTILES = (5, 25, 50, 75, 95)
SCATTER_POINTS = 2000


class PercentileCont(Aggregate):
    """PostgreSQL's continuous percentile (linear interpolation), fraction 0..1."""

    function = "percentile_cont"
    name = "PercentileCont"
    output_field = FloatField()
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression: str, fraction: float, **extra: Any) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError("a fraction is between 0 and 1")
        super().__init__(expression, fraction=repr(float(fraction)), **extra)


def target_percentiles(
    samples: QuerySet[Sample], metric: str, ps: Sequence[float] = PERCENTILES
) -> dict[int | None, dict[float, float | None]]:
    """{target id: {p: value}} of one metric over the samples, None values left out. In the
    database on PostgreSQL; over the fetched values in Python elsewhere (same interpolation)."""
    rows = samples.filter(**{f"{metric}__isnull": False})
    if connection.vendor == "postgresql":
        aggregates = {f"p{i}": PercentileCont(metric, p / 100) for i, p in enumerate(ps)}
        result: Iterable[dict[str, Any]] = list(
            rows.order_by().values("target_id").annotate(**aggregates)  # type: ignore[arg-type]
        )
        return {r["target_id"]: {p: r[f"p{i}"] for i, p in enumerate(ps)} for r in result}
    values: dict[int | None, list[float]] = defaultdict(list)
    for target_id, value in rows.order_by().values_list("target_id", metric).iterator(5000):
        values[target_id].append(value)
    return {t: {p: percentile(v, p) for p in ps} for t, v in values.items()}


# Every percentile the results page shows: the summary's table and the figures' boxes.
PAGE_PERCENTILES = tuple(sorted(set(PERCENTILES) | set(BOX_PERCENTILES)))


def _percentile_key(metric: str, p: float) -> str:
    return f"{metric}_p{p:g}".replace(".", "_")


def _percentile_aggregates(ps: Sequence[float]) -> dict[str, PercentileCont]:
    """PostgreSQL: every percentile of every metric over the done samples, as aggregates to put
    in the one grouped query (NULLs are ignored by percentile_cont, as by `stats.percentile`)."""
    done = Q(status=Sample.Status.DONE)
    return {
        _percentile_key(metric, p): PercentileCont(metric, p / 100, filter=done)
        for metric in METRICS
        for p in ps
    }


def _percentiles_in_python(
    samples: QuerySet[Sample], ps: Sequence[float]
) -> dict[int | None, dict[str, dict[float, float | None]]]:
    """SQLite: the same figures, over the done samples' values fetched once."""
    values: dict[int | None, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    rows = samples.filter(status=Sample.Status.DONE).order_by()
    for target_id, *measured in rows.values_list("target_id", *METRICS).iterator(5000):
        for metric, value in zip(METRICS, measured, strict=True):
            if value is not None:
                values[target_id][metric].append(value)
    return {
        t: {m: {p: percentile(by_metric.get(m, []), p) for p in ps} for m in METRICS}
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


def experiment_summary(experiment: Experiment) -> list[TargetSummary]:
    """Per target: counts, error rate, throughput, cost and p50/p90/p95/p99 of TTFT, ITL, E2E
    (and the box figures' p5/p25/p75). On PostgreSQL all of it is one grouped query, so each
    aggregate is computed once for the summary and the figures alike."""
    samples = Sample.objects.filter(experiment=experiment)
    in_database = connection.vendor == "postgresql"
    finished_states = [Sample.Status.DONE, Sample.Status.FAILED]
    rows = (
        samples.order_by()
        .values("target_id")
        .annotate(
            requests=Count("id"),
            closed=Count("id", filter=Q(status__in=finished_states)),
            ok=Count("id", filter=Q(status=Sample.Status.DONE)),
            first=Min("started_at"),
            last=Max("finished_at"),
            in_tokens=Sum("input_tokens"),
            out_tokens=Sum("output_tokens"),
            cost=Sum("cost_usd"),
            priced=Count("cost_usd"),
            priced_tokens=Sum(
                F("input_tokens") + F("output_tokens"), filter=Q(cost_usd__isnull=False)
            ),
            mean_tps=Avg("output_tokens_per_s", filter=Q(status=Sample.Status.DONE)),
            **(_percentile_aggregates(PAGE_PERCENTILES) if in_database else {}),
        )
    )
    in_python = {} if in_database else _percentiles_in_python(samples, PAGE_PERCENTILES)
    # A deployment's benchmark may land after the experiment started: prefer today's figure.
    live_peaks = dict(
        Target.objects.filter(experiments=experiment, deployment__isnull=False).values_list(
            "pk", "deployment__peak_tokens_per_minute"
        )
    )
    summaries: list[TargetSummary] = []
    for row in rows:
        target_id = row["target_id"]
        snapshot = _snapshot(samples, target_id)
        kind = str(snapshot.get("kind", ""))
        summary = TargetSummary(
            target_id=target_id,
            name=str(snapshot.get("name", "(deleted target)")),
            kind=kind,
            is_foundry=kind.startswith("foundry"),
            is_kaito=kind.startswith("kaito"),
            cost=CostBasis.from_json(snapshot.get("cost") or {}),
            requests=row["requests"],
            finished=row["closed"],
            ok=row["ok"],
            errors=row["closed"] - row["ok"],
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
        summary.peak_tokens_per_minute = _peak_tokens_per_minute(snapshot, live_peaks, target_id)
        found: dict[str, dict[float, float | None]]
        if in_database:
            values: dict[str, Any] = dict(row)
            found = {
                m: {p: values[_percentile_key(m, p)] for p in PAGE_PERCENTILES} for m in METRICS
            }
        else:
            found = in_python.get(target_id, {})
        # A metric with no value at all has no percentiles (as `target_percentiles` leaves out).
        found = {m: q for m, q in found.items() if any(v is not None for v in q.values())}
        summary.percentiles = {
            m: {p: found[m][p] for p in PERCENTILES} if m in found else {} for m in METRICS
        }
        summary.box = {
            m: {p: found[m][p] for p in BOX_PERCENTILES} if m in found else {} for m in METRICS
        }
        summaries.append(summary)
    summaries.sort(key=lambda s: s.name)
    return summaries


def _peak_tokens_per_minute(
    snapshot: dict[str, Any], live: dict[int, int | None], target_id: int | None
) -> int | None:
    peak = live.get(target_id) if target_id is not None else None
    if peak is None:
        peak = (snapshot.get("deployment") or {}).get("peak_tokens_per_minute")
    return int(peak) if peak else None


def _snapshot(samples: QuerySet[Sample], target_id: int | None) -> dict[str, Any]:
    row = _of_target(samples, target_id).values_list("target_snapshot", flat=True).first()
    return dict(row or {})


def _of_target(samples: QuerySet[Sample], target_id: int | None) -> QuerySet[Sample]:
    if target_id is None:
        return samples.filter(target__isnull=True)
    return samples.filter(target_id=target_id)


def experiment_progress(experiment: Experiment) -> dict[str, int]:
    counts = dict(
        Sample.objects.filter(experiment=experiment)
        .order_by()
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    total = sum(counts.values())
    closed = sum(counts.get(s, 0) for s in ("done", "failed", "skipped"))
    return {
        "total": total,
        "closed": closed,
        "percent": math.floor(100 * closed / total) if total else 100,
        **{str(k): v for k, v in counts.items()},
    }


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
    """Plotly figures as JSON, for the page's vendored plotly.min.js to draw."""
    import plotly.graph_objects as go
    from plotly.utils import PlotlyJSONEncoder

    done = Sample.objects.filter(experiment=experiment, status=Sample.Status.DONE)
    figures: dict[str, Any] = {}
    labels = {"ttft_ms": "TTFT (ms)", "itl_mean_ms": "mean ITL (ms)", "e2e_ms": "E2E (ms)"}
    for metric, label in labels.items():
        fig = go.Figure()
        for s in summaries:  # the summary's own percentiles: nothing is aggregated twice
            q = s.box.get(metric) or {}
            if q.get(50) is None:
                continue
            fig.add_trace(
                go.Box(
                    name=s.name,
                    q1=[q[25]],
                    median=[q[50]],
                    q3=[q[75]],
                    lowerfence=[q[5]],
                    upperfence=[q[95]],
                )
            )
        fig.update_layout(
            title=f"{label}: p5, p25, median, p75, p95", yaxis_title=label, showlegend=False
        )
        figures[metric] = fig.to_plotly_json()

    scatter = go.Figure()
    for s in summaries:
        points = list(
            _of_target(done, s.target_id)
            .filter(ttft_ms__isnull=False)
            .order_by("id")
            .values_list("output_tokens", "ttft_ms")[:SCATTER_POINTS]
        )
        scatter.add_trace(
            go.Scattergl(
                name=s.name,
                mode="markers",
                x=[p[0] for p in points],
                y=[p[1] for p in points],
            )
        )
    scatter.update_layout(
        title="TTFT against output length", xaxis_title="output tokens", yaxis_title="TTFT (ms)"
    )
    figures["scatter"] = scatter.to_plotly_json()

    priced = [s for s in summaries if s.cost_per_1m is not None]
    bars = go.Figure(
        go.Bar(x=[s.name for s in priced], y=[float(s.cost_per_1m or 0) for s in priced])
    )
    bars.update_layout(title="Cost per 1M tokens (input + output)", yaxis_title="$ per 1M tokens")
    figures["cost"] = bars.to_plotly_json()

    if evens:
        top = max(max(3 * (e.break_even_tokens or 0), 3 * e.capacity_per_month) for e in evens)
        volumes = [top * i / 300 for i in range(301)]
        chart = go.Figure()
        foundry_seen: set[str] = set()
        kaito_seen: set[str] = set()
        for e in evens:
            if e.foundry not in foundry_seen:
                foundry_seen.add(e.foundry)
                chart.add_trace(
                    go.Scatter(
                        name=f"{e.foundry} (per token)",
                        x=[0, top],
                        y=[0, e.foundry_cost(top)],
                        mode="lines",
                    )
                )
            if e.kaito not in kaito_seen:
                kaito_seen.add(e.kaito)
                chart.add_trace(
                    go.Scatter(
                        name=f"{e.kaito} (replicas of its nodes)",
                        x=volumes,
                        y=[e.kaito_cost(v) for v in volumes],
                        mode="lines",
                        line_shape="hv",
                    )
                )
        chart.update_layout(
            title="Monthly cost against monthly token volume",
            xaxis_title="tokens a month (input + output)",
            yaxis_title="$ a month",
        )
        figures["break_even"] = chart.to_plotly_json()
    # plotly's own encoder (numpy arrays, dates) then back to plain data for json_script
    return {k: json.loads(json.dumps(v, cls=PlotlyJSONEncoder)) for k, v in figures.items()}


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
