"""Targets and runs for the playground's tests (runs made directly, without queueing a task)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from apps.catalog.models import FoundryModel, GpuVmSize
from apps.playground import clients
from apps.playground.models import ABRun, Sample, Target
from apps.playground.services import target_save


def kaito_target(url: str, *, name: str = "kaito-phi-4-mini", **fields: Any) -> Target:
    values: dict[str, Any] = {
        "kind": Target.Kind.KAITO_VLLM,
        "endpoint_url": url,
        "model_name": "phi-4-mini-instruct",
        "region": "eastus",
        "vm_size": GpuVmSize.objects.get(sku="Standard_NC24ads_A100_v4"),
        "node_count": 1,
    }
    values.update(fields)
    return target_save(target=Target(name=name, **values))


def foundry_target(
    url: str,
    key: str,
    *,
    name: str = "foundry-phi-4",
    kind: str = clients.FOUNDRY_OPENAI,
    **fields: Any,
) -> Target:
    values: dict[str, Any] = {
        "kind": kind,
        "endpoint_url": f"{url}/openai/v1/" if kind == clients.FOUNDRY_OPENAI else f"{url}/models",
        "model_name": "Phi-4",
        "auth": Target.Auth.API_KEY,
        "api_key": key,
        "deployment_type": Target.DeploymentType.DATA_ZONE,
        "region": "westeurope",
        "foundry_model": FoundryModel.objects.get(name="Phi-4"),
    }
    values.update(fields)
    return target_save(target=Target(name=name, **values))


def queued_run(targets: Sequence[Target], **fields: Any) -> ABRun:
    values: dict[str, Any] = {
        "prompt": "Explain KAITO in two sentences.",
        "system_prompt": "Be brief.",
        "max_tokens": 24,
        "temperature": 0.7,
        "seed": 3,
        "timeout_s": 20,
    }
    values.update(fields)
    run = ABRun.objects.create(**values)
    for side, target in zip("ab", targets, strict=True):
        Sample.objects.create(
            run=run,
            side=side,
            target=target,
            target_snapshot=target.snapshot(),
            streamed=target.streamed,
        )
    return run
