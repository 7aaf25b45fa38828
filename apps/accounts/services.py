from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser, Group, Permission
from django.db import transaction

from apps.accounts.roles import Role

# Apps whose models the admin role edits in Django admin; viewers and operators may view them.
ADMINISTERED_APPS = ("accounts", "catalog", "clusters", "deployments", "audit", "playground")


def role_permissions_sync(*, using: str = "default") -> None:
    """Give each role group the Django model permissions of its role (idempotent)."""
    groups = {
        g.name: g for g in Group.objects.using(using).filter(name__in=[r.group_name for r in Role])
    }
    if len(groups) < len(Role):
        return  # the groups' migration has not run yet
    perms = Permission.objects.using(using).filter(content_type__app_label__in=ADMINISTERED_APPS)
    view = [p for p in perms if p.codename.startswith("view_")]
    user_admin = Permission.objects.using(using).filter(
        content_type__app_label="auth", content_type__model__in=["user", "group"]
    )
    groups[Role.VIEWER.group_name].permissions.set(view)
    groups[Role.OPERATOR.group_name].permissions.set(view)
    groups[Role.ADMIN.group_name].permissions.set([*perms, *user_admin])


def role_groups_ensure() -> dict[str, Group]:
    """The role groups by name, made (with their permissions) if someone deleted them."""
    groups = {r.group_name: Group.objects.get_or_create(name=r.group_name)[0] for r in Role}
    if any(not g.permissions.exists() for g in groups.values()):
        role_permissions_sync()
    return groups


@transaction.atomic
def user_grant_role(*, user: AbstractUser, role: Role) -> None:
    """Put the user in exactly one role group; admins also get Django admin access."""
    groups = role_groups_ensure()
    user.groups.remove(*groups.values())
    user.groups.add(groups[role.group_name])
    user.is_staff = role is Role.ADMIN
    user.save(update_fields=["is_staff"])


@transaction.atomic
def admin_create(
    *, username: str, email: str = "", password: str | None = None
) -> tuple[AbstractUser, str | None]:
    """Create (or find) the first admin. Returns the user and the generated password, if any.

    An existing user keeps its password unless one is given.
    """
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=username, defaults={"email": email})
    generated = None
    if password is None and created:
        generated = password = secrets.token_urlsafe(12)
    if password is not None:
        user.set_password(password)
    user.is_superuser = True
    user.is_active = True
    user.save()
    user_grant_role(user=user, role=Role.ADMIN)
    return user, generated
