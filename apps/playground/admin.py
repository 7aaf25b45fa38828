from __future__ import annotations

import secrets
from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest

from apps.playground.experiment_views import token_sha256
from apps.playground.models import ABRun, ApiToken, Experiment, Sample, Target


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


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "status", "created_at", "created_by", "storage_policy"]
    list_filter = ["status", "storage_policy"]
    search_fields = ["name", "prompt_set_name"]
    exclude = ["prompts"]  # the storage policy decides who sees prompt text: the page does
    readonly_fields = ["created_at", "started_at", "finished_at", "status"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """A token is made when the row is added and shown once; only its SHA-256 is kept."""

    list_display = ["name", "user", "prefix", "created_at", "last_used_at"]
    readonly_fields = ["prefix", "created_at", "last_used_at"]
    fields = ["user", "name", "prefix", "created_at", "last_used_at"]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not change:
            token = secrets.token_urlsafe(32)
            obj.token_sha256 = token_sha256(token)
            obj.prefix = token[:8]
            messages.warning(
                request, f"The new API token, shown only now: {token} (send it as Bearer)."
            )
        super().save_model(request, obj, form, change)
