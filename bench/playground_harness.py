"""Benchmark the playground's measurement harness against the SDKs it stands in for.

Run: ``python bench/playground_harness.py`` (about 2 minutes). Against kaitosim's vLLM and Foundry
servers at speed 1 (real-time latency model, no jitter), it prints:

1. TTFT and E2E medians of the same request measured three ways, each with a fresh client per
   request (so each pays the same connection set-up): the harness (httpx), the openai SDK and
   azure-ai-inference, timed at the same points (before the call, first content chunk, end of
   stream). The difference is the SDKs' own overhead, which the harness keeps out of an A/B
   comparison by using one HTTP stack for every kind.
2. The start skew of ``measure_together`` (vLLM against Foundry) over many pairs, in a fresh
   process first (the first pair is the one a new worker runs) and then warm.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import openai
from azure.ai.inference import ChatCompletionsClient
from azure.ai.inference.models import UserMessage
from azure.core.credentials import AzureKeyCredential

from apps.playground import clients
from apps.playground.stats import percentile
from kaitosim.foundry import start_foundry_server
from kaitosim.inference import InferenceSpec, start_inference_server

T = TypeVar("T")
KEY = "bench-key"
MODEL = "phi-4-mini-instruct"
N = 15
CHAT = clients.ChatRequest(prompt="Explain continuous batching.", max_tokens=32, seed=1)


class ServerThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)


def timed_stream(chunks: Any, start: float) -> tuple[float, float]:
    first = None
    for chunk in chunks:
        for choice in getattr(chunk, "choices", None) or []:
            if choice.delta and choice.delta.content and first is None:
                first = time.perf_counter()
    end = time.perf_counter()
    assert first is not None
    return (first - start) * 1000, (end - start) * 1000


def openai_sdk(base_url: str, model: str) -> tuple[float, float]:
    client = openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0)
    start = time.perf_counter()
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": CHAT.prompt}],
        max_tokens=CHAT.max_tokens,
        seed=1,
        stream=True,
        stream_options={"include_usage": True},
    )
    result = timed_stream(stream, start)
    client.close()
    return result


def inference_sdk(endpoint: str, model: str) -> tuple[float, float]:
    client = ChatCompletionsClient(endpoint=endpoint, credential=AzureKeyCredential(KEY))
    start = time.perf_counter()
    stream = client.complete(
        model=model,
        messages=[UserMessage(CHAT.prompt)],
        max_tokens=CHAT.max_tokens,
        seed=1,
        stream=True,
        model_extras={"stream_options": {"include_usage": True}},
    )
    result = timed_stream(stream, start)
    client.close()
    return result


def harness(endpoint: clients.Endpoint) -> tuple[float, float]:
    m = clients.measure_sync(endpoint, CHAT)
    assert m.ok and m.ttft_ms is not None and m.e2e_ms is not None, m.error_message
    return m.ttft_ms, m.e2e_ms


def medians(fn: Callable[[], tuple[float, float]]) -> tuple[float, float]:
    fn()  # warm-up (imports, first connection)
    runs = [fn() for _ in range(N)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def main() -> None:
    servers = ServerThread()
    vllm = servers.run(start_inference_server(InferenceSpec(served_model=MODEL, speed=1.0)))
    foundry = servers.run(start_foundry_server(api_keys=[KEY], speed=1.0, jitter=False))
    vllm_ep = clients.Endpoint(kind=clients.KAITO_VLLM, url=vllm.url, model=MODEL)
    foundry_ep = clients.Endpoint(
        kind=clients.FOUNDRY_OPENAI,
        url=foundry.url,
        model="Phi-4",
        auth=clients.AUTH_API_KEY,
        api_key=KEY,
    )
    inference_ep = clients.Endpoint(
        kind=clients.FOUNDRY_INFERENCE,
        url=f"{foundry.url}/models",
        model="Phi-4",
        auth=clients.AUTH_API_KEY,
        api_key=KEY,
    )

    # The first pair in this process: what a fresh Celery worker's first run sees.
    first = asyncio.run(
        clients.measure_together([(vllm_ep, CHAT), (foundry_ep, CHAT)], timeout_s=60)
    )

    print(f"1. median over {N} sequential requests, {CHAT.max_tokens} output tokens (ms)")
    print(f"   {'endpoint / client':44} {'TTFT':>8} {'E2E':>8}")
    rows = [
        ("vLLM / harness (httpx)", lambda: harness(vllm_ep)),
        ("vLLM / openai SDK", lambda: openai_sdk(f"{vllm.url}/v1", MODEL)),
        ("Foundry OpenAI v1 / harness (httpx)", lambda: harness(foundry_ep)),
        (
            "Foundry OpenAI v1 / openai SDK",
            lambda: openai_sdk(f"{foundry.url}/openai/v1/", "Phi-4"),
        ),
        ("Foundry Model Inference / harness (httpx)", lambda: harness(inference_ep)),
        (
            "Foundry Model Inference / azure-ai-inference",
            lambda: inference_sdk(f"{foundry.url}/models", "Phi-4"),
        ),
    ]
    for label, fn in rows:
        ttft, e2e = medians(fn)
        print(f"   {label:44} {ttft:8.2f} {e2e:8.2f}")

    skews = []
    for _ in range(40):
        pair = asyncio.run(
            clients.measure_together([(vllm_ep, CHAT), (foundry_ep, CHAT)], timeout_s=60)
        )
        assert pair.start_skew_ms is not None
        skews.append(pair.start_skew_ms)
    print("2. start skew of measure_together, vLLM against Foundry (ms)")
    print(f"   first pair in a fresh process: {first.start_skew_ms:.3f}")
    print(
        f"   warm, 40 pairs: p50 {percentile(skews, 50):.3f}  p95 {percentile(skews, 95):.3f}  "
        f"max {max(skews):.3f}"
    )
    servers.run(vllm.stop())
    servers.run(foundry.stop())


if __name__ == "__main__":
    main()
