from __future__ import annotations

from collections.abc import Callable
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from apps.accounts.roles import Role
from apps.catalog.models import FoundryModel, GpuVmSize, KaitoModel
from apps.catalog.services import LoadReport

pytestmark = pytest.mark.django_db

ClientAs = Callable[[Role | None], Client]


def catalog_urls() -> list[str]:
    return [
        reverse("catalog:model_list"),
        KaitoModel.objects.get(preset_name="phi-4-mini-instruct").get_absolute_url(),
        FoundryModel.objects.get(name="Phi-4").get_absolute_url(),
    ]


def test_every_page_needs_a_login(client: Client, catalog: LoadReport) -> None:
    for url in [*catalog_urls(), "/"]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login")), url


def test_the_login_page_signs_a_user_in(client: Client, catalog: LoadReport) -> None:
    user = get_user_model().objects.create_user("ana", password="a-long-passphrase")
    from apps.accounts.services import user_grant_role

    user_grant_role(user=user, role=Role.VIEWER)
    page = client.get(reverse("login"))
    assert page.status_code == 200
    bad = client.post(reverse("login"), {"username": "ana", "password": "wrong"})
    assert bad.status_code == 200
    assert "correct username and password" in bad.content.decode()
    good = client.post(
        reverse("login"),
        {"username": "ana", "password": "a-long-passphrase", "next": catalog_urls()[0]},
    )
    assert good.status_code == 302
    assert client.get(catalog_urls()[0]).status_code == 200


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR, Role.ADMIN])
def test_every_role_may_read_the_catalog(
    client_as: ClientAs, catalog: LoadReport, role: Role
) -> None:
    client = client_as(role)
    for url in catalog_urls():
        assert client.get(url).status_code == 200, url


def test_a_user_with_no_role_is_told_to_ask_an_admin(
    client_as: ClientAs, catalog: LoadReport
) -> None:
    response = client_as(None).get(reverse("catalog:model_list"))
    assert response.status_code == 403
    assert "admin" in response.content.decode().lower()


def test_the_page_shows_the_users_role_and_only_admins_see_the_admin_link(
    client_as: ClientAs, catalog: LoadReport
) -> None:
    viewer_html = client_as(Role.VIEWER).get(reverse("catalog:model_list")).content.decode()
    admin_html = client_as(Role.ADMIN).get(reverse("catalog:model_list")).content.decode()
    assert "viewer" in viewer_html
    assert 'href="/admin/"' not in viewer_html
    assert 'href="/admin/"' in admin_html


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR])
def test_only_admins_reach_django_admin(
    client_as: ClientAs, catalog: LoadReport, role: Role
) -> None:
    response = client_as(role).get(reverse("admin:catalog_gpuvmsize_changelist"))
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_admins_edit_prices_in_django_admin(client_as: ClientAs, catalog: LoadReport) -> None:
    admin = client_as(Role.ADMIN)
    vm = GpuVmSize.objects.get(sku="Standard_NC24ads_A100_v4")
    for name in ("gpuvmsize", "kaitomodel", "foundrymodel", "modelfamily"):
        listing = admin.get(reverse(f"admin:catalog_{name}_changelist"), {"q": "a"})
        assert listing.status_code == 200, name
    change = admin.get(reverse("admin:catalog_kaitomodel_changelist"))
    assert "cheapest fit" in change.content.decode().lower()
    page = admin.get(reverse("admin:catalog_gpuvmsize_change", args=[vm.pk]))
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None}
    data.update(price_per_hour="3.5", price_confidence="low", price_as_of="2026-11-20")
    response = admin.post(reverse("admin:catalog_gpuvmsize_change", args=[vm.pk]), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    vm.refresh_from_db()
    assert str(vm.price_per_hour) == "3.5000"
    # and the catalog now prices the A100 size at the new figure
    html = admin.get(KaitoModel.objects.get(preset_name="phi-4").get_absolute_url()).content
    assert b"$3.50" in html


def test_admins_add_a_hugging_face_model_kaito_runs_best_effort(
    client_as: ClientAs, catalog: LoadReport
) -> None:
    admin = client_as(Role.ADMIN)
    response = admin.post(
        reverse("admin:catalog_kaitomodel_add"),
        {
            "model_id": "bigscience/bloomz-560m",
            "source": "custom",
            "lifecycle": "ga",
            "architectures": '["BloomForCausalLM"]',
            "weights_gib": "1.04",
            "token_limit": "2048",
            "hidden_size": "1024",
            "num_hidden_layers": "24",
            "num_attention_heads": "16",
            "download_at_runtime": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    listing = admin.get(reverse("catalog:model_list"), {"q": "bloomz"}).content.decode()
    assert 'data-name="bigscience/bloomz-560m"' in listing


def test_create_admin_makes_a_superuser_in_the_admin_role_and_is_idempotent() -> None:
    out = StringIO()
    call_command("create_admin", "--username", "root-admin", stdout=out)
    assert "password:" in out.getvalue()
    password = out.getvalue().rsplit("password:", 1)[1].strip()
    user = get_user_model().objects.get(username="root-admin")
    assert user.is_superuser and user.is_staff and user.check_password(password)
    assert list(user.groups.values_list("name", flat=True)) == ["admin"]
    again = StringIO()
    call_command("create_admin", "--username", "root-admin", stdout=again)
    user.refresh_from_db()
    assert user.check_password(password)  # unchanged
    assert "existing password kept" in again.getvalue()
