"""Launch forms: a catalog preset, a pasted manifest, or a custom model. Each renders a bundle.

Bad input stops here with an error on the field; what passes is then dry-run on the cluster.
"""

from __future__ import annotations

import shlex
import uuid
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from apps.catalog.models import GpuVmSize, KaitoModel, Lifecycle
from apps.catalog.sizing import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_UTILIZATION,
    ModelSpec,
    Sizing,
    size_on,
)
from apps.clusters.models import Cluster
from apps.deployments import manifests
from apps.deployments.models import Deployment
from apps.deployments.selectors import VmChoice, vm_choices
from apps.deployments.services import deployment_name_propose

LB_WARNING = (
    "KAITO's LoadBalancer Service (annotation kaito.sh/enablelb) gives the model a public IP "
    "with no authentication: KAITO documents it for testing only."
)


def _dns_label_validator(max_length: int) -> Any:
    def validate(value: str) -> None:
        if not manifests.is_dns_label(value, max_length):
            raise ValidationError(
                f"Use at most {max_length} lowercase letters, digits and '-', starting and "
                "ending with a letter or digit (a DNS-1123 label)."
            )

    return validate


class LaunchBaseForm(forms.Form):
    """Cluster, namespace and the uid that makes a preview and its launch the same objects."""

    cluster = forms.ModelChoiceField(queryset=Cluster.objects.all(), empty_label=None)
    namespace = forms.CharField(max_length=63, validators=[_dns_label_validator(63)])
    deployment_uid = forms.UUIDField(widget=forms.HiddenInput)

    source = Deployment.Source.PRESET

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial.setdefault("deployment_uid", uuid.uuid4())
            first = Cluster.objects.first()
            if first is not None:
                self.initial.setdefault("cluster", first.pk)
                self.initial.setdefault("namespace", first.default_namespace)

    def clean_deployment_uid(self) -> uuid.UUID:
        value: uuid.UUID = self.cleaned_data["deployment_uid"]
        return value

    def bundle(self) -> manifests.Bundle:  # pragma: no cover - subclasses
        raise NotImplementedError

    def source_kind(self) -> str:
        return str(self.source)

    def kaito_model(self) -> KaitoModel | None:
        return None

    def inference_settings(self) -> manifests.InferenceSettings | None:
        return None

    def warnings(self) -> list[str]:
        return []


class PresetLaunchForm(LaunchBaseForm):
    model = forms.ModelChoiceField(
        queryset=KaitoModel.objects.exclude(lifecycle=Lifecycle.RETIRED),
        to_field_name="model_id",
        empty_label=None,
        label="Model",
    )
    vm_size = forms.ChoiceField(label="VM size", help_text="Ranked by KAITO's sizing formula.")
    node_count = forms.IntegerField(min_value=1, max_value=64, label="Nodes")
    name = forms.CharField(
        max_length=manifests.WORKSPACE_NAME_MAX,
        validators=[_dns_label_validator(manifests.WORKSPACE_NAME_MAX)],
        help_text="The Workspace's name (a DNS-1123 label).",
    )
    runtime = forms.ChoiceField(choices=Deployment.Runtime.choices, initial="vllm")
    max_model_len = forms.IntegerField(
        required=False,
        min_value=128,
        label="Max model length",
        help_text="vLLM max-model-len (tokens); empty: KAITO sizes for 2048 and vLLM takes "
        "the longest context that fits.",
    )
    gpu_memory_utilization = forms.FloatField(
        required=False,
        min_value=0.5,
        max_value=0.98,
        label="GPU memory utilisation",
        help_text="vLLM gpu-memory-utilization (KAITO: 0.9).",
    )
    swap_space = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=256,
        label="Swap space (GiB)",
        help_text="vLLM swap-space per GPU (KAITO: 4).",
    )
    load_balancer = forms.BooleanField(
        required=False, label="Expose with a LoadBalancer", help_text=LB_WARNING
    )
    hf_token = forms.CharField(
        required=False,
        label="Hugging Face token",
        widget=forms.PasswordInput(render_value=True, attrs={"autocomplete": "off"}),
        help_text="Becomes the Secret HF_TOKEN referenced by presetOptions.modelAccessSecret.",
    )

    def __init__(self, *args: Any, model: KaitoModel | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.chosen_model = model or self._bound_model()
        self.choices: list[VmChoice] = []
        if self.chosen_model is not None:
            self.initial.setdefault("model", self.chosen_model.model_id)
            self.choices = vm_choices(
                self.chosen_model.sizing_spec(),
                max_tokens=self._number("max_model_len", DEFAULT_MAX_TOKENS, int),
                utilization=self._number("gpu_memory_utilization", DEFAULT_UTILIZATION, float),
            )
            vm_field: forms.ChoiceField = self.fields["vm_size"]  # type: ignore[assignment]
            vm_field.choices = [(c.vm.sku, c.label) for c in self.choices]
            if not self.is_bound and self.choices:
                best = self.choices[0]
                self.initial.setdefault("vm_size", best.vm.sku)
                self.initial.setdefault("node_count", max(1, best.sizing.nodes))
            if not self.is_bound:
                cluster = Cluster.objects.filter(pk=self.initial.get("cluster") or 0).first()
                if cluster is not None:
                    self.initial.setdefault(
                        "name",
                        deployment_name_propose(
                            cluster=cluster,
                            namespace=str(self.initial.get("namespace") or "default"),
                            base=self.chosen_model.preset_reference,
                        ),
                    )
            runtime: forms.ChoiceField = self.fields["runtime"]  # type: ignore[assignment]
            runtime.choices = [
                (r, label)
                for r, label in Deployment.Runtime.choices
                if r in self.chosen_model.runtimes
            ]
            if not self.chosen_model.download_at_runtime:
                self.fields.pop("hf_token")
            elif self.chosen_model.download_auth_required:
                self.fields["hf_token"].help_text = (
                    "Required: KAITO needs presetOptions.modelAccessSecret for this model. "
                    + str(self.fields["hf_token"].help_text)
                )
            elif not self.chosen_model.gated:
                self.fields["hf_token"].help_text = "Optional for this model. " + str(
                    self.fields["hf_token"].help_text
                )

    def _bound_model(self) -> KaitoModel | None:
        if not self.is_bound:
            return None
        model_id = self.data.get("model")
        return KaitoModel.objects.filter(model_id=model_id).first() if model_id else None

    def _number(self, name: str, default: Any, kind: type) -> Any:
        raw = self.data.get(name) if self.is_bound else self.initial.get(name)
        try:
            return kind(raw) if raw not in (None, "") else default
        except (TypeError, ValueError):
            return default

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        model: KaitoModel | None = data.get("model")
        if model is None:
            return data
        if model.lifecycle == Lifecycle.DEPRECATED:
            self.add_error("model", f"{model} is deprecated: KAITO no longer serves it.")
        runtime = data.get("runtime") or "vllm"
        settings = self.inference_settings()
        if runtime != "vllm" and settings:
            self.add_error(
                "max_model_len" if data.get("max_model_len") else "gpu_memory_utilization",
                "Inference settings go into vLLM's configuration; clear them for transformers.",
            )
        max_len = data.get("max_model_len")
        if max_len and max_len > model.token_limit:
            self.add_error(
                "max_model_len",
                f"{model} supports at most {model.token_limit:,} tokens of context.",
            )
        if "hf_token" in self.fields and model.download_auth_required and not data.get("hf_token"):
            self.add_error(
                "hf_token",
                f"{model} is gated: KAITO needs a Hugging Face token (modelAccessSecret) to "
                "download it. Paste a token whose account accepted the licence.",
            )
        self._check_name(data)
        return data

    def _check_name(self, data: dict[str, Any]) -> None:
        cluster, namespace, name = data.get("cluster"), data.get("namespace"), data.get("name")
        if cluster and namespace and name:
            live = Deployment.objects.filter(cluster=cluster, namespace=namespace, name=name)
            if live.exclude(status__in=Deployment.GONE_STATUSES).exists():
                self.add_error("name", f"A deployment named {name} is already live in {namespace}.")

    def inference_settings(self) -> manifests.InferenceSettings:
        data = self.cleaned_data
        return manifests.InferenceSettings(
            max_model_len=data.get("max_model_len"),
            gpu_memory_utilization=data.get("gpu_memory_utilization"),
            swap_space=data.get("swap_space"),
        )

    def kaito_model(self) -> KaitoModel | None:
        model: KaitoModel | None = self.cleaned_data.get("model")
        return model

    def sizing(self) -> Sizing | None:
        model = self.kaito_model()
        vm = GpuVmSize.objects.filter(sku=self.cleaned_data.get("vm_size")).first()
        if model is None or vm is None:
            return None
        settings = self.inference_settings()
        return size_on(
            model.sizing_spec(),
            vm.sizing_spec(),
            max_tokens=settings.max_model_len or DEFAULT_MAX_TOKENS,
            nodes=self.cleaned_data.get("node_count"),
            utilization=settings.gpu_memory_utilization or DEFAULT_UTILIZATION,
        )

    def warnings(self) -> list[str]:
        out = []
        sizing = self.sizing()
        if sizing is not None and not sizing.fits:
            out.append(
                f"By KAITO's sizing this does not fit: {sizing.reason}. Expect the engine to "
                "run out of GPU memory (the deployment will fail with an OOM)."
            )
        if self.cleaned_data.get("load_balancer"):
            out.append(LB_WARNING)
        return out

    def bundle(self) -> manifests.Bundle:
        data = self.cleaned_data
        model: KaitoModel = data["model"]
        token = data.get("hf_token") or ""
        spec = manifests.LaunchSpec(
            name=data["name"],
            namespace=data["namespace"],
            vm_size=data["vm_size"],
            node_count=data["node_count"],
            deployment_uid=str(data["deployment_uid"]),
            model_name=model.preset_reference,
            runtime=data.get("runtime") or "vllm",
            settings=self.inference_settings(),
            load_balancer=bool(data.get("load_balancer")),
            hf_token_secret=bool(token),
        )
        return manifests.bundle_render(spec, hf_token=token)


class ManifestLaunchForm(LaunchBaseForm):
    manifest = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 24, "spellcheck": "false", "class": "mono"}),
        label="Manifests (YAML)",
        help_text="One Workspace (kaito.sh/v1beta1), with its ConfigMaps and Secrets, as YAML "
        "documents separated by ---.",
    )

    source = Deployment.Source.MANIFEST

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        text, namespace, uid = (
            data.get("manifest"),
            data.get("namespace"),
            data.get("deployment_uid"),
        )
        if text and namespace and uid:
            try:
                self._bundle = manifests.bundle_parse(
                    text, namespace=namespace, deployment_uid=str(uid)
                )
            except manifests.ManifestError as error:
                self.add_error("manifest", str(error))
                return data
            name = self._bundle.workspace["metadata"]["name"]
            cluster = data.get("cluster")
            if (
                cluster
                and Deployment.objects.filter(cluster=cluster, namespace=namespace, name=name)
                .exclude(status__in=Deployment.GONE_STATUSES)
                .exists()
            ):
                self.add_error(
                    "manifest", f"A deployment named {name} is already live in {namespace}."
                )
        return data

    def bundle(self) -> manifests.Bundle:
        return self._bundle

    def kaito_model(self) -> KaitoModel | None:
        from apps.deployments.selectors import kaito_model_for

        facts = manifests.workspace_facts(self._bundle.workspace)
        return kaito_model_for(facts["model_name"]) if facts["model_name"] else None


BLOOMZ_ARGS = (
    "launch --num_processes 1 --num_machines 1 --gpu_ids all inference_api.py "
    "--pipeline text-generation --torch_dtype float32 --model_id bigscience/bloomz-560m"
)


class CustomLaunchForm(LaunchBaseForm):
    """KAITO's two custom paths: any Hugging Face id as the preset name (best effort), or a pod
    template of your own on a CPU or GPU VM size."""

    KIND_CHOICES = [
        ("hf_model", "A Hugging Face model id as the preset (KAITO best effort, vLLM)"),
        ("template", "A custom pod template (KAITO's custom-model path)"),
    ]
    kind = forms.ChoiceField(choices=KIND_CHOICES, widget=forms.RadioSelect, initial="template")
    name = forms.CharField(
        max_length=manifests.WORKSPACE_NAME_MAX,
        validators=[_dns_label_validator(manifests.WORKSPACE_NAME_MAX)],
    )
    vm_size = forms.ChoiceField(label="VM size")
    node_count = forms.IntegerField(min_value=1, max_value=64, initial=1, label="Nodes")
    # A Hugging Face model
    model_id = forms.CharField(
        required=False,
        max_length=200,
        label="Hugging Face id",
        widget=forms.TextInput(attrs={"placeholder": "org/model"}),
    )
    weights_gib = forms.FloatField(required=False, min_value=0.01, label="Weight size (GiB)")
    token_limit = forms.IntegerField(required=False, min_value=128, label="Context length")
    num_hidden_layers = forms.IntegerField(required=False, min_value=1, label="Layers")
    hidden_size = forms.IntegerField(required=False, min_value=1, label="Hidden size")
    num_attention_heads = forms.IntegerField(required=False, min_value=1, label="Attention heads")
    num_kv_heads = forms.IntegerField(required=False, min_value=1, label="KV heads")
    hf_token = forms.CharField(
        required=False,
        label="Hugging Face token (gated models)",
        widget=forms.PasswordInput(render_value=True, attrs={"autocomplete": "off"}),
    )
    # A pod template
    image = forms.CharField(
        required=False, max_length=300, initial="mcr.microsoft.com/aks/kaito/kaito-base:0.0.8"
    )
    command = forms.CharField(required=False, max_length=500, initial="accelerate")
    args = forms.CharField(
        required=False,
        max_length=2000,
        initial=BLOOMZ_ARGS,
        widget=forms.TextInput(attrs={"class": "mono"}),
    )
    port = forms.IntegerField(required=False, min_value=1, max_value=65535, initial=5000)
    served_model = forms.CharField(
        required=False, max_length=200, initial="bigscience/bloomz-560m", label="Model it serves"
    )
    cpu = forms.CharField(required=False, max_length=20, initial="4", label="CPU request")
    memory = forms.CharField(required=False, max_length=20, initial="8Gi", label="Memory request")

    source = Deployment.Source.TEMPLATE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        vm_field: forms.ChoiceField = self.fields["vm_size"]  # type: ignore[assignment]
        vm_field.choices = [
            (
                vm.sku,
                f"{vm.sku} · {vm.gpu_count}x {vm.gpu_model}"
                if vm.gpu_count
                else f"{vm.sku} · CPU only",
            )
            for vm in GpuVmSize.objects.all()
        ]
        if not self.is_bound:
            self.initial.setdefault("vm_size", "Standard_D16s_v5")
            self.initial.setdefault("name", "bloomz-560m")
        self.choices: list[VmChoice] = []

    def model_spec(self) -> ModelSpec | None:
        data = self.cleaned_data
        needed = (
            "weights_gib",
            "token_limit",
            "num_hidden_layers",
            "hidden_size",
            "num_attention_heads",
        )
        if any(not data.get(k) for k in needed):
            return None
        return ModelSpec(
            name=data.get("model_id") or "custom",
            weights_gib=data["weights_gib"],
            token_limit=data["token_limit"],
            num_hidden_layers=data["num_hidden_layers"],
            hidden_size=data["hidden_size"],
            num_attention_heads=data["num_attention_heads"],
            num_kv_heads=data.get("num_kv_heads"),
        )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        kind = data.get("kind")
        vm = GpuVmSize.objects.filter(sku=data.get("vm_size")).first()
        if kind == "hf_model":
            model_id = str(data.get("model_id") or "")
            if "/" not in model_id:
                self.add_error("model_id", "Give the Hugging Face id as org/name.")
            for needed in (
                "weights_gib",
                "token_limit",
                "num_hidden_layers",
                "hidden_size",
                "num_attention_heads",
            ):
                if not data.get(needed):
                    self.add_error(needed, "Needed to size the model (see its config.json).")
            if vm is not None and not vm.is_gpu:
                self.add_error("vm_size", "A Hugging Face model on vLLM needs a GPU VM size.")
            spec = self.model_spec() if not self.errors else None
            if spec is not None:
                self.choices = vm_choices(spec)
        elif kind == "template":
            if not data.get("image"):
                self.add_error("image", "The container image to run.")
            if not data.get("port"):
                self.add_error("port", "The port the container serves on.")
            for words in ("command", "args"):
                try:
                    shlex.split(str(data.get(words) or ""))
                except ValueError as error:
                    self.add_error(words, f"Cannot split into words: {error}")
        cluster, namespace, name = data.get("cluster"), data.get("namespace"), data.get("name")
        if (
            cluster
            and namespace
            and name
            and Deployment.objects.filter(cluster=cluster, namespace=namespace, name=name)
            .exclude(status__in=Deployment.GONE_STATUSES)
            .exists()
        ):
            self.add_error("name", f"A deployment named {name} is already live in {namespace}.")
        return data

    @property
    def is_template(self) -> bool:
        return self.cleaned_data.get("kind") == "template"

    def warnings(self) -> list[str]:
        spec = self.model_spec() if not self.is_template else None
        vm = GpuVmSize.objects.filter(sku=self.cleaned_data.get("vm_size")).first()
        if spec is None or vm is None:
            return []
        sizing = size_on(spec, vm.sizing_spec(), nodes=self.cleaned_data.get("node_count"))
        out = [
            "KAITO runs Hugging Face models outside its catalog best effort: vLLM must support "
            "the architecture."
        ]
        if not sizing.fits:
            out.append(f"By KAITO's sizing this does not fit: {sizing.reason}.")
        return out

    def bundle(self) -> manifests.Bundle:
        data = self.cleaned_data
        common = {
            "name": data["name"],
            "namespace": data["namespace"],
            "vm_size": data["vm_size"],
            "node_count": data["node_count"],
            "deployment_uid": str(data["deployment_uid"]),
        }
        if self.is_template:
            template = manifests.template_render(
                name=data["name"],
                image=data["image"],
                command=shlex.split(data.get("command") or ""),
                args=shlex.split(data.get("args") or ""),
                port=data["port"],
                model_id=data.get("served_model") or "",
                cpu=data.get("cpu") or "",
                memory=data.get("memory") or "",
            )
            return manifests.bundle_render(manifests.LaunchSpec(**common, template=template))
        token = data.get("hf_token") or ""
        return manifests.bundle_render(
            manifests.LaunchSpec(
                **common, model_name=data["model_id"], hf_token_secret=bool(token)
            ),
            hf_token=token,
        )

    def source_kind(self) -> str:
        return str(Deployment.Source.TEMPLATE if self.is_template else Deployment.Source.HF_MODEL)
