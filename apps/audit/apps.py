from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_save


class AuditConfig(AppConfig):
    verbose_name = "Audit log"
    name = "apps.audit"
    label = "audit"

    def ready(self) -> None:
        # Django admin logs each add, change and delete it makes (LogEntry); the audit log
        # mirrors them, so a change made in admin is in the audit log like any other.
        from django.contrib.admin.models import LogEntry

        post_save.connect(_mirror_admin_log, sender=LogEntry, dispatch_uid="kaitoweb-audit-admin")
        # Signing out happens in two places (the app's and Django admin's): audit both.
        user_logged_out.connect(_audit_logout, dispatch_uid="kaitoweb-audit-logout")


def _mirror_admin_log(sender: type, instance: Any, created: bool, **kwargs: Any) -> None:
    if created:
        from apps.audit.services import audit_admin_change

        audit_admin_change(entry=instance)


def _audit_logout(sender: type, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None and user.is_authenticated:
        from apps.audit.services import audit_record

        audit_record(actor=user, action="logout", outcome="ok", target=user.get_username())
