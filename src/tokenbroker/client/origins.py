"""Where a token may go: the origins (RFC 6454: scheme, host, port) a DPoP auth was
configured for. By default only the issuer's origin (the broker's own API, where API
Gateway serves the protected routes); more only by an explicit allow-list. Plain HTTP
only to a loopback host (the local stack). Redirects are checked against the same list.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from tokenbroker.client.errors import TokenDestinationError

_DEFAULT_PORTS = {"http": 80, "https": 443}
Origin = tuple[str, str, int]


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def origin_of(url: str) -> Origin | None:
    """(scheme, lower-case host, port) of an absolute http(s) URL; None otherwise (and
    for plain HTTP to anything but loopback, and for URLs with userinfo)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host or "@" in parts.netloc:
        return None
    if scheme == "http" and not _is_loopback(host):
        return None
    return scheme, host, port if port is not None else _DEFAULT_PORTS[scheme]


class OriginPolicy:
    """The origins a token may be sent to: the issuer's, plus ``allow``."""

    def __init__(self, issuer: str, allow: Iterable[str] = ()) -> None:
        origins: set[Origin] = set()
        for url in (issuer, *allow):
            origin = origin_of(url)
            if origin is None:
                raise TokenDestinationError(
                    f"{url!r} is not an https origin (http only for loopback hosts)"
                )
            origins.add(origin)
        self._origins = frozenset(origins)

    def __repr__(self) -> str:
        return f"OriginPolicy({sorted(self._origins)!r})"

    def permits(self, url: str) -> bool:
        return origin_of(url) in self._origins

    def require(self, url: str) -> None:
        if not self.permits(url):
            raise TokenDestinationError(
                "refusing to send the token to an origin it is not configured for "
                f"({_shown(url)}); pass origins=[...] to allow it"
            )


def _shown(url: str) -> str:
    """The URL's scheme and authority only (never a path or query that may be private)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{parts.hostname or ''}" + (f":{port}" if port else "")
