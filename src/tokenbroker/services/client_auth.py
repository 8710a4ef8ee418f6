"""Client authentication for the lifecycle endpoints (RFC 7009 §2.1, RFC 7662 §2.1):
the same methods as the token endpoint (``client_secret_basic``, ``client_secret_post``),
the same single answer for unknown, wrong-secret and disabled clients (401
``invalid_client``, ARCHITECTURE invariant 7)."""

from __future__ import annotations

from dataclasses import dataclass

from tokenbroker.domain.errors import InvalidClient
from tokenbroker.domain.models import Client
from tokenbroker.domain.ports import ClientDirectory
from tokenbroker.domain.secrets import secret_matches
from tokenbroker.domain.units import CLIENT_ID

MAX_SECRET = 256


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str | None
    client_secret: str | None


class ClientAuthenticator:
    def __init__(self, *, directory: ClientDirectory) -> None:
        self._directory = directory

    def authenticate(self, credentials: ClientCredentials) -> Client:
        """The active client these credentials prove, or InvalidClient (one read; a
        failed read propagates as TemporarilyUnavailable)."""
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
