from __future__ import annotations

from django.contrib import admin

from apps.playground.models import ABRun, Sample, Target


@admin.register(Target)
class TargetAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "endpoint_url", "model_name", "auth", "cost_basis", "region"]
    list_filter = ["kind", "auth", "cost_basis", "processing_scope"]
    search_fields = ["name", "endpoint_url", "model_name"]
    exclude = ["api_key"]  # edited on the playground's target form, never shown back
    autocomplete_fields = ["kaito_model"]
    list_select_related = ["foundry_model", "vm_size"]


class SampleInline(admin.StackedInline):
    model = Sample
    extra = 0
    can_delete = False
    readonly_fields = [f.name for f in Sample._meta.fields if f.name != "id"]


@admin.register(ABRun)
class ABRunAdmin(admin.ModelAdmin):
    list_display = ["id", "created_at", "created_by", "status", "start_skew_ms"]
    list_filter = ["status"]
    search_fields = ["prompt", "note"]
    readonly_fields = ["created_at", "started_at", "finished_at", "start_skew_ms", "rerun_of"]
    inlines = [SampleInline]
