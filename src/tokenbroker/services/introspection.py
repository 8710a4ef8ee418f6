"""RFC 7662 token introspection, for resource servers that are not behind the authorizer.

The caller authenticates as a client (same methods as the token endpoint). Who may
introspect what (RFC 7662 §4 lets the server refuse to tell a client about tokens it
has no business with, and §2.2 answers such a request ``{"active": false}``):

- a client may introspect the tokens issued to itself;
- a client holding the scope ``INTROSPECT_SCOPE`` (an admin gives it to a resource
  server's client: ``tokenbroker clients create --scope tokenbroker:introspect``) may
  introspect any token of this broker;
- anything else is ``{"active": false}``, the same answer as garbage, so a client cannot
  probe whether a token it found is alive.

A live answer needs the token verified (signature, issuer, audience, times) AND its
client and device still active, its scope still allowed, its jti not revoked: the same
checks as the edge (domain/liveness.py), read fresh here (one consistent BatchGetItem,
no 5 s cache: introspection is off the hot path). A failed read is a 503, never
``active: true`` and never a 500.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tokenbroker.domain.clock import Clock
from tokenbroker.domain.errors import ClientDisabled, DeviceRevoked, InvalidToken
from tokenbroker.domain.liveness import Liveness, check_liveness
from tokenbroker.domain.rfc9068 import AccessTokenClaims
from tokenbroker.services.client_auth import ClientAuthenticator
from tokenbroker.services.own_tokens import TokenCheck
from tokenbroker.services.revocation import (
    MAX_TOKEN,
    LifecycleRequest,
    assertion_audiences,
    token_value,
)

INTROSPECT_SCOPE = "tokenbroker:introspect"
INACTIVE: dict[str, object] = {"active": False}


@dataclass(frozen=True)
class Introspection:
    claims: AccessTokenClaims | None
    caller: str  # the authenticated client id
    reason: str  # why inactive ("" when active), for the log only

    def response_body(self) -> dict[str, object]:
        c = self.claims
        if c is None:
            return dict(INACTIVE)
        return {
            "active": True,
            "scope": " ".join(c.scope),
            "client_id": c.client_id,
            "sub": c.sub,
            "exp": c.exp,
            "iat": c.iat,
            "iss": c.iss,
            "aud": c.aud,
            "jti": c.jti,
            "token_type": "DPoP",
            "cnf": {"jkt": c.jkt},
        }


class IntrospectionService:
    def __init__(
        self,
        *,
        authenticator: ClientAuthenticator,
        tokens: TokenCheck,
        liveness: Callable[[str, str], Liveness],
        clock: Clock,
    ) -> None:
        """``liveness``: a fresh read of (client, device) (adapters/usage.py::DynamoLiveness)."""
        self._auth = authenticator
        self._tokens = tokens
        self._liveness = liveness
        self._clock = clock

    def introspect(self, request: LifecycleRequest, *, request_issuer: str) -> Introspection:
        issuer = self._tokens.issuer or request_issuer
        caller = self._auth.authenticate(
            request.credentials, audiences=assertion_audiences(request, issuer)
        )
        value = token_value(request)
        if len(value) > MAX_TOKEN:
            return Introspection(None, caller.client_id, "not_a_token")
        claims = self._tokens.verify(value, now=self._clock(), request_issuer=request_issuer)
        if claims is None:
            return Introspection(None, caller.client_id, "not_a_live_token")
        if claims.client_id != caller.client_id and INTROSPECT_SCOPE not in caller.scopes:
            return Introspection(None, caller.client_id, "other_client")
        state = self._liveness(claims.client_id, claims.jkt)  # TemporarilyUnavailable: 503
        try:
            check_liveness(state, scope=claims.scope, issued_at=claims.iat, jti=claims.jti)
        except (DeviceRevoked, ClientDisabled, InvalidToken) as dead:
            return Introspection(None, caller.client_id, dead.reason)
        return Introspection(claims, caller.client_id, "")
