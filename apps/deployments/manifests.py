"""The YAML kaitoweb applies: a KAITO Workspace, its inference ConfigMap and an HF_TOKEN Secret.

Rendered from a `LaunchSpec` (the launch forms) or parsed from a pasted multi-document YAML.
Every object carries our labels, so a retried launch recognises its own objects (409 = adopt)
and a teardown deletes exactly what it created. Secret values never appear in the YAML we show
or store: they are masked, and the real values travel separately (encrypted) until applied.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from kaitoweb.redaction import yaml_error_text

WORKSPACE_API_VERSION = "kaito.sh/v1beta1"
DEPLOYMENT_LABEL = "kaitoweb.io/deployment-uid"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "kaitoweb"
RUNTIME_ANNOTATION = "kaito.sh/runtime"
LOAD_BALANCER_ANNOTATION = "kaito.sh/enablelb"
HF_TOKEN_KEY = "HF_TOKEN"  # noqa: S105 (a key name, not a secret)
SECRET_MASK = "********"  # noqa: S105 (what we show instead of a secret)
INFERENCE_CONFIG_KEY = "inference_config.yaml"
APPLY_ORDER = {"Namespace": 0, "Secret": 1, "ConfigMap": 2, "Workspace": 3}
ALLOWED_KINDS = ("Workspace", "ConfigMap", "Secret")

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Workspace names end up in pod names ("<name>-0") and Service names: stay well under 63.
WORKSPACE_NAME_MAX = 50


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (an inference_config.yaml) as literal blocks, as people write them."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


class ManifestError(ValueError):
    """A pasted or rendered bundle that kaitoweb will not apply (the message names the document)."""


def is_dns_label(value: str, max_length: int = 63) -> bool:
    return len(value) <= max_length and bool(_DNS1123_LABEL.match(value))


def dns_label(text: str, max_length: int = WORKSPACE_NAME_MAX) -> str:
    """A valid DNS-1123 label made from any text: 'Phi-4-mini-instruct' -> 'phi-4-mini-instruct'."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower().rsplit("/", 1)[-1])
    label = re.sub(r"-{2,}", "-", label).strip("-")[:max_length].rstrip("-")
    return label or "workspace"


@dataclass(frozen=True)
class InferenceSettings:
    """vLLM settings KAITO reads from inference_config.yaml (None: KAITO's default)."""

    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    swap_space: int | None = None
    cpu_offload_gb: int | None = None

    def as_vllm(self) -> dict[str, Any]:
        values = {
            "max-model-len": self.max_model_len,
            "gpu-memory-utilization": self.gpu_memory_utilization,
            "swap-space": self.swap_space,
            "cpu-offload-gb": self.cpu_offload_gb,
        }
        return {k: v for k, v in values.items() if v is not None}

    def as_dict(self) -> dict[str, Any]:
        return {k.replace("-", "_"): v for k, v in self.as_vllm().items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> InferenceSettings:
        return cls(**{k: values.get(k) for k in cls.__dataclass_fields__})

    def __bool__(self) -> bool:
        return bool(self.as_vllm())


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a launch form asks for, enough to render the bundle."""

    name: str
    namespace: str
    vm_size: str
    node_count: int
    deployment_uid: str
    model_name: str = ""  # inference.preset.name (a KAITO preset or a Hugging Face id)
    runtime: str = "vllm"
    settings: InferenceSettings = field(default_factory=InferenceSettings)
    load_balancer: bool = False
    hf_token_secret: bool = False
    template: dict[str, Any] | None = None  # a custom pod template instead of a preset
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass
class Bundle:
    """The objects of one deployment, in apply order, plus the secret values kept apart."""

    objects: list[dict[str, Any]]
    secret_values: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def workspace(self) -> dict[str, Any]:
        return next(o for o in self.objects if o.get("kind") == "Workspace")

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o.get("kind") == kind]

    def to_yaml(self) -> str:
        """The YAML to show and store: secret values masked, multi-line text as blocks."""
        return yaml.dump_all(
            self.objects, Dumper=_BlockDumper, sort_keys=False, default_flow_style=False
        )

    def with_secrets(self) -> list[dict[str, Any]]:
        """The objects to apply, secret values filled in."""
        out = []
        for obj in self.objects:
            if obj.get("kind") == "Secret":
                name = obj["metadata"]["name"]
                filled = copy.deepcopy(obj)
                values = self.secret_values.get(name)
                if values is None:
                    raise ManifestError(
                        f"the values of Secret {name} are no longer held by kaitoweb (they are "
                        "dropped once applied); create the Secret in the cluster or launch again"
                    )
                filled.pop("data", None)
                filled["stringData"] = dict(values)
                out.append(filled)
            else:
                out.append(obj)
        return out


def _labels(uid: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {**(extra or {}), MANAGED_BY_LABEL: MANAGED_BY, DEPLOYMENT_LABEL: uid}


def inference_config_yaml(settings: InferenceSettings) -> str:
    """KAITO's inference_config.yaml with our vLLM settings over its defaults."""
    vllm = {"cpu-offload-gb": 0, "gpu-memory-utilization": 0.9, "swap-space": 4}
    vllm.update(settings.as_vllm())
    return yaml.safe_dump({"max_probe_steps": 6, "vllm": vllm}, sort_keys=False)


def bundle_render(spec: LaunchSpec, *, hf_token: str = "") -> Bundle:
    objects: list[dict[str, Any]] = []
    secret_values: dict[str, dict[str, str]] = {}
    labels = _labels(spec.deployment_uid)
    secret_name = f"{spec.name}-hf-token"
    config_name = f"{spec.name}-inference-config"
    if spec.hf_token_secret:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": secret_name, "namespace": spec.namespace, "labels": labels},
                "type": "Opaque",
                "stringData": {HF_TOKEN_KEY: SECRET_MASK},
            }
        )
        secret_values[secret_name] = {HF_TOKEN_KEY: hf_token}
    use_config = spec.template is None and spec.runtime == "vllm" and bool(spec.settings)
    if use_config:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": config_name, "namespace": spec.namespace, "labels": labels},
                "data": {INFERENCE_CONFIG_KEY: inference_config_yaml(spec.settings)},
            }
        )
    annotations = dict(spec.annotations)
    if spec.template is None and spec.runtime == "transformers":
        annotations[RUNTIME_ANNOTATION] = "transformers"
    if spec.load_balancer:
        annotations[LOAD_BALANCER_ANNOTATION] = "True"
    metadata: dict[str, Any] = {"name": spec.name, "namespace": spec.namespace, "labels": labels}
    if annotations:
        metadata["annotations"] = annotations
    inference: dict[str, Any]
    if spec.template is not None:
        inference = {"template": copy.deepcopy(spec.template)}
    else:
        preset: dict[str, Any] = {"name": spec.model_name}
        if spec.hf_token_secret:
            preset["presetOptions"] = {"modelAccessSecret": secret_name}
        inference = {"preset": preset}
        if use_config:
            inference["config"] = config_name
    objects.append(
        {
            "apiVersion": WORKSPACE_API_VERSION,
            "kind": "Workspace",
            "metadata": metadata,
            "resource": {
                "count": spec.node_count,
                "instanceType": spec.vm_size,
                "labelSelector": {"matchLabels": {"apps": spec.name}},
            },
            "inference": inference,
        }
    )
    return Bundle(objects=objects, secret_values=secret_values)


def template_render(
    *,
    name: str,
    image: str,
    command: list[str],
    args: list[str],
    port: int,
    model_id: str = "",
    cpu: str = "",
    memory: str = "",
    gpus: int = 0,
) -> dict[str, Any]:
    """A pod template for KAITO's custom-model path (inference.template)."""
    container: dict[str, Any] = {"name": name, "image": image}
    if command:
        container["command"] = command
    if args:
        container["args"] = args
    container["ports"] = [{"containerPort": port}]
    if model_id:
        container["env"] = [{"name": "MODEL_ID", "value": model_id}]
    requests: dict[str, Any] = {}
    if cpu:
        requests["cpu"] = cpu
    if memory:
        requests["memory"] = memory
    if gpus:
        requests["nvidia.com/gpu"] = str(gpus)
    if requests:
        container["resources"] = {"requests": requests, "limits": dict(requests)}
    return {"spec": {"containers": [container]}}


def bundle_parse(text: str, *, namespace: str, deployment_uid: str) -> Bundle:
    """A pasted bundle: one Workspace, with its ConfigMaps and Secrets. Adds our labels, masks
    Secret values (kept apart), and puts every object in `namespace` (a different one is an
    error, so nothing lands where the user did not look)."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(f"the YAML cannot be read: {yaml_error_text(exc)}") from None
    if not documents:
        raise ManifestError("there is no YAML document to apply")
    objects: list[dict[str, Any]] = []
    secret_values: dict[str, dict[str, str]] = {}
    for position, document in enumerate(documents, start=1):
        where = f"document {position}"
        if not isinstance(document, dict):
            raise ManifestError(f"{where} is not a mapping")
        kind = str(document.get("kind") or "")
        metadata = document.get("metadata")
        if not isinstance(metadata, dict) or not metadata.get("name"):
            raise ManifestError(f"{where} ({kind or 'no kind'}) has no metadata.name")
        name = str(metadata["name"])
        where = f"document {position} ({kind} {name})"
        if kind not in ALLOWED_KINDS:
            allowed = ", ".join(ALLOWED_KINDS)
            raise ManifestError(
                f"{where}: kaitoweb applies only {allowed}, not {kind or 'no kind'}"
            )
        expected_api = WORKSPACE_API_VERSION if kind == "Workspace" else "v1"
        if document.get("apiVersion") != expected_api:
            raise ManifestError(f"{where}: apiVersion must be {expected_api}")
        if not is_dns_label(name, 253 if kind != "Workspace" else WORKSPACE_NAME_MAX):
            raise ManifestError(f"{where}: the name must be a lowercase DNS-1123 label")
        given_namespace = metadata.get("namespace")
        if given_namespace and given_namespace != namespace:
            raise ManifestError(
                f"{where} is for namespace {given_namespace}, but the launch is in {namespace}"
            )
        obj = copy.deepcopy(document)
        obj["metadata"]["namespace"] = namespace
        obj["metadata"]["labels"] = _labels(deployment_uid, obj["metadata"].get("labels"))
        for server_field in (
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generation",
            "managedFields",
        ):
            obj["metadata"].pop(server_field, None)
        obj.pop("status", None)
        if kind == "Secret":
            secret_values[name] = _secret_values(obj, where)
            obj.pop("data", None)
            obj["stringData"] = {key: SECRET_MASK for key in secret_values[name]}
        objects.append(obj)
    workspaces = [o for o in objects if o["kind"] == "Workspace"]
    if len(workspaces) != 1:
        raise ManifestError(f"the bundle must hold exactly one Workspace, not {len(workspaces)}")
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    if len(set(names)) != len(names):
        raise ManifestError("the bundle holds the same object twice")
    objects.sort(key=lambda o: APPLY_ORDER[o["kind"]])
    return Bundle(objects=objects, secret_values=secret_values)


def _secret_values(secret: dict[str, Any], where: str) -> dict[str, str]:
    import base64
    import binascii

    values: dict[str, str] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            values[str(key)] = base64.b64decode(str(value), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ManifestError(f"{where}: data.{key} is not base64-encoded text") from None
    for key, value in (secret.get("stringData") or {}).items():
        values[str(key)] = str(value)
    if not values:
        raise ManifestError(f"{where} holds no data")
    return values


def workspace_facts(workspace: Mapping[str, Any]) -> dict[str, Any]:
    """What a Workspace asks for, as a Deployment row records it."""
    metadata = workspace.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    resource = workspace.get("resource") or {}
    inference = workspace.get("inference") or {}
    preset = inference.get("preset") or {}
    template = inference.get("template")
    if template is not None:
        containers = (template.get("spec") or {}).get("containers") or [{}]
        first = containers[0] if containers else {}
        env = {e.get("name"): e.get("value") for e in first.get("env") or [] if isinstance(e, dict)}
        model_name = str(
            env.get("MODEL_ID") or _arg_after(first, "--model_id") or first.get("image") or ""
        )
    else:
        model_name = str(preset.get("name") or "")
    runtime = (
        "transformers"
        if template is not None
        or str(annotations.get(RUNTIME_ANNOTATION, "")).lower() == "transformers"
        else "vllm"
    )
    return {
        "model_name": model_name,
        "vm_size": str(resource.get("instanceType") or ""),
        "node_count": int(resource.get("count") or 1),
        "runtime": runtime,
        "load_balancer": str(annotations.get(LOAD_BALANCER_ANNOTATION, "")).lower() == "true",
        "uses_template": template is not None,
        "uses_hf_secret": bool((preset.get("presetOptions") or {}).get("modelAccessSecret")),
        "config_name": str(inference.get("config") or ""),
    }


def _arg_after(container: Mapping[str, Any], flag: str) -> str:
    words = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
    for index, word in enumerate(words):
        if word == flag and index + 1 < len(words):
            return words[index + 1]
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return ""


def bundle_from_yaml(text: str, secret_values: Mapping[str, Mapping[str, str]]) -> Bundle:
    """A stored (masked) bundle back, with the secret values that were kept apart."""
    objects = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    return Bundle(objects=objects, secret_values={k: dict(v) for k, v in secret_values.items()})
