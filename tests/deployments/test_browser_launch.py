"""In Chromium: an operator launches phi-4-mini-instruct, watches it become ready, chats with it
and tears it down."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from apps.accounts.roles import Role
from apps.clusters.models import Cluster
from apps.clusters.services import cluster_create
from apps.deployments.models import Deployment
from tests.conftest import ARTIFACTS, CeleryWorker, browser_login
from tests.factories import UserFactory

pytestmark = pytest.mark.browser

# About 7 s from launch to ready: slow enough to watch the conditions turn green.
BROWSER_SPEED = 150.0


@pytest.fixture
def watched_cluster(tmp_path: Path, transactional_db: None) -> Iterator[Cluster]:
    from kaitosim.server import start

    handle = start(
        port=0, foundry_port=0, speed=BROWSER_SPEED, state_dir=tmp_path / "sim", start_foundry=False
    )
    try:
        yield cluster_create(
            name="kaitosim",
            kubeconfig=handle.kubeconfig_path.read_text(),
            context="kaitosim",
            default_namespace="llm",
            region="eastus",
            clock_speed=BROWSER_SPEED,
        )
    finally:
        handle.stop()


def test_an_operator_launches_a_preset_watches_it_become_ready_chats_and_tears_it_down(
    browser_page: Any,
    live_server: Any,
    watched_cluster: Cluster,
    catalog: object,
    celery_worker_factory: Callable[..., CeleryWorker],
) -> None:
    celery_worker_factory(env={"DEPLOYMENTS_FOLLOW_SECONDS": "0.5"})
    UserFactory.create(username="olive", role=Role.OPERATOR)
    page = browser_page
    browser_login(page, live_server, username="olive", password="correct-horse-battery")

    # From the catalog: the model page's "Launch on KAITO" opens the launch form for it.
    page.click("nav >> text=Catalog")
    page.fill("input[name=q]", "phi-4-mini")
    page.wait_for_selector('[data-name="microsoft/Phi-4-mini-instruct"]')
    page.click("a:has-text('microsoft/Phi-4-mini-instruct')")
    page.click("#launch-on-kaito")
    assert page.input_value("select[name=model]") == "microsoft/Phi-4-mini-instruct"
    page.wait_for_function(
        "() => document.querySelector('input[name=name]').value === 'phi-4-mini-instruct'"
    )
    first_size = page.locator("select[name=vm_size] option").first.inner_text()
    assert " · fits · 1 node · $" in first_size
    page.fill("input[name=max_model_len]", "4096")
    page.click("#preview-button")
    page.wait_for_selector("#dry-run-ok")
    assert "kind: Workspace" in page.inner_text("#manifest-yaml")
    page.click("#launch-button")
    page.wait_for_url(re.compile(r"/deployments/\d+/$"))

    # The page follows the launch by itself: provisioning first, then every chip turns green.
    page.wait_for_selector("#deployment-live[data-status=provisioning]", timeout=15_000)
    page.wait_for_selector("#deployment-live[data-status=ready]", timeout=60_000)
    for condition in ("ResourceReady", "InferenceReady", "WorkspaceSucceeded"):
        assert (
            page.get_attribute(f"#deployment-state [data-condition={condition}]", "data-value")
            == "True"
        )
    phases = page.locator("#phase-table tr[data-phase]").all_inner_texts()
    assert [p.split("\t")[0] for p in phases] == [
        "provisioning",
        "node init",
        "image pull",
        "warm-up",
        "benchmark",
    ]
    page.wait_for_selector("#timeline-chart .main-svg")
    assert page.inner_text("#peak-tpm").strip() != "—"

    page.fill("#chat-prompt", "Say hello in five words.")
    page.click("#chat-send")
    page.wait_for_selector("#chat-output[data-done=true]")
    reply = page.inner_text("#chat-output")
    assert reply.strip() and "did not answer" not in reply
    page.screenshot(path=str(ARTIFACTS / "deployment-ready-with-chat.png"), full_page=True)

    page.click("#teardown")
    page.fill("#confirm-name", "phi-4-mini-instruct")
    page.click("#confirm-teardown")
    page.wait_for_selector("#teardown-done", timeout=60_000)
    deployment = Deployment.objects.get()
    assert deployment.status == Deployment.Status.DELETED and deployment.nodes_left == []
