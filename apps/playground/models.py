"""Targets (where to send a prompt), A/B runs and their samples (one measured request each).

A Target is reached by a direct URL, or, for a KAITO deployment kaitoweb launched or took over,
through its cluster's API server: ``deployment`` set, the URL, auth and TLS are resolved at
request time from the cluster's credentials (`Target.endpoint`), so a rotated kubeconfig or a
refreshed token is picked up by the next request. ``kind`` says which wire format to speak.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse

from apps.catalog.models import FoundryModel, GpuVmSize, KaitoModel
from apps.clusters import kube
from apps.playground import clients
from apps.playground.costs import CostBasis
from kaitoweb import urlcheck
from kaitoweb.secrets import EncryptedTextField

if TYPE_CHECKING:
    from apps.deployments.models import Deployment


def validate_endpoint_url(value: str) -> None:
    """http(s) and a host. Unlike URLField, a bare in-cluster service name (http://phi-4) is
    fine: Kubernetes DNS resolves it inside the namespace."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("Enter an http:// or https:// URL with a host name.")
    # Cloud metadata and link-local addresses, by literal and by DNS, unless an admin allows
    # them (kaitoweb/urlcheck.py).
    try:
        urlcheck.endpoint_url_check(value)
    except urlcheck.UrlRefused as exc:
        raise ValidationError(str(exc)) from None


class Target(models.Model):
    class Kind(models.TextChoices):
        FOUNDRY_OPENAI = clients.FOUNDRY_OPENAI, "Foundry: OpenAI v1 API"
        FOUNDRY_INFERENCE = clients.FOUNDRY_INFERENCE, "Foundry: Azure AI Model Inference API"
        KAITO_VLLM = clients.KAITO_VLLM, "KAITO: vLLM endpoint"
        KAITO_TRANSFORMERS_CHAT = (
            clients.KAITO_TRANSFORMERS_CHAT,
            "KAITO: transformers /chat (not streamed: E2E only)",
        )
        OPENAI_COMPATIBLE = clients.OPENAI_COMPATIBLE, "Any OpenAI-compatible endpoint"

    class Auth(models.TextChoices):
        NONE = clients.AUTH_NONE, "None"
        API_KEY = clients.AUTH_API_KEY, "API key"
        ENTRA_ID = clients.AUTH_ENTRA_ID, "Entra ID (DefaultAzureCredential)"

    class DeploymentType(models.TextChoices):
        GLOBAL = "global", "Global Standard"
        DATA_ZONE = "data_zone", "Data Zone"
        REGIONAL = "regional", "Regional (Standard)"

    class CostBasisKind(models.TextChoices):
        PER_TOKEN = CostBasis.PER_TOKEN, "Per token (Foundry)"
        PER_HOUR = CostBasis.PER_HOUR, "Per node-hour (KAITO)"
        NONE = CostBasis.NONE, "Not priced"

    class ProcessingScope(models.TextChoices):
        IN_CLUSTER = "in_cluster", "In your cluster's region"
        FOUNDRY_GLOBAL = "foundry_global", "Foundry Global: any Azure region with the model"
        FOUNDRY_DATA_ZONE = "foundry_data_zone", "Foundry Data Zone: within the US or EU zone"
        FOUNDRY_REGIONAL = "foundry_regional", "Foundry Regional: the deployment's region"
        EXTERNAL = "external", "Another provider's service"

    FOUNDRY_KINDS = (Kind.FOUNDRY_OPENAI, Kind.FOUNDRY_INFERENCE)
    KAITO_KINDS = (Kind.KAITO_VLLM, Kind.KAITO_TRANSFORMERS_CHAT)

    name = models.CharField(max_length=100, unique=True)
    # Deleting a target that has measured anything archives it instead (services.target_delete):
    # its samples and votes keep pointing at it, so an experiment's results never merge two
    # deleted targets. Archived targets are hidden from lists and pickers.
    archived_at = models.DateTimeField(null=True, blank=True, editable=False)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    deployment = models.ForeignKey(
        "deployments.Deployment",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="playground_targets",
        verbose_name="KAITO deployment",
        help_text="A ready deployment, reached through the API server's service proxy with the "
        "cluster's credentials. Empty: use the endpoint URL.",
    )
    endpoint_url = models.CharField(
        "endpoint URL",
        max_length=500,
        blank=True,
        validators=[validate_endpoint_url],
        help_text="Foundry: https://<resource>.openai.azure.com/openai/v1/ (OpenAI v1) or "
        "https://<resource>.services.ai.azure.com/models (Model Inference). KAITO: the "
        "inference service, e.g. http://workspace-phi-4.default.svc (in-cluster) or its "
        "load balancer. OpenAI-compatible: the base URL you would give the openai SDK. Not "
        "used when a KAITO deployment is picked.",
    )
    model_name = models.CharField(
        "model / deployment name",
        max_length=200,
        blank=True,
        help_text="Foundry: the deployment name. vLLM: the served model name (KAITO serves the "
        "preset name, e.g. phi-4-mini-instruct). Not used by transformers /chat.",
    )
    auth = models.CharField(max_length=12, choices=Auth.choices, default=Auth.NONE)
    api_key = EncryptedTextField(blank=True, help_text="Encrypted at rest with ENCRYPTION_KEYS.")
    api_version = models.CharField(
        "API version",
        max_length=40,
        default=clients.INFERENCE_API_VERSION,
        help_text="Azure AI Model Inference API only.",
    )
    ca_certificate = models.TextField(
        "CA certificate (PEM)",
        blank=True,
        help_text="Trust this CA for the endpoint's TLS certificate: an internal load balancer "
        "with a private CA, or the Kubernetes API's service proxy. Empty: the system's CAs.",
    )
    deployment_type = models.CharField(
        "Foundry deployment type",
        max_length=12,
        choices=DeploymentType.choices,
        blank=True,
    )
    region = models.CharField(
        max_length=40, blank=True, help_text="Foundry resource region, or the cluster's region."
    )
    foundry_model = models.ForeignKey(
        FoundryModel,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="playground_targets",
        verbose_name="Foundry model",
        help_text="The catalog model this Foundry deployment serves (prices, licence).",
    )
    kaito_model = models.ForeignKey(
        KaitoModel,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="playground_targets",
        verbose_name="KAITO model",
        help_text="The catalog model this KAITO endpoint serves (licence).",
    )

    # Cost basis
    cost_basis = models.CharField(
        max_length=10, choices=CostBasisKind.choices, default=CostBasisKind.NONE
    )
    input_per_1m = models.DecimalField(
        "input $/1M tokens", max_digits=10, decimal_places=4, null=True, blank=True
    )
    output_per_1m = models.DecimalField(
        "output $/1M tokens", max_digits=10, decimal_places=4, null=True, blank=True
    )
    price_factor = models.DecimalField(
        "deployment type price factor",
        max_digits=5,
        decimal_places=3,
        default=Decimal(1),
        help_text="Global 1.0, Data Zone 1.1; Regional is per model.",
    )
    vm_size = models.ForeignKey(
        GpuVmSize,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="playground_targets",
        verbose_name="VM size",
    )
    price_per_hour = models.DecimalField(
        "$/hour per node", max_digits=10, decimal_places=4, null=True, blank=True
    )
    node_count = models.PositiveSmallIntegerField("nodes", default=1)

    # Compliance profile
    processing_scope = models.CharField(
        "where prompts are processed", max_length=20, choices=ProcessingScope.choices, blank=True
    )
    data_leaves_network = models.BooleanField(
        "data leaves your network",
        default=False,
        help_text="Prompts and answers travel to a service outside your own network.",
    )
    abuse_monitoring_exempt = models.BooleanField(
        "approved for modified abuse monitoring",
        default=False,
        help_text="Foundry: Microsoft approved your subscription, so prompts are not retained "
        "for abuse monitoring.",
    )
    provider_retention = models.TextField("provider-side retention", blank=True)
    certifications = models.TextField("certifications and terms", blank=True)
    model_license = models.CharField("model licence", max_length=200, blank=True)
    compliance_notes = models.TextField("notes", blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("playground:target_edit", kwargs={"pk": self.pk})

    @property
    def is_foundry(self) -> bool:
        return self.kind in self.FOUNDRY_KINDS

    @property
    def is_kaito(self) -> bool:
        return self.kind in self.KAITO_KINDS

    @property
    def streamed(self) -> bool:
        return self.kind in clients.STREAMING_KINDS

    def clean(self) -> None:
        if self.deployment_id is None and not self.endpoint_url.strip():
            raise ValidationError({"endpoint_url": "Enter the endpoint URL or pick a deployment."})
        if self.deployment_id is not None and not self.is_kaito:
            raise ValidationError({"kind": "A KAITO deployment is reached as a KAITO kind."})

    @property
    def proxy_service(self) -> tuple[str, str]:
        """(namespace, service) of the linked deployment's inference service."""
        assert self.deployment is not None
        return self.deployment.namespace, self.deployment.endpoint_service or self.deployment.name

    @property
    def endpoint_url_resolved(self) -> str:
        """Where requests go: a linked deployment's service proxy URL (for display: the API
        server as the cluster row shows it), else the endpoint URL."""
        if self.deployment is None:
            return self.endpoint_url
        from apps.deployments.selectors import proxy_url

        return proxy_url(self.deployment, "").rstrip("/") or f"(deployment {self.deployment})"

    def endpoint(self) -> clients.Endpoint:
        """How to reach the target now. For a linked deployment this reads the cluster's
        credentials (and may run a kubeconfig's exec plugin): call it off the event loop."""
        if self.deployment is not None:
            return self._deployment_endpoint(self.deployment)
        try:  # again at request time: the name may resolve elsewhere now (DNS rebinding)
            urlcheck.endpoint_url_check(self.endpoint_url)
        except urlcheck.UrlRefused as exc:
            raise clients.ClientConfigError(f"Endpoint URL refused: {exc}") from None
        return clients.Endpoint(
            kind=self.kind,
            url=self.endpoint_url_resolved,
            model=self.model_name,
            auth=self.auth,
            api_key=self.api_key or "",
            api_version=self.api_version or clients.INFERENCE_API_VERSION,
            ca_pem=self.ca_certificate,
        )

    def _deployment_endpoint(self, deployment: Deployment) -> clients.Endpoint:
        if deployment.status != deployment.Status.READY:
            raise clients.ClientConfigError(
                f"The deployment {deployment} is {deployment.get_status_display().lower()}, "
                "not ready."
            )
        namespace, service = self.proxy_service
        try:
            proxy = kube.proxy_http_settings(
                deployment.cluster.credentials, namespace=namespace, service=service
            )
        except kube.KubeError as exc:
            raise clients.ClientConfigError(
                f"Cluster {deployment.cluster}: {exc.message}"
            ) from None
        return clients.Endpoint(
            kind=self.kind,
            url=proxy.base_url,
            model=self.model_name or deployment.model_name,
            auth=clients.AUTH_NONE,
            extra_headers=proxy.headers,
            tls=proxy.verify,
        )

    def cost(self) -> CostBasis:
        return CostBasis(
            basis=self.cost_basis,
            input_per_1m=self.input_per_1m,
            output_per_1m=self.output_per_1m,
            factor=self.price_factor if self.price_factor is not None else Decimal(1),
            price_per_hour=self.price_per_hour,
            nodes=self.node_count or 1,
        )

    def compliance(self) -> dict[str, Any]:
        return {
            "processing_scope": self.processing_scope,
            "processing_scope_label": self.get_processing_scope_display()
            if self.processing_scope
            else "",
            "region": self.region,
            "data_leaves_network": self.data_leaves_network,
            "abuse_monitoring_exempt": self.abuse_monitoring_exempt,
            "provider_retention": self.provider_retention,
            "certifications": self.certifications,
            "model_license": self.model_license,
            "notes": self.compliance_notes,
        }

    def snapshot(self) -> dict[str, Any]:
        """What a sample keeps of its target, so history survives edits and deletion."""
        return {
            "id": self.pk,
            "name": self.name,
            "kind": self.kind,
            "kind_label": self.get_kind_display(),
            "streamed": self.streamed,
            "endpoint_url": self.endpoint_url_resolved,
            "model_name": self.model_name,
            "auth": self.auth,
            "deployment_type": self.deployment_type,
            "deployment_type_label": self.get_deployment_type_display()
            if self.deployment_type
            else "",
            "region": self.region,
            "vm_size": self.vm_size.sku if self.vm_size else "",
            "deployment": None
            if self.deployment is None
            else {
                "id": self.deployment.pk,
                "name": str(self.deployment),
                "cluster": self.deployment.cluster.name,
                "peak_tokens_per_minute": self.deployment.peak_tokens_per_minute,
            },
            "cost": self.cost().as_json(),
            "compliance": self.compliance(),
        }


class ABRun(models.Model):
    """One prompt sent to two targets at the same moment; a background job row."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    FINISHED = (Status.DONE, Status.FAILED)

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="ab_runs",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    system_prompt = models.TextField(blank=True)
    prompt = models.TextField()
    max_tokens = models.PositiveIntegerField(default=256)
    temperature = models.FloatField(null=True, blank=True)
    top_p = models.FloatField("top_p", null=True, blank=True)
    seed = models.BigIntegerField(null=True, blank=True)
    timeout_s = models.FloatField("timeout (s)", default=60)
    note = models.TextField(blank=True)
    start_skew_ms = models.FloatField(
        null=True, blank=True, help_text="How far apart the two requests were sent."
    )
    error = models.TextField(blank=True, help_text="Why the run as a whole failed.")
    rerun_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "A/B run"

    def __str__(self) -> str:
        return f"A/B run {self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("playground:run_detail", kwargs={"pk": self.pk})

    @property
    def finished(self) -> bool:
        return self.status in self.FINISHED

    def chat_request(self) -> clients.ChatRequest:
        return clients.ChatRequest(
            prompt=self.prompt,
            system_prompt=self.system_prompt,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
        )


class Sample(models.Model):
    """One measured request: a side of an A/B run."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        STREAMING = "streaming", "Streaming"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped (cancelled)"

    run = models.ForeignKey(
        ABRun, null=True, blank=True, on_delete=models.CASCADE, related_name="samples"
    )
    side = models.CharField(max_length=1, choices=[("a", "A"), ("b", "B")], blank=True)
    # An experiment's sample: which prompt, which repetition, against which of its targets.
    experiment = models.ForeignKey(
        "Experiment", null=True, blank=True, on_delete=models.CASCADE, related_name="samples"
    )
    prompt_index = models.PositiveIntegerField(null=True, blank=True)
    repetition = models.PositiveIntegerField(null=True, blank=True)
    prompt_sha256 = models.CharField(max_length=64, blank=True)
    text_sha256 = models.CharField("answer SHA-256", max_length=64, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    target = models.ForeignKey(
        Target, null=True, blank=True, on_delete=models.SET_NULL, related_name="samples"
    )
    target_snapshot = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    text = models.TextField(blank=True)
    streamed = models.BooleanField(default=True)
    ttft_ms = models.FloatField("TTFT (ms)", null=True, blank=True)
    itl_ms = models.JSONField("inter-token latencies (ms)", default=list, blank=True)
    itl_mean_ms = models.FloatField("mean ITL (ms)", null=True, blank=True)
    itl_p95_ms = models.FloatField("p95 ITL (ms)", null=True, blank=True)
    e2e_ms = models.FloatField("E2E (ms)", null=True, blank=True)
    connect_ms = models.FloatField("connection set-up (ms)", null=True, blank=True)
    output_tokens_per_s = models.FloatField(null=True, blank=True)
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    reasoning_tokens = models.PositiveIntegerField(null=True, blank=True)
    tokens_estimated = models.BooleanField(default=False)
    chunks = models.PositiveIntegerField(default=0)
    finish_reason = models.CharField(max_length=40, blank=True)
    cost_usd = models.DecimalField(max_digits=18, decimal_places=12, null=True, blank=True)
    cost_per_1m_usd = models.DecimalField(
        "cost per 1M tokens (input + output)",
        max_digits=18,
        decimal_places=6,
        null=True,
        blank=True,
    )
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error_kind = models.CharField(max_length=20, blank=True)
    error_message = models.TextField(blank=True)
    retry_after_s = models.FloatField(null=True, blank=True)
    claim = models.CharField(
        max_length=64, blank=True, help_text="The task execution measuring it (its fence)."
    )
    heartbeat_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Refreshed while a task measures it; a stale one was left by a dead task.",
    )
    attempts = models.PositiveSmallIntegerField(
        default=0, help_text="Requests sent for it (more than one after 429 answers)."
    )

    class Meta:
        ordering = ["run", "side"]
        constraints = [
            models.UniqueConstraint(fields=["run", "side"], name="playground_one_sample_per_side"),
            # The idempotency key: a redelivered task finds its sample, never records a second.
            models.UniqueConstraint(
                fields=["experiment", "target", "prompt_index", "repetition"],
                name="playground_one_sample_per_experiment_slot",
            ),
        ]
        indexes = [models.Index(fields=["experiment", "target", "status"])]

    def __str__(self) -> str:
        if self.experiment_id:
            return f"experiment {self.experiment_id} prompt {self.prompt_index}"
        return f"{self.run} side {self.side.upper()}"

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)

    @property
    def cost_basis(self) -> CostBasis:
        return CostBasis.from_json(self.target_snapshot.get("cost") or {})

    @property
    def compliance(self) -> dict[str, Any]:
        return dict(self.target_snapshot.get("compliance") or {})


class Experiment(models.Model):
    """A prompt set sent to two or more targets, each prompt several times, at a concurrency per
    target; a background job row whose samples are measured by Celery tasks, one per target
    chunk. The prompt texts live in ``prompts`` while it runs; the storage policy decides what
    stays afterwards (see `experiments.experiment_finish`)."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        CANCELLED = "cancelled", "Cancelled"
        FAILED = "failed", "Failed"

    class StoragePolicy(models.TextChoices):
        TEXT = "text", "Keep prompts and answers"
        HASHES = "hashes", "Keep only SHA-256 hashes"
        NOTHING = "nothing", "Keep nothing beyond the figures"

    FINISHED = (Status.DONE, Status.CANCELLED, Status.FAILED)

    name = models.CharField(max_length=200)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="experiments",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    targets = models.ManyToManyField(Target, related_name="experiments")
    prompt_set_name = models.CharField(max_length=200)
    prompts = models.JSONField(
        default=list, help_text="[{prompt, system, sha256}], trimmed by the storage policy."
    )
    repetitions = models.PositiveIntegerField(default=1)
    concurrency = models.PositiveIntegerField("concurrency per target", default=4)
    max_tokens = models.PositiveIntegerField(default=256)
    timeout_s = models.FloatField("timeout per request (s)", default=60)
    storage_policy = models.CharField(
        max_length=10, choices=StoragePolicy.choices, default=StoragePolicy.TEXT
    )
    error = models.TextField(blank=True)
    chains = models.JSONField(
        default=dict,
        blank=True,
        help_text="Per target id: its task chain's token and runner, and restart counts "
        "(see experiments.experiments_resume).",
    )

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name or f"Experiment {self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("playground:experiment_detail", kwargs={"pk": self.pk})

    @property
    def finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def keeps_text(self) -> bool:
        return self.storage_policy == self.StoragePolicy.TEXT

    @property
    def keeps_hashes(self) -> bool:
        return self.storage_policy in (self.StoragePolicy.TEXT, self.StoragePolicy.HASHES)


class PreferenceVote(models.Model):
    """A person's preferred answer to one prompt of an experiment (no target: a tie)."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="votes")
    prompt_index = models.PositiveIntegerField()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    target = models.ForeignKey(Target, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "prompt_index", "user"], name="playground_one_vote_each"
            )
        ]

    def __str__(self) -> str:
        return f"vote on prompt {self.prompt_index} of experiment {self.experiment_id}"


class ApiToken(models.Model):
    """A user's token for the experiments API; only its SHA-256 is stored."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    token_sha256 = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=12, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"
