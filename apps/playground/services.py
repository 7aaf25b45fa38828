"""Writes for the playground: targets (with their prefilled cost basis and compliance profile) and
A/B runs, from the form to the measured samples."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from functools import partial
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from apps.catalog.models import FoundryModel, GpuVmSize, KaitoModel
from apps.playground import clients
from apps.playground.compliance import compliance_defaults
from apps.playground.costs import CostBasis, cost_per_1m_tokens
from apps.playground.models import ABRun, PreferenceVote, Sample, Target
from kaitoweb.redaction import redact

logger = logging.getLogger(__name__)

# How often the measuring worker writes partial answers for the page to poll.
PROGRESS_INTERVAL_S = 0.25
COST_PLACES = Decimal("1e-12")
PER_1M_PLACES = Decimal("1e-6")


# --- targets -------------------------------------------------------------------------------------


def target_deployment_link(*, target: Target, overwrite: bool = False) -> None:
    """For a target linked to a KAITO deployment: the wire format from its runtime, the served
    model, the catalog model, the VM size and nodes (the cost basis) and the cluster's region
    (the compliance profile), from the deployment. ``overwrite`` False fills only what is unset.
    The URL, auth and TLS are not stored: `Target.endpoint` reads them at request time."""
    deployment = target.deployment
    if deployment is None:
        return
    target.kind = (
        Target.Kind.KAITO_TRANSFORMERS_CHAT
        if deployment.runtime == deployment.Runtime.TRANSFORMERS
        else Target.Kind.KAITO_VLLM
    )
    target.endpoint_url = ""
    target.auth = Target.Auth.NONE
    target.ca_certificate = ""
    if overwrite or not target.model_name:
        target.model_name = deployment.model_name
    if overwrite or target.kaito_model is None:
        target.kaito_model = deployment.kaito_model
    if overwrite or target.vm_size is None:
        target.vm_size = GpuVmSize.objects.filter(sku=deployment.vm_size).first()
        target.node_count = deployment.node_count
    if overwrite or not target.region:
        target.region = deployment.cluster.region


def target_catalog_link(*, target: Target) -> None:
    """Link the catalog model the target serves, by its model/deployment name, where unset."""
    name = target.model_name.strip()
    if not name:
        return
    if target.is_foundry and target.foundry_model is None:
        target.foundry_model = FoundryModel.objects.filter(name__iexact=name).first()
    if target.kaito_model is None:
        if target.is_foundry and target.foundry_model is not None:
            target.kaito_model = target.foundry_model.kaito_model
        elif not target.is_foundry:
            target.kaito_model = KaitoModel.objects.filter(
                Q(preset_name__iexact=name) | Q(model_id__iexact=name)
            ).first()


def target_cost_defaults(*, target: Target) -> list[str]:
    """Set the cost basis from the catalog: Foundry's prices x the deployment type's factor, or
    the VM size's $/hour x nodes. Returns what could not be filled in, for the form to show."""
    notes: list[str] = []
    if target.is_foundry:
        target.cost_basis = Target.CostBasisKind.PER_TOKEN
        fm = target.foundry_model
        if fm is None:
            notes.append("No catalog Foundry model is linked: enter the prices per 1M tokens.")
            return notes
        target.input_per_1m = fm.input_per_1m
        target.output_per_1m = fm.output_per_1m
        deployment_type = target.deployment_type or Target.DeploymentType.GLOBAL
        factor = fm.price_factor(deployment_type)
        if factor is None:
            target.price_factor = Decimal(1)
            notes.append(
                f"The catalog does not know {fm.name}'s "
                f"{Target.DeploymentType(deployment_type).label} price factor; 1.0 is assumed: "
                "edit it."
            )
        else:
            target.price_factor = factor
        if fm.input_per_1m is None or fm.output_per_1m is None:
            notes.append(f"The catalog has no price for {fm.name}: enter it.")
        return notes
    if target.is_kaito:
        target.cost_basis = Target.CostBasisKind.PER_HOUR
        if target.vm_size is None:
            notes.append("Pick the VM size the workspace runs on to price it per node-hour.")
            return notes
        target.price_per_hour = target.vm_size.price_per_hour
        if target.price_per_hour is None:
            notes.append(f"The catalog has no $/hour for {target.vm_size.sku}: enter it.")
        return notes
    return notes


def target_compliance_defaults(*, target: Target) -> None:
    """Set the compliance profile from the reference facts for the target's kind and scope."""
    profile = compliance_defaults(
        kind=target.kind,
        deployment_type=target.deployment_type,
        foundry_model=target.foundry_model,
        kaito_model=target.kaito_model,
        abuse_monitoring_exempt=target.abuse_monitoring_exempt,
    )
    target.processing_scope = profile.processing_scope
    target.data_leaves_network = profile.data_leaves_network
    target.provider_retention = profile.provider_retention
    target.certifications = profile.certifications
    target.model_license = profile.model_license


def target_prefill(*, target: Target) -> list[str]:
    """Link the catalog, then fill in the cost basis and the compliance profile (overwriting)."""
    target_deployment_link(target=target, overwrite=True)
    target_catalog_link(target=target)
    notes = target_cost_defaults(target=target)
    target_compliance_defaults(target=target)
    return notes


TARGET_DELETED = "The target was deleted before the request was sent."


@transaction.atomic
def target_delete(*, target: Target) -> str:
    """Delete a target; one that has measured anything or has votes is archived instead, so
    runs and experiments keep it apart from every other target. Requests of it not yet sent
    are recorded as failed (the ones in flight finish). Returns "deleted" or "archived"."""
    if not (
        Sample.objects.filter(target=target).exists()
        or PreferenceVote.objects.filter(target=target).exists()
    ):
        target.delete()
        return "deleted"
    now = timezone.now()
    Sample.objects.filter(target=target, status=Sample.Status.PENDING).update(
        status=Sample.Status.FAILED,
        error_kind="config",
        error_message=TARGET_DELETED,
        finished_at=now,
        claim="",
    )
    # The name is free again for a new target; history shows the snapshot's name.
    target.name = f"{target.name[:70]} (deleted #{target.pk})"
    target.archived_at = now
    target.save(update_fields=["name", "archived_at"])
    return "archived"


def target_save(*, target: Target) -> Target:
    """Save a target; a new one without a cost basis or a profile gets the prefilled ones."""
    target_deployment_link(target=target)
    target_catalog_link(target=target)
    if target.cost_basis == Target.CostBasisKind.NONE and not any(
        v is not None for v in (target.input_per_1m, target.output_per_1m, target.price_per_hour)
    ):
        target_cost_defaults(target=target)
    if not target.processing_scope:
        target_compliance_defaults(target=target)
    if target.auth != Target.Auth.API_KEY:
        target.api_key = ""
    target.full_clean()
    target.save()
    return target


# --- A/B runs ------------------------------------------------------------------------------------


@transaction.atomic
def abrun_start(
    *,
    user: AbstractBaseUser | AnonymousUser | None,
    targets: Sequence[Target],
    prompt: str,
    system_prompt: str = "",
    max_tokens: int = 256,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    timeout_s: float = 60.0,
    note: str = "",
    rerun_of: ABRun | None = None,
) -> ABRun:
    """Record a run with one sample per target (A, B) and queue it for a worker."""
    from apps.playground.tasks import abrun_execute_task

    if len(targets) != 2:
        raise ValueError("an A/B run compares exactly two targets")
    run = ABRun.objects.create(
        created_by_id=user.pk if user is not None and user.is_authenticated else None,
        prompt=prompt,
        system_prompt=system_prompt,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        timeout_s=timeout_s,
        note=note,
        rerun_of=rerun_of,
    )
    for side, target in zip("ab", targets, strict=True):
        Sample.objects.create(
            run=run,
            side=side,
            target=target,
            target_snapshot=target.snapshot(),
            streamed=target.streamed,
        )
    transaction.on_commit(partial(abrun_execute_task.delay, run.pk))
    return run


def abrun_rerun(*, run: ABRun, user: AbstractBaseUser | AnonymousUser | None) -> ABRun:
    """The same prompt and settings against the same targets (as they are now)."""
    targets = [s.target for s in run.samples.select_related("target").order_by("side")]
    if any(t is None for t in targets):
        raise ValueError("a target of this run was deleted; start a new run instead")
    return abrun_start(
        user=user,
        targets=[t for t in targets if t is not None],
        prompt=run.prompt,
        system_prompt=run.system_prompt,
        max_tokens=run.max_tokens,
        temperature=run.temperature,
        top_p=run.top_p,
        seed=run.seed,
        timeout_s=run.timeout_s,
        note=run.note,
        rerun_of=run,
    )


def abrun_note_update(*, run: ABRun, note: str) -> ABRun:
    run.note = note
    run.save(update_fields=["note"])
    return run


def abrun_execute(*, run_id: int) -> ABRun | None:
    """Send both requests at the same moment and record what each side measured.

    Refuses (returns the run untouched) unless it is queued, so a redelivered task is harmless.
    Partial answers are written every PROGRESS_INTERVAL_S for the page to show as they arrive.
    """
    with transaction.atomic():
        run = ABRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            logger.warning("A/B run %s no longer exists: nothing to run", run_id)
            return None
        if run.status != ABRun.Status.QUEUED:
            logger.info("A/B run %s is %s, not queued: not run again", run.pk, run.status)
            return run
        run.status = ABRun.Status.RUNNING
        run.started_at = timezone.now()
        run.save(update_fields=["status", "started_at"])

    samples = list(run.samples.select_related("target__deployment__cluster").order_by("side"))
    chat = run.chat_request()
    live: list[clients.Measurement] = []
    jobs: list[tuple[clients.Endpoint, clients.ChatRequest]] = []
    measured: list[tuple[Sample, clients.Measurement]] = []
    for sample in samples:
        kind = str(sample.target_snapshot.get("kind", ""))
        m = clients.Measurement(kind=kind, streamed=kind in clients.STREAMING_KINDS)
        if sample.target is None or sample.target.archived_at is not None:
            m.fail("config", "The target was deleted before the run started.")
        else:
            try:
                endpoint = sample.target.endpoint()
            except Exception as exc:  # an undecryptable key, say
                m.fail("config", f"{type(exc).__name__}: {exc}")
            else:
                jobs.append((endpoint, chat))
                live.append(m)
        measured.append((sample, m))

    try:
        result = asyncio.run(
            _measure_with_progress(jobs, live, measured, timeout_s=float(run.timeout_s))
        )
        run.start_skew_ms = result.start_skew_ms
        run.status = ABRun.Status.DONE
    except Exception as exc:
        logger.exception("A/B run %s failed", run.pk)
        run.status = ABRun.Status.FAILED
        run.error = redact(f"{type(exc).__name__}: {exc}")
    for sample, m in measured:
        _sample_apply(sample, m)
        sample.save()
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "finished_at", "start_skew_ms", "error"])
    return run


async def _measure_with_progress(
    jobs: list[tuple[clients.Endpoint, clients.ChatRequest]],
    live: list[clients.Measurement],
    measured: list[tuple[Sample, clients.Measurement]],
    *,
    timeout_s: float,
) -> clients.PairResult:
    """measure_together, with a writer that saves partial answers off the event loop's thread
    (so a slow database never delays the timing of a token)."""
    loop = asyncio.get_running_loop()
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="abrun-progress")
    stop = asyncio.Event()
    written: dict[int, tuple[str, int]] = {}

    async def write_progress() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PROGRESS_INTERVAL_S)
            updates = []
            for sample, m in measured:
                mark = (m.state, len(m.parts))
                if written.get(sample.pk) != mark and not stop.is_set():
                    written[sample.pk] = mark
                    updates.append((sample.pk, _progress_fields(m)))
            if updates:
                await loop.run_in_executor(writer, _write_progress, updates)

    progress = asyncio.create_task(write_progress())
    try:
        if not jobs:
            return clients.PairResult(measurements=[], start_skew_ms=None)
        return await clients.measure_together(jobs, timeout_s=timeout_s, live=live)
    finally:
        stop.set()
        await progress
        await loop.run_in_executor(writer, _close_connection)
        writer.shutdown()


def _progress_fields(m: clients.Measurement) -> dict[str, Any]:
    return {
        "status": Sample.Status.STREAMING if m.state == "streaming" else Sample.Status.PENDING,
        "text": m.text,
        "chunks": m.chunks,
        "ttft_ms": m.ttft_ms,
    }


def _write_progress(updates: list[tuple[int, dict[str, Any]]]) -> None:
    for pk, fields in updates:
        Sample.objects.filter(pk=pk).exclude(
            status__in=[Sample.Status.DONE, Sample.Status.FAILED]
        ).update(**fields)


def _close_connection() -> None:
    """Close the calling thread's database connection (the progress writer's own)."""
    connection.close()


def _rounded(value: float | None, places: int = 3) -> float | None:
    return None if value is None else round(value, places)


def _sample_apply(sample: Sample, m: clients.Measurement, *, concurrency: int = 1) -> None:
    """Copy a finished measurement, its statistics and its cost onto the sample (a KAITO
    request's share of node time is divided by the requests it ran alongside)."""
    sample.status = Sample.Status.DONE if m.ok else Sample.Status.FAILED
    sample.text = m.text
    sample.streamed = m.streamed
    sample.ttft_ms = _rounded(m.ttft_ms)
    sample.itl_ms = [round(x, 3) for x in m.itl_ms]
    sample.itl_mean_ms = _rounded(m.itl_mean_ms)
    sample.itl_p95_ms = _rounded(m.itl_p95_ms)
    sample.e2e_ms = _rounded(m.e2e_ms)
    sample.connect_ms = _rounded(m.connect_ms)
    sample.output_tokens_per_s = _rounded(m.output_tokens_per_s)
    sample.input_tokens = m.input_tokens
    sample.output_tokens = m.output_tokens
    sample.reasoning_tokens = m.reasoning_tokens
    sample.tokens_estimated = m.tokens_estimated
    sample.chunks = m.chunks
    sample.finish_reason = m.finish_reason
    sample.http_status = m.http_status
    sample.error_kind = m.error_kind
    sample.error_message = m.error_message
    sample.retry_after_s = m.retry_after_s
    sample.cost_usd = None
    sample.cost_per_1m_usd = None
    if m.output_tokens is None:
        return  # nothing was generated, nothing to price
    basis: CostBasis = sample.cost_basis
    e2e = sample.e2e_ms  # as stored, so the page's cost is its E2E times the price
    cost = basis.request_cost(
        input_tokens=m.input_tokens,
        output_tokens=m.output_tokens,
        e2e_seconds=None if e2e is None else e2e / 1000,
        concurrency=concurrency,
    )
    if cost is None:
        return
    sample.cost_usd = cost.quantize(COST_PLACES)
    per_1m = cost_per_1m_tokens(cost=cost, tokens=(m.input_tokens or 0) + m.output_tokens)
    sample.cost_per_1m_usd = None if per_1m is None else per_1m.quantize(PER_1M_PLACES)
