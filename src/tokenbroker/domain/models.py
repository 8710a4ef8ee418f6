"""Domain records. Plain frozen dataclasses; adapters map them to and from items."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from tokenbroker.domain.units import DAY_SECONDS, MAX_LEDGER_FIELD, MAX_SOURCE_IP


class Status(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"  # clients
    REVOKED = "revoked"  # devices


@dataclass(frozen=True)
class Client:
    client_id: str
    name: str
    secret_hash: str
    scopes: frozenset[str]
    max_devices: int
    status: Status
    created_at: int
    active_devices: int = 0
    #: tokens issued (iat) before this epoch second are refused at the edge
    tokens_not_before: int = 0
    #: RFC 7523 private_key_jwt: the client's registered public JWK (JSON; "" = none)
    public_jwk: str = ""
    #: RFC 8707 resources (token audiences) the client may ask for; empty: every
    #: audience of the deployment (domain/rfc8707.py)
    resources: frozenset[str] = frozenset()

    @property
    def active(self) -> bool:
        return self.status is Status.ACTIVE


@dataclass(frozen=True)
class Device:
    jkt: str
    client_id: str
    label: str
    status: Status
    enrolled_at: int
    revoked_at: int | None = None
    #: the person who enrolled it themselves ("<issuer>|<sub>"); "" = enrolled by an admin
    principal: str = ""
    #: containment step_up (epoch seconds; 0: none): no new tokens until a fresh
    #: identity check (token exchange) or re-enrollment; the edge refuses its tokens
    step_up_at: int = 0

    @property
    def active(self) -> bool:
        return self.status is Status.ACTIVE


@dataclass(frozen=True)
class PersonAccount:
    """What the broker keeps about a person (the people table): whether they may get
    tokens, and how many devices they have enrolled themselves (the per-person cap)."""

    principal: str
    status: Status = Status.ACTIVE
    active_devices: int = 0

    @property
    def active(self) -> bool:
        return self.status is Status.ACTIVE


@dataclass(frozen=True)
class IssuedToken:
    """What the ledger keeps about an issued access token (never the token itself)."""

    jti: str
    client_id: str
    jkt: str
    scope: tuple[str, ...]
    audience: str
    issued_at: int
    expires_at: int
    #: the record must outlive the token and the proof's replay window
    retain_until: int
    #: the person the token was issued to (token exchange); "" = the client itself
    principal: str = ""


@dataclass(frozen=True)
class PublicJwk:
    """A public signing key as served in the JWKS (``kid`` = RFC 7638 thumbprint)."""

    kid: str
    jwk: dict[str, str] = field(hash=False)


class Decision(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class EventType(StrEnum):
    """What a ledger record is about."""

    REQUEST = "request"  # a use of an access token at the edge
    TOKEN_ISSUED = "token_issued"
    TOKEN_DENIED = "token_denied"  # a refused token request (rate-bounded, see issuance)
    CLIENT_CREATED = "client_created"
    CLIENT_DISABLED = "client_disabled"
    DEVICE_ENROLLED = "device_enrolled"
    DEVICE_REVOKED = "device_revoked"
    CLIENT_SCOPES_CHANGED = "client_scopes_changed"
    CLIENT_TOKENS_REVOKED = "client_tokens_revoked"
    #: a used refresh token came back: its family was revoked (RFC 9700 §4.14.2)
    REFRESH_REUSED = "refresh_reused"
    PERSON_DISABLED = "person_disabled"
    PERSON_ENABLED = "person_enabled"
    #: signing key rotation (services/keys.py): the next key is published, on a schedule
    KEY_ROTATION_STARTED = "key_rotation_started"
    #: a finished rotation was settled: the outgoing key is retired
    KEY_RETIRED = "key_retired"
    #: RFC 7009: a client revoked one of its access tokens or a refresh token family
    TOKEN_REVOKED = "token_revoked"
    #: an admin registered (or replaced) a client's private_key_jwt public key
    CLIENT_KEY_SET = "client_key_set"
    #: a sharing rule flagged a device or principal (domain/sharing.py)
    SHARING_DETECTED = "sharing_detected"
    #: containment step_up: the device must pass a fresh identity check first
    DEVICE_STEP_UP_REQUIRED = "device_step_up_required"
    CLIENT_CONTAINMENT_CHANGED = "client_containment_changed"
    #: a protected function reported model units against a usage record (report_usage)
    UNITS_REPORTED = "units_reported"


@dataclass(frozen=True, kw_only=True)
class UsageRecord:
    """One ledger record: a use of an authentic access token at the edge (allowed or
    denied), a token issuance, or an admin action. One schema for all of them.

    Ids and hashes only: never a token, proof or secret.
    """

    record_id: str  # allowed: the proof's replay key; denied: derived from the request id
    at_ms: int
    decision: Decision
    reason: str
    principal: str
    client_id: str
    retain_until: int
    event: EventType = EventType.REQUEST
    # what the event has of these (an admin action has no token, route or source IP)
    jkt: str = ""
    token_jti: str = ""
    proof_jti_hash: str = ""
    method: str = ""
    route: str = ""
    resource: str = ""
    source_ip: str = ""
    user_agent: str = ""
    request_id: str = ""
    actor: str = ""  # who acted, for admin events (an IAM ARN)

    @classmethod
    def build(
        cls,
        *,
        at: float,
        retention_days: int,
        record_id: str,
        principal: str,
        client_id: str,
        decision: Decision = Decision.ALLOW,
        reason: str = "ok",
        event: EventType = EventType.REQUEST,
        resource: str = "",
        source_ip: str = "",
        user_agent: str = "",
        request_id: str = "",
        jkt: str = "",
        token_jti: str = "",
        proof_jti_hash: str = "",
        method: str = "",
        route: str = "",
        actor: str = "",
    ) -> UsageRecord:
        """The one way services make a record: ``at`` (epoch seconds) becomes ``at_ms``
        and the retention deadline; fields copied from a request are cut to the ledger's
        bounds."""
        # Built for every request at the edge (issue 13): a frozen dataclass's __init__
        # sets each of the 18 fields with object.__setattr__ (~6 us here); filling the
        # new instance's __dict__ builds the same object (build() in all: ~2.6 us,
        # timeit, same machine and minute). It stays frozen
        # (setattr still raises); tests/unit/test_domain_shared.py proves the result
        # equals the constructor's, field for field, so a field added without being
        # set here fails that test.
        record = object.__new__(cls)
        record.__dict__.update(
            record_id=record_id,
            at_ms=int(at * 1000),
            decision=decision,
            reason=reason,
            principal=principal,
            client_id=client_id,
            retain_until=int(at) + retention_days * DAY_SECONDS,
            event=event,
            resource=resource[:MAX_LEDGER_FIELD],
            source_ip=source_ip[:MAX_SOURCE_IP],
            user_agent=user_agent[:MAX_LEDGER_FIELD],
            request_id=request_id[:MAX_LEDGER_FIELD],
            jkt=jkt,
            token_jti=token_jti,
            proof_jti_hash=proof_jti_hash,
            method=method,
            route=route,
            actor=actor,
        )
        return record


@dataclass(frozen=True)
class RefreshGrant:
    """A refresh token as stored (``token_id`` = the SHA-256 of the opaque value)."""

    token_id: str
    family: str
    client_id: str
    jkt: str
    principal: str
    scope: tuple[str, ...]
    audience: str
    issued_at: int
    started_at: int
    status: str
    family_status: str = "active"
    family_current: str = ""
    retain_until: int = 0
