"""In Chromium: an operator starts an experiment from the built-in prompt sets, watches the
progress bar reach the end, and reads the charts plotly.js draws."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from apps.accounts.roles import Role
from apps.catalog.services import catalog_load
from apps.playground.models import Experiment
from kaitosim.foundry import FoundryServer
from kaitosim.inference import InferenceServer
from tests.conftest import browser_login
from tests.factories import UserFactory
from tests.playground.conftest import FOUNDRY_KEY
from tests.playground.factories import foundry_target, kaito_target

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_operator_runs_an_experiment_and_reads_its_charts(
    browser_page: Any,
    live_server: Any,
    celery_worker_process: Path,
    foundry: FoundryServer,
    vllm: InferenceServer,
) -> None:
    catalog_load(reference_dir=settings.REFERENCE_DIR)
    kaito_target(vllm.url)
    foundry_target(foundry.url, FOUNDRY_KEY)
    UserFactory.create(username="olga", role=Role.OPERATOR)
    page = browser_page
    browser_login(page, live_server, username="olga", password="correct-horse-battery")

    page.goto(f"{live_server.url}/playground/experiments/")
    page.check("input[name=targets] >> nth=0")
    page.check("input[name=targets] >> nth=1")
    page.select_option("#id_builtin", "platform-questions")
    page.fill("#id_repetitions", "2")
    page.fill("#id_max_tokens", "24")
    page.click("button:has-text('Start')")
    page.wait_for_url("**/playground/experiments/*/")

    # The progress fragment polls until every request is in, then links the final page.
    page.wait_for_selector("#final-figures", timeout=60_000)
    assert page.locator("#progress-count").inner_text() == "20 / 20 requests"
    assert Experiment.objects.get().status == Experiment.Status.DONE
    page.click("#final-figures")
    for chart in ("ttft_ms", "e2e_ms", "scatter", "cost", "break_even"):
        page.wait_for_selector(f"#chart-figure-{chart} .main-svg", timeout=10_000)
    assert "What is KAITO?" in page.locator("#prompt-0").inner_text()
    page.screenshot(path=str(Path(settings.BASE_DIR) / "test-artifacts" / "experiment.png"))
