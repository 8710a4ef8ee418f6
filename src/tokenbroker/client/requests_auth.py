"""``requests`` integration: ``session.auth = DPoPAuth(source)``.

Every request gets ``Authorization: DPoP <token>`` and a fresh proof. A response hook
then handles what the resource answered (RFC 9449 §9 nonce: retry once; RFC 6750
``invalid_token``: new token, retry once) and prepares redirects: ``requests`` re-sends
the headers of the request it is redirecting, so before it does, the hook puts a proof
for the redirect's own method and URL on it (computed by ``requests`` itself), or removes
the proof when ``requests`` is about to drop the ``Authorization`` header (another host).

Tokens go only to the origins the auth was configured for (the issuer's by default, plus
``origins=[...]``; plain HTTP only to loopback): a request elsewhere raises
TokenDestinationError before anything is sent, and a redirect elsewhere carries neither
the token nor a proof, whatever ``requests`` itself would keep.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import requests
from requests.auth import AuthBase

from tokenbroker.client.origins import OriginPolicy
from tokenbroker.client.proofs import ResourceAttempts
from tokenbroker.client.session import TokenSource


@dataclass
class _Call:
    """One logical request, across its retries and redirects."""

    token: str
    attempts: ResourceAttempts = field(default_factory=ResourceAttempts)

    @property
    def authorization(self) -> str:
        return f"DPoP {self.token}"


class DPoPAuth(AuthBase):
    """DPoP-bound tokens and proofs for ``requests`` (thread-safe; share one)."""

    def __init__(self, source: TokenSource, *, origins: Iterable[str] = ()) -> None:
        """``origins``: where the token may go besides the issuer's origin."""
        self.source = source
        self.origins = OriginPolicy(source.issuer, origins)

    def __repr__(self) -> str:
        return f"DPoPAuth({self.source!r}, {self.origins!r})"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        self.origins.require(str(request.url))  # before a token is even fetched
        exchange = _Call(self.source.token().access_token)
        self._sign(request, exchange.token)
        request.register_hook(  # type: ignore[no-untyped-call]
            "response", partial(self._on_response, exchange)
        )
        return request

    def _sign(self, request: requests.PreparedRequest, token: str) -> None:
        request.headers["Authorization"] = f"DPoP {token}"
        request.headers["DPoP"] = self.source.proof(str(request.method), str(request.url), token)

    def _on_response(
        self, exchange: _Call, response: requests.Response, **send_kwargs: Any
    ) -> requests.Response:
        request = response.request
        if request.headers.get("Authorization") != exchange.authorization:
            return response  # a redirect to another host: not ours to authenticate
        while True:
            saved = self.source.nonces.remember(
                str(request.url), response.headers.get("DPoP-Nonce")
            )
            step = exchange.attempts.after(
                response.status_code, response.headers, nonce_saved=saved
            )
            if step is None or not _replayable(request):
                break
            if step == "token":
                exchange.token = self.source.token(replacing=exchange.token).access_token
            # in place, not a copy: requests redirects from the object it sent first
            self._sign(request, exchange.token)
            _ = response.content  # release the connection before re-sending
            response.close()
            retried = response.connection.send(request, **send_kwargs)
            retried.history = [*response.history, response]
            retried.request = request
            response = retried
        if response.is_redirect:
            self._prepare_redirect(exchange, response)
        return response

    def _prepare_redirect(self, exchange: _Call, response: requests.Response) -> None:
        """Give the request ``requests`` is about to copy for the redirect a proof for the
        redirect's method and URL (``resolve_redirects(yield_requests=True)`` computes
        them exactly as the caller's session will, without sending anything)."""
        probe = requests.Session()
        probe.trust_env = False  # no netrc or proxy lookups: only URL and method matter
        try:
            following = next(
                probe.resolve_redirects(response, response.request, yield_requests=True), None
            )
        except requests.RequestException:
            following = None  # requests will raise the same when it follows
        finally:
            probe.close()
        headers = response.request.headers
        if following is None or not self.origins.permits(str(following.url)):
            headers.pop("Authorization", None)  # requests keeps it on some redirects
            headers.pop("DPoP", None)
            return
        if following.headers.get("Authorization") != exchange.authorization:
            headers.pop("DPoP", None)  # no proof for a host that gets no token
            return
        headers["DPoP"] = self.source.proof(
            str(following.method), str(following.url), exchange.token
        )


def _replayable(request: requests.PreparedRequest) -> bool:
    """Whether the body can be sent again (not a consumed stream or generator)."""
    return request.body is None or isinstance(request.body, (bytes, str))
