"""Authorize one request at the edge (RFC 9449 §7, RFC 6750 §3, RFC 9068 §4).

The checks run in this order, cheapest and stateless first, and the AWS calls run last,
only after everything else has passed:

1. ``Authorization: DPoP <token>`` (scheme case-insensitive; Bearer is a downgrade),
   exactly one ``DPoP`` header, sizes bounded;
2. the access token (typ, alg, kid from the in-memory key cache, iss, aud, times, cnf);
3. the proof (RFC 9449 §4.3, with htm/htu/ath) and proof key == ``cnf.jkt``;
4. the route's required scope (a resource no RFC 6749 scope token can name is refused);
5. device and client still active, the token's scope still within the client's scopes
   and its ``iat`` not before the client's not-before (a view at most 5 s old: one
   consistent read per pair per 5 s; see domain/liveness.py for why not a transaction);
   then the quotas (domain/quotas.py: a lease spent locally, one conditional
   UpdateItem per lease of n requests; a spent window is QuotaExceeded, recorded);
6. the caller's response is built (``respond``), so nothing can fail after the write;
7. ONE conditional write: the usage record, which is also the replay guard. Then the
   response built in step 6 is returned as it is (ARCHITECTURE invariant 8).

Denials of authentic tokens (a token that verified: wrong scope, replay, revoked
device) are recorded with a second, best-effort write; garbage is not recorded, so no
one on the internet can make us write without holding a valid token. A token holder
without the key can still be denied as often as they like, so denial records are
rate-limited per token: at most ``DENIALS_PER_MINUTE`` records per token ``jti`` per
clock minute (deterministic, time-bucketed record ids written with a conditional put,
so every execution environment together stays within the bound; an environment also
remembers which it wrote, so a flood costs it no AWS call once the minute's budget is
spent). A token lives at most 15 minutes: at most 16 such minutes, 64 records.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from tokenbroker.domain.clock import Clock
from tokenbroker.domain.errors import (
    InsufficientScope,
    InvalidDpopProof,
    InvalidToken,
    OAuthError,
    ProofReplayed,
    TemporarilyUnavailable,
)
from tokenbroker.domain.jose import b64url_encode
from tokenbroker.domain.liveness import LivenessView
from tokenbroker.domain.models import Decision, UsageRecord
from tokenbroker.domain.policy import is_scope_token
from tokenbroker.domain.rfc9068 import MAX_TOKEN_LENGTH, AccessTokenClaims
from tokenbroker.domain.rfc9449 import ProofPolicy, replay_key, verify_proof
from tokenbroker.domain.token_cache import VerifiedTokens

if TYPE_CHECKING:  # annotations only: domain.ports imports every record type (aggregates,
    # digests), ~7 % of the authorizer's cold init (benchmarks/authorizer_callgrind.py)
    from tokenbroker.domain.ports import UsageLedger
    from tokenbroker.domain.quotas import Admission, QuotaCheck

MAX_HEADER = MAX_TOKEN_LENGTH + 16
#: the stated bound on denial records: per token jti, per clock minute
DENIALS_PER_MINUTE = 4
_MAX_BUDGETS = 10_000
T = TypeVar("T")


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


class Grant(NamedTuple):
    """An allowed request: what the protected function may rely on. (A NamedTuple, as
    immutable as a frozen dataclass and ~2 us cheaper to build on every request.)"""

    principal: str
    client_id: str
    jkt: str
    scope: tuple[str, ...]
    token_jti: str
    usage_id: str
    expires_at: int
    #: the quota counter this request was counted under ("" = no quota applies);
    #: the protected function reports model units against it (services/quotas.py)
    quota: str = ""

    def context(self) -> dict[str, str]:
        """Authorizer context (API Gateway allows only flat string/number/bool values)."""
        context = {
            "principal": self.principal,
            "client_id": self.client_id,
            "jkt": self.jkt,
            "scope": " ".join(self.scope),
            "token_jti": self.token_jti,
            "usage_id": self.usage_id,
        }
        if self.quota:
            context["quota"] = self.quota
        return context


@dataclass(frozen=True)
class ResourcePolicy:
    issuer: str  # "" = derive from the request URL (same rule as the token endpoint)
    audience: str
    #: "METHOD /route" -> required scope template ("" = any valid token); unlisted = deny
    route_scopes: Mapping[str, str]
    proof: ProofPolicy
    usage_retention_days: int = 400


def required_scope(policy: ResourcePolicy, request: ResourceRequest) -> str:
    """The scope the route requires, with ``{param}``s filled in ("" = any valid token).

    Raises InsufficientScope when the route is not configured, or when the filled-in
    scope is not one RFC 6749 §3.3 scope token (see :mod:`tokenbroker.domain.policy`):
    no token can carry such a scope, so the answer is a clean 403, never a 5xx."""
    template = policy.route_scopes.get(f"{request.method} {request.route}")
    if template is None:
        raise InsufficientScope(
            "this route is not open to any token", reason="route_not_configured"
        )
    try:
        scope = template.format_map(dict(request.path_parameters))
    except (KeyError, ValueError, IndexError) as exc:
        raise InsufficientScope(
            "this route is not open to any token", reason="route_not_configured"
        ) from exc
    if scope and not is_scope_token(scope):
        raise InsufficientScope("no scope can name this resource", reason="resource_not_nameable")
    return scope


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
    # No token68 (RFC 7235 §2.1) regex here (~2 us on a 600-character token): the JWS
    # parser accepts base64url segments and two dots only, a subset of token68, and
    # refuses everything else as a malformed InvalidToken (domain/jose.py)
    return token.strip()


def request_hash(request_id: str) -> str:
    return b64url_encode(hashlib.sha256(request_id.encode()).digest())


class AuthorizationService:
    def __init__(
        self,
        *,
        resolve_key: Callable[[str], Any | None],
        usage: UsageLedger,
        liveness: LivenessView,
        clock: Clock,
        policy: ResourcePolicy,
        quotas: QuotaCheck | None = None,
    ) -> None:
        self._quotas = quotas
        self._resolve_key = resolve_key
        self._usage = usage
        self._liveness = liveness
        self._clock = clock
        self._policy = policy
        self._denials = _DenialBudget()
        #: tokens verified in this execution environment: one signature check per token,
        #: times and key trust re-checked on every use (domain/token_cache.py says why)
        self._tokens = VerifiedTokens()

    def authorize(self, request: ResourceRequest, *, request_issuer: str = "") -> Grant:
        """Returns a Grant or raises an OAuthError (InvalidToken, InvalidDpopProof,
        InsufficientScope, TemporarilyUnavailable). Never returns without the record."""
        return self.authorize_then(request, _itself, request_issuer=request_issuer)

    def authorize_then(
        self,
        request: ResourceRequest,
        respond: Callable[[Grant], T],
        *,
        request_issuer: str = "",
    ) -> T:
        """Decide completely, build the response with ``respond(grant)``, then write the
        one usage record and return that response unchanged. If ``respond`` raises,
        nothing is written; if the write fails, the response is dropped and the error
        (ProofReplayed, TemporarilyUnavailable) propagates: an allowed record exists
        exactly for the requests whose allow response was returned."""
        now = self._clock()
        token = _dpop_token(_one(request.authorization, "Authorization", InvalidToken))
        proof_value = _one(request.dpop, "DPoP", InvalidDpopProof)
        issuer = self._policy.issuer or request_issuer
        if not issuer:
            raise TemporarilyUnavailable("no issuer is configured")
        claims = self._tokens.verify(
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
            if scope and scope not in claims.scope:
                raise InsufficientScope(f"this route requires scope {scope}")
            self._liveness.require_active(
                claims.client_id,
                claims.jkt,
                scope=claims.scope,
                issued_at=claims.iat,
                jti=claims.jti,  # RFC 7009 revocations (services/revocation.py)
            )
            # quotas last: a request denied for any other reason spends none of them
            admission = self._admit_quota(request, claims, now)
            quota, claim = (admission.reference, admission.claim) if admission else ("", None)
            record = self._record(
                request,
                claims,
                Decision.ALLOW,
                "ok",
                now,
                replay_key(proof.jkt, proof.jti),
                proof.jti,
            )
            grant = Grant(
                principal=claims.sub,
                client_id=claims.client_id,
                jkt=claims.jkt,
                scope=claims.scope,
                token_jti=claims.jti,
                usage_id=record.record_id,
                expires_at=claims.exp,
                quota=quota,
            )
            try:
                response = respond(grant)  # everything is decided and built: now the write
                if claim is not None and self._quotas is not None:
                    # the lease rides in the usage write: one TransactWriteItems (issue 12)
                    self._quotas.record_claimed(claim, record, now, self._usage.record_use)
                else:
                    self._usage.record_use(record)
            except ProofReplayed:
                # the usage write's condition refused it: nothing was written, so the
                # replay spends no quota unit (issue 12; services/quotas.py::release; a
                # folded lease was cancelled with the record: nothing to give back)
                if self._quotas is not None and claim is None:
                    self._quotas.release(quota, now)
                raise
        except TemporarilyUnavailable:
            raise  # the store is down: nothing to record it in
        except OAuthError as denial:
            self._record_denial(request, claims, denial, now)
            raise
        return response

    def _admit_quota(
        self, request: ResourceRequest, claims: AccessTokenClaims, now: float
    ) -> Admission | None:
        """Requests per minute/day and the day's model units (services/quotas.py):
        QuotaExceeded (a recorded denial), TemporarilyUnavailable (fail closed); a lease
        left to the usage write comes back as the admission's claim."""
        if self._quotas is None:
            return None
        model = request.path_parameters.get("model", "")
        return self._quotas.admission(claims.client_id, claims.sub, model, now)

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
        minute = int(now // 60)
        slot = self._denials.take(claims.jti, minute)
        if slot is None:
            return  # this minute's budget for this token is spent: the flood is bounded
        record_id = denial_record_id(claims.jti, minute, slot)
        record = self._record(request, claims, Decision.DENY, denial.reason, now, record_id, "")
        # best effort: the decision is already Deny whether or not the record lands; a
        # record id another environment wrote already is the bound at work (nothing new)
        with contextlib.suppress(TemporarilyUnavailable):
            self._usage.record_denial(record)


def denial_record_id(token_jti: str, minute: int, slot: int) -> str:
    """The id of denial record ``slot`` (0..DENIALS_PER_MINUTE-1) of a token in a clock
    minute: deterministic, so the conditional put admits at most DENIALS_PER_MINUTE per
    token per minute across every execution environment."""
    return "deny:" + request_hash(f"{token_jti}\x00{minute}\x00{slot}")


class _DenialBudget:
    """Per execution environment: which denial slots of (token jti, minute) it has used.
    Bounded memory (cleared when full or when the minute moves on)."""

    def __init__(self) -> None:
        self._minute = -1
        self._used: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, token_jti: str, minute: int) -> int | None:
        with self._lock:
            if minute != self._minute or len(self._used) >= _MAX_BUDGETS:
                self._minute, self._used = minute, {}
            slot = self._used.get(token_jti, 0)
            if slot >= DENIALS_PER_MINUTE:
                return None
            self._used[token_jti] = slot + 1
            return slot


def _itself(grant: Grant) -> Grant:
    return grant
