from __future__ import annotations

from django.contrib import admin

from apps.clusters.models import Cluster


@admin.register(Cluster)
class ClusterAdmin(admin.ModelAdmin):
    list_display = ["name", "api_server", "context", "region", "check_ok", "checked_at"]
    search_fields = ["name", "api_server", "region", "notes"]
    # The kubeconfig is a secret: never shown, not even to admins (replace it in the app).
    exclude = ["kubeconfig"]
    readonly_fields = [
        "api_server",
        "checked_at",
        "check_ok",
        "server_version",
        "kaito_installed",
        "can_create_workspaces",
        "check_problems",
        "reached_at",
        "last_error",
        "created_by",
        "created_at",
    ]
