"""In Chromium, under the Content-Security-Policy: the catalog, a deployment's live page, the
playground, an experiment's results and Django admin load with zero policy violations, and the
plotly charts are drawn (their scripts run with the nonce, or from static files)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.conf import settings

from apps.accounts.roles import Role
from apps.catalog.services import catalog_load
from apps.clusters.models import Cluster
from apps.deployments import services
from apps.deployments.models import Deployment
from apps.playground.experiments import experiment_create, experiment_run_sync
from apps.playground.models import ABRun, Experiment, Target
from apps.playground.prompts import Prompt, PromptSet
from apps.playground.services import abrun_execute
from kaitosim.foundry import FoundryServer
from kaitosim.inference import InferenceServer
from tests.conftest import browser_login
from tests.deployments.conftest import follow, launch_request
from tests.factories import UserFactory
from tests.playground.conftest import FOUNDRY_KEY, foundry, loop_thread, vllm
from tests.playground.factories import foundry_target, kaito_target, queued_run

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

__all__ = ["foundry", "loop_thread", "vllm"]  # the playground's simulated servers, as fixtures

# Runs before any page script: every violation the browser reports is kept on the window.
LISTEN = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective + " " + e.blockedURI + " " + (e.sourceFile || "") +
                    ":" + e.lineNumber);
});
"""


def violations(page: Any, console: list[str]) -> list[str]:
    found = list(page.evaluate("window.__csp || []"))
    return found + [m for m in console if "Content Security Policy" in m]


@dataclass
class Scene:
    cluster: Cluster
    deployment: Deployment
    run: ABRun
    experiment: Experiment
    target: Target


@pytest.fixture
def scene(cluster: Cluster, foundry: FoundryServer, vllm: InferenceServer) -> Scene:
    """Made before the browser starts (its event loop would stop asyncio.run here)."""
    catalog_load(reference_dir=settings.REFERENCE_DIR)
    deployment = launch_request(cluster, name="csp-phi")
    deployment = services.deployment_launch(deployment_id=deployment.pk)
    deployment = follow(
        deployment, lambda d: d.status == Deployment.Status.READY and bool(d.timeline)
    )
    a = kaito_target(vllm.url)
    b = foundry_target(foundry.url, FOUNDRY_KEY)
    run = queued_run([a, b])
    abrun_execute(run_id=run.pk)
    experiment = experiment_create(
        user=None,
        name="csp",
        targets=[a, b],
        prompt_set=PromptSet(name="csp", prompts=(Prompt(prompt="What is KAITO?"),)),
        repetitions=2,
        max_tokens=16,
        enqueue=False,
    )
    experiment = experiment_run_sync(experiment=experiment)
    assert experiment.status == "done"
    UserFactory.create(username="ada", role=Role.ADMIN)
    return Scene(cluster, deployment, run, experiment, a)


def test_pages_run_under_the_policy_without_a_violation(
    scene: Scene, browser_page: Any, live_server: Any
) -> None:
    cluster, deployment, run, experiment, a = (
        scene.cluster,
        scene.deployment,
        scene.run,
        scene.experiment,
        scene.target,
    )
    page = browser_page
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.add_init_script(LISTEN)
    browser_login(page, live_server, username="ada", password="correct-horse-battery")
    url = live_server.url
    checked = []

    page.goto(f"{url}/catalog/")
    page.select_option("select[name=gated]", "yes")  # an htmx swap
    # A function, not an expression: Playwright evaluates it once (the policy forbids eval).
    page.wait_for_function(
        "() => document.querySelectorAll('#catalog-table tbody tr').length === 4"
    )
    checked.append(("catalog", violations(page, console)))

    page.goto(f"{url}/deployments/{deployment.pk}/")
    page.wait_for_selector("#timeline-chart .main-svg")  # drawn by static/js/charts.js
    checked.append(("deployment", violations(page, console)))

    page.goto(f"{url}/playground/")
    page.wait_for_selector("#playground-form")
    checked.append(("playground", violations(page, console)))

    page.goto(f"{url}/playground/runs/{run.pk}/")
    page.wait_for_selector(".ab-answer[data-side]")
    checked.append(("run", violations(page, console)))

    page.goto(f"{url}/playground/experiments/{experiment.pk}/")
    for chart in ("ttft_ms", "e2e_ms", "cost"):
        page.wait_for_selector(f"#chart-figure-{chart} .main-svg")  # the inline script ran
    checked.append(("experiment", violations(page, console)))

    page.goto(f"{url}/audit/")
    page.select_option("select[name=action]", "deployment.launch")  # data-autosubmit, app.js
    page.wait_for_url("**action=deployment.launch**")
    checked.append(("audit", violations(page, console)))

    page.goto(f"{url}/admin/playground/target/{a.pk}/change/")
    page.wait_for_selector("#target_form")
    page.click("#id_kaito_model + .select2, .select2-selection")  # admin's own jQuery widget
    page.wait_for_selector(".select2-results__option")
    checked.append(("admin", violations(page, console)))

    page.goto(f"{url}/clusters/{cluster.name}/")
    page.once("dialog", lambda dialog: dialog.dismiss())  # data-confirm asks first (app.js)
    page.click("form[data-confirm] button")
    assert Cluster.objects.filter(pk=cluster.pk).exists()  # dismissed: nothing removed
    checked.append(("cluster", violations(page, console)))

    assert checked == [(name, []) for name, _ in checked]
    # The listener itself works: an inline script without the nonce is reported.
    page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = '1'; "
        "document.body.appendChild(s); }"
    )
    page.wait_for_function("() => window.__csp.length > 0")
    assert "script-src" in violations(page, console)[0]
