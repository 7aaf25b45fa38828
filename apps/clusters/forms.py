from __future__ import annotations

from typing import Any

from django import forms
from django.core.validators import RegexValidator

from apps.clusters import kube
from apps.clusters.models import Cluster
from kaitoweb import urlcheck

dns_label = RegexValidator(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    "Use lowercase letters, digits and '-', starting and ending with a letter or digit.",
)
MAX_KUBECONFIG_BYTES = 512 * 1024


class SecretTextarea(forms.Textarea):
    """A textarea that never renders its value back: a form shown again after an error asks
    for the kubeconfig again rather than put its credentials into the page."""

    def format_value(self, value: Any) -> str | None:
        return None


class ClusterForm(forms.Form):
    name = forms.SlugField(max_length=60, help_text="A short name, e.g. aks-eastus-gpu.")
    auth = forms.ChoiceField(
        choices=Cluster.Auth.choices,
        initial=Cluster.Auth.KUBECONFIG,
        widget=forms.RadioSelect,
        label="Connect with",
        help_text="In-cluster: the app's own service account, when kaitoweb runs in the cluster.",
    )
    kubeconfig = forms.CharField(
        required=False,
        strip=False,
        widget=SecretTextarea(
            attrs={"rows": 8, "spellcheck": "false", "class": "mono", "autocomplete": "off"}
        ),
        help_text="Pasted here or uploaded below. Encrypted at rest; never shown again (not even "
        "when the form comes back with an error: paste it again then).",
    )
    kubeconfig_file = forms.FileField(required=False, label="or upload a kubeconfig")
    context = forms.CharField(
        required=False,
        max_length=200,
        help_text="Empty: the kubeconfig's current context.",
    )
    default_namespace = forms.CharField(max_length=63, initial="default", validators=[dns_label])
    region = forms.CharField(
        max_length=40, required=False, label="Azure region", help_text="e.g. eastus"
    )
    notes = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    clock_speed = forms.FloatField(
        initial=1.0,
        min_value=0.001,
        max_value=1_000_000,
        label="Clock speed",
        help_text="1 for a real cluster. For the kaitosim simulator, its --speed: the limits "
        "that flag a stuck deployment scale with it.",
    )

    def __init__(self, *args: Any, editing: Cluster | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.editing = editing
        if editing is not None:
            self.fields.pop("name")
            self.fields.pop("auth")
            self.fields["kubeconfig"].help_text = (
                "Leave empty to keep the stored kubeconfig (it is never shown again); paste or "
                "upload a new one to replace it."
            )

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"]
        if Cluster.objects.filter(name=name).exists():
            raise forms.ValidationError("A cluster with this name exists already.")
        return name

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        upload = data.get("kubeconfig_file")
        if upload is not None:
            if upload.size > MAX_KUBECONFIG_BYTES:
                self.add_error("kubeconfig_file", "That file is too large for a kubeconfig.")
                return data
            try:
                data["kubeconfig"] = upload.read().decode("utf-8")
            except UnicodeDecodeError:
                self.add_error("kubeconfig_file", "A kubeconfig is a YAML text file.")
                return data
        auth = data.get("auth") or (self.editing.auth if self.editing else "")
        text = data.get("kubeconfig") or ""
        if auth == Cluster.Auth.KUBECONFIG and not text and self.editing is None:
            self.add_error("kubeconfig", "Paste or upload the kubeconfig.")
        elif text:
            try:
                contexts, current = kube.kubeconfig_contexts(text)
            except kube.KubeconfigInvalid as error:
                self.add_error("kubeconfig", error.message)
                return data
            context = data.get("context") or current
            if context not in contexts:
                self.add_error(
                    "context",
                    f"The kubeconfig has no context {context!r}; it has: {', '.join(contexts)}.",
                )
                return data
            server = kube.kubeconfig_server(text, context)
            if server:
                try:
                    urlcheck.endpoint_url_check(server)
                except urlcheck.UrlRefused as exc:
                    self.add_error("kubeconfig", f"The API server {server}: {exc}")
        return data
