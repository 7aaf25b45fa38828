"""KAITO's validating admission webhook for Workspaces (``validation.workspace.kaito.sh``).

Rules and wording follow ``api/v1beta1/workspace_validation.go`` and
``inference_config_validation.go`` in the KAITO repository. As in a real cluster, the API
server wraps a denial as ``400 BadRequest`` with the message
``admission webhook "validation.workspace.kaito.sh" denied the request: validation failed: ...``;
structural-schema errors (such as a missing ``resource.labelSelector``) are the API server's own
``422 Invalid`` and never reach the webhook.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from kaitosim import api_errors
from kaitosim.bootstrap import INFERENCE_PARAMS_TEMPLATE, KAITO_RELEASE_NAMESPACE
from kaitosim.cluster import AdmissionRequest, Cluster
from kaitosim.reference import ReferenceData

WEBHOOK_NAME = "validation.workspace.kaito.sh"
RUNTIME_ANNOTATION = "kaito.sh/runtime"
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SIMULATOR_NOTE = (
    "kaitosim: the simulator only knows KAITO's legacy preset names and the model ids of its "
    "curated "
    "catalog (reference/kaito/model_catalog*.yaml); it cannot look up an arbitrary Hugging Face "
    "model id "
    "on the hub as real KAITO would."
)


@dataclass
class FieldError:
    """One knative ``apis.FieldError``: message, paths and optional details."""

    message: str
    paths: list[str] = field(default_factory=list)
    details: str = ""

    def render(self) -> str:
        text = f"{self.message}: {', '.join(self.paths)}"
        return f"{text}\n{self.details}" if self.details else text


def invalid_value(value: str, path: str, details: str = "") -> FieldError:
    return FieldError(f"invalid value: {value}", [path], details)


def generic(message: str, *paths: str) -> FieldError:
    return FieldError(message, [p for p in paths])


def missing(*paths: str) -> FieldError:
    return FieldError("missing field(s)", list(paths))


def runtime_of(workspace: dict[str, Any]) -> str:
    """``vllm`` unless the workspace asks for ``transformers`` (or uses a custom template)."""
    annotations = (workspace.get("metadata") or {}).get("annotations") or {}
    inference = workspace.get("inference") or {}
    if inference.get("template") is not None and inference.get("preset") is None:
        return "transformers"
    runtime = str(annotations.get(RUNTIME_ANNOTATION, "vllm")).lower()
    return "transformers" if runtime == "transformers" else "vllm"


def max_model_len_from_config(config_yaml: str) -> int | None:
    """``vllm.max-model-len`` of an ``inference_config.yaml``, if set."""
    try:
        parsed = yaml.safe_load(config_yaml) or {}
    except yaml.YAMLError:
        return None
    value = (parsed.get("vllm") or {}).get("max-model-len") if isinstance(parsed, dict) else None
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


class KaitoWorkspaceWebhook:
    """Validates Workspace creates and updates the way KAITO's webhook does."""

    def __init__(self, cluster: Cluster, reference: ReferenceData) -> None:
        self._cluster = cluster
        self._reference = reference

    def admit(self, request: AdmissionRequest) -> None:
        if request.resource_type.bucket != "kaito.sh/workspaces" or request.subresource:
            return
        if request.operation == "CREATE":
            errors = self.validate_create(request.obj)
        elif request.operation == "UPDATE" and request.old_obj is not None:
            errors = self.validate_update(request.obj, request.old_obj)
        else:
            return
        if errors:
            rendered = "\n".join(error.render() for error in errors)
            raise api_errors.admission_denied(WEBHOOK_NAME, f"validation failed: {rendered}")

    # ------------------------------------------------------------------ create
    def validate_create(self, workspace: dict[str, Any]) -> list[FieldError]:
        errors: list[FieldError] = []
        name = str((workspace.get("metadata") or {}).get("name", ""))
        if len(name) > 63 or not _DNS1123_LABEL.match(name):
            errors.append(
                invalid_value(
                    "a lowercase RFC 1123 label must consist of lower case alphanumeric "
                    "characters or '-', "
                    "and must start and end with an alphanumeric character (e.g. 'my-name',  or "
                    "'123-abc', "
                    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                    "name",
                )
            )
        inference = workspace.get("inference")
        tuning = workspace.get("tuning")
        resource = workspace.get("resource") or {}
        if inference is None and tuning is None:
            errors.append(
                generic("Either Inference or Tuning must be specified, not neither", "spec")
            )
        if inference is not None and tuning is not None:
            errors.append(
                generic("Either Inference or Tuning must be specified, but not both", "spec")
            )
        if not resource.get("instanceType"):
            errors.append(
                missing(
                    "spec.instanceType is required when node auto-provisioning is enabled",
                    "spec.resource.instanceType",
                )
            )
        if inference is not None:
            errors.extend(self._validate_inference_resource(workspace, inference, resource))
            errors.extend(self._validate_inference(workspace, inference))
            errors.extend(self._validate_inference_config(workspace, inference))
        if tuning is not None:
            errors.extend(self._validate_tuning(tuning, resource))
        return errors

    def _validate_inference_resource(
        self, workspace: dict[str, Any], inference: dict[str, Any], resource: dict[str, Any]
    ) -> list[FieldError]:
        errors: list[FieldError] = []
        preset = inference.get("preset")
        preset_name = str((preset or {}).get("name", "")).lower()
        if preset is not None:
            model = self._reference.resolve_preset(preset_name)
            if model is None or model.deprecated:
                if model is not None and model.deprecated:
                    errors.append(
                        generic(
                            f"Model {preset_name} is deprecated and no longer supported",
                            "resource.presetName",
                        )
                    )
                return errors
        instance_type = str(resource.get("instanceType") or "")
        if not instance_type:
            return errors
        sku = self._reference.sku(instance_type)
        if sku is None or (preset is not None and not sku.is_gpu):
            supported = ", ".join(self._reference.gpu_sku_names())
            errors.append(
                invalid_value(
                    f"Unsupported instance type {instance_type}. Supported SKUs: {supported}",
                    "resource.instanceType",
                )
            )
            return errors
        if preset is not None and runtime_of(workspace) == "transformers":
            model = self._reference.resolve_preset(preset_name)
            entry = (model.catalog_entry if model else None) or {}
            size = str(entry.get("modelFileSize", ""))
            count = int(resource.get("count") or 1)
            total_gib = sku.gpu_memory_gib * count
            required = _gib(size)
            if required is not None and total_gib < required:
                errors.append(
                    invalid_value(
                        f"Insufficient total GPU memory: Instance type {instance_type} has a "
                        "total of "
                        f"{total_gib:g}Gi, but preset {preset_name} requires at least {size}",
                        "resource.instanceType",
                    )
                )
        return errors

    def _validate_inference(
        self, workspace: dict[str, Any], inference: dict[str, Any]
    ) -> list[FieldError]:
        errors: list[FieldError] = []
        preset = inference.get("preset")
        template = inference.get("template")
        if preset is None and template is None:
            errors.append(missing("inference.Preset or Template must be specified"))
        if preset is not None and template is not None:
            errors.append(generic("Preset and Template cannot be set at the same time"))
        if preset is not None:
            preset_name = str(preset.get("name", ""))
            model = self._reference.resolve_preset(preset_name)
            if model is None or model.deprecated:
                errors.append(
                    invalid_value(
                        f"Unsupported inference preset name {preset_name}",
                        "inference.presetName",
                        "" if model is not None else _SIMULATOR_NOTE,
                    )
                )
                return errors
            secret = str((preset.get("presetOptions") or {}).get("modelAccessSecret") or "")
            if model.download_at_runtime:
                if model.download_auth_required and not secret:
                    errors.append(
                        generic(
                            "This preset requires authentication and needs a modelAccessSecret "
                            "with HF_TOKEN key "
                            "under presetOptions to download the model"
                        )
                    )
            elif secret:
                errors.append(
                    generic(
                        "This preset does not require a modelAccessSecret with HF_TOKEN key "
                        "under presetOptions"
                    )
                )
        adapters = inference.get("adapters") or []
        if len(adapters) > 10:
            errors.append(
                generic("Number of Adapters exceeds the maximum limit, maximum of 10 allowed")
            )
        return errors

    def _validate_inference_config(
        self, workspace: dict[str, Any], inference: dict[str, Any]
    ) -> list[FieldError]:
        if runtime_of(workspace) != "vllm":
            return []
        namespace = str((workspace.get("metadata") or {}).get("namespace", "default"))
        config_name = str(inference.get("config") or "")
        lookup_namespace = namespace
        if not config_name:
            config_name, lookup_namespace = INFERENCE_PARAMS_TEMPLATE, KAITO_RELEASE_NAMESPACE
        configmaps = self._cluster.resource("", "v1", "configmaps")
        configmap = self._cluster.find(configmaps, lookup_namespace, config_name)
        if configmap is None:
            return [
                generic(
                    f"ConfigMap '{config_name}' specified in 'config' not found in namespace "
                    f"'{lookup_namespace}'",
                    "config",
                )
            ]
        data = configmap.get("data") or {}
        if "inference_config.yaml" not in data:
            return [missing("inference_config.yaml in ConfigMap")]
        try:
            yaml.safe_load(data["inference_config.yaml"])
        except yaml.YAMLError as error:
            return [
                generic(f"Failed to parse inference_config.yaml: {error}", "inference_config.yaml")
            ]
        preset = inference.get("preset")
        max_model_len = max_model_len_from_config(data["inference_config.yaml"])
        if preset is not None and max_model_len is not None:
            model = self._reference.resolve_preset(str(preset.get("name", "")))
            limit = model.model_token_limit if model else 0
            if limit and max_model_len > limit:
                return [
                    invalid_value(
                        f"max-model-len {max_model_len} exceeds model's maximum supported "
                        f"context window {limit} "
                        "(ModelTokenLimit)",
                        "max-model-len",
                    )
                ]
        return []

    def _validate_tuning(
        self, tuning: dict[str, Any], resource: dict[str, Any]
    ) -> list[FieldError]:
        errors: list[FieldError] = []
        if int(resource.get("count") or 1) > 1:
            errors.append(
                invalid_value(
                    "Tuning does not currently support multinode configurations. Please set the "
                    "node count to 1. "
                    "Future support with DeepSpeed will allow this.",
                    "resource.count",
                )
            )
        method = str(tuning.get("method", "")).lower()
        if method not in ("lora", "qlora"):
            errors.append(invalid_value(str(tuning.get("method", "")), "tuning.Method"))
        preset = tuning.get("preset")
        if preset is None:
            errors.append(missing("tuning.Preset"))
        elif self._reference.resolve_preset(str(preset.get("name", ""))) is None:
            errors.append(
                invalid_value(
                    f"Unsupported tuning preset name {preset.get('name', '')}", "tuning.presetName"
                )
            )
        return errors

    # ------------------------------------------------------------------ update
    def validate_update(self, workspace: dict[str, Any], old: dict[str, Any]) -> list[FieldError]:
        errors: list[FieldError] = []
        if (old.get("inference") is None) != (workspace.get("inference") is None):
            errors.append(generic("Inference field cannot be toggled once set", "spec.inference"))
        if (old.get("tuning") is None) != (workspace.get("tuning") is None):
            errors.append(generic("Tuning field cannot be toggled once set", "spec.tuning"))
        resource = workspace.get("resource") or {}
        old_resource = old.get("resource") or {}
        counts = (resource.get("count"), old_resource.get("count"))
        if None not in counts and counts[0] != counts[1]:
            errors.append(generic("field is immutable", "resource.count"))
        if not resource.get("instanceType"):
            errors.append(
                missing(
                    "instanceType is required when node auto-provisioning is enabled",
                    "resource.instanceType",
                )
            )
        elif old_resource.get("instanceType") and old_resource.get("instanceType") != resource.get(
            "instanceType"
        ):
            errors.append(
                generic(
                    "instanceType cannot be changed once set when node auto-provisioning is "
                    "enabled",
                    "resource.instanceType",
                )
            )
        if _selector_map(resource.get("labelSelector")) != _selector_map(
            old_resource.get("labelSelector")
        ):
            errors.append(generic("field is immutable", "resource.labelSelector"))
        inference = workspace.get("inference")
        old_inference = old.get("inference")
        if inference is not None and old_inference is not None:
            if inference.get("preset") != old_inference.get("preset"):
                errors.append(generic("field is immutable", "inference.preset"))
            if (inference.get("template") is None) != (old_inference.get("template") is None):
                errors.append(
                    generic("field cannot be unset/set if it was set/unset", "inference.template")
                )
        tuning = workspace.get("tuning")
        old_tuning = old.get("tuning")
        if (
            tuning is not None
            and old_tuning is not None
            and tuning.get("preset") != old_tuning.get("preset")
        ):
            errors.append(generic("Preset cannot be changed", "tuning.Preset"))
        return errors


def _selector_map(selector: dict[str, Any] | None) -> dict[str, str]:
    if not selector:
        return {}
    labels = {str(k): str(v) for k, v in (selector.get("matchLabels") or {}).items()}
    for expression in selector.get("matchExpressions") or []:
        if expression.get("operator") == "In" and len(expression.get("values") or []) == 1:
            labels[str(expression["key"])] = str(expression["values"][0])
    return labels


def _gib(size: str) -> float | None:
    match = re.match(r"^\s*([0-9.]+)\s*Gi\s*$", size)
    return float(match.group(1)) if match else None
