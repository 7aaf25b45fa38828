"""Reads for the deployment pages. The pages read rows, never the queue."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import plotly.graph_objects as go
from django.db.models import QuerySet
from django.utils import timezone

from apps.catalog.models import GpuVmSize, KaitoModel
from apps.catalog.selectors import vm_specs
from apps.catalog.sizing import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_UTILIZATION,
    ModelSpec,
    Sizing,
    size_over,
)
from apps.clusters.models import Cluster
from apps.deployments import timeline
from apps.deployments.models import Deployment


@dataclass
class DeploymentRow:
    deployment: Deployment
    price_per_hour: Decimal | None
    cost_so_far: Decimal | None


def deployment_rows(
    *, cluster: Cluster | None = None, include_gone: bool = True, status: str = ""
) -> list[DeploymentRow]:
    qs: QuerySet[Deployment] = Deployment.objects.select_related("cluster", "kaito_model")
    if cluster is not None:
        qs = qs.filter(cluster=cluster)
    if not include_gone:
        qs = qs.exclude(status__in=Deployment.GONE_STATUSES)
    if status:
        qs = qs.filter(status=status)
    vms = {vm.sku: vm for vm in GpuVmSize.objects.all()}
    now = timezone.now()
    rows = []
    for d in qs:
        vm = vms.get(d.vm_size)
        rows.append(
            DeploymentRow(
                d, d.price_per_hour(vm) if vm else None, d.cost_so_far(vm, now) if vm else None
            )
        )
    return rows


def any_moving(rows: Iterable[DeploymentRow]) -> bool:
    return any(not r.deployment.settled for r in rows)


@dataclass
class VmChoice:
    vm: GpuVmSize
    sizing: Sizing

    @property
    def label(self) -> str:
        s = self.sizing
        price = f"${s.price_per_hour:,.2f}/h" if s.price_per_hour is not None else "no price"
        if s.fits:
            nodes = f"{s.nodes} node{'s' if s.nodes > 1 else ''}"
            return f"{self.vm.sku} · fits · {nodes} · {price}"
        return f"{self.vm.sku} · does not fit: {s.reason}"


def vm_choices(
    spec: ModelSpec,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    utilization: float = DEFAULT_UTILIZATION,
) -> list[VmChoice]:
    """GPU VM sizes ranked by KAITO's sizing: cheapest fit first, then the rest."""
    vms = {vm.sku: vm for vm in GpuVmSize.objects.filter(gpu_count__gt=0)}
    ranked = size_over(spec, vm_specs(vms.values()), max_tokens=max_tokens, utilization=utilization)
    return [VmChoice(vms[s.sku], s) for s in ranked]


def kaito_model_for(name: str) -> KaitoModel | None:
    return (
        KaitoModel.objects.filter(preset_name__iexact=name).first()
        or KaitoModel.objects.filter(model_id__iexact=name).first()
    )


def proxy_url(deployment: Deployment, path: str = "v1/chat/completions") -> str:
    """The endpoint through the API server's service proxy (needs the cluster's credentials)."""
    if not deployment.endpoint_service:
        return ""
    server = deployment.cluster.api_server
    if not server.startswith("http"):
        server = "https://<api-server>"
    return (
        f"{server.rstrip('/')}/api/v1/namespaces/{deployment.namespace}/services/"
        f"{deployment.endpoint_service}:80/proxy/{path}"
    )


TIMELINE_HEIGHT = 280  # px; the page gives the chart exactly this much room


def timeline_figure(deployment: Deployment, now: datetime | None = None) -> dict[str, Any]:
    """The cold start as a plotly Gantt-style bar chart (figure JSON for plotly.js)."""
    now = now or timezone.now()
    spans = timeline.spans_from_json(deployment.timeline)
    if not spans or spans[0].began is None:
        return {}
    start = spans[0].began
    speed = deployment.cluster.clock_speed or 1.0
    phases, bases, widths, texts, colors = [], [], [], [], []
    palette = {
        "provisioning": "#5b9bf0",
        "node init": "#8b7cf0",
        "image pull": "#f0a35b",
        "warm-up": "#4fb58a",
        "benchmark": "#c0c75a",
    }
    for span in spans:
        assert span.began is not None
        seconds = span.seconds(now) or 0.0
        phases.append(span.phase)
        bases.append((span.began - start).total_seconds())
        widths.append(max(seconds, 0.05))
        state = "" if span.ended else " (in progress)"
        scaled = f", {seconds * speed:,.0f} s at real-cluster speed" if speed != 1 else ""
        texts.append(f"{seconds:,.0f} s{state}{scaled}")
        colors.append(palette.get(span.phase, "#999"))
    figure = go.Figure(
        go.Bar(
            y=phases,
            x=widths,
            base=bases,
            orientation="h",
            text=texts,
            textposition="auto",
            marker={"color": colors},
            hovertemplate="%{y}: %{text}<extra></extra>",
        )
    )
    figure.update_layout(
        height=TIMELINE_HEIGHT,
        margin={"l": 100, "r": 20, "t": 10, "b": 50},
        showlegend=False,
        xaxis={"title": {"text": "seconds since the Workspace was created"}, "rangemode": "tozero"},
        yaxis={"autorange": "reversed"},
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
    )
    return json.loads(figure.to_json())


def phase_rows(deployment: Deployment, now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or timezone.now()
    out = []
    for span in timeline.spans_from_json(deployment.timeline):
        out.append(
            {
                "phase": span.phase,
                "began": span.began,
                "ended": span.ended,
                "seconds": span.seconds(now),
            }
        )
    return out
