"""Policy decisions that are neither HTTP nor AWS: scope grammar and subset checks."""

from __future__ import annotations

import re

from tokenbroker.domain.errors import InvalidScope

#: RFC 6749 §3.3 and Appendix A: ``scope-token = 1*NQCHAR`` with
#: ``NQCHAR = %x21 / %x23-5B / %x5D-7E``: printable ASCII except space, ``"`` and ``\``.
#: So ``model:llama3:8b:invoke``, ``model:team@eu:invoke``, ``model:a~b:invoke`` and
#: ``model:50%:invoke`` are scope tokens; a name with a space, a quote, a backslash, a
#: control character or any non-ASCII character is not, and no scope can name it.
#: Length capped (our limit, not the RFC's) so a path parameter cannot make one huge.
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}")
MAX_SCOPES = 64


def is_scope_token(value: str) -> bool:
    """True if ``value`` is one RFC 6749 §3.3 scope token (at most 128 characters)."""
    return _SCOPE_TOKEN.fullmatch(value) is not None


def parse_scope(value: str) -> tuple[str, ...]:
    """A space-delimited scope string as an ordered tuple of unique tokens."""
    tokens = value.split(" ")
    for token in tokens:
        if not _SCOPE_TOKEN.fullmatch(token):
            raise InvalidScope(_scope_problem(token))
    unique = tuple(dict.fromkeys(tokens))
    if len(unique) > MAX_SCOPES:
        raise InvalidScope(f"at most {MAX_SCOPES} scopes")
    return unique


def _scope_problem(token: str) -> str:
    """Why ``token`` is not an RFC 6749 scope token, naming the actual problem."""
    if token == "":
        return "scope has an empty entry (scopes are separated by single spaces)"
    if len(token) > 128:
        return f"scope {token[:20]}... is {len(token)} characters long (at most 128)"
    bad = next(c for c in token if not _SCOPE_TOKEN.fullmatch(c))
    return (
        f'scope {token[:40]!r} contains {bad!r}: scopes are printable ASCII without spaces, " or \\'
    )


def grant_scope(requested: str | None, allowed: frozenset[str]) -> tuple[str, ...]:
    """The scopes to grant: the request (must be a subset of ``allowed``) or all allowed."""
    if requested is None or requested == "":
        return tuple(sorted(allowed))
    wanted = parse_scope(requested)
    extra = [s for s in wanted if s not in allowed]
    if extra:
        raise InvalidScope("requested scope exceeds the scopes granted to this client")
    return wanted


def scope_exceeds(scope: tuple[str, ...], allowed: frozenset[str]) -> bool:
    """True if a token's ``scope`` names anything ``allowed`` (the client's scopes now)
    does not: such a token is worth no more than its client is allowed now."""
    return not allowed.issuperset(scope)
