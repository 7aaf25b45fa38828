"""Cluster connections: a kubeconfig and a context (kept encrypted), or the in-cluster account."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse

from apps.clusters.kube import Credentials
from kaitoweb.secrets import EncryptedTextField


class Cluster(models.Model):
    class Auth(models.TextChoices):
        KUBECONFIG = "kubeconfig", "Kubeconfig and context"
        IN_CLUSTER = "in_cluster", "In-cluster service account"

    name = models.SlugField(max_length=60, unique=True, help_text="A short name for this cluster.")
    auth = models.CharField(max_length=12, choices=Auth.choices, default=Auth.KUBECONFIG)
    kubeconfig = EncryptedTextField(
        blank=True, help_text="Encrypted at rest with ENCRYPTION_KEYS; never shown again."
    )
    context = models.CharField(max_length=200, blank=True)
    api_server = models.CharField(
        "API server", max_length=300, blank=True, help_text="From the kubeconfig, for display."
    )
    default_namespace = models.CharField(max_length=63, default="default")
    region = models.CharField("Azure region", max_length=40, blank=True)
    notes = models.TextField(blank=True)
    clock_speed = models.FloatField(
        default=1.0,
        help_text="1 for a real cluster. For the kaitosim simulator, its --speed, so that the "
        "limits that flag a deployment as stuck scale with its clock.",
    )

    # The last "Check connection"
    checked_at = models.DateTimeField(null=True, blank=True)
    check_ok = models.BooleanField(null=True)
    server_version = models.CharField(max_length=60, blank=True)
    kaito_installed = models.BooleanField(null=True)
    can_create_workspaces = models.BooleanField(null=True)
    check_problems = models.JSONField(default=list, blank=True)

    # The last reconcile
    reached_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("clusters:detail", kwargs={"name": self.name})

    @property
    def credentials(self) -> Credentials:
        return Credentials(
            kubeconfig=self.kubeconfig or "",
            context=self.context,
            in_cluster=self.auth == self.Auth.IN_CLUSTER,
        )

    @property
    def connection_label(self) -> str:
        if self.auth == self.Auth.IN_CLUSTER:
            return "in-cluster service account"
        return f"context {self.context}" if self.context else "current context"
