"""Authorize one request at the edge (RFC 9449 §7, RFC 6750 §3, RFC 9068 §4).

The checks run in this order, cheapest and stateless first, and the AWS calls run last,
only after everything else has passed:

1. ``Authorization: DPoP <token>`` (scheme case-insensitive; Bearer is a downgrade),
   exactly one ``DPoP`` header, sizes bounded;
2. the access token (typ, alg, kid from the in-memory key cache, iss, aud, times, cnf);
3. the proof (RFC 9449 §4.3, with htm/htu/ath) and proof key == ``cnf.jkt``;
4. the route's required scope;
5. device and client still active (a view at most 5 s old: one consistent read per
   pair per 5 s; see domain/liveness.py for why not a transaction), then
6. ONE conditional write: the usage record, which is also the replay guard.

Denials of authentic tokens (a token that verified: wrong scope, replay, revoked
device) are recorded with a second, best-effort write; garbage is not recorded, so no
one on the internet can make us write without holding a valid token.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tokenbroker.domain.clock import Clock
from tokenbroker.domain.errors import (
    InsufficientScope,
    InvalidDpopProof,
    InvalidToken,
    OAuthError,
    TemporarilyUnavailable,
)
from tokenbroker.domain.jose import b64url_encode
from tokenbroker.domain.models import Decision, UsageRecord
from tokenbroker.domain.ports import UsageLedger
from tokenbroker.domain.rfc9068 import MAX_TOKEN_LENGTH, AccessTokenClaims, verify_access_token
from tokenbroker.domain.rfc9449 import ProofPolicy, replay_key, verify_proof

_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
MAX_HEADER = MAX_TOKEN_LENGTH + 16


@dataclass(frozen=True)
class ResourceRequest:
    """What the edge knows about one incoming request (from any event adapter)."""

    authorization: tuple[str, ...]  # every Authorization header value
    dpop: tuple[str, ...]  # every DPoP header value
    method: str
    url: str  # the URL the client called (scheme, host, base path, path)
    route: str  # the route template, e.g. "/v1/models/{model}/invoke"
    path_parameters: Mapping[str, str] = field(default_factory=dict)
    source_ip: str = ""
    user_agent: str = ""
    request_id: str = ""


@dataclass(frozen=True)
class Grant:
    """An allowed request: what the protected function may rely on."""

    principal: str
    client_id: str
    jkt: str
    scope: tuple[str, ...]
    token_jti: str
    usage_id: str
    expires_at: int

    def context(self) -> dict[str, str]:
        """Authorizer context (API Gateway allows only flat string/number/bool values)."""
        return {
            "principal": self.principal,
            "client_id": self.client_id,
            "jkt": self.jkt,
            "scope": " ".join(self.scope),
            "token_jti": self.token_jti,
            "usage_id": self.usage_id,
        }


@dataclass(frozen=True)
class ResourcePolicy:
    issuer: str  # "" = derive from the request URL (same rule as the token endpoint)
    audience: str
    #: "METHOD /route" -> required scope template ("" = any valid token); unlisted = deny
    route_scopes: Mapping[str, str]
    proof: ProofPolicy
    usage_retention_days: int = 400


def required_scope(policy: ResourcePolicy, request: ResourceRequest) -> str | None:
    """The scope the route requires, with ``{param}``s filled in; None = route unknown."""
    template = policy.route_scopes.get(f"{request.method} {request.route}")
    if template is None:
        return None
    try:
        return template.format_map(dict(request.path_parameters))
    except (KeyError, ValueError, IndexError):
        return None


def _one(values: tuple[str, ...], what: str, error: type[OAuthError]) -> str:
    if not values:
        raise error(f"the {what} header is missing")
    if len(values) > 1:
        raise error(f"more than one {what} header")
    value = values[0]
    if len(value) > MAX_HEADER:
        raise error(f"the {what} header is too large")
    return value


def _dpop_token(authorization: str) -> str:
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() == "bearer":
        # RFC 9449 §7.2: a DPoP-bound token presented as a bearer token is rejected
        raise InvalidToken("DPoP-bound tokens must use the DPoP scheme", reason="bearer_downgrade")
    if scheme.lower() != "dpop":
        raise InvalidToken("the DPoP authorization scheme is required")
    token = token.strip()
    if not _TOKEN68.fullmatch(token):
        raise InvalidToken("the access token is malformed")
    return token


def request_hash(request_id: str) -> str:
    return b64url_encode(hashlib.sha256(request_id.encode()).digest())


class AuthorizationService:
    def __init__(
        self,
        *,
        resolve_key: Callable[[str], Any | None],
        usage: UsageLedger,
        clock: Clock,
        policy: ResourcePolicy,
    ) -> None:
        self._resolve_key = resolve_key
        self._usage = usage
        self._clock = clock
        self._policy = policy

    def authorize(self, request: ResourceRequest, *, request_issuer: str = "") -> Grant:
        """Returns a Grant or raises an OAuthError (InvalidToken, InvalidDpopProof,
        InsufficientScope, TemporarilyUnavailable). Never returns without the record."""
        now = self._clock()
        token = _dpop_token(_one(request.authorization, "Authorization", InvalidToken))
        proof_value = _one(request.dpop, "DPoP", InvalidDpopProof)
        issuer = self._policy.issuer or request_issuer
        if not issuer:
            raise TemporarilyUnavailable("no issuer is configured")
        claims = verify_access_token(
            token,
            resolve_key=self._resolve_key,
            issuer=issuer,
            audience=self._policy.audience,
            now=now,
            skew=self._policy.proof.skew,
        )
        # From here on the token is authentic: denials are recorded.
        try:
            proof = verify_proof(
                proof_value,
                method=request.method,
                url=request.url,
                now=now,
                policy=self._policy.proof,
                access_token=token,
            )
            if proof.jkt != claims.jkt:
                raise InvalidDpopProof(
                    "the DPoP proof key is not the key the token is bound to",
                    reason="proof_key_mismatch",
                )
            scope = required_scope(self._policy, request)
            if scope is None:
                raise InsufficientScope(
                    "this route is not open to any token", reason="route_not_configured"
                )
            if scope and scope not in claims.scope:
                raise InsufficientScope(f"this route requires scope {scope}")
            record = self._record(
                request,
                claims,
                Decision.ALLOW,
                "ok",
                now,
                replay_key(proof.jkt, proof.jti),
                proof.jti,
            )
            self._usage.record_use(record)
        except TemporarilyUnavailable:
            raise  # the store is down: nothing to record it in
        except OAuthError as denial:
            self._record_denial(request, claims, denial, now)
            raise
        return Grant(
            principal=claims.sub,
            client_id=claims.client_id,
            jkt=claims.jkt,
            scope=claims.scope,
            token_jti=claims.jti,
            usage_id=record.record_id,
            expires_at=claims.exp,
        )

    def _record(
        self,
        request: ResourceRequest,
        claims: AccessTokenClaims,
        decision: Decision,
        reason: str,
        now: float,
        record_id: str,
        proof_jti: str,
    ) -> UsageRecord:
        resource = (
            next(iter(request.path_parameters.values()), "") if request.path_parameters else ""
        )
        return UsageRecord.build(
            at=now,
            retention_days=self._policy.usage_retention_days,
            record_id=record_id,
            decision=decision,
            reason=reason,
            principal=claims.sub,
            client_id=claims.client_id,
            jkt=claims.jkt,
            token_jti=claims.jti,
            proof_jti_hash=request_hash(proof_jti) if proof_jti else "",
            method=request.method,
            route=request.route,
            resource=resource,
            source_ip=request.source_ip,
            user_agent=request.user_agent,
            request_id=request.request_id,
        )

    def _record_denial(
        self, request: ResourceRequest, claims: AccessTokenClaims, denial: OAuthError, now: float
    ) -> None:
        record_id = "deny:" + request_hash(f"{request.request_id}\x00{claims.jti}\x00{now}")
        record = self._record(request, claims, Decision.DENY, denial.reason, now, record_id, "")
        # best effort: the decision is already Deny whether or not the record lands
        with contextlib.suppress(TemporarilyUnavailable):
            self._usage.record_denial(record)
