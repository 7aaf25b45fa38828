"""The unified catalog: model families, KAITO models, Foundry models and GPU VM sizes.

Every seeded table keeps `seed`, the values `load_catalog` last wrote, so a re-run can tell an
admin's edit (the value differs from the seed) from a stale seed value, and keep the edit.
"""

from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.urls import reverse

from apps.catalog.sizing import ModelSpec, VmSpec


class Lifecycle(models.TextChoices):
    GA = "ga", "GA"
    PREVIEW = "preview", "Preview"
    DEPRECATED = "deprecated", "Deprecated"
    RETIRED = "retired", "Retired"


class PriceConfidence(models.TextChoices):
    HIGH = "high", "High (several public sources agree)"
    LOW = "low", "Low (one source or an estimate)"
    NONE = "none", "None (no public price)"


class Seeded(models.Model):
    seed = models.JSONField(
        default=dict,
        blank=True,
        editable=False,
        help_text="Values as load_catalog last wrote them (tells admin edits apart).",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class ModelFamily(Seeded):
    key = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=80)
    developer = models.CharField(max_length=120, blank=True)
    strengths = models.TextField(blank=True, help_text="What this family is good for.")
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "model families"

    def __str__(self) -> str:
        return self.name


class KaitoModel(Seeded):
    """A model KAITO can serve: a curated preset, or any Hugging Face model an admin adds."""

    class Source(models.TextChoices):
        CATALOG = "catalog", "KAITO model catalog"
        EXTRA = "extra", "KAITO preset (facts compiled from Hugging Face)"
        CUSTOM = "custom", "Added by an admin (best-effort Hugging Face model)"

    model_id = models.CharField(
        "Hugging Face id",
        max_length=200,
        unique=True,
        help_text="org/name on Hugging Face; also a valid inference.preset.name since KAITO v0.9.",
    )
    preset_name = models.CharField(
        "legacy preset name",
        max_length=100,
        unique=True,
        null=True,
        blank=True,
        help_text="KAITO's short preset name (e.g. phi-4-mini-instruct), an alias of the id.",
    )
    family = models.ForeignKey(
        ModelFamily, null=True, blank=True, on_delete=models.SET_NULL, related_name="kaito_models"
    )
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.CUSTOM)
    lifecycle = models.CharField(max_length=12, choices=Lifecycle.choices, default=Lifecycle.GA)
    description_url = models.URLField(blank=True)
    version_url = models.URLField(blank=True, help_text="The pinned Hugging Face commit.")
    license = models.CharField(max_length=80, blank=True)
    pipeline_tag = models.CharField(max_length=60, blank=True)
    architectures = models.JSONField(default=list, blank=True)
    weights_gib = models.FloatField("weight size (GiB)")
    token_limit = models.PositiveIntegerField("context length (tokens)")
    hidden_size = models.PositiveIntegerField()
    num_hidden_layers = models.PositiveIntegerField()
    num_attention_heads = models.PositiveIntegerField()
    num_kv_heads = models.PositiveIntegerField("KV heads", null=True, blank=True)
    head_dim = models.PositiveIntegerField(null=True, blank=True)
    kv_lora_rank = models.PositiveIntegerField(
        "KV LoRA rank", null=True, blank=True, help_text="Multi-latent attention (DeepSeek style)."
    )
    qk_rope_head_dim = models.PositiveIntegerField(null=True, blank=True)
    quant_method = models.CharField("quantization", max_length=40, blank=True)
    quant_bits = models.PositiveSmallIntegerField(null=True, blank=True)
    transformers_runtime = models.BooleanField(
        default=False,
        help_text="KAITO ships an image with the transformers runtime too "
        "(annotation kaito.sh/runtime: transformers); every model runs on vLLM.",
    )
    download_at_runtime = models.BooleanField(
        default=True, help_text="Weights are downloaded from Hugging Face when the pod starts."
    )
    download_auth_required = models.BooleanField(
        default=False,
        help_text="KAITO requires presetOptions.modelAccessSecret (an HF_TOKEN secret).",
    )
    gated = models.BooleanField(
        default=False, help_text="Hugging Face needs an accepted licence and a token."
    )
    image_tag = models.CharField(max_length=40, blank=True)
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["model_id"]
        verbose_name = "KAITO model"

    def __str__(self) -> str:
        return self.preset_name or self.model_id

    def get_absolute_url(self) -> str:
        return reverse("catalog:kaito_detail", kwargs={"model_id": self.model_id})

    @property
    def display_name(self) -> str:
        return self.model_id.split("/", 1)[-1]

    @property
    def preset_reference(self) -> str:
        """What to write as inference.preset.name: the short name where KAITO has one."""
        return self.preset_name or self.model_id

    @property
    def runtimes(self) -> list[str]:
        return ["vllm", "transformers"] if self.transformers_runtime else ["vllm"]

    def sizing_spec(self) -> ModelSpec:
        return ModelSpec(
            name=self.model_id,
            weights_gib=self.weights_gib,
            token_limit=self.token_limit,
            num_hidden_layers=self.num_hidden_layers,
            hidden_size=self.hidden_size,
            num_attention_heads=self.num_attention_heads,
            num_kv_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            kv_lora_rank=self.kv_lora_rank,
            qk_rope_head_dim=self.qk_rope_head_dim,
            splittable=not any(str(a).startswith("Falcon") for a in self.architectures),
        )


class FoundryModel(Seeded):
    """A model sold pay-per-token in Microsoft Foundry (Global Standard prices)."""

    name = models.CharField(
        max_length=120, unique=True, help_text="Model / deployment name in Foundry."
    )
    provider = models.CharField(max_length=120)
    family = models.ForeignKey(
        ModelFamily,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="foundry_models",
    )
    kaito_model = models.ForeignKey(
        KaitoModel,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="foundry_models",
        help_text="The KAITO preset of the same model, where one exists.",
    )
    input_per_1m = models.DecimalField(
        "input $/1M tokens", max_digits=10, decimal_places=4, null=True, blank=True
    )
    output_per_1m = models.DecimalField(
        "output $/1M tokens", max_digits=10, decimal_places=4, null=True, blank=True
    )
    data_zone_factor = models.DecimalField(
        "Data Zone price factor",
        max_digits=5,
        decimal_places=3,
        null=True,
        blank=True,
        help_text="Multiplier on the Global price for Data Zone deployments.",
    )
    regional_factor = models.DecimalField(
        "Regional price factor",
        max_digits=5,
        decimal_places=3,
        null=True,
        blank=True,
        help_text="Multiplier for Regional (Standard) deployments; per model, often unknown.",
    )
    currency = models.CharField(max_length=3, default="USD")
    price_as_of = models.DateField(null=True, blank=True)
    lifecycle = models.CharField(max_length=12, choices=Lifecycle.choices, default=Lifecycle.GA)
    deprecated_on = models.DateField(null=True, blank=True)
    retired_on = models.DateField(null=True, blank=True)
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "Foundry model"

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("catalog:foundry_detail", kwargs={"name": self.name})

    @property
    def sold_by_azure(self) -> bool:
        return "sold by azure" in self.provider.lower()

    def price_factor(self, deployment_type: str) -> Decimal | None:
        if deployment_type == "global":
            return Decimal(1)
        if deployment_type == "data_zone":
            return self.data_zone_factor
        if deployment_type == "regional":
            return self.regional_factor
        raise ValueError(f"unknown deployment type {deployment_type!r}")

    def prices_for(self, deployment_type: str) -> tuple[Decimal, Decimal] | None:
        """(input, output) $/1M tokens for a deployment type; None where unknown."""
        factor = self.price_factor(deployment_type)
        if factor is None or self.input_per_1m is None or self.output_per_1m is None:
            return None
        return (self.input_per_1m * factor, self.output_per_1m * factor)


class GpuVmSize(Seeded):
    sku = models.CharField("VM size", max_length=60, unique=True)
    arm_name = models.CharField(
        "Azure ARM name", max_length=60, blank=True, help_text="Where Azure spells it otherwise."
    )
    gpu_model = models.CharField(max_length=60, blank=True)
    gpu_count = models.PositiveSmallIntegerField(default=0)
    gpu_memory_gib = models.FloatField("GPU memory (GiB, whole VM)", default=0)
    cuda_cc = models.FloatField("CUDA compute capability", null=True, blank=True)
    nvme = models.BooleanField("local NVMe", default=False)
    price_per_hour = models.DecimalField(
        "$/hour", max_digits=10, decimal_places=4, null=True, blank=True
    )
    price_confidence = models.CharField(
        max_length=8, choices=PriceConfidence.choices, default=PriceConfidence.NONE
    )
    price_as_of = models.DateField(null=True, blank=True)
    region = models.CharField(max_length=40, default="eastus")
    currency = models.CharField(max_length=3, default="USD")
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["gpu_count", "gpu_memory_gib", "sku"]
        verbose_name = "GPU VM size"

    def __str__(self) -> str:
        return self.sku

    @property
    def is_gpu(self) -> bool:
        return self.gpu_count > 0

    @property
    def gpu_memory_per_gpu_gib(self) -> float:
        return self.gpu_memory_gib / self.gpu_count if self.gpu_count else 0.0

    def sizing_spec(self) -> VmSpec:
        return VmSpec(
            sku=self.sku,
            gpu_count=self.gpu_count,
            gpu_memory_gib=self.gpu_memory_gib,
            price_per_hour=None if self.price_per_hour is None else float(self.price_per_hour),
            cuda_cc=self.cuda_cc,
        )
