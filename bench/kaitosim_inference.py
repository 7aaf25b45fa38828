"""Benchmark kaitosim's simulated inference server: engine speed, overhead, throughput at c=32.

Run: ``python bench/kaitosim_inference.py`` (about 20 s). Prints:

1. the synthetic engine alone: tokens generated per second of CPU;
2. per-request overhead of the simulated server (HTTP + JSON + scheduling) with the latency model
   made negligible (speed=10_000), sequential requests;
3. throughput at concurrency 32 with streaming, at speed=10_000 (what the simulator itself can
   push through one event loop) and at speed=1 (what the simulated A100 would deliver; compare
   with the latency model's figure).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kaitosim import latency
from kaitosim.engine import SamplingParams, SyntheticEngine
from kaitosim.inference import InferenceServer, InferenceSpec, start_inference_server

T = TypeVar("T")
MODEL = "phi-4-mini-instruct"
PROMPT = "Explain in detail how continuous batching changes GPU utilisation for LLM serving."


class ServerThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(120)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def bench_engine() -> None:
    engine = SyntheticEngine()
    tokens = 0
    began = time.perf_counter()
    for i in range(300):
        params = SamplingParams(max_tokens=512, temperature=0.8, seed=i)
        stream = engine.generate(
            PROMPT, params, chat=True, messages=[{"role": "user", "content": PROMPT}]
        )
        while stream.poll() is not None:
            tokens += 1
    elapsed = time.perf_counter() - began
    print(
        f"synthetic engine: {tokens} tokens in {elapsed:.2f} s = {tokens / elapsed:,.0f} tokens/s "
        f"({elapsed / 300 * 1000:.2f} ms per answer)"
    )


async def one_request(
    http: httpx.AsyncClient, url: str, max_tokens: int, stream: bool
) -> tuple[float, float, int]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "stream": stream,
        "temperature": 0.7,
    }
    began = time.perf_counter()
    first = 0.0
    tokens = 0
    if stream:
        async with http.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if (
                    line.startswith("data: {")
                    and '"content":"' in line
                    and '"content":""' not in line
                ):
                    tokens += 1
                    if not first:
                        first = time.perf_counter() - began
    else:
        response = await http.post(f"{url}/v1/chat/completions", json=body)
        tokens = response.json()["usage"]["completion_tokens"]
        first = time.perf_counter() - began
    return first, time.perf_counter() - began, tokens


async def sequential(url: str, n: int, stream: bool) -> list[float]:
    async with httpx.AsyncClient(timeout=60) as http:
        await one_request(http, url, 8, stream)
        return [(await one_request(http, url, 8, stream))[1] for _ in range(n)]


async def concurrent(
    url: str, concurrency: int, requests: int, max_tokens: int
) -> tuple[float, int, list[float]]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(requests):
            queue.put_nowait(i)
        results: list[tuple[float, float, int]] = []

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                results.append(await one_request(http, url, max_tokens, True))

        began = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        elapsed = time.perf_counter() - began
    return elapsed, sum(r[2] for r in results), [r[0] for r in results]


def start(thread: ServerThread, speed: float) -> InferenceServer:
    spec = InferenceSpec(
        served_model=MODEL, max_model_len=8192, max_concurrency=64, speed=speed, max_queue=1024
    )
    return thread.run(start_inference_server(spec))


def main() -> None:
    bench_engine()
    thread = ServerThread()
    fast = start(thread, 10_000.0)
    for stream in (False, True):
        times = asyncio.run(sequential(fast.url, 200, stream))
        kind = "streamed" if stream else "non-streamed"
        print(
            f"per-request overhead ({kind}, 8 tokens, speed=10000): median "
            f"{statistics.median(times) * 1000:.2f} ms, p95 "
            f"{sorted(times)[int(len(times) * 0.95)] * 1000:.2f} ms"
        )
    elapsed, tokens, _ = asyncio.run(concurrent(fast.url, 32, 320, 128))
    print(
        f"simulator throughput, c=32, streamed, speed=10000: {tokens} tokens in {elapsed:.2f} s "
        f"= {tokens / elapsed:,.0f} tokens/s ({320 / elapsed:,.0f} requests/s)"
    )
    thread.run(fast.stop())

    real = start(thread, 1.0)
    elapsed, tokens, ttfts = asyncio.run(concurrent(real.url, 32, 64, 128))
    model = latency.model_profile(MODEL)
    hw = latency.hardware_for("Standard_NC24ads_A100_v4")
    itl = latency.decode_itl_seconds(model, hw, batch=32, context_tokens_per_seq=150)
    print(
        f"simulated A100, c=32, streamed, speed=1: {tokens / elapsed:,.0f} tokens/s aggregate, "
        f"median TTFT {statistics.median(ttfts) * 1000:.0f} ms; latency model at batch 32: "
        f"{32 / itl:,.0f} tokens/s ({1 / itl:.0f} per stream)"
    )
    print(f"KAITO benchmark estimate for this pod: {real.peak_tokens_per_minute():,} tokens/min")
    thread.run(real.stop())
    thread.close()


if __name__ == "__main__":
    main()
