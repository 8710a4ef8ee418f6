"""RFC 7638 JWK thumbprints: the spec's own example, and agreement with joserfc."""

from __future__ import annotations

import pytest
from joserfc.jwk import ECKey, OKPKey

from support.dpop import DeviceKey, b64url
from tokenbroker.domain.rfc7638 import is_thumbprint, jwk_thumbprint

# RFC 7638 §3.1
RFC7638_RSA_KEY = {
    "kty": "RSA",
    "n": (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
        "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_F"
        "DW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4"
        "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    ),
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_the_rfc_7638_example_key_has_the_thumbprint_printed_in_the_rfc() -> None:
    assert jwk_thumbprint(RFC7638_RSA_KEY) == RFC7638_THUMBPRINT


def test_members_outside_the_required_set_do_not_change_the_thumbprint() -> None:
    extra = {**RFC7638_RSA_KEY, "use": "sig", "key_ops": ["verify"], "x5t": "abc"}
    assert jwk_thumbprint(extra) == RFC7638_THUMBPRINT


def test_member_order_does_not_change_the_thumbprint() -> None:
    reordered = dict(reversed(list(RFC7638_RSA_KEY.items())))
    assert jwk_thumbprint(reordered) == RFC7638_THUMBPRINT


@pytest.mark.parametrize("alg", ["ES256", "ES384"])
def test_an_ec_key_thumbprint_agrees_with_joserfc(alg: str) -> None:
    key = DeviceKey.generate(alg)
    assert jwk_thumbprint(key.public_jwk) == ECKey.import_key(key.public_jwk).thumbprint()


def test_an_okp_key_thumbprint_agrees_with_joserfc() -> None:
    key = DeviceKey.generate("EdDSA")
    assert jwk_thumbprint(key.public_jwk) == OKPKey.import_key(key.public_jwk).thumbprint()


def test_a_private_jwk_has_the_same_thumbprint_as_its_public_half() -> None:
    key = DeviceKey.generate()
    assert jwk_thumbprint(key.private_jwk) == key.jkt


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "oct", "k": "c2VjcmV0"},
        {"kty": "EC", "crv": "P-256", "x": "AAAA"},  # y missing
        {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": 7},
        {"crv": "P-256", "x": "AAAA", "y": "AAAA"},
        {"kty": 1},
    ],
    ids=["symmetric", "member-missing", "member-not-a-string", "no-kty", "kty-not-a-string"],
)
def test_an_unsupported_or_incomplete_jwk_has_no_thumbprint(jwk: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the documented contract
        jwk_thumbprint(jwk)


def test_a_sha256_thumbprint_is_recognised() -> None:
    assert is_thumbprint(RFC7638_THUMBPRINT)
    assert is_thumbprint(DeviceKey.generate().jkt)


@pytest.mark.parametrize(
    "value",
    [
        RFC7638_THUMBPRINT + "=",  # padded
        RFC7638_THUMBPRINT[:-1],  # 42 chars
        RFC7638_THUMBPRINT.replace("-", "+"),  # standard alphabet
        RFC7638_THUMBPRINT[:-1] + "t",  # non-zero trailing bits: second spelling of 32 bytes
        b64url(bytes(31)),  # 42 chars of 31 bytes
        "",
        None,
        43,
    ],
    ids=["padded", "short", "std-alphabet", "non-canonical", "31-bytes", "empty", "none", "int"],
)
def test_anything_else_is_not_a_thumbprint(value: object) -> None:
    assert not is_thumbprint(value)
