"""RFC 8707 resource indicators: which audience a token is for.

A token request may name the resource it wants a token for (``resource``, an absolute
URI without a fragment, §2). The token's ``aud`` is that resource, if the deployment
serves it (``AllowedAudiences``) and the client may use it (its registered resources;
a client with none registered may use every audience of the deployment, as before
resource indicators). Otherwise ``invalid_target`` (§2.2).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from tokenbroker.domain.errors import InvalidTarget

MAX_RESOURCE_LENGTH = 512
# RFC 3986 §3.1 scheme, then anything printable without spaces (the URI is compared as
# a string, never dereferenced)
_ABSOLUTE_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[!-~]+")
RESOURCE_NOT_ALLOWED = "resource_not_allowed"
RESOURCE_NOT_SERVED = "resource_not_served"


def check_resource(resource: str) -> str:
    """An acceptable resource indicator, or InvalidTarget (§2: absolute, no fragment)."""
    if not isinstance(resource, str) or len(resource) > MAX_RESOURCE_LENGTH:
        raise InvalidTarget("resource must be an absolute URI", reason="invalid_resource")
    if not _ABSOLUTE_URI.fullmatch(resource):
        raise InvalidTarget("resource must be an absolute URI", reason="invalid_resource")
    if "#" in resource:
        raise InvalidTarget("resource must not contain a fragment", reason="invalid_resource")
    return resource


def check_resources(values: Sequence[str]) -> tuple[str, ...]:
    """Admin input: each registered resource checked as a token request's would be."""
    return tuple(dict.fromkeys(check_resource(v.strip()) for v in values))


def audience_for(resource: str | None, *, served: Sequence[str], allowed: Collection[str]) -> str:
    """The ``aud`` for a request naming ``resource`` (None: the deployment's default,
    its first audience). ``served``: the deployment's audiences; ``allowed``: the
    client's registered resources (empty: every served one)."""
    if resource is None:
        audience = served[0]
        if allowed and audience not in allowed:
            # the client is registered for other resources only: it must name one
            raise InvalidTarget(
                "this client must name the resource it wants a token for",
                reason=RESOURCE_NOT_ALLOWED,
            )
        return audience
    check_resource(resource)
    if resource not in served:
        raise InvalidTarget(
            "resource is not an audience of this broker", reason=RESOURCE_NOT_SERVED
        )
    if allowed and resource not in allowed:
        raise InvalidTarget("this client may not use that resource", reason=RESOURCE_NOT_ALLOWED)
    return resource
