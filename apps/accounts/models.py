"""Installation-wide security settings an admin changes in Django admin."""

from __future__ import annotations

from django.db import models


class SecuritySettings(models.Model):
    """A single row (pk 1): what this installation allows beyond the secure defaults."""

    allow_link_local_endpoints = models.BooleanField(
        "Allow metadata and link-local endpoints",
        default=False,
        help_text="Let targets use cloud metadata addresses (169.254.169.254, fd00:ec2::254, "
        "168.63.129.16, metadata.google.internal) and link-local addresses (169.254.0.0/16, "
        "fe80::/10). Leave off unless an inference server really lives at such an address: "
        "these reach the cloud's instance metadata and its credentials.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "security settings"
        verbose_name_plural = "security settings"

    def __str__(self) -> str:
        return "Security settings"

    @classmethod
    def current(cls) -> SecuritySettings:
        """The settings row, or the defaults if an admin never saved one."""
        return cls.objects.filter(pk=1).first() or cls(pk=1)
