"""Simulated inference server of a KAITO workspace (vLLM or transformers runtime), on aiohttp.

Real OpenAI-compatible clients (``openai``, ``httpx``, KAITO's own probe and benchmark scripts) talk
to it unchanged. Generation is done by a :mod:`kaitosim.engine` text engine and paced by a
continuous-batching scheduler that follows :mod:`kaitosim.latency`: requests wait, are admitted up
to ``max_concurrency`` running sequences (and the KV-cache capacity, with preemption when it runs
out), prefill in chunks, then decode one token per engine step; every step's duration comes from
``latency.step_seconds`` and is divided by ``spec.speed``.

vLLM runtime routes (shapes follow the vLLM OpenAI server of KAITO's base image, vLLM >= 0.10.1;
``reference/kaito/vllm_api_spec.json`` for the request schemas):

* ``GET /health`` (200, empty body; 503 when the engine is dead), ``GET /version``, ``GET /ping``
* ``GET /v1/models`` (id = served model name, ``max_model_len``, ``root`` = Hugging Face id)
* ``POST /v1/chat/completions`` and ``POST /v1/completions``, streamed (SSE ``data: {...}``,
  ``data: [DONE]``; ``stream_options.include_usage`` adds a final chunk with ``usage`` and empty
  ``choices``; ``continuous_usage_stats`` puts usage on every chunk) or not.
* ``POST /tokenize``, ``POST /detokenize`` (with the engine's token estimate)
* ``GET /metrics``: Prometheus text with vLLM's metric names, labels ``engine`` and ``model_name``,
  plus ``vllm:cache_config_info`` and ``kaito_max_concurrent_requests``, which KAITO's benchmark
  reads.
  Times in metrics are simulated seconds (what the real server would measure at ``speed=1``).

Errors use vLLM's ``ErrorResponse``: ``{"error": {"message", "type", "param", "code"}}`` (vLLM
>= 0.10.1); set ``InferenceSpec.vllm_version`` below 0.10.1 for the older flat form
``{"object": "error", "message", "type", "param", "code"}``.

transformers runtime routes (KAITO's text-generation server): ``GET /`` , ``GET /health`` and
``/healthz`` -> ``{"status": "Healthy"}``, ``POST /chat`` (``{"prompt", "return_full_text",
"generate_kwargs": {"max_length", "max_new_tokens", "temperature", "top_p", "do_sample", ...}}`` ->
``{"Result": text}``), ``GET /metrics`` and ``/v1/metrics`` (JSON GPU or CPU usage),
``POST /v1/chat/completions`` (OpenAI format, streaming too) and ``GET /v1/models``. Its errors are
FastAPI's ``{"detail": ...}``.

kaitosim additions, not in vLLM: HTTP 429 with ``Retry-After`` when more than ``max_queue`` requests
wait (vLLM itself queues without bound; gateways in front of KAITO shed load this way), the header
``x-kaitosim-engine`` on every response, and faults (:meth:`InferenceServer.set_fault`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from kaitosim import latency
from kaitosim.engine import (
    SamplingParams,
    StopChecker,
    TextEngine,
    TokenStream,
    get_engine,
    render_chat,
    split_pieces,
)

logger = logging.getLogger("kaitosim.inference")

FAULTS = ("crash", "slow", "stream_cut", "error", "hang")
MIN_REAL_TICK_S = 0.002
MAX_LOG_LINES = 5000
LOG_INTERVAL_SIM_S = 10.0
ENGINE_DEAD_MESSAGE = "EngineCore encountered an issue. See stack trace (above) for the root cause."

TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
ITL_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
REQUEST_LATENCY_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)


@dataclass
class InferenceSpec:
    """What a KAITO Workspace's inference pod runs (the fields the controller fills in)."""

    served_model: str
    runtime: str = "vllm"
    instance_type: str = "Standard_NC24ads_A100_v4"
    gpu_count: int = 1
    nodes: int = 1
    max_model_len: int = 4096
    max_concurrency: int = 256
    speed: float = 1.0
    # optional
    engine: str | None = None  # "synthetic" | "smollm2"; None -> $KAITOSIM_ENGINE or synthetic
    max_queue: int | None = (
        None  # waiting requests before 429; None -> max(16, 2 * max_concurrency)
    )
    vllm_version: str | None = None  # None -> KAITO base image's (supported_models.yaml)
    slow_factor: float = 5.0  # latency multiplier of the "slow" fault
    stream_cut_after_tokens: int = (
        8  # tokens sent before the "stream_cut" fault drops the connection
    )
    pod_name: str = ""
    run_benchmark: bool = False  # append KAITO's startup-benchmark log lines
    strict_memory: bool = False  # raise (as vLLM would exit) when max_model_len does not fit
    container_port: int = 5000  # the port the logs say vLLM listens on inside the pod


class InferenceStartupError(RuntimeError):
    """The simulated server would not start (vLLM exits); ``log_lines`` holds what it printed."""

    def __init__(self, message: str, log_lines: list[str]) -> None:
        super().__init__(message)
        self.log_lines = log_lines


# --- wire helpers shared with kaitosim.foundry ----------------------------------------------------


def random_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def sse(data: Mapping[str, Any] | str) -> bytes:
    payload = (
        data
        if isinstance(data, str)
        else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    )
    return f"data: {payload}\n\n".encode()


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=json.dumps(body, ensure_ascii=False).encode(),
        status=status,
        content_type="application/json",
        headers=dict(headers or {}),
    )


def version_tuple(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for part in version.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def float_to_go_string(value: float) -> str:
    """Format a float as prometheus_client does."""
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(float(value))
    dot = text.find(".")
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return text


class ApiError(Exception):
    """An error response; ``render`` decides the body shape per runtime."""

    def __init__(
        self,
        status: int,
        message: str,
        err_type: str = "BadRequestError",
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.err_type = err_type
        self.param = param
        self.headers = dict(headers or {})


# --- metrics -------------------------------------------------------------------------------------


class _Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float, times: int = 1) -> None:
        for i, upper in enumerate(self.buckets):
            if value <= upper:
                self.counts[i] += times
                break
        self.count += times
        self.sum += value * times


def _build_1_2_5(max_value: int) -> tuple[float, ...]:
    out: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_value:
                return tuple(float(v) for v in out)
            out.append(value)
        exponent += 1


class _Metrics:
    """vLLM's Prometheus metrics (a subset), rendered like prometheus_client."""

    COUNTERS = {
        "vllm:num_preemptions": "Cumulative number of preemption from the engine.",
        "vllm:prompt_tokens": "Number of prefill tokens processed.",
        "vllm:generation_tokens": "Number of generation tokens processed.",
        "vllm:prefix_cache_queries": "Prefix cache queries, in terms of number of queried tokens.",
        "vllm:prefix_cache_hits": "Prefix cache hits, in terms of number of cached tokens.",
    }

    def __init__(self, model_name: str, max_model_len: int) -> None:
        self.model_name = model_name
        self.created = time.time()
        self.counters = {name: 0.0 for name in self.COUNTERS}
        self.success = {reason: 0.0 for reason in ("stop", "length", "abort", "error")}
        size_buckets = _build_1_2_5(max_model_len)
        self.histograms: dict[str, tuple[str, _Histogram]] = {
            "vllm:time_to_first_token_seconds": (
                "Histogram of time to first token in seconds.",
                _Histogram(TTFT_BUCKETS),
            ),
            "vllm:inter_token_latency_seconds": (
                "Histogram of inter-token latency in seconds.",
                _Histogram(ITL_BUCKETS),
            ),
            "vllm:request_time_per_output_token_seconds": (
                "Histogram of time_per_output_token_seconds per request.",
                _Histogram(ITL_BUCKETS),
            ),
            "vllm:e2e_request_latency_seconds": (
                "Histogram of e2e request latency in seconds.",
                _Histogram(REQUEST_LATENCY_BUCKETS),
            ),
            "vllm:request_queue_time_seconds": (
                "Histogram of time spent in WAITING phase for request.",
                _Histogram(REQUEST_LATENCY_BUCKETS),
            ),
            "vllm:request_inference_time_seconds": (
                "Histogram of time spent in RUNNING phase for request.",
                _Histogram(REQUEST_LATENCY_BUCKETS),
            ),
            "vllm:request_prefill_time_seconds": (
                "Histogram of time spent in PREFILL phase for request.",
                _Histogram(REQUEST_LATENCY_BUCKETS),
            ),
            "vllm:request_decode_time_seconds": (
                "Histogram of time spent in DECODE phase for request.",
                _Histogram(REQUEST_LATENCY_BUCKETS),
            ),
            "vllm:request_prompt_tokens": (
                "Number of prefill tokens processed.",
                _Histogram(size_buckets),
            ),
            "vllm:request_generation_tokens": (
                "Number of generation tokens processed.",
                _Histogram(size_buckets),
            ),
            "vllm:request_params_max_tokens": (
                "Histogram of the max_tokens request parameter.",
                _Histogram(size_buckets),
            ),
            "vllm:iteration_tokens_total": (
                "Histogram of number of tokens per engine_step.",
                _Histogram((1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)),
            ),
        }

    def observe(self, name: str, value: float, times: int = 1) -> None:
        self.histograms[name][1].observe(value, times)

    def render(
        self,
        gauges: Mapping[str, tuple[str, float]],
        cache_info: Mapping[str, str],
        max_concurrent: int,
    ) -> str:
        base = {"engine": "0", "model_name": self.model_name}
        lines: list[str] = []

        def labels(extra: Mapping[str, str] | None = None) -> str:
            merged = dict(base)
            if extra:
                merged.update(extra)
            return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(merged.items())) + "}"

        def created(name: str, documentation: str, extra: Mapping[str, str] | None = None) -> None:
            lines.append(f"# HELP {name}_created {documentation}")
            lines.append(f"# TYPE {name}_created gauge")
            lines.append(f"{name}_created{labels(extra)} {float_to_go_string(self.created)}")

        for name, (documentation, value) in gauges.items():
            lines.append(f"# HELP {name} {documentation}")
            lines.append(f"# TYPE {name} gauge")
            lines.append(f"{name}{labels()} {float_to_go_string(value)}")
        for name, documentation in self.COUNTERS.items():
            lines.append(f"# HELP {name}_total {documentation}")
            lines.append(f"# TYPE {name}_total counter")
            lines.append(f"{name}_total{labels()} {float_to_go_string(self.counters[name])}")
            created(name, documentation)
        documentation = "Count of successfully processed requests."
        lines.append(f"# HELP vllm:request_success_total {documentation}")
        lines.append("# TYPE vllm:request_success_total counter")
        for reason, value in self.success.items():
            lines.append(
                f"vllm:request_success_total{labels({'finished_reason': reason})} "
                f"{float_to_go_string(value)}"
            )
        for name, (documentation, hist) in self.histograms.items():
            lines.append(f"# HELP {name} {documentation}")
            lines.append(f"# TYPE {name} histogram")
            cumulative = 0
            for upper, count in zip(hist.buckets, hist.counts, strict=True):
                cumulative += count
                lines.append(
                    f"{name}_bucket{labels({'le': float_to_go_string(float(upper))})} "
                    f"{float_to_go_string(float(cumulative))}"
                )
            lines.append(
                f"{name}_bucket{labels({'le': '+Inf'})} {float_to_go_string(float(hist.count))}"
            )
            lines.append(f"{name}_count{labels()} {float_to_go_string(float(hist.count))}")
            lines.append(f"{name}_sum{labels()} {float_to_go_string(hist.sum)}")
            created(name, documentation)
        lines.append("# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig")
        lines.append("# TYPE vllm:cache_config_info gauge")
        info = (
            "{"
            + ",".join(f'{k}="{v}"' for k, v in sorted({**cache_info, "engine": "0"}.items()))
            + "}"
        )
        lines.append(f"vllm:cache_config_info{info} 1.0")
        lines.append(
            "# HELP kaito_max_concurrent_requests Maximum concurrent requests (max_num_seqs)."
        )
        lines.append("# TYPE kaito_max_concurrent_requests gauge")
        lines.append(f"kaito_max_concurrent_requests {float_to_go_string(float(max_concurrent))}")
        return "\n".join(lines) + "\n"


# --- the engine loop ------------------------------------------------------------------------------


@dataclass
class _Event:
    text: str = ""
    finish_reason: str | None = None
    stop_reason: str | None = None
    error: str | None = None


@dataclass
class _Seq:
    request_id: str
    prompt_tokens: int
    max_tokens: int
    stream: TokenStream
    stop: StopChecker
    arrival_v: float
    events: asyncio.Queue[_Event] = field(default_factory=asyncio.Queue)
    prefill_target: int = 0
    prefilled: int = 0
    generated: int = 0
    admitted_v: float | None = None
    first_token_v: float | None = None
    last_token_v: float | None = None
    finished: bool = False
    aborted: bool = False
    finish_reason: str | None = None

    def __post_init__(self) -> None:
        self.prefill_target = self.prompt_tokens

    @property
    def kv_tokens(self) -> int:
        return self.prompt_tokens + self.generated


class QueueFull(Exception):
    def __init__(self, waiting: int, retry_after_s: float) -> None:
        super().__init__(f"{waiting} requests waiting")
        self.waiting = waiting
        self.retry_after_s = retry_after_s


class _EngineLoop:
    """Continuous batching in simulated time (see the module docstring)."""

    def __init__(self, server: InferenceServer) -> None:
        self.server = server
        spec = server.spec
        self.model = server.model
        self.hw = server.hardware
        self.runtime = spec.runtime
        self.max_running = max(1, spec.max_concurrency)
        self.max_queue = (
            spec.max_queue if spec.max_queue is not None else max(16, 2 * self.max_running)
        )
        self.kv_capacity = latency.kv_capacity_tokens(self.model, self.hw)
        self.chunk = latency.prefill_chunk_tokens(self.hw)
        self.waiting: deque[_Seq] = deque()
        self.running: list[_Seq] = []
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.anchor_real = time.monotonic()
        self.anchor_v = 0.0
        self.v = 0.0
        self.last_log_v = 0.0
        self.log_prompt_tokens = 0
        self.log_gen_tokens = 0

    # clocks
    def now_v(self) -> float:
        return self.anchor_v + (time.monotonic() - self.anchor_real) * self.server.spec.speed

    def _reanchor(self) -> None:
        now = time.monotonic()
        current = self.anchor_v + (now - self.anchor_real) * self.server.spec.speed
        self.v = max(self.v, current)
        self.anchor_v = self.v
        self.anchor_real = now

    @property
    def kv_used(self) -> int:
        return sum(s.kv_tokens for s in self.running)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name="kaitosim-engine-loop")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
            self.task = None

    def submit(self, seq: _Seq) -> None:
        if len(self.waiting) >= self.max_queue and len(self.running) >= self.max_running:
            itl = latency.decode_itl_seconds(
                self.model, self.hw, runtime=self.runtime, batch=len(self.running)
            )
            drain = max(
                1.0, itl * 128 * len(self.waiting) / self.max_running / self.server.spec.speed
            )
            raise QueueFull(len(self.waiting), drain)
        self.waiting.append(seq)
        self.wakeup.set()

    def abort(self, seq: _Seq) -> None:
        if seq.finished:
            return
        seq.aborted = True
        seq.stream.close()
        if seq in self.waiting:
            self.waiting.remove(seq)
            self._finish(seq, "abort")

    def abort_all(self, error: str | None = None) -> None:
        for seq in list(self.waiting) + list(self.running):
            seq.stream.close()
            if error:
                seq.events.put_nowait(_Event(error=error))
            self._finish(seq, "error" if error else "abort", quiet=True)
        self.waiting.clear()
        self.running.clear()

    def _finish(
        self, seq: _Seq, reason: str, stop_reason: str | None = None, quiet: bool = False
    ) -> None:
        if seq.finished:
            return
        seq.finished = True
        seq.finish_reason = reason
        if seq in self.running:
            self.running.remove(seq)
        metrics = self.server.metrics
        metrics.success[reason if reason in metrics.success else "abort"] += 1
        now = self.v
        metrics.observe("vllm:e2e_request_latency_seconds", now - seq.arrival_v)
        metrics.observe("vllm:request_prompt_tokens", seq.prompt_tokens)
        metrics.observe("vllm:request_generation_tokens", seq.generated)
        metrics.observe("vllm:request_params_max_tokens", seq.max_tokens)
        if seq.admitted_v is not None:
            metrics.observe("vllm:request_queue_time_seconds", seq.admitted_v - seq.arrival_v)
            metrics.observe("vllm:request_inference_time_seconds", now - seq.admitted_v)
        if seq.first_token_v is not None and seq.admitted_v is not None:
            metrics.observe("vllm:request_prefill_time_seconds", seq.first_token_v - seq.admitted_v)
            metrics.observe("vllm:request_decode_time_seconds", now - seq.first_token_v)
            if seq.generated > 1:
                metrics.observe(
                    "vllm:request_time_per_output_token_seconds",
                    (now - seq.first_token_v) / (seq.generated - 1),
                )
        if not quiet and reason in ("stop", "length"):
            seq.events.put_nowait(_Event(finish_reason=reason, stop_reason=stop_reason))

    def _admit(self) -> None:
        while self.waiting and len(self.running) < self.max_running:
            seq = self.waiting[0]
            if seq.aborted:
                self.waiting.popleft()
                continue
            need = seq.prefill_target + latency.KV_BLOCK_SIZE
            if self.running and self.kv_used + need > self.kv_capacity:
                break
            self.waiting.popleft()
            if seq.admitted_v is None:
                seq.admitted_v = self.v
            self.running.append(seq)

    def _preempt_if_needed(self) -> None:
        while len(self.running) > 1 and self.kv_used > self.kv_capacity:
            victim = self.running.pop()
            victim.prefill_target = victim.prompt_tokens + victim.generated
            victim.prefilled = 0
            self.waiting.appendleft(victim)
            self.server.metrics.counters["vllm:num_preemptions"] += 1

    async def _run(self) -> None:
        try:
            while True:
                for seq in [s for s in self.running if s.aborted]:
                    self._finish(seq, "abort")
                if self.server.fault == "hang" or (not self.running and not self.waiting):
                    self.wakeup.clear()
                    await self.wakeup.wait()
                    self._reanchor()
                    continue
                self._step_once_prepare()
                await self._step()
        except asyncio.CancelledError:
            raise
        except Exception:  # pragma: no cover - a bug here must not hang clients silently
            logger.exception("kaitosim engine loop failed")
            self.abort_all(error=ENGINE_DEAD_MESSAGE)
            raise

    def _step_once_prepare(self) -> None:
        self._admit()
        self._preempt_if_needed()

    async def _step(self) -> None:
        spec = self.server.spec
        budget = self.chunk
        prefill_tokens = 0
        prefill_ctx = 0
        completing: list[_Seq] = []
        decoding = [s for s in self.running if s.prefilled >= s.prefill_target]
        for seq in self.running:
            if seq.prefilled < seq.prefill_target and budget > 0:
                take = min(budget, seq.prefill_target - seq.prefilled)
                seq.prefilled += take
                budget -= take
                prefill_tokens += take
                prefill_ctx = max(prefill_ctx, seq.prefilled)
                if seq.prefilled >= seq.prefill_target:
                    completing.append(seq)
        ctx = sum(s.kv_tokens for s in decoding)
        duration = latency.step_seconds(
            self.model,
            self.hw,
            runtime=self.runtime,
            batch=len(decoding),
            context_tokens=ctx,
            prefill_tokens=prefill_tokens,
            prefill_context=prefill_ctx,
        )
        if self.server.fault == "slow":
            duration *= spec.slow_factor
        repeat = 1
        real = duration / spec.speed
        if not prefill_tokens and decoding and real < MIN_REAL_TICK_S and not self.waiting:
            room = min(s.max_tokens - s.generated for s in decoding)
            repeat = max(1, min(math.ceil(MIN_REAL_TICK_S / max(real, 1e-9)), room, 256))
        self.v += duration * repeat
        target = self.anchor_real + (self.v - self.anchor_v) / spec.speed
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            if delay < -0.05:
                self._reanchor()
            await asyncio.sleep(0)
        if self.server.fault in ("crash", "error"):
            return
        metrics = self.server.metrics
        metrics.observe("vllm:iteration_tokens_total", len(decoding) + prefill_tokens, repeat)
        metrics.counters["vllm:prompt_tokens"] += prefill_tokens
        metrics.counters["vllm:prefix_cache_queries"] += prefill_tokens
        self.log_prompt_tokens += prefill_tokens
        for seq in decoding:
            if seq.finished or seq.aborted:
                continue
            self._emit(seq, repeat, duration)
        for seq in completing:
            if seq.finished or seq.aborted:
                continue
            if seq.first_token_v is None:
                seq.first_token_v = self.v
                metrics.observe("vllm:time_to_first_token_seconds", self.v - seq.arrival_v)
            self._emit(seq, 1, duration, first=True)
        self._maybe_log()

    def _emit(self, seq: _Seq, count: int, step: float, first: bool = False) -> None:
        metrics = self.server.metrics
        emitted = 0
        for _ in range(count):
            piece = seq.stream.poll()
            if piece is None:
                if seq.stream.finished:
                    seq.generated += 1  # the EOS token
                    emitted += 1
                    tail = seq.stop.flush()
                    if tail:
                        seq.events.put_nowait(_Event(text=tail))
                    self._finish(seq, "stop")
                break
            seq.generated += 1
            emitted += 1
            text, matched = seq.stop.feed(piece)
            if text:
                seq.events.put_nowait(_Event(text=text))
            if matched is not None:
                self._finish(seq, "stop", stop_reason=matched)
                break
            if seq.generated >= seq.max_tokens:
                tail = seq.stop.flush()
                if tail:
                    seq.events.put_nowait(_Event(text=tail))
                self._finish(seq, "length")
                break
        if emitted:
            metrics.counters["vllm:generation_tokens"] += emitted
            self.log_gen_tokens += emitted
            itl_samples = emitted - (1 if first else 0)
            if itl_samples > 0:
                metrics.observe("vllm:inter_token_latency_seconds", step, itl_samples)
            seq.last_token_v = self.v

    def _maybe_log(self) -> None:
        elapsed = self.v - self.last_log_v
        if elapsed < LOG_INTERVAL_SIM_S:
            return
        if self.log_prompt_tokens or self.log_gen_tokens:
            usage = 100.0 * self.kv_used / max(1, self.kv_capacity)
            self.server.log(
                "INFO",
                "loggers.py:123",
                "Engine 000: Avg prompt throughput: "
                f"{self.log_prompt_tokens / elapsed:.1f} tokens/s, "
                f"Avg generation throughput: {self.log_gen_tokens / elapsed:.1f} tokens/s, "
                f"Running: {len(self.running)} reqs, Waiting: {len(self.waiting)} reqs, "
                f"GPU KV cache usage: {usage:.1f}%, Prefix cache hit rate: 0.0%",
            )
        self.last_log_v = self.v
        self.log_prompt_tokens = 0
        self.log_gen_tokens = 0


# --- the server ----------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class InferenceServer:
    """A running simulated inference pod. Create it with :func:`start_inference_server`."""

    def __init__(self, spec: InferenceSpec, host: str = "127.0.0.1", port: int = 0) -> None:
        if spec.runtime not in ("vllm", "transformers"):
            raise ValueError(f"runtime must be 'vllm' or 'transformers', got {spec.runtime!r}")
        if spec.speed <= 0:
            raise ValueError("speed must be > 0")
        self.spec = spec
        self.host = host
        self.port = port
        self.engine: TextEngine = get_engine(spec.engine)
        self.model = latency.model_profile(spec.served_model)
        self.hardware = latency.hardware_for(
            spec.instance_type, spec.gpu_count if spec.gpu_count > 0 else None, spec.nodes
        )
        if spec.gpu_count == 0:
            self.hardware = latency.Hardware(
                spec.instance_type, latency.GPU_SPECS["CPU"], 0, spec.nodes
            )
        versions = latency.runtime_versions()
        self.vllm_version = spec.vllm_version or versions.get("vllm", "0.25.1")
        self.transformers_version = versions.get("transformers", "5.14.1")
        self.legacy_errors = version_tuple(self.vllm_version) < (0, 10, 1)
        self.metrics = _Metrics(spec.served_model, spec.max_model_len)
        self.fault: str | None = None
        self.created = int(time.time())
        self._logs: deque[str] = deque(maxlen=MAX_LOG_LINES)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transports: set[asyncio.Transport] = set()
        self._fault_lock = asyncio.Lock()
        self.loop_engine = _EngineLoop(self)

    # public API ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        """Stop serving (like deleting the pod): in-flight streams are dropped."""
        self.loop_engine.abort_all()
        for transport in list(self._transports):
            transport.abort()
        await self.loop_engine.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._site = None

    def log_lines(self) -> list[str]:
        """vLLM-like (or transformers-like) startup and request log lines, oldest first."""
        return list(self._logs)

    def peak_tokens_per_minute(self) -> int:
        """Tokens per minute that KAITO's startup benchmark would report for this pod."""
        return int(self.benchmark_result().tpm)

    def benchmark_result(self) -> latency.BenchmarkResult:
        spec = self.spec
        return latency.kaito_benchmark(
            spec.served_model,
            spec.instance_type,
            self.hardware.gpu_count,
            spec.nodes,
            spec.runtime,
            spec.max_concurrency,
        )

    def benchmark_log_lines(self) -> list[str]:
        """The KAITO_BENCHMARK_CONFIG / KAITO_BENCHMARK_RESULT lines of KAITO's benchmark probe."""
        result = self.benchmark_result()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        config = (
            f'{{"duration_sec":{int(result.duration_sec)},"input_tokens":{result.input_tokens},'
            f'"output_tokens":{result.output_tokens},"max_concurrency":{result.max_concurrency}}}'
        )
        return [
            f"KAITO_BENCHMARK_CONFIG {stamp} {config}",
            f'KAITO_BENCHMARK_RESULT {stamp} {{"vllm_total_tpm":{result.tpm},'
            f'"ttft_avg_ms":{result.ttft_avg_ms},'
            f'"tpot_avg_ms":{result.tpot_avg_ms}}}',
        ]

    def set_fault(self, name: str | None) -> None:
        """Inject a fault (``crash``, ``slow``, ``stream_cut``, ``error``, ``hang``); None clears.

        ``crash`` drops every connection and stops listening (connection refused) until cleared,
        when the pod "restarts" on the same port. ``error``: the engine is dead (``/health`` 503,
        requests 500). ``hang``: the engine stops stepping. ``slow``: steps take ``slow_factor`` x
        longer. ``stream_cut``: streams are cut after ``stream_cut_after_tokens`` tokens. Safe to
        call from any thread; use :meth:`apply_fault` to await completion.
        """
        if name is not None and name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
        loop = self._loop
        if loop is None:
            raise RuntimeError("server not started")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.create_task(self.apply_fault(name))
        else:
            asyncio.run_coroutine_threadsafe(self.apply_fault(name), loop)

    async def apply_fault(self, name: str | None) -> None:
        if name is not None and name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
        async with self._fault_lock:
            previous = self.fault
            self.fault = name
            if name == "crash" and previous != "crash":
                self.log("ERROR", "core.py:740", "EngineCore encountered a fatal error.")
                self.log("ERROR", "async_llm.py:420", "AsyncLLM output_handler failed.")
                self.loop_engine.abort_all()
                for transport in list(self._transports):
                    transport.abort()
                if self._site is not None:
                    await self._site.stop()
                    self._site = None
            elif name == "error" and previous != "error":
                self.log("ERROR", "core.py:740", "EngineCore encountered a fatal error.")
                self.loop_engine.abort_all(error=ENGINE_DEAD_MESSAGE)
            elif previous == "crash" and name != "crash":
                await self._listen()
                self._startup_logs(restart=True)
            if name in (None, "slow", "stream_cut") and previous == "hang":
                self.loop_engine.wakeup.set()
            self.loop_engine.wakeup.set()

    # lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        spec = self.spec
        if spec.max_model_len > self.model.token_limit and spec.runtime == "vllm":
            msg = (
                f"User-specified max_model_len ({spec.max_model_len}) is greater than the derived "
                f"max_model_len (max_position_embeddings={self.model.token_limit} or "
                "model_max_length=None "
                f"in model's config.json)."
            )
            self._fail_or_warn(msg)
        capacity = latency.kv_capacity_tokens(self.model, self.hardware)
        if spec.runtime == "vllm" and not self.hardware.is_cpu and capacity < spec.max_model_len:
            need = spec.max_model_len * self.model.kv_bytes_per_token / latency.GIB
            have = capacity * self.model.kv_bytes_per_token / latency.GIB
            msg = (
                "To serve at least one request with the models's max seq len "
                f"({spec.max_model_len}), ({need:.2f} GiB KV cache is needed, which is larger "
                f"than the available KV cache memory ({have:.2f} GiB). Based on the available "
                f"memory, the estimated maximum model length is {capacity}. Try increasing "
                "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the "
                "engine."
            )
            self._fail_or_warn(msg)
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        self._routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await self._listen()
        self.loop_engine.start()
        self._startup_logs()
        if spec.run_benchmark:
            self._logs.extend(self.benchmark_log_lines())

    def _fail_or_warn(self, message: str) -> None:
        if self.spec.strict_memory:
            self.log("ERROR", "core.py:708", f"EngineCore failed to start. ValueError: {message}")
            raise InferenceStartupError(message, self.log_lines())
        self.log("WARNING", "kv_cache_utils.py:700", message)

    async def _listen(self) -> None:
        assert self._runner is not None
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self._site = site
        if self.port == 0:
            server = site._server
            assert server is not None
            sockets = getattr(server, "sockets", None) or []
            self.port = int(sockets[0].getsockname()[1])

    # logging ---------------------------------------------------------------------------------

    def log(self, level: str, where: str, message: str) -> None:
        stamp = time.strftime("%m-%d %H:%M:%S")
        if self.spec.runtime == "vllm":
            self._logs.append(f"{level} {stamp} [{where}] {message}")
        else:
            self._logs.append(f"{level} {stamp} {where}] {message}")

    def _access_log(self, request: web.Request, status: int) -> None:
        peer = request.remote or "127.0.0.1"
        port = 0
        if request.transport is not None:
            info = request.transport.get_extra_info("peername")
            if isinstance(info, tuple) and len(info) >= 2:
                port = int(info[1])
        reason = {
            200: "OK",
            400: "Bad Request",
            401: "Unauthorized",
            404: "Not Found",
            405: "Method Not Allowed",
            422: "Unprocessable Entity",
            429: "Too Many Requests",
            500: "Internal Server Error",
            503: "Service Unavailable",
        }.get(status, "")
        self._logs.append(
            f'INFO:     {peer}:{port} - "{request.method} {request.path_qs} HTTP/1.1" '
            f"{status} {reason}"
        )

    def _startup_logs(self, restart: bool = False) -> None:
        spec = self.spec
        model = self.model
        hw = self.hardware
        port = spec.container_port
        self.log(
            "INFO",
            "engine.py:57",
            f"kaitosim engine: {self.engine.name} (simulated {hw.gpu.name} x "
            f"{hw.total_gpus}, speed {spec.speed:g})",
        )
        if spec.runtime == "transformers":
            self.log("INFO", "inference_api.py:171", "Model loaded successfully")
            self.log("INFO", "inference_api.py:172", f"Model: {model.architecture}({model.hf_id})")
            self._logs.append("INFO:     Started server process [1]")
            self._logs.append("INFO:     Waiting for application startup.")
            self._logs.append("INFO:     Application startup complete.")
            self._logs.append(
                f"INFO:     Uvicorn running on http://0.0.0.0:{port} (Press CTRL+C to quit)"
            )
            return
        tp = hw.gpu_count if hw.gpu_count > 0 else 1
        self.log("INFO", "api_server.py:1896", f"vLLM API server version {self.vllm_version}")
        args = {
            "model": "/workspace/vllm/weights",
            "served_model_name": [spec.served_model],
            "max_model_len": spec.max_model_len,
            "tensor_parallel_size": tp,
            "pipeline_parallel_size": spec.nodes,
            "gpu_memory_utilization": latency.GPU_MEMORY_UTILIZATION,
            "max_num_seqs": spec.max_concurrency,
            "port": port,
        }
        self.log("INFO", "utils.py:328", f"non-default args: {args}")
        self.log("INFO", "model.py:547", f"Resolved architecture: {model.architecture}")
        self.log("INFO", "model.py:1510", f"Using max model len {spec.max_model_len}")
        self.log(
            "INFO",
            "scheduler.py:205",
            f"Chunked prefill is enabled with max_num_batched_tokens={self.loop_engine.chunk}.",
        )
        load_s = model.weights_gib / max(1, hw.total_gpus) / 1.5 + 4.0
        self.log(
            "INFO",
            "gpu_model_runner.py:2602",
            f"Model loading took {model.weights_gib / max(1, tp):.4f} GiB and {load_s:.6f} seconds",
        )
        capacity = self.loop_engine.kv_capacity
        self.log("INFO", "kv_cache_utils.py:1087", f"GPU KV cache size: {capacity:,} tokens")
        self.log(
            "INFO",
            "kv_cache_utils.py:1091",
            f"Maximum concurrency for {spec.max_model_len:,} tokens per "
            f"request: {capacity / max(1, spec.max_model_len):.2f}x",
        )
        self.log(
            "INFO", "api_server.py:1814", f"Starting vLLM API server {0} on http://0.0.0.0:{port}"
        )
        self.log("INFO", "launcher.py:29", "Available routes are:")
        gets = ("/health", "/metrics", "/v1/models", "/version", "/ping")
        for route in (
            "/health",
            "/metrics",
            "/ping",
            "/tokenize",
            "/detokenize",
            "/v1/models",
            "/version",
            "/v1/chat/completions",
            "/v1/completions",
        ):
            self.log(
                "INFO",
                "launcher.py:37",
                f"Route: {route}, Methods: {'GET' if route in gets else 'POST'}",
            )
        self._logs.append("INFO:     Started server process [1]")
        self._logs.append("INFO:     Waiting for application startup.")
        self._logs.append("INFO:     Application startup complete.")

    # routing ---------------------------------------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        add = app.router.add_route
        if self.spec.runtime == "vllm":
            add("GET", "/health", self._health)
            add("GET", "/ping", self._health)
            add("POST", "/ping", self._health)
            add("GET", "/version", self._version)
            add("GET", "/v1/models", self._models)
            add("POST", "/v1/chat/completions", self._chat)
            add("POST", "/v1/completions", self._completions)
            add("POST", "/tokenize", self._tokenize)
            add("POST", "/detokenize", self._detokenize)
            add("GET", "/metrics", self._prometheus)
        else:
            add("GET", "/", self._tf_home)
            add("GET", "/health", self._tf_health)
            add("GET", "/healthz", self._tf_health)
            add("POST", "/chat", self._tf_chat)
            add("GET", "/metrics", self._tf_metrics)
            add("GET", "/v1/metrics", self._tf_metrics)
            add("GET", "/v1/models", self._models)
            add("POST", "/v1/chat/completions", self._chat)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        if self.fault == "crash" and transport is not None:
            transport.abort()
            raise ConnectionResetError("kaitosim: crashed")
        if transport is not None:
            self._transports.add(transport)
        status = 500
        try:
            try:
                response = await handler(request)
            except ApiError as err:
                response = self._render_error(err)
            except web.HTTPNotFound:
                response = json_response({"detail": "Not Found"}, 404)
            except web.HTTPMethodNotAllowed:
                response = json_response({"detail": "Method Not Allowed"}, 405)
            status = response.status
            if not response.prepared:
                response.headers["server"] = "uvicorn"
                response.headers["x-kaitosim-engine"] = self.engine.name
            return response
        finally:
            if transport is not None:
                self._transports.discard(transport)
            self._access_log(request, status)

    def _render_error(self, err: ApiError) -> web.Response:
        if self.spec.runtime == "transformers":
            return json_response({"detail": err.message}, err.status, err.headers)
        if self.legacy_errors:
            body: dict[str, Any] = {
                "object": "error",
                "message": err.message,
                "type": err.err_type,
                "param": err.param,
                "code": err.status,
            }
        else:
            body = {
                "error": {
                    "message": err.message,
                    "type": err.err_type,
                    "param": err.param,
                    "code": err.status,
                }
            }
        return json_response(body, err.status, err.headers)

    def _error_payload(self, message: str, err_type: str, status: int) -> dict[str, Any]:
        if self.legacy_errors:
            return {
                "object": "error",
                "message": message,
                "type": err_type,
                "param": None,
                "code": status,
            }
        return {"error": {"message": message, "type": err_type, "param": None, "code": status}}

    # simple routes ---------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        if self.fault == "error":
            return web.Response(status=503)
        return web.Response(status=200)

    async def _version(self, request: web.Request) -> web.Response:
        return json_response({"version": self.vllm_version})

    async def _models(self, request: web.Request) -> web.Response:
        card = {
            "id": self.spec.served_model,
            "object": "model",
            "created": self.created,
            "owned_by": "vllm" if self.spec.runtime == "vllm" else "transformers",
            "root": self.model.hf_id,
            "parent": None,
            "max_model_len": self.spec.max_model_len,
            "permission": [
                {
                    "id": random_id("modelperm-"),
                    "object": "model_permission",
                    "created": self.created,
                    "allow_create_engine": False,
                    "allow_sampling": True,
                    "allow_logprobs": True,
                    "allow_search_indices": False,
                    "allow_view": True,
                    "allow_fine_tuning": False,
                    "organization": "*",
                    "group": None,
                    "is_blocking": False,
                }
            ],
        }
        return json_response({"object": "list", "data": [card]})

    async def _prometheus(self, request: web.Request) -> web.Response:
        loop = self.loop_engine
        gauges = {
            "vllm:num_requests_running": (
                "Number of requests in model execution batches.",
                float(len(loop.running)),
            ),
            "vllm:num_requests_waiting": (
                "Number of requests waiting to be processed.",
                float(len(loop.waiting)),
            ),
            "vllm:kv_cache_usage_perc": (
                "KV-cache usage. 1 means 100 percent usage.",
                loop.kv_used / max(1, loop.kv_capacity),
            ),
        }
        cache_info = {
            "block_size": str(latency.KV_BLOCK_SIZE),
            "cache_dtype": "auto",
            "enable_prefix_caching": "True",
            "gpu_memory_utilization": str(latency.GPU_MEMORY_UTILIZATION),
            "num_cpu_blocks": "None",
            "num_gpu_blocks": str(loop.kv_capacity // latency.KV_BLOCK_SIZE),
            "num_gpu_blocks_override": "None",
            "swap_space": "4",
        }
        text = self.metrics.render(gauges, cache_info, self.spec.max_concurrency)
        return web.Response(
            text=text,
            content_type="text/plain",
            charset="utf-8",
            headers={"x-kaitosim-engine": self.engine.name},
        )

    async def _tokenize(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if "messages" in body:
            messages = body.get("messages") or []
            count = self.engine.chat_tokens(messages)
            text = render_chat(messages)
        else:
            text = str(body.get("prompt", ""))
            count = self.engine.prompt_tokens(text)
        pieces = split_pieces(text)
        tokens = [abs(hash(p)) % 100000 for p in pieces][:count]
        tokens += [0] * max(0, count - len(tokens))
        return json_response(
            {
                "count": count,
                "max_model_len": self.spec.max_model_len,
                "tokens": tokens,
                "token_strs": None,
            }
        )

    async def _detokenize(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        tokens = body.get("tokens") or []
        return json_response({"prompt": " ".join(f"<{t}>" for t in tokens)})

    # request parsing -------------------------------------------------------------------------

    async def _json(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            body = json.loads(raw or b"null")
        except ValueError as exc:
            if self.spec.runtime == "transformers":
                raise ApiError(422, "JSON decode error") from exc
            raise ApiError(
                400,
                f"[{{'type': 'json_invalid', 'loc': ('body', 0), 'msg': 'JSON decode error', "
                f"'input': {{}}, 'ctx': {{'error': '{exc.args[0] if exc.args else exc}'}}}}]",
            ) from exc
        if not isinstance(body, dict):
            raise ApiError(
                400,
                f"[{{'type': 'model_attributes_type', 'loc': ('body',), 'msg': 'Input should be "
                f"a valid dictionary or object to extract fields from', 'input': {body!r}}}]",
            )
        return body

    def _check_model(self, body: Mapping[str, Any]) -> None:
        model = body.get("model")
        if model is None or model == self.spec.served_model:
            return
        raise ApiError(404, f"The model `{model}` does not exist.", "NotFoundError", "model")

    def _sampling(
        self, body: Mapping[str, Any], prompt_tokens: int, default_max: int | None, chat: bool
    ) -> SamplingParams:
        def number(name: str, default: float) -> float:
            value = body.get(name)
            if value is None:
                return default
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ApiError(
                    400,
                    f"[{{'type': 'float_parsing', 'loc': ('body', '{name}'), 'msg': 'Input should "
                    f"be a valid number', 'input': {value!r}}}]",
                )
            return float(value)

        temperature = number("temperature", 1.0)
        top_p = number("top_p", 1.0)
        if temperature < 0:
            raise ApiError(
                400, f"temperature must be non-negative, got {temperature}.", param="temperature"
            )
        if not 0 < top_p <= 1:
            raise ApiError(400, f"top_p must be in (0, 1], got {top_p}.", param="top_p")
        n = body.get("n", 1)
        if n not in (None, 1):
            raise ApiError(400, "kaitosim simulates n=1 only.", param="n")
        max_tokens = body.get("max_completion_tokens") if chat else None
        if max_tokens is None:
            max_tokens = body.get("max_tokens", default_max)
        limit = self.spec.max_model_len
        if prompt_tokens >= limit:
            raise ApiError(
                400,
                f"This model's maximum context length is {limit} tokens. However, your request has "
                f"{prompt_tokens} input tokens. Please reduce the length of the input messages. "
                f"(parameter=input_tokens, value={prompt_tokens})",
                param="input_tokens",
            )
        if max_tokens is not None:
            if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
                raise ApiError(
                    400,
                    f"[{{'type': 'int_parsing', 'loc': ('body', 'max_tokens'), 'msg': 'Input "
                    f"should be a valid integer', 'input': {max_tokens!r}}}]",
                )
            if max_tokens < 1:
                raise ApiError(
                    400, f"max_tokens must be at least 1, got {max_tokens}.", param="max_tokens"
                )
            if prompt_tokens + max_tokens > limit:
                raise ApiError(
                    400,
                    f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This "
                    f"model's maximum context length is {limit} tokens and your request has "
                    f"{prompt_tokens} input tokens ({max_tokens} > {limit} - {prompt_tokens}). "
                    f"(parameter=max_tokens, value={max_tokens})",
                    param="max_tokens",
                )
        else:
            max_tokens = limit - prompt_tokens
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ApiError(
                400,
                f"[{{'type': 'int_parsing', 'loc': ('body', 'seed'), 'msg': 'Input should be a "
                f"valid integer', 'input': {seed!r}}}]",
            )
        stop = body.get("stop")
        stops = [stop] if isinstance(stop, str) else [str(s) for s in (stop or [])]
        if body.get("stream_options") is not None and not body.get("stream"):
            raise ApiError(
                400,
                "Stream options can only be defined when `stream=True`.",
                param="stream_options",
            )
        return SamplingParams(
            max_tokens=int(max_tokens),
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            stop=stops,
            include_stop_str_in_output=bool(body.get("include_stop_str_in_output")),
            ignore_eos=bool(body.get("ignore_eos")),
            min_tokens=int(body.get("min_tokens") or 0),
        )

    async def _submit(
        self,
        prompt: str,
        prompt_tokens: int,
        params: SamplingParams,
        chat: bool,
        messages: Sequence[Mapping[str, Any]] | None,
        prefix: str,
    ) -> _Seq:
        if self.fault == "error":
            raise ApiError(500, ENGINE_DEAD_MESSAGE, "InternalServerError")
        api = latency.API_OVERHEAD_S.get(self.spec.runtime, 0.045)
        if self.fault == "slow":
            api *= self.spec.slow_factor
        await asyncio.sleep(api / self.spec.speed)
        seq = _Seq(
            request_id=random_id(prefix),
            prompt_tokens=prompt_tokens,
            max_tokens=params.max_tokens,
            stream=self.engine.generate(prompt, params, chat=chat, messages=messages),
            stop=StopChecker(params.stop, params.include_stop_str_in_output),
            arrival_v=self.loop_engine.now_v() - api,
        )
        try:
            self.loop_engine.submit(seq)
        except QueueFull as full:
            seq.stream.close()
            retry = max(1, math.ceil(full.retry_after_s))
            raise ApiError(
                429,
                f"The server is overloaded: {full.waiting} requests are waiting (limit "
                f"{self.loop_engine.max_queue}). Please retry later.",
                "TooManyRequestsError",
                headers={"Retry-After": str(retry)},
            ) from full
        return seq

    # chat / completions ----------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        self._check_model(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            if messages is None:
                raise ApiError(
                    400,
                    f"[{{'type': 'missing', 'loc': ('body', 'messages'), 'msg': 'Field required', "
                    f"'input': {body!r}}}]",
                )
            raise ApiError(400, "messages must be a non-empty list of messages", param="messages")
        for message in messages:
            if not isinstance(message, dict) or "role" not in message:
                raise ApiError(
                    400,
                    f"[{{'type': 'missing', 'loc': ('body', 'messages', 0, 'role'), 'msg': 'Field "
                    f"required', 'input': {message!r}}}]",
                )
        prompt_tokens = self.engine.chat_tokens(messages)
        params = self._sampling(body, prompt_tokens, None, chat=True)
        prompt = render_chat(messages)
        seq = await self._submit(prompt, prompt_tokens, params, True, messages, "chatcmpl-")
        if body.get("stream"):
            return await self._stream(request, seq, body, chat=True)
        return await self._collect(request, seq, chat=True)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        self._check_model(body)
        prompt_value = body.get("prompt")
        if prompt_value is None:
            raise ApiError(
                400,
                f"[{{'type': 'missing', 'loc': ('body', 'prompt'), 'msg': 'Field required', "
                f"'input': {body!r}}}]",
            )
        if (
            isinstance(prompt_value, list)
            and len(prompt_value) == 1
            and isinstance(prompt_value[0], (str, list))
        ):
            prompt_value = prompt_value[0]
        if isinstance(prompt_value, str):
            prompt = prompt_value
            prompt_tokens = self.engine.prompt_tokens(prompt)
        elif isinstance(prompt_value, list) and all(isinstance(t, int) for t in prompt_value):
            prompt = " ".join(str(t) for t in prompt_value)
            prompt_tokens = len(prompt_value)
        else:
            raise ApiError(
                400,
                "kaitosim simulates one prompt per request (a string or a list of token ids).",
                param="prompt",
            )
        params = self._sampling(body, prompt_tokens, 16, chat=False)
        seq = await self._submit(prompt, prompt_tokens, params, False, None, "cmpl-")
        if body.get("stream"):
            return await self._stream(
                request, seq, body, chat=False, echo=prompt if body.get("echo") else ""
            )
        return await self._collect(
            request, seq, chat=False, echo=prompt if body.get("echo") else ""
        )

    def _usage(self, seq: _Seq) -> dict[str, Any]:
        return {
            "prompt_tokens": seq.prompt_tokens,
            "total_tokens": seq.prompt_tokens + seq.generated,
            "completion_tokens": seq.generated,
            "prompt_tokens_details": None,
        }

    async def _collect(
        self, request: web.Request, seq: _Seq, chat: bool, echo: str = ""
    ) -> web.Response:
        parts: list[str] = []
        finish: _Event | None = None
        try:
            while finish is None:
                event = await seq.events.get()
                if event.error:
                    raise ApiError(500, event.error, "InternalServerError")
                if event.text:
                    parts.append(event.text)
                if event.finish_reason:
                    finish = event
        finally:
            self.loop_engine.abort(seq)
        text = "".join(parts)
        created = int(time.time())
        model = self.spec.served_model
        if chat:
            body: dict[str, Any] = {
                "id": seq.request_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": text,
                            "refusal": None,
                            "annotations": None,
                            "audio": None,
                            "function_call": None,
                            "tool_calls": [],
                            "reasoning_content": None,
                        },
                        "logprobs": None,
                        "finish_reason": finish.finish_reason,
                        "stop_reason": finish.stop_reason,
                    }
                ],
                "service_tier": None,
                "system_fingerprint": None,
                "usage": self._usage(seq),
                "prompt_logprobs": None,
                "kv_transfer_params": None,
            }
        else:
            body = {
                "id": seq.request_id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "text": echo + text,
                        "logprobs": None,
                        "finish_reason": finish.finish_reason,
                        "stop_reason": finish.stop_reason,
                        "prompt_logprobs": None,
                    }
                ],
                "service_tier": None,
                "system_fingerprint": None,
                "usage": self._usage(seq),
                "kv_transfer_params": None,
            }
        return json_response(body)

    async def _stream(
        self, request: web.Request, seq: _Seq, body: Mapping[str, Any], chat: bool, echo: str = ""
    ) -> web.StreamResponse:
        options = body.get("stream_options") or {}
        include_usage = (
            bool(options.get("include_usage", True))
            if body.get("stream_options") is not None
            else False
        )
        continuous = include_usage and bool(options.get("continuous_usage_stats"))
        created = int(time.time())
        model = self.spec.served_model
        response = web.StreamResponse(
            status=200,
            headers={
                "content-type": "text/event-stream; charset=utf-8",
                "server": "uvicorn",
                "x-kaitosim-engine": self.engine.name,
            },
        )
        await response.prepare(request)
        sent_tokens = 0
        first = True
        cut_after = self.spec.stream_cut_after_tokens
        try:
            while True:
                event = await seq.events.get()
                batch = [event]
                while not seq.events.empty():
                    batch.append(seq.events.get_nowait())
                out: list[bytes] = []
                done = False
                for ev in batch:
                    if ev.error:
                        out.append(sse(self._error_payload(ev.error, "InternalServerError", 500)))
                        out.append(sse("[DONE]"))
                        done = True
                        break
                    if chat:
                        if first:
                            chunk: dict[str, Any] = {
                                "id": seq.request_id,
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": model,
                                "choices": [
                                    {
                                        "index": 0,
                                        "delta": {"role": "assistant", "content": ""},
                                        "logprobs": None,
                                        "finish_reason": None,
                                    }
                                ],
                            }
                            if continuous:
                                chunk["usage"] = {
                                    "prompt_tokens": seq.prompt_tokens,
                                    "total_tokens": seq.prompt_tokens,
                                    "completion_tokens": 0,
                                }
                            out.append(sse(chunk))
                            first = False
                        choice: dict[str, Any] = {
                            "index": 0,
                            "delta": {"content": ev.text},
                            "logprobs": None,
                            "finish_reason": ev.finish_reason,
                        }
                        if ev.finish_reason:
                            choice["stop_reason"] = ev.stop_reason
                        chunk = {
                            "id": seq.request_id,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": model,
                            "choices": [choice],
                        }
                    else:
                        text = ev.text
                        if first and echo:
                            text = echo + text
                        first = False
                        chunk = {
                            "id": seq.request_id,
                            "object": "text_completion",
                            "created": created,
                            "model": model,
                            "choices": [
                                {
                                    "index": 0,
                                    "text": text,
                                    "logprobs": None,
                                    "finish_reason": ev.finish_reason,
                                    "stop_reason": ev.stop_reason,
                                }
                            ],
                            "usage": None,
                        }
                    if continuous:
                        chunk["usage"] = {
                            "prompt_tokens": seq.prompt_tokens,
                            "total_tokens": seq.prompt_tokens + seq.generated,
                            "completion_tokens": seq.generated,
                        }
                    out.append(sse(chunk))
                    sent_tokens += 1
                    if ev.finish_reason:
                        if include_usage:
                            final: dict[str, Any] = {
                                "id": seq.request_id,
                                "object": "chat.completion.chunk" if chat else "text_completion",
                                "created": created,
                                "model": model,
                                "choices": [],
                                "usage": self._usage(seq),
                            }
                            out.append(sse(final))
                        out.append(sse("[DONE]"))
                        done = True
                        break
                if self.fault == "stream_cut" and sent_tokens >= cut_after and not done:
                    await response.write(b"".join(out))
                    if request.transport is not None:
                        request.transport.abort()
                    return response
                await response.write(b"".join(out))
                if done:
                    break
            await response.write_eof()
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.loop_engine.abort(seq)
        return response

    # transformers runtime --------------------------------------------------------------------

    async def _tf_home(self, request: web.Request) -> web.Response:
        return json_response({"message": "Server is running"})

    async def _tf_health(self, request: web.Request) -> web.Response:
        if self.fault == "error":
            return json_response(
                {"detail": "Model loading failed. Check configuration or weights."}, 500
            )
        return json_response({"status": "Healthy"})

    async def _tf_chat(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return json_response(
                {
                    "detail": [
                        {"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}
                    ]
                },
                422,
            )
        prompt = body.get("prompt")
        if not prompt or not isinstance(prompt, str):
            raise ApiError(400, "Text generation parameter prompt required")
        kwargs = body.get("generate_kwargs") or {}
        if not isinstance(kwargs, dict):
            return json_response(
                {
                    "detail": [
                        {
                            "type": "model_attributes_type",
                            "loc": ["body", "generate_kwargs"],
                            "msg": "Input should be a valid dictionary",
                            "input": kwargs,
                        }
                    ]
                },
                422,
            )
        prompt_tokens = self.engine.prompt_tokens(prompt)
        if kwargs.get("max_new_tokens") is not None:
            new_tokens = int(kwargs["max_new_tokens"])
        else:
            max_length = int(kwargs.get("max_length", 200))
            new_tokens = max(1, max_length - prompt_tokens)
        do_sample = bool(kwargs.get("do_sample", True))
        params = SamplingParams(
            max_tokens=max(1, new_tokens),
            temperature=float(kwargs.get("temperature", 1.0)) if do_sample else 0.0,
            top_p=float(kwargs.get("top_p", 1.0)),
            seed=kwargs.get("seed"),
        )
        if not 0 < params.top_p <= 1:
            raise ApiError(500, "Error during text generation")
        seq = await self._submit(prompt, prompt_tokens, params, False, None, "tf-")
        parts: list[str] = []
        try:
            while True:
                event = await seq.events.get()
                if event.error:
                    raise ApiError(500, "Error during text generation")
                parts.append(event.text)
                if event.finish_reason:
                    break
        finally:
            self.loop_engine.abort(seq)
        text = "".join(parts)
        full = body.get("return_full_text", True)
        return json_response({"Result": (prompt + text) if full is not False else text})

    async def _tf_metrics(self, request: web.Request) -> web.Response:
        hw = self.hardware
        loop = self.loop_engine
        busy = min(1.0, len(loop.running) / 1.0) if loop.running else 0.0
        if hw.is_cpu:
            return json_response(
                {
                    "gpu_info": None,
                    "cpu_info": {
                        "load_percentage": round(5.0 + 90.0 * busy, 1),
                        "physical_cores": 8,
                        "total_cores": 16,
                        "memory": {
                            "used": f"{self.model.weights_gib * 1.1 + 2:.2f} GB",
                            "total": "64.00 GB",
                        },
                    },
                }
            )
        gpus = []
        per_gpu_weights = self.model.weights_gib / max(1, hw.total_gpus)
        for i in range(max(1, hw.gpu_count)):
            kv_gib = (
                loop.kv_used * self.model.kv_bytes_per_token / latency.GIB / max(1, hw.total_gpus)
            )
            gpus.append(
                {
                    "id": f"GPU-{uuid.uuid5(uuid.NAMESPACE_DNS, f'{self.port}-{i}')}",
                    "name": hw.gpu.name,
                    "load": f"{(3.0 + 92.0 * busy):.2f}%",
                    "temperature": f"{int(34 + 40 * busy)} C",
                    "memory": {
                        "used": f"{per_gpu_weights * 1.02 + 2.3 + kv_gib:.2f} GB",
                        "total": f"{hw.gpu.memory_gib:.2f} GB",
                    },
                }
            )
        return json_response({"gpu_info": gpus, "cpu_info": None})


async def start_inference_server(
    spec: InferenceSpec, host: str = "127.0.0.1", port: int = 0
) -> InferenceServer:
    """Start a simulated KAITO inference pod in the running event loop; return it listening."""
    server = InferenceServer(spec, host=host, port=port)
    await server.start()
    return server
