from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from apps.audit.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Read-only: the audit log is appended to by the app and never edited."""

    list_display = ["created_at", "actor_name", "action", "target", "cluster_name", "outcome"]
    list_filter = ["outcome", "action", "cluster_name"]
    search_fields = ["actor_name", "action", "target", "cluster_name", "detail"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
