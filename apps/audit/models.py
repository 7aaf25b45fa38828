"""The audit log: who did what, when, on which cluster, and how it ended."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditEntry(models.Model):
    class Outcome(models.TextChoices):
        REQUESTED = "requested", "Requested"
        OK = "ok", "Succeeded"
        REFUSED = "refused", "Refused"
        FAILED = "failed", "Failed"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(max_length=150, help_text="Kept when the user is deleted.")
    action = models.CharField(max_length=40, db_index=True)  # e.g. "deployment.launch"
    target = models.CharField(max_length=300, blank=True)  # e.g. "default/phi-4-mini"
    cluster_name = models.CharField(max_length=60, blank=True, db_index=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    detail = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_name} {self.action} {self.target}"
