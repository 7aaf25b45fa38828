from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.urls import reverse

from apps.accounts.roles import Role, role_of

# (label, url name, the first path segment that marks the item active, least role)
NAVIGATION: list[tuple[str, str, str, Role]] = [
    ("Catalog", "catalog:model_list", "catalog", Role.VIEWER),
    ("Deployments", "deployments:list", "deployments", Role.VIEWER),
    ("Clusters", "clusters:list", "clusters", Role.VIEWER),
    ("Audit log", "audit:list", "audit", Role.VIEWER),
    ("Playground", "playground:home", "playground", Role.VIEWER),
    ("Experiments", "playground:experiment_list", "experiments", Role.VIEWER),
]


def navigation(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_items": [], "user_role": None}
    role = role_of(user)
    section = request.path.strip("/").split("/", 1)[0]
    items = [
        {"label": label, "url": reverse(url_name), "active": section == prefix}
        for label, url_name, prefix, least in NAVIGATION
        if role is not None and role >= least
    ]
    return {"nav_items": items, "user_role": role.group_name if role else None}
