"""RFC 8414 authorization server metadata and the JWKS (RFC 7517). The endpoints,
grants and methods come from services/registry.py, the code's own registrations."""

from __future__ import annotations

from collections.abc import Mapping

from tokenbroker.domain.ports import Signer
from tokenbroker.services.registry import (
    DPOP_ALGORITHMS,
    ENDPOINTS,
    GRANTS,
)


class DiscoveryService:
    def __init__(
        self,
        *,
        signer: Signer,
        issuer: str,
        token_path: str,
        jwks_path: str,
        endpoint_paths: Mapping[str, str] | None = None,
    ) -> None:
        """``endpoint_paths``: Settings field -> path of the registered endpoints
        (services/registry.py); the token endpoint's is ``token_path``."""
        self._signer = signer
        self._issuer = issuer
        self._jwks_path = jwks_path
        self._paths = {**(endpoint_paths or {}), "token_endpoint_path": token_path}

    def metadata(self, request_issuer: str) -> dict[str, object]:
        issuer = self._issuer or request_issuer
        document: dict[str, object] = {"issuer": issuer, "jwks_uri": issuer + self._jwks_path}
        for endpoint in ENDPOINTS:
            path = self._paths.get(endpoint.setting)
            if not path:
                continue  # not deployed with this function's configuration
            document[endpoint.metadata_name] = issuer + path
            if endpoint.auth_methods:
                name = endpoint.metadata_name
                document[f"{name}_auth_methods_supported"] = list(endpoint.auth_methods)
            if endpoint.signing_algorithms:
                document[f"{endpoint.metadata_name}_auth_signing_alg_values_supported"] = list(
                    endpoint.signing_algorithms
                )
        document.update(
            {
                "grant_types_supported": [g.grant_type for g in GRANTS],
                "dpop_signing_alg_values_supported": list(DPOP_ALGORITHMS),
                "response_types_supported": [],
            }
        )
        return document

    def jwks(self) -> dict[str, object]:
        # a rotating signer publishes its whole published set (adapters/keyset.py)
        published = getattr(self._signer, "published_jwks", None)
        keys = published() if published else [self._signer.public_jwk()]
        return {"keys": [{**k.jwk, "kid": k.kid, "use": "sig", "alg": "ES256"} for k in keys]}
