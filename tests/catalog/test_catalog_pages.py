from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.test import Client
from django.urls import reverse

from apps.accounts.roles import Role
from apps.catalog.models import FoundryModel, GpuVmSize, KaitoModel
from apps.catalog.services import LoadReport

pytestmark = pytest.mark.django_db

LIST = reverse("catalog:model_list")


def names(html: str) -> list[str]:
    return re.findall(r'data-name="([^"]+)"', html)


def test_the_catalog_lists_every_kaito_and_foundry_model(
    viewer_client: Client, catalog: LoadReport
) -> None:
    response = viewer_client.get(LIST)
    assert response.status_code == 200
    html = response.content.decode()
    assert len(names(html)) == 65 + 11
    assert "65 on KAITO, 11 in Foundry" in html
    assert "microsoft/Phi-4-mini-instruct" in html
    assert "preset phi-4-mini-instruct" in html
    # htmx is served from our own static files, never a CDN
    assert "vendor/htmx/htmx.min.js" in html
    assert not re.search(r'<(script|link)[^>]+(src|href)="(https?:)?//', html)


def test_filters_narrow_the_list(viewer_client: Client, catalog: LoadReport) -> None:
    gated = names(viewer_client.get(LIST, {"gated": "yes"}).content.decode())
    assert sorted(gated) == [
        "google/gemma-3-27b-it",
        "google/gemma-3-4b-it",
        "meta-llama/Llama-3.1-8B-Instruct",
        "meta-llama/Llama-3.3-70B-Instruct",
    ]
    phi = names(viewer_client.get(LIST, {"family": "phi"}).content.decode())
    assert "Phi-4" in phi and "microsoft/phi-4" in phi and "gpt-5.1" not in phi
    foundry_only = names(viewer_client.get(LIST, {"source": "foundry"}).content.decode())
    # Foundry's models, plus the KAITO models Foundry also sells
    assert "gpt-5.1" in foundry_only and "microsoft/Phi-4-mini-instruct" in foundry_only
    assert "Qwen/Qwen3.5-9B" not in foundry_only
    both = names(viewer_client.get(LIST, {"source": "both"}).content.decode())
    assert len(both) == 10  # 5 Foundry models with a KAITO preset, and those 5 presets
    retired = names(viewer_client.get(LIST, {"lifecycle": "retired"}).content.decode())
    assert sorted(retired) == ["DeepSeek-R1", "gpt-4.1", "gpt-4o", "gpt-4o-mini"]
    transformers = names(viewer_client.get(LIST, {"runtime": "transformers"}).content.decode())
    assert len(transformers) == 30  # the legacy presets ship KAITO images with both runtimes


def test_fits_on_keeps_the_models_that_fit_that_vm_size(
    viewer_client: Client, catalog: LoadReport
) -> None:
    on_a10 = names(viewer_client.get(LIST, {"fits_on": "Standard_NV36ads_A10_v5"}).content.decode())
    assert "microsoft/Phi-4-mini-instruct" in on_a10
    assert "meta-llama/Llama-3.3-70B-Instruct" not in on_a10  # needs 7 A10 nodes, not one
    assert "gpt-5.1" not in on_a10  # Foundry models do not run on a VM of ours


def test_free_text_search_finds_families_by_strength(
    viewer_client: Client, catalog: LoadReport
) -> None:
    found = names(viewer_client.get(LIST, {"q": "reasoning"}).content.decode())
    assert "deepseek-ai/DeepSeek-R1-0528" in found and "openai/gpt-oss-20b" in found
    assert "microsoft/phi-4" not in found


def test_free_text_search_matches_every_word(viewer_client: Client, catalog: LoadReport) -> None:
    found = names(viewer_client.get(LIST, {"q": "qwen2.5 coder"}).content.decode())
    assert sorted(found) == ["Qwen/Qwen2.5-Coder-32B-Instruct", "Qwen/Qwen2.5-Coder-7B-Instruct"]
    html = viewer_client.get(LIST, {"q": "no-such-model"}).content.decode()
    assert "No model matches these filters" in html


def test_sorting_by_cheapest_hourly_cost(viewer_client: Client, catalog: LoadReport) -> None:
    rows = names(viewer_client.get(LIST, {"sort": "-cost", "source": "kaito"}).content.decode())
    # DeepSeek R1/V3 class models need 5 nodes and cost most; models with no price go last
    assert rows[0].startswith("deepseek-ai/DeepSeek-")
    ascending = names(viewer_client.get(LIST, {"sort": "context"}).content.decode())
    assert ascending[0] in {
        "microsoft/phi-2",
        "tiiuae/falcon-7b",
        "tiiuae/falcon-7b-instruct",
        "tiiuae/falcon-40b",
        "tiiuae/falcon-40b-instruct",
    }


def test_an_htmx_request_gets_only_the_results_fragment(
    viewer_client: Client, catalog: LoadReport
) -> None:
    response = viewer_client.get(LIST, {"family": "qwen"}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert "<html" not in html
    assert 'id="catalog-table"' in html
    assert all("Qwen" in n for n in names(html))


def test_a_stale_filter_value_is_ignored_not_an_error(
    viewer_client: Client, catalog: LoadReport
) -> None:
    response = viewer_client.get(LIST, {"fits_on": "Standard_Gone_v9", "sort": "bogus"})
    assert response.status_code == 200
    assert len(names(response.content.decode())) == 76


def test_the_model_page_shows_facts_strengths_and_sizing_over_every_vm_size(
    viewer_client: Client, catalog: LoadReport
) -> None:
    model = KaitoModel.objects.get(preset_name="phi-4-mini-instruct")
    response = viewer_client.get(model.get_absolute_url())
    html = response.content.decode()
    assert response.status_code == 200
    assert "Quality per parameter" in html  # the Phi family's strengths
    gpu_sizes = GpuVmSize.objects.filter(gpu_count__gt=0).count()
    assert len(re.findall(r'<tr data-sku="', html)) == gpu_sizes
    # the cheapest fit is one A10 at $3.20/h, $2,336/month, with 98,361 tokens of context
    a10_row = re.search(r'<tr data-sku="Standard_NV36ads_A10_v5".*?</tr>', html, re.S)
    assert a10_row is not None
    assert "cheapest" in a10_row.group(0)
    assert "$3.20" in a10_row.group(0) and "$2,336" in a10_row.group(0)
    assert "98,361" in a10_row.group(0)
    # Foundry sells the same model: its per-token price stands beside the self-hosted cost
    assert 'id="price-comparison"' in html
    assert "$0.075" in html


def test_the_sizing_table_recalculates_for_a_longer_context(
    viewer_client: Client, catalog: LoadReport
) -> None:
    model = KaitoModel.objects.get(preset_name="llama-3.3-70b-instruct")
    html = viewer_client.get(
        model.get_absolute_url(), {"context": "131072"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "<html" not in html
    row = re.search(r'<tr data-sku="Standard_NC24ads_A100_v4".*?</tr>', html, re.S)
    assert row is not None
    cells = re.findall(r'<td class="num">([^<]*)</td>', row.group(0))
    assert cells[:2] == ["3", "3"]  # 3 GPUs on 3 one-GPU nodes for 131,072 tokens


def test_bad_sizing_input_shows_an_error_and_the_defaults(
    viewer_client: Client, catalog: LoadReport
) -> None:
    model = KaitoModel.objects.get(preset_name="phi-4-mini-instruct")
    html = viewer_client.get(model.get_absolute_url(), {"context": "-5"}).content.decode()
    assert "Showing KAITO&#x27;s defaults instead" in html or "Showing KAITO's defaults" in html


def test_gated_and_retired_models_are_marked_plainly(
    viewer_client: Client, catalog: LoadReport
) -> None:
    llama = KaitoModel.objects.get(preset_name="llama-3.1-8b-instruct")
    html = viewer_client.get(llama.get_absolute_url()).content.decode()
    assert "Gated on Hugging Face" in html
    assert "presetOptions.modelAccessSecret" in html
    r1 = FoundryModel.objects.get(name="DeepSeek-R1")
    html = viewer_client.get(r1.get_absolute_url()).content.decode()
    assert "Retired on 2026-08-13" in html
    assert "deepseek-ai/DeepSeek-R1-0528" in html or "deepseek-r1-0528" in html


def test_a_foundry_model_page_shows_prices_per_deployment_type(
    viewer_client: Client, catalog: LoadReport
) -> None:
    html = viewer_client.get(
        reverse("catalog:foundry_detail", args=["Phi-4-mini-instruct"])
    ).content.decode()
    assert "$0.0825" in html and "$0.33" in html  # Data Zone: 1.1 x the Global price
    assert "tokens a month" in html


def test_an_unknown_model_is_a_404(viewer_client: Client, catalog: LoadReport) -> None:
    assert viewer_client.get(reverse("catalog:kaito_detail", args=["no/such"])).status_code == 404


def test_operators_get_a_launch_button_on_the_model_page_and_viewers_do_not(
    client_as: Callable[[Role | None], Client], catalog: LoadReport
) -> None:
    model = KaitoModel.objects.get(preset_name="phi-4-mini-instruct")
    operator_html = client_as(Role.OPERATOR).get(model.get_absolute_url()).content.decode()
    viewer_html = client_as(Role.VIEWER).get(model.get_absolute_url()).content.decode()
    assert "/deployments/new/?model=microsoft/Phi-4-mini-instruct" in operator_html
    assert 'id="launch-on-kaito"' not in viewer_html
