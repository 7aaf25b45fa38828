"""Sign-in is rate limited per username and per client address, and every attempt is audited."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from django.urls import reverse

from apps.accounts.roles import Role
from apps.accounts.services import user_grant_role
from apps.audit.models import AuditEntry

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-passphrase-42"


def make_user() -> str:
    """A viewer with a name of this test's own (counters live in a cache shared by tests)."""
    name = f"ana-{uuid.uuid4().hex[:8]}"
    user = get_user_model().objects.create_user(name, password=PASSWORD)
    user_grant_role(user=user, role=Role.VIEWER)
    return name


def client_from(address: str) -> Client:
    return Client(REMOTE_ADDR=address)


def an_address() -> str:
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"


def sign_in(client: Client, username: str, password: str) -> int:
    response = client.post(reverse("login"), {"username": username, "password": password})
    return response.status_code


@override_settings(LOGIN_MAX_FAILURES_PER_USERNAME=3, LOGIN_MAX_FAILURES_PER_IP=100)
def test_a_username_is_refused_after_too_many_failures_even_with_the_right_password() -> None:
    name = make_user()
    client = client_from(an_address())
    assert [sign_in(client, name, "wrong") for _ in range(3)] == [200, 200, 200]
    refused = client.post(reverse("login"), {"username": name, "password": PASSWORD})
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    page = refused.content.decode()
    assert "Too many failed sign-ins for this username" in page
    assert "_auth_user_id" not in client.session
    # Another address does not help: the limit is on the username.
    assert sign_in(client_from(an_address()), name, PASSWORD) == 429


@override_settings(LOGIN_MAX_FAILURES_PER_USERNAME=100, LOGIN_MAX_FAILURES_PER_IP=4)
def test_an_address_is_refused_after_too_many_failures_across_usernames() -> None:
    name = make_user()
    address = an_address()
    client = client_from(address)
    for i in range(4):
        assert sign_in(client, f"nobody-{i}-{uuid.uuid4().hex[:6]}", "wrong") == 200
    assert sign_in(client, name, PASSWORD) == 429
    assert "your address" in client.post(reverse("login"), {"username": name}).content.decode()
    # The same user from elsewhere signs in.
    elsewhere = client_from(an_address())
    assert sign_in(elsewhere, name, PASSWORD) == 302
    assert elsewhere.get(reverse("catalog:model_list")).status_code == 200


@override_settings(LOGIN_MAX_FAILURES_PER_USERNAME=3, LOGIN_MAX_FAILURES_PER_IP=100)
def test_a_successful_sign_in_resets_the_username_counter() -> None:
    name = make_user()
    client = client_from(an_address())
    assert [sign_in(client, name, "wrong") for _ in range(2)] == [200, 200]
    assert sign_in(client, name, PASSWORD) == 302
    client.post(reverse("logout"))
    # Two more failures would have made four: after the reset they are two, still allowed.
    assert [sign_in(client, name, "wrong") for _ in range(2)] == [200, 200]
    assert sign_in(client, name, PASSWORD) == 302


@override_settings(
    LOGIN_MAX_FAILURES_PER_USERNAME=2,
    LOGIN_MAX_FAILURES_PER_IP=100,
    LOGIN_FAILURE_WINDOW_SECONDS=2,
)
def test_the_refusal_ends_with_the_window() -> None:
    import time

    name = make_user()
    client = client_from(an_address())
    assert [sign_in(client, name, "wrong") for _ in range(2)] == [200, 200]
    assert sign_in(client, name, PASSWORD) == 429
    time.sleep(2.5)
    assert sign_in(client, name, PASSWORD) == 302


@override_settings(LOGIN_MAX_FAILURES_PER_USERNAME=2, LOGIN_MAX_FAILURES_PER_IP=100)
def test_failed_and_refused_sign_ins_are_audited_without_the_password() -> None:
    name = make_user()
    address = an_address()
    client = client_from(address)
    secret_guess = "guess-" + uuid.uuid4().hex
    sign_in(client, name, secret_guess)
    sign_in(client, name, secret_guess)
    sign_in(client, name, PASSWORD)
    entries = list(AuditEntry.objects.filter(target=name).order_by("id"))
    assert [e.action for e in entries] == ["login.failed", "login.failed", "login.refused"]
    assert [e.outcome for e in entries] == ["failed", "failed", "refused"]
    assert all(address in e.detail for e in entries)
    for entry in AuditEntry.objects.all():
        text = " ".join([entry.action, entry.target, entry.detail, entry.actor_name])
        assert secret_guess not in text and PASSWORD not in text


def test_a_successful_sign_in_is_audited() -> None:
    name = make_user()
    assert sign_in(client_from(an_address()), name, PASSWORD) == 302
    entry = AuditEntry.objects.get(action="login", target=name)
    assert entry.outcome == "ok" and entry.actor_name == name


@override_settings(LOGIN_MAX_FAILURES_PER_USERNAME=2, LOGIN_MAX_FAILURES_PER_IP=100)
def test_the_admin_sign_in_is_the_same_rate_limited_page() -> None:
    name = make_user()
    client = client_from(an_address())
    response = client.get("/admin/login/?next=/admin/")
    assert response.status_code == 302
    assert response["Location"] == reverse("login") + "?next=/admin/"
    assert [sign_in(client, name, "wrong") for _ in range(2)] == [200, 200]
    assert sign_in(client, name, PASSWORD) == 429


@override_settings(TRUSTED_PROXY_COUNT=1, LOGIN_MAX_FAILURES_PER_IP=2)
def test_behind_a_trusted_proxy_the_forwarded_address_is_counted() -> None:
    name = make_user()
    proxy = an_address()
    first, second = an_address(), an_address()

    def attempt(client_address: str, password: str) -> int:
        client = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR=f"6.6.6.6, {client_address}")
        return sign_in(client, f"{name}-{uuid.uuid4().hex[:4]}", password)

    assert [attempt(first, "wrong"), attempt(first, "wrong")] == [200, 200]
    assert attempt(first, "wrong") == 429
    # The proxy's other clients are not refused (the spoofable left entry is ignored).
    assert attempt(second, "wrong") == 200
