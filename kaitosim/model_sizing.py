"""What a preset needs on a VM size: KAITO's node estimate, vLLM's context and KV cache, OOM or not.

The arithmetic is the project's single sizing module, ``apps/catalog/sizing.py`` (pure Python),
so a "fits" in the catalog pages means the simulator does not OOM, and vice versa.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

from kaitosim.reference import GpuSku, ModelPreset

try:
    from apps.catalog.sizing import GIB, ModelSpec, VmSpec, size_on, usable_gib_per_gpu
except ModuleNotFoundError:  # kaitosim started from outside the project root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from apps.catalog.sizing import GIB, ModelSpec, VmSpec, size_on, usable_gib_per_gpu

DEFAULT_CONTEXT = 2048
GPU_MEMORY_UTILIZATION = 0.9


@dataclass(frozen=True)
class DeploymentPlan:
    """How KAITO would run a preset on an instance type."""

    fits: bool
    reason: str
    nodes: int
    gpus_per_node: int
    weights_gib: float
    max_model_len: int
    kv_cache_tokens: int
    kv_cache_gib: float
    max_concurrency: int
    required_gib: float
    available_gib: float

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus_per_node


def vm_spec(sku: GpuSku) -> VmSpec:
    return VmSpec(sku.sku, sku.gpu_count, sku.gpu_memory_gib, sku.price_per_hour, sku.cuda_cc)


def plan_deployment(
    preset: ModelPreset, sku: GpuSku, configured_max_model_len: int | None
) -> DeploymentPlan:
    """Size ``preset`` on ``sku`` as KAITO's NodesEstimator and vLLM's startup would.

    ``configured_max_model_len`` is ``vllm.max-model-len`` from the inference ConfigMap, if any;
    without it KAITO sizes nodes for 2048 tokens and vLLM takes the longest context that fits.
    """
    entry = preset.catalog_entry
    vm = vm_spec(sku)
    if entry is None or not sku.is_gpu:
        return DeploymentPlan(
            False, "no sizing facts", 1, max(sku.gpu_count, 0), 0.0, 0, 0, 0.0, 0, 0.0, 0.0
        )
    model = ModelSpec.from_catalog_entry(entry)
    wanted = configured_max_model_len or DEFAULT_CONTEXT
    sizing = size_on(model, vm, max_tokens=wanted, utilization=GPU_MEMORY_UTILIZATION)
    nodes = max(1, sizing.nodes if sizing.fits else math.ceil(max(sizing.gpus, 1) / sku.gpu_count))
    if not model.splittable:
        nodes = 1
    gpus_used = nodes * sku.gpu_count if model.splittable else 1
    usable = gpus_used * usable_gib_per_gpu(vm, GPU_MEMORY_UTILIZATION)
    free_gib = usable - model.weights_loaded_gib
    kv_tokens = max(0, math.floor(free_gib * GIB / model.kv_bytes_per_token)) if free_gib > 0 else 0
    if configured_max_model_len:
        max_model_len = min(configured_max_model_len, model.token_limit)
    else:
        max_model_len = max(0, min(model.token_limit, kv_tokens))
    required = model.weights_loaded_gib + model.kv_bytes_per_token * max(max_model_len, 1) / GIB
    fits = sizing.fits and kv_tokens >= max(max_model_len, 1)
    reason = (
        sizing.reason
        if not sizing.fits
        else ("fits" if fits else "KV cache too small for max-model-len")
    )
    concurrency = max(1, kv_tokens // max(max_model_len, 1)) if fits else 0
    return DeploymentPlan(
        fits=fits,
        reason=reason,
        nodes=nodes,
        gpus_per_node=sku.gpu_count,
        weights_gib=model.weights_loaded_gib,
        max_model_len=max_model_len,
        kv_cache_tokens=kv_tokens,
        kv_cache_gib=max(0.0, free_gib),
        max_concurrency=concurrency,
        required_gib=required,
        available_gib=usable + gpus_used * 2.3,
    )
