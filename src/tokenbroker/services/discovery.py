"""RFC 8414 authorization server metadata and the JWKS (RFC 7517)."""

from __future__ import annotations

from tokenbroker.domain.jose import PROOF_ALGORITHMS
from tokenbroker.domain.ports import Signer


class DiscoveryService:
    def __init__(self, *, signer: Signer, issuer: str, token_path: str, jwks_path: str) -> None:
        self._signer = signer
        self._issuer = issuer
        self._token_path = token_path
        self._jwks_path = jwks_path

    def metadata(self, request_issuer: str) -> dict[str, object]:
        issuer = self._issuer or request_issuer
        return {
            "issuer": issuer,
            "token_endpoint": issuer + self._token_path,
            "jwks_uri": issuer + self._jwks_path,
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
            ],
            "dpop_signing_alg_values_supported": list(PROOF_ALGORITHMS),
            "response_types_supported": [],
        }

    def jwks(self) -> dict[str, object]:
        # a rotating signer publishes its whole published set (adapters/keyset.py)
        published = getattr(self._signer, "published_jwks", None)
        keys = published() if published else [self._signer.public_jwk()]
        return {"keys": [{**k.jwk, "kid": k.kid, "use": "sig", "alg": "ES256"} for k in keys]}
