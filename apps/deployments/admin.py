from __future__ import annotations

from django.contrib import admin

from apps.deployments.models import Deployment


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    """For looking, not launching: launches and teardowns go through the app (and its audit)."""

    list_display = [
        "name",
        "namespace",
        "cluster",
        "model_name",
        "vm_size",
        "node_count",
        "status",
        "managed",
        "created_at",
    ]
    list_filter = ["status", "source", "managed", "cluster"]
    search_fields = ["name", "namespace", "model_name", "vm_size"]
    exclude = ["secret_values"]
    readonly_fields = [f.name for f in Deployment._meta.fields if f.name != "secret_values"]

    def has_add_permission(self, request: object) -> bool:
        return False
