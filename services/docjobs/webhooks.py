"""Webhook URLs: their form, and which addresses docjobs may send to (docs/gateway.md, "Webhooks").

Shared by the jobstore (the form of Enqueue's webhook_url), the gateway at POST /api/jobs (the form, and the
addresses the name resolves to now) and the gateway's sender (the address resolved at each send, which is
the one it connects to: a name that resolves to a public address when the job is made and to 127.0.0.1 at
send time is refused then). Without an allow list, every public address may be named and no private,
loopback, link-local, unspecified, multicast or otherwise non-global one; with one, only the hosts it lists
(`host` or `host:port`), whatever their addresses: listing a host is how an operator allows an internal one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna

MAX_URL_LENGTH = 2000
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookUrlError(ValueError):
    """Why a webhook URL is refused; the message is the caller's to read."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a webhook URL points: its host (lowercase, IPv6 without brackets) and port."""

    host: str
    port: int
    https: bool

    def ip(self) -> IpAddress | None:
        """The host as an address when the URL names one."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


def ascii_host(host: str) -> str:
    """A host in the form the sender's HTTP client (yarl) gives its resolver: lowercase, an international
    name in IDNA (UTS 46) ASCII. Allow list and URL are compared in it, so the host checked is the one
    connected to."""
    if host.isascii():
        return host.lower().rstrip(".")
    try:
        return idna.encode(host.rstrip("."), uts46=True).decode("ascii").lower()
    except UnicodeError as exc:
        raise WebhookUrlError(f"the host is not a valid international name ({exc})") from None


def parse_url(url: str) -> Target:
    """An absolute http or https URL without credentials; WebhookUrlError otherwise."""
    if len(url) > MAX_URL_LENGTH:
        raise WebhookUrlError(f"longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise WebhookUrlError("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookUrlError(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise WebhookUrlError("must be an http or https URL")
    if not parts.hostname:
        raise WebhookUrlError("must name a host")
    if parts.username is not None or parts.password is not None:
        raise WebhookUrlError("must not carry credentials (user:password@)")
    if parts.fragment:
        raise WebhookUrlError("must not have a fragment (#...)")
    https = parts.scheme == "https"
    return Target(host=ascii_host(parts.hostname), port=port or (443 if https else 80), https=https)


def parse_allow(text: str) -> tuple[tuple[str, int | None], ...]:
    """DOCJOBS_WEBHOOK_ALLOW: comma-separated `host` or `host:port` (an IPv6 host in brackets: `[::1]:8080`)."""
    entries = []
    for raw in (item.strip() for item in text.split(",")):
        if not raw:
            continue
        try:
            parts = urlsplit(f"//{raw}")
            port = parts.port
        except ValueError:
            raise ValueError(f"{raw!r} is not a host or host:port") from None
        if not parts.hostname or parts.path or parts.query or parts.username is not None:
            raise ValueError(f"{raw!r} is not a host or host:port")
        try:
            entries.append((ascii_host(parts.hostname), port))
        except WebhookUrlError:
            raise ValueError(f"{raw!r} is not a host or host:port") from None
    return tuple(entries)


def listed(target: Target, allow: Iterable[tuple[str, int | None]]) -> bool:
    return any(host == target.host and (port is None or port == target.port) for host, port in allow)


# IPv6 forms that reach an IPv4 address through a translator or tunnel: judged as the address they carry
# (Python calls a NAT64 or 6to4 address of 127.0.0.1 global).
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# IPv4-compatible and IPv4-translated addresses, local-use NAT64 and site-local: never a public webhook's.
NOT_PUBLIC_V6 = tuple(ipaddress.IPv6Network(net) for net in ("::/96", "::ffff:0:0:0/96", "64:ff9b:1::/48",
                                                             "fec0::/10"))


def public(address: IpAddress) -> bool:
    """Whether an address is one every public webhook may name: global unicast (an IPv6 address that
    carries an IPv4 one, mapped, NAT64 or 6to4, is judged as that IPv4 address)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address.sixtofour is not None:
            address = address.sixtofour
        elif address in NAT64:
            address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        elif any(address in net for net in NOT_PUBLIC_V6):
            return False
    return address.is_global and not address.is_multicast


def check_target(target: Target, allow: tuple[tuple[str, int | None], ...]) -> bool:
    """Whether the URL may be used at all before any name is resolved: True when its host is listed (no
    address check follows), False when its addresses must still be checked with `check_address`."""
    if listed(target, allow):
        return True
    if allow:
        raise WebhookUrlError(f"{target.host}:{target.port} is not in the webhook allow list")
    return False


def check_address(target: Target, address: IpAddress) -> None:
    """Refuse an address that is not public for a host that is not listed."""
    if not public(address):
        raise WebhookUrlError(f"{target.host} resolves to {address}, a private, loopback, link-local or otherwise "
                              "non-public address (an operator may list the host in DOCJOBS_WEBHOOK_ALLOW)")
