"""A deployment is a row: what was asked, and what the cluster last said about its Workspace."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from apps.catalog.models import GpuVmSize, KaitoModel
from apps.clusters.models import Cluster
from kaitoweb.secrets import EncryptedTextField

# KAITO's four printer columns, as `kubectl get workspaces` shows them.
CHIP_CONDITIONS = ("ResourceReady", "InferenceReady", "JobStarted", "WorkspaceSucceeded")


class Deployment(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PROVISIONING = "provisioning", "Provisioning"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"
        DELETING = "deleting", "Deleting"
        DELETED = "deleted", "Deleted"
        ORPHANED = "orphaned", "Orphaned"

    class Source(models.TextChoices):
        PRESET = "preset", "Catalog preset"
        HF_MODEL = "hf_model", "Hugging Face model (best effort)"
        TEMPLATE = "template", "Custom pod template"
        MANIFEST = "manifest", "Pasted manifest"
        DISCOVERED = "discovered", "Found in the cluster"

    class Runtime(models.TextChoices):
        VLLM = "vllm", "vLLM"
        TRANSFORMERS = "transformers", "transformers"

    # A page stops polling at these; the reconcile leaves the gone ones alone.
    SETTLED_STATUSES = (Status.READY, Status.FAILED, Status.DELETED, Status.ORPHANED)
    GONE_STATUSES = (Status.DELETED, Status.ORPHANED)
    # The cluster still holds (or may hold) a Workspace for these.
    LIVE_STATUSES = (Status.PROVISIONING, Status.READY, Status.FAILED, Status.DELETING)

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    cluster = models.ForeignKey(Cluster, on_delete=models.PROTECT, related_name="deployments")
    source = models.CharField(max_length=12, choices=Source.choices, default=Source.PRESET)
    managed = models.BooleanField(
        default=True,
        help_text="Launched or taken over by kaitoweb. A Workspace found in the cluster stays "
        "read-only until an operator takes it over.",
    )

    # What was asked
    name = models.CharField(max_length=63)
    namespace = models.CharField(max_length=63, default="default")
    kaito_model = models.ForeignKey(
        KaitoModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="deployments"
    )
    model_name = models.CharField(
        max_length=200, help_text="inference.preset.name, or the model a pod template serves."
    )
    vm_size = models.CharField("VM size", max_length=60)
    node_count = models.PositiveSmallIntegerField(default=1)
    runtime = models.CharField(max_length=12, choices=Runtime.choices, default=Runtime.VLLM)
    inference_settings = models.JSONField(default=dict, blank=True)
    load_balancer = models.BooleanField(default=False)
    manifests = models.TextField(blank=True, help_text="The YAML documents kaitoweb applies.")
    secret_values = EncryptedTextField(
        blank=True,
        help_text="The Secrets' values (JSON), encrypted, held only until the launch applied "
        "them; the manifests show them masked.",
    )
    uses_hf_secret = models.BooleanField(default=False)

    # What the cluster says
    status = models.CharField(
        max_length=12, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    status_changed_at = models.DateTimeField(default=timezone.now)
    workspace_uid = models.CharField(max_length=64, blank=True)
    workspace_state = models.CharField(max_length=30, blank=True, help_text="KAITO status.state")
    conditions = models.JSONField(default=list, blank=True)
    events = models.JSONField(default=list, blank=True)
    worker_nodes = models.JSONField(default=list, blank=True)
    nodeclaims = models.JSONField(default=list, blank=True)
    timeline = models.JSONField(default=list, blank=True)
    log_tail = models.TextField(blank=True)
    endpoint_service = models.CharField(max_length=63, blank=True)
    service_type = models.CharField(max_length=20, blank=True)
    peak_tokens_per_minute = models.PositiveBigIntegerField(null=True, blank=True)
    failure_reason = models.CharField(max_length=30, blank=True)
    failure_message = models.TextField(blank=True)
    next_step = models.TextField(blank=True)
    stuck = models.BooleanField(default=False)
    stuck_reason = models.TextField(blank=True)
    nodes_left = models.JSONField(
        default=list, blank=True, help_text="Nodes still present after teardown (still billing)."
    )

    # Bookkeeping
    launched_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    launch_requested_at = models.DateTimeField(null=True, blank=True)
    launched_at = models.DateTimeField(null=True, blank=True, help_text="The Workspace was made.")
    ready_at = models.DateTimeField(null=True, blank=True)
    teardown_requested_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    sync_error = models.TextField(blank=True)
    follow_token = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # At most one live row per Workspace: a second launch or a rediscovery converges on it.
            models.UniqueConstraint(
                fields=["cluster", "namespace", "name"],
                condition=~models.Q(status__in=["deleted", "orphaned"]),
                name="deployment_one_live_row_per_workspace",
            )
        ]

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    def get_absolute_url(self) -> str:
        return reverse("deployments:detail", kwargs={"pk": self.pk})

    @property
    def settled(self) -> bool:
        return self.status in self.SETTLED_STATUSES

    @property
    def is_gone(self) -> bool:
        return self.status in self.GONE_STATUSES

    @property
    def target(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def configmap_name(self) -> str:
        return f"{self.name}-inference-config"

    @property
    def secret_name(self) -> str:
        return f"{self.name}-hf-token"

    def condition(self, condition_type: str) -> dict[str, str] | None:
        return next((c for c in self.conditions if c.get("type") == condition_type), None)

    @property
    def chips(self) -> list[tuple[str, str]]:
        """(condition, "True"/"False"/"Unknown"/"") for KAITO's four printer columns."""
        return [(t, (self.condition(t) or {}).get("status", "")) for t in CHIP_CONDITIONS]

    # ----------------------------------------------------------------- cost
    def vm(self) -> GpuVmSize | None:
        return GpuVmSize.objects.filter(sku=self.vm_size).first()

    @property
    def billed_nodes(self) -> int:
        return len(self.worker_nodes) or self.node_count

    def price_per_hour(self, vm: GpuVmSize | None = None) -> Decimal | None:
        vm = vm if vm is not None else self.vm()
        if vm is None or vm.price_per_hour is None:
            return None
        return vm.price_per_hour * self.billed_nodes

    def billing_hours(self, now: datetime | None = None) -> float:
        if self.launched_at is None:
            return 0.0
        end = self.deleted_at or now or timezone.now()
        return max(0.0, (end - self.launched_at).total_seconds() / 3600)

    def cost_so_far(
        self, vm: GpuVmSize | None = None, now: datetime | None = None
    ) -> Decimal | None:
        price = self.price_per_hour(vm)
        if price is None:
            return None
        return (price * Decimal(str(round(self.billing_hours(now), 6)))).quantize(Decimal("0.01"))
