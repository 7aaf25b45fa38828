from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings

from apps.accounts.roles import Role
from apps.catalog.services import catalog_load
from tests.conftest import browser_login
from tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_viewer_filters_and_sorts_the_catalog_without_a_page_reload(
    browser_page: Any, live_server: Any
) -> None:
    catalog_load(reference_dir=settings.REFERENCE_DIR)
    UserFactory.create(username="vera", role=Role.VIEWER)
    page = browser_page
    browser_login(page, live_server, username="vera", password="correct-horse-battery")
    page.goto(f"{live_server.url}/catalog/")
    rows = page.locator("#catalog-table tbody tr")
    assert rows.count() == 76
    # a marker on the window survives htmx swaps but not a reload
    page.evaluate("window.__noReload = true")

    page.select_option("select[name=gated]", "yes")
    # Predicates are functions, evaluated once: the pages' CSP forbids eval of expressions.
    page.wait_for_function(
        "() => document.querySelectorAll('#catalog-table tbody tr').length === 4"
    )
    assert "gated=yes" in page.url  # the filter is in the address, so the view can be shared

    page.select_option("select[name=gated]", "")
    page.fill("input[name=q]", "phi-4")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#catalog-table tbody tr')]"
        ".every(r => r.dataset.name.toLowerCase().includes('phi-4'))"
    )
    names = rows.evaluate_all("rs => rs.map(r => r.dataset.name)")
    assert "microsoft/Phi-4-mini-instruct" in names and "Phi-4" in names

    page.fill("input[name=q]", "")
    page.select_option("select[name=source]", "kaito")
    page.select_option("select[name=fits_on]", "Standard_NV36ads_A10_v5")
    page.wait_for_function(
        "() => !document.querySelector('[data-name=\"meta-llama/Llama-3.3-70B-Instruct\"]')"
        " && !!document.querySelector('[data-name=\"microsoft/Phi-4-mini-instruct\"]')"
    )
    page.click("th a:has-text('Context')")
    page.wait_for_url("**sort=context**")
    page.wait_for_selector("th[aria-sort=ascending]:has-text('Context')")
    contexts = rows.evaluate_all(
        "rs => rs.map(r => parseInt(r.children[4].textContent.replace(/,/g, '')))"
    )
    assert contexts == sorted(contexts)
    assert page.evaluate("window.__noReload") is True

    page.click("a:has-text('microsoft/Phi-4-mini-instruct')")
    page.wait_for_selector("#sizing-table")
    assert "Quality per parameter" in page.content()
    page.fill("input[name=context]", "131072")
    page.press("input[name=context]", "Enter")
    page.wait_for_url("**context=131072**")
    a10 = page.locator('tr[data-sku="Standard_NV36ads_A10_v5"]')
    # 131,072 tokens of KV cache (16 GiB) and the weights need two A10s: two one-GPU nodes
    page.wait_for_function(
        "() => document.querySelector('tr[data-sku=\"Standard_NV36ads_A10_v5\"] td:nth-child(5)')"
        ".textContent.trim() === '2'"
    )
    assert a10.locator("td").nth(3).inner_text().strip() == "2"
