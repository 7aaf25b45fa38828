from __future__ import annotations

import ssl
from typing import Any

from django import forms
from django.db.models import Q

from apps.catalog.models import GpuVmSize
from apps.deployments.models import Deployment
from apps.playground.experiments import MAX_TIMEOUT_S as EXPERIMENT_MAX_TIMEOUT_S
from apps.playground.models import ABRun, Experiment, Target
from apps.playground.prompts import PromptSetError, builtin_load, builtin_names, parse_upload
from apps.playground.tasks import MAX_RUN_TIMEOUT_S


class VmSizeChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: GpuVmSize) -> str:
        price = f"${obj.price_per_hour}/h" if obj.price_per_hour is not None else "no price"
        return f"{obj.sku} ({obj.gpu_count}x {obj.gpu_model}, {price})"


class DeploymentChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Deployment) -> str:
        return f"{obj.cluster.name}: {obj} ({obj.model_name}, {obj.vm_size} x {obj.node_count})"


class TargetChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Target) -> str:
        return f"{obj.name} · {obj.get_kind_display()}"


class TargetForm(forms.ModelForm):
    api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Encrypted at rest. Leave empty to keep the stored key.",
    )

    class Meta:
        model = Target
        fields = [
            "name",
            "kind",
            "deployment",
            "endpoint_url",
            "model_name",
            "auth",
            "api_key",
            "api_version",
            "ca_certificate",
            "deployment_type",
            "region",
            "foundry_model",
            "kaito_model",
            "cost_basis",
            "input_per_1m",
            "output_per_1m",
            "price_factor",
            "vm_size",
            "price_per_hour",
            "node_count",
            "processing_scope",
            "data_leaves_network",
            "abuse_monitoring_exempt",
            "provider_retention",
            "certifications",
            "model_license",
            "compliance_notes",
        ]
        field_classes = {"vm_size": VmSizeChoiceField, "deployment": DeploymentChoiceField}
        widgets = {
            "ca_certificate": forms.Textarea(
                attrs={"rows": 3, "class": "mono", "placeholder": "-----BEGIN CERTIFICATE-----"}
            ),
            "provider_retention": forms.Textarea(attrs={"rows": 3}),
            "certifications": forms.Textarea(attrs={"rows": 2}),
            "compliance_notes": forms.Textarea(attrs={"rows": 2}),
        }

    GROUPS = {
        "Endpoint": [
            "name",
            "kind",
            "deployment",
            "endpoint_url",
            "model_name",
            "auth",
            "api_key",
            "api_version",
            "ca_certificate",
        ],
        "Where it runs": ["deployment_type", "region", "foundry_model", "kaito_model"],
        "Cost basis": [
            "cost_basis",
            "input_per_1m",
            "output_per_1m",
            "price_factor",
            "vm_size",
            "price_per_hour",
            "node_count",
        ],
        "Compliance profile": [
            "processing_scope",
            "data_leaves_network",
            "abuse_monitoring_exempt",
            "provider_retention",
            "certifications",
            "model_license",
            "compliance_notes",
        ],
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["endpoint_url"].widget.attrs["placeholder"] = "https://…"
        vm: forms.ModelChoiceField = self.fields["vm_size"]  # type: ignore[assignment]
        vm.queryset = GpuVmSize.objects.filter(gpu_count__gt=0)
        deployment: forms.ModelChoiceField = self.fields["deployment"]  # type: ignore[assignment]
        ready = Q(status=Deployment.Status.READY)
        if self.instance.deployment_id:
            ready |= Q(pk=self.instance.deployment_id)
        deployment.queryset = (
            Deployment.objects.filter(ready).select_related("cluster").order_by("cluster", "name")
        )
        deployment.empty_label = "None: use the endpoint URL"
        # A picked deployment decides the kind (clean), so the browser must not insist on one.
        self.fields["kind"].required = False
        if self.instance.pk and self.instance.api_key:
            self.fields["api_key"].help_text = "A key is stored, encrypted. Leave empty to keep it."

    def groups(self) -> list[tuple[str, list[forms.BoundField]]]:
        return [(title, [self[name] for name in names]) for title, names in self.GROUPS.items()]

    def clean_api_key(self) -> str:
        key = str(self.cleaned_data.get("api_key") or "")
        # An empty field keeps the stored key (the page never shows it back).
        return key or (self.instance.api_key if self.instance.pk else "") or ""

    def clean_ca_certificate(self) -> str:
        pem = str(self.cleaned_data.get("ca_certificate") or "").strip()
        if pem:
            try:
                ssl.create_default_context(cadata=pem)
            except (ssl.SSLError, ValueError):
                raise forms.ValidationError("Not a PEM certificate this server can read.") from None
        return pem

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        linked: Deployment | None = data.get("deployment")
        if linked is not None:
            # The deployment decides the wire format and how it is reached (at request time).
            data["kind"] = (
                Target.Kind.KAITO_TRANSFORMERS_CHAT
                if linked.runtime == Deployment.Runtime.TRANSFORMERS
                else Target.Kind.KAITO_VLLM
            )
            data.update(endpoint_url="", auth=Target.Auth.NONE, api_key="", ca_certificate="")
            if not data.get("model_name"):
                data["model_name"] = linked.model_name
            return data
        kind = data.get("kind")
        if not kind:
            self.add_error("kind", "Pick what the endpoint speaks, or a KAITO deployment.")
        if data.get("auth") == Target.Auth.API_KEY and not data.get("api_key"):
            self.add_error("api_key", "Enter the API key (or pick another authentication).")
        if kind in Target.FOUNDRY_KINDS and not data.get("model_name"):
            self.add_error("model_name", "Foundry needs the deployment name.")
        if kind == Target.Kind.KAITO_VLLM and not data.get("model_name"):
            self.add_error("model_name", "vLLM needs the served model name.")
        if data.get("auth") == Target.Auth.ENTRA_ID and kind not in Target.FOUNDRY_KINDS:
            self.add_error("auth", "Entra ID is for Foundry targets.")
        return data


class PlaygroundForm(forms.Form):
    target_a = TargetChoiceField(
        queryset=Target.objects.filter(archived_at__isnull=True).order_by("name"), label="Target A"
    )
    target_b = TargetChoiceField(
        queryset=Target.objects.filter(archived_at__isnull=True).order_by("name"), label="Target B"
    )
    system_prompt = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), label="System prompt"
    )
    prompt = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}))
    max_tokens = forms.IntegerField(min_value=1, max_value=8192, initial=256)
    temperature = forms.FloatField(
        required=False, min_value=0, max_value=2, initial=0.7, help_text="Empty: the server's."
    )
    top_p = forms.FloatField(
        required=False, min_value=0.01, max_value=1, label="top_p", help_text="Empty: the server's."
    )
    seed = forms.IntegerField(required=False, min_value=0, help_text="Not sent to /chat.")
    timeout_s = forms.FloatField(
        min_value=1, max_value=MAX_RUN_TIMEOUT_S, initial=60, label="Timeout (s)"
    )
    note = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Saved with the run.",
    )

    @classmethod
    def initial_from_run(cls, run: ABRun) -> dict[str, Any]:
        samples = {s.side: s for s in run.samples.all()}
        return {
            "target_a": samples["a"].target if "a" in samples else None,
            "target_b": samples["b"].target if "b" in samples else None,
            "system_prompt": run.system_prompt,
            "prompt": run.prompt,
            "max_tokens": run.max_tokens,
            "temperature": run.temperature,
            "top_p": run.top_p,
            "seed": run.seed,
            "timeout_s": run.timeout_s,
            "note": run.note,
        }


class NoteForm(forms.Form):
    note = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))


class ExperimentForm(forms.Form):
    """A new experiment: the targets, a built-in or uploaded prompt set, and how to run it."""

    name = forms.CharField(max_length=200, required=False)
    targets = forms.ModelMultipleChoiceField(
        queryset=Target.objects.filter(archived_at__isnull=True),
        widget=forms.CheckboxSelectMultiple,
        help_text="Two or more.",
    )
    builtin = forms.ChoiceField(label="built-in prompt set", required=False)
    upload = forms.FileField(
        label="or upload a prompt set",
        required=False,
        help_text='JSONL ({"prompt": ..., "system": ...} a line) or CSV (columns prompt, system).',
    )
    repetitions = forms.IntegerField(min_value=1, max_value=1000, initial=3)
    concurrency = forms.IntegerField(
        label="concurrency per target", min_value=1, max_value=256, initial=4
    )
    max_tokens = forms.IntegerField(min_value=1, max_value=32768, initial=256)
    timeout_s = forms.FloatField(
        label="timeout per request (s)", min_value=1, max_value=EXPERIMENT_MAX_TIMEOUT_S, initial=60
    )
    storage_policy = forms.ChoiceField(
        choices=Experiment.StoragePolicy.choices, initial=Experiment.StoragePolicy.TEXT
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        builtin = self.fields["builtin"]
        assert isinstance(builtin, forms.ChoiceField)
        builtin.choices = [("", "—")] + [(n, n) for n in builtin_names()]

    def clean_targets(self) -> Any:
        targets = self.cleaned_data["targets"]
        if len(targets) < 2:
            raise forms.ValidationError("Pick at least two targets.")
        return targets

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        upload = data.get("upload")
        builtin = data.get("builtin")
        if bool(upload) == bool(builtin):
            raise forms.ValidationError("Pick a built-in prompt set or upload one (not both).")
        try:
            if upload:
                data["prompt_set"] = parse_upload(upload.read(), filename=upload.name)
            else:
                data["prompt_set"] = builtin_load(builtin or "")
        except PromptSetError as exc:
            for error in exc.errors:
                self.add_error("upload" if upload else "builtin", error)
        return data


class VoteForm(forms.Form):
    prompt_index = forms.IntegerField(min_value=0)
    target = forms.IntegerField(required=False, help_text="Empty: a tie.")
