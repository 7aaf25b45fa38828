from __future__ import annotations

from typing import TYPE_CHECKING, cast

from apps.audit.models import AuditEntry

if TYPE_CHECKING:
    from django.contrib.admin.models import LogEntry
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User

SYSTEM_ACTOR = "kaitoweb"  # work done by a Celery task on nobody's direct request


def audit_record(
    *,
    actor: AbstractBaseUser | AnonymousUser | None,
    action: str,
    outcome: str,
    target: str = "",
    cluster_name: str = "",
    detail: str = "",
) -> AuditEntry:
    """Append one line to the audit log (never updated, never deleted by the app)."""
    user = acting_user(actor)
    return AuditEntry.objects.create(
        actor=user,
        actor_name=user.get_username() if user is not None else SYSTEM_ACTOR,
        action=action,
        outcome=outcome,
        target=target[:300],
        cluster_name=cluster_name[:60],
        detail=detail,
    )


def acting_user(actor: AbstractBaseUser | AnonymousUser | None) -> User | None:
    """The signed-in user behind an action, or None (a task, or nobody signed in)."""
    if actor is None or not actor.is_authenticated:
        return None
    return cast("User", actor)


_ADMIN_VERBS = {1: "add", 2: "change", 3: "delete"}


def audit_admin_change(*, entry: LogEntry) -> AuditEntry:
    """The audit line for one change made in Django admin (from its own LogEntry)."""
    model = entry.content_type.model if entry.content_type else "object"
    verb = _ADMIN_VERBS.get(entry.action_flag, "change")
    return audit_record(
        actor=entry.user,
        action=f"admin.{model}.{verb}",
        outcome=AuditEntry.Outcome.OK,
        target=f"{model} {entry.object_repr}",
        detail=entry.get_change_message(),
    )
