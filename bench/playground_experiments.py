"""Benchmark experiments: throughput against the harness alone, and the results page's time.

Run: ``python bench/playground_experiments.py [--requests 256] [--samples 100000]
[--page-runs 5] [--skip-throughput]`` (SQLite in a temporary folder; set DATABASE_URL to a
PostgreSQL database to measure that instead: the bench's rows carry a suffix of their own and are
deleted at the end, so it runs again on the same database). Prints:

1. Throughput at concurrency 32 against two kaitosim vLLM servers (synthetic engine, speed 1,
   in this process): the ideal is `clients.measure` alone, 32 at a time a target, no database;
   the experiment is `experiment_run_sync` over as many requests, committing every sample.
2. The results page for an experiment of ``--samples`` samples over two targets: the results
   selector, the figures, and the whole page rendered through Django's test client (the first
   request and the median of ``--page-runs``), with every query the page made and its time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
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
    parser.add_argument("--page-runs", type=int, default=5, help="page requests to time")
    parser.add_argument(
        "--skip-throughput", action="store_true", help="measure only the results page"
    )
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

    from apps.catalog.services import catalog_load

    call_command("migrate", verbosity=0)
    catalog_load(reference_dir=settings.REFERENCE_DIR)
    # Rows of this run carry its own suffix, so the bench runs again on a database that holds
    # an earlier run's (PostgreSQL); they are deleted at the end, and an interrupted run's at
    # the start.
    run = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    bench_rows_delete(None)
    try:
        if not args.skip_throughput:
            throughput(run, args.requests)
        results_page(run, args.samples, args.page_runs)
    finally:
        bench_rows_delete(run)
    return 0


PREFIX = "kaitoweb-bench-"


def bench_rows_delete(run: str | None) -> None:
    """Delete the rows of one run (None: of every earlier run of this script)."""
    from django.contrib.auth import get_user_model

    from apps.playground.models import Experiment, Target

    prefix = run or PREFIX
    targets = Target.objects.filter(name__startswith=prefix)
    Experiment.objects.filter(pk__in=targets.values("experiments")).delete()
    targets.delete()
    get_user_model().objects.filter(username__startswith=prefix).delete()


def bench_targets(run: str, label: str, urls: list[str]) -> list[Any]:
    from apps.catalog.models import GpuVmSize
    from apps.playground.models import Target
    from apps.playground.services import target_save

    vm = GpuVmSize.objects.get(sku="Standard_NC24ads_A100_v4")
    return [
        target_save(
            target=Target(
                name=f"{run}-{label}-{letter}",
                kind=Target.Kind.KAITO_VLLM,
                endpoint_url=url,
                model_name="phi-4-mini-instruct",
                vm_size=vm,
            )
        )
        for letter, url in zip("abcdefgh", urls, strict=False)
    ]


def throughput(run: str, requests: int) -> None:
    from apps.playground import clients
    from apps.playground.experiments import experiment_create, experiment_run_sync
    from apps.playground.models import Sample
    from apps.playground.prompts import Prompt, PromptSet
    from kaitosim.inference import InferenceSpec, start_inference_server

    servers = ServerThread()
    vllm = [
        servers.run(
            start_inference_server(InferenceSpec(served_model="phi-4-mini-instruct", speed=1.0))
        )
        for _ in range(2)
    ]
    targets = bench_targets(run, "live", [server.url for server in vllm])
    prompts = tuple(Prompt(f"Question {i}: explain continuous batching.") for i in range(8))
    max_tokens = 64
    print(f"== Throughput at concurrency {CONCURRENCY}, {requests} requests a target")

    # Resolved here, not on the event loop: resolving may read the database (settings rows).
    endpoints = [t.endpoint() for t in targets]

    async def ideal() -> float:
        gates = [asyncio.Semaphore(CONCURRENCY) for _ in targets]

        async def one(i: int) -> None:
            endpoint = endpoints[i % 2]
            async with gates[i % 2]:
                chat = clients.ChatRequest(
                    prompt=prompts[i % len(prompts)].prompt, max_tokens=max_tokens
                )
                await clients.measure(endpoint, chat, timeout_s=60)

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(2 * requests)))
        return time.perf_counter() - started

    try:
        ideal_s = asyncio.run(ideal())
        experiment = experiment_create(
            user=None,
            name=run,
            targets=targets,
            prompt_set=PromptSet("bench", prompts),
            repetitions=requests // len(prompts),
            concurrency=CONCURRENCY,
            max_tokens=max_tokens,
            enqueue=False,
        )
        started = time.perf_counter()
        experiment_run_sync(experiment=experiment)
        experiment_s = time.perf_counter() - started
    finally:
        for server in vllm:
            servers.run(server.stop())
    done = Sample.objects.filter(experiment=experiment, status="done").count()
    per_target = done / 2
    print(f"  harness alone:  {requests / ideal_s:8.1f} requests/s a target")
    print(
        f"  experiment:     {per_target / experiment_s:8.1f} requests/s a target "
        f"({done} done; {100 * (per_target / experiment_s) / (requests / ideal_s):.0f}% "
        "of the harness alone)"
    )


def results_page(run: str, samples: int, page_runs: int) -> None:
    """An experiment of ``samples`` synthetic samples over two targets: the results (one grouped
    query and two small ones), the figures, and the whole page, with every query it made."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from apps.accounts.roles import Role
    from apps.accounts.services import user_grant_role
    from apps.playground.experiment_stats import (
        experiment_break_evens,
        experiment_figures,
        experiment_results,
    )
    from apps.playground.models import Experiment, Sample

    print(f"== Results page for {samples} samples ({connection.vendor})")
    targets = bench_targets(run, "page", ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"])
    big = Experiment.objects.create(
        name=run,
        prompt_set_name="synthetic",
        prompts=[{} for _ in range(100)],
        repetitions=samples // 200,
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
        for i in range(samples // 2):
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
    del rows
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:  # as autovacuum would after such a load
            cursor.execute("ANALYZE playground_sample")

    started = time.perf_counter()
    results = experiment_results(big)
    results_s = time.perf_counter() - started
    started = time.perf_counter()
    experiment_figures(big, results.summaries, experiment_break_evens(results.summaries))
    figures_s = time.perf_counter() - started

    user = get_user_model().objects.create_user(f"{run}-viewer")
    user_grant_role(user=user, role=Role.VIEWER)
    client = Client()
    client.force_login(user)
    url = big.get_absolute_url()
    timings = []
    for _ in range(max(1, page_runs)):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            response = client.get(url)
            timings.append(time.perf_counter() - started)
        assert response.status_code == 200, response.status_code
    sql_ms = sum(float(q["time"]) for q in queries.captured_queries) * 1000
    print(f"  results (summary, progress, votes): {results_s * 1000:8.0f} ms")
    print(f"  figures:                            {figures_s * 1000:8.0f} ms")
    print(
        f"  whole page, first request:          {timings[0] * 1000:8.0f} ms "
        f"(HTTP {response.status_code}, {len(response.content) // 1024} KiB)"
    )
    print(
        f"  whole page, median of {len(timings)}:           "
        f"{statistics.median(timings) * 1000:8.0f} ms"
    )
    print(f"  the last request's {len(queries.captured_queries)} queries ({sql_ms:.0f} ms in SQL):")
    for q in queries.captured_queries:
        print(f"    {float(q['time']) * 1000:7.1f} ms  {q['sql'][:110]}")


if __name__ == "__main__":
    raise SystemExit(main())
