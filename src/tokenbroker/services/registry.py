"""The ONE registry of what the broker's OAuth endpoints really do: which grant types
the token endpoint dispatches (and to which service), which client authentication
methods the handlers accept, and which endpoints exist. The token endpoint dispatches
from :data:`GRANTS` (web/endpoints.py) and the RFC 8414 metadata is built from these
tables (services/discovery.py), so the metadata cannot list what is not there.
Tests check the endpoints against template.yaml's routes."""

from __future__ import annotations

from dataclasses import dataclass

from tokenbroker.domain.jose import PROOF_ALGORITHMS
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


#: client authentication at the token, revocation and introspection endpoints
#: (web/requests.py and web/lifecycle.py parse exactly these)
CLIENT_AUTH_METHODS: tuple[str, ...] = ("client_secret_basic", "client_secret_post")


@dataclass(frozen=True)
class EndpointRegistration:
    metadata_name: str  # the RFC 8414 member that names its URL
    setting: str  # the Settings field holding its path (the template's env variable)
    #: "<name>_auth_methods_supported" is published for client-authenticated endpoints
    client_authenticated: bool


ENDPOINTS: tuple[EndpointRegistration, ...] = (
    EndpointRegistration("token_endpoint", "token_endpoint_path", True),
    EndpointRegistration("revocation_endpoint", "revocation_endpoint_path", True),  # RFC 7009
    EndpointRegistration("introspection_endpoint", "introspection_endpoint_path", True),
    # not an RFC 8414 member: self-service device enrollment (services/exchange.py)
    EndpointRegistration("device_enrollment_endpoint", "device_enrollment_path", False),
)

DPOP_ALGORITHMS: tuple[str, ...] = tuple(PROOF_ALGORITHMS)
