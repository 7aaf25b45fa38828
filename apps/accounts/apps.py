from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AccountsConfig(AppConfig):
    name = "apps.accounts"
    label = "accounts"
    verbose_name = "Accounts and roles"

    def ready(self) -> None:
        # Permissions exist only after every app has migrated, so the role groups get theirs
        # then, on each migrate (new models of later apps included).
        post_migrate.connect(_sync_role_permissions, dispatch_uid="kaitoweb-role-permissions")


def _sync_role_permissions(sender: AppConfig, **kwargs: Any) -> None:
    from apps.accounts.services import role_permissions_sync

    role_permissions_sync(using=kwargs.get("using", "default"))
