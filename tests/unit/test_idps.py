"""The trusted issuers' key handling: only usable public signing keys are kept, the
discovery document must name the trusted issuer, fetches are bounded (size, scheme), and
the key cache's cool-down stops a flood of unknown kids from refetching."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tokenbroker.adapters.idps import (
    MAX_DOCUMENT_BYTES,
    IssuerKeys,
    OidcKeySource,
    http_get,
    parse_jwks,
)
from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.domain.rfc8693 import TrustedIssuer

ISSUER = "https://idp.example.com"


def _rsa_jwk(bits: int, kid: str) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": kid}


def _ec_jwk(curve: ec.EllipticCurve, kid: str) -> dict[str, Any]:
    key = ec.generate_private_key(curve)
    return {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key())), "kid": kid}


def test_only_strong_public_signing_keys_of_allowed_algorithms_are_kept() -> None:
    private = json.loads(
        jwt.algorithms.RSAAlgorithm.to_jwk(
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
        )
    )
    keys = parse_jwks(
        {
            "keys": [
                _rsa_jwk(2048, "good-rsa"),
                _ec_jwk(ec.SECP256R1(), "good-ec"),
                _rsa_jwk(1024, "weak-rsa"),
                _ec_jwk(ec.SECP384R1(), "p384"),
                {**_rsa_jwk(2048, "enc"), "use": "enc"},
                {**_rsa_jwk(2048, "hs"), "alg": "HS256"},
                {**private, "kid": "private"},
                {"kty": "oct", "k": "c2VjcmV0", "kid": "oct"},
                "not a key",
            ]
        }
    )
    assert sorted(keys) == ["good-ec", "good-rsa"]


def test_a_discovery_document_naming_another_issuer_is_refused() -> None:
    idp = TrustedIssuer(issuer=ISSUER, audiences=("a",), scopes=frozenset())
    documents = {
        ISSUER + "/.well-known/openid-configuration": {
            "issuer": "https://evil.example",
            "jwks_uri": ISSUER + "/keys",
        }
    }
    source = OidcKeySource(idp, fetch=lambda url: json.dumps(documents[url]).encode())
    with pytest.raises(TemporarilyUnavailable, match="another issuer"):
        source.fetch()


def test_unknown_kids_refetch_at_most_once_per_cooldown() -> None:
    clock = FixedClock(1_000)
    fetched: list[str] = []
    jwk = _rsa_jwk(2048, "k1")

    def fetch(url: str) -> bytes:
        fetched.append(url)
        if url.endswith("openid-configuration"):
            return json.dumps({"issuer": ISSUER, "jwks_uri": ISSUER + "/keys"}).encode()
        return json.dumps({"keys": [jwk]}).encode()

    idp = TrustedIssuer(issuer=ISSUER, audiences=("a",), scopes=frozenset())
    resolve = IssuerKeys(clock=clock, fetch=fetch).resolver(idp)
    assert resolve("k1") is not None
    for n in range(50):
        assert resolve(f"unknown-{n}") is None
    assert len(fetched) == 2  # one discovery + one JWKS, despite 50 unknown kids
    clock.advance(61)
    assert resolve("unknown-again") is None
    assert len(fetched) == 4


class _Big(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"{" + b" " * (MAX_DOCUMENT_BYTES + 10) + b"}"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def big_server() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Big)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks"
    server.shutdown()
    server.server_close()


def test_an_oversized_issuer_document_is_refused(big_server: str) -> None:
    with pytest.raises(TemporarilyUnavailable, match="too large"):
        http_get(big_server)


def test_only_https_or_loopback_http_is_fetched() -> None:
    for url in ("http://idp.example.com/x", "file:///etc/passwd", "ftp://idp.example.com/"):
        with pytest.raises(TemporarilyUnavailable, match="https"):
            http_get(url)
