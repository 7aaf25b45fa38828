"""KAITO's GPU sizing formula for vLLM inference, as restated in reference/kaito/SIZING.md.

Pure Python on purpose (no Django import): the catalog pages, the launch form and the KAITO
simulator all size a model the same way, so a "fits" on a page means the simulator will not OOM.

Memory per GPU, in GiB (KAITO measured these on vLLM 0.10):
    weights       modelFileSize x 1.02, split evenly over the tensor-parallel GPUs
    activations   1.7 per GPU
    overhead      0.6 per GPU (CUDA context, driver)
    KV cache      max_tokens x bytes_per_token, split over the GPUs

GPUs needed: the least n with n x gpu_mem x u >= weights + 2.3 n + kv(max_tokens).
Nodes: ceil(n / gpus_per_node). Longest context on those nodes (all their GPUs):
    (nodes x gpus_per_node x (gpu_mem x u - 2.3) - weights) / bytes_per_token, capped at the
    model's own token limit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GIB = 1024**3
WEIGHT_FACTOR = 1.02
ACTIVATIONS_GIB = 1.7
OVERHEAD_GIB = 0.6
PER_GPU_GIB = ACTIVATIONS_GIB + OVERHEAD_GIB
DEFAULT_MAX_TOKENS = 2048
DEFAULT_UTILIZATION = 0.9
KV_DTYPE_BYTES = 2
MIN_CUDA_CC = 8.0

_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(Ki|Mi|Gi|Ti|K|M|G|T)?i?B?\s*$")
_SIZE_UNITS_GIB = {
    None: 1 / GIB,
    "Ki": 1 / 1024**2,
    "Mi": 1 / 1024,
    "Gi": 1.0,
    "Ti": 1024.0,
    "K": 1e3 / GIB,
    "M": 1e6 / GIB,
    "G": 1e9 / GIB,
    "T": 1e12 / GIB,
}


def parse_size_gib(text: str | float | int) -> float:
    """'7.15Gi' -> 7.15; Kubernetes-style quantities, plain numbers are bytes."""
    if isinstance(text, int | float):
        return float(text) / GIB
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (expected e.g. '7.15Gi')")
    return float(match.group(1)) * _SIZE_UNITS_GIB[match.group(2)]


@dataclass(frozen=True)
class ModelSpec:
    """The architecture facts sizing needs, as model_catalog.yaml names them."""

    name: str
    weights_gib: float
    token_limit: int
    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int | None = None
    head_dim: int | None = None
    kv_lora_rank: int | None = None
    qk_rope_head_dim: int | None = None
    splittable: bool = True

    @classmethod
    def from_catalog_entry(cls, entry: Mapping[str, Any]) -> ModelSpec:
        architectures = [str(a) for a in entry.get("architectures") or []]
        return cls(
            name=str(entry["name"]),
            weights_gib=parse_size_gib(entry["modelFileSize"]),
            token_limit=int(entry["modelTokenLimit"]),
            num_hidden_layers=int(entry["numHiddenLayers"]),
            hidden_size=int(entry["hiddenSize"]),
            num_attention_heads=int(entry["numAttentionHeads"]),
            num_kv_heads=_opt_int(entry.get("numKeyValueHeads")),
            head_dim=_opt_int(entry.get("headDim")),
            kv_lora_rank=_opt_int(entry.get("kvLoraRank")),
            qk_rope_head_dim=_opt_int(entry.get("qkRopeHeadDim")),
            splittable=not any(a.startswith("Falcon") for a in architectures),
        )

    @property
    def uses_mla(self) -> bool:
        return bool(self.kv_lora_rank)

    @property
    def effective_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def effective_kv_heads(self) -> int:
        return self.num_kv_heads or self.num_attention_heads

    @property
    def kv_bytes_per_token(self) -> int:
        if self.uses_mla:
            rank = (self.kv_lora_rank or 0) + (self.qk_rope_head_dim or 0)
            return rank * self.num_hidden_layers * KV_DTYPE_BYTES
        return (
            2
            * self.num_hidden_layers
            * self.effective_kv_heads
            * self.effective_head_dim
            * KV_DTYPE_BYTES
        )

    @property
    def weights_loaded_gib(self) -> float:
        return self.weights_gib * WEIGHT_FACTOR


@dataclass(frozen=True)
class VmSpec:
    sku: str
    gpu_count: int
    gpu_memory_gib: float  # the VM's total over all its GPUs, as gpu_skus.yaml lists it
    price_per_hour: float | None = None
    cuda_cc: float | None = None

    @property
    def gpu_memory_per_gpu_gib(self) -> float:
        return self.gpu_memory_gib / self.gpu_count if self.gpu_count else 0.0


@dataclass(frozen=True)
class Sizing:
    sku: str
    fits: bool
    reason: str
    gpus: int  # GPUs KAITO needs for the requested context
    nodes: int
    max_context: int  # longest context on `nodes` nodes, capped at the model's limit
    price_per_hour: float | None  # for all the nodes; None when the VM size has no price

    @property
    def price_per_month(self) -> float | None:
        return None if self.price_per_hour is None else self.price_per_hour * HOURS_PER_MONTH


HOURS_PER_MONTH = 730


def usable_gib_per_gpu(vm: VmSpec, utilization: float) -> float:
    return vm.gpu_memory_per_gpu_gib * utilization - PER_GPU_GIB


def max_context_on(
    model: ModelSpec, vm: VmSpec, nodes: int, *, utilization: float = DEFAULT_UTILIZATION
) -> int:
    gpus = nodes * vm.gpu_count if model.splittable else min(1, vm.gpu_count)
    free = gpus * usable_gib_per_gpu(vm, utilization) - model.weights_loaded_gib
    tokens = math.floor(free * GIB / model.kv_bytes_per_token) if free > 0 else 0
    return max(0, min(tokens, model.token_limit))


def size_on(
    model: ModelSpec,
    vm: VmSpec,
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    nodes: int | None = None,
    utilization: float = DEFAULT_UTILIZATION,
) -> Sizing:
    """Size `model` on `vm` for a context of `max_tokens` (KAITO's default 2048).

    With `nodes` given, check that node count instead of finding the least one.
    """
    want = min(max_tokens, model.token_limit)

    def verdict(fits: bool, reason: str, gpus: int, n_nodes: int) -> Sizing:
        price = None if vm.price_per_hour is None else vm.price_per_hour * n_nodes
        ctx = max_context_on(model, vm, n_nodes, utilization=utilization) if n_nodes else 0
        return Sizing(vm.sku, fits, reason, gpus, n_nodes, ctx, price)

    if vm.gpu_count == 0:
        return verdict(False, "no GPU: KAITO presets need a GPU VM size", 0, 0)
    if vm.cuda_cc is not None and vm.cuda_cc < MIN_CUDA_CC:
        return verdict(False, f"KAITO needs CUDA compute capability {MIN_CUDA_CC}+", 0, 0)
    per_gpu = usable_gib_per_gpu(vm, utilization)
    if per_gpu <= 0:
        return verdict(False, "GPU memory too small for KAITO's per-GPU overhead", 0, 0)
    need_gib = model.weights_loaded_gib + model.kv_bytes_per_token * want / GIB
    gpus = max(1, math.ceil(need_gib / per_gpu - 1e-9))

    if not model.splittable and gpus > 1:
        return verdict(
            False,
            f"needs {gpus} GPUs of {vm.gpu_memory_per_gpu_gib:g} GiB, "
            "but this model cannot be split over several GPUs",
            gpus,
            0,
        )
    least_nodes = math.ceil(gpus / vm.gpu_count)
    n_nodes = least_nodes if nodes is None else nodes
    if n_nodes < least_nodes:
        return verdict(
            False,
            f"needs {least_nodes} node(s) ({gpus} GPUs) for {want:,} tokens of context",
            gpus,
            n_nodes,
        )
    return verdict(True, "fits", gpus, n_nodes)


def size_over(
    model: ModelSpec,
    vms: Iterable[VmSpec],
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    utilization: float = DEFAULT_UTILIZATION,
) -> list[Sizing]:
    """Every VM size, cheapest fitting first, then fitting without a price, then the rest."""
    rows = [size_on(model, vm, max_tokens=max_tokens, utilization=utilization) for vm in vms]
    return sorted(rows, key=_rank_key)


def cheapest_fit(
    model: ModelSpec,
    vms: Iterable[VmSpec],
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    utilization: float = DEFAULT_UTILIZATION,
) -> Sizing | None:
    """The priced VM size whose nodes cost least per hour (fewer nodes break ties)."""
    for row in size_over(model, vms, max_tokens=max_tokens, utilization=utilization):
        if row.fits and row.price_per_hour is not None:
            return row
    return None


def _rank_key(row: Sizing) -> tuple[int, float, int, str]:
    if row.fits and row.price_per_hour is not None:
        return (0, row.price_per_hour, row.nodes, row.sku)
    if row.fits:
        return (1, 0.0, row.nodes, row.sku)
    return (2, 0.0, 0, row.sku)


def _opt_int(value: Any) -> int | None:
    return None if value in (None, "") else int(value)
