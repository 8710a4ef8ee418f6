"""RFC 9449 §4.3: every check a DPoP proof must pass, each with a proof that fails it.

Proofs are built by tests/support/dpop.py (joserfc + cryptography), never by the code
under test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import warnings

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from joserfc.jwk import RSAKey

from support.dpop import DeviceKey, ath_for, b64url, malleate_ecdsa, raw_jws, split
from tokenbroker.domain.errors import InvalidDpopProof
from tokenbroker.domain.rfc9449 import (
    MAX_PROOF_LENGTH,
    DpopProof,
    ProofPolicy,
    normalize_htu,
    replay_key,
    verify_proof,
)

NOW = 1_800_000_000
URL = "https://broker.example/oauth2/token"
POLICY = ProofPolicy(max_age=60, skew=5)
TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"


@pytest.fixture(scope="module")
def device() -> DeviceKey:
    return DeviceKey.generate("ES256")


@pytest.fixture(scope="module")
def other_device() -> DeviceKey:
    return DeviceKey.generate("ES256")


def verify(
    proof: object,
    *,
    method: str = "POST",
    url: str = URL,
    now: float = NOW,
    policy: ProofPolicy = POLICY,
    access_token: str | None = None,
) -> DpopProof:
    return verify_proof(
        proof, method=method, url=url, now=now, policy=policy, access_token=access_token
    )


def rejected(proof: object, match: str | None = None, **kw: object) -> InvalidDpopProof:
    with pytest.raises(InvalidDpopProof, match=match) as caught:
        verify(proof, **kw)  # type: ignore[arg-type]
    assert type(caught.value) is InvalidDpopProof
    assert caught.value.error == "invalid_dpop_proof"
    return caught.value


# ---- accepted ------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "ES384", "EdDSA"])
def test_a_fresh_proof_with_each_allowed_algorithm_is_accepted(alg: str) -> None:
    key = DeviceKey.generate(alg)
    proof = verify(key.proof("POST", URL, iat=NOW, jti="j-1"))
    assert proof == DpopProof(jkt=key.jkt, jti="j-1", iat=NOW, htm="POST", htu=URL)


def test_the_verified_jkt_is_the_rfc_7638_thumbprint_of_the_proof_key(device: DeviceKey) -> None:
    assert verify(device.proof("POST", URL, iat=NOW)).jkt == device.jkt


# ---- check 2: a well-formed JWS ---------------------------------------------------------


def test_a_proof_that_is_not_a_jws_is_rejected() -> None:
    rejected("not-a-jws", "compact JWS")
    rejected(None, "missing")


def test_a_proof_larger_than_the_limit_is_rejected(device: DeviceKey) -> None:
    proof = device.proof("POST", URL, iat=NOW, claim_overrides={"pad": "x" * MAX_PROOF_LENGTH})
    rejected(proof, "too large")


# ---- check 3: required claims ----------------------------------------------------------


@pytest.mark.parametrize("claim", ["jti", "htm", "htu", "iat"])
def test_a_proof_without_a_required_claim_is_rejected(device: DeviceKey, claim: str) -> None:
    rejected(device.proof("POST", URL, iat=NOW, drop_claims=[claim]), claim)


@pytest.mark.parametrize("claim", ["jti", "htm", "htu"])
def test_a_required_string_claim_of_another_type_is_rejected(device: DeviceKey, claim: str) -> None:
    rejected(device.proof("POST", URL, iat=NOW, claim_overrides={claim: 12}), claim)


def test_an_empty_jti_is_rejected(device: DeviceKey) -> None:
    rejected(device.proof("POST", URL, iat=NOW, jti=""), "jti")


def test_a_jti_of_129_characters_is_rejected_and_128_accepted(device: DeviceKey) -> None:
    assert verify(device.proof("POST", URL, iat=NOW, jti="j" * 128)).jti == "j" * 128
    rejected(device.proof("POST", URL, iat=NOW, jti="j" * 129), "too long")


# ---- check 4: typ -----------------------------------------------------------------------


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+jwt", "dpop", "", 1, None])
def test_a_proof_with_another_typ_is_rejected(device: DeviceKey, typ: object) -> None:
    rejected(device.proof("POST", URL, iat=NOW, header_overrides={"typ": typ}), "typ")


def test_a_proof_without_typ_is_rejected(device: DeviceKey) -> None:
    rejected(device.proof("POST", URL, iat=NOW, drop_header=["typ"]), "typ")


# ---- check 5: asymmetric, allowed alg ----------------------------------------------------


def _claims() -> dict[str, object]:
    return {"jti": "j", "htm": "POST", "htu": URL, "iat": NOW}


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_an_unsigned_proof_is_rejected_in_every_casing(device: DeviceKey, alg: str) -> None:
    header = {"typ": "dpop+jwt", "alg": alg, "jwk": device.public_jwk}
    rejected(raw_jws(header, _claims()), "alg")


def test_an_hmac_proof_keyed_with_the_public_key_is_rejected(device: DeviceKey) -> None:
    header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": device.public_jwk}
    unsigned = raw_jws(header, _claims()).rsplit(".", 1)[0]
    secret = device.public_jwk["x"].encode()
    mac = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()
    rejected(raw_jws(header, _claims(), signature=mac), "alg")


def test_an_rs256_proof_is_rejected_because_rsa_is_not_allowed() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = RSAKey.import_key(private).as_dict(private=False)
    header = {"typ": "dpop+jwt", "alg": "RS256", "jwk": jwk}
    unsigned = raw_jws(header, _claims()).rsplit(".", 1)[0]
    sig = private.sign(unsigned.encode(), padding.PKCS1v15(), hashes.SHA256())
    rejected(raw_jws(header, _claims(), signature=sig), "alg")


@pytest.mark.parametrize("alg", [["ES256"], {"alg": "ES256"}, "ES512", "ES256K", "PS256"])
def test_a_proof_with_an_unsupported_or_non_string_alg_is_rejected(
    device: DeviceKey, alg: object
) -> None:
    rejected(device.proof("POST", URL, iat=NOW, header_overrides={"alg": alg}), "alg")


def test_an_algorithm_this_policy_does_not_allow_is_rejected() -> None:
    only_es256 = ProofPolicy(max_age=60, skew=5, algorithms=("ES256",))
    proof = DeviceKey.generate("ES384").proof("POST", URL, iat=NOW)
    rejected(proof, "alg", policy=only_es256)


@pytest.mark.parametrize(
    ("key_alg", "header_alg"),
    [("ES384", "ES256"), ("ES256", "ES384"), ("EdDSA", "ES256"), ("ES256", "EdDSA")],
)
def test_an_alg_that_does_not_match_the_key_curve_is_rejected(
    key_alg: str, header_alg: str
) -> None:
    key = DeviceKey.generate(key_alg)
    rejected(key.proof("POST", URL, iat=NOW, header_overrides={"alg": header_alg}), "jwk")


# ---- checks 6-7: the key and the signature ---------------------------------------------


def test_a_proof_without_a_jwk_is_rejected(device: DeviceKey) -> None:
    rejected(device.proof("POST", URL, iat=NOW, drop_header=["jwk"]), "jwk")


@pytest.mark.parametrize("jwk", ["eyJ...", ["EC"], None, 1])
def test_a_jwk_that_is_not_an_object_is_rejected(device: DeviceKey, jwk: object) -> None:
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}
    rejected(raw_jws(header, _claims(), sign_with=device), "jwk")


def test_a_proof_carrying_its_private_key_is_rejected(device: DeviceKey) -> None:
    proof = device.proof("POST", URL, iat=NOW, header_overrides={"jwk": device.private_jwk})
    assert "d" in split(proof)[0]["jwk"]
    rejected(proof, "private")


@pytest.mark.parametrize(
    "extra",
    [
        {"kid": "device-1"},
        {"jku": "https://attacker.example/jwks"},
        {"x5u": "https://attacker.example/cert"},
        {"x5c": ["MIIBszCCAVmgAwIBAgIUJ"]},
    ],
    ids=["kid", "jku", "x5u", "x5c"],
)
def test_a_proof_naming_a_key_other_than_by_jwk_is_rejected(
    device: DeviceKey, extra: dict[str, object]
) -> None:
    rejected(device.proof("POST", URL, iat=NOW, header_overrides=extra), next(iter(extra)))


def test_a_proof_with_a_corrupted_signature_is_rejected(device: DeviceKey) -> None:
    head, body, sig = device.proof("POST", URL, iat=NOW).split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
    raw[10] ^= 0x01
    rejected(f"{head}.{body}.{b64url(bytes(raw))}", "signature")


def test_a_proof_with_its_claims_changed_after_signing_is_rejected(device: DeviceKey) -> None:
    head, _, sig = device.proof("POST", URL, iat=NOW, jti="a").split(".")
    _, other_body, _ = device.proof("POST", URL, iat=NOW, jti="b").split(".")
    rejected(f"{head}.{other_body}.{sig}", "signature")


def test_a_proof_signed_by_another_key_is_rejected(
    device: DeviceKey, other_device: DeviceKey
) -> None:
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": device.public_jwk}
    rejected(raw_jws(header, _claims(), sign_with=other_device), "signature")


def test_a_proof_with_an_empty_signature_is_rejected(device: DeviceKey) -> None:
    head, body, _ = device.proof("POST", URL, iat=NOW).split(".")
    rejected(f"{head}.{body}.", "signature")


def test_one_device_key_has_exactly_one_jkt(device: DeviceKey) -> None:
    padded = {**device.public_jwk, "x": device.public_jwk["x"] + "="}
    proof = device.proof("POST", URL, iat=NOW, header_overrides={"jwk": padded})
    with pytest.raises(InvalidDpopProof):
        verify(proof)


# ---- check 8: htm ----------------------------------------------------------------------


@pytest.mark.parametrize("htm", ["GET", "post", "Post", "PUT", "POST ", ""])
def test_a_proof_for_another_method_is_rejected(device: DeviceKey, htm: str) -> None:
    rejected(device.proof(htm, URL, iat=NOW), "htm")


# ---- check 9: htu ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "htu",
    [
        "https://broker.example/oauth2/other",
        "https://broker.example/oauth2/token/",
        "https://broker.example/OAUTH2/token",
        "https://broker.example/",
        "https://attacker.example/oauth2/token",
        "https://broker.example.attacker.example/oauth2/token",
        "http://broker.example/oauth2/token",
        "https://broker.example:8443/oauth2/token",
        "https://user@broker.example/oauth2/token",
        "/oauth2/token",
        "broker.example/oauth2/token",
        "not a url",
        "",
    ],
)
def test_a_proof_for_another_uri_is_rejected(device: DeviceKey, htu: str) -> None:
    rejected(device.proof("POST", htu, iat=NOW), "htu")


@pytest.mark.parametrize(
    "htu",
    [
        "HTTPS://BROKER.EXAMPLE/oauth2/token",
        "https://Broker.Example/oauth2/token",
        "https://broker.example:443/oauth2/token",
        "https://broker.example/oauth2/token?client=1",
        "https://broker.example/oauth2/token#fragment",
        "https://broker.example/oauth2/token?a=b#c",
        "https://broker.example/oauth2/%74oken",
        "https://broker.example/%6Fauth2/%74%6F%6B%65%6E",
        "https://broker.example/oauth2/./token",
        "https://broker.example/x/../oauth2/token",
    ],
)
def test_an_htu_equal_after_normalisation_is_accepted(device: DeviceKey, htu: str) -> None:
    assert verify(device.proof("POST", htu, iat=NOW)).htu == htu


@pytest.mark.parametrize(
    "url",
    [
        "https://broker.example/oauth2/token?x=1",
        "HTTPS://broker.example:443/oauth2/token",
        "https://broker.example/oauth2/%74oken",
    ],
)
def test_the_request_url_is_normalised_the_same_way(device: DeviceKey, url: str) -> None:
    verify(device.proof("POST", URL, iat=NOW), url=url)


def test_a_non_default_port_must_match(device: DeviceKey) -> None:
    url = "http://127.0.0.1:3000/oauth2/token"
    verify(device.proof("POST", "http://127.0.0.1:3000/oauth2/token", iat=NOW), url=url)
    rejected(device.proof("POST", "http://127.0.0.1/oauth2/token", iat=NOW), "htu", url=url)


def test_a_default_http_port_is_the_same_as_no_port(device: DeviceKey) -> None:
    url = "http://broker.example/oauth2/token"
    verify(device.proof("POST", "http://broker.example:80/oauth2/token", iat=NOW), url=url)


def test_a_reserved_percent_encoding_is_not_decoded() -> None:
    assert normalize_htu("https://h.example/a%2Fb") != normalize_htu("https://h.example/a/b")


def test_percent_encoded_dot_segments_are_removed_like_literal_ones() -> None:
    assert normalize_htu("https://h.example/a/%2E%2E/b") == "https://h.example/b"


def test_normalising_an_htu_emits_no_deprecation_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        normalize_htu(URL)


# ---- check 11: iat window --------------------------------------------------------------


def test_iat_at_now_plus_skew_is_accepted(device: DeviceKey) -> None:
    verify(device.proof("POST", URL, iat=NOW + POLICY.skew))


def test_iat_one_second_beyond_the_skew_is_rejected(device: DeviceKey) -> None:
    rejected(device.proof("POST", URL, iat=NOW + POLICY.skew + 1), "future")


def test_iat_at_the_oldest_accepted_moment_is_accepted(device: DeviceKey) -> None:
    verify(device.proof("POST", URL, iat=NOW - POLICY.max_age - POLICY.skew))


def test_iat_one_second_older_than_max_age_plus_skew_is_rejected(device: DeviceKey) -> None:
    rejected(device.proof("POST", URL, iat=NOW - POLICY.max_age - POLICY.skew - 1), "too old")


def test_the_window_follows_the_clock_not_the_proof(device: DeviceKey) -> None:
    proof = device.proof("POST", URL, iat=NOW)
    verify(proof, now=NOW + POLICY.max_age + POLICY.skew)
    rejected(proof, "too old", now=NOW + POLICY.max_age + POLICY.skew + 1)
    rejected(proof, "future", now=NOW - POLICY.skew - 1)


@pytest.mark.parametrize(
    "iat",
    [float(NOW), NOW + 0.5, str(NOW), True, None, [NOW], {"t": NOW}],
    ids=["float", "fraction", "string", "bool", "null", "list", "object"],
)
def test_a_non_integer_iat_is_rejected(device: DeviceKey, iat: object) -> None:
    rejected(device.proof("POST", URL, iat=iat), "iat")


@pytest.mark.parametrize(
    ("iat", "reason"), [(10**20, "future"), (-(10**20), "too old"), (0, "too old"), (-1, "too old")]
)
def test_an_absurd_iat_is_rejected(device: DeviceKey, iat: int, reason: str) -> None:
    rejected(device.proof("POST", URL, iat=iat), reason)


# ---- check 12: ath at protected resources ----------------------------------------------


def test_a_proof_with_the_access_token_hash_is_accepted_at_a_resource(device: DeviceKey) -> None:
    verify(device.proof("GET", URL, iat=NOW, ath=ath_for(TOKEN)), method="GET", access_token=TOKEN)


def test_a_proof_without_ath_is_rejected_when_a_token_is_presented(device: DeviceKey) -> None:
    rejected(device.proof("GET", URL, iat=NOW), "ath", method="GET", access_token=TOKEN)


@pytest.mark.parametrize(
    "ath",
    [ath_for(TOKEN + "x"), ath_for(TOKEN)[:-1], ath_for(TOKEN) + "=", "", 1],
    ids=["other-token", "truncated", "padded", "empty", "not-a-string"],
)
def test_a_proof_with_a_wrong_ath_is_rejected(device: DeviceKey, ath: object) -> None:
    proof = device.proof("GET", URL, iat=NOW, claim_overrides={"ath": ath})
    rejected(proof, "ath", method="GET", access_token=TOKEN)


def test_an_ath_that_is_not_valid_unicode_is_an_invalid_proof_not_a_crash(
    device: DeviceKey,
) -> None:
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": device.public_jwk}
    body = f'{{"jti":"j","htm":"GET","htu":"{URL}","iat":{NOW},"ath":"\\ud800"}}'
    rejected(raw_jws(header, body, sign_with=device), method="GET", access_token=TOKEN)


def test_a_jti_that_is_not_valid_unicode_is_rejected(device: DeviceKey) -> None:
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": device.public_jwk}
    body = f'{{"jti":"\\ud800","htm":"POST","htu":"{URL}","iat":{NOW}}}'
    rejected(raw_jws(header, body, sign_with=device), "malformed")


def test_ath_is_not_required_at_the_token_endpoint(device: DeviceKey) -> None:
    verify(device.proof("POST", URL, iat=NOW, ath=ath_for(TOKEN)))


# ---- replay key (§11.1) ------------------------------------------------------------------


def test_the_replay_key_differs_per_jti(device: DeviceKey) -> None:
    a = verify(device.proof("POST", URL, iat=NOW, jti="a"))
    b = verify(device.proof("POST", URL, iat=NOW, jti="b"))
    assert replay_key(a.jkt, a.jti) != replay_key(b.jkt, b.jti)


def test_the_replay_key_differs_per_key(device: DeviceKey, other_device: DeviceKey) -> None:
    a = verify(device.proof("POST", URL, iat=NOW, jti="same"))
    b = verify(other_device.proof("POST", URL, iat=NOW, jti="same"))
    assert replay_key(a.jkt, a.jti) != replay_key(b.jkt, b.jti)


def test_the_replay_key_cannot_be_made_ambiguous_by_moving_characters() -> None:
    assert replay_key("ab", "c") != replay_key("a", "bc")


@pytest.mark.parametrize("alg", ["ES256", "ES384"])
def test_a_malleated_ecdsa_signature_verifies_but_yields_the_same_replay_key(alg: str) -> None:
    key = DeviceKey.generate(alg)
    original = key.proof("POST", URL, iat=NOW, jti="once")
    twin = malleate_ecdsa(original)
    assert twin != original
    first, second = verify(original), verify(twin)
    assert replay_key(first.jkt, first.jti) == replay_key(second.jkt, second.jti)


def test_the_replay_key_is_the_same_for_two_proofs_with_the_same_jti(device: DeviceKey) -> None:
    a = verify(device.proof("POST", URL, iat=NOW, jti="x"))
    b = verify(device.proof("POST", URL, iat=NOW + 1, jti="x"))
    assert replay_key(a.jkt, a.jti) == replay_key(b.jkt, b.jti)


def test_the_replay_window_covers_max_age_and_skew_on_both_sides() -> None:
    assert POLICY.replay_window >= POLICY.max_age + POLICY.skew
