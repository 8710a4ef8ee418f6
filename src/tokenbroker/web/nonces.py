"""``DPoP-Nonce`` response headers (RFC 9449 §8.1, §9) for the broker's own endpoints.

A refused nonce (NonceChallenge) answers with the fresh nonce it carries; any other
response of an endpoint that requires nonces carries the current one, best effort (a
client then has the next nonce without a round trip; failing to mint one must not turn
an answer into an error: the secret is cached, and the next request fails closed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from tokenbroker.domain.errors import BrokerError
from tokenbroker.domain.nonces import NonceChallenge, NonceService

HEADER = "DPoP-Nonce"


def add_nonce(
    response: dict[str, Any],
    nonces: NonceService | None,
    clock: Callable[[], float],
    error: BaseException | None = None,
) -> dict[str, Any]:
    """``response`` with a ``DPoP-Nonce`` header when there is one to give."""
    headers = response.setdefault("headers", {})
    if isinstance(error, NonceChallenge):
        headers[HEADER] = error.nonce
    elif nonces is not None:
        with contextlib.suppress(BrokerError):
            headers[HEADER] = nonces.issue(clock())
    if HEADER in headers:
        # a nonce is per response: it must not be served from a cache (RFC 9449 §8.2)
        headers["Cache-Control"] = "no-store"
    return response
