"""What the edge accepts from a JWKS (domain/published_keys.py): the broker's own kind
of key only, named by its RFC 7638 thumbprint; anything else in the document is skipped,
and a document that is not a JWKS is an outage, not an empty set."""

from __future__ import annotations

from typing import Any

import pytest

from support.dpop import DeviceKey
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.domain.published_keys import MAX_KEYS, trusted_keys


def published(key: DeviceKey, **extra: Any) -> dict[str, Any]:
    return {**key.public_jwk, "kid": key.jkt, "use": "sig", "alg": "ES256", **extra}


def test_the_brokers_keys_are_trusted_by_their_thumbprint() -> None:
    a, b = DeviceKey.generate("ES256"), DeviceKey.generate("ES256")
    keys = trusted_keys({"keys": [published(a), published(b)]})
    assert set(keys) == {a.jkt, b.jkt}


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"kid": "chosen-by-someone"}, "a kid that is not the key's thumbprint"),
        ({"alg": "HS256"}, "another algorithm"),
        ({"use": "enc"}, "not a signing key"),
        ({"d": "AAAA"}, "private key material"),
        ({"crv": "P-384"}, "another curve"),
        ({"x": "not-base64!"}, "a point that does not parse"),
    ],
)
def test_other_entries_are_skipped(change: dict[str, str], why: str) -> None:
    good, odd = DeviceKey.generate("ES256"), DeviceKey.generate("ES256")
    keys = trusted_keys({"keys": [published(good), published(odd, **change)]})
    assert set(keys) == {good.jkt}, why


def test_an_ed25519_or_p384_key_is_not_a_token_key() -> None:
    for alg in ("EdDSA", "ES384"):
        key = DeviceKey.generate(alg)
        assert trusted_keys({"keys": [{**key.public_jwk, "kid": key.jkt}]}) == {}


@pytest.mark.parametrize(
    "document",
    [None, [], {"keys": "x"}, {"nokeys": []}, {"keys": [{}] * (MAX_KEYS + 1)}],
)
def test_a_document_that_is_not_a_jwks_is_unavailable(document: Any) -> None:
    with pytest.raises(TemporarilyUnavailable):
        trusted_keys(document)


def test_a_jwks_answer_that_is_not_json_is_unavailable() -> None:
    from tokenbroker.adapters.jwks import JwksSource

    source = JwksSource("https://broker.example/jwks", get=lambda url, timeout: b"<html>")
    with pytest.raises(TemporarilyUnavailable, match="not JSON"):
        source.fetch()
