"""People as principals: RFC 8693 token exchange and self-service device enrollment.

A person signs in to the organisation's OIDC issuer; the app (a broker client) posts the
person's ID token as ``subject_token`` with a DPoP proof. The broker verifies the token
against the issuer's published keys (:mod:`tokenbroker.domain.rfc8693`) and issues a
DPoP-bound access token whose ``sub`` is the person (``<issuer>|<sub>``), ``client_id``
the app and ``act`` the app acting for the person (RFC 8693 §4.1).

AWS round trips per exchange once the issuer's configuration and keys are cached (both
are, per execution environment, for a minute): one consistent read of client + device +
person, one KMS Sign, one transactional write of the token and its ledger record = 3.
A cold cache adds one read of the issuer's entry and two HTTPS GETs (discovery, JWKS).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tokenbroker.domain.clock import Clock
from tokenbroker.domain.errors import (
    InvalidGrant,
    InvalidRequest,
    UnsupportedGrantType,
)
from tokenbroker.domain.models import (
    Client,
    Decision,
    Device,
    EventType,
    PersonAccount,
    Status,
    UsageRecord,
)
from tokenbroker.domain.policy import grant_scope
from tokenbroker.domain.rfc8693 import (
    GRANT_TYPE,
    ISSUED_TOKEN_TYPE,
    Person,
    SubjectTokenRejected,
    TrustedIssuer,
    principal_of,
    unverified_issuer,
    verify_subject_token,
)
from tokenbroker.domain.rfc9449 import DpopProof, ProofPolicy, replay_key
from tokenbroker.services.client_auth import ClientAuthenticator
from tokenbroker.services.issuance import (
    IssuanceService,
    IssuedAccessToken,
    TokenRequest,
    assertion_audiences,
    request_proof,
)
from tokenbroker.services.refresh import RefreshService

_LABEL = re.compile(r"[A-Za-z0-9 .@:/+_-]{0,64}")
_MAX_FIELD = 256
_DAY = 86_400
RECORD_PREFIX = "enr:"


class PeopleDirectory(Protocol):
    def get_client_device_person(
        self, client_id: str, jkt: str, principal: str
    ) -> tuple[Client | None, Device | None, PersonAccount | None]: ...

    def enroll_own_device(self, device: Device, *, cap: int, record: UsageRecord) -> int: ...


class IdpDirectory(Protocol):
    def get(self, issuer: str) -> TrustedIssuer | None: ...


class IssuerKeyResolvers(Protocol):
    def resolver(self, idp: TrustedIssuer) -> Any: ...


@dataclass(frozen=True)
class ExchangePolicy:
    proof: ProofPolicy
    skew: int
    max_devices_per_person: int
    usage_retention_days: int = 400
    #: an enrollment needs a fresh sign-in: an ID token older than this cannot enroll a
    #: device (a token copied later is worth less); exchanges accept the IdP's lifetime
    enrollment_max_age: int = 600


@dataclass(frozen=True)
class Enrollment:
    device: Device
    active_devices: int
    max_devices: int

    def response_body(self) -> dict[str, object]:
        return {
            "jkt": self.device.jkt,
            "principal": self.device.principal,
            "client_id": self.device.client_id,
            "label": self.device.label,
            "status": self.device.status.value,
            "active_devices": self.active_devices,
            "max_devices": self.max_devices,
        }


@dataclass(frozen=True)
class _Verified:
    client: Client
    device: Device | None
    account: PersonAccount | None
    person: Person
    idp: TrustedIssuer
    proof: DpopProof
    now: float


class ExchangeService:
    def __init__(
        self,
        *,
        people: PeopleDirectory,
        idps: IdpDirectory,
        keys: IssuerKeyResolvers,
        issuance: Callable[[], IssuanceService],
        clock: Clock,
        policy: ExchangePolicy,
        refresh: Callable[[], RefreshService | None] | None = None,
        clear_step_up: Callable[[str], None] | None = None,
        authenticator: ClientAuthenticator | None = None,
        issuer: str = "",
    ) -> None:
        """``refresh``: where refresh tokens come from (None: exchanges issue none);
        ``clear_step_up``: lifts a device's containment step_up once the exchange's
        fresh identity check passed (None: the flag stays and the exchange is refused);
        ``authenticator``: the token endpoint's one client authenticator (None: client
        secrets only); ``issuer``: the configured issuer ("" = from the request URL), an
        assertion's audience."""
        self._auth = authenticator or ClientAuthenticator()
        self._configured_issuer = issuer
        self._refresh = refresh
        self._clear_step_up = clear_step_up
        self._people = people
        self._idps = idps
        self._keys = keys
        # built on first use: the enrollment function has no signer or token table
        self._issuance_factory = issuance
        self._clock = clock
        self._policy = policy

    @property
    def _issuance(self) -> IssuanceService:
        return self._issuance_factory()

    # ---- token exchange ---------------------------------------------------------
    def exchange(self, request: TokenRequest, *, request_issuer: str) -> IssuedAccessToken:
        if request.grant_type != GRANT_TYPE:
            raise UnsupportedGrantType("this handler serves token exchange only")
        audience = self._issuance.audience(request.resource)
        v = self._verify(request, request_issuer=request_issuer)
        # RFC 8707: and the client may use that resource
        audience = self._issuance.audience(request.resource, allowed=v.client.resources)
        device = v.device
        if device is None or device.client_id != v.client.client_id:
            raise InvalidGrant(
                "the DPoP proof key is not a device enrolled for this person and client;"
                " enroll it first (tokenbroker devices enroll --self)",
                reason="device_not_enrolled",
            )
        if device.principal != v.person.principal:
            raise InvalidGrant(
                "the DPoP proof key is enrolled to someone else", reason="device_other_person"
            )
        if not device.active:
            raise InvalidGrant(
                "the DPoP proof key belongs to a revoked device", reason="device_revoked"
            )
        scope = grant_scope(request.scope, v.client.scopes & v.idp.scopes)
        if device.step_up_at:  # containment step_up: this exchange is the fresh check
            if self._clear_step_up is None:
                raise InvalidGrant(
                    "this device must be re-enrolled (sharing containment)",
                    reason="step_up_required",
                )
            self._clear_step_up(device.jkt)
        refresh = self._refresh() if self._refresh is not None else None
        if refresh is not None:  # the token comes with a refresh token (a new family)
            return refresh.issue_with_family(
                request,
                v.client.client_id,
                v.proof,
                scope,
                audience,
                self._issuance_issuer(request_issuer),
                v.now,
                principal=v.person.principal,
            )
        return self._issuance.sign_and_record(
            request,
            v.client.client_id,
            v.proof,
            scope,
            audience,
            self._issuance_issuer(request_issuer),
            v.now,
            principal=v.person.principal,
        )

    def _issuance_issuer(self, request_issuer: str) -> str:
        return self._issuance.issuer or request_issuer

    # ---- self-service enrollment --------------------------------------------------
    def enroll(self, request: TokenRequest, *, request_issuer: str = "") -> Enrollment:
        label = request.label or ""
        if not _LABEL.fullmatch(label):
            raise InvalidRequest("label must be at most 64 letters, digits, spaces or .@:/+-_")
        v = self._verify(
            request, max_age=self._policy.enrollment_max_age, request_issuer=request_issuer
        )
        if v.device is not None:
            if v.device.principal == v.person.principal and v.device.active:
                raise InvalidGrant("this key is already enrolled", reason="device_already_enrolled")
            raise InvalidGrant(
                "this key is already enrolled (or was revoked); generate a new device key",
                reason="device_key_taken",
            )
        device = Device(
            jkt=v.proof.jkt,
            client_id=v.client.client_id,
            label=label,
            status=Status.ACTIVE,
            enrolled_at=int(v.now),
            principal=v.person.principal,
        )
        record = UsageRecord(
            record_id=RECORD_PREFIX + replay_key(v.proof.jkt, v.proof.jti),
            at_ms=int(v.now * 1000),
            decision=Decision.ALLOW,
            reason="ok",
            principal=v.person.principal,
            client_id=v.client.client_id,
            jkt=v.proof.jkt,
            source_ip=request.source_ip[:64],
            user_agent=request.user_agent[:_MAX_FIELD],
            request_id=request.request_id[:_MAX_FIELD],
            retain_until=int(v.now) + self._policy.usage_retention_days * _DAY,
            event=EventType.DEVICE_ENROLLED,
            actor=v.person.principal,
        )
        cap = self._policy.max_devices_per_person
        count = self._people.enroll_own_device(device, cap=cap, record=record)
        return Enrollment(device, count, cap)

    # ---- shared checks -----------------------------------------------------------
    def _verify(
        self, request: TokenRequest, *, request_issuer: str, max_age: int = 86_400
    ) -> _Verified:
        client_id = self._auth.claimed_client_id(request.credentials)
        if request.subject_token is None:
            raise InvalidRequest("subject_token is required", reason="subject_token_missing")
        now = self._clock()
        proof = request_proof(request, now, self._policy.proof)
        idp = self._idps.get(unverified_issuer(request.subject_token))
        if idp is None:
            raise SubjectTokenRejected(
                "subject token issuer is not trusted", reason="subject_token_issuer"
            )
        person = verify_subject_token(
            request.subject_token,
            token_type=request.subject_token_type,
            trusted=idp,
            resolve_key=self._keys.resolver(idp),
            now=now,
            skew=self._policy.skew,
            max_age=max_age,
        )
        found, device, account = self._people.get_client_device_person(
            client_id, proof.jkt, person.principal
        )
        client = self._auth.check(
            request.credentials,
            found,
            audiences=assertion_audiences(request, self._configured_issuer or request_issuer),
        )
        if account is not None and not account.active:
            raise InvalidGrant("this person is disabled", reason="person_disabled")
        return _Verified(client, device, account, person, idp, proof, now)


__all__ = ["ISSUED_TOKEN_TYPE", "ExchangePolicy", "ExchangeService", "principal_of"]
