"""The error tree. Every error carries a stable OAuth code (``error``) and an audit
``reason``; only :mod:`tokenbroker.http` knows HTTP statuses and headers.

Callers can catch at any level: ``BrokerError`` (everything), ``OAuthError`` (reported
to the client as RFC 6749 §5.2 JSON), or a leaf.
"""

from __future__ import annotations

from typing import ClassVar


class BrokerError(Exception):
    """Base of every error the broker raises on purpose."""

    error: ClassVar[str] = "server_error"
    reason: ClassVar[str] = "error"

    def __init__(self, description: str = "", *, reason: str | None = None) -> None:
        super().__init__(description)
        self.description = description
        if reason is not None:
            # an instance-level reason refines the class default (e.g. "proof_replayed")
            self.reason = reason  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.error!r}, {self.description!r})"


class OAuthError(BrokerError):
    """An error reported to the client with an OAuth error code. A leaf that sets its
    ``error`` and no ``reason`` is audited under its code."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "error" in cls.__dict__ and "reason" not in cls.__dict__:
            cls.reason = cls.error


class InvalidRequest(OAuthError):
    """RFC 6749 §5.2 ``invalid_request``: malformed, missing or duplicated parameter."""

    error = "invalid_request"


class InvalidClient(OAuthError):
    """RFC 6749 §5.2 ``invalid_client``: client authentication failed.

    The description is fixed so that unknown, wrong-secret and disabled clients get
    byte-identical responses.
    """

    error = "invalid_client"

    def __init__(self, description: str = "client authentication failed", **kw: str) -> None:
        super().__init__("client authentication failed", **kw)


class InvalidGrant(OAuthError):
    """RFC 6749 §5.2 ``invalid_grant``: e.g. the proof key is not an enrolled device."""

    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    """RFC 6749 §5.2 ``unauthorized_client``."""

    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    """RFC 6749 §5.2 ``unsupported_grant_type``."""

    error = "unsupported_grant_type"


class InvalidScope(OAuthError):
    """RFC 6749 §5.2 ``invalid_scope``."""

    error = "invalid_scope"


class InvalidDpopProof(OAuthError):
    """RFC 9449 §5, §7.1 ``invalid_dpop_proof``: the DPoP proof failed a §4.3 check."""

    error = "invalid_dpop_proof"


class ProofReplayed(InvalidDpopProof):
    """RFC 9449 §11.1: a proof (jkt, jti) seen before within its acceptance window."""

    reason = "proof_replayed"


class UseDpopNonce(OAuthError):
    """RFC 9449 §8 ``use_dpop_nonce``."""

    error = "use_dpop_nonce"


class InvalidToken(OAuthError):
    """RFC 6750 §3.1 ``invalid_token``: the access token is missing, malformed,
    expired, not ours, or not bound to the presented proof."""

    error = "invalid_token"


class InsufficientScope(OAuthError):
    """RFC 6750 §3.1 ``insufficient_scope``."""

    error = "insufficient_scope"


class TemporarilyUnavailable(OAuthError):
    """RFC 6749 §5.2/§4.1.2.1 ``temporarily_unavailable``: a dependency (DynamoDB,
    KMS, configuration) failed. The broker fails closed: no token, no Allow."""

    error = "temporarily_unavailable"
    reason = "dependency_failure"


class ConfigurationError(TemporarilyUnavailable):
    """Settings are missing or invalid; reported to clients as temporarily_unavailable."""

    reason = "configuration_error"


# ----- admin-side errors (CLI); not OAuth, but same tree -------------------------------


class AdminError(BrokerError):
    """An admin operation could not be carried out."""

    error = "admin_error"


class NotFound(AdminError):
    """The client or device does not exist."""

    error = "not_found"


class Conflict(AdminError):
    """The operation conflicts with current state (already enrolled, limit reached)."""

    error = "conflict"


class DeviceLimitReached(Conflict):
    """The client already has ``max_devices`` active devices."""

    error = "device_limit_reached"


class InvalidTarget(OAuthError):
    """RFC 8707 §2 ``invalid_target``: the requested resource is not an audience we serve."""

    error = "invalid_target"


class DeviceRevoked(InvalidToken):
    """The token's device (cnf.jkt) was revoked after issuance."""

    reason = "device_revoked"


class ClientDisabled(InvalidToken):
    """The token's client was disabled after issuance."""

    reason = "client_disabled"


# ----- ledger and audit errors (stream function, audit CLI) ----------------------------


class LedgerError(BrokerError):
    """A ledger record or an auditor's query could not be handled."""

    error = "ledger_error"


class MalformedRecord(LedgerError):
    """A stored item is not a readable ledger record (reported, never counted)."""

    error = "malformed_record"
    reason = "malformed_record"


class InvalidQuery(LedgerError):
    """An auditor's query is invalid (time range, limit, filter, cursor): the caller's
    mistake. The message names the problem, not a command-line flag; ``parameter``
    names the part of the query at fault (e.g. ``next_token``) for a caller to map."""

    error = "invalid_query"
    reason = "invalid_query"

    def __init__(self, description: str = "", *, parameter: str = "") -> None:
        super().__init__(description)
        self.parameter = parameter
