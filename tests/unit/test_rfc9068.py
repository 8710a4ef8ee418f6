"""RFC 9068 access tokens: one verify path that checks header, every claim, signature."""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from support.dpop import DeviceKey, raw_jws
from tokenbroker.domain.errors import InvalidToken
from tokenbroker.domain.rfc9068 import (
    MAX_LIFETIME,
    MAX_TOKEN_LENGTH,
    AccessTokenClaims,
    assemble,
    signing_input,
    verify_access_token,
)

NOW = 1_800_000_000
SKEW = 5
ISSUER = "https://broker.example"
AUDIENCE = "https://api.example"
DEVICE_JKT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.fixture(scope="module")
def issuer_key() -> DeviceKey:
    """The broker's signing key (KMS in production)."""
    return DeviceKey.generate("ES256")


@pytest.fixture(scope="module")
def keys(issuer_key: DeviceKey) -> dict[str, Any]:
    return {issuer_key.jkt: issuer_key.private_key.public_key()}


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "tbc_client",
        "aud": AUDIENCE,
        "exp": NOW + 300,
        "iat": NOW,
        "jti": "token-1",
        "client_id": "tbc_client",
        "scope": "model:a:invoke read",
        "cnf": {"jkt": DEVICE_JKT},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


def token(
    key: DeviceKey,
    body: dict[str, Any] | None = None,
    *,
    header: dict[str, Any] | None = None,
    sign_with: DeviceKey | None = None,
) -> str:
    head = {"alg": "ES256", "typ": "at+jwt", "kid": key.jkt, **(header or {})}
    head = {k: v for k, v in head.items() if v is not _DROP}
    return raw_jws(head, body if body is not None else claims(), sign_with=sign_with or key)


def verify(value: object, keys: dict[str, Any], now: float = NOW) -> AccessTokenClaims:
    return verify_access_token(
        value, resolve_key=keys.get, issuer=ISSUER, audience=AUDIENCE, now=now, skew=SKEW
    )


def rejected(value: object, keys: dict[str, Any], match: str, now: float = NOW) -> None:
    with pytest.raises(InvalidToken, match=match) as caught:
        verify(value, keys, now)
    assert caught.value.error == "invalid_token"


# ---- accepted --------------------------------------------------------------------------


def test_a_valid_token_yields_its_claims(issuer_key: DeviceKey, keys: dict[str, Any]) -> None:
    assert verify(token(issuer_key), keys) == AccessTokenClaims(
        iss=ISSUER,
        sub="tbc_client",
        aud=AUDIENCE,
        exp=NOW + 300,
        iat=NOW,
        jti="token-1",
        client_id="tbc_client",
        scope=("model:a:invoke", "read"),
        jkt=DEVICE_JKT,
    )


def test_a_token_built_by_signing_input_round_trips_and_pyjwt_agrees(
    issuer_key: DeviceKey, keys: dict[str, Any]
) -> None:
    original = AccessTokenClaims(
        ISSUER, "s", AUDIENCE, NOW + 60, NOW, "j", "c", ("a", "b"), DEVICE_JKT
    )
    payload = signing_input(original, issuer_key.jkt)
    value = assemble(payload, issuer_key.sign(payload))
    assert verify(value, keys) == original
    decoded = jwt.decode(
        value,
        issuer_key.private_key.public_key(),
        algorithms=["ES256"],
        audience=AUDIENCE,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert decoded["cnf"] == {"jkt": DEVICE_JKT}
    assert jwt.get_unverified_header(value) == {
        "alg": "ES256",
        "typ": "at+jwt",
        "kid": issuer_key.jkt,
    }


def test_the_media_type_spelling_of_typ_is_accepted(
    issuer_key: DeviceKey, keys: dict[str, Any]
) -> None:
    verify(token(issuer_key, header={"typ": "application/at+jwt"}), keys)


def test_an_audience_list_containing_our_audience_is_accepted(
    issuer_key: DeviceKey, keys: dict[str, Any]
) -> None:
    body = claims(aud=["https://other.example", AUDIENCE])
    assert verify(token(issuer_key, body), keys).aud == AUDIENCE


# ---- header ----------------------------------------------------------------------------


@pytest.mark.parametrize("typ", ["JWT", "jwt", "dpop+jwt", "at+JWT ", "", None, _DROP])
def test_a_token_with_another_typ_is_rejected(
    issuer_key: DeviceKey, keys: dict[str, Any], typ: object
) -> None:
    rejected(token(issuer_key, header={"typ": typ}), keys, "typ")


@pytest.mark.parametrize("alg", ["ES384", "RS256", "HS256", "none", "NONE", "EdDSA", _DROP])
def test_a_token_with_another_alg_is_rejected(
    issuer_key: DeviceKey, keys: dict[str, Any], alg: object
) -> None:
    rejected(token(issuer_key, header={"alg": alg}), keys, "alg")


def test_an_es384_token_signed_by_a_p384_key_is_rejected() -> None:
    p384 = DeviceKey.generate("ES384")
    value = token(p384, header={"alg": "ES384"})
    rejected(value, {p384.jkt: p384.private_key.public_key()}, "alg")


@pytest.mark.parametrize(
    "extra",
    [
        {"jwk": {"kty": "EC"}},
        {"jku": "https://attacker.example/jwks"},
        {"x5u": "https://attacker.example/c"},
        {"x5c": ["MIIB"]},
    ],
    ids=["jwk", "jku", "x5u", "x5c"],
)
def test_a_token_naming_its_own_key_is_rejected(
    issuer_key: DeviceKey, keys: dict[str, Any], extra: dict[str, Any]
) -> None:
    rejected(token(issuer_key, header=extra), keys, next(iter(extra)))


@pytest.mark.parametrize("kid", [_DROP, "key-1", "", 7, DEVICE_JKT + "="])
def test_a_token_without_a_thumbprint_kid_is_rejected(
    issuer_key: DeviceKey, keys: dict[str, Any], kid: object
) -> None:
    rejected(token(issuer_key, header={"kid": kid}), keys, "kid")


def test_a_token_with_an_unknown_kid_is_rejected(issuer_key: DeviceKey) -> None:
    rejected(token(issuer_key), {}, "kid is unknown")


def test_a_token_signed_by_another_key_under_the_real_kid_is_rejected(
    issuer_key: DeviceKey, keys: dict[str, Any]
) -> None:
    rejected(token(issuer_key, sign_with=DeviceKey.generate()), keys, "signature")


def test_a_token_with_changed_claims_is_rejected(
    issuer_key: DeviceKey, keys: dict[str, Any]
) -> None:
    head, _, sig = token(issuer_key).split(".")
    _, body, _ = token(issuer_key, claims(scope="admin")).split(".")
    rejected(f"{head}.{body}.{sig}", keys, "signature")


def test_a_dpop_proof_presented_as_a_token_is_rejected(keys: dict[str, Any]) -> None:
    device = DeviceKey.generate()
    proof = device.proof("GET", "https://api.example/v1/whoami", iat=NOW)
    rejected(proof, {**keys, device.jkt: device.private_key.public_key()}, "typ")


def test_a_token_with_crit_is_rejected(issuer_key: DeviceKey, keys: dict[str, Any]) -> None:
    rejected(token(issuer_key, header={"crit": ["exp"]}), keys, "critical")


def test_a_token_larger_than_the_limit_is_rejected(
    issuer_key: DeviceKey, keys: dict[str, Any]
) -> None:
    rejected(token(issuer_key, claims(pad="x" * MAX_TOKEN_LENGTH)), keys, "too large")


# ---- claims ----------------------------------------------------------------------------


@pytest.mark.parametrize("iss", ["https://attacker.example", ISSUER + "/", "", None, _DROP])
def test_a_token_from_another_issuer_is_rejected(
    issuer_key: DeviceKey, keys: dict[str, Any], iss: object
) -> None:
    rejected(token(issuer_key, claims(iss=iss)), keys, "issuer")


@pytest.mark.parametrize(
    "aud",
    ["https://other.example", [], ["https://other.example"], [AUDIENCE, 1], None, _DROP],
)
def test_a_token_for_another_audience_is_rejected(
    issuer_key: DeviceKey, keys: dict[str, Any], aud: object
) -> None:
    rejected(token(issuer_key, claims(aud=aud)), keys, "audience")


def test_a_token_is_accepted_until_exp_plus_skew(
    issuer_key: DeviceKey, keys: dict[str, Any]
) -> None:
    exp = NOW - SKEW + 1
    verify(token(issuer_key, claims(exp=exp, iat=exp - 300)), keys)


def test_a_token_with_exp_at_now_minus_skew_is_rejected(
    issuer_key: DeviceKey, keys: dict[str, Any]
) -> None:
    exp = NOW - SKEW
    rejected(token(issuer_key, claims(exp=exp, iat=exp - 300)), keys, "expired")


def test_iat_at_now_plus_skew_is_accepted_and_one_more_is_not(
    issuer_key: DeviceKey, keys: dict[str, Any]
) -> None:
    verify(token(issuer_key, claims(iat=NOW + SKEW, exp=NOW + SKEW + 60)), keys)
    value = token(issuer_key, claims(iat=NOW + SKEW + 1, exp=NOW + SKEW + 61))
    rejected(value, keys, "not valid yet")


def test_nbf_in_the_future_is_rejected(issuer_key: DeviceKey, keys: dict[str, Any]) -> None:
    verify(token(issuer_key, claims(nbf=NOW + SKEW)), keys)
    rejected(token(issuer_key, claims(nbf=NOW + SKEW + 1)), keys, "not valid yet")


def test_a_lifetime_of_exactly_the_cap_is_accepted_and_one_second_more_is_not(
    issuer_key: DeviceKey, keys: dict[str, Any]
) -> None:
    verify(token(issuer_key, claims(exp=NOW + MAX_LIFETIME)), keys)
    rejected(token(issuer_key, claims(exp=NOW + MAX_LIFETIME + 1)), keys, "lifetime")
    assert MAX_LIFETIME == 900


def test_a_token_that_expires_when_it_is_issued_is_rejected(
    issuer_key: DeviceKey, keys: dict[str, Any]
) -> None:
    rejected(token(issuer_key, claims(exp=NOW, iat=NOW)), keys, "lifetime")


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
@pytest.mark.parametrize(
    "value",
    [float(NOW + 60), NOW + 60.5, str(NOW + 60), True, None, 2**40, 10**30, -1, [NOW]],
    ids=["float", "fraction", "string", "bool", "null", "2**40", "huge", "negative", "list"],
)
def test_a_non_integer_or_out_of_range_numeric_date_is_rejected(
    issuer_key: DeviceKey, keys: dict[str, Any], name: str, value: object
) -> None:
    rejected(token(issuer_key, claims(**{name: value})), keys, name)


@pytest.mark.parametrize("name", ["exp", "iat"])
def test_a_token_without_exp_or_iat_is_rejected(
    issuer_key: DeviceKey, keys: dict[str, Any], name: str
) -> None:
    rejected(token(issuer_key, claims(**{name: _DROP})), keys, name)


@pytest.mark.parametrize("name", ["sub", "client_id", "jti"])
@pytest.mark.parametrize("value", [_DROP, "", 1, None, "x" * 257])
def test_a_missing_or_invalid_string_claim_is_rejected(
    issuer_key: DeviceKey, keys: dict[str, Any], name: str, value: object
) -> None:
    rejected(token(issuer_key, claims(**{name: value})), keys, name)


@pytest.mark.parametrize("scope", [_DROP, ["a"], None, "a" * 2049])
def test_a_missing_or_invalid_scope_is_rejected(
    issuer_key: DeviceKey, keys: dict[str, Any], scope: object
) -> None:
    rejected(token(issuer_key, claims(scope=scope)), keys, "scope")


@pytest.mark.parametrize(
    "cnf",
    [
        _DROP,
        None,
        DEVICE_JKT,
        {},
        {"jwk": {"kty": "EC"}},
        {"jkt": DEVICE_JKT + "="},
        {"jkt": DEVICE_JKT[:-1]},
        {"jkt": 1},
        [DEVICE_JKT],
    ],
    ids=["missing", "null", "string", "empty", "jwk", "padded", "short", "int", "list"],
)
def test_a_token_not_bound_to_a_thumbprint_is_rejected(
    issuer_key: DeviceKey, keys: dict[str, Any], cnf: object
) -> None:
    rejected(token(issuer_key, claims(cnf=cnf)), keys, "cnf.jkt")


@pytest.mark.parametrize(
    "value",
    [None, "", "a.b", "a.b.c", "..", b"x.y.z", 42, "e30.e30.", "e30.e30.e30.e30"],
)
def test_garbage_is_always_an_invalid_token_never_another_exception(
    keys: dict[str, Any], value: object
) -> None:
    with pytest.raises(InvalidToken):
        verify(value, keys)
