"""Every URL the app serves, walked as anonymous, viewer, operator and admin, by GET and POST.

The table below classifies every route in the resolver: who may GET it, who may POST to it, and
whether a POST changes state (those are audited: tests/security/test_audit_trail.py). A route
that is not in the table fails the walk, so a new URL cannot be added without deciding who may
use it. Each request runs in a transaction that is rolled back, so a POST that deletes or
changes something does not disturb the rest of the walk.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from apps.accounts.models import SecuritySettings
from apps.accounts.roles import Role
from apps.audit.services import audit_record
from apps.catalog.models import FoundryModel, KaitoModel
from apps.clusters.models import Cluster
from apps.deployments.models import Deployment
from apps.playground.experiment_views import token_sha256
from apps.playground.experiments import experiment_create
from apps.playground.models import ABRun, ApiToken, Experiment, Target
from apps.playground.prompts import Prompt, PromptSet
from tests.deployments.conftest import launch_request
from tests.playground.factories import foundry_target, kaito_target, queued_run

pytestmark = pytest.mark.django_db

# Who may use a route by one method.
PUBLIC = "public"  # anyone, signed in or not (login_not_required)
TOKEN = "token"  # the JSON API: a Bearer token of an operator; no session
VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
ADMIN_SITE = "admin-site"  # Django admin: staff (the admin role) with the model permission
NOT_ALLOWED = "405"  # the view does not take this method


@dataclass(frozen=True)
class Rule:
    get: str
    post: str
    changes: bool = False  # a POST that succeeds changes state: it must be audited
    # What the admin role gets instead of success by GET and by POST (Django admin's 403 for a
    # read-only model, 404 for an unknown admin page).
    admin_get: int | None = None
    admin_post: int | None = None
    login_is_ok: bool = False  # success is a redirect to the sign-in page (sign out)
    # Exact answers where the generic ones do not fit: {"GET viewer": "302 /admin/"}.
    exact: tuple[tuple[str, str], ...] = ()


R = Rule
ADMIN_MODEL = R(ADMIN_SITE, ADMIN_SITE, changes=True)
APP_URLS: dict[str, Rule] = {
    "": R(VIEWER, VIEWER),  # redirects to the catalog, whatever the method
    "accounts/login/": R(PUBLIC, PUBLIC, changes=True),
    # Any signed-in user may sign out (even one with no role: that is not a role check).
    "accounts/logout/": R(NOT_ALLOWED, VIEWER, changes=True, login_is_ok=True),
    "accounts/password_change/": R(VIEWER, VIEWER, changes=True),
    "accounts/password_change/done/": R(VIEWER, NOT_ALLOWED),
    "catalog/": R(VIEWER, NOT_ALLOWED),
    "catalog/kaito/<path:model_id>/": R(VIEWER, NOT_ALLOWED),
    "catalog/foundry/<str:name>/": R(VIEWER, NOT_ALLOWED),
    "clusters/": R(VIEWER, NOT_ALLOWED),
    "clusters/new/": R(OPERATOR, OPERATOR, changes=True),
    "clusters/new/simulator/": R(NOT_ALLOWED, OPERATOR, changes=True),
    "clusters/<slug:name>/": R(VIEWER, NOT_ALLOWED),
    "clusters/<slug:name>/check/": R(NOT_ALLOWED, OPERATOR, changes=True),
    "clusters/<slug:name>/scan/": R(NOT_ALLOWED, OPERATOR, changes=True),
    "clusters/<slug:name>/edit/": R(OPERATOR, OPERATOR, changes=True),
    "clusters/<slug:name>/delete/": R(NOT_ALLOWED, OPERATOR, changes=True),
    "deployments/": R(VIEWER, NOT_ALLOWED),
    "deployments/new/": R(OPERATOR, OPERATOR, changes=True),
    "deployments/new/manifest/": R(OPERATOR, OPERATOR, changes=True),
    "deployments/new/custom/": R(OPERATOR, OPERATOR, changes=True),
    "deployments/<int:pk>/": R(VIEWER, NOT_ALLOWED),
    "deployments/<int:pk>/teardown/": R(OPERATOR, OPERATOR, changes=True),
    "deployments/<int:pk>/take-over/": R(NOT_ALLOWED, OPERATOR, changes=True),
    # Asks the model one question through the cluster: audited, but changes nothing.
    "deployments/<int:pk>/chat/": R(NOT_ALLOWED, OPERATOR),
    "audit/": R(VIEWER, NOT_ALLOWED),
    "playground/": R(VIEWER, NOT_ALLOWED),
    "playground/runs/": R(VIEWER, NOT_ALLOWED),
    "playground/runs/new/": R(NOT_ALLOWED, OPERATOR, changes=True),
    "playground/runs/<int:pk>/": R(VIEWER, NOT_ALLOWED),
    "playground/runs/<int:pk>/again/": R(NOT_ALLOWED, OPERATOR, changes=True),
    "playground/runs/<int:pk>/note/": R(NOT_ALLOWED, OPERATOR, changes=True),
    "playground/experiments/": R(VIEWER, OPERATOR, changes=True),
    "playground/experiments/<int:pk>/": R(VIEWER, NOT_ALLOWED),
    "playground/experiments/<int:pk>/cancel/": R(NOT_ALLOWED, OPERATOR, changes=True),
    "playground/experiments/<int:pk>/vote/": R(NOT_ALLOWED, OPERATOR, changes=True),
    "playground/experiments/<int:pk>/<str:what>.<str:fmt>": R(VIEWER, NOT_ALLOWED),
    "playground/targets/": R(VIEWER, NOT_ALLOWED),
    "playground/targets/new/": R(OPERATOR, OPERATOR, changes=True),
    "playground/targets/<int:pk>/": R(OPERATOR, OPERATOR, changes=True),
    "playground/targets/<int:pk>/delete/": R(NOT_ALLOWED, OPERATOR, changes=True),
    "api/experiments/": R(NOT_ALLOWED, TOKEN, changes=True),
    "api/experiments/<int:pk>/": R(TOKEN, NOT_ALLOWED),
    # Probes and the scraper (helper C's kaitoweb/observability): no login. /metrics answers
    # loopback (the test client's address) when no METRICS_TOKEN is set.
    "healthz": R(PUBLIC, NOT_ALLOWED),
    "readyz": R(PUBLIC, NOT_ALLOWED),
    "metrics": R(PUBLIC, NOT_ALLOWED),
    # Django admin. Its sign-in is ours (rate limited): admin/login/ redirects there.
    "admin/login/": R(PUBLIC, PUBLIC, login_is_ok=True),
    "admin/": R(ADMIN_SITE, ADMIN_SITE),  # Django admin's pages answer a POST like a GET
    # Django admin sends a non-staff user asking to sign out to its index (so: to sign in).
    "admin/logout/": R(
        ADMIN_SITE,
        ADMIN_SITE,
        changes=True,
        admin_get=405,
        login_is_ok=True,
        exact=tuple(
            (f"{m} {r}", "302 /admin/") for m in ("GET", "POST") for r in (VIEWER, OPERATOR)
        ),
    ),
    # Redirects to the app's own password change page (accounts/password_change/, audited).
    "admin/password_change/": R(VIEWER, VIEWER),
    "admin/password_change/done/": R(ADMIN_SITE, ADMIN_SITE, admin_post=405),
    "admin/autocomplete/": R(ADMIN_SITE, ADMIN_SITE, admin_post=405),
    "admin/jsi18n/": R(ADMIN_SITE, ADMIN_SITE, admin_post=405),
    "admin/r/<path:content_type_id>/<path:object_id>/": R(ADMIN_SITE, ADMIN_SITE),
    "admin/^(?P<app_label>auth|accounts|catalog|audit|clusters|deployments|playground)/$": R(
        ADMIN_SITE, ADMIN_SITE
    ),
    "admin/(?P<url>.*)$": R(ADMIN_SITE, ADMIN_SITE, admin_get=404, admin_post=404),
    "admin/auth/user/<id>/password/": R(ADMIN_SITE, ADMIN_SITE, changes=True),
}
# Each model registered in Django admin: changelist, add, history, delete, change, and the
# redirect from the bare object URL. Read-only models refuse add and delete to admins too.
READ_ONLY = R(ADMIN_SITE, ADMIN_SITE, admin_get=403, admin_post=403)
ADMIN_VIEWS = {
    "": R(ADMIN_SITE, ADMIN_SITE),  # changelist (POST: bulk actions)
    "add/": ADMIN_MODEL,
    "<path:object_id>/history/": R(ADMIN_SITE, ADMIN_SITE),
    "<path:object_id>/delete/": ADMIN_MODEL,
    "<path:object_id>/change/": ADMIN_MODEL,
    "<path:object_id>/": R(ADMIN_SITE, ADMIN_SITE),  # redirects to change/
}
# Each model registered in Django admin, with the views it refuses even to admins.
ADMIN_MODELS: dict[str, dict[str, Rule]] = {
    "auth/group": {},
    "auth/user": {},
    # One row, never deleted; made by the first save (the walk has it already).
    "accounts/securitysettings": {"add/": READ_ONLY, "<path:object_id>/delete/": READ_ONLY},
    "catalog/modelfamily": {},
    "catalog/kaitomodel": {},
    "catalog/foundrymodel": {},
    "catalog/gpuvmsize": {},
    # Append-only: admins read entries, nobody adds, changes or deletes one.
    "audit/auditentry": {
        "add/": READ_ONLY,
        "<path:object_id>/delete/": READ_ONLY,
        "<path:object_id>/change/": R(ADMIN_SITE, ADMIN_SITE, admin_post=403),
    },
    "clusters/cluster": {},
    "deployments/deployment": {"add/": READ_ONLY},  # launched in the app (and audited there)
    "playground/target": {},
    "playground/abrun": {},
    "playground/experiment": {},
    "playground/apitoken": {},
}


def classified() -> dict[str, Rule]:
    table = dict(APP_URLS)
    for model, refused in ADMIN_MODELS.items():
        for suffix, rule in ADMIN_VIEWS.items():
            table[f"admin/{model}/{suffix}"] = refused.get(suffix, rule)
    return table


TABLE = classified()


def routes(patterns: list[Any] | None = None, prefix: str = "") -> Iterator[str]:
    """Every route in the resolver, as its pattern text joined with its includes' prefixes."""
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(entry, URLResolver):
            yield from routes(entry.url_patterns, prefix + str(entry.pattern))
        else:
            assert isinstance(entry, URLPattern)
            yield prefix + str(entry.pattern)


def test_every_route_is_classified() -> None:
    served = set(routes())
    assert served - set(TABLE) == set(), "classify these routes in tests/security/test_url_walk"
    assert set(TABLE) - served == set(), "these classified routes are no longer served"


# ----------------------------------------------------------------------------- the objects
@dataclass
class World:
    cluster: Cluster
    deployment: Deployment
    run: ABRun
    experiment: Experiment
    target: Target
    users: dict[str, Any]
    tokens: dict[str, str]


@pytest.fixture
def world(catalog: object, cluster: Cluster, client_as: Callable[..., Client]) -> World:
    deployment = launch_request(cluster, name=f"walk-{uuid.uuid4().hex[:6]}")
    kaito = kaito_target("http://127.0.0.1:9/v1", name="walk-kaito")
    foundry = foundry_target("http://127.0.0.1:9", "walk-key-123456", name="walk-foundry")
    run = queued_run([kaito, foundry])
    experiment = experiment_create(
        user=None,
        name="walk",
        targets=[kaito, foundry],
        prompt_set=PromptSet(name="walk", prompts=(Prompt(prompt="Hello"),)),
        enqueue=False,
    )
    SecuritySettings.objects.create(pk=1)
    Group.objects.get_or_create(name="walkers")
    audit_record(actor=None, action="walk", outcome="ok")
    from django.contrib.auth import get_user_model

    users = {}
    for role in (Role.VIEWER, Role.OPERATOR, Role.ADMIN):
        client_as(role)  # makes "<role>-user"
        users[role.group_name] = get_user_model().objects.get(username=f"{role.group_name}-user")
    tokens = {}
    for name, user in users.items():
        token = f"walk-{name}-{uuid.uuid4().hex}"
        ApiToken.objects.create(
            user=user, name=name, token_sha256=token_sha256(token), prefix=token[:8]
        )
        tokens[name] = token
    return World(cluster, deployment, run, experiment, kaito, users, tokens)


def admin_object_id(model: str) -> str:
    app_label, model_name = model.split("/")
    model_class = ContentType.objects.get_by_natural_key(app_label, model_name).model_class()
    assert model_class is not None
    instance = model_class._default_manager.order_by("pk").first()
    assert instance is not None, f"the walk needs one {model}"
    return str(instance.pk)


def concrete(route: str, w: World) -> str:
    """The route with its parameters filled from the walk's objects."""
    if route == "admin/autocomplete/":
        return "/admin/autocomplete/?app_label=playground&model_name=target&field_name=kaito_model"
    if route.startswith("admin/^(?P<app_label>"):
        return "/admin/catalog/"
    if route == "admin/(?P<url>.*)$":
        return "/admin/no-such-page/"
    if route == "admin/r/<path:content_type_id>/<path:object_id>/":
        ct = ContentType.objects.get_for_model(Cluster)
        return f"/admin/r/{ct.pk}/{w.cluster.pk}/"
    values: dict[str, str] = {}
    match = re.match(r"admin/(\w+/\w+)/", route)
    if match and "<path:object_id>" in route:
        values["object_id"] = admin_object_id(match.group(1))
    if route.startswith("admin/auth/user/<id>"):
        values["id"] = str(w.users["viewer"].pk)
    if route.startswith("catalog/kaito/"):
        values["model_id"] = KaitoModel.objects.order_by("pk").first().model_id  # type: ignore[union-attr]
    if route.startswith("catalog/foundry/"):
        values["name"] = FoundryModel.objects.get(name="Phi-4").name
    if route.startswith("clusters/<slug:name>"):
        values["name"] = w.cluster.name
    pk = {
        "deployments/": w.deployment.pk,
        "playground/runs/": w.run.pk,
        "playground/experiments/": w.experiment.pk,
        "api/experiments/": w.experiment.pk,
        "playground/targets/": w.target.pk,
    }
    for prefix, value in pk.items():
        if route.startswith(prefix):
            values["pk"] = str(value)
    values.update(what="samples", fmt="csv")

    def fill(m: re.Match[str]) -> str:
        return values[m.group(1)]

    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", fill, route)


# ----------------------------------------------------------------------------- the walk
LOGIN_PAGES = ("/accounts/login/", "/admin/login/")
ROLES = ["anonymous", VIEWER, OPERATOR, ADMIN]
RANK = {VIEWER: 1, OPERATOR: 2, ADMIN: 3}


def expectation(method: str, role: str, rule: Rule) -> str:
    """What `role` must get: ok, login, 403, 401, 405, another status, or an exact answer."""
    level = rule.get if method == "GET" else rule.post
    exact = dict(rule.exact).get(f"{method} {role}")
    if exact:
        return exact
    if level == NOT_ALLOWED:
        public = rule.get in (PUBLIC, TOKEN) or rule.post in (PUBLIC, TOKEN)
        return "405" if role != "anonymous" or public else "login"
    if level == PUBLIC:
        return "ok"
    if level == TOKEN:
        return "401"  # a session is not enough; tokens are walked separately
    if role == "anonymous":
        return "login"
    if level == ADMIN_SITE:
        if role != ADMIN:
            return "login"  # Django admin sends non-staff to its sign-in
        status = rule.admin_get if method == "GET" else rule.admin_post
        return str(status) if status else "ok"
    return "ok" if RANK[role] >= RANK[level] else "403"


def outcome(response: Any, rule: Rule, want: str) -> str:
    status = response.status_code
    location = response.get("Location", "")
    if " " in want:  # an exact answer
        return f"{status} {location.split('?')[0]}"
    if status in (301, 302) and location.split("?")[0] in LOGIN_PAGES:
        return "ok" if rule.login_is_ok and want == "ok" else "login"
    if status in (200, 201, 204, 286, 301, 302, 400, 409):
        return "ok"
    return str(status)


def body(response: Any) -> None:
    """Read a streamed body to its end (an export, a chat reply), as a browser would."""
    if getattr(response, "streaming", False):
        b"".join(response.streaming_content)


def test_every_url_as_every_role(world: World, client_as: Callable[..., Client]) -> None:
    clients: dict[str, Client] = {"anonymous": Client()}
    for member in (Role.VIEWER, Role.OPERATOR, Role.ADMIN):
        client = Client()
        client.force_login(world.users[member.group_name])
        clients[member.group_name] = client
    cookies = {name: SimpleCookie(c.cookies.output(header="")) for name, c in clients.items()}

    mismatches = []
    requests = 0
    for route, rule in sorted(TABLE.items()):
        url = concrete(route, world)
        for method in ("GET", "POST"):
            for role in ROLES:
                client = clients[role]
                client.cookies = SimpleCookie(cookies[role].output(header=""))
                with transaction.atomic():
                    response = client.get(url) if method == "GET" else client.post(url, {})
                    body(response)
                    transaction.set_rollback(True)
                requests += 1
                want = expectation(method, role, rule)
                got = outcome(response, rule, want)
                if want != got:
                    where = response.get("Location", "")
                    mismatches.append(
                        f"{method} {url} as {role}: want {want}, got {response.status_code} {where}"
                    )
    assert mismatches == [], "\n".join(mismatches)
    assert requests == len(TABLE) * 2 * len(ROLES)


def test_the_api_takes_tokens_of_operators_only(world: World) -> None:
    url = f"/api/experiments/{world.experiment.pk}/"
    for role, status in [(VIEWER, 403), (OPERATOR, 200), (ADMIN, 200)]:
        response = Client().get(url, HTTP_AUTHORIZATION=f"Bearer {world.tokens[role]}")
        assert response.status_code == status, role
    assert Client().get(url, HTTP_AUTHORIZATION="Bearer nope").status_code == 401
    viewer = Client().post(
        "/api/experiments/",
        "{}",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {world.tokens[VIEWER]}",
    )
    assert viewer.status_code == 403


def test_metrics_refuse_other_hosts_without_a_token(db: None) -> None:
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 403
