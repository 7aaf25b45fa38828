from __future__ import annotations

from collections.abc import Callable

import pytest
from django.conf import settings
from django.test import Client

from apps.accounts.roles import Role
from apps.catalog.services import LoadReport, catalog_load
from tests.factories import UserFactory


@pytest.fixture
def catalog(db: None) -> LoadReport:
    """The catalog as `manage.py load_catalog` seeds it from the shipped reference data."""
    return catalog_load(reference_dir=settings.REFERENCE_DIR)


@pytest.fixture
def client_as(db: None) -> Callable[[Role | None], Client]:
    """A logged-in client for a user of the given role (None: a user with no role)."""

    def make(role: Role | None) -> Client:
        name = role.group_name if role else "norole"
        user = UserFactory(username=f"{name}-user", role=role)
        client = Client()
        client.force_login(user)
        return client

    return make


@pytest.fixture
def viewer_client(client_as: Callable[[Role | None], Client]) -> Client:
    return client_as(Role.VIEWER)


@pytest.fixture
def operator_client(client_as: Callable[[Role | None], Client]) -> Client:
    return client_as(Role.OPERATOR)


@pytest.fixture
def admin_client_role(client_as: Callable[[Role | None], Client]) -> Client:
    return client_as(Role.ADMIN)
