"""Which webhook URLs runlane may POST to: http(s) only, and (unless private addresses are
allowed) never a host that resolves to a loopback, private, link-local or other non-public
address. Checked when an endpoint is made, and at every connect on the address connected to."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_URL_LENGTH = 2000


class UrlRefused(ValueError):
    """The URL is not one webhooks may be sent to; the message says why."""


def parse(url: str) -> SplitResult:
    """The URL's parts, if it is an absolute http(s) URL with a host (UrlRefused otherwise)."""
    try:
        parts = urlsplit(url)
        port_of(parts)  # a port that is no number or out of range: ValueError
    except ValueError as exc:
        raise UrlRefused(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UrlRefused("only http and https URLs are allowed")
    if not parts.hostname:
        raise UrlRefused("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("the URL may not carry credentials")
    return parts


def port_of(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def forbidden(address: IPAddress) -> bool:
    """Whether an address is out of bounds: anything not globally routable (loopback, private,
    link-local, unspecified, reserved, shared, documentation), multicast, and IPv6 forms that
    carry such an IPv4 address (::ffff:127.0.0.1)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None and forbidden(embedded):
            return True
    return not address.is_global or address.is_multicast or address.is_reserved


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (an IP literal is itself); UrlRefused if none."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UrlRefused(f"the host {host!r} does not resolve") from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found]
    if not addresses:
        raise UrlRefused(f"the host {host!r} does not resolve")
    return list(dict.fromkeys(addresses))


def checked_address(host: str, port: int, *, allow_private: bool) -> str:
    """The address to connect to for `host`: resolved once and checked, so that what is
    connected to is what was checked (a second lookup could answer otherwise: DNS rebinding).
    Any forbidden address among the answers refuses the host."""
    addresses = resolve(host, port)
    if not allow_private:
        bad = [str(address) for address in addresses if forbidden(address)]
        if bad:
            raise UrlRefused(f"the host {host!r} resolves to a non-public address ({bad[0]})")
    return str(addresses[0])


def check(url: str, *, allow_private: bool) -> None:
    """UrlRefused unless webhooks may be sent to `url` now."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"longer than {MAX_URL_LENGTH} characters")
    parts = parse(url)
    assert parts.hostname is not None  # parse refuses a URL without one
    checked_address(parts.hostname, port_of(parts), allow_private=allow_private)
