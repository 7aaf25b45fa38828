"""Reads for the catalog pages: one list over KAITO and Foundry models, sizing per model."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from django.db.models import Prefetch

from apps.catalog.models import FoundryModel, GpuVmSize, KaitoModel, Lifecycle, ModelFamily
from apps.catalog.sizing import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_UTILIZATION,
    HOURS_PER_MONTH,
    Sizing,
    VmSpec,
    cheapest_fit,
    size_on,
    size_over,
)

Kind = Literal["kaito", "foundry"]

SORTS: dict[str, str] = {
    "name": "Name",
    "family": "Family",
    "context": "Context length",
    "weights": "Weight size",
    "cost": "Cheapest $/hour",
    "price": "Foundry $/1M input",
    "lifecycle": "Lifecycle",
}


@dataclass
class CatalogEntry:
    """One row of the catalog: a KAITO model or a Foundry model."""

    kind: Kind
    name: str
    url: str
    family: ModelFamily | None
    lifecycle: str
    kaito: KaitoModel | None = None
    foundry: FoundryModel | None = None
    counterparts: list[KaitoModel | FoundryModel] = field(default_factory=list)
    cheapest: Sizing | None = None

    @property
    def in_both(self) -> bool:
        return bool(self.counterparts)

    @property
    def gated(self) -> bool:
        return bool(self.kaito and self.kaito.gated)

    @property
    def context(self) -> int | None:
        return self.kaito.token_limit if self.kaito else None

    @property
    def lifecycle_label(self) -> str:
        return Lifecycle(self.lifecycle).label


@dataclass(frozen=True)
class CatalogFilters:
    q: str = ""
    family: str = ""  # family key
    source: str = ""  # "", "kaito", "foundry", "both"
    gated: str = ""  # "", "yes", "no"
    runtime: str = ""  # "", "vllm", "transformers"
    lifecycle: str = ""  # a Lifecycle value
    fits_on: str = ""  # a VM size sku
    sort: str = "name"  # a SORTS key, "-" for descending


def vm_specs(vms: Iterable[GpuVmSize] | None = None) -> list[VmSpec]:
    return [vm.sizing_spec() for vm in (vms if vms is not None else GpuVmSize.objects.all())]


def catalog_entries(filters: CatalogFilters) -> list[CatalogEntry]:
    vms = vm_specs()
    kaito_models = KaitoModel.objects.select_related("family").prefetch_related(
        Prefetch("foundry_models", queryset=FoundryModel.objects.order_by("name"))
    )
    entries: list[CatalogEntry] = []
    for km in kaito_models:
        entries.append(
            CatalogEntry(
                kind="kaito",
                name=km.model_id,
                url=km.get_absolute_url(),
                family=km.family,
                lifecycle=km.lifecycle,
                kaito=km,
                counterparts=list(km.foundry_models.all()),
                cheapest=cheapest_fit(km.sizing_spec(), vms),
            )
        )
    for fm in FoundryModel.objects.select_related("family", "kaito_model"):
        entries.append(
            CatalogEntry(
                kind="foundry",
                name=fm.name,
                url=fm.get_absolute_url(),
                family=fm.family,
                lifecycle=fm.lifecycle,
                foundry=fm,
                counterparts=[fm.kaito_model] if fm.kaito_model else [],
            )
        )
    fits_vm = next((vm for vm in vms if vm.sku == filters.fits_on), None)
    rows = [e for e in entries if _matches(e, filters, fits_vm)]
    return _sorted(rows, filters.sort)


def _matches(entry: CatalogEntry, f: CatalogFilters, fits_vm: VmSpec | None) -> bool:
    km, fm = entry.kaito, entry.foundry
    if f.family and (entry.family is None or entry.family.key != f.family):
        return False
    if f.source == "kaito" and not (km or entry.in_both):
        return False
    if f.source == "foundry" and not (fm or entry.in_both):
        return False
    if f.source == "both" and not entry.in_both:
        return False
    if f.gated == "yes" and not entry.gated:
        return False
    if f.gated == "no" and entry.gated:
        return False
    if f.runtime and (km is None or f.runtime not in km.runtimes):
        return False
    if f.lifecycle and entry.lifecycle != f.lifecycle:
        return False
    if f.fits_on and not _fits_one_node(km, fits_vm):
        return False
    if f.q:
        return all(word in _haystack(entry) for word in f.q.lower().split())
    return True


def _fits_one_node(km: KaitoModel | None, vm: VmSpec | None) -> bool:
    """Whether the model "fits on" a VM size: on one node of it, at KAITO's default context."""
    return km is not None and vm is not None and size_on(km.sizing_spec(), vm, nodes=1).fits


def _haystack(entry: CatalogEntry) -> str:
    parts: list[str] = [entry.name]
    if entry.family:
        parts += [entry.family.name, entry.family.key, entry.family.strengths]
    if entry.kaito:
        km = entry.kaito
        parts += [km.preset_name or "", km.license, km.quant_method, km.pipeline_tag]
        parts += [str(a) for a in km.architectures]
    if entry.foundry:
        parts += [entry.foundry.provider]
    parts += [str(c) for c in entry.counterparts]
    return " ".join(parts).lower()


def _sorted(rows: list[CatalogEntry], sort: str) -> list[CatalogEntry]:
    descending = sort.startswith("-")
    key_name = sort.lstrip("-") if sort.lstrip("-") in SORTS else "name"

    def key(e: CatalogEntry) -> tuple[int, object, str]:
        # Rows without the sorted value go last in either direction.
        value: object
        if key_name == "family":
            value = e.family.name.lower() if e.family else None
        elif key_name == "context":
            value = e.context
        elif key_name == "weights":
            value = e.kaito.weights_gib if e.kaito else None
        elif key_name == "cost":
            value = e.cheapest.price_per_hour if e.cheapest else None
        elif key_name == "price":
            value = e.foundry.input_per_1m if e.foundry else None
        elif key_name == "lifecycle":
            value = list(Lifecycle.values).index(e.lifecycle)
        else:
            value = e.name.lower()
        return (value is None, value if value is not None else 0, e.name.lower())

    present = [r for r in rows if key(r)[0] is False]
    absent = [r for r in rows if key(r)[0] is True]
    present.sort(key=key, reverse=descending)
    absent.sort(key=lambda e: e.name.lower())
    return present + absent


@dataclass
class SizingRow:
    vm: GpuVmSize
    sizing: Sizing

    @property
    def price_per_month(self) -> float | None:
        return self.sizing.price_per_month


def model_sizing_table(
    model: KaitoModel,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    utilization: float = DEFAULT_UTILIZATION,
) -> list[SizingRow]:
    """Every GPU VM size for this model, cheapest fit first (CPU sizes left out)."""
    vms = {vm.sku: vm for vm in GpuVmSize.objects.filter(gpu_count__gt=0)}
    sizings = size_over(
        model.sizing_spec(),
        vm_specs(vms.values()),
        max_tokens=max_tokens,
        utilization=utilization,
    )
    return [SizingRow(vm=vms[s.sku], sizing=s) for s in sizings]


@dataclass(frozen=True)
class PriceComparison:
    """Foundry's per-token price beside the cost of self-hosting the same model."""

    foundry: FoundryModel
    self_hosted_per_month: float
    blended_per_1m: Decimal
    breakeven_tokens_per_month: float | None  # tokens at which both cost the same


def price_comparisons(
    foundry_models: Sequence[FoundryModel], cheapest: Sizing | None
) -> list[PriceComparison]:
    """Blended price at an even mix of input and output tokens (stated on the page)."""
    if cheapest is None or cheapest.price_per_month is None:
        return []
    out = []
    for fm in foundry_models:
        if fm.input_per_1m is None or fm.output_per_1m is None:
            continue
        blended = (fm.input_per_1m + fm.output_per_1m) / 2
        breakeven = cheapest.price_per_month / float(blended) * 1_000_000 if blended > 0 else None
        out.append(PriceComparison(fm, cheapest.price_per_month, blended, breakeven))
    return out


__all__ = ["HOURS_PER_MONTH", "SORTS", "CatalogEntry", "CatalogFilters", "catalog_entries"]
