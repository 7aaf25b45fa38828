"""Every page carries the security headers and a Content-Security-Policy with a fresh nonce that
the page's own inline scripts carry."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.test import Client

from apps.accounts.roles import Role
from apps.catalog.services import LoadReport

pytestmark = pytest.mark.django_db

ClientAs = Callable[[Role | None], Client]


def policy(response: object) -> dict[str, str]:
    header = response["Content-Security-Policy"]  # type: ignore[index]
    directives = [d.strip() for d in header.split(";") if d.strip()]
    return {d.split(" ", 1)[0]: d.split(" ", 1)[1] if " " in d else "" for d in directives}


def test_pages_carry_the_security_headers(
    client: Client, client_as: ClientAs, catalog: LoadReport
) -> None:
    for response in [
        client.get("/accounts/login/"),
        client_as(Role.VIEWER).get("/catalog/"),
        client_as(Role.ADMIN).get("/admin/"),
    ]:
        assert response.status_code == 200
        csp = policy(response)
        assert csp["default-src"] == "'self'"
        assert re.fullmatch(r"'self' 'nonce-[A-Za-z0-9_\-]{20,}'", csp["script-src"])
        assert csp["style-src"] == "'self' 'unsafe-inline'"
        assert csp["img-src"] == "'self' data: blob:"
        assert csp["connect-src"] == "'self'"
        assert csp["frame-ancestors"] == "'none'"
        assert csp["base-uri"] == "'self'"
        assert csp["form-action"] == "'self'"
        assert csp["object-src"] == "'none'"
        assert response["Referrer-Policy"] == "same-origin"
        assert response["Cross-Origin-Opener-Policy"] == "same-origin"
        assert "camera=()" in response["Permissions-Policy"]
        assert "geolocation=()" in response["Permissions-Policy"]
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["X-Frame-Options"] == "DENY"


def test_each_response_has_its_own_nonce_and_the_page_hands_it_to_htmx(
    client: Client,
) -> None:
    first = client.get("/accounts/login/")
    second = client.get("/accounts/login/")
    nonce = policy(first)["script-src"].split("'nonce-")[1].rstrip("'")
    assert nonce != policy(second)["script-src"].split("'nonce-")[1].rstrip("'")
    assert f'"inlineScriptNonce": "{nonce}"' in first.content.decode()


def test_no_template_has_an_inline_script_without_the_nonce_or_an_inline_handler() -> None:
    """Static check over every template the app ships (the browser test checks pages)."""
    from django.conf import settings

    roots = [settings.BASE_DIR / "templates", *settings.BASE_DIR.glob("apps/*/templates")]
    offenders = []
    for root in roots:
        for path in root.rglob("*.html"):
            text = re.sub(
                r"{% comment %}.*?{% endcomment %}|{#.*?#}", "", path.read_text(), flags=re.S
            )
            for tag in re.findall(r"<script\b[^>]*>", text):
                if "src=" in tag or 'type="application/json"' in tag:
                    continue
                if 'nonce="{{ request.csp_nonce }}"' not in tag:
                    offenders.append(f"{path}: {tag}")
            for handler in re.findall(r"\son[a-z]+=\"", text):
                offenders.append(f"{path}: inline handler{handler}")
            if "hx-on" in text:
                offenders.append(f"{path}: hx-on (evaluated as code, blocked by the policy)")
    assert offenders == []


def test_secure_cookies_and_session_settings() -> None:
    from django.conf import settings

    assert settings.SESSION_COOKIE_HTTPONLY
    assert settings.SESSION_COOKIE_SAMESITE == "Lax"
    assert settings.CSRF_COOKIE_HTTPONLY
    assert 0 < settings.SESSION_COOKIE_AGE <= 24 * 3600


def test_htmx_gets_the_csrf_token_without_reading_the_cookie(viewer_client: Client) -> None:
    """CSRF_COOKIE_HTTPONLY is on: the page hands htmx the token in hx-headers instead."""
    page = viewer_client.get("/catalog/").content.decode()
    token = re.search(r"hx-headers='\{\"X-CSRFToken\": \"([^\"]+)\"\}'", page)
    assert token is not None
    # A POST with only that header (no form field) passes the CSRF check.
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.cookies = viewer_client.cookies
    response = csrf_client.post(
        "/accounts/logout/", HTTP_X_CSRFTOKEN=token.group(1), HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 302
    refused = Client(enforce_csrf_checks=True)
    refused.cookies = viewer_client.cookies
    assert refused.post("/accounts/logout/").status_code == 403
