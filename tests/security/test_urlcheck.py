"""Endpoint URLs: http(s) only; cloud metadata and link-local addresses refused (by literal and
by DNS) unless an admin allows them; loopback and private ranges allowed."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client, override_settings

from apps.accounts.models import SecuritySettings
from apps.accounts.roles import Role
from apps.audit.models import AuditEntry
from apps.playground.models import Target
from kaitoweb.urlcheck import UrlRefused, endpoint_url_check

pytestmark = pytest.mark.django_db

ClientAs = Callable[[Role | None], Client]

REFUSED = [
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.169.254:80/metadata/instance?api-version=2021-02-01",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://168.63.129.16/machine?comp=goalstate",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.google.internal./computeMetadata/v1/",
    "http://169.254.10.20:8000/v1",  # link-local
    "http://[fe80::1]/v1",  # link-local IPv6
    "http://[::ffff:169.254.169.254]/",  # IPv4-mapped
    "http://2852039166/latest/",  # 169.254.169.254 as one decimal number (resolved)
    "http://0xA9FEA9FE/latest/",  # ... and in hex
]
ALLOWED = [
    "http://127.0.0.1:8000/v1",
    "http://localhost:5000/v1",
    "http://[::1]:5000/v1",
    "http://10.0.0.12/v1",
    "http://192.168.1.20:8080/v1",
    "https://172.16.4.4/openai/v1/",
    "http://phi-4.default.svc.cluster.local/v1",  # does not resolve here: nothing to refuse
]


@pytest.mark.parametrize("url", REFUSED)
def test_metadata_and_link_local_addresses_are_refused(url: str) -> None:
    with pytest.raises(UrlRefused, match="refuses"):
        endpoint_url_check(url)


@pytest.mark.parametrize("url", ALLOWED)
def test_loopback_private_and_cluster_addresses_are_allowed(url: str) -> None:
    assert endpoint_url_check(url) == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://10.0.0.1/model", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("gopher://127.0.0.1:6379/_FLUSHALL", "http:// or https://"),
        ("10.0.0.1/v1", "http:// or https://"),
        ("http:///v1", "names no host"),
        ("https://user:sk-secret@foundry.example.com/", "not in the URL"),
        ("http://[::1/v1", "not a valid URL"),
    ],
)
def test_other_schemes_credentials_and_garbage_are_refused(url: str, message: str) -> None:
    with pytest.raises(UrlRefused, match=message):
        endpoint_url_check(url)


def test_a_host_name_is_judged_by_what_it_resolves_to() -> None:
    """Not a literal address, so it goes through the resolver (getaddrinfo, as httpx does):
    inet_aton's short forms name 169.254.169.254 without looking like it."""
    with pytest.raises(UrlRefused, match=r"resolves to 169\.254\.169\.254"):
        endpoint_url_check("http://169.254.43518/")
    with pytest.raises(UrlRefused, match=r"resolves to 169\.254\.0\.1"):
        endpoint_url_check("http://169.254.1/")


def test_an_admin_setting_allows_them() -> None:
    url = "http://169.254.169.254/v1"
    SecuritySettings.objects.create(pk=1, allow_link_local_endpoints=True)
    assert endpoint_url_check(url) == url
    with pytest.raises(UrlRefused):
        endpoint_url_check("ftp://169.254.169.254/")  # still http(s) only
    SecuritySettings.objects.filter(pk=1).update(allow_link_local_endpoints=False)
    with pytest.raises(UrlRefused):
        endpoint_url_check(url)
    with override_settings(ALLOW_LINK_LOCAL_ENDPOINTS=True):
        assert endpoint_url_check(url) == url


def test_the_target_form_names_the_field_and_saves_nothing(client_as: ClientAs) -> None:
    operator = client_as(Role.OPERATOR)
    form_page = operator.get("/playground/targets/new/").content.decode()
    assert 'name="endpoint_url"' in form_page
    kind = Target.Kind.KAITO_VLLM
    response = operator.post(
        "/playground/targets/new/",
        {
            "name": "imds",
            "kind": kind,
            "endpoint_url": "http://169.254.169.254/latest/meta-data/",
            "model_name": "m",
            "auth": Target.Auth.NONE,
        },
    )
    assert response.status_code == 200
    form = response.context["form"]
    assert "endpoint_url" in form.errors
    assert "cloud metadata address" in form.errors["endpoint_url"][0]
    assert (
        "Admin &gt; Security settings" in response.content.decode()
        or "Admin > Security" in (form.errors["endpoint_url"][0])
    )
    assert not Target.objects.filter(name="imds").exists()
    assert not AuditEntry.objects.filter(action__startswith="target.").exists()


def test_a_cluster_whose_api_server_is_the_metadata_address_is_refused(
    client_as: ClientAs,
) -> None:
    kubeconfig = """\
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://169.254.169.254:443"}
users:
- name: u
  user: {token: abcdefgh12345678}
contexts:
- name: ctx
  context: {cluster: c, user: u}
current-context: ctx
"""
    response = client_as(Role.OPERATOR).post(
        "/clusters/new/",
        {
            "name": "imds",
            "auth": "kubeconfig",
            "kubeconfig": kubeconfig,
            "default_namespace": "default",
            "clock_speed": "1",
        },
    )
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert "kubeconfig" in errors and "cloud metadata address" in errors["kubeconfig"][0]
    assert "abcdefgh12345678" not in response.content.decode()


def test_the_admin_target_form_checks_the_url_too(client_as: ClientAs, catalog: object) -> None:
    from tests.playground.factories import kaito_target

    target = kaito_target("http://127.0.0.1:9/v1", name="admin-edited")
    admin = client_as(Role.ADMIN)
    page = admin.get(f"/admin/playground/target/{target.pk}/change/")
    assert page.status_code == 200 and 'name="endpoint_url"' in page.content.decode()
    assert 'name="api_key"' not in page.content.decode()
    form = page.context["adminform"].form
    data = {
        name: ("" if value is None else value)
        for name, value in form.initial.items()
        if name in form.fields and not isinstance(value, list | dict)
    }
    data.update(endpoint_url="http://169.254.169.254/v1", kind=target.kind)
    data = {k: v for k, v in data.items() if v is not False}
    response = admin.post(f"/admin/playground/target/{target.pk}/change/", data)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "cloud metadata address" in errors["endpoint_url"][0]
    target.refresh_from_db()
    assert target.endpoint_url == "http://127.0.0.1:9/v1"


@pytest.mark.django_db(transaction=True)
def test_a_stored_endpoint_is_checked_again_when_it_is_called(catalog: object) -> None:
    """A target saved while an admin allowed link-local endpoints is refused at request time
    once they are no longer allowed (and a host name is resolved again then)."""
    from apps.playground.services import abrun_execute
    from tests.playground.factories import kaito_target, queued_run

    SecuritySettings.objects.create(pk=1, allow_link_local_endpoints=True)
    imds = kaito_target("http://169.254.169.254/v1", name="imds")
    other = kaito_target("http://127.0.0.1:9/v1", name="closed-port")
    SecuritySettings.objects.filter(pk=1).update(allow_link_local_endpoints=False)
    run = queued_run([imds, other])
    abrun_execute(run_id=run.pk)
    refused = run.samples.get(side="a")
    assert refused.error_kind == "config"
    assert "Endpoint URL refused" in refused.error_message
    assert run.samples.get(side="b").error_kind == "connect"  # the other side still ran
