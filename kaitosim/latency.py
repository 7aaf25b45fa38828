"""Latency model for kaitosim: how long a KAITO workspace or a Foundry deployment takes to answer.

Everything here is a pure function of public facts (the reference YAML files shipped with kaitoweb
plus GPU datasheet numbers below); nothing sleeps. The servers in ``kaitosim.inference`` and
``kaitosim.foundry`` turn these simulated seconds into real ones by dividing by ``speed``
(``speed=1.0`` is realistic, ``speed=50`` runs fifty times faster).

KAITO workspaces (vLLM or transformers on AKS GPUs)
===================================================

LLM inference has two phases. *Prefill* reads the prompt in one pass and is compute bound; *decode*
produces one token per step for every running sequence and is memory-bandwidth bound, because each
step streams the (active) weights and every sequence's KV cache out of GPU memory. vLLM batches all
running sequences into one step (continuous batching) and splits long prompts into chunks of
``max_num_batched_tokens`` (vLLM's default: 8192 on GPUs with >= 70 GiB, else 2048) that ride
along with the decode tokens of the same step (chunked prefill).
One engine step therefore costs::

    t_step = t_overhead + max(t_mem, t_compute) + t_comm

    t_mem     = (W_eff + S * kv_bytes_per_token) / (BW * n_gpu * ETA_BW * tp_eff)
    t_compute = (2 * N_active * (B + P) + 4 * L * H * P * C) / (FLOPS * n_gpu * ETA_FLOPS * tp_eff)
    t_overhead = STEP_OVERHEAD_S[runtime] + SEQ_OVERHEAD_S * B (+ MOE_LAYER_OVERHEAD_S * L for MoE)
    t_comm    = TP_COMM_PER_LAYER_S * L   (tensor parallel, >1 GPU)
              + PP_HOP_S * (nodes - 1)      (pipeline parallel across nodes)

where B = sequences decoding in the step, S = their summed context length (tokens), P = prompt
tokens prefilled in the step, C = context already prefilled for those prompts (attention is
quadratic in it), L = layers, H = hidden size, n_gpu = gpu_count * nodes,
``tp_eff = 1 / (1 + TP_EFFICIENCY_LOSS * log2(n_gpu))``.

* ``W_eff``: bytes of weights read per step. Dense models read all weights ``W``. Mixture-of-experts
  models read only the routed experts: one token touches a fraction ``a = active/total`` of them and
  B tokens touch about ``1 - (1 - a)^B`` (independent routing), so MoE decode gets cheaper per token
  as the batch grows, as in practice. Scattered expert reads and routing make MoE kernels less
  efficient: bandwidth efficiency starts at ``ETA_BW_MOE = 0.3`` and approaches ``ETA_BW`` as tokens
  per expert ``x = (B + P) * a`` grow (``ETA_BW_MOE + (ETA_BW - ETA_BW_MOE) * x / (1 + x)``),
  plus 0.15 ms per layer (DeepSeek-R1 on 8 x H200 lands at ~60 tok/s
  single stream, gpt-oss-20b on one A100 at ~100 tok/s).
* ``W`` is the catalog's ``modelFileSize`` (model_catalog.yaml; Falcon and Phi-2 from
  model_catalog_extra.yaml). gpt-oss sizes are halved because the catalog counts the weights twice
  (SIZING.md says so for gpt-oss-20b; we assume the same for 120b).
* ``N_active`` (parameters used per token) is ``W / bytes_per_param(quantMethod)`` for dense models,
  times ``active/total`` for MoE. Active/total counts come from the model name (``...-30B-A3B``) or
  from ``MOE_ACTIVE_TOTAL_B`` (the vendors' model cards); unknown MoE models use
  ``DEFAULT_MOE_ACTIVE_FRACTION`` (an assumption, flagged by ``ModelProfile.assumptions``).
* ``kv_bytes_per_token`` follows SIZING.md (2 x layers x kv_heads x head_dim x 2 bytes, or the
  multi-latent-attention form).
* GPU bandwidth and dense BF16 tensor throughput are NVIDIA datasheet figures (``GPU_SPECS``);
  the SKU -> GPU mapping and GPU count come from gpu_skus.yaml (A100 40 GB vs 80 GB, H100 NVL vs
  SXM are told apart by memory per GPU).
* ``ETA_BW = 0.6`` and ``ETA_FLOPS = 0.5`` are the fractions of peak that a tuned serving stack
  reaches (typical vLLM decode reaches 50-70 % of HBM bandwidth, prefill 40-60 % MFU).
  ``STEP_OVERHEAD_S`` (2.5 ms for vLLM with CUDA graphs: scheduling, sampling, detokenising) is what
  makes small models land at the ~100 tok/s people measure rather than the bandwidth bound.
* ``API_OVERHEAD_S`` (45 ms for vLLM's OpenAI server) is the time before the engine sees a request:
  HTTP, chat template, tokenisation; plus the response path. It is added once to TTFT.

The transformers runtime (KAITO's older ``/chat`` server, HF ``generate``) has no continuous
batching, no paged attention and no CUDA graphs: ``ETA_BW_TRANSFORMERS = 0.35``, a 12 ms per-token
overhead and concurrent requests time-slice the GPU (step time grows linearly with B).

Resulting figures (single stream, 500-token prompt): phi-4-mini-instruct on one A100 80 GB
(Standard_NC24ads_A100_v4) gives TTFT ~75 ms and ~110 tok/s; on one A10 ~35 tok/s; on one H100 NVL
~170 tok/s; llama-3.3-70b-instruct on 4 x A100 ~28 tok/s. These match public vLLM measurements in
shape and order of magnitude; they are estimates, not benchmarks.

KV-cache capacity (``kv_capacity_tokens``) uses SIZING.md's memory budget: ``n_gpu * gpu_mem * 0.9 -
weights * 1.02 - 2.3 GiB * n_gpu``, divided by ``kv_bytes_per_token``; vLLM allocates it in
blocks of 16 tokens. ``kaito_benchmark`` reproduces KAITO's startup benchmark
(presets/workspace/inference/vllm/benchmark_entrypoint.py: 2048 input + 256 output tokens, 60 s,
concurrency = min(kv_blocks // ceil(2304 / 16), max_num_seqs), tokens per minute =
(prompt + generated) * 60 / elapsed) by running the same step model in simulated time.

Microsoft Foundry (pay-per-token)
=================================

A shared, very large fleet: no batching slowdown is visible to one caller. A request costs::

    TTFT = REGION_RTT_S[region]
           + (service_ttft(model) + prompt_tokens * prefill_s) * deployment_factor
    ITL  = 1 / tokens_per_s(model) * deployment_factor   (each with multiplicative jitter)

``REGION_RTT_S`` are round-trip times from East US (where kaitoweb's AKS clusters and dashboard are
assumed to run), rounded from Azure's published inter-region latency statistics.
``FOUNDRY_PROFILES`` gives per-model service TTFT and output speed as commonly observed for those
models on Azure (public benchmark sites report 60-150 tok/s for GPT-4.1-mini/4o-mini, 30-60 tok/s
for 70B-class open models); ``DEPLOYMENT_TYPE_FACTOR`` makes Global a little faster on average
but noisier, Data Zone and Regional a little slower, Provisioned (PTU) steadier. Treat them as
plausible demo figures.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kaitosim.model_sizing import ModelSpec

GIB = 1024**3

REFERENCE_DIR = Path(__file__).resolve().parent.parent / "reference"

# --- engine constants (see module docstring) ---------------------------------------------------
ETA_BW = 0.6
ETA_FLOPS = 0.5
ETA_BW_TRANSFORMERS = 0.35
STEP_OVERHEAD_S: dict[str, float] = {"vllm": 0.0025, "transformers": 0.012}
SEQ_OVERHEAD_S = 0.00002
API_OVERHEAD_S: dict[str, float] = {"vllm": 0.045, "transformers": 0.060}
TP_EFFICIENCY_LOSS = 0.08
TP_COMM_PER_LAYER_S = 0.000015
PP_HOP_S = 0.0008
PREFILL_CHUNK_TOKENS = 2048  # vLLM's max_num_batched_tokens for GPUs under 70 GiB (8192 above)
ETA_BW_MOE = 0.3
MOE_LAYER_OVERHEAD_S = 0.00015
KV_BLOCK_SIZE = 16
GPU_MEMORY_UTILIZATION = 0.9
PER_GPU_RESERVED_GIB = 2.3  # activations 1.7 + non-torch 0.6 (SIZING.md)
DEFAULT_MOE_ACTIVE_FRACTION = 0.06

BENCHMARK_INPUT_LEN = 2048
BENCHMARK_OUTPUT_LEN = 256
BENCHMARK_DURATION_S = 60.0


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model: memory per GPU (GiB), HBM bandwidth (GB/s), dense BF16 tensor TFLOPS."""

    name: str
    memory_gib: float
    bandwidth_gbps: float
    bf16_tflops: float


# NVIDIA datasheets (dense, no sparsity). CPU: an approximation of a 16-vCPU Azure D-series VM.
GPU_SPECS: dict[str, GpuSpec] = {
    "A10": GpuSpec("NVIDIA A10", 24, 600, 125),
    "A100-PCIE-80GB": GpuSpec("NVIDIA A100 80GB PCIe", 80, 1935, 312),
    "A100-SXM4-40GB": GpuSpec("NVIDIA A100-SXM4-40GB", 40, 1555, 312),
    "A100-SXM4-80GB": GpuSpec("NVIDIA A100-SXM4-80GB", 80, 2039, 312),
    "H100-NVL": GpuSpec("NVIDIA H100 NVL", 94, 3938, 835),
    "H100-SXM": GpuSpec("NVIDIA H100 80GB HBM3", 80, 3350, 989),
    "H200": GpuSpec("NVIDIA H200", 141, 4800, 989),
    "CPU": GpuSpec("CPU", 64, 40, 1.5),
}

# bytes per parameter by the catalog's quantMethod (None = bf16)
_BYTES_PER_PARAM: dict[str, float] = {
    "fp8": 1.0,
    "float-quantized": 1.0,
    "awq": 0.56,
    "gptq": 0.56,
    "mxfp4": 0.53,
    "nvfp4-pack-quantized": 0.56,
    "pack-quantized": 0.56,
    "mixed_precision": 0.6,
}

# (active, total) parameters in billions, from the vendors' model cards, for MoE models whose
# name does not say it (names like "...-30B-A3B" are parsed instead).
MOE_ACTIVE_TOTAL_B: dict[str, tuple[float, float]] = {
    "openai/gpt-oss-20b": (3.6, 21.0),
    "openai/gpt-oss-120b": (5.1, 117.0),
    "deepseek-ai/deepseek-r1-0528": (37.0, 671.0),
    "deepseek-ai/deepseek-v3-0324": (37.0, 671.0),
    "deepseek-ai/deepseek-v3.2": (37.0, 671.0),
    "mistralai/mistral-large-3-675b-instruct-2512": (41.0, 675.0),
    "moonshotai/kimi-k2.5": (32.0, 1000.0),
    "moonshotai/kimi-k2.6": (32.0, 1000.0),
    "moonshotai/kimi-k2.7-code": (32.0, 1000.0),
    "minimaxai/minimax-m2.7": (10.0, 230.0),
    "zai-org/glm-5.2-fp8": (40.0, 744.0),
    "mistralai/mistral-small-4-119b-2603": (6.5, 119.0),
    "mistralai/mistral-small-4-119b-2603-nvfp4": (6.5, 119.0),
}
_MOE_ARCH_HINTS = ("moe", "deepseekv", "gptoss", "kimi", "minimaxm", "glmmoe", "mistrallarge3")
# catalog sizes that count the weights twice (original/ copy): use half
_DOUBLE_COUNTED = {"openai/gpt-oss-20b", "openai/gpt-oss-120b"}


@dataclass(frozen=True)
class ModelProfile:
    """What the latency model needs to know about one preset."""

    preset: str
    hf_id: str
    weights_gib: float
    active_params_b: float
    total_params_b: float
    num_layers: int
    hidden_size: int
    kv_bytes_per_token: int
    token_limit: int
    architecture: str
    quant: str | None = None
    assumptions: tuple[str, ...] = ()

    @property
    def active_fraction(self) -> float:
        return min(1.0, self.active_params_b / self.total_params_b) if self.total_params_b else 1.0

    @property
    def is_moe(self) -> bool:
        return self.active_fraction < 0.999


@dataclass(frozen=True)
class Hardware:
    """A node pool: ``gpu_count`` GPUs per node times ``nodes``."""

    instance_type: str
    gpu: GpuSpec
    gpu_count: int
    nodes: int = 1

    @property
    def total_gpus(self) -> int:
        return max(1, self.gpu_count) * max(1, self.nodes)

    @property
    def is_cpu(self) -> bool:
        return self.gpu.name == "CPU"


# --- reference data ------------------------------------------------------------------------------


def _load_yaml(name: str) -> Any:
    path = REFERENCE_DIR / name
    if not path.exists():
        return None
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@functools.lru_cache(maxsize=1)
def _catalog() -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for name in ("kaito/model_catalog.yaml", "kaito/model_catalog_extra.yaml"):
        data = _load_yaml(name) or {}
        for model in data.get("models", []) or []:
            entries[str(model["name"]).lower()] = model
    return entries


@functools.lru_cache(maxsize=1)
def _supported_presets() -> dict[str, dict[str, Any]]:
    data = _load_yaml("kaito/supported_models.yaml") or {}
    return {str(m["name"]).lower(): m for m in data.get("models", []) or []}


@functools.lru_cache(maxsize=1)
def _sku_table() -> dict[str, dict[str, Any]]:
    data = _load_yaml("azure/gpu_skus.yaml") or {}
    table: dict[str, dict[str, Any]] = {}
    for sku in data.get("skus", []) or []:
        table[str(sku["sku"]).lower()] = sku
        if sku.get("arm_name"):
            table[str(sku["arm_name"]).lower()] = sku
    return table


def runtime_versions() -> dict[str, str]:
    """The vLLM and transformers versions of KAITO's base image (supported_models.yaml)."""
    base = _supported_presets().get("base", {})
    versions = base.get("runtimeVersion") or {}
    return {str(k): str(v) for k, v in versions.items()}


def resolve_hf_id(preset: str) -> str | None:
    """Map a Workspace preset name (short KAITO name or Hugging Face id) to a catalog HF id."""
    key = preset.strip().lower()
    if key in _catalog():
        return str(_catalog()[key]["name"])
    supported = _supported_presets().get(key)
    if supported and supported.get("version"):
        match = re.match(r"https://huggingface\.co/([^/]+/[^/]+)/", str(supported["version"]))
        if match and match.group(1).lower() in _catalog():
            return str(_catalog()[match.group(1).lower()]["name"])
    return None


def _params_from_name(name: str) -> tuple[float | None, float | None]:
    """(total, active) billions from names like 'Qwen3.6-35B-A3B' or 'llama-3.1-8b'."""
    moe = re.search(r"(\d+(?:\.\d+)?)b-a(\d+(?:\.\d+)?)b", name.lower())
    if moe:
        return float(moe.group(1)), float(moe.group(2))
    dense = re.findall(r"(?<![a-z])(\d+(?:\.\d+)?)b(?![a-z])", name.lower())
    if dense:
        return float(dense[-1]), None
    return None, None


@functools.lru_cache(maxsize=256)
def model_profile(preset: str) -> ModelProfile:
    """The latency-relevant facts of a preset; unknown presets get a documented estimate."""
    assumptions: list[str] = []
    hf_id = resolve_hf_id(preset)
    entry = _catalog().get(hf_id.lower()) if hf_id else None
    if entry is None:
        total, _active = _params_from_name(preset)
        total = total or 7.0
        assumptions.append(f"preset not in the catalog: assumed a dense {total:g}B bf16 model")
        entry = {
            "name": preset,
            "modelFileSize": f"{total * 2e9 / GIB:.2f}Gi",
            "numHiddenLayers": 32,
            "hiddenSize": 4096,
            "numAttentionHeads": 32,
            "numKeyValueHeads": 8,
            "modelTokenLimit": 32768,
            "architectures": ["Unknown"],
        }
        hf_id = preset
    assert hf_id is not None
    key = hf_id.lower()
    # Weight size and KV bytes per token exactly as the catalog's sizing module reads them.
    spec = ModelSpec.from_catalog_entry(entry)
    weights_gib = spec.weights_gib
    if key in _DOUBLE_COUNTED:
        weights_gib /= 2
        assumptions.append("catalog size counts the weights twice; halved")
    quant = str(entry["quantMethod"]).lower() if entry.get("quantMethod") else None
    bpp = _BYTES_PER_PARAM.get(quant or "", 2.0)
    if quant and quant not in _BYTES_PER_PARAM:
        assumptions.append(f"unknown quantMethod {quant}: assumed 2 bytes/param")
    params_from_size = weights_gib * GIB / bpp / 1e9
    arch = str((entry.get("architectures") or ["Unknown"])[0])
    total_b = params_from_size
    active_b = params_from_size
    name_total, name_active = _params_from_name(key.split("/")[-1])
    if key in MOE_ACTIVE_TOTAL_B:
        active, total = MOE_ACTIVE_TOTAL_B[key]
        active_b = params_from_size * active / total
    elif name_total and name_active:
        active_b = params_from_size * name_active / name_total
    elif any(h in arch.lower() for h in _MOE_ARCH_HINTS):
        active_b = params_from_size * DEFAULT_MOE_ACTIVE_FRACTION
        assumptions.append(
            f"MoE active fraction unknown: assumed {DEFAULT_MOE_ACTIVE_FRACTION:.0%}"
        )
    return ModelProfile(
        preset=preset,
        hf_id=str(hf_id),
        weights_gib=weights_gib,
        active_params_b=active_b,
        total_params_b=total_b,
        num_layers=int(entry.get("numHiddenLayers") or 32),
        hidden_size=int(entry.get("hiddenSize") or 4096),
        kv_bytes_per_token=spec.kv_bytes_per_token,
        token_limit=int(entry.get("modelTokenLimit") or 4096),
        architecture=arch,
        quant=quant,
        assumptions=tuple(assumptions),
    )


def _gpu_for(gpu_model: str | None, memory_per_gpu: float) -> GpuSpec:
    if not gpu_model:
        return GPU_SPECS["CPU"]
    model = gpu_model.upper()
    if "H200" in model:
        return GPU_SPECS["H200"]
    if "H100" in model:
        return GPU_SPECS["H100-NVL"] if memory_per_gpu > 85 else GPU_SPECS["H100-SXM"]
    if "A100" in model:
        if memory_per_gpu <= 45:
            return GPU_SPECS["A100-SXM4-40GB"]
        return GPU_SPECS["A100-PCIE-80GB"]
    if "A10" in model:
        return GPU_SPECS["A10"]
    return GPU_SPECS["A100-PCIE-80GB"]


def hardware_for(instance_type: str, gpu_count: int | None = None, nodes: int = 1) -> Hardware:
    """Hardware of an Azure VM size (gpu_skus.yaml); unknown sizes are guessed from the name."""
    sku = _sku_table().get(instance_type.lower())
    if sku is not None:
        count = int(sku.get("gpu_count") or 0)
        per_gpu = float(sku.get("gpu_memory_gib") or 0) / count if count else 0.0
        gpu = _gpu_for(sku.get("gpu_model"), per_gpu)
        if sku.get("sku", "").startswith("Standard_ND96amsr"):
            gpu = GPU_SPECS["A100-SXM4-80GB"]
    else:
        name = instance_type.upper()
        guess = next((g for g in ("H200", "H100", "A100", "A10") if g in name), None)
        count = gpu_count or (1 if guess else 0)
        gpu = _gpu_for(guess, GPU_SPECS.get(f"{guess}-NVL", GPU_SPECS["A100-PCIE-80GB"]).memory_gib)
    if gpu_count is not None and gpu_count > 0:
        count = gpu_count
    return Hardware(instance_type=instance_type, gpu=gpu, gpu_count=count, nodes=max(1, nodes))


# --- the step model ------------------------------------------------------------------------------


def prefill_chunk_tokens(hw: Hardware) -> int:
    """vLLM's default max_num_batched_tokens (OpenAI server): 8192 on >= 70 GiB GPUs, else 2048."""
    return 8192 if hw.gpu.memory_gib >= 70 and not hw.is_cpu else PREFILL_CHUNK_TOKENS


def default_max_num_seqs(hw: Hardware) -> int:
    """vLLM's default max_num_seqs for the OpenAI server: 1024 on >= 70 GiB GPUs, else 256."""
    return 1024 if hw.gpu.memory_gib >= 70 and not hw.is_cpu else 256


def _tp_eff(hw: Hardware) -> float:
    return 1.0 / (1.0 + TP_EFFICIENCY_LOSS * math.log2(hw.total_gpus))


def step_seconds(
    model: ModelProfile,
    hw: Hardware,
    *,
    runtime: str = "vllm",
    batch: int,
    context_tokens: int,
    prefill_tokens: int = 0,
    prefill_context: int = 0,
) -> float:
    """Simulated duration of one engine step (see the module docstring for the formula)."""
    n = hw.total_gpus
    eff = _tp_eff(hw)
    eta_bw = ETA_BW_TRANSFORMERS if runtime == "transformers" else ETA_BW
    tokens_in_step = batch + prefill_tokens
    if model.is_moe:
        # few tokens per expert: scattered, small GEMMs; efficiency recovers as experts fill up
        per_expert = tokens_in_step * model.active_fraction
        eta_bw = ETA_BW_MOE + (eta_bw - ETA_BW_MOE) * per_expert / (1.0 + per_expert)
    bandwidth = hw.gpu.bandwidth_gbps * 1e9 * n * eta_bw * eff
    flops = hw.gpu.bf16_tflops * 1e12 * n * ETA_FLOPS * eff
    weights = model.weights_gib * GIB
    if model.is_moe and tokens_in_step > 0:
        weights *= 1.0 - (1.0 - model.active_fraction) ** tokens_in_step
    elif tokens_in_step == 0:
        weights = 0.0
    t_mem = (weights + context_tokens * model.kv_bytes_per_token) / bandwidth
    attn = (
        4.0
        * model.num_layers
        * model.hidden_size
        * prefill_tokens
        * max(prefill_context, prefill_tokens / 2)
    )
    t_compute = (2.0 * model.active_params_b * 1e9 * tokens_in_step + attn) / flops
    t_comm = 0.0
    if hw.gpu_count > 1:
        t_comm += TP_COMM_PER_LAYER_S * model.num_layers
    t_comm += PP_HOP_S * (hw.nodes - 1)
    overhead = STEP_OVERHEAD_S.get(runtime, STEP_OVERHEAD_S["vllm"]) + SEQ_OVERHEAD_S * batch
    if model.is_moe:
        overhead += MOE_LAYER_OVERHEAD_S * model.num_layers
    step = overhead + max(t_mem, t_compute) + t_comm
    if runtime == "transformers" and batch > 1:
        step *= batch  # no batching: concurrent generate() calls time-slice the GPU
    return step


def decode_itl_seconds(
    model: ModelProfile,
    hw: Hardware,
    *,
    runtime: str = "vllm",
    batch: int = 1,
    context_tokens_per_seq: int = 1024,
) -> float:
    """Inter-token latency of one stream when ``batch`` streams decode together."""
    return step_seconds(
        model, hw, runtime=runtime, batch=batch, context_tokens=batch * context_tokens_per_seq
    )


def ttft_seconds(
    model: ModelProfile, hw: Hardware, *, runtime: str = "vllm", prompt_tokens: int = 500
) -> float:
    """Unloaded time to first token: API overhead plus the prefill steps of one prompt."""
    total = API_OVERHEAD_S.get(runtime, API_OVERHEAD_S["vllm"])
    done = 0
    while True:
        chunk = min(prefill_chunk_tokens(hw), max(0, prompt_tokens - done))
        total += step_seconds(
            model,
            hw,
            runtime=runtime,
            batch=0,
            context_tokens=done,
            prefill_tokens=chunk,
            prefill_context=done + chunk,
        )
        done += chunk
        if done >= prompt_tokens:
            return total


def kv_capacity_tokens(model: ModelProfile, hw: Hardware, max_model_len: int | None = None) -> int:
    """Tokens of KV cache vLLM can allocate (SIZING.md's memory budget)."""
    if hw.is_cpu:
        return max(max_model_len or model.token_limit, 32768)
    n = hw.total_gpus
    free_gib = (
        n * (hw.gpu.memory_gib * GPU_MEMORY_UTILIZATION - PER_GPU_RESERVED_GIB)
        - model.weights_gib * 1.02
    )
    tokens = int(free_gib * GIB / max(1, model.kv_bytes_per_token))
    return max(KV_BLOCK_SIZE, tokens)


def fits(model: ModelProfile, hw: Hardware, max_model_len: int) -> bool:
    """Whether the weights plus one max-length sequence fit (what vLLM checks at startup)."""
    return kv_capacity_tokens(model, hw) >= max_model_len


@dataclass
class BenchmarkResult:
    """What KAITO's startup benchmark prints (KAITO_BENCHMARK_RESULT / _CONFIG)."""

    tpm: float
    ttft_avg_ms: float
    tpot_avg_ms: float
    max_concurrency: int
    duration_sec: float = BENCHMARK_DURATION_S
    input_tokens: int = BENCHMARK_INPUT_LEN
    output_tokens: int = BENCHMARK_OUTPUT_LEN
    extra: dict[str, float] = field(default_factory=dict)


def benchmark_concurrency(model: ModelProfile, hw: Hardware, max_num_seqs: int) -> int:
    blocks = kv_capacity_tokens(model, hw) // KV_BLOCK_SIZE
    per_request = math.ceil((BENCHMARK_INPUT_LEN + BENCHMARK_OUTPUT_LEN) / KV_BLOCK_SIZE)
    return max(1, min(blocks // per_request, max_num_seqs))


@functools.lru_cache(maxsize=128)
def kaito_benchmark(
    preset: str, instance_type: str, gpu_count: int, nodes: int, runtime: str, max_num_seqs: int
) -> BenchmarkResult:
    """Simulate KAITO's 60 s startup benchmark with the step model (closed loop, no sleeping)."""
    model = model_profile(preset)
    hw = hardware_for(instance_type, gpu_count, nodes)
    conc = benchmark_concurrency(model, hw, max_num_seqs)
    if runtime == "transformers":
        conc = min(conc, 8)
    # each active request: [prefilled, generated, start, first_token_time]
    active: list[list[float]] = [[0.0, 0.0, 0.0, -1.0] for _ in range(conc)]
    now = 0.0
    prompt_total = 0.0
    gen_total = 0.0
    ttfts: list[float] = []
    tpots: list[float] = []
    api = API_OVERHEAD_S.get(runtime, 0.045)
    while now < BENCHMARK_DURATION_S:
        budget = float(prefill_chunk_tokens(hw))
        prefill = 0.0
        prefill_ctx = 0.0
        decoding = [r for r in active if r[0] >= BENCHMARK_INPUT_LEN]
        for r in active:
            if r[0] < BENCHMARK_INPUT_LEN and budget > 0:
                take = min(budget, BENCHMARK_INPUT_LEN - r[0])
                r[0] += take
                budget -= take
                prefill += take
                prefill_ctx = max(prefill_ctx, r[0])
        ctx = int(sum(BENCHMARK_INPUT_LEN + r[1] for r in decoding))
        # macro-step decode-only stretches to keep this loop cheap
        repeat = 1 if prefill else 8
        dt = step_seconds(
            model,
            hw,
            runtime=runtime,
            batch=len(decoding),
            context_tokens=ctx,
            prefill_tokens=int(prefill),
            prefill_context=int(prefill_ctx),
        )
        if decoding and repeat > 1:
            repeat = int(min(repeat, min(BENCHMARK_OUTPUT_LEN - r[1] for r in decoding)))
            repeat = max(1, repeat)
        now += dt * repeat
        prompt_total += prefill
        for r in decoding:
            if r[3] < 0:
                r[3] = now
                ttfts.append(now - r[2] + api)
            r[1] += repeat
            gen_total += repeat
        for i, r in enumerate(active):
            if r[1] >= BENCHMARK_OUTPUT_LEN:
                tpots.append((now - r[3]) / max(1.0, r[1] - 1))
                active[i] = [0.0, 0.0, now, -1.0]
    # like guidellm's "total" bucket, requests still in flight count too
    tpots += [(now - r[3]) / (r[1] - 1) for r in active if r[3] >= 0 and r[1] > 1]
    tpm = round((prompt_total + gen_total) * 60.0 / now, 2)
    return BenchmarkResult(
        tpm=tpm,
        ttft_avg_ms=round(1000 * sum(ttfts) / max(1, len(ttfts)), 2),
        tpot_avg_ms=round(1000 * sum(tpots) / max(1, len(tpots)), 2),
        max_concurrency=conc,
    )


# --- Foundry -------------------------------------------------------------------------------------

# Round-trip time (s) from East US, rounded from Azure's inter-region latency statistics.
REGION_RTT_S: dict[str, float] = {
    "eastus": 0.002,
    "eastus2": 0.007,
    "northcentralus": 0.020,
    "centralus": 0.025,
    "southcentralus": 0.033,
    "canadacentral": 0.018,
    "westus": 0.065,
    "westus2": 0.068,
    "westus3": 0.055,
    "brazilsouth": 0.118,
    "uksouth": 0.077,
    "westeurope": 0.085,
    "northeurope": 0.072,
    "francecentral": 0.082,
    "germanywestcentral": 0.090,
    "swedencentral": 0.102,
    "switzerlandnorth": 0.093,
    "japaneast": 0.158,
    "koreacentral": 0.180,
    "southeastasia": 0.215,
    "centralindia": 0.200,
    "australiaeast": 0.205,
}
DEFAULT_RTT_S = 0.120

# (mean multiplier on latency, jitter as a relative standard deviation)
DEPLOYMENT_TYPE_FACTOR: dict[str, tuple[float, float]] = {
    "global": (1.0, 0.25),
    "data_zone": (1.08, 0.18),
    "regional": (1.15, 0.15),
    "provisioned": (0.85, 0.06),
}


@dataclass(frozen=True)
class FoundryProfile:
    """Service-side speed of a Foundry model: TTFT (s) for a short prompt and output tokens/s."""

    ttft_s: float
    tokens_per_s: float
    prefill_s_per_token: float = 0.00002
    reasoning: bool = False


FOUNDRY_PROFILES: dict[str, FoundryProfile] = {
    "gpt-5.1": FoundryProfile(0.55, 75.0, 0.00003, reasoning=True),
    "gpt-4.1": FoundryProfile(0.45, 70.0, 0.00003),
    "gpt-4.1-mini": FoundryProfile(0.35, 110.0, 0.00002),
    "gpt-4o": FoundryProfile(0.40, 85.0, 0.00003),
    "gpt-4o-mini": FoundryProfile(0.30, 110.0, 0.00002),
    "phi-4": FoundryProfile(0.35, 45.0, 0.00003),
    "phi-4-mini-instruct": FoundryProfile(0.25, 85.0, 0.00002),
    "llama-3.3-70b-instruct": FoundryProfile(0.50, 38.0, 0.00005),
    "mistral-large-3": FoundryProfile(0.50, 45.0, 0.00005),
    "mistral-small-2503": FoundryProfile(0.30, 95.0, 0.00002),
    "deepseek-r1": FoundryProfile(0.90, 32.0, 0.00006, reasoning=True),
}
DEFAULT_FOUNDRY_PROFILE = FoundryProfile(0.45, 60.0, 0.00003)


def foundry_profile(deployment: str) -> FoundryProfile:
    return FOUNDRY_PROFILES.get(deployment.lower(), DEFAULT_FOUNDRY_PROFILE)


def region_rtt_seconds(region: str) -> float:
    return REGION_RTT_S.get(region.lower().replace(" ", ""), DEFAULT_RTT_S)


def foundry_ttft_seconds(
    deployment: str,
    region: str = "eastus",
    deployment_type: str = "global",
    prompt_tokens: int = 100,
) -> float:
    """Mean TTFT seen by a client in East US (no jitter)."""
    profile = foundry_profile(deployment)
    factor = DEPLOYMENT_TYPE_FACTOR.get(deployment_type, (1.0, 0.2))[0]
    return (
        region_rtt_seconds(region)
        + (profile.ttft_s + prompt_tokens * profile.prefill_s_per_token) * factor
    )


def foundry_itl_seconds(deployment: str, deployment_type: str = "global") -> float:
    factor = DEPLOYMENT_TYPE_FACTOR.get(deployment_type, (1.0, 0.2))[0]
    return factor / foundry_profile(deployment).tokens_per_s


def known_presets() -> Iterable[str]:
    """Short preset names from supported_models.yaml (excluding 'base')."""
    return [name for name in _supported_presets() if name != "base"]
