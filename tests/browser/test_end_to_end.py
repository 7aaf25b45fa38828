"""In Chromium, the whole journey of a platform engineer on the simulator: log in, filter the
catalog, open phi-4-mini, add the local cluster, launch the model on KAITO and watch it become
ready, add a Foundry target, A/B one prompt between the two, run an experiment, read its charts
and download its exports.

Everything is real but the cloud: the live Django server, a Celery worker process, kaitosim's
Kubernetes API (with KAITO) and Foundry over HTTP(S), and Debian's Chromium. A screenshot of each
step is kept in KAITOWEB_ARTIFACTS_DIR (default var/artifacts/e2e/), named in step order.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from playwright.sync_api import expect

from apps.accounts.roles import Role
from apps.deployments.models import Deployment
from apps.playground.models import ABRun, Experiment, Target
from tests.conftest import CeleryWorker, browser_login
from tests.factories import UserFactory

pytestmark = pytest.mark.browser

# A 16-minute AKS cold start in about 7 s: long enough to watch the page follow it.
SPEED = 150.0
PHI = "microsoft/Phi-4-mini-instruct"
FOUNDRY_DEPLOYMENT = "Phi-4-mini-instruct"
WAIT_MS = 15_000
CHARTS = ("ttft_ms", "e2e_ms", "scatter", "cost", "break_even")
SAMPLE_COLUMNS = """() => {
    window.__seen = [];
    const side = s => {
        const col = document.querySelector('#side-' + s);
        const text = col && col.querySelector('.ab-answer');
        return col ? [col.dataset.status, text.dataset.chunks > 0 ? text.textContent.length : 0]
                   : ['', 0];
    };
    const look = () => window.__seen.push({a: side('a'), b: side('b')});
    look();
    new MutationObserver(look).observe(document.body, {childList: true, subtree: true});
}"""


def artifacts_dir() -> Path:
    configured = os.environ.get("KAITOWEB_ARTIFACTS_DIR")
    path = Path(configured) if configured else Path(settings.BASE_DIR) / "var" / "artifacts" / "e2e"
    path.mkdir(parents=True, exist_ok=True)
    return path


class Shots:
    """Full-page screenshots, numbered in the order the journey takes them."""

    def __init__(self, page: Any, directory: Path) -> None:
        self.page, self.directory = page, directory
        self.taken: list[Path] = []
        for old in directory.glob("[0-9][0-9]-*.png"):
            old.unlink()

    def __call__(self, name: str) -> Path:
        path = self.directory / f"{len(self.taken) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        return path


@pytest.fixture
def simulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """kaitosim with its Foundry, announced to the app as `dev.py run` does, so the clusters
    page offers "Add the local simulator"."""
    from kaitosim.server import start

    handle = start(port=0, foundry_port=0, speed=SPEED, state_dir=tmp_path / "sim")
    monkeypatch.setenv("KAITOSIM_KUBECONFIG", str(handle.kubeconfig_path))
    try:
        yield handle
    finally:
        handle.stop()


def test_a_platform_engineer_goes_from_the_catalog_to_exported_results(
    browser_page: Any,
    live_server: Any,
    simulator: Any,
    catalog: object,
    celery_worker_factory: Callable[..., CeleryWorker],
) -> None:
    celery_worker_factory(env={"DEPLOYMENTS_FOLLOW_SECONDS": "0.5"})
    UserFactory.create(username="paula", role=Role.OPERATOR)
    page = browser_page
    shot = Shots(page, artifacts_dir())
    # Waits go through selectors and expect(), never wait_for_function: the pages' content
    # security policy forbids the eval() that Playwright's string predicates need.

    # 1. Log in: the home page is the catalog.
    page.goto(f"{live_server.url}/")
    page.wait_for_url("**/accounts/login/**")
    shot("login")
    browser_login(page, live_server, username="paula", password="correct-horse-battery")
    page.wait_for_selector("#catalog-table")
    assert page.url.endswith("/catalog/")

    # 2. Filter the catalog without a reload: gated models, then the Phi family.
    rows = page.locator("#catalog-table tbody tr")
    page.evaluate("window.__noReload = true")
    page.select_option("select[name=gated]", "yes")
    expect(rows).to_have_count(4, timeout=WAIT_MS)
    gated = rows.evaluate_all("rs => rs.map(r => r.dataset.name)")
    assert all(("llama" in n.lower() or "gemma" in n.lower()) for n in gated), gated
    page.select_option("select[name=gated]", "")
    page.select_option("select[name=family]", "phi")
    expect(page.locator("#catalog-table tbody tr:not([data-name*='phi' i])")).to_have_count(
        0, timeout=WAIT_MS
    )
    expect(rows.first).to_be_visible(timeout=WAIT_MS)
    assert "family=phi" in page.url
    assert PHI in rows.evaluate_all("rs => rs.map(r => r.dataset.name)")
    assert page.evaluate("window.__noReload") is True
    shot("catalog-phi-family")

    # 3. The model page: facts and the sizing table over every GPU VM size.
    page.click(f"a:has-text('{PHI}')")
    page.wait_for_selector("#sizing-table")
    assert "Quality per parameter" in page.content()
    a100 = page.locator('tr[data-sku="Standard_NC24ads_A100_v4"]')
    assert a100.count() == 1 and "$" in a100.inner_text()
    model_url = page.url
    shot("model-detail-sizing")

    # 4. The cluster: the local simulator, added and checked in one click.
    page.goto(f"{live_server.url}/clusters/")
    page.click("#add-simulator")
    page.wait_for_selector("#check-ok")
    assert "KAITO installed" in page.inner_text("#check-ok")
    shot("cluster-checked")

    # 5. Launch phi-4-mini on KAITO from its catalog page, after a server-side dry run.
    page.goto(model_url)
    page.click("#launch-on-kaito")
    assert page.input_value("select[name=model]") == PHI
    expect(page.locator("input[name=name]")).to_have_value("phi-4-mini-instruct", timeout=WAIT_MS)
    assert " · fits · 1 node · $" in page.locator("select[name=vm_size] option").first.inner_text()
    page.fill("input[name=max_model_len]", "4096")
    page.click("#preview-button")
    page.wait_for_selector("#dry-run-ok")
    assert "kind: Workspace" in page.inner_text("#manifest-yaml")
    shot("launch-preview")
    page.click("#launch-button")
    page.wait_for_url(re.compile(r"/deployments/\d+/$"))
    page.wait_for_selector("#deployment-live[data-status]")
    shot("deployment-launched")

    # 6. The page follows the Workspace by itself until it is ready.
    page.evaluate("window.__noReload = true")
    page.wait_for_selector("#deployment-live[data-status=ready]", timeout=90_000)
    assert page.evaluate("window.__noReload") is True  # followed in place, never reloaded
    for condition in ("ResourceReady", "InferenceReady", "WorkspaceSucceeded"):
        chip = f"#deployment-state [data-condition={condition}]"
        assert page.get_attribute(chip, "data-value") == "True", condition
    phases = page.locator("#phase-table tr[data-phase]").all_inner_texts()
    assert [p.split("\t")[0] for p in phases] == [
        "provisioning",
        "node init",
        "image pull",
        "warm-up",
        "benchmark",
    ]
    page.wait_for_selector("#timeline-chart .main-svg")
    assert page.inner_text("#peak-tpm").strip() not in ("", "—")
    deployment = Deployment.objects.get()
    assert deployment.status == Deployment.Status.READY
    shot("deployment-ready")

    # 7. Targets: the deployment (reached through the API server's service proxy) and a
    # Foundry deployment on kaitosim's Foundry, its prices and compliance prefilled.
    page.goto(f"{live_server.url}/playground/targets/new/")
    page.fill("#id_name", "kaito-phi-4-mini")
    page.select_option("#id_deployment", str(deployment.pk))
    page.click("button[value=prefill]")  # the deployment decides kind, price and region
    expect(page.locator("#id_kind")).to_have_value(Target.Kind.KAITO_VLLM, timeout=WAIT_MS)
    assert page.input_value("#id_cost_basis") == Target.CostBasisKind.PER_HOUR
    assert float(page.input_value("#id_price_per_hour")) > 0
    assert page.input_value("#id_processing_scope") == Target.ProcessingScope.IN_CLUSTER
    page.click("button[value=save]")
    page.wait_for_url("**/playground/targets/")
    assert "Target kaito-phi-4-mini saved." in page.inner_text("body")

    page.goto(f"{live_server.url}/playground/targets/new/")
    page.fill("#id_name", "foundry-phi-4-mini")
    page.select_option("#id_kind", Target.Kind.FOUNDRY_OPENAI)
    page.fill("#id_endpoint_url", f"{simulator.foundry_url}/openai/v1/")
    page.fill("#id_model_name", FOUNDRY_DEPLOYMENT)
    page.select_option("#id_auth", Target.Auth.API_KEY)
    page.select_option("#id_deployment_type", Target.DeploymentType.DATA_ZONE)
    page.fill("#id_region", "eastus")
    page.fill("#id_api_key", simulator.foundry_key)
    page.click("button[value=prefill]")
    expect(page.locator("#id_input_per_1m")).not_to_have_value("", timeout=WAIT_MS)
    assert page.input_value("#id_cost_basis") == Target.CostBasisKind.PER_TOKEN
    assert page.input_value("#id_processing_scope") == Target.ProcessingScope.FOUNDRY_DATA_ZONE
    assert "Enter the API key again" in page.inner_text("body")
    assert page.input_value("#id_api_key") == ""  # a key is never sent back to the browser
    page.fill("#id_api_key", simulator.foundry_key)
    shot("foundry-target-prefilled")
    page.click("button[value=save]")
    page.wait_for_url("**/playground/targets/")
    assert "Target foundry-phi-4-mini saved." in page.inner_text("body")
    shot("targets")
    kaito, foundry = (
        Target.objects.get(name="kaito-phi-4-mini"),
        Target.objects.get(name="foundry-phi-4-mini"),
    )
    assert kaito.deployment_id == deployment.pk and kaito.kind == Target.Kind.KAITO_VLLM
    assert foundry.api_key == simulator.foundry_key  # stored (encrypted), never shown back

    # 8. The playground: KAITO against Foundry by default; both columns stream and are measured.
    page.goto(f"{live_server.url}/playground/")
    assert page.input_value("#id_target_a") == str(kaito.pk)
    assert page.input_value("#id_target_b") == str(foundry.pk)
    page.fill("#id_prompt", "Explain how KAITO provisions GPU nodes for a workspace.")
    page.fill("#id_max_tokens", "200")
    page.click("button:has-text('Run both')")
    page.wait_for_url("**/playground/runs/*/")
    # What each column shows, sampled as the page updates itself (and never reloads).
    page.evaluate(SAMPLE_COLUMNS)
    page.wait_for_selector("#run-sides[data-run-status=done]", timeout=60_000)
    seen = page.evaluate("window.__seen")
    assert seen, "the run page reloaded instead of updating in place"
    final = {s: len(page.inner_text(f"#side-{s} .ab-answer")) for s in ("a", "b")}
    # Foundry answers at a real model's pace (~2.6 s): its column fills while it streams.
    assert any(o["b"][0] == "streaming" and 0 < o["b"][1] < final["b"] for o in seen), seen
    for side in ("a", "b"):
        column = page.locator(f"#side-{side}")
        assert column.get_attribute("data-status") == "done"
        assert int(column.locator(".ab-answer").get_attribute("data-chunks") or 0) > 1
        assert column.locator(".ab-answer").inner_text().strip()
        assert column.locator("[data-metric=ttft]").inner_text().endswith("ms")
        assert column.locator("[data-metric=itl]").inner_text().endswith("ms")
        assert column.locator("[data-metric=e2e]").inner_text().endswith("ms")
        assert column.locator("[data-metric=cost]").inner_text().startswith("$")
        ttft, e2e = (
            float(column.locator(f"[data-metric={m}]").inner_text().split()[0].replace(",", ""))
            for m in ("ttft", "e2e")
        )
        assert 0 < ttft < e2e  # streamed: the first token came before the end
    assert "kaito-phi-4-mini" in page.inner_text("#side-a")
    assert "foundry-phi-4-mini" in page.inner_text("#side-b")
    assert "Both requests sent within" in page.inner_text("#start-skew")
    compliance = page.inner_text("#compliance")
    assert "In your cluster's region" in compliance and "Data Zone" in compliance
    run = ABRun.objects.get()
    assert [s.status for s in run.samples.order_by("side")] == ["done", "done"]
    shot("playground-side-by-side")

    # 9. An experiment from a built-in prompt set; the progress bar runs to the end.
    page.goto(f"{live_server.url}/playground/experiments/")
    page.fill("#id_name", "phi-4-mini: KAITO or Foundry")
    page.check(f"input[name=targets][value='{kaito.pk}']")
    page.check(f"input[name=targets][value='{foundry.pk}']")
    page.select_option("#id_builtin", "platform-questions")
    page.fill("#id_repetitions", "2")
    page.fill("#id_max_tokens", "32")
    page.click("button:has-text('Start')")
    page.wait_for_url("**/playground/experiments/*/")
    shot("experiment-started")
    page.wait_for_selector("#experiment-progress[data-status=done]", timeout=120_000)
    assert page.get_attribute("#progress-bar", "value") == "100"
    assert page.inner_text("#progress-count") == "20 / 20 requests"
    experiment = Experiment.objects.get()
    assert experiment.status == Experiment.Status.DONE
    if page.locator("#final-figures").count():
        page.click("#final-figures")  # the polled fragment links the final page
        page.wait_for_load_state()

    # 10. The results: the summary per target, plotly's charts drawn from data, the break-even.
    summary = page.inner_text("#summary")
    assert "kaito-phi-4-mini" in summary and "foundry-phi-4-mini" in summary
    assert summary.count("10 ok / 10 finished of 10") == 2
    for chart in CHARTS:
        page.wait_for_selector(f"#chart-figure-{chart} .main-svg")
        traces = page.evaluate(
            "id => { const el = document.getElementById(id);"
            " return (el.data || []).map(t => (t.median || t.y || []).length); }",
            f"chart-figure-{chart}",
        )
        assert traces and min(traces) > 0, (chart, traces)
        if chart in ("ttft_ms", "e2e_ms"):
            assert len(traces) == 2, traces  # one box per target
    # Drawn, not only described: a point per measured request (all 20: the chart keeps up to
    # 2,000 a target), in SVG, so a browser without WebGL shows them too.
    assert page.locator("#chart-figure-scatter .scatterlayer .point").count() == 20
    assert "WebGL is not supported" not in page.inner_text("body")
    evens = page.inner_text("#break-even")
    assert "foundry-phi-4-mini" in evens and "kaito-phi-4-mini" in evens
    assert "peakTokensPerMinute" in evens  # a linked deployment: capacity from its benchmark
    assert "What is KAITO?" in page.inner_text("#prompt-0")
    shot("experiment-results")

    # 11. The exports, as the browser downloads them.
    downloads: dict[str, str] = {}
    for label in ("Samples CSV", "Samples JSON", "Summary CSV", "Summary JSON"):
        with page.expect_download() as info:
            page.click(f"a:has-text('{label}')")
        download = info.value
        saved = artifacts_dir() / download.suggested_filename
        download.save_as(str(saved))
        downloads[label] = saved.read_text()
        assert download.suggested_filename == (
            f"experiment-{experiment.pk}-{label.split()[0].lower()}.{label.split()[1].lower()}"
        )
    samples = list(csv.DictReader(io.StringIO(downloads["Samples CSV"])))
    assert len(samples) == 20
    assert {r["target"] for r in samples} == {"kaito-phi-4-mini", "foundry-phi-4-mini"}
    assert all(r["status"] == "done" and float(r["e2e_ms"]) > 0 for r in samples)
    assert "What is KAITO?" in {r["prompt"] for r in samples}
    as_json = json.loads(downloads["Samples JSON"])
    assert as_json["experiment"]["id"] == experiment.pk and len(as_json["samples"]) == 20
    summary_rows = list(csv.DictReader(io.StringIO(downloads["Summary CSV"])))
    assert {r["name"] for r in summary_rows} == {"kaito-phi-4-mini", "foundry-phi-4-mini"}
    summary_json = json.loads(downloads["Summary JSON"])
    by_name = {t["name"]: t for t in summary_json["targets"]}
    assert by_name["kaito-phi-4-mini"]["ok"] == by_name["foundry-phi-4-mini"]["ok"] == 10
    assert by_name["kaito-phi-4-mini"]["percentiles"]["ttft_ms"]["p50"] > 0
    assert simulator.foundry_key not in "".join(downloads.values())  # no secret in an export
    assert len(shot.taken) == 12
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in shot.taken)
