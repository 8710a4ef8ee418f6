"""Strict compact JWS parsing (RFC 7515) and JWK loading: the gaps pyjwt leaves open."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448
from joserfc.jwk import OKPKey

from support.dpop import DeviceKey, b64url, b64url_json, raw_jws
from tokenbroker.domain.errors import InvalidDpopProof, InvalidToken
from tokenbroker.domain.jose import (
    b64url_decode,
    b64url_encode,
    load_public_jwk,
    parse_compact,
    strict_json_object,
    verify_signature,
)

HEADER = {"alg": "ES256", "typ": "at+jwt"}
CLAIMS = {"sub": "s", "n": 1}
SIG = b64url(b"\x01" * 64)


def parse(value: object, max_length: int = 4096) -> object:
    return parse_compact(value, max_length=max_length, error=InvalidToken, what="token")


def well_formed() -> str:
    return f"{b64url_json(HEADER)}.{b64url_json(CLAIMS)}.{SIG}"


def assert_malformed(value: object, fragment: str = "malformed") -> None:
    with pytest.raises(InvalidToken) as caught:
        parse(value)
    assert fragment in caught.value.description


# ---- base64url ------------------------------------------------------------------------


def test_a_well_formed_jws_is_split_into_header_payload_signing_input_and_signature() -> None:
    jws = parse_compact(well_formed(), max_length=4096, error=InvalidToken, what="token")
    assert dict(jws.header) == HEADER
    assert dict(jws.payload) == CLAIMS
    assert jws.signing_input == well_formed().rsplit(".", 1)[0].encode()
    assert jws.signature == b"\x01" * 64


def test_the_error_class_is_the_one_the_caller_asked_for() -> None:
    with pytest.raises(InvalidDpopProof, match="DPoP proof is not a compact JWS"):
        parse_compact("a.b", max_length=10, error=InvalidDpopProof, what="DPoP proof")


@pytest.mark.parametrize("segment", [0, 1, 2])
def test_a_padded_segment_is_rejected(segment: int) -> None:
    parts = well_formed().split(".")
    raw = [HEADER, CLAIMS, b"\x01" * 64][segment]
    data = raw if isinstance(raw, bytes) else json.dumps(raw, separators=(",", ":")).encode()
    if len(data) % 3 == 0:
        data += b" "  # JSON allows trailing whitespace; the length must need padding
    padded = base64.urlsafe_b64encode(data).decode()
    assert padded.endswith("=")
    parts[segment] = padded
    assert_malformed(".".join(parts))


def test_a_segment_in_the_standard_base64_alphabet_is_rejected() -> None:
    header = b64url_json('{"alg":"ES256","typ":"at+jwt","x":"\xfb\xff"}'.encode("latin-1"))
    assert "-" in header or "_" in header, "the test needs url-alphabet characters"
    standard = header.replace("-", "+").replace("_", "/")
    assert_malformed(f"{standard}.{b64url_json(CLAIMS)}.{SIG}")


def test_non_canonical_trailing_bits_are_rejected() -> None:
    # 64 bytes -> 86 chars with 4 unused bits: flipping one gives a second spelling
    canonical = b64url(b"\x01" * 64)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = canonical[:-1] + alphabet[alphabet.index(canonical[-1]) + 1]
    assert base64.urlsafe_b64decode(twin + "==") == b"\x01" * 64, "same bytes, other spelling"
    assert_malformed(f"{b64url_json(HEADER)}.{b64url_json(CLAIMS)}.{twin}")
    with pytest.raises(ValueError, match="non-canonical"):
        b64url_decode(twin)


@pytest.mark.parametrize(
    "segment",
    ["abcde", "ab cd", "ab\ncd", "ab.cd", "ab=c", "é", "ab+/", "abc=", "ab==", "abé"],
    ids=[
        "length-mod-4-is-1",
        "space",
        "newline",
        "dot",
        "inner-pad",
        "non-ascii",
        "std",
        "padded-3",
        "padded-2",
        "non-ascii-last",
    ],
)
def test_characters_outside_base64url_are_rejected(segment: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the documented contract
        b64url_decode(segment)


def test_base64url_encoding_round_trips_without_padding() -> None:
    for n in range(0, 40):
        data = bytes(range(n))
        encoded = b64url_encode(data)
        assert "=" not in encoded
        assert b64url_decode(encoded) == data


# ---- JSON ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "claims"),
    [
        ('{"alg":"ES256","alg":"none"}', '{"sub":"s"}'),
        ('{"alg":"ES256"}', '{"sub":"a","sub":"b"}'),
        ('{"alg":"ES256"}', '{"cnf":{"jkt":"a","jkt":"b"}}'),
        ('{"alg":"ES256","typ":"at+jwt","t\\u0079p":"x"}', "{}"),
    ],
    ids=["header", "payload", "nested", "escaped-spelling"],
)
def test_duplicate_json_members_are_rejected(header: str, claims: str) -> None:
    assert_malformed(raw_jws(header, claims, signature=b"\x01" * 64))


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_number_constants_are_rejected(constant: str) -> None:
    assert_malformed(raw_jws(HEADER, f'{{"exp":{constant}}}', signature=b"\x01"))


@pytest.mark.parametrize("document", ["[]", '"a"', "1", "null", "true", "", "{", "{}{}"])
def test_a_segment_that_is_not_one_json_object_is_rejected(document: str) -> None:
    assert_malformed(raw_jws(HEADER, document, signature=b"\x01"))
    assert_malformed(raw_jws(document, CLAIMS, signature=b"\x01"))


def test_invalid_utf8_is_rejected() -> None:
    assert_malformed(raw_jws(HEADER, b'{"sub":"\xff\xfe"}', signature=b"\x01"))
    assert_malformed(raw_jws(b'{"alg":"\xc3\x28"}', CLAIMS, signature=b"\x01"))


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "a\\ud83d"])
def test_a_lone_surrogate_escape_is_rejected(escape: str) -> None:
    assert_malformed(raw_jws(HEADER, f'{{"jti":"{escape}"}}', signature=b"\x01"))


def test_a_paired_surrogate_escape_is_an_ordinary_character() -> None:
    jws = parse(raw_jws(HEADER, '{"jti":"\\ud83d\\ude00"}', signature=b"\x01"))
    assert jws.payload["jti"] == "\U0001f600"  # type: ignore[attr-defined]


def test_a_deeply_nested_document_is_rejected_not_crashing() -> None:
    deep = '{"a":' * 100_000 + "1" + "}" * 100_000
    with pytest.raises(InvalidToken):
        parse_compact(
            raw_jws(HEADER, deep, signature=b"\x01"),
            max_length=10**7,
            error=InvalidToken,
            what="token",
        )


def test_strict_json_object_accepts_a_plain_object() -> None:
    assert strict_json_object(b'{"a":[1,{"b":null}],"c":"\\u00e9"}') == {
        "a": [1, {"b": None}],
        "c": "é",
    }


def test_whitespace_around_the_object_takes_the_full_decoder_and_is_accepted() -> None:
    # the C scanner's fast path needs the value to start at offset 0 and end the text
    assert strict_json_object(b' {"a":1}\n') == {"a": 1}
    assert strict_json_object(b'\t{"a":{"b":2}} ') == {"a": {"b": 2}}


@pytest.mark.parametrize("raw", [b'{"a":1} x', b'{"a":1},', b' {"a":1,"a":2}', b'{"a":1}]'])
def test_trailing_data_or_a_repeat_behind_whitespace_is_still_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the documented contract
        strict_json_object(raw)


def test_a_non_ec_key_is_refused_for_es256_after_an_ec_key_was_accepted() -> None:
    # verify_signature remembers the EC key *types* it has seen (an ABC isinstance is
    # slow): another type must still go through the full check and be refused
    device = DeviceKey.generate()
    value = raw_jws({"alg": "ES256"}, CLAIMS, sign_with=device)
    jws = parse_compact(value, max_length=4096, error=InvalidToken, what="token")
    assert verify_signature(jws, "ES256", load_public_jwk(device.public_jwk, "ES256"))
    ed = load_public_jwk(DeviceKey.generate("EdDSA").public_jwk, "EdDSA")
    assert not verify_signature(jws, "ES256", ed)

    class Impostor:  # duck-types verify() and accepts everything
        curve = ec.SECP256R1()

        def verify(self, *args: object) -> None:
            return None

    assert not verify_signature(jws, "ES256", Impostor())


# ---- structure -------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 4, 5])
def test_anything_but_three_segments_is_rejected(count: int) -> None:
    segments = [b64url_json(HEADER), b64url_json(CLAIMS), SIG, SIG, SIG][:count]
    assert_malformed(".".join(segments), "not a compact JWS")


@pytest.mark.parametrize("value", ["", None, b"a.b.c", 1, ["a", "b", "c"]])
def test_a_missing_or_non_string_value_is_rejected(value: object) -> None:
    assert_malformed(value, "missing")


def test_crit_is_rejected_because_no_extension_is_understood() -> None:
    header = {**HEADER, "crit": ["exp"], "exp": 1}
    assert_malformed(raw_jws(header, CLAIMS, signature=b"\x01"), "critical")


def test_crit_is_rejected_even_when_empty() -> None:
    assert_malformed(raw_jws({**HEADER, "crit": []}, CLAIMS, signature=b"\x01"), "critical")


def test_b64_is_rejected() -> None:
    header = {**HEADER, "b64": False, "crit": ["b64"]}
    with pytest.raises(InvalidToken):
        parse(raw_jws(header, CLAIMS, signature=b"\x01"))
    assert_malformed(raw_jws({**HEADER, "b64": True}, CLAIMS, signature=b"\x01"), "b64")


def test_the_size_limit_is_checked_before_parsing() -> None:
    value = well_formed()
    parse(value, max_length=len(value))
    with pytest.raises(InvalidToken, match="too large"):
        parse(value, max_length=len(value) - 1)
    with pytest.raises(InvalidToken, match="too large"):
        parse("x" * 5000, max_length=4096)  # garbage, yet reported as too large


# ---- keys and signatures ---------------------------------------------------------------


@pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi", "oth", "k"])
def test_a_jwk_with_private_key_material_is_rejected(member: str) -> None:
    jwk = {**DeviceKey.generate().public_jwk, member: "AQAB"}
    with pytest.raises(ValueError, match="private"):
        load_public_jwk(jwk, "ES256")


def test_a_complete_private_jwk_is_rejected() -> None:
    with pytest.raises(ValueError, match="private"):
        load_public_jwk(DeviceKey.generate().private_jwk, "ES256")


@pytest.mark.parametrize("alg", ["none", "HS256", "RS256", "PS256", "ES512", "ES256K", ""])
def test_only_the_allowed_asymmetric_algorithms_load_a_key(alg: str) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        load_public_jwk(DeviceKey.generate().public_jwk, alg)


@pytest.mark.parametrize(
    ("key_alg", "claimed_alg"),
    [("ES384", "ES256"), ("ES256", "ES384"), ("EdDSA", "ES256"), ("ES256", "EdDSA")],
)
def test_a_key_that_does_not_fit_the_algorithm_is_rejected(key_alg: str, claimed_alg: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the documented contract
        load_public_jwk(DeviceKey.generate(key_alg).public_jwk, claimed_alg)


def test_an_ed448_key_is_not_an_eddsa_proof_key() -> None:
    jwk = OKPKey.import_key(ed448.Ed448PrivateKey.generate()).as_dict(private=False)
    with pytest.raises(ValueError, match=r"Ed25519|canonical coordinate"):
        load_public_jwk(jwk, "EdDSA")


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
        {"kty": "EC", "crv": "P-256"},
        {"kty": "oct", "k": "AAAA"},
        {},
    ],
    ids=["short-coordinates", "no-coordinates", "symmetric", "empty"],
)
def test_a_jwk_that_is_not_a_valid_public_key_is_rejected(jwk: dict[str, str]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the documented contract
        load_public_jwk(jwk, "ES256")


def test_a_point_not_on_the_curve_is_rejected() -> None:
    jwk = DeviceKey.generate().public_jwk
    x = bytearray(b64url_decode(jwk["x"]))
    x[-1] ^= 1
    with pytest.raises(ValueError, match="not a valid public key"):
        load_public_jwk({**jwk, "x": b64url(bytes(x))}, "ES256")


def _second_spellings(value: str) -> dict[str, str]:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return {
        "padded": value + "=",
        "non-canonical-trailing-bits": value[:-1] + alphabet[alphabet.index(value[-1]) ^ 1],
    }


@pytest.mark.parametrize("spelling", ["padded", "non-canonical-trailing-bits"])
def test_a_jwk_coordinate_with_a_second_base64url_spelling_is_rejected(spelling: str) -> None:
    jwk = DeviceKey.generate().public_jwk
    twin = _second_spellings(jwk["x"])[spelling]
    assert base64.urlsafe_b64decode(twin.rstrip("=") + "=") == b64url_decode(jwk["x"])
    with pytest.raises(ValueError):  # noqa: PT011 - the documented contract
        load_public_jwk({**jwk, "x": twin}, "ES256")


@pytest.mark.parametrize("alg", ["ES256", "ES384", "EdDSA"])
def test_a_signature_verifies_only_over_the_bytes_it_signed(alg: str) -> None:
    device = DeviceKey.generate(alg)
    jws = parse(raw_jws({"alg": alg}, CLAIMS, sign_with=device))
    key = load_public_jwk(device.public_jwk, alg)
    assert verify_signature(jws, alg, key)
    tampered = parse(raw_jws({"alg": alg}, {**CLAIMS, "n": 2}, signature=jws.signature))
    assert not verify_signature(tampered, alg, key)


@pytest.mark.parametrize("signature", [b"", b"\x00" * 64, b"\x01" * 63, b"\x01" * 65])
def test_a_garbage_signature_does_not_verify(signature: bytes) -> None:
    device = DeviceKey.generate()
    jws = parse(raw_jws({"alg": "ES256"}, CLAIMS, signature=signature))
    assert not verify_signature(jws, "ES256", load_public_jwk(device.public_jwk, "ES256"))


def test_a_signature_by_another_key_does_not_verify() -> None:
    device, other = DeviceKey.generate(), DeviceKey.generate()
    jws = parse(raw_jws({"alg": "ES256"}, CLAIMS, sign_with=other))
    assert not verify_signature(jws, "ES256", load_public_jwk(device.public_jwk, "ES256"))
