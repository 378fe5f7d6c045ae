"""Which webhook destinations the gateway agrees to call.

Link-local, multicast and unspecified addresses and the cloud metadata host names are always
denied (a webhook must never reach an instance's metadata service). A gateway that listens on
more than loopback (`allow_internal=False`) also denies the internal network: loopback,
private (RFC 1918, ULA), shared (CGNAT) and reserved addresses, in every spelling (IPv4 in
IPv6: mapped, compatible, NAT64, 6to4, Teredo; shorthand IPv4 like `127.1` or `2130706433`),
and `localhost` names; an entry of `--webhook-allow` opens what it names. `--webhook-deny`
adds hosts or networks; `--webhook-allow`, when given, is the only set of destinations allowed.
Literal addresses are checked on submit, and every address a host name resolves to is checked
again right before each delivery (`resolved_problem`), so DNS cannot smuggle a denied address
in.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_DENIED_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})
# metadata services that are not on link-local addresses: AWS's IPv6 IMDS, Alibaba Cloud,
# Oracle Cloud's legacy endpoint, Azure's wire server
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("fd00:ec2::254", "100.100.100.200", "192.0.0.192", "168.63.129.16")
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT, not `is_private`
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries, in the forms that reach it: mapped, 6to4,
    Teredo, NAT64 and (deprecated) IPv4-compatible."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in network for network in _NAT64) or (
        int(address) >> 32 == 0 and int(address) > 0xFFFF
    ):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_internal(address: Address) -> bool:
    """Loopback, private, shared or reserved: a destination inside the gateway's own network."""
    return (
        address.is_loopback
        or address.is_private
        or address.is_reserved
        or address.is_link_local
        or address.is_unspecified
        or address in _SHARED
    )


def _is_local_name(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost") or host == "localhost.localdomain"


def host_of(url: str) -> str:
    """The host a delivery would connect to: IDNA-normalised the way httpx does it, so a
    denied name cannot pass respelled with Unicode full stops or other compatibility forms."""
    host = urlsplit(url).hostname or ""
    if not host.isascii():
        host = str(httpx.URL(url).host)
    return host.rstrip(".").lower()


def as_address(host: str) -> Address | None:
    """The IP a host names, including the shorthand IPv4 forms resolvers accept (0xa9fea9fe)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
        if all(c in "0123456789abcdefx." for c in host) and any(c.isdigit() for c in host):
            try:
                address = ipaddress.IPv4Address(socket.inet_aton(host))
            except OSError:
                return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _forms(address: Address) -> list[Address]:
    """The address, and the IPv4 one it carries, if any: each must pass."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            return [address, inner]
    return [address]


def _split(entries: Iterable[str]) -> tuple[tuple[Network, ...], tuple[str, ...]]:
    networks: list[Network] = []
    names: list[str] = []
    for entry in entries:
        entry = entry.strip().lower()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.append(_idna(entry.rstrip(".")))
    return tuple(networks), tuple(names)


def _idna(name: str) -> str:
    """A policy entry in the form hosts are compared in (`.bücher.example` → punycode)."""
    if name.isascii():
        return name
    dot = "." if name.startswith(".") else ""
    try:
        return dot + host_of(f"http://{name.lstrip('.')}/")
    except httpx.InvalidURL:
        return name


def _name_matches(host: str, names: tuple[str, ...]) -> bool:
    return any(host == n or (n.startswith(".") and host.endswith(n)) for n in names)


@dataclass(frozen=True)
class WebhookPolicy:
    """Entries are IPs, networks (`10.0.0.0/8`), host names, or `.domain` suffixes."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    # a gateway on loopback only (a notebook's) may call receivers on the same machine
    allow_internal: bool = True
    _allow: tuple[tuple[Network, ...], tuple[str, ...]] = field(init=False, repr=False)
    _deny: tuple[tuple[Network, ...], tuple[str, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_allow", _split(self.allow))
        object.__setattr__(self, "_deny", _split(self.deny))

    def problem(self, url: str) -> str | None:
        """Why `url` is not an acceptable destination (without resolving names), or None."""
        if len(url) > 2048:
            return "webhook URL is longer than 2048 characters"
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises on a malformed port
            host = host_of(url)
        except (ValueError, httpx.InvalidURL):
            return f"webhook URL {url[:100]!r} is not a URL"
        if parts.scheme not in ("http", "https"):
            return "webhook URL must use http or https"
        if not host:
            return "webhook URL has no host"
        if host in _DENIED_HOSTS:
            return f"webhook host {host!r} is denied (cloud metadata)"
        address = as_address(host)
        if address is not None:
            return self.address_problem(address, host)
        if (
            not self.allow_internal
            and _is_local_name(host)
            and not _name_matches(host, self._allow[1])
        ):
            return f"webhook host {host!r} is this machine, and is denied on a shared gateway"
        if _name_matches(host, self._deny[1]):
            return f"webhook host {host!r} is denied by the gateway's policy"
        if (self.allow) and not _name_matches(host, self._allow[1]):
            return f"webhook host {host!r} is not in the gateway's allow list"
        return None

    def address_problem(self, address: Address, host: str, named: bool = False) -> str | None:
        allowed_by_name = named and _name_matches(host, self._allow[1])
        for form in _forms(address):
            problem = self._form_problem(form, host, allowed_by_name)
            if problem:
                return problem
        return None

    def _form_problem(self, address: Address, host: str, allowed_by_name: bool) -> str | None:
        if address.is_link_local or address.is_multicast or address.is_unspecified:
            return f"webhook address {host} is link-local, multicast or unspecified and is denied"
        if address in _METADATA_ADDRESSES:
            return f"webhook address {host} is a cloud metadata service and is denied"
        if any(address in network for network in self._deny[0]):
            return f"webhook address {host} is denied by the gateway's policy"
        allowed = allowed_by_name or any(address in network for network in self._allow[0])
        if not self.allow_internal and is_internal(address) and not allowed:
            return (
                f"webhook address {host} is in the gateway's own network (loopback, private "
                "or reserved), which a shared gateway denies unless --webhook-allow names it"
            )
        if self.allow and not allowed:
            return f"webhook address {host} is not in the gateway's allow list"
        return None

    def resolved_problem(self, host: str, addresses: Iterable[str]) -> str | None:
        """Check every address a host name resolves to now, right before a delivery, so DNS
        cannot smuggle a denied address in (the lookup itself is the sender's)."""
        for text in addresses:
            address = as_address(text.split("%")[0])
            if address is not None and (found := self.address_problem(address, host, True)):
                return f"{found} (resolved to {address})"
        return None


DEFAULT_POLICY = WebhookPolicy()


def webhook_url_problem(url: str) -> str | None:
    """Why `url` is not an acceptable webhook destination under the default policy, or None."""
    return DEFAULT_POLICY.problem(url)
