"""Client authentication for the lifecycle endpoints (RFC 7009 §2.1, RFC 7662 §2.1):
``client_secret_basic``, ``client_secret_post`` and ``private_key_jwt`` (RFC 7523 §2.2,
domain/rfc7523.py), exactly one per request (RFC 6749 §2.3). Unknown client, wrong
secret, disabled client and every bad assertion (replayed, expired, wrong audience,
unregistered key, symmetric alg, secret sent as well) get the same 401 ``invalid_client``
(ARCHITECTURE invariant 7); the reason goes to the logs only."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from tokenbroker.domain.clock import Clock
from tokenbroker.domain.errors import InvalidClient
from tokenbroker.domain.models import Client
from tokenbroker.domain.ports import ClientDirectory
from tokenbroker.domain.rfc7523 import ASSERTION_TYPE, unverified_issuer, verify_client_assertion
from tokenbroker.domain.secrets import secret_matches
from tokenbroker.domain.units import CLIENT_ID

MAX_SECRET = 256


class AssertionReplay(Protocol):
    def use_assertion(self, client_id: str, jti: str, *, keep_until: int) -> bool: ...


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str | None
    client_secret: str | None
    assertion_type: str | None = None
    assertion: str | None = None


class ClientAuthenticator:
    def __init__(
        self,
        *,
        directory: ClientDirectory,
        replay: AssertionReplay | None = None,
        clock: Clock | None = None,
        skew: int = 5,
    ) -> None:
        """``replay``/``clock``: needed for private_key_jwt (without them it is refused)."""
        self._directory = directory
        self._replay = replay
        self._clock = clock
        self._skew = skew

    def authenticate(self, credentials: ClientCredentials, *, audiences: tuple[str, ...]) -> Client:
        """The active client these credentials prove, or InvalidClient. ``audiences``:
        what an assertion's ``aud`` may name (the issuer, the endpoint URLs)."""
        if credentials.assertion is not None or credentials.assertion_type is not None:
            return self._by_assertion(credentials, audiences)
        client_id, secret = credentials.client_id, credentials.client_secret
        if (
            client_id is None
            or not CLIENT_ID.fullmatch(client_id)
            or secret is None
            or len(secret) > MAX_SECRET
        ):
            raise InvalidClient()
        client = self._directory.get_client(client_id)
        # one path for unknown, wrong-secret and disabled clients: same work, same error
        authentic = secret_matches(secret, client.secret_hash if client else None)
        if client is None or not authentic or not client.active:
            raise InvalidClient()
        return client

    def _by_assertion(self, credentials: ClientCredentials, audiences: tuple[str, ...]) -> Client:
        if credentials.client_secret is not None:
            raise InvalidClient(reason="two_auth_methods")  # RFC 6749 §2.3: only one
        if credentials.assertion_type != ASSERTION_TYPE or not credentials.assertion:
            raise InvalidClient(reason="assertion_type")
        if self._replay is None or self._clock is None:
            raise InvalidClient(reason="assertion_unsupported")
        claimed = unverified_issuer(credentials.assertion)
        if credentials.client_id is not None and credentials.client_id != claimed:
            raise InvalidClient(reason="assertion_subject")
        if not CLIENT_ID.fullmatch(claimed):
            raise InvalidClient(reason="assertion_subject")
        client = self._directory.get_client(claimed)
        jwk = _jwk(client.public_jwk) if client is not None else None
        verified = verify_client_assertion(
            credentials.assertion,
            client_id=claimed,
            jwk=jwk,
            audiences=audiences,
            now=self._clock(),
            skew=self._skew,
        )
        if client is None or not client.active:
            raise InvalidClient(reason="client_disabled")
        # single use, written only after every other check passed
        if not self._replay.use_assertion(
            client.client_id, verified.jti, keep_until=verified.exp + self._skew
        ):
            raise InvalidClient(reason="assertion_replayed")
        return client


def _jwk(text: str) -> dict[str, str] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
