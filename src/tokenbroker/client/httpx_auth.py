"""``httpx`` integration: one ``httpx.Auth`` for ``Client`` and ``AsyncClient``.

Every request gets ``Authorization: DPoP <token>`` and a fresh proof; the auth flow
handles the resource's answer (RFC 9449 §9 nonce: retry once; RFC 6750 ``invalid_token``:
new token, retry once).

Redirects: httpx runs an auth flow once per ``send`` and, with ``follow_redirects=True``,
re-sends the previous hop's headers, proof included. Pass the auth's ``event_hooks`` (or
``async_event_hooks``) to the client: its request hook gives every hop that would repeat
a proof a fresh one for its own method and URL, and removes the proof where httpx dropped
the ``Authorization`` header (another origin). With httpx's default
``follow_redirects=False`` no hook is needed: ``client.send(response.next_request)`` runs
the auth flow again.

    auth = DPoPHttpxAuth(source)
    client = httpx.Client(auth=auth, event_hooks=auth.event_hooks, follow_redirects=True)
    client = auth.client(follow_redirects=True)  # the same, hooks included

Tokens go only to the origins the auth was configured for (the issuer's by default, plus
``origins=[...]``; plain HTTP only to loopback): a request elsewhere raises
TokenDestinationError before anything is sent; with the hooks a redirect hop elsewhere
carries neither the token nor a proof. Without them httpx strips the token on a
cross-origin hop but not the ``DPoP`` header, so the flow raises TokenDestinationError
when it sees that happened (use ``auth.client()`` or the hooks when following redirects).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterable
from typing import Any

import httpx

from tokenbroker.client.errors import TokenDestinationError
from tokenbroker.client.origins import OriginPolicy
from tokenbroker.client.proofs import ResourceAttempts, Retry
from tokenbroker.client.session import TokenSource

_REMEMBERED_PROOFS = 4096


class DPoPHttpxAuth(httpx.Auth):
    """DPoP-bound tokens and proofs for httpx, sync and async (thread-safe; share one)."""

    requires_request_body = True  # retries re-send the body

    def __init__(self, source: TokenSource, *, origins: Iterable[str] = ()) -> None:
        """``origins``: where the token may go besides the issuer's origin."""
        self.source = source
        self.origins = OriginPolicy(source.issuer, origins)
        self._lock = threading.Lock()
        #: sha256(proof) -> whether a request carrying it was sent (a proof is used once)
        self._proofs: OrderedDict[bytes, bool] = OrderedDict()

    def __repr__(self) -> str:
        return f"DPoPHttpxAuth({self.source!r}, {self.origins!r})"

    def client(self, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` with this auth and its redirect hooks installed."""
        hooks = dict(kwargs.pop("event_hooks", None) or {})
        hooks["request"] = [*self.event_hooks["request"], *hooks.get("request", [])]
        return httpx.Client(auth=self, event_hooks=hooks, **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` with this auth and its redirect hooks installed."""
        hooks = dict(kwargs.pop("event_hooks", None) or {})
        hooks["request"] = [*self.async_event_hooks["request"], *hooks.get("request", [])]
        return httpx.AsyncClient(auth=self, event_hooks=hooks, **kwargs)

    # ---- auth flows ----------------------------------------------------------------
    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        self.origins.require(str(request.url))
        request.read()
        token = self.source.token().access_token
        attempts = ResourceAttempts()
        while True:
            self._sign(request, token)
            response = yield request
            step = self._after(request, response, attempts)
            if step is None:
                return
            if step == "token":
                token = self.source.token(replacing=token).access_token

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        self.origins.require(str(request.url))
        await request.aread()
        token = (await self.source.atoken()).access_token
        attempts = ResourceAttempts()
        while True:
            self._sign(request, token)
            response = yield request
            step = self._after(request, response, attempts)
            if step is None:
                return
            if step == "token":
                token = (await self.source.atoken(replacing=token)).access_token

    def _after(
        self, request: httpx.Request, response: httpx.Response, attempts: ResourceAttempts
    ) -> Retry | None:
        final = response.request  # the last hop when httpx followed redirects
        if final is not request and not self.origins.permits(str(final.url)):
            if final.headers.get("dpop") == request.headers.get("dpop"):
                # no event hooks: httpx re-sent our proof to another origin; say so loudly
                raise TokenDestinationError(
                    "httpx followed a redirect to another origin with the DPoP proof; "
                    "follow redirects with DPoPHttpxAuth.client() or its event_hooks"
                )
            return None
        saved = self.source.nonces.remember(str(final.url), response.headers.get("dpop-nonce"))
        if final is not request and final.headers.get("dpop") == request.headers.get("dpop"):
            return None  # a hop re-sent our proof (no event hooks): a retry cannot fix it
        return attempts.after(response.status_code, response.headers, nonce_saved=saved)

    # ---- redirect hooks -------------------------------------------------------------
    @property
    def event_hooks(self) -> dict[str, list[Callable[[httpx.Request], None]]]:
        """For ``httpx.Client(event_hooks=...)``: fresh proofs on redirect hops."""
        return {"request": [self.prepare_hop]}

    @property
    def async_event_hooks(self) -> dict[str, list[Callable[[httpx.Request], Awaitable[None]]]]:
        """For ``httpx.AsyncClient(event_hooks=...)``."""
        return {"request": [self.aprepare_hop]}

    def prepare_hop(self, request: httpx.Request) -> None:
        """Request hook: leave a proof's first send alone; re-sign a request that would
        send one of our proofs again (a redirect hop), or drop the proof if httpx
        stripped the token (cross-origin)."""
        proof = request.headers.get("dpop")
        if proof is None or self._first_use(proof) is not False:
            return
        authorization = request.headers.get("authorization", "")
        if not self.origins.permits(str(request.url)):
            # a hop to an origin the token is not for: neither token nor proof
            request.headers.pop("authorization", None)
            del request.headers["dpop"]
        elif authorization[:5].lower() == "dpop ":
            self._sign(request, authorization[5:])
            self._first_use(request.headers["dpop"])
        else:
            del request.headers["dpop"]

    async def aprepare_hop(self, request: httpx.Request) -> None:
        self.prepare_hop(request)

    # ---- helpers --------------------------------------------------------------------
    def _sign(self, request: httpx.Request, token: str) -> None:
        proof = self.source.proof(request.method, str(request.url), token)
        request.headers["Authorization"] = f"DPoP {token}"
        request.headers["DPoP"] = proof
        with self._lock:
            self._proofs[_digest(proof)] = False
            while len(self._proofs) > _REMEMBERED_PROOFS:
                self._proofs.popitem(last=False)

    def _first_use(self, proof: str) -> bool | None:
        """Mark ``proof`` as sent: True the first time, False after, None if not ours."""
        digest = _digest(proof)
        with self._lock:
            used = self._proofs.get(digest)
            if used is None:
                return None
            self._proofs[digest] = True
            return not used


def _digest(proof: str) -> bytes:
    return hashlib.sha256(proof.encode("ascii", "replace")).digest()
