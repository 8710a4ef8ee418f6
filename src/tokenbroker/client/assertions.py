"""RFC 7523 §2.2 ``private_key_jwt``: the client authenticates with a short JWT signed
by its own private key (an admin registered the public JWK with ``tokenbroker clients
set-jwk``), so the client holds no shared secret. A new assertion for every request: the
broker accepts each ``jti`` once."""

from __future__ import annotations

import secrets

from tokenbroker.client.errors import BrokerClientError
from tokenbroker.client.keys import DeviceKey

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
METHOD = "private_key_jwt"
#: seconds an assertion lives (the broker refuses more than 300)
LIFETIME = 60


def assertion_form(key: DeviceKey, *, client_id: str, audience: str, now: float) -> dict[str, str]:
    """The form parameters that authenticate ``client_id`` at ``audience`` (the endpoint
    URL, RFC 7523 §3 C)."""
    issued = int(now)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": issued,
        "exp": issued + LIFETIME,
        "jti": secrets.token_urlsafe(24),
    }
    return {
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": key.sign_jwt(claims, {"typ": "JWT"}),
    }


def one_method(client_secret: str | None, client_key: DeviceKey | None) -> None:
    """Exactly one way to authenticate (RFC 6749 §2.3)."""
    if (client_secret is None) == (client_key is None):
        raise BrokerClientError(
            "give the client a secret or a client key (private_key_jwt), exactly one",
            error="invalid_configuration",
        )
