"""Bearer-token authentication and an RBAC-like authorizer with two users: admin and viewer."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

ADMIN_USER = "kaitosim-admin"
VIEWER_USER = "kaitosim-viewer"

_READ_VERBS = frozenset({"get", "list", "watch"})


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...]
    is_admin: bool


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


class TokenAuthority:
    """Maps bearer tokens to users and decides what each user may do.

    The admin is bound to ``cluster-admin`` (group ``system:masters``); the viewer has the
    built-in ``view`` ClusterRole: read access to everything except Secrets, no proxying.
    """

    def __init__(self, admin_token: str | None = None, viewer_token: str | None = None) -> None:
        self.admin_token = admin_token or secrets.token_hex(24)
        self.viewer_token = viewer_token or secrets.token_hex(24)
        self._users = {
            self.admin_token: User(ADMIN_USER, ("system:masters", "system:authenticated"), True),
            self.viewer_token: User(
                VIEWER_USER, ("kaitosim:viewers", "system:authenticated"), False
            ),
        }

    def authenticate(self, authorization_header: str | None) -> User | None:
        if not authorization_header:
            return None
        scheme, _, token = authorization_header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self._users.get(token.strip())

    def authorize(
        self, user: User, verb: str, group: str, resource: str, subresource: str = ""
    ) -> Decision:
        if user.is_admin:
            return Decision(
                True,
                'RBAC: allowed by ClusterRoleBinding "cluster-admin" of ClusterRole '
                '"cluster-admin" to Group "system:masters"',
            )
        if (
            verb in _READ_VERBS
            and resource != "secrets"
            and subresource in ("", "status", "log", "scale")
        ):
            return Decision(
                True,
                'RBAC: allowed by ClusterRoleBinding "kaitosim-viewers" of ClusterRole "view" '
                f'to User "{user.name}"',
            )
        if resource == "selfsubjectaccessreviews" and verb == "create":
            return Decision(True, 'RBAC: allowed by ClusterRoleBinding "system:basic-user"')
        return Decision(False, "")
