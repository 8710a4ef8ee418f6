"""Issue a DPoP-bound access token (RFC 6749 §4.4 client_credentials + RFC 9449 §5).

AWS round trips per issuance: one consistent read of client and device, one KMS Sign,
one transactional write of the token and its ledger record (event ``token_issued``).
The write comes after the signature so that a failed Sign leaves nothing behind; its
condition is also the proof replay guard, because the token's jti is derived from the
proof's (jkt, jti).

Refusals after a valid proof (unknown client, wrong secret, disabled client, device not
enrolled or revoked) leave a ledger record too (event ``token_denied``, decision deny,
the claimed client id, the proof's jkt, the reason), in place of the Sign and the
issuance write. The record id is bucketed by minute, and the write is a conditional put,
so the ledger grows by at most ONE record per bucket per minute:

- ``unknown_client``: one bucket for all (the client id is the caller's invention, so a
  bucket per id would let garbage grow the ledger without limit): <= 1 record/minute;
- every other reason: one bucket per (reason, client id) of a real client: <= 6 records
  per client per minute.

So at most 1 + 6 x clients records a minute, however fast the refusals come; the CloudWatch
metric ``TokenRequestsRejected`` counts every one. The three client refusals do the same
work (one read, one conditional write) and answer the same 401.
Requests refused before the directory read (malformed client id, missing or over-long
secret, bad proof) name no real client or key and are not recorded.

Client authentication is services/client_auth.py's (client secret or private_key_jwt,
RFC 7523 §2.2), the same one authenticator for every grant; a failed client assertion of
a real client is recorded under ``bad_client_assertion``, one reason whatever the
assertion's fault (the six reasons: wrong secret, disabled, bad assertion, device not
enrolled, revoked, step-up required). A private_key_jwt request adds one conditional
write (the assertion's jti).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from tokenbroker.domain.clock import Clock
from tokenbroker.domain.errors import (
    ConfigurationError,
    InvalidClient,
    InvalidDpopProof,
    InvalidGrant,
    InvalidRequest,
    TemporarilyUnavailable,
    UnsupportedGrantType,
)
from tokenbroker.domain.models import Decision, EventType, IssuedToken, UsageRecord
from tokenbroker.domain.policy import grant_scope
from tokenbroker.domain.ports import ClientDirectory, Signer, TokenLedger
from tokenbroker.domain.rfc8707 import audience_for
from tokenbroker.domain.rfc9068 import AccessTokenClaims, assemble, signing_input
from tokenbroker.domain.rfc9449 import DpopProof, ProofPolicy, replay_key, verify_proof
from tokenbroker.domain.units import DAY_SECONDS
from tokenbroker.services.client_auth import (
    CLIENT_DISABLED,
    UNKNOWN_CLIENT,
    WRONG_SECRET,
    ClientAuthenticator,
    ClientCredentials,
)

GRANT_TYPE = "client_credentials"
#: the ledger record of an issuance: one per token (its jti is unique)
RECORD_PREFIX = "iss:"
#: the ledger record of refused token requests: one per bucket (see the module docstring)
REFUSAL_PREFIX = "tden:"
REFUSAL_BUCKET_SECONDS = 60
BAD_CLIENT_ASSERTION = "bad_client_assertion"
DEVICE_NOT_ENROLLED = "device_not_enrolled"
DEVICE_REVOKED = "device_revoked"
#: containment step_up (services/containment.py): a token exchange or re-enrollment first
STEP_UP_REQUIRED = "step_up_required"


def request_proof(request: TokenRequest, now: float, policy: ProofPolicy) -> DpopProof:
    """The token endpoint's DPoP proof, verified (RFC 9449 §4.3, §5): every grant needs one."""
    if request.dpop_proof is None:
        raise InvalidDpopProof("a DPoP proof is required", reason="dpop_proof_missing")
    return verify_proof(
        request.dpop_proof, method=request.method, url=request.url, now=now, policy=policy
    )


@dataclass(frozen=True)
class TokenRequest:
    """A parsed token request. Parsing (form, headers, duplicates) is the HTTP layer's."""

    grant_type: str | None
    client_id: str | None
    client_secret: str | None
    scope: str | None
    resource: str | None
    dpop_proof: str | None
    method: str
    url: str  # the token endpoint URL exactly as the client called it
    # where the request came from, for the ledger record (as API Gateway saw it)
    source_ip: str = ""
    user_agent: str = ""
    request_id: str = ""
    # RFC 8693 token exchange (services/exchange.py) and self-service enrollment
    subject_token: str | None = None
    subject_token_type: str | None = None
    label: str | None = None
    refresh_token: str | None = None
    # RFC 7523 §2.2 private_key_jwt (services/client_auth.py)
    client_assertion_type: str | None = None
    client_assertion: str | None = field(default=None, repr=False)

    @property
    def credentials(self) -> ClientCredentials:
        return ClientCredentials(
            self.client_id, self.client_secret, self.client_assertion_type, self.client_assertion
        )


def assertion_audiences(request: TokenRequest, issuer: str) -> tuple[str, ...]:
    """What a client assertion's ``aud`` may name at the token endpoint (RFC 7523 §3 C):
    the issuer or the token endpoint URL the client called."""
    return tuple(a for a in (issuer, request.url) if a)


@dataclass(frozen=True)
class IssuancePolicy:
    issuer: str  # "" = the issuer passed per request (derived from the request URL)
    audiences: tuple[str, ...]
    lifetime: int
    proof: ProofPolicy
    record_retention_days: int
    #: how long the issuance's ledger record is kept (the usage table's TTL)
    usage_retention_days: int = 400


@dataclass(frozen=True)
class IssuedAccessToken:
    access_token: str
    expires_in: int
    scope: tuple[str, ...]
    jti: str
    client_id: str
    jkt: str
    #: RFC 6749 §6 (people's tokens only; see services/refresh.py)
    refresh_token: str = field(default="", repr=False)

    def response_body(self) -> dict[str, object]:
        body: dict[str, object] = {
            "access_token": self.access_token,
            "token_type": "DPoP",
            "expires_in": self.expires_in,
            "scope": " ".join(self.scope),
        }
        if self.refresh_token:
            body["refresh_token"] = self.refresh_token
        return body


class IssuanceService:
    def __init__(
        self,
        *,
        directory: ClientDirectory,
        ledger: TokenLedger,
        signer: Signer,
        clock: Clock,
        policy: IssuancePolicy,
        authenticator: ClientAuthenticator | None = None,
    ) -> None:
        """``authenticator``: client authentication for every grant (None: client
        secrets only)."""
        self._auth = authenticator or ClientAuthenticator(directory=directory)
        self._directory = directory
        self._ledger = ledger
        self._signer = signer
        self._clock = clock
        self._policy = policy

    @property
    def issuer(self) -> str:
        """The configured issuer ("" = derived from each request's URL)."""
        return self._policy.issuer

    @property
    def authenticator(self) -> ClientAuthenticator:
        """The one client authenticator of the token endpoint (exchange, refresh use it)."""
        return self._auth

    def issue(self, request: TokenRequest, *, request_issuer: str) -> IssuedAccessToken:
        client_id = self._auth.claimed_client_id(request.credentials)
        if request.grant_type is None:
            raise InvalidRequest("grant_type is required")
        if request.grant_type != GRANT_TYPE:
            raise UnsupportedGrantType("only client_credentials is supported")
        audience = self.audience(request.resource)
        now = self._clock()
        proof = request_proof(request, now, self._policy.proof)
        found, device = self._directory.get_client_and_device(client_id, proof.jkt)
        issuer = self._policy.issuer or request_issuer
        try:
            client = self._auth.check(
                request.credentials, found, audiences=assertion_audiences(request, issuer)
            )
        except InvalidClient as err:
            refusal = (
                UNKNOWN_CLIENT
                if found is None
                else err.reason
                if err.reason in (WRONG_SECRET, CLIENT_DISABLED)
                else BAD_CLIENT_ASSERTION
            )
            self._record_refusal(request, client_id, proof.jkt, refusal, now)
            if refusal == BAD_CLIENT_ASSERTION:
                raise  # its reason (logged) helps the client's developer; same response
            raise InvalidClient() from None  # identical in every way; the ledger says which
        if device is None or device.client_id != client.client_id:
            self._record_refusal(request, client.client_id, proof.jkt, DEVICE_NOT_ENROLLED, now)
            raise InvalidGrant(
                "the DPoP proof key is not an enrolled device of this client",
                reason=DEVICE_NOT_ENROLLED,
            )
        if not device.active:
            self._record_refusal(request, client.client_id, proof.jkt, DEVICE_REVOKED, now)
            raise InvalidGrant(
                "the DPoP proof key belongs to a revoked device", reason=DEVICE_REVOKED
            )
        if device.step_up_at:
            self._record_refusal(request, client.client_id, proof.jkt, STEP_UP_REQUIRED, now)
            raise InvalidGrant(
                "this device must pass a fresh identity check (token exchange) or be"
                " re-enrolled before new tokens",
                reason=STEP_UP_REQUIRED,
            )
        scope = grant_scope(request.scope, client.scopes)
        audience = self.audience(request.resource, allowed=client.resources)  # RFC 8707
        return self.sign_and_record(
            request,
            client.client_id,
            proof,
            scope,
            audience,
            issuer,
            now,
        )

    def _record_refusal(
        self, request: TokenRequest, client_id: str, jkt: str, reason: str, at: float
    ) -> None:
        """Best effort, like the edge's denial records: the refusal stands either way (a
        ledger outage must not turn a 401 into something else)."""
        bucket = int(at) // REFUSAL_BUCKET_SECONDS
        who = "" if reason == UNKNOWN_CLIENT else f"{client_id}:"
        record = UsageRecord.build(
            at=at,
            retention_days=self._policy.usage_retention_days,
            record_id=f"{REFUSAL_PREFIX}{reason}:{who}{bucket}",
            decision=Decision.DENY,
            reason=reason,
            principal=client_id,
            client_id=client_id,
            jkt=jkt,
            source_ip=request.source_ip,
            user_agent=request.user_agent,
            request_id=request.request_id,
            event=EventType.TOKEN_DENIED,
        )
        with contextlib.suppress(TemporarilyUnavailable):
            self._ledger.record_refusal(record)

    def audience(self, resource: str | None, *, allowed: frozenset[str] = frozenset()) -> str:
        """RFC 8707 (domain/rfc8707.py): the ``aud`` for ``resource``; ``allowed``: the
        client's registered resources (empty: every audience of the deployment)."""
        if not self._policy.audiences:
            raise ConfigurationError("AUDIENCES is not configured")
        return audience_for(resource, served=self._policy.audiences, allowed=allowed)

    def sign_and_record(
        self,
        request: TokenRequest,
        client_id: str,
        proof: DpopProof,
        scope: tuple[str, ...],
        audience: str,
        issuer: str,
        at: float,
        *,
        principal: str = "",
    ) -> IssuedAccessToken:
        """Sign the token and write it with its ledger record. ``principal``: the person
        it is issued to (token exchange): its ``sub``, with ``act`` naming the client."""
        issued, token, record = self.sign(
            request, client_id, proof, scope, audience, issuer, at, principal=principal
        )
        self._ledger.record_issuance(token, record)
        return issued

    def sign(
        self,
        request: TokenRequest,
        client_id: str,
        proof: DpopProof,
        scope: tuple[str, ...],
        audience: str,
        issuer: str,
        at: float,
        *,
        principal: str = "",
    ) -> tuple[IssuedAccessToken, IssuedToken, UsageRecord]:
        """Sign a token; returns it with what the ledger must record about it (the
        caller writes both, e.g. with a refresh token rotation in the same transaction)."""
        now = int(at)
        jti = replay_key(proof.jkt, proof.jti)
        claims = AccessTokenClaims(
            iss=issuer,
            sub=principal or client_id,
            aud=audience,
            exp=now + self._policy.lifetime,
            iat=now,
            jti=jti,
            client_id=client_id,
            scope=scope,
            jkt=proof.jkt,
            act=client_id if principal else "",
        )
        key = self._signer.public_jwk()
        payload = signing_input(claims, key.kid)
        token = assemble(payload, self._signer.sign(payload))
        replay_until = proof.iat + self._policy.proof.replay_window
        return (
            IssuedAccessToken(token, self._policy.lifetime, scope, jti, client_id, proof.jkt),
            IssuedToken(
                jti=jti,
                client_id=client_id,
                jkt=proof.jkt,
                scope=scope,
                audience=audience,
                issued_at=now,
                expires_at=claims.exp,
                retain_until=max(claims.exp, replay_until)
                + self._policy.record_retention_days * DAY_SECONDS,
                principal=principal,
            ),
            self._issuance_record(request, principal or client_id, client_id, proof.jkt, jti, at),
        )

    def _issuance_record(
        self, request: TokenRequest, principal: str, client_id: str, jkt: str, jti: str, at: float
    ) -> UsageRecord:
        """The ledger record of this issuance: ids only, never the token or secret."""
        return UsageRecord.build(
            at=at,
            retention_days=self._policy.usage_retention_days,
            record_id=RECORD_PREFIX + jti,
            principal=principal,
            client_id=client_id,
            jkt=jkt,
            token_jti=jti,
            source_ip=request.source_ip,
            user_agent=request.user_agent,
            request_id=request.request_id,
            event=EventType.TOKEN_ISSUED,
        )
