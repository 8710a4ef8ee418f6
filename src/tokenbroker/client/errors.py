"""The client SDK's error tree: catch ``BrokerClientError`` for everything, or a leaf.

Every error carries a short, stable code in ``error`` (the OAuth code when the broker sent
one, RFC 6749 §5.2) and a one-line ``description``. Nothing here ever holds the client
secret, an access token, a proof or key material: messages are built from public facts
(URLs, status codes, OAuth codes, thumbprints) and the broker's own descriptions, which
are scrubbed before they are stored (see ``session.py``).
"""

from __future__ import annotations

from typing import ClassVar


class BrokerClientError(Exception):
    """Base of every error the client SDK raises on purpose."""

    error: ClassVar[str] = "client_error"

    def __init__(self, description: str, *, error: str | None = None) -> None:
        super().__init__(description)
        self.description = description
        if error is not None:
            self.error = error  # type: ignore[misc]  # an instance refines the class code

    def __str__(self) -> str:
        return self.description

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.error!r}, {self.description!r})"


class BrokerUnavailable(BrokerClientError):
    """The broker cannot be used right now: unreachable, a 5xx, or a body that is not
    the JSON it should be. Retrying later may help."""

    error = "temporarily_unavailable"


class MetadataError(BrokerClientError):
    """RFC 8414 metadata is missing, incomplete or names another issuer: the issuer
    URL is probably wrong."""

    error = "invalid_metadata"


class TokenRequestError(BrokerClientError):
    """The token endpoint refused the request (``error`` is its OAuth code)."""

    error = "invalid_request"


class InvalidClientError(TokenRequestError):
    """RFC 6749 §5.2 ``invalid_client``: unknown client, wrong secret or disabled client
    (the broker does not say which)."""

    error = "invalid_client"


class InvalidGrantError(TokenRequestError):
    """RFC 6749 §5.2 ``invalid_grant``: the device key is not enrolled for this client,
    or the device was revoked."""

    error = "invalid_grant"


class ClockSkewError(TokenRequestError):
    """RFC 9449 ``invalid_dpop_proof`` because of the proof's ``iat``: this machine's
    clock and the broker's disagree."""

    error = "invalid_dpop_proof"


class KeyFileError(BrokerClientError):
    """A device key cannot be created or loaded: missing, corrupt, not P-256, or
    readable by other users."""

    error = "invalid_key"


class TokenDestinationError(BrokerClientError):
    """The request goes to an origin the token was not configured for (or over plain
    HTTP to a host that is not loopback): nothing was sent."""

    error = "invalid_target"
