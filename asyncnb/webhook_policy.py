"""Which webhook destinations the gateway agrees to call."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

# Cloud metadata endpoints answer on link-local addresses; a webhook must never reach them.
_DENIED_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})


def webhook_url_problem(url: str) -> str | None:
    """Why `url` is not an acceptable webhook destination, or None."""
    if len(url) > 2048:
        return "webhook URL is longer than 2048 characters"
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"webhook URL {url[:100]!r} is not a URL"
    if parts.scheme not in ("http", "https"):
        return "webhook URL must use http or https"
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        return "webhook URL has no host"
    if host in _DENIED_HOSTS:
        return f"webhook host {host!r} is denied (cloud metadata)"
    address = _as_address(host)
    if address is None:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_link_local or address.is_multicast or address.is_unspecified:
        return f"webhook address {host} is link-local, multicast or unspecified and is denied"
    return None


def _as_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP a host names, including the shorthand IPv4 forms resolvers accept (0xa9fea9fe)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if all(c in "0123456789abcdefx." for c in host) and any(c.isdigit() for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None
