"""Client authentication, ONE authenticator for every endpoint that authenticates a
client: the token endpoint (every grant: services/issuance.py, exchange.py, refresh.py),
revocation and introspection (RFC 7009 §2.1, RFC 7662 §2.1). Methods:
``client_secret_basic``, ``client_secret_post`` and ``private_key_jwt`` (RFC 7523 §2.2,
domain/rfc7523.py), exactly one per request (RFC 6749 §2.3). A client whose secret was
removed (``tokenbroker clients set-jwk --remove-secret``) has no secret hash, so every
secret it is sent fails: it authenticates with its registered key only.

Unknown client, wrong secret, disabled client and every bad assertion (replayed, expired,
wrong audience, unregistered key, symmetric alg, secret sent as well) get the same 401
``invalid_client`` (ARCHITECTURE invariant 7); the reason goes to the logs only.

Two steps, so that a service can read the client together with what else it needs in
ONE read (the token endpoint reads client + device at once): :meth:`claimed_client_id`
(the id the credentials name, shape checked) and :meth:`check` (the credentials against
the client read). :meth:`authenticate` does both with its own read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from tokenbroker.domain.clock import Clock
from tokenbroker.domain.errors import ConfigurationError, InvalidClient
from tokenbroker.domain.models import Client
from tokenbroker.domain.ports import ClientDirectory
from tokenbroker.domain.rfc7523 import ASSERTION_TYPE, unverified_issuer, verify_client_assertion
from tokenbroker.domain.secrets import secret_matches
from tokenbroker.domain.units import CLIENT_ID

MAX_SECRET = 256
#: check()'s reasons for the three secret refusals (the ledger records them by name)
UNKNOWN_CLIENT = "unknown_client"
WRONG_SECRET = "wrong_secret"
CLIENT_DISABLED = "client_disabled"


class AssertionReplay(Protocol):
    def use_assertion(self, client_id: str, jti: str, *, keep_until: int) -> bool: ...


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str | None
    client_secret: str | None
    assertion_type: str | None = None
    assertion: str | None = None

    @property
    def uses_assertion(self) -> bool:
        return self.assertion is not None or self.assertion_type is not None


class ClientAuthenticator:
    def __init__(
        self,
        *,
        directory: ClientDirectory | None = None,
        replay: AssertionReplay | None = None,
        clock: Clock | None = None,
        skew: int = 5,
    ) -> None:
        """``directory``: for :meth:`authenticate` (services that read the client
        themselves pass none); ``replay``/``clock``: needed for private_key_jwt (without
        them it is refused)."""
        self._directory = directory
        self._replay = replay
        self._clock = clock
        self._skew = skew

    def authenticate(self, credentials: ClientCredentials, *, audiences: tuple[str, ...]) -> Client:
        """The active client these credentials prove, or InvalidClient. ``audiences``:
        what an assertion's ``aud`` may name (the issuer, the endpoint URLs)."""
        if self._directory is None:
            raise ConfigurationError("the client authenticator has no client directory")
        client_id = self.claimed_client_id(credentials)
        return self.check(credentials, self._directory.get_client(client_id), audiences=audiences)

    def claimed_client_id(self, credentials: ClientCredentials) -> str:
        """The client id the credentials name (not yet proven), or InvalidClient."""
        if credentials.uses_assertion:
            if credentials.client_secret is not None:
                raise InvalidClient(reason="two_auth_methods")  # RFC 6749 §2.3: only one
            if credentials.assertion_type != ASSERTION_TYPE or not credentials.assertion:
                raise InvalidClient(reason="assertion_type")
            claimed = unverified_issuer(credentials.assertion)
            if credentials.client_id is not None and credentials.client_id != claimed:
                raise InvalidClient(reason="assertion_subject")
            if not CLIENT_ID.fullmatch(claimed):
                raise InvalidClient(reason="assertion_subject")
            return claimed
        client_id, secret = credentials.client_id, credentials.client_secret
        if (
            client_id is None
            or not CLIENT_ID.fullmatch(client_id)
            or secret is None
            or len(secret) > MAX_SECRET
        ):
            raise InvalidClient()  # cannot be a client of ours; same answer as a wrong secret
        return client_id

    def check(
        self, credentials: ClientCredentials, client: Client | None, *, audiences: tuple[str, ...]
    ) -> Client:
        """``client``: what the directory holds for :meth:`claimed_client_id` (None:
        unknown). The client when the credentials prove it and it is active."""
        claimed = self.claimed_client_id(credentials)
        if client is not None and client.client_id != claimed:
            raise InvalidClient(reason=UNKNOWN_CLIENT)  # the caller read another client
        if credentials.uses_assertion:
            return self._by_assertion(credentials, claimed, client, audiences)
        # one path for unknown, wrong-secret and disabled clients: same work, same error
        authentic = secret_matches(
            credentials.client_secret or "", client.secret_hash if client else None
        )
        if client is None:
            raise InvalidClient(reason=UNKNOWN_CLIENT)
        if not authentic:
            raise InvalidClient(reason=WRONG_SECRET)
        if not client.active:
            raise InvalidClient(reason=CLIENT_DISABLED)
        return client

    def _by_assertion(
        self,
        credentials: ClientCredentials,
        claimed: str,
        client: Client | None,
        audiences: tuple[str, ...],
    ) -> Client:
        if self._replay is None or self._clock is None:
            raise InvalidClient(reason="assertion_unsupported")
        jwk = _jwk(client.public_jwk) if client is not None else None
        verified = verify_client_assertion(
            credentials.assertion or "",
            client_id=claimed,
            jwk=jwk,
            audiences=audiences,
            now=self._clock(),
            skew=self._skew,
        )
        if client is None or not client.active:
            raise InvalidClient(reason=CLIENT_DISABLED)
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
