"""Endpoint URLs that users enter: http(s) only, and never the cloud's metadata service.

A URL is refused when it is not http(s), carries credentials (they belong in the API key field,
encrypted), or names a cloud metadata host or address (AWS/Azure IMDS 169.254.169.254, AWS's IPv6
fd00:ec2::254, Azure's WireServer 168.63.129.16, GCP's metadata.google.internal) or any
link-local address (169.254.0.0/16, fe80::/10), by literal IP or by what the host name resolves
to. Loopback and private ranges stay allowed: in-cluster services and the simulator live there.

An admin may allow the metadata and link-local addresses (Admin > Security settings, or
ALLOW_LINK_LOCAL_ENDPOINTS=1 for the whole installation). The playground checks again right before
it connects, so a name that resolves elsewhere later (DNS rebinding) is caught then too.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "168.63.129.16", "100.100.100.200")
)
LINK_LOCAL_NETWORKS = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))


class UrlRefused(ValueError):
    """The URL may not be used as an endpoint; the message says why, for the person."""


def link_local_allowed() -> bool:
    """Whether an admin allowed metadata and link-local endpoints (env or Security settings)."""
    if settings.ALLOW_LINK_LOCAL_ENDPOINTS:
        return True
    from apps.accounts.models import SecuritySettings

    return SecuritySettings.current().allow_link_local_endpoints


def _forbidden(address: IPAddress) -> str:
    """Why this address is refused, or "" if it is not."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if any(address in network for network in LINK_LOCAL_NETWORKS):
        return "a link-local address"
    return ""


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []  # unresolvable here: the request itself will fail, nothing to refuse
    found = []
    for info in infos:
        raw = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone
        try:
            found.append(ipaddress.ip_address(raw))
        except ValueError:
            continue
    return found


def endpoint_url_check(url: str, *, allow_link_local: bool | None = None) -> str:
    """Return the URL if it may be used as an endpoint, else raise `UrlRefused`."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise UrlRefused("That is not a valid URL.") from None
    if parts.scheme not in ("http", "https"):
        shown = f"{parts.scheme}://" if parts.scheme else "no scheme"
        raise UrlRefused(f"Use an http:// or https:// URL (this one has {shown}).")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise UrlRefused("The URL names no host.")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused(
            "Put credentials in the API key field (encrypted), not in the URL (stored as text)."
        )
    refusal = _refusal(host, port or (443 if parts.scheme == "https" else 80))
    if refusal is None:
        return url
    # Only now ask whether an admin allowed it (a database read), so an ordinary URL costs none.
    if allow_link_local if allow_link_local is not None else link_local_allowed():
        return url
    raise UrlRefused(refusal)


def _refusal(host: str, port: int) -> str | None:
    """Why this host may not be an endpoint (metadata or link-local), or None."""
    refusal = (
        "kaitoweb refuses {what} ({address}) as an endpoint: it would reach the cloud's "
        "instance metadata or the node itself. An admin can allow it under Admin > Security "
        "settings."
    )
    if host in METADATA_HOSTS:
        return refusal.format(what="the cloud metadata service", address=host)
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = _resolve(host, port)
    for address in addresses:
        why = _forbidden(address)
        if why:
            where = str(address) if str(address) == host else f"{host} resolves to {address}"
            return refusal.format(what=why, address=where)
    return None
