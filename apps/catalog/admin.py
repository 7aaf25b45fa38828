from __future__ import annotations

from functools import partial

from django.contrib import admin, messages
from django.db import models, transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.catalog.models import FoundryModel, GpuVmSize, KaitoModel, ModelFamily
from apps.catalog.selectors import vm_specs
from apps.catalog.sizing import cheapest_fit
from apps.catalog.tasks import catalog_reload


@admin.action(description="Re-seed the whole catalog from the shipped reference data (keeps edits)")
def reseed_catalog(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
) -> None:
    transaction.on_commit(partial(catalog_reload.delay, force=False))
    model_admin.message_user(
        request,
        "Catalog reload queued; a Celery worker applies it in a few seconds. Values edited "
        "here are kept.",
        messages.INFO,
    )


class EditedBySeedFilter(admin.SimpleListFilter):
    title = "origin"
    parameter_name = "origin"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("seeded", "Seeded by load_catalog"), ("manual", "Added by an admin")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "seeded":
            return queryset.exclude(seed={})
        if self.value() == "manual":
            return queryset.filter(seed={})
        return queryset


@admin.register(ModelFamily)
class ModelFamilyAdmin(admin.ModelAdmin):
    list_display = ["name", "key", "developer", "strengths"]
    search_fields = ["name", "key", "developer", "strengths"]
    prepopulated_fields = {"key": ["name"]}


@admin.register(KaitoModel)
class KaitoModelAdmin(admin.ModelAdmin):
    list_display = [
        "model_id",
        "preset_name",
        "family",
        "weights_gib",
        "token_limit",
        "quant_method",
        "gated",
        "download_auth_required",
        "transformers_runtime",
        "lifecycle",
        "source",
        "cheapest_vm",
    ]
    list_filter = [
        "source",
        "family",
        "gated",
        "download_auth_required",
        "download_at_runtime",
        "transformers_runtime",
        "lifecycle",
        "license",
        "quant_method",
    ]
    search_fields = ["model_id", "preset_name", "license", "architectures", "notes"]
    list_select_related = ["family"]
    readonly_fields = ["seed", "updated_at"]
    actions = [reseed_catalog]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    fieldsets = [
        (None, {"fields": ["model_id", "preset_name", "family", "source", "lifecycle", "notes"]}),
        (
            "Hugging Face",
            {"fields": ["description_url", "version_url", "license", "pipeline_tag", "gated"]},
        ),
        (
            "KAITO",
            {
                "fields": [
                    "transformers_runtime",
                    "download_at_runtime",
                    "download_auth_required",
                    "image_tag",
                ]
            },
        ),
        (
            "Architecture (GPU sizing input)",
            {
                "fields": [
                    "architectures",
                    "weights_gib",
                    "token_limit",
                    "hidden_size",
                    "num_hidden_layers",
                    "num_attention_heads",
                    "num_kv_heads",
                    "head_dim",
                    "kv_lora_rank",
                    "qk_rope_head_dim",
                    "quant_method",
                    "quant_bits",
                ]
            },
        ),
        ("Seed", {"fields": ["seed", "updated_at"], "classes": ["collapse"]}),
    ]

    def get_changelist_instance(self, request: HttpRequest):  # type: ignore[no-untyped-def]
        self._vm_specs = vm_specs()
        return super().get_changelist_instance(request)

    @admin.display(description="cheapest fit")
    def cheapest_vm(self, obj: KaitoModel) -> str:
        fit = cheapest_fit(obj.sizing_spec(), getattr(self, "_vm_specs", None) or vm_specs())
        if fit is None:
            return "none priced"
        return f"{fit.nodes}x {fit.sku} (${fit.price_per_hour:,.2f}/h)"


@admin.register(FoundryModel)
class FoundryModelAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "provider",
        "family",
        "input_per_1m",
        "output_per_1m",
        "data_zone_factor",
        "lifecycle",
        "retired_on",
        "kaito_model",
        "price_as_of",
    ]
    list_editable = ["input_per_1m", "output_per_1m"]
    list_filter = ["lifecycle", "provider", "family", EditedBySeedFilter]
    search_fields = [
        "name",
        "provider",
        "notes",
        "kaito_model__model_id",
        "kaito_model__preset_name",
    ]
    autocomplete_fields = ["kaito_model"]
    list_select_related = ["family", "kaito_model"]
    readonly_fields = ["seed", "updated_at"]
    date_hierarchy = "retired_on"


@admin.register(GpuVmSize)
class GpuVmSizeAdmin(admin.ModelAdmin):
    list_display = [
        "sku",
        "gpu_model",
        "gpu_count",
        "gpu_memory_gib",
        "per_gpu",
        "price_per_hour",
        "price_confidence",
        "price_as_of",
        "region",
    ]
    list_editable = ["price_per_hour", "price_confidence"]
    list_filter = ["gpu_model", "gpu_count", "price_confidence", "region", EditedBySeedFilter]
    search_fields = ["sku", "arm_name", "gpu_model"]
    readonly_fields = ["seed", "updated_at"]

    @admin.display(description="GiB per GPU")
    def per_gpu(self, obj: GpuVmSize) -> str:
        return f"{obj.gpu_memory_per_gpu_gib:g}" if obj.gpu_count else "-"
