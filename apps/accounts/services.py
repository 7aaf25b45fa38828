from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser, Group
from django.db import transaction

from apps.accounts.roles import Role


@transaction.atomic
def user_grant_role(*, user: AbstractUser, role: Role) -> None:
    """Put the user in exactly one role group; admins also get Django admin access."""
    groups = {g.name: g for g in Group.objects.filter(name__in=[r.group_name for r in Role])}
    missing = [r.group_name for r in Role if r.group_name not in groups]
    if missing:
        raise RuntimeError(f"role groups missing ({', '.join(missing)}): run manage.py migrate")
    user.groups.remove(*groups.values())
    user.groups.add(groups[role.group_name])
    user.is_staff = role is Role.ADMIN
    user.save(update_fields=["is_staff"])


@transaction.atomic
def admin_create(*, username: str, email: str = "", password: str | None = None) -> tuple[
    AbstractUser, str | None
]:
    """Create (or find) the first admin. Returns the user and the generated password, if any.

    An existing user keeps its password unless one is given.
    """
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(
        username=username, defaults={"email": email}
    )
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
