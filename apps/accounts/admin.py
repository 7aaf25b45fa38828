from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from apps.accounts.models import SecuritySettings
from apps.audit.services import audit_record


@admin.register(SecuritySettings)
class SecuritySettingsAdmin(admin.ModelAdmin):
    """One row; changes are audited."""

    list_display = ["__str__", "allow_link_local_endpoints", "updated_at"]
    readonly_fields = ["updated_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not SecuritySettings.objects.exists() and super().has_add_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def save_model(
        self, request: HttpRequest, obj: SecuritySettings, form: object, change: bool
    ) -> None:
        obj.pk = 1
        super().save_model(request, obj, form, change)
        audit_record(
            actor=request.user,
            action="security.settings",
            outcome="ok",
            target="security settings",
            detail=f"allow_link_local_endpoints={obj.allow_link_local_endpoints}",
        )
