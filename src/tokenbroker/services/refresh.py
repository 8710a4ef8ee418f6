"""Refresh tokens (RFC 6749 §6) for people's DPoP-bound tokens (RFC 9449 §5).

A refresh token is opaque to clients: ``<b64url(principal)>.<family>.<secret>``; the
broker stores only its SHA-256. The principal and family parts let ONE read fetch the
token, its family, the client, the device (the proof's key) and the person together; all
of them are checked against what is stored, so a forged prefix only fails.

It is bound to the client and to the DPoP key it was issued with, rotated on every use
(the old one becomes ``used``), and reusing a used one revokes the whole family (a ledger
event): RFC 9700 §4.14.2. A family lives at most ``absolute`` seconds from the exchange
that started it and dies after ``idle`` seconds without a refresh. A revoked device, a
disabled client or a disabled person ends it at the next refresh.

AWS round trips per refresh: one TransactGetItems, one KMS Sign, one TransactWriteItems
(rotation + access token + ledger record) = 3.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from tokenbroker.domain.clock import Clock
from tokenbroker.domain.errors import InvalidGrant, InvalidRequest, InvalidTarget
from tokenbroker.domain.jose import b64url_decode, b64url_encode
from tokenbroker.domain.models import (
    Client,
    Decision,
    Device,
    EventType,
    IssuedToken,
    PersonAccount,
    RefreshGrant,
    UsageRecord,
)
from tokenbroker.domain.policy import grant_scope
from tokenbroker.domain.rfc9449 import DpopProof, ProofPolicy, replay_key
from tokenbroker.services.issuance import (
    IssuanceService,
    IssuedAccessToken,
    TokenRequest,
    assertion_audiences,
    request_proof,
)

GRANT_TYPE = "refresh_token"
MAX_REFRESH_TOKEN = 1024
_FAMILY = re.compile(r"[A-Za-z0-9_-]{22,64}")
_DAY = 86_400
RECORD_PREFIX = "rft:"


class RefreshStore(Protocol):
    def start_family(
        self, grant: RefreshGrant, token: IssuedToken, record: UsageRecord
    ) -> None: ...

    def lookup(
        self, token_id: str, *, family: str, client_id: str, jkt: str, principal: str
    ) -> tuple[RefreshGrant | None, Client | None, Device | None, PersonAccount | None]: ...

    def rotate(
        self, old: RefreshGrant, new: RefreshGrant, token: IssuedToken, record: UsageRecord
    ) -> None: ...

    def revoke_family(self, family: str, record: UsageRecord) -> None: ...


@dataclass(frozen=True)
class RefreshPolicy:
    proof: ProofPolicy
    absolute: int  # seconds from the start of a family
    idle: int  # seconds between two refreshes
    usage_retention_days: int = 400


def token_id(refresh_token: str) -> str:
    return hashlib.sha256(refresh_token.encode("ascii")).hexdigest()


class RefreshService:
    def __init__(
        self,
        *,
        store: RefreshStore,
        issuance: Callable[[], IssuanceService],
        clock: Clock,
        policy: RefreshPolicy,
        new_secret: Callable[[], str] = lambda: secrets.token_urlsafe(32),
    ) -> None:
        """``new_secret``: the random part of new tokens (tests may fix it)."""
        self._store = store
        self._issuance = issuance
        self._clock = clock
        self._policy = policy
        self._new_secret = new_secret

    # ---- a family starts with a token exchange -------------------------------------
    def issue_with_family(
        self,
        request: TokenRequest,
        client_id: str,
        proof: DpopProof,
        scope: tuple[str, ...],
        audience: str,
        issuer: str,
        at: float,
        *,
        principal: str,
    ) -> IssuedAccessToken:
        issued, token, record = self._issuance().sign(
            request, client_id, proof, scope, audience, issuer, at, principal=principal
        )
        value, grant = self._new_grant(
            family=b64url_encode(secrets.token_bytes(16)),
            client_id=client_id,
            jkt=proof.jkt,
            principal=principal,
            scope=scope,
            audience=audience,
            now=int(at),
            started_at=int(at),
        )
        self._store.start_family(grant, token, record)
        return replace(issued, refresh_token=value)

    def _new_grant(
        self,
        *,
        family: str,
        client_id: str,
        jkt: str,
        principal: str,
        scope: tuple[str, ...],
        audience: str,
        now: int,
        started_at: int,
    ) -> tuple[str, RefreshGrant]:
        value = f"{b64url_encode(principal.encode('utf-8'))}.{family}.{self._new_secret()}"
        grant = RefreshGrant(
            token_id=token_id(value),
            family=family,
            client_id=client_id,
            jkt=jkt,
            principal=principal,
            scope=scope,
            audience=audience,
            issued_at=now,
            started_at=started_at,
            status="active",
            retain_until=started_at + self._policy.absolute + _DAY,
        )
        return value, grant

    # ---- refresh -------------------------------------------------------------------
    def refresh(self, request: TokenRequest, *, request_issuer: str) -> IssuedAccessToken:
        issuance = self._issuance()
        client_id = issuance.authenticator.claimed_client_id(request.credentials)
        value = request.refresh_token
        if value is None:
            raise InvalidRequest("refresh_token is required")
        principal, family = _parse(value)
        now = self._clock()
        proof = request_proof(request, now, self._policy.proof)
        grant, found, device, person = self._store.lookup(
            token_id(value),
            family=family,
            client_id=client_id,
            jkt=proof.jkt,
            principal=principal,
        )
        issuer = issuance.issuer or request_issuer
        client = issuance.authenticator.check(
            request.credentials, found, audiences=assertion_audiences(request, issuer)
        )
        if (
            grant is None
            or grant.client_id != client.client_id
            or grant.family != family
            or grant.principal != principal
        ):
            raise InvalidGrant("the refresh token is invalid", reason="refresh_invalid")
        if grant.status == "used":
            self._store.revoke_family(
                family, self._record(request, grant, proof, EventType.REFRESH_REUSED, now)
            )
            raise InvalidGrant(
                "the refresh token was already used: its whole family is revoked",
                reason="refresh_reused",
            )
        if grant.status != "active" or grant.family_status != "active":
            raise InvalidGrant("the refresh token is revoked", reason="refresh_revoked")
        if proof.jkt != grant.jkt:
            raise InvalidGrant(
                "the refresh token is bound to another DPoP key", reason="refresh_wrong_key"
            )
        if now >= grant.started_at + self._policy.absolute:
            raise InvalidGrant("the refresh token has expired", reason="refresh_expired")
        if now >= grant.issued_at + self._policy.idle:
            raise InvalidGrant("the refresh token has expired (idle)", reason="refresh_idle")
        if device is None or not device.active or device.principal != grant.principal:
            raise InvalidGrant("the device was revoked", reason="device_revoked")
        if device.step_up_at:
            raise InvalidGrant(
                "this device must pass a fresh identity check (token exchange) first",
                reason="step_up_required",
            )
        if person is not None and not person.active:
            raise InvalidGrant("this person is disabled", reason="person_disabled")
        if request.resource is not None and request.resource != grant.audience:
            # RFC 8707 §2: the refreshed token is for the grant's resource, never another
            raise InvalidTarget(
                "a refreshed token is for the resource of its grant; exchange again for"
                " another resource",
                reason="refresh_other_resource",
            )
        # RFC 6749 §6: no scope beyond the original grant; none the client lost since
        scope = grant_scope(request.scope, frozenset(grant.scope) & client.scopes)
        issued, token, record = issuance.sign(
            request,
            client.client_id,
            proof,
            scope,
            grant.audience,
            issuer,
            now,
            principal=grant.principal,
        )
        new_value, new_grant = self._new_grant(
            family=family,
            client_id=client.client_id,
            jkt=proof.jkt,
            principal=grant.principal,
            scope=tuple(grant.scope),
            audience=grant.audience,
            now=int(now),
            started_at=grant.started_at,
        )
        self._store.rotate(grant, new_grant, token, record)
        return replace(issued, refresh_token=new_value)

    def _record(
        self,
        request: TokenRequest,
        grant: RefreshGrant,
        proof: DpopProof,
        event: EventType,
        at: float,
    ) -> UsageRecord:
        return UsageRecord(
            # one record per reuse attempt (each comes with its own proof)
            record_id=RECORD_PREFIX + replay_key(proof.jkt, proof.jti),
            at_ms=int(at * 1000),
            decision=Decision.DENY,
            reason="refresh_reused",
            principal=grant.principal or grant.client_id,
            client_id=grant.client_id,
            jkt=grant.jkt,
            source_ip=request.source_ip[:64],
            user_agent=request.user_agent[:256],
            request_id=request.request_id[:256],
            retain_until=int(at) + self._policy.usage_retention_days * _DAY,
            event=event,
        )


def _parse(value: str) -> tuple[str, str]:
    """(principal, family) from a refresh token's shape; anything else is invalid."""
    parts = value.split(".") if len(value) <= MAX_REFRESH_TOKEN and value.isascii() else []
    if len(parts) != 3 or not _FAMILY.fullmatch(parts[1]) or not parts[2]:
        raise InvalidGrant("the refresh token is invalid", reason="refresh_invalid")
    try:
        principal = b64url_decode(parts[0]).decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidGrant("the refresh token is invalid", reason="refresh_invalid") from exc
    if not principal or len(principal) > 256:
        raise InvalidGrant("the refresh token is invalid", reason="refresh_invalid")
    return principal, parts[1]
