"""Login rate limiting: after too many failed sign-ins for one username or from one client
address within a window, further attempts are refused (HTTP 429) until the window ends.

Counters live in the Django cache (Redis, or files under var/), which every web process shares.
A successful sign-in clears its username's counter; the address counter runs out on its own, so
one attacker cannot reset it by also knowing one password.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

PREFIX = "login-failures"


@dataclass(frozen=True)
class Refusal:
    reason: str  # "username" or "address"
    retry_after_s: int

    @property
    def message(self) -> str:
        minutes = max(1, round(self.retry_after_s / 60))
        subject = "this username" if self.reason == "username" else "your address"
        return (
            f"Too many failed sign-ins for {subject}. Try again in about {minutes} minute"
            f"{'s' if minutes != 1 else ''}, or ask an admin to reset your password."
        )


def client_address(request: HttpRequest) -> str:
    """The client's address: the peer, or with TRUSTED_PROXY_COUNT proxies in front, the entry
    the outermost trusted proxy appended to X-Forwarded-For."""
    hops = settings.TRUSTED_PROXY_COUNT
    if hops > 0:
        forwarded = [
            a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if a.strip()
        ]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return str(request.META.get("REMOTE_ADDR") or "unknown")


def _keys(username: str, address: str) -> dict[str, str]:
    name = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    return {
        "username": f"{PREFIX}:user:{name}",
        "address": f"{PREFIX}:ip:{hashlib.sha256(address.encode()).hexdigest()[:32]}",
    }


def _limits() -> dict[str, int]:
    return {
        "username": settings.LOGIN_MAX_FAILURES_PER_USERNAME,
        "address": settings.LOGIN_MAX_FAILURES_PER_IP,
    }


def login_refusal(*, username: str, address: str) -> Refusal | None:
    """Why a sign-in attempt is refused before its password is even checked, or None."""
    keys = _keys(username, address)
    counts = cache.get_many(list(keys.values()))
    for reason, key in keys.items():
        if int(counts.get(key) or 0) >= _limits()[reason]:
            ttl = _ttl(key)
            return Refusal(reason=reason, retry_after_s=ttl)
    return None


def _ttl(key: str) -> int:
    """Seconds until the counter at `key` runs out."""
    until = cache.get(f"{key}:until")
    if isinstance(until, float | int):
        return max(1, int(until - time.time()))
    return settings.LOGIN_FAILURE_WINDOW_SECONDS


def login_failure_record(*, username: str, address: str) -> None:
    """Count one failed sign-in against the username and the address."""
    window = settings.LOGIN_FAILURE_WINDOW_SECONDS
    for key in _keys(username, address).values():
        if cache.add(key, 0, timeout=window):
            cache.set(f"{key}:until", time.time() + window, timeout=window)
        try:
            cache.incr(key)  # atomic on Redis
        except ValueError:  # ran out between add and incr: start a new window
            cache.set(key, 1, timeout=window)
            cache.set(f"{key}:until", time.time() + window, timeout=window)
        # Backends other than Redis rewrite the value with the default timeout on incr:
        # keep the window's end.
        cache.touch(key, _ttl(key))


def login_success_record(*, username: str) -> None:
    """A successful sign-in clears the username's failures (not the address's)."""
    key = _keys(username, "")["username"]
    cache.delete_many([key, f"{key}:until"])
