"""Secrets (Foundry keys, kubeconfig tokens, Hugging Face tokens) never come back: not in a page,
a log line, an export, an admin page or an error message, even when a provider echoes them."""

from __future__ import annotations

import json
import logging
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.test import Client
from django.views.debug import get_exception_reporter_class

from apps.accounts.roles import Role
from apps.catalog.services import LoadReport
from apps.clusters.models import Cluster
from apps.clusters.services import cluster_check, cluster_create
from apps.playground.experiments import experiment_create, experiment_run_sync
from apps.playground.models import ABRun, Experiment, Sample
from apps.playground.prompts import Prompt, PromptSet
from apps.playground.services import abrun_execute
from kaitoweb.redaction import MASK, redact
from tests.playground.factories import foundry_target, queued_run

ClientAs = Callable[[Role | None], Client]


class EchoingProvider(BaseHTTPRequestHandler):
    """A badly behaved provider: its 401 quotes the key it was sent (some proxies do)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        sent = self.headers.get("api-key") or self.headers.get("Authorization") or ""
        body = json.dumps(
            {"error": {"code": "401", "message": f"Access denied: invalid key {sent!r}"}}
        ).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def echoing_provider() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoingProvider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def everything_shown(clients: list[Client], urls: list[str]) -> str:
    """Every page and export at these URLs, as each client sees it, in one string."""
    shown = []
    for client in clients:
        for url in urls:
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)
            body = (
                b"".join(response.streaming_content)  # type: ignore[attr-defined]
                if response.streaming
                else response.content
            )
            shown.append(body.decode())
    return "\n".join(shown)


def test_redact_catches_the_usual_shapes() -> None:
    key = "sk-" + "A1b2C3d4" * 4
    hf = "hf_" + "Zz9Yy8Xx7" * 3
    text = (
        f"Authorization: Bearer eyJhbGciOi.payload.sig api-key: 0123456789abcdef "
        f"key={key} token {hf} https://bob:hunter2hunter2@foundry.example.com/x "
        "client-key-data: LS0tLS1CRUdJTi\n  token: kubetoken-123456\n"
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"
    )
    cleaned = redact(text)
    for secret in [
        "eyJhbGciOi.payload.sig",
        "0123456789abcdef",
        key,
        hf,
        "hunter2hunter2",
        "LS0tLS1CRUdJTi",
        "kubetoken-123456",
        "MIIEow",
    ]:
        assert secret not in cleaned, secret
    assert cleaned.count(MASK) >= 8
    assert "foundry.example.com/x" in cleaned  # the rest is kept, for the reader
    assert redact("HTTP 404: model phi-4 not found") == "HTTP 404: model phi-4 not found"


@pytest.mark.django_db(transaction=True)
def test_a_provider_echoing_the_foundry_key_leaks_it_nowhere(
    echoing_provider: str,
    catalog: LoadReport,
    client_as: ClientAs,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A key in no recognisable shape: only knowing it is a secret can catch it.
    key = f"k{uuid.uuid4().hex}Q"
    caplog.set_level(logging.DEBUG)
    target = foundry_target(echoing_provider, key, name="foundry-echo")
    other = foundry_target(echoing_provider, key, name="foundry-echo-2")

    run = queued_run([target, other])
    abrun_execute(run_id=run.pk)
    sample = Sample.objects.filter(run=run).first()
    assert sample is not None
    assert sample.http_status == 401
    assert "Access denied: invalid key" in sample.error_message
    assert key not in sample.error_message and MASK in sample.error_message

    experiment = experiment_create(
        user=None,
        name="echo",
        targets=[target, other],
        prompt_set=PromptSet(name="one", prompts=(Prompt(prompt="Hello"),)),
        enqueue=False,
    )
    experiment_run_sync(experiment=experiment)
    assert Sample.objects.filter(experiment=experiment, http_status=401).count() == 2

    viewer, admin = client_as(Role.VIEWER), client_as(Role.ADMIN)
    e = experiment.pk
    pages = [
        f"/playground/runs/{run.pk}/",
        "/playground/runs/",
        "/playground/",
        "/playground/targets/",
        f"/playground/experiments/{e}/",
        f"/playground/experiments/{e}/samples.csv",
        f"/playground/experiments/{e}/samples.json",
        f"/playground/experiments/{e}/summary.csv",
        f"/playground/experiments/{e}/summary.json",
        "/audit/",
    ]
    admin_pages = [
        f"/playground/targets/{target.pk}/",
        f"/admin/playground/target/{target.pk}/change/",
        "/admin/playground/target/",
        f"/admin/playground/abrun/{run.pk}/change/",
        f"/admin/playground/experiment/{e}/change/",
    ]
    shown = everything_shown([viewer, admin], pages) + everything_shown([admin], admin_pages)
    assert "invalid key" in shown  # the provider's message is shown, redacted
    assert key not in shown
    assert key not in caplog.text
    assert ABRun.objects.get(pk=run.pk).status in {"done", "failed"}
    assert Experiment.objects.get(pk=e).finished


def bad_kubeconfig(server: str, token: str) -> str:
    return f"""\
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {{server: "{server}", insecure-skip-tls-verify: true}}
users:
- name: u
  user:
    token: {token}
contexts:
- name: ctx
  context: {{cluster: c, user: u}}
current-context: ctx
"""


@pytest.mark.django_db
def test_a_kubeconfig_token_never_comes_back(
    kaitosim: Any, client_as: ClientAs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = f"kt{uuid.uuid4().hex}"
    operator, admin = client_as(Role.OPERATOR), client_as(Role.ADMIN)

    # Malformed YAML on the token's line: a parser error quotes that line (the token after
    # the mark, where no "token:" precedes it).
    broken = bad_kubeconfig(kaitosim.api_url, token).replace(
        f"    token: {token}", f"    token: oops: {token}"
    )
    response = operator.post(
        "/clusters/new/",
        {
            "name": "broken",
            "auth": "kubeconfig",
            "kubeconfig": broken,
            "default_namespace": "default",
            "clock_speed": "1",
        },
    )
    assert response.status_code == 200 and "not valid YAML" in response.content.decode()
    assert token not in response.content.decode()

    # A well-formed kubeconfig with a token the API server does not know: 401 on check.
    cluster = cluster_create(
        name="wrong-token",
        kubeconfig=bad_kubeconfig(kaitosim.api_url, token),
        context="ctx",
        default_namespace="default",
    )
    report = cluster_check(cluster=Cluster.objects.get(pk=cluster.pk))
    assert not report.ok
    pages = [
        "/clusters/",
        f"/clusters/{cluster.name}/",
        f"/clusters/{cluster.name}/edit/",
        "/audit/",
        f"/admin/clusters/cluster/{cluster.pk}/change/",
        "/admin/clusters/cluster/",
    ]
    shown = everything_shown([admin], pages) + everything_shown([operator], pages[:4])
    assert "401" in shown or "credentials" in shown.lower()
    assert token not in shown
    assert token not in caplog.text
    assert token not in json.dumps(list(Cluster.objects.values("check_problems", "last_error")))


def test_django_error_reports_hide_secrets(rf: Any) -> None:
    from kaitoweb.redaction import remember_secret

    key = f"fk{uuid.uuid4().hex}"
    remember_secret(key)
    request = rf.post("/playground/targets/new/", {"api_key": key, "name": "x"})

    def provider_call(api_key: str) -> None:
        headers = {"api-key": api_key}  # noqa: F841 (a local the report would show)
        raise RuntimeError(f"the provider refused {api_key}")

    try:
        provider_call(key)
    except RuntimeError:
        reporter_class: Any = get_exception_reporter_class(request)
        reporter = reporter_class(request, *sys.exc_info())
        text = reporter.get_traceback_text()
        html = reporter.get_traceback_html()
    assert "provider_call" in text  # it is the real report
    assert key not in text and key not in html
