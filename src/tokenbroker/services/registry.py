"""The ONE registry of what the broker's OAuth endpoints really do: which grant types
the token endpoint dispatches (and to which service), which client authentication
methods the handlers accept, and which endpoints exist. The token endpoint dispatches
from :data:`GRANTS` (web/endpoints.py) and the RFC 8414 metadata is built from these
tables (services/discovery.py), so the metadata cannot list what is not there.
Tests check the endpoints against template.yaml's routes."""

from __future__ import annotations

from dataclasses import dataclass

from tokenbroker.domain.jose import PROOF_ALGORITHMS
from tokenbroker.domain.rfc7523 import ASSERTION_ALGORITHMS
from tokenbroker.domain.rfc8693 import GRANT_TYPE as TOKEN_EXCHANGE
from tokenbroker.services.issuance import GRANT_TYPE as CLIENT_CREDENTIALS
from tokenbroker.services.refresh import GRANT_TYPE as REFRESH_TOKEN


@dataclass(frozen=True)
class GrantRegistration:
    grant_type: str
    service: str  # the Container member that handles it
    method: str  # its method: (request, *, request_issuer) -> IssuedAccessToken


#: the token endpoint's grants; the first is the default (it answers unknown grant types)
GRANTS: tuple[GrantRegistration, ...] = (
    GrantRegistration(CLIENT_CREDENTIALS, "issuance", "issue"),
    GrantRegistration(TOKEN_EXCHANGE, "exchange", "exchange"),  # RFC 8693
    GrantRegistration(REFRESH_TOKEN, "refresh", "refresh"),  # RFC 6749 §6
)


def grant_handler(grant_type: str | None) -> GrantRegistration:
    return next((g for g in GRANTS if g.grant_type == grant_type), GRANTS[0])


#: client authentication at the token endpoint, every grant (web/requests.py parses
#: exactly these; services/client_auth.py checks them)
CLIENT_AUTH_METHODS: tuple[str, ...] = (
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",  # RFC 7523 §2.2
)
#: ... and at revocation and introspection (web/lifecycle.py, the same authenticator)
LIFECYCLE_AUTH_METHODS: tuple[str, ...] = CLIENT_AUTH_METHODS


@dataclass(frozen=True)
class EndpointRegistration:
    metadata_name: str  # the RFC 8414 member that names its URL
    setting: str  # the Settings field holding its path (the template's env variable)
    #: published as "<name>_auth_methods_supported" (() = not client-authenticated)
    auth_methods: tuple[str, ...]

    @property
    def signing_algorithms(self) -> tuple[str, ...]:
        """ "<name>_auth_signing_alg_values_supported" (RFC 8414 §2), for private_key_jwt."""
        return ASSERTION_ALGORITHMS if "private_key_jwt" in self.auth_methods else ()


ENDPOINTS: tuple[EndpointRegistration, ...] = (
    EndpointRegistration("token_endpoint", "token_endpoint_path", CLIENT_AUTH_METHODS),
    # RFC 7009, RFC 7662
    EndpointRegistration("revocation_endpoint", "revocation_endpoint_path", LIFECYCLE_AUTH_METHODS),
    EndpointRegistration(
        "introspection_endpoint", "introspection_endpoint_path", LIFECYCLE_AUTH_METHODS
    ),
    # not an RFC 8414 member: self-service device enrollment (services/exchange.py)
    EndpointRegistration("device_enrollment_endpoint", "device_enrollment_path", ()),
)

DPOP_ALGORITHMS: tuple[str, ...] = tuple(PROOF_ALGORITHMS)
