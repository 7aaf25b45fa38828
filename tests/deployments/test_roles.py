"""Viewers see; operators launch, adopt, chat and tear down. Checked on every view."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client

from apps.accounts.roles import Role
from apps.clusters.models import Cluster
from apps.deployments.models import Deployment
from tests.deployments.conftest import launch_request

pytestmark = pytest.mark.django_db

READS = [
    ("get", "/deployments/"),
    ("get", "/deployments/{pk}/"),
    ("get", "/clusters/"),
    ("get", "/clusters/{name}/"),
    ("get", "/audit/"),
]
ACTIONS = [
    ("get", "/deployments/new/"),
    ("post", "/deployments/new/"),
    ("get", "/deployments/new/manifest/"),
    ("post", "/deployments/new/manifest/"),
    ("get", "/deployments/new/custom/"),
    ("post", "/deployments/new/custom/"),
    ("get", "/deployments/{pk}/teardown/"),
    ("post", "/deployments/{pk}/teardown/"),
    ("post", "/deployments/{pk}/take-over/"),
    ("post", "/deployments/{pk}/chat/"),
    ("get", "/clusters/new/"),
    ("post", "/clusters/new/"),
    ("post", "/clusters/new/simulator/"),
    ("get", "/clusters/{name}/edit/"),
    ("post", "/clusters/{name}/edit/"),
    ("post", "/clusters/{name}/check/"),
    ("post", "/clusters/{name}/scan/"),
    ("post", "/clusters/{name}/delete/"),
]


@pytest.fixture
def deployment(cluster: Cluster, catalog: object) -> Deployment:
    return launch_request(cluster)


def call(client: Client, method: str, url: str, deployment: Deployment) -> int:
    url = url.format(pk=deployment.pk, name=deployment.cluster.name)
    return int(getattr(client, method)(url).status_code)


@pytest.mark.parametrize(("method", "url"), READS + ACTIONS)
def test_anonymous_users_are_sent_to_sign_in(method: str, url: str, deployment: Deployment) -> None:
    response = getattr(Client(), method)(url.format(pk=deployment.pk, name=deployment.cluster.name))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


@pytest.mark.parametrize(("method", "url"), READS + ACTIONS)
def test_users_without_a_role_are_refused(
    method: str,
    url: str,
    deployment: Deployment,
    client_as: Callable[[Role | None], Client],
) -> None:
    assert call(client_as(None), method, url, deployment) == 403


@pytest.mark.parametrize(("method", "url"), READS)
def test_viewers_see_every_page(
    method: str,
    url: str,
    deployment: Deployment,
    client_as: Callable[[Role | None], Client],
) -> None:
    assert call(client_as(Role.VIEWER), method, url, deployment) == 200


@pytest.mark.parametrize(("method", "url"), ACTIONS)
def test_viewers_may_not_act(
    method: str,
    url: str,
    deployment: Deployment,
    client_as: Callable[[Role | None], Client],
) -> None:
    assert call(client_as(Role.VIEWER), method, url, deployment) == 403


@pytest.mark.parametrize(("method", "url"), ACTIONS)
def test_operators_may_act(
    method: str,
    url: str,
    deployment: Deployment,
    client_as: Callable[[Role | None], Client],
) -> None:
    assert call(client_as(Role.OPERATOR), method, url, deployment) not in (401, 403, 404, 500)


def test_viewers_are_not_offered_the_buttons_they_may_not_use(
    deployment: Deployment, client_as: Callable[[Role | None], Client]
) -> None:
    viewer = client_as(Role.VIEWER)
    assert b'id="launch-preset"' not in viewer.get("/deployments/").content
    assert (
        b'id="check-connection"' not in viewer.get(f"/clusters/{deployment.cluster.name}/").content
    )
    operator = client_as(Role.OPERATOR)
    assert b'id="launch-preset"' in operator.get("/deployments/").content
    assert b'id="teardown"' in operator.get(deployment.get_absolute_url()).content
