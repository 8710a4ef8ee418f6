"""RFC 7009 token revocation: a client revokes one of its own tokens.

- An access token (a JWT of ours, alive, issued to the authenticated client): its
  ``jti`` joins its device's revoked set (adapters/revocations.py), which the edge's
  liveness view reads anyway: refused at the edge within ``domain.liveness.MAX_AGE``
  (5 s) with reason ``token_revoked``, no extra AWS call on the hot path, and refused by
  introspection at once (it reads fresh).
- A refresh token of the authenticated client: its whole family is revoked (RFC 7009 §2.1
  "the authorization server SHOULD also invalidate ... the same authorization grant"),
  with services/refresh.py's family revocation.

``token_type_hint`` only orders the two lookups (RFC 7009 §2.1: the server extends its
search past the hint). Unknown, malformed, expired and other clients' tokens answer 200
and change nothing (§2.2): a client learns nothing about tokens it does not hold. A store
failure is a 503 (§2.2.1): a revocation never silently does not happen.
Each revocation is a ledger record (event ``token_revoked``, ids only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tokenbroker.domain.clock import Clock
from tokenbroker.domain.errors import InvalidGrant, InvalidRequest
from tokenbroker.domain.models import Client, Decision, EventType, RefreshGrant, UsageRecord
from tokenbroker.services.client_auth import ClientAuthenticator, ClientCredentials
from tokenbroker.services.own_tokens import TokenCheck
from tokenbroker.services.refresh import _parse, token_id  # the one parser of its shape

ACCESS_TOKEN = "access_token"
REFRESH_TOKEN = "refresh_token"
TOKEN_TYPE_HINTS = (ACCESS_TOKEN, REFRESH_TOKEN)
MAX_TOKEN = 4096
RECORD_PREFIX = "rvk:"
#: the lookup key of a refresh token's device read (no device is needed to revoke)
_NO_DEVICE = "-"


class AccessRevocations(Protocol):
    def revoke_access_token(
        self, *, client_id: str, jkt: str, jti: str, exp: int, now: int, record: UsageRecord
    ) -> bool: ...


class RefreshFamilies(Protocol):
    """The part of services/refresh.py's RefreshStore revocation needs."""

    def lookup(
        self, token_id: str, *, family: str, client_id: str, jkt: str, principal: str
    ) -> tuple[RefreshGrant | None, object, object, object]: ...

    def revoke_family(self, family: str, record: UsageRecord) -> None: ...


@dataclass(frozen=True)
class LifecycleRequest:
    """A parsed revocation or introspection request (the HTTP layer parses)."""

    credentials: ClientCredentials
    token: str | None
    token_type_hint: str | None = None
    source_ip: str = ""
    user_agent: str = ""
    request_id: str = ""
    url: str = ""  # the endpoint URL as the client called it (an assertion's aud)
    token_path: str = "/oauth2/token"


def assertion_audiences(request: LifecycleRequest, issuer: str) -> tuple[str, ...]:
    """What a private_key_jwt assertion's ``aud`` may name here (RFC 7523 §3 C): the
    issuer, the token endpoint URL, or this endpoint's URL."""
    return tuple(a for a in (issuer, issuer + request.token_path, request.url) if a)


@dataclass(frozen=True)
class RevocationPolicy:
    usage_retention_days: int = 400


@dataclass(frozen=True)
class Revocation:
    """What happened (for the log; the response is 200 with no body either way)."""

    revoked: str  # "access_token", "refresh_token" or "" (nothing changed)
    client_id: str
    jti: str = ""


def token_value(request: LifecycleRequest) -> str:
    """The presented token (RFC 7009 §2.1 / RFC 7662 §2.1: required). An unknown
    ``token_type_hint`` is ignored: the search covers every type anyway."""
    if not request.token:
        raise InvalidRequest("token is required")
    return request.token


class RevocationService:
    def __init__(
        self,
        *,
        authenticator: ClientAuthenticator,
        tokens: TokenCheck,
        access: AccessRevocations,
        refresh: RefreshFamilies | None,
        clock: Clock,
        policy: RevocationPolicy,
    ) -> None:
        self._auth = authenticator
        self._tokens = tokens
        self._access = access
        self._refresh = refresh
        self._clock = clock
        self._policy = policy

    def revoke(self, request: LifecycleRequest, *, request_issuer: str) -> Revocation:
        client = self._auth.authenticate(
            request.credentials, audiences=self._audiences(request, request_issuer)
        )
        value = token_value(request)
        if len(value) > MAX_TOKEN or not value.isascii():
            return Revocation("", client.client_id)  # cannot be a token of ours
        order = (
            (self._revoke_refresh, self._revoke_access)
            if request.token_type_hint == REFRESH_TOKEN
            else (self._revoke_access, self._revoke_refresh)
        )
        for attempt in order:
            done = attempt(client, value, request, request_issuer)
            if done is not None:
                return done
        return Revocation("", client.client_id)

    def _audiences(self, request: LifecycleRequest, request_issuer: str) -> tuple[str, ...]:
        return assertion_audiences(request, self._tokens.issuer or request_issuer)

    def _revoke_access(
        self, client: Client, value: str, request: LifecycleRequest, request_issuer: str
    ) -> Revocation | None:
        now = self._clock()
        claims = self._tokens.verify(value, now=now, request_issuer=request_issuer)
        if claims is None:
            return None
        if claims.client_id != client.client_id:
            return Revocation("", client.client_id)  # another client's: 200, nothing changes
        record = self._record(request, client, claims.sub, claims.jkt, claims.jti, now)
        self._access.revoke_access_token(
            client_id=client.client_id,
            jkt=claims.jkt,
            jti=claims.jti,
            exp=claims.exp,
            now=int(now),
            record=record,
        )
        return Revocation(ACCESS_TOKEN, client.client_id, claims.jti)

    def _revoke_refresh(
        self, client: Client, value: str, request: LifecycleRequest, request_issuer: str
    ) -> Revocation | None:
        if self._refresh is None:
            return None
        try:
            principal, family = _parse(value)
        except InvalidGrant:
            return None
        grant, *_ = self._refresh.lookup(
            token_id(value),
            family=family,
            client_id=client.client_id,
            jkt=_NO_DEVICE,
            principal=principal,
        )
        if grant is None or grant.client_id != client.client_id or grant.family != family:
            return None
        if grant.family_status != "active":
            return Revocation("", client.client_id)  # revoked already
        now = self._clock()
        record = self._record(
            request, client, grant.principal or client.client_id, grant.jkt, "", now, family
        )
        self._refresh.revoke_family(family, record)
        return Revocation(REFRESH_TOKEN, client.client_id)

    def _record(
        self,
        request: LifecycleRequest,
        client: Client,
        principal: str,
        jkt: str,
        jti: str,
        at: float,
        family: str = "",
    ) -> UsageRecord:
        return UsageRecord.build(
            at=at,
            retention_days=self._policy.usage_retention_days,
            # one record per revoked token / family: a repeated revocation writes nothing
            record_id=RECORD_PREFIX + (jti or "family:" + family),
            decision=Decision.ALLOW,
            reason=REFRESH_TOKEN if family else ACCESS_TOKEN,
            principal=principal,
            client_id=client.client_id,
            jkt=jkt,
            token_jti=jti,
            source_ip=request.source_ip,
            user_agent=request.user_agent,
            request_id=request.request_id,
            event=EventType.TOKEN_REVOKED,
        )
