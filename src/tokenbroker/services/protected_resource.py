"""RFC 9728 OAuth 2.0 Protected Resource Metadata for the API the broker's authorizer
guards (one authorizer, one audience: the token ``aud`` the edge accepts is ``resource``).

Served at ``/.well-known/oauth-protected-resource`` (template.yaml, discovery function);
every 401 challenge from the edge names it in ``resource_metadata`` (RFC 9728 §5.1).
"""

from __future__ import annotations

from collections.abc import Mapping

from tokenbroker.domain.jose import PROOF_ALGORITHMS

WELL_KNOWN_PATH = "/.well-known/oauth-protected-resource"


def metadata_url(base: str) -> str:
    """Where the metadata of the API at ``base`` (its issuer-like base URL) is served."""
    return base.rstrip("/") + WELL_KNOWN_PATH


def protected_resource_metadata(
    *, resource: str, issuer: str, route_scopes: Mapping[str, str]
) -> dict[str, object]:
    """RFC 9728 §2. ``scopes_supported``: the routes' scopes that are scopes as written
    (a template such as ``model:{model}:invoke`` names a family, not a scope)."""
    scopes = sorted({s for s in route_scopes.values() if s and "{" not in s})
    document: dict[str, object] = {
        "resource": resource,
        "authorization_servers": [issuer],
        "bearer_methods_supported": ["header"],
        "dpop_bound_access_tokens_required": True,
        "dpop_signing_alg_values_supported": list(PROOF_ALGORITHMS),
    }
    if scopes:
        document["scopes_supported"] = scopes
    return document
