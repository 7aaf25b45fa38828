"""The three roles, kept as Django groups: viewer reads, operator acts, admin administers.

Roles are ordered: an operator may do all a viewer may, an admin all an operator may. A user in
no role group sees nothing but the sign-in page and a 403 that says whom to ask.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

from django.core.exceptions import PermissionDenied

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
    from django.http import HttpRequest, HttpResponse


class Role(enum.IntEnum):
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def group_name(self) -> str:
        return self.name.lower()

    @property
    def label(self) -> str:
        return self.name.capitalize()


def role_of(user: AbstractBaseUser | AnonymousUser) -> Role | None:
    """The highest role the user holds; superusers are admins."""
    if not user.is_authenticated or not user.is_active:
        return None
    if getattr(user, "is_superuser", False):
        return Role.ADMIN
    cached: Role | bool | None = getattr(user, "_kaitoweb_role", False)
    if cached is not False:
        return cached  # type: ignore[return-value]
    names = set(user.groups.values_list("name", flat=True))  # type: ignore[attr-defined]
    role = max((r for r in Role if r.group_name in names), default=None)
    setattr(user, "_kaitoweb_role", role)  # noqa: B010 (a per-request cache on the user)
    return role


def has_role(user: AbstractBaseUser | AnonymousUser, needed: Role) -> bool:
    role = role_of(user)
    return role is not None and role >= needed


ViewFunc = TypeVar("ViewFunc", bound=Callable[..., "HttpResponse"])


def role_required(needed: Role) -> Callable[[ViewFunc], ViewFunc]:
    """Refuse (403) a signed-in user below `needed`; sign-in itself is enforced by middleware."""

    def decorator(view: ViewFunc) -> ViewFunc:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not has_role(request.user, needed):
                raise PermissionDenied(f"This page needs the {needed.label.lower()} role.")
            return view(request, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator
