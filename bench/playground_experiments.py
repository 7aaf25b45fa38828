"""Benchmark experiments: throughput against the harness alone, and the results page's time.

Run: ``python bench/playground_experiments.py [--requests 256] [--samples 100000]`` (SQLite in a
temporary folder; set DATABASE_URL to a PostgreSQL database to measure that instead). Prints:

1. Throughput at concurrency 32 against two kaitosim vLLM servers (synthetic engine, speed 1,
   in this process): the ideal is `clients.measure` alone, 32 at a time a target, no database;
   the experiment is `experiment_run_sync` over as many requests, committing every sample.
2. The results page for an experiment of ``--samples`` samples over two targets: the summary
   selector, the figures, and the whole page rendered through Django's test client.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
CONCURRENCY = 32


class ServerThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--samples", type=int, default=100_000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="kaitoweb-bench-"))
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "kaitoweb.settings",
            "DEBUG": "1",
            "KAITOWEB_VAR_DIR": str(workdir),
            "LOG_LEVEL": "WARNING",
            "ALLOWED_HOSTS": "testserver,localhost",
        }
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.test import Client
    from django.utils import timezone

    from apps.accounts.roles import Role
    from apps.accounts.services import user_grant_role
    from apps.catalog.models import GpuVmSize
    from apps.catalog.services import catalog_load
    from apps.playground import clients
    from apps.playground.experiment_stats import (
        experiment_break_evens,
        experiment_figures,
        experiment_summary,
    )
    from apps.playground.experiments import experiment_create, experiment_run_sync
    from apps.playground.models import Experiment, Sample, Target
    from apps.playground.prompts import Prompt, PromptSet
    from apps.playground.services import target_save
    from kaitosim.inference import InferenceSpec, start_inference_server

    call_command("migrate", verbosity=0)
    catalog_load(reference_dir=settings.REFERENCE_DIR)
    servers = ServerThread()
    vllm = servers.run(
        start_inference_server(InferenceSpec(served_model="phi-4-mini-instruct", speed=1.0))
    )
    vllm2 = servers.run(
        start_inference_server(InferenceSpec(served_model="phi-4-mini-instruct", speed=1.0))
    )
    vm = GpuVmSize.objects.get(sku="Standard_NC24ads_A100_v4")
    targets = [
        target_save(
            target=Target(
                name=name,
                kind=Target.Kind.KAITO_VLLM,
                endpoint_url=server.url,
                model_name="phi-4-mini-instruct",
                vm_size=vm,
            )
        )
        for name, server in (("a", vllm), ("b", vllm2))
    ]
    prompts = tuple(Prompt(f"Question {i}: explain continuous batching.") for i in range(8))
    max_tokens = 64
    print(f"== Throughput at concurrency {CONCURRENCY}, {args.requests} requests a target")

    async def ideal() -> float:
        gates = [asyncio.Semaphore(CONCURRENCY) for _ in targets]
        endpoints = [t.endpoint() for t in targets]

        async def one(i: int) -> None:
            endpoint = endpoints[i % 2]
            async with gates[i % 2]:
                chat = clients.ChatRequest(
                    prompt=prompts[i % len(prompts)].prompt, max_tokens=max_tokens
                )
                await clients.measure(endpoint, chat, timeout_s=60)

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(2 * args.requests)))
        return time.perf_counter() - started

    ideal_s = asyncio.run(ideal())
    experiment = experiment_create(
        user=None,
        name="bench",
        targets=targets,
        prompt_set=PromptSet("bench", prompts),
        repetitions=args.requests // len(prompts),
        concurrency=CONCURRENCY,
        max_tokens=max_tokens,
        enqueue=False,
    )
    started = time.perf_counter()
    experiment_run_sync(experiment=experiment)
    experiment_s = time.perf_counter() - started
    done = Sample.objects.filter(experiment=experiment, status="done").count()
    per_target = done / 2
    print(f"  harness alone:  {args.requests / ideal_s:8.1f} requests/s a target")
    print(
        f"  experiment:     {per_target / experiment_s:8.1f} requests/s a target "
        f"({done} done; {100 * (per_target / experiment_s) / (args.requests / ideal_s):.0f}% "
        "of the harness alone)"
    )

    print(f"== Results page for {args.samples} samples ({connection_vendor()})")
    big = Experiment.objects.create(
        name="big",
        prompt_set_name="synthetic",
        prompts=[{"prompt": f"p{i}", "system": "", "sha256": ""} for i in range(100)],
        repetitions=args.samples // 200,
        concurrency=32,
        status=Experiment.Status.DONE,
        storage_policy=Experiment.StoragePolicy.NOTHING,
    )
    big.targets.set(targets)
    rng = random.Random(1)  # noqa: S311 (synthetic latencies, not secrets)
    now = timezone.now()
    rows = []
    for t in targets:
        snapshot = t.snapshot()
        for i in range(args.samples // 2):
            ttft = rng.lognormvariate(4.5, 0.4)
            out = rng.randint(16, 256)
            e2e = ttft + out * rng.uniform(8, 14)
            rows.append(
                Sample(
                    experiment=big,
                    target=t,
                    target_snapshot=snapshot,
                    prompt_index=i % 100,
                    repetition=i // 100,
                    status="done",
                    ttft_ms=ttft,
                    itl_mean_ms=(e2e - ttft) / out,
                    e2e_ms=e2e,
                    output_tokens=out,
                    input_tokens=40,
                    output_tokens_per_s=out / e2e * 1000,
                    cost_usd=Decimal("0.0001"),
                    started_at=now + timedelta(milliseconds=i * 10),
                    finished_at=now + timedelta(milliseconds=i * 10 + e2e),
                )
            )
    Sample.objects.bulk_create(rows, batch_size=5000)
    started = time.perf_counter()
    summaries = experiment_summary(big)
    summary_s = time.perf_counter() - started
    started = time.perf_counter()
    experiment_figures(big, summaries, experiment_break_evens(summaries))
    figures_s = time.perf_counter() - started
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("bench")
    user_grant_role(user=user, role=Role.VIEWER)
    client = Client()
    client.force_login(user)
    started = time.perf_counter()
    response = client.get(big.get_absolute_url())
    page_s = time.perf_counter() - started
    print(f"  summary selector: {summary_s * 1000:8.0f} ms")
    print(f"  figures:          {figures_s * 1000:8.0f} ms")
    print(
        f"  whole page:       {page_s * 1000:8.0f} ms "
        f"(HTTP {response.status_code}, {len(response.content) // 1024} KiB)"
    )
    servers.run(vllm.stop())
    servers.run(vllm2.stop())
    return 0


def connection_vendor() -> str:
    from django.db import connection

    return connection.vendor


if __name__ == "__main__":
    raise SystemExit(main())
