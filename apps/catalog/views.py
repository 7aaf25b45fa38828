from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from apps.accounts.roles import Role, role_required
from apps.catalog.forms import CatalogFilterForm, SizingForm
from apps.catalog.models import FoundryModel, GpuVmSize, KaitoModel
from apps.catalog.selectors import (
    catalog_entries,
    model_sizing_table,
    price_comparisons,
    vm_specs,
)
from apps.catalog.sizing import cheapest_fit
from kaitoweb.htmx import htmx_partial


@require_GET
@vary_on_headers("HX-Request")
@role_required(Role.VIEWER)
def model_list(request: HttpRequest) -> HttpResponse:
    form = CatalogFilterForm(request.GET)
    filters = form.filters()
    entries = catalog_entries(filters)
    query = request.GET.copy()
    query.pop("sort", None)
    context = {
        "form": form,
        "entries": entries,
        "sort": filters.sort,
        "base_query": query.urlencode(),
        "filtered": any(v for k, v in vars(filters).items() if k != "sort"),
        "counts": {
            "kaito": sum(1 for e in entries if e.kind == "kaito"),
            "foundry": sum(1 for e in entries if e.kind == "foundry"),
        },
    }
    template = "catalog/htmx/results.html" if htmx_partial(request) else "catalog/model_list.html"
    return render(request, template, context)


@require_GET
@vary_on_headers("HX-Request")
@role_required(Role.VIEWER)
def kaito_detail(request: HttpRequest, model_id: str) -> HttpResponse:
    model = get_object_or_404(
        KaitoModel.objects.select_related("family").prefetch_related("foundry_models"),
        model_id=model_id,
    )
    form = SizingForm(request.GET or None)
    max_tokens, utilization = form.values()
    rows = model_sizing_table(model, max_tokens=max_tokens, utilization=utilization)
    cheapest = next(
        (r.sizing for r in rows if r.sizing.fits and r.sizing.price_per_hour is not None), None
    )
    context = {
        "model": model,
        "kv_bytes_per_token": model.sizing_spec().kv_bytes_per_token,
        "form": form,
        "rows": rows,
        "max_tokens": max_tokens,
        "utilization": utilization,
        "cheapest": cheapest,
        "comparisons": price_comparisons(list(model.foundry_models.all()), cheapest),
    }
    template = "catalog/htmx/sizing.html" if htmx_partial(request) else "catalog/kaito_detail.html"
    return render(request, template, context)


@require_GET
@role_required(Role.VIEWER)
def foundry_detail(request: HttpRequest, name: str) -> HttpResponse:
    model = get_object_or_404(
        FoundryModel.objects.select_related("family", "kaito_model"), name=name
    )
    cheapest = None
    if model.kaito_model:
        cheapest = cheapest_fit(model.kaito_model.sizing_spec(), vm_specs(GpuVmSize.objects.all()))
    context = {
        "model": model,
        "cheapest": cheapest,
        "data_zone": model.prices_for("data_zone"),
        "regional": model.prices_for("regional"),
        "comparisons": price_comparisons([model], cheapest),
    }
    return render(request, "catalog/foundry_detail.html", context)
