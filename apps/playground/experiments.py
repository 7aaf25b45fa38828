"""Writes for experiments: a prompt set against two or more targets, measured by Celery tasks.

Every (target, prompt, repetition) is one Sample row, created up front with a unique key, so no
retry, redelivery or resume can record a second sample for the same slot. The work is fanned out
as one chain of tasks per target: a task claims the next chunk of that target's pending samples
(``CHUNK_ROUNDS x concurrency`` of them), measures them with at most ``concurrency`` requests in
flight, commits each sample as it finishes, then queues the next chunk. One chain per target is
the per-target rate limit: however many workers there are, a target never sees more than its
concurrency. Cancelling stops the chains at the next request: tasks read the flag between
requests.

Surviving failures (a worker killed, the broker or the database restarted, a message lost):

* **Claims are fences.** Each task execution claims samples under a claim of its own, refreshes
  their ``heartbeat_at`` every ``HEARTBEAT_SECONDS`` while it measures them, and writes a result
  only onto a sample that is still ``streaming`` under its claim. A sample whose heartbeat is
  older than ``STALE_SECONDS`` was left by a dead execution: the next chunk of the chain (or a
  resumed chain) claims it again and measures it. A finished sample is never written again.
* **One live chain per target.** ``Experiment.chains`` keeps, per target, the chain's token (in
  every message of the chain) and the claim of the execution running it. A task whose token is
  not the current one (an old message redelivered by Redis after its visibility timeout, the
  follow-up of a chain that was replaced) does nothing; an execution that sees another become
  the runner (a redelivery of a message still being worked on) stops taking new requests and
  hands its unstarted samples back. So a redelivered task and a resumed one never measure the
  same sample, and the target's concurrency cap holds.
* **The resume path.** Celery beat runs `experiments_resume` (``EXPERIMENTS_RESUME_SECONDS``):
  a target with open samples and no sign of life for ``STALE_SECONDS`` (no heartbeat, no sample
  finished, no chunk sent or started) gets a new chain token and a new first task. This does not
  rely on the broker redelivering anything: kombu's filesystem transport never redelivers, and
  Redis does so only after its visibility timeout; a restarted Redis has lost its queue.
  A chain that starts and then dies ``MAX_RESTARTS`` times in a row without finishing a single
  sample fails the experiment, with the reason, instead of looping forever.
* **The database going away.** Results are written by one writer thread that retries for
  ``WRITE_RETRY_SECONDS`` (a PostgreSQL restart), so a finished request is not lost to a short
  outage; past that the task fails, Celery retries it, and the resume path takes over after.
* **Rate limits.** A 429 is retried after the provider's Retry-After (``retry-after-ms`` or
  ``Retry-After``, at most ``RATE_LIMIT_WAIT_MAX_SECONDS``; without one, exponential backoff
  from 1 s with jitter), and the target's other requests wait too. A sample gets
  ``RATE_LIMIT_ATTEMPTS`` requests in all; after that, or if Retry-After asks for longer than
  the cap, it is recorded as failed with the provider's status and message. Other errors (5xx,
  timeouts, cut streams) are what an experiment measures and are recorded as they come.

Requests go through `clients.measure`, and samples are filled by the same `_sample_apply` the
playground uses, so an experiment's figures are the playground's figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ImproperlyConfigured
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from apps.playground import clients
from apps.playground.models import Experiment, Sample, Target
from apps.playground.prompts import PromptSet, text_sha256
from apps.playground.services import TARGET_DELETED, _close_connection, _sample_apply
from kaitoweb.env import env_int

logger = logging.getLogger(__name__)

CHUNK_ROUNDS = 8
CANCEL_CHECK_S = 0.5
MAX_TIMEOUT_S = 120
# How often a measuring task proves it is alive, and when a silent target counts as abandoned.
HEARTBEAT_SECONDS = env_int("EXPERIMENTS_HEARTBEAT_SECONDS", 5)
STALE_SECONDS = env_int("EXPERIMENTS_STALE_SECONDS", 60)
# Restarts of a target's chain in a row, each started and dead without finishing a sample,
# before the experiment is failed.
MAX_RESTARTS = env_int("EXPERIMENTS_MAX_RESTARTS", 5)
# How long the writer keeps retrying a result while the database is unreachable.
WRITE_RETRY_SECONDS = env_int("EXPERIMENTS_WRITE_RETRY_SECONDS", 30)
# 429: requests per sample in all, and the longest wait honoured between two of them.
RATE_LIMIT_ATTEMPTS = env_int("EXPERIMENTS_RATE_LIMIT_ATTEMPTS", 5)
RATE_LIMIT_WAIT_MAX_SECONDS = env_int("EXPERIMENTS_RATE_LIMIT_WAIT_MAX", 60)
if HEARTBEAT_SECONDS < 1 or STALE_SECONDS < 3 * HEARTBEAT_SECONDS:
    raise ImproperlyConfigured(
        "EXPERIMENTS_STALE_SECONDS must be at least 3 x EXPERIMENTS_HEARTBEAT_SECONDS (>= 1), so "
        "a live task is never taken for a dead one"
    )
if RATE_LIMIT_ATTEMPTS < 1 or RATE_LIMIT_WAIT_MAX_SECONDS < 0 or MAX_RESTARTS < 1:
    raise ImproperlyConfigured(
        "EXPERIMENTS_RATE_LIMIT_ATTEMPTS and EXPERIMENTS_MAX_RESTARTS must be at least 1, "
        "EXPERIMENTS_RATE_LIMIT_WAIT_MAX at least 0"
    )
# The longest one sample can take (every attempt to its timeout, every wait to the cap), and so
# the longest a chunk can run: it starts no new sample after CHUNK_ROUNDS x the timeout (plus a
# wait for the database). About 32 minutes by default: Redis's visibility timeout must be longer.
SAMPLE_MAX_S = RATE_LIMIT_ATTEMPTS * MAX_TIMEOUT_S + (RATE_LIMIT_ATTEMPTS - 1) * (
    RATE_LIMIT_WAIT_MAX_SECONDS * 1.1
)
CHUNK_MAX_S = CHUNK_ROUNDS * MAX_TIMEOUT_S + SAMPLE_MAX_S + 2 * WRITE_RETRY_SECONDS

OPEN = (Sample.Status.PENDING, Sample.Status.STREAMING)
ACTIVE = (Experiment.Status.QUEUED, Experiment.Status.RUNNING)
# Why a chunk stopped early.
CLOSED = "closed"  # the experiment was cancelled or failed: unstarted samples are skipped
SUPERSEDED = "superseded"  # another execution runs the chain: unstarted samples are handed back
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
T = TypeVar("T")


def _new_chain(*, now: datetime, finished: int = 0, strikes: int = 0, restarts: int = 0) -> dict:
    """A chain entry of ``Experiment.chains``: the token its messages carry, when it was sent,
    and what the resume path needs to tell a stuck target from a slow one."""
    return {
        "token": uuid.uuid4().hex,
        "sent_at": now.isoformat(),
        "started": False,
        "runner": "",
        "finished": finished,
        "strikes": strikes,
        "restarts": restarts,
    }


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
    now = timezone.now()
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
        chains={str(t.pk): _new_chain(now=now) for t in targets},
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
    """Send each target's first task. A broker that is down is not an error the user must see:
    the experiment stays queued and the resume path sends the tasks once the broker is back."""
    chains = experiment.chains or {}
    for target_id in experiment.targets.values_list("pk", flat=True):
        token = str((chains.get(str(target_id)) or {}).get("token", ""))
        experiment_send_chunk(experiment.pk, target_id, token)


def experiment_send_chunk(experiment_id: int, target_id: int, chain: str) -> bool:
    from apps.playground.tasks import experiment_target_task

    try:
        experiment_target_task.delay(experiment_id, target_id, chain=chain)
    except Exception as exc:  # kombu's OperationalError, a refused connection...
        logger.warning(
            "experiment %s target %s: could not queue its next task (%s: %s); the resume task "
            "will send it once the broker answers",
            experiment_id,
            target_id,
            type(exc).__name__,
            exc,
        )
        return False
    return True


def experiment_cancel(*, experiment: Experiment) -> Experiment:
    """Stop scheduling: pending samples are skipped; requests in flight finish and are kept."""
    updated = Experiment.objects.filter(pk=experiment.pk, status__in=ACTIVE).update(
        status=Experiment.Status.CANCELLED
    )
    if updated:
        experiment.samples.filter(status=Sample.Status.PENDING).update(status=Sample.Status.SKIPPED)
        experiment_finish_if_complete(experiment_id=experiment.pk)
    experiment.refresh_from_db()
    return experiment


def experiment_fail(*, experiment_id: int, reason: str) -> bool:
    """Stop an experiment that cannot go on, visibly: it is marked failed with the reason, what
    was measured is kept, and every sample not finished is skipped (so a request still in flight
    somewhere can no longer write onto it). Returns whether it was still running."""
    with transaction.atomic():
        experiment = Experiment.objects.select_for_update().filter(pk=experiment_id).first()
        if experiment is None or experiment.finished:
            return False
        experiment.samples.filter(status__in=OPEN).update(
            status=Sample.Status.SKIPPED, claim="", heartbeat_at=None
        )
        experiment.status = Experiment.Status.FAILED
        experiment.error = reason[:4000]
        experiment.finished_at = timezone.now()
        experiment.prompts = _prompts_kept(experiment)
        experiment.save(update_fields=["status", "error", "finished_at", "prompts"])
    logger.warning("experiment %s failed: %s", experiment_id, reason)
    return True


def experiment_finish_if_complete(*, experiment_id: int) -> bool:
    """Once no sample is open: mark the experiment done and trim its prompts to its policy."""
    with transaction.atomic():
        experiment = Experiment.objects.select_for_update().filter(pk=experiment_id).first()
        if experiment is None or experiment.samples.filter(status__in=OPEN).exists():
            return False
        if experiment.status in ACTIVE:
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


# --------------------------------------------------------------------------------- the chains
def _chain_begin(*, experiment_id: int, target_id: int, chain: str, claim: str) -> bool:
    """Whether a task of chain ``chain`` may run the target's next chunk; if so, its execution
    (``claim``) becomes the chain's runner. An empty chain is a message from before chains
    existed: it runs only if the target has no chain token yet."""
    with transaction.atomic():
        experiment = Experiment.objects.select_for_update().filter(pk=experiment_id).first()
        if experiment is None:
            return False
        chains = dict(experiment.chains or {})
        entry = dict(chains.get(str(target_id)) or {})
        if str(entry.get("token", "")) != chain:
            return False
        entry.update(runner=claim, started=True, started_at=timezone.now().isoformat())
        chains[str(target_id)] = entry
        Experiment.objects.filter(pk=experiment_id).update(chains=chains)
    return True


def _chain_state(experiment_id: int, target_id: int, chain: str | None, claim: str) -> str:
    """Why a running chunk should stop taking new requests: ``CLOSED``, ``SUPERSEDED`` or ""."""
    row = Experiment.objects.filter(pk=experiment_id).values_list("status", "chains").first()
    if row is None or row[0] not in ACTIVE:
        return CLOSED
    if chain is not None:
        entry = (row[1] or {}).get(str(target_id)) or {}
        if str(entry.get("token", "")) != chain or entry.get("runner") != claim:
            return SUPERSEDED
    return ""


def experiments_resume(*, now: datetime | None = None) -> dict[str, int]:
    """Restart the chains nobody is running; finish or fail what cannot go on. Called by Celery
    beat; safe at any moment and from several processes (each restart is taken under the
    experiment's row lock and re-checked there)."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=STALE_SECONDS)
    counts = {"checked": 0, "resumed": 0, "finished": 0, "failed": 0, "orphaned": 0}
    active = Experiment.objects.filter(status__in=ACTIVE, created_at__lt=stale).order_by("pk")
    for experiment_id in active.values_list("pk", flat=True):
        counts["checked"] += 1
        outcome = _experiment_resume(experiment_id=experiment_id, now=now, stale=stale)
        for key, value in outcome.items():
            counts[key] += value
    return counts


def _experiment_resume(*, experiment_id: int, now: datetime, stale: datetime) -> dict[str, int]:
    counts = {"resumed": 0, "finished": 0, "failed": 0, "orphaned": 0}
    samples = Sample.objects.filter(experiment_id=experiment_id)
    # A deleted target's samples can never be measured: record why, as the chunk would.
    counts["orphaned"] = samples.filter(
        Q(target__isnull=True)
        & (
            Q(status=Sample.Status.PENDING)
            | Q(status=Sample.Status.STREAMING, heartbeat_at__isnull=True)
            | Q(status=Sample.Status.STREAMING, heartbeat_at__lt=stale)
        )
    ).update(
        status=Sample.Status.FAILED,
        error_kind="config",
        error_message=TARGET_DELETED,
        finished_at=now,
        claim="",
    )
    rows = (
        samples.exclude(target__isnull=True)
        .order_by()
        .values("target_id")
        .annotate(
            open=Count("pk", filter=Q(status__in=OPEN)),
            finished_count=Count(
                "pk", filter=Q(status__in=[Sample.Status.DONE, Sample.Status.FAILED])
            ),
            beat=Max("heartbeat_at"),
            ended=Max("finished_at"),
        )
    )
    open_rows = [row for row in rows if row["open"]]
    if not open_rows:
        # Every sample closed, but the task that closed the last one died before saying so.
        if experiment_finish_if_complete(experiment_id=experiment_id):
            counts["finished"] = 1
        return counts
    for row in open_rows:
        last = max((d for d in (row["beat"], row["ended"]) if d is not None), default=None)
        if last is not None and last >= stale:
            continue  # a task is measuring this target, or finished a sample a moment ago
        outcome = _chain_restart(
            experiment_id=experiment_id,
            target_id=row["target_id"],
            finished=row["finished_count"],
            now=now,
            stale=stale,
        )
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome == "failed":
            break
    return {key: counts[key] for key in ("resumed", "finished", "failed", "orphaned")}


def _chain_restart(
    *, experiment_id: int, target_id: int, finished: int, now: datetime, stale: datetime
) -> str:
    with transaction.atomic():
        experiment = Experiment.objects.select_for_update().filter(pk=experiment_id).first()
        if experiment is None or experiment.finished:
            return "skipped"
        chains = dict(experiment.chains or {})
        entry = dict(chains.get(str(target_id)) or {})
        touched = [
            _parse_time(entry.get("sent_at")),
            _parse_time(entry.get("started_at")),
        ]
        if any(t is not None and t >= stale for t in touched):
            return "skipped"  # sent or started a moment ago (perhaps by another resume)
        progressed = finished > int(entry.get("finished", 0))
        strikes = (
            0 if progressed else int(entry.get("strikes", 0)) + int(bool(entry.get("started")))
        )
        if strikes >= MAX_RESTARTS:
            target = Target.objects.filter(pk=target_id).first()
            name = target.name if target is not None else f"target {target_id}"
            reason = (
                f"Measuring {name} stopped {strikes} times in a row without finishing a sample "
                f"(each time the worker died or lost the database or broker for over "
                f"{STALE_SECONDS} s); the experiment was stopped. The {finished} sample(s) "
                f"measured against it are kept. See the Celery worker's log for the cause."
            )
        else:
            chains[str(target_id)] = _new_chain(
                now=now,
                finished=finished,
                strikes=strikes,
                restarts=int(entry.get("restarts", 0)) + 1,
            )
            Experiment.objects.filter(pk=experiment_id).update(chains=chains)
            token = chains[str(target_id)]["token"]
            transaction.on_commit(partial(experiment_send_chunk, experiment_id, target_id, token))
            logger.info(
                "experiment %s target %s: no sign of life for %s s; chain restarted (%s)",
                experiment_id,
                target_id,
                STALE_SECONDS,
                token,
            )
            return "resumed"
    experiment_fail(experiment_id=experiment_id, reason=reason)
    return "failed"


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


# --------------------------------------------------------------------------------- measuring
def _start(experiment_id: int) -> Experiment | None:
    Experiment.objects.filter(pk=experiment_id, status=Experiment.Status.QUEUED).update(
        status=Experiment.Status.RUNNING, started_at=timezone.now()
    )
    return Experiment.objects.filter(pk=experiment_id).first()


def _claim(experiment: Experiment, target_id: int, claim: str, limit: int | None) -> list[Sample]:
    """This execution's samples: those it claimed before (a retry of the same execution), then
    those a dead execution left (streaming, heartbeat older than STALE_SECONDS), then pending
    ones, up to limit. Each UPDATE re-checks its condition, so two executions never both get
    one sample."""
    now = timezone.now()
    stale = now - timedelta(seconds=STALE_SECONDS)
    samples = experiment.samples.filter(target_id=target_id)
    free = _free(claim, stale)
    mine = Q(status=Sample.Status.STREAMING, claim=claim)
    samples.filter(mine).update(heartbeat_at=now)
    if limit is None:
        samples.filter(free).update(status=Sample.Status.STREAMING, claim=claim, heartbeat_at=now)
    else:
        wanted = max(0, limit - samples.filter(mine).count())
        ids = list(
            samples.filter(free).order_by("repetition", "prompt_index").values_list("pk", flat=True)
        )[:wanted]
        Sample.objects.filter(free, pk__in=ids).update(
            status=Sample.Status.STREAMING, claim=claim, heartbeat_at=now
        )
    claimed = samples.filter(mine).select_related("target__deployment__cluster")
    return list(claimed.order_by("repetition", "prompt_index"))


def _free(claim: str, stale: datetime) -> Q:
    """Samples an execution may claim: pending, or left by a dead one (streaming under another
    claim, its heartbeat older than ``stale``)."""
    left = Q(status=Sample.Status.STREAMING) & (
        Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=stale)
    )
    return Q(status=Sample.Status.PENDING) | (left & ~Q(claim=claim))


def _claimable(experiment: Experiment, target_id: int, claim: str) -> Any:
    stale = timezone.now() - timedelta(seconds=STALE_SECONDS)
    return experiment.samples.filter(_free(claim, stale), target_id=target_id)


def experiment_target_chunk(
    *,
    experiment_id: int,
    target_id: int,
    claim: str,
    limit: int | None = None,
    chain: str | None = None,
) -> bool:
    """Measure the next chunk of one target's samples. Returns whether more remain to run.

    ``limit`` None: all of them (the synchronous path). ``chain``: the token of the task chain
    this runs for (None: no chain, as in the synchronous path); a task of a replaced chain does
    nothing. Refuses a finished experiment.
    """
    if chain is not None and not _chain_begin(
        experiment_id=experiment_id, target_id=target_id, chain=chain, claim=claim
    ):
        logger.info(
            "experiment %s target %s: chain %r was replaced", experiment_id, target_id, chain
        )
        return False
    experiment = _start(experiment_id)
    if experiment is None or experiment.finished:
        if experiment is not None:
            experiment_finish_if_complete(experiment_id=experiment_id)
        return False
    chunk = _claim(experiment, target_id, claim, limit)
    if chunk:
        budget = None if limit is None else CHUNK_ROUNDS * experiment.timeout_s
        stopped = asyncio.run(
            _measure_chunk(
                experiment, chunk, claim=claim, target_id=target_id, chain=chain, budget_s=budget
            )
        )
        # The chunk took a while: a connection of this thread that the database dropped
        # meanwhile (a restart) is replaced, as at a request's start (CONN_HEALTH_CHECKS).
        connection.close_if_unusable_or_obsolete()
        if stopped == SUPERSEDED:
            return False  # the chain's new runner goes on
    more = _claimable(experiment, target_id, claim).exists()
    if not more:
        experiment_finish_if_complete(experiment_id=experiment_id)
    return more


def experiment_run_sync(*, experiment: Experiment) -> Experiment:
    """Measure a whole experiment in this process, every target at once (manage.py abtest)."""
    experiment = _start(experiment.pk) or experiment
    if experiment.finished:
        return experiment
    target_ids = list(experiment.targets.values_list("pk", flat=True))
    chunks = [(t, _claim(experiment, t, "sync", None)) for t in target_ids]

    async def everything() -> None:
        await asyncio.gather(
            *(_measure_chunk(experiment, c, claim="sync", target_id=t) for t, c in chunks)
        )

    asyncio.run(everything())
    experiment_finish_if_complete(experiment_id=experiment.pk)
    experiment.refresh_from_db()
    return experiment


class _Pause:
    """A target's pause after a 429: none of its requests is sent before ``until`` (monotonic
    seconds), which the provider's Retry-After sets."""

    def __init__(self) -> None:
        self.until = 0.0

    def extend(self, seconds: float) -> None:
        self.until = max(self.until, time.monotonic() + seconds)

    async def wait(self, stop: asyncio.Event) -> bool:
        """Sleep out the pause; False if told to stop meanwhile."""
        while (left := self.until - time.monotonic()) > 0 and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), left)
        return not stop.is_set()


def rate_limit_wait(m: clients.Measurement, attempt: int) -> float | None:
    """Seconds to wait before sending a rate-limited request again, or None to give up now.

    The provider's Retry-After is honoured (never retried sooner, up to 10% later so a target's
    waiting requests do not all land on the same instant); one longer than
    ``RATE_LIMIT_WAIT_MAX_SECONDS`` is not waited out (a daily quota, say). Without one:
    1, 2, 4... seconds (capped), each with jitter.
    """
    if m.retry_after_s is not None:
        if m.retry_after_s > RATE_LIMIT_WAIT_MAX_SECONDS:
            return None
        return m.retry_after_s * random.uniform(1.0, 1.1)  # noqa: S311 - jitter, not crypto
    ceiling = min(float(RATE_LIMIT_WAIT_MAX_SECONDS), 2.0 ** (attempt - 1))
    return ceiling * random.uniform(0.5, 1.0)  # noqa: S311


def _rate_limited(m: clients.Measurement) -> bool:
    return m.error_kind == "http" and m.http_status == 429


async def _measure_chunk(
    experiment: Experiment,
    samples: list[Sample],
    *,
    claim: str,
    target_id: int,
    chain: str | None = None,
    budget_s: float | None = None,
) -> str:
    """At most ``concurrency`` requests in flight; each sample is committed as it finishes (by one
    writer thread, so the database never sits on the event loop's timing path). No new request
    starts after ``budget_s``. Returns why it stopped early ("" if it did not)."""
    loop = asyncio.get_running_loop()
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="experiment-writer")
    stop = asyncio.Event()
    reason = {"why": ""}
    done = asyncio.Event()
    gate = asyncio.Semaphore(experiment.concurrency)
    pause = _Pause()
    # Cleared while the database does not answer: no new request is sent whose result could not
    # be saved (so an outage loses at most the requests already in flight).
    db_ok = asyncio.Event()
    db_ok.set()
    deadline = None if budget_s is None else time.monotonic() + budget_s

    async def write(fn: Callable[..., T], *args: Any) -> T:
        return await loop.run_in_executor(writer, partial(_retrying, fn, *args))

    async def watch() -> None:
        """Read the cancel flag and the chain's runner; refresh this claim's heartbeat."""
        beat_at = time.monotonic()
        while not done.is_set():
            try:
                why = await loop.run_in_executor(
                    writer, partial(_once, _chain_state, experiment.pk, target_id, chain, claim)
                )
                if why:
                    reason["why"] = why
                    stop.set()
                    return
                if time.monotonic() - beat_at >= HEARTBEAT_SECONDS:
                    await loop.run_in_executor(
                        writer, partial(_once, _heartbeat, experiment.pk, target_id, claim)
                    )
                    beat_at = time.monotonic()
                db_ok.set()
            except (OperationalError, InterfaceError) as exc:
                # The database is away (restarting?): requests in flight finish and their
                # results wait in the writer; no new one starts until it answers again.
                if db_ok.is_set():
                    logger.warning(
                        "experiment %s: the database does not answer: %s", experiment.pk, exc
                    )
                db_ok.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), CANCEL_CHECK_S)

    async def give_back(sample: Sample) -> None:
        """An unstarted (or interrupted) sample: skipped if the experiment closed, else handed
        back as pending for the chain's next chunk or its new runner."""
        if reason["why"] == CLOSED:
            await write(_skip, sample.pk, claim)
        else:
            await write(_release, sample.pk, claim)

    async def one(sample: Sample) -> None:
        async with gate:
            if stop.is_set() or (deadline is not None and time.monotonic() > deadline):
                await give_back(sample)
                return
            prompt = experiment.prompts[sample.prompt_index or 0]
            chat = clients.ChatRequest(
                prompt=prompt.get("prompt", ""),
                system_prompt=prompt.get("system", ""),
                max_tokens=experiment.max_tokens,
            )
            kind = str(sample.target_snapshot.get("kind", ""))
            started = timezone.now()
            attempts = 0
            while True:
                if not await pause.wait(stop):
                    await give_back(sample)
                    return
                if not db_ok.is_set():
                    try:
                        await asyncio.wait_for(db_ok.wait(), WRITE_RETRY_SECONDS)
                    except TimeoutError:
                        raise OperationalError(
                            f"the database has not answered for {WRITE_RETRY_SECONDS} s"
                        ) from None
                m = clients.Measurement(kind=kind, streamed=kind in clients.STREAMING_KINDS)
                if sample.target is None:
                    m.fail("config", TARGET_DELETED)
                else:
                    endpoint = endpoints[sample.target.pk]
                    if isinstance(endpoint, str):
                        m.fail("config", endpoint)
                    else:
                        attempts += 1
                        m = await clients.measure(endpoint, chat, timeout_s=experiment.timeout_s)
                if not _rate_limited(m):
                    break
                wait = rate_limit_wait(m, attempts)
                if wait is None:
                    m.error_message += (
                        f" (Retry-After {m.retry_after_s:g} s is longer than the "
                        f"{RATE_LIMIT_WAIT_MAX_SECONDS} s an experiment waits; not retried)"
                    )
                    break
                if attempts >= RATE_LIMIT_ATTEMPTS:
                    m.error_message += f" (still rate limited after {attempts} attempts)"
                    break
                pause.extend(wait)
            fields = _measured_fields(experiment, sample, m, started=started)
            fields["attempts"] = attempts
            await write(_record, sample.pk, claim, fields)

    # Each target is resolved once a chunk, off the loop: a linked deployment reads its cluster's
    # credentials (an exec plugin may run), and a refreshed token is picked up by the next chunk.
    endpoints: dict[int, clients.Endpoint | str] = {}
    for sample in samples:
        if sample.target is not None and sample.target.pk not in endpoints:
            try:
                endpoints[sample.target.pk] = await asyncio.to_thread(sample.target.endpoint)
            except Exception as exc:  # an undecryptable key, say
                endpoints[sample.target.pk] = f"{type(exc).__name__}: {exc}"

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.gather(*(one(s) for s in samples))
    finally:
        done.set()
        await watcher
        with contextlib.suppress(Exception):  # a connection the database already dropped
            await loop.run_in_executor(writer, _close_connection)
        writer.shutdown()
    return reason["why"]


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


# ------------------------------------------------------------------- the writer thread's writes
def _once(fn: Callable[..., T], *args: Any) -> T:
    """Run a database call; on a connection error, drop this thread's connection (the next call
    opens a fresh one) and re-raise."""
    try:
        return fn(*args)
    except (OperationalError, InterfaceError):
        with contextlib.suppress(Exception):
            connection.close()
        raise


def _retrying(fn: Callable[..., T], *args: Any) -> T:
    """Run a database write, retrying on connection errors for up to WRITE_RETRY_SECONDS, so a
    measured sample survives a database restart. Every write here is idempotent."""
    deadline = time.monotonic() + WRITE_RETRY_SECONDS
    delay = 0.25
    while True:
        try:
            return _once(fn, *args)
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() + delay > deadline:
                raise
            logger.warning("experiment write failed (%s); retrying in %.2f s", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 4.0)


def _heartbeat(experiment_id: int, target_id: int, claim: str) -> None:
    Sample.objects.filter(
        experiment_id=experiment_id,
        target_id=target_id,
        status=Sample.Status.STREAMING,
        claim=claim,
    ).update(heartbeat_at=timezone.now())


def _record(pk: int, claim: str, fields: dict[str, Any]) -> None:
    """Write a measured sample once: a finished row is never written again, and a sample another
    execution took over is not written by this one."""
    Sample.objects.filter(pk=pk, status=Sample.Status.STREAMING, claim=claim).update(**fields)


def _skip(pk: int, claim: str) -> None:
    Sample.objects.filter(pk=pk, status=Sample.Status.STREAMING, claim=claim).update(
        status=Sample.Status.SKIPPED
    )


def _release(pk: int, claim: str) -> None:
    Sample.objects.filter(pk=pk, status=Sample.Status.STREAMING, claim=claim).update(
        status=Sample.Status.PENDING, claim="", heartbeat_at=None
    )
