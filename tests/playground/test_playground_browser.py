"""In Chromium: an operator runs a prompt and watches both answers stream in side by side."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from apps.accounts.roles import Role
from apps.catalog.services import catalog_load
from kaitosim.foundry import FoundryServer
from kaitosim.inference import InferenceServer
from tests.conftest import browser_login
from tests.factories import UserFactory
from tests.kaitosim.loop_thread import LoopThread
from tests.playground.conftest import FOUNDRY_KEY, foundry_start, inference_start
from tests.playground.factories import foundry_target, kaito_target

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def slow_servers(loop_thread: LoopThread) -> Iterator[tuple[InferenceServer, FoundryServer]]:
    """Slower than life, so an answer takes a few seconds and can be watched arriving."""
    vllm = inference_start(loop_thread, speed=0.2)
    foundry = foundry_start(loop_thread, speed=0.5)
    yield vllm, foundry
    loop_thread.run(vllm.stop())
    loop_thread.run(foundry.stop())


def test_an_operator_watches_two_answers_stream_side_by_side(
    browser_page: Any,
    live_server: Any,
    celery_worker_process: Path,
    slow_servers: tuple[InferenceServer, FoundryServer],
) -> None:
    vllm, foundry = slow_servers
    catalog_load(reference_dir=settings.REFERENCE_DIR)
    kaito_target(vllm.url)
    foundry_target(foundry.url, FOUNDRY_KEY)
    UserFactory.create(username="olga", role=Role.OPERATOR)
    page = browser_page
    browser_login(page, live_server, username="olga", password="correct-horse-battery")

    page.goto(f"{live_server.url}/playground/")
    # KAITO against Foundry by default
    assert page.locator("#id_target_a option:checked").inner_text().startswith("kaito-phi-4-mini")
    assert page.locator("#id_target_b option:checked").inner_text().startswith("foundry-phi-4")
    page.fill("#id_prompt", "Explain how KAITO provisions GPU nodes.")
    page.fill("#id_max_tokens", "80")
    page.click("button:has-text('Run both')")
    page.wait_for_url("**/playground/runs/*/")
    page.evaluate("window.__noReload = true")

    # Both columns show text while their answers are still arriving.
    for side in ("a", "b"):
        page.wait_for_function(
            f"""() => {{
                const s = document.querySelector('#side-{side}');
                return s && s.dataset.status === 'streaming'
                    && s.querySelector('.ab-answer').dataset.chunks > 0;
            }}""",
            timeout=30_000,
        )
    partial = page.evaluate(
        "() => ['a', 'b'].map(s => document.querySelector('#side-' + s + ' .ab-answer')"
        ".textContent.length)"
    )
    page.wait_for_selector("#run-sides[data-run-status=done]", timeout=60_000)
    final = page.evaluate(
        "() => ['a', 'b'].map(s => document.querySelector('#side-' + s + ' .ab-answer')"
        ".textContent.length)"
    )
    assert all(0 < p < f for p, f in zip(partial, final, strict=True)), (partial, final)
    assert page.evaluate("window.__noReload") is True  # updated in place, not reloaded

    for side in ("a", "b"):
        assert page.locator(f"#side-{side}").get_attribute("data-status") == "done"
        assert page.locator(f"#side-{side} [data-metric=ttft]").inner_text().endswith("ms")
        assert page.locator(f"#side-{side} [data-metric=tokens]").inner_text().endswith("80")
        assert page.locator(f"#side-{side} [data-metric=cost]").inner_text().startswith("$")
    assert "Both requests sent within" in page.locator("#start-skew").inner_text()
    compliance = page.locator("#compliance").inner_text()
    assert "In your cluster's region" in compliance and "Data Zone" in compliance
