"""Container log lines of a KAITO inference pod before its server listens, and of its failures.

Once the simulated server listens, its own log (``InferenceServer.log_lines()``: vLLM's
startup summary, KV cache size, "Application startup complete", request lines) follows these.
"""

from __future__ import annotations

import math
import time

from kaitosim.model_sizing import DeploymentPlan
from kaitosim.reference import ModelPreset


def _stamp() -> str:
    return time.strftime("%m-%d %H:%M:%S", time.gmtime())


def _frame(module: str, line: int, function: str) -> str:
    return f'  File "/usr/local/lib/python3.12/dist-packages/{module}", line {line}, in {function}'


def _info(where: str, message: str) -> str:
    return f"INFO {_stamp()} [{where}] {message}"


def launch_lines(preset: ModelPreset, plan: DeploymentPlan, served_model: str) -> list[str]:
    """``inference_api.py`` choosing vLLM arguments, as KAITO's launcher prints them."""
    return [
        _info("__init__.py:241", "Automatically detected platform cuda."),
        _info(
            "inference_api.py:142",
            f"KAITO vLLM launcher: model={preset.model_id} served-model-name={served_model} "
            f"tensor-parallel-size={plan.gpus_per_node} pipeline-parallel-size={plan.nodes}",
        ),
        _info(
            "inference_api.py:210",
            f"Estimated GPU memory: weights {plan.weights_gib:.2f} GiB, available "
            f"{plan.available_gib:.2f} GiB over {plan.total_gpus} GPU(s)",
        ),
    ]


def download_lines(preset: ModelPreset, fraction: float, secret_name: str) -> list[str]:
    """Model download progress from the Hugging Face hub (presets with ``downloadAtRuntime``)."""
    percent = int(fraction * 100)
    if fraction <= 0:
        auth = f" using HF_TOKEN from secret {secret_name}" if secret_name else ""
        return [
            _info(
                "weight_utils.py:298",
                f"Downloading model weights of {preset.model_id} from huggingface.co{auth}",
            )
        ]
    return [
        _info("model_download_monitor.py:61", f"Download progress {preset.model_id}: {percent}%")
    ]


def weight_loading_lines(fraction: float, shards: int) -> list[str]:
    done = max(1, min(shards, math.ceil(fraction * shards - 1e-9)))
    percent = int(done * 100 / shards)
    return [
        f"Loading safetensors checkpoint shards: {percent:3d}% Completed | {done}/{shards} "
        f"[00:{done * 3:02d}<00:00,  2.91s/it]"
    ]


def cuda_oom_lines(plan: DeploymentPlan, gpu_memory_per_gpu_gib: float) -> list[str]:
    """A vLLM worker running out of GPU memory while loading weights."""
    per_gpu_need = plan.required_gib / max(plan.total_gpus, 1)
    free = max(
        0.05, gpu_memory_per_gpu_gib * 0.9 - 2.3 - plan.weights_gib / max(plan.total_gpus, 1) * 0.85
    )
    allocate = max(0.1, per_gpu_need - free)
    return [
        f"ERROR {_stamp()} [core.py:708] EngineCore failed to start.",
        "Traceback (most recent call last):",
        _frame("vllm/v1/worker/gpu_model_runner.py", 2602, "load_model"),
        "    self.model = model_loader.load_model(vllm_config=self.vllm_config, "
        "model_config=self.model_config)",
        (
            f"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate {allocate:.2f} GiB. "
            "GPU 0 has a total "
            f"capacity of {gpu_memory_per_gpu_gib:.2f} GiB of which {free:.2f} GiB is free. "
            "Process 1 has "
            f"{gpu_memory_per_gpu_gib - free:.2f} GiB memory in use. Of the allocated memory "
            f"{gpu_memory_per_gpu_gib - free - 0.3:.2f} GiB is allocated by PyTorch, and 0.17 "
            "GiB is reserved by "
            "PyTorch but unallocated. If reserved but unallocated memory is large try setting "
            "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See "
            "documentation for "
            "Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
        ),
        (
            "RuntimeError: Engine core initialization failed. See root cause above. Failed "
            "core proc(s): "
            f"{{'EngineCore_DP0': 1}} (model needs {plan.required_gib:.1f} GiB, the node's GPUs "
            "offer "
            f"{plan.available_gib:.1f} GiB)"
        ),
    ]


def crash_lines() -> list[str]:
    """An engine crash during start-up (the ``crashloop`` fault)."""
    return [
        f"ERROR {_stamp()} [core.py:708] EngineCore failed to start.",
        "Traceback (most recent call last):",
        _frame("vllm/v1/engine/core.py", 699, "run_engine_core"),
        "    engine_core = EngineCoreProc(*args, **kwargs)",
        "RuntimeError: NCCL error: unhandled cuda error (run with NCCL_DEBUG=INFO for details)",
        "RuntimeError: Engine core initialization failed. See root cause above. Failed core "
        "proc(s): {'EngineCore_DP0': 1}",
    ]


def transformers_launch_lines(model: str) -> list[str]:
    return [
        f"INFO {_stamp()} inference_api.py:88] Loading model {model} with the transformers runtime",
        "Loading checkpoint shards: 100%|██████████| 2/2 [00:04<00:00,  2.10s/it]",
    ]
