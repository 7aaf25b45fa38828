from __future__ import annotations

from typing import Any

from django import forms

from apps.catalog.models import GpuVmSize, Lifecycle, ModelFamily
from apps.catalog.selectors import SORTS, CatalogFilters
from apps.catalog.sizing import DEFAULT_MAX_TOKENS, DEFAULT_UTILIZATION

SORT_CHOICES = [(k, v) for k, v in SORTS.items()] + [
    (f"-{k}", f"{v} (desc)") for k, v in SORTS.items()
]


class CatalogFilterForm(forms.Form):
    q = forms.CharField(
        required=False,
        label="Search",
        widget=forms.TextInput(attrs={"placeholder": "name, licence, provider…", "type": "search"}),
    )
    family = forms.ChoiceField(required=False)
    source = forms.ChoiceField(
        required=False,
        choices=[
            ("", "KAITO and Foundry"),
            ("kaito", "Runs on KAITO"),
            ("foundry", "Sold in Foundry"),
            ("both", "In both"),
        ],
    )
    gated = forms.ChoiceField(
        required=False,
        label="Gated",
        choices=[("", "Gated or not"), ("yes", "Gated (HF token)"), ("no", "Not gated")],
    )
    runtime = forms.ChoiceField(
        required=False,
        choices=[("", "Any runtime"), ("vllm", "vLLM"), ("transformers", "transformers")],
    )
    lifecycle = forms.ChoiceField(
        required=False, choices=[("", "Any lifecycle"), *Lifecycle.choices]
    )
    fits_on = forms.ChoiceField(required=False, label="Fits on one")
    sort = forms.ChoiceField(required=False, choices=SORT_CHOICES)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        family: forms.ChoiceField = self.fields["family"]  # type: ignore[assignment]
        family.choices = [("", "Any family")] + [(f.key, f.name) for f in ModelFamily.objects.all()]
        fits_on: forms.ChoiceField = self.fields["fits_on"]  # type: ignore[assignment]
        fits_on.choices = [("", "Any VM size")] + [
            (vm.sku, f"{vm.sku} ({vm.gpu_count}x {vm.gpu_model})")
            for vm in GpuVmSize.objects.filter(gpu_count__gt=0)
        ]

    def filters(self) -> CatalogFilters:
        """The valid filters; an invalid value (a stale link) is dropped, not an error page."""
        self.is_valid()
        data = {name: self.cleaned_data.get(name) or "" for name in self.fields}
        return CatalogFilters(**{**data, "sort": data["sort"] or "name"})


class SizingForm(forms.Form):
    context = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=10_000_000,
        label="Context (tokens)",
        initial=DEFAULT_MAX_TOKENS,
        help_text="max_tokens KAITO sizes the KV cache for (default 2048).",
    )
    utilization = forms.FloatField(
        required=False,
        min_value=0.5,
        max_value=0.98,
        label="GPU memory utilisation",
        initial=DEFAULT_UTILIZATION,
        help_text="vLLM's gpu-memory-utilization (KAITO: 0.9).",
    )

    def values(self) -> tuple[int, float]:
        if not self.is_valid():
            return DEFAULT_MAX_TOKENS, DEFAULT_UTILIZATION
        return (
            self.cleaned_data.get("context") or DEFAULT_MAX_TOKENS,
            self.cleaned_data.get("utilization") or DEFAULT_UTILIZATION,
        )
