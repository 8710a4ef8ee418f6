"""The tokenbroker client SDK: device-bound (DPoP, RFC 9449) tokens as easy as a bearer
token.

    from tokenbroker.client import DeviceKey, DPoPAuth, TokenSource

    source = TokenSource(issuer, client_id=..., client_secret=..., key=DeviceKey.load())
    session = requests.Session()
    session.auth = DPoPAuth(source)              # httpx: DPoPHttpxAuth(source)
    session.post(f"{api}/v1/models/demo/invoke", json={"prompt": "hi"})

One ``TokenSource`` per (issuer, client, device key) and process: it discovers the token
endpoint (RFC 8414), fetches and caches tokens, renews them ahead of expiry (one request
at a time across threads and event loops) and signs a fresh proof for every request.
Errors derive from :class:`BrokerClientError` and carry the OAuth ``error`` code.

Tokens are sent only to the issuer's origin unless more are allowed
(``DPoPAuth(source, origins=["https://models.example.com"])``), and never over plain
HTTP except to loopback (TokenDestinationError otherwise, before anything is sent).
"""

from tokenbroker.client.errors import (
    BrokerClientError,
    BrokerUnavailable,
    ClockSkewError,
    InvalidClientError,
    InvalidGrantError,
    KeyFileError,
    MetadataError,
    TokenDestinationError,
    TokenRequestError,
)
from tokenbroker.client.httpx_auth import DPoPHttpxAuth
from tokenbroker.client.keys import DeviceKey
from tokenbroker.client.requests_auth import DPoPAuth
from tokenbroker.client.session import AccessToken, Metadata, TokenSource

__all__ = [
    "AccessToken",
    "BrokerClientError",
    "BrokerUnavailable",
    "ClockSkewError",
    "DPoPAuth",
    "DPoPHttpxAuth",
    "DeviceKey",
    "InvalidClientError",
    "InvalidGrantError",
    "KeyFileError",
    "Metadata",
    "MetadataError",
    "TokenDestinationError",
    "TokenRequestError",
    "TokenSource",
]
