"""The broker's own JWKS over HTTPS (domain/published_keys.py decides what to trust).
Any failure (unreachable, not 200, too large, not JSON) is TemporarilyUnavailable, so
the edge fails closed."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tokenbroker.adapters.idps import http_get
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.domain.published_keys import trusted_keys


class JwksSource:
    def __init__(
        self, url: str, *, timeout: float = 0.8, get: Callable[..., bytes] = http_get
    ) -> None:
        """``url``: the broker's ``jwks_uri`` (https; http only to loopback)."""
        self.url = url
        self._timeout = timeout
        self._get = get

    def fetch(self) -> dict[str, Any]:
        body = self._get(self.url, timeout=self._timeout)
        try:
            document = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise TemporarilyUnavailable("the broker's JWKS is not JSON") from exc
        return trusted_keys(document)
