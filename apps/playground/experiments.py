"""Writes for experiments: a prompt set against two or more targets, measured by Celery tasks.

Every (target, prompt, repetition) is one Sample row, created up front with a unique key, so a
redelivered task finds its rows instead of recording a second sample. The work is fanned out as
one chain of tasks per target: a task claims the next chunk of that target's pending samples
(``CHUNK_ROUNDS x concurrency`` of them), measures them with at most ``concurrency`` requests in
flight, commits each sample as it finishes, then queues the next chunk. One chain per target is
the per-target rate limit: however many workers there are, a target never sees more than its
concurrency. A worker that dies mid-chunk loses only the requests in flight: Celery redelivers
the task (``acks_late``, the same task id), which reclaims the samples it had claimed and still
finished. Cancelling stops the chains at the next request: tasks read the flag between requests.

Requests go through `clients.measure`, and samples are filled by the same `_sample_apply` the
playground uses, so an experiment's figures are the playground's figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.utils import timezone

from apps.playground import clients
from apps.playground.models import Experiment, Sample, Target
from apps.playground.prompts import PromptSet, text_sha256
from apps.playground.services import _close_connection, _sample_apply

logger = logging.getLogger(__name__)

CHUNK_ROUNDS = 8
CANCEL_CHECK_S = 0.5
MAX_TIMEOUT_S = 120
OPEN = (Sample.Status.PENDING, Sample.Status.STREAMING)
MEASURED_FIELDS = [
    "status",
    "text",
    "streamed",
    "ttft_ms",
    "itl_ms",
    "itl_mean_ms",
    "itl_p95_ms",
    "e2e_ms",
    "connect_ms",
    "output_tokens_per_s",
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "tokens_estimated",
    "chunks",
    "finish_reason",
    "cost_usd",
    "cost_per_1m_usd",
    "http_status",
    "error_kind",
    "error_message",
    "retry_after_s",
]


@transaction.atomic
def experiment_create(
    *,
    user: AbstractBaseUser | AnonymousUser | None,
    name: str,
    targets: Sequence[Target],
    prompt_set: PromptSet,
    repetitions: int = 1,
    concurrency: int = 4,
    max_tokens: int = 256,
    timeout_s: float = 60.0,
    storage_policy: str = Experiment.StoragePolicy.TEXT,
    enqueue: bool = True,
) -> Experiment:
    """Record an experiment and all its samples; queue one task chain per target on commit."""
    if len({t.pk for t in targets}) < 2:
        raise ValueError("an experiment compares at least two targets")
    if repetitions < 1 or concurrency < 1 or max_tokens < 1:
        raise ValueError("repetitions, concurrency and max tokens are at least 1")
    experiment = Experiment.objects.create(
        name=name or prompt_set.name,
        created_by_id=user.pk if user is not None and user.is_authenticated else None,
        prompt_set_name=prompt_set.name,
        prompts=[
            {"prompt": p.prompt, "system": p.system, "sha256": p.sha256} for p in prompt_set.prompts
        ],
        repetitions=repetitions,
        concurrency=concurrency,
        max_tokens=max_tokens,
        timeout_s=min(timeout_s, MAX_TIMEOUT_S),
        storage_policy=storage_policy,
    )
    experiment.targets.set(targets)
    keep_hash = experiment.keeps_hashes
    rows = []
    for target in targets:
        snapshot = target.snapshot()
        for index, prompt in enumerate(prompt_set.prompts):
            for repetition in range(repetitions):
                rows.append(
                    Sample(
                        experiment=experiment,
                        target=target,
                        target_snapshot=snapshot,
                        streamed=target.streamed,
                        prompt_index=index,
                        repetition=repetition,
                        prompt_sha256=prompt.sha256 if keep_hash else "",
                    )
                )
    Sample.objects.bulk_create(rows, batch_size=2000)
    if enqueue:
        transaction.on_commit(partial(experiment_enqueue, experiment=experiment))
    return experiment


def experiment_enqueue(*, experiment: Experiment) -> None:
    from apps.playground.tasks import experiment_target_task

    for target_id in experiment.targets.values_list("pk", flat=True):
        experiment_target_task.delay(experiment.pk, target_id)


def experiment_cancel(*, experiment: Experiment) -> Experiment:
    """Stop scheduling: pending samples are skipped; requests in flight finish and are kept."""
    updated = Experiment.objects.filter(
        pk=experiment.pk, status__in=[Experiment.Status.QUEUED, Experiment.Status.RUNNING]
    ).update(status=Experiment.Status.CANCELLED)
    if updated:
        experiment.samples.filter(status=Sample.Status.PENDING).update(status=Sample.Status.SKIPPED)
        experiment_finish_if_complete(experiment_id=experiment.pk)
    experiment.refresh_from_db()
    return experiment


def experiment_finish_if_complete(*, experiment_id: int) -> bool:
    """Once no sample is open: mark the experiment done and trim its prompts to its policy."""
    with transaction.atomic():
        experiment = Experiment.objects.select_for_update().filter(pk=experiment_id).first()
        if experiment is None or experiment.samples.filter(status__in=OPEN).exists():
            return False
        if experiment.status in (Experiment.Status.QUEUED, Experiment.Status.RUNNING):
            experiment.status = Experiment.Status.DONE
        if experiment.finished_at is None:
            experiment.finished_at = timezone.now()
        experiment.prompts = _prompts_kept(experiment)
        experiment.save(update_fields=["status", "finished_at", "prompts"])
    return True


def _prompts_kept(experiment: Experiment) -> list[dict[str, Any]]:
    if experiment.keeps_text:
        return list(experiment.prompts)
    if experiment.keeps_hashes:
        return [{"sha256": p.get("sha256", "")} for p in experiment.prompts]
    return [{} for _ in experiment.prompts]


def _start(experiment_id: int) -> Experiment | None:
    Experiment.objects.filter(pk=experiment_id, status=Experiment.Status.QUEUED).update(
        status=Experiment.Status.RUNNING, started_at=timezone.now()
    )
    return Experiment.objects.filter(pk=experiment_id).first()


def _claim(experiment: Experiment, target_id: int, claim: str, limit: int | None) -> list[Sample]:
    """This task's samples: those it claimed before a crash, then pending ones, up to limit."""
    open_samples = experiment.samples.filter(target_id=target_id).order_by(
        "repetition", "prompt_index"
    )
    mine = (
        list(
            open_samples.filter(status=Sample.Status.STREAMING, claim=claim).select_related(
                "target__deployment__cluster"
            )
        )
        if claim
        else []
    )
    wanted = None if limit is None else max(0, limit - len(mine))
    pending = open_samples.filter(status=Sample.Status.PENDING)
    ids = list(pending.values_list("pk", flat=True)[:wanted])
    Sample.objects.filter(pk__in=ids, status=Sample.Status.PENDING).update(
        status=Sample.Status.STREAMING, claim=claim
    )
    claimed = Sample.objects.filter(pk__in=ids, status=Sample.Status.STREAMING, claim=claim)
    claimed = claimed.select_related("target__deployment__cluster")
    return mine + list(claimed.order_by("repetition", "prompt_index"))


def experiment_target_chunk(
    *, experiment_id: int, target_id: int, claim: str, limit: int | None = None
) -> bool:
    """Measure the next chunk of one target's samples. Returns whether more remain to run.

    ``limit`` None: all of them (the synchronous path). Refuses a finished experiment.
    """
    experiment = _start(experiment_id)
    if experiment is None or experiment.finished:
        if experiment is not None:
            experiment_finish_if_complete(experiment_id=experiment_id)
        return False
    chunk = _claim(experiment, target_id, claim, limit)
    if chunk:
        asyncio.run(_measure_chunk(experiment, chunk, claim=claim))
    more = experiment.samples.filter(target_id=target_id, status=Sample.Status.PENDING).exists()
    if not more:
        experiment_finish_if_complete(experiment_id=experiment_id)
    return more


def experiment_run_sync(*, experiment: Experiment) -> Experiment:
    """Measure a whole experiment in this process, every target at once (manage.py abtest)."""
    experiment = _start(experiment.pk) or experiment
    if experiment.finished:
        return experiment
    chunks = [
        _claim(experiment, target_id, "sync", None)
        for target_id in experiment.targets.values_list("pk", flat=True)
    ]

    async def everything() -> None:
        await asyncio.gather(*(_measure_chunk(experiment, c, claim="sync") for c in chunks))

    asyncio.run(everything())
    experiment_finish_if_complete(experiment_id=experiment.pk)
    experiment.refresh_from_db()
    return experiment


async def _measure_chunk(experiment: Experiment, samples: list[Sample], *, claim: str) -> None:
    """At most ``concurrency`` requests in flight; each sample is committed as it finishes (by one
    writer thread, so the database never sits on the event loop's timing path)."""
    loop = asyncio.get_running_loop()
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="experiment-writer")
    cancelled = asyncio.Event()
    done = asyncio.Event()
    gate = asyncio.Semaphore(experiment.concurrency)

    async def watch_cancel() -> None:
        while not done.is_set():
            status = await loop.run_in_executor(writer, _status_of, experiment.pk)
            if status == Experiment.Status.CANCELLED:
                cancelled.set()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), CANCEL_CHECK_S)

    async def one(sample: Sample) -> None:
        async with gate:
            if cancelled.is_set():
                await loop.run_in_executor(writer, _skip, sample.pk, claim)
                return
            prompt = experiment.prompts[sample.prompt_index or 0]
            chat = clients.ChatRequest(
                prompt=prompt.get("prompt", ""),
                system_prompt=prompt.get("system", ""),
                max_tokens=experiment.max_tokens,
            )
            started = timezone.now()
            kind = str(sample.target_snapshot.get("kind", ""))
            m = clients.Measurement(kind=kind, streamed=kind in clients.STREAMING_KINDS)
            if sample.target is None:
                m.fail("config", "The target was deleted before the request was sent.")
            else:
                endpoint = endpoints[sample.target.pk]
                if isinstance(endpoint, str):
                    m.fail("config", endpoint)
                else:
                    m = await clients.measure(endpoint, chat, timeout_s=experiment.timeout_s)
            fields = _measured_fields(experiment, sample, m, started=started)
            await loop.run_in_executor(writer, _record, sample.pk, claim, fields)

    # Each target is resolved once a chunk, off the loop: a linked deployment reads its cluster's
    # credentials (an exec plugin may run), and a refreshed token is picked up by the next chunk.
    endpoints: dict[int, clients.Endpoint | str] = {}
    for sample in samples:
        if sample.target is not None and sample.target.pk not in endpoints:
            try:
                endpoints[sample.target.pk] = await asyncio.to_thread(sample.target.endpoint)
            except Exception as exc:  # an undecryptable key, say
                endpoints[sample.target.pk] = f"{type(exc).__name__}: {exc}"

    watcher = asyncio.create_task(watch_cancel())
    try:
        await asyncio.gather(*(one(s) for s in samples))
    finally:
        done.set()
        await watcher
        await loop.run_in_executor(writer, _close_connection)
        writer.shutdown()


def _measured_fields(
    experiment: Experiment, sample: Sample, m: clients.Measurement, *, started: Any
) -> dict[str, Any]:
    _sample_apply(sample, m, concurrency=experiment.concurrency)
    fields = {name: getattr(sample, name) for name in MEASURED_FIELDS}
    fields["started_at"] = started
    fields["finished_at"] = timezone.now()
    if not experiment.keeps_text:
        fields["text"] = ""
    fields["text_sha256"] = text_sha256(m.text) if experiment.keeps_hashes else ""
    return fields


def _status_of(experiment_id: int) -> str | None:
    return Experiment.objects.filter(pk=experiment_id).values_list("status", flat=True).first()


def _record(pk: int, claim: str, fields: dict[str, Any]) -> None:
    """Write a measured sample once: a finished row is never written again."""
    Sample.objects.filter(pk=pk, status=Sample.Status.STREAMING, claim=claim).update(**fields)


def _skip(pk: int, claim: str) -> None:
    Sample.objects.filter(pk=pk, status=Sample.Status.STREAMING, claim=claim).update(
        status=Sample.Status.SKIPPED
    )
