"""The token endpoint Lambda, end to end on moto: genuine API Gateway REST proxy events
in, API Gateway responses out, against tables and a KMS key built from template.yaml.

Every response is checked for its status, its exact OAuth ``error`` and
``Cache-Control: no-store``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest

from support.dpop import DeviceKey, b64url_json, malleate_ecdsa, raw_jws
from tokenbroker import bootstrap

from ._support import (
    APP_SCOPES,
    AUDIENCE,
    HOST,
    ISSUER,
    LIFETIME,
    PROOF_MAX_AGE,
    REAL_DEFAULT,
    SKEW,
    STAGE,
    TOKEN_URL,
    App,
    Broker,
    assert_error,
    basic_authorization,
    captured_output,
    header,
    json_body,
    token_event,
)

BASIC_CHALLENGE_PREFIX = "Basic "
ALL_SCOPES = " ".join(sorted(APP_SCOPES))


def credentials(app: App, **extra: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": app.client_id,
        "client_secret": app.secret,
        **extra,
    }


def assert_token_response(response: dict[str, Any], scope: str = ALL_SCOPES) -> dict[str, Any]:
    assert response["statusCode"] == 200, response
    assert header(response, "Cache-Control") == "no-store"
    assert header(response, "Content-Type") == "application/json"
    body = json_body(response)
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "DPoP"
    assert body["expires_in"] == LIFETIME
    assert body["scope"] == scope
    return body


def verify_with_pyjwt(broker: Broker, token: str) -> dict[str, Any]:
    """Verify an access token the way a third-party resource server would: pyjwt, the
    published JWKS, ES256 only, issuer and audience required."""
    keys = broker.jwks()["keys"]
    assert len(keys) == 1
    headers = jwt.get_unverified_header(token)
    assert headers == {"alg": "ES256", "typ": "at+jwt", "kid": keys[0]["kid"]}
    claims = jwt.decode(
        token,
        jwt.PyJWK(keys[0]),
        algorithms=["ES256"],
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"]},
    )
    assert isinstance(claims, dict)
    return claims


# ================================================================ happy paths


@pytest.mark.parametrize("auth", ["basic", "post"])
def test_an_enrolled_device_gets_a_dpop_bound_token_that_verifies_against_the_published_jwks(
    broker: Broker, app: App, auth: str
) -> None:
    response = broker.issue(app, auth=auth)

    body = assert_token_response(response)
    claims = verify_with_pyjwt(broker, body["access_token"])
    assert claims["iss"] == ISSUER == f"https://{HOST}/{STAGE}"
    assert claims["sub"] == app.client_id
    assert claims["client_id"] == app.client_id
    assert claims["aud"] == AUDIENCE
    assert claims["scope"] == ALL_SCOPES
    assert claims["iat"] == broker.now
    assert claims["exp"] - claims["iat"] == LIFETIME
    assert isinstance(claims["jti"], str)
    assert claims["jti"]
    assert claims["cnf"] == {"jkt": app.key.jkt}


@pytest.mark.parametrize("auth", ["basic", "post"])
def test_each_issued_token_has_one_issuance_record_holding_no_token_and_no_secret(
    broker: Broker, app: App, auth: str
) -> None:
    proof = broker.proof(app.key)
    response = broker.invoke_token(broker.request(app, auth=auth, proof=proof))
    token = assert_token_response(response)["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})

    records = broker.token_records()

    assert len(records) == 1
    record = records[0]
    assert record["jti"] == claims["jti"]
    assert record["client_id"] == app.client_id
    assert record["jkt"] == app.key.jkt
    assert record["scope"] == ALL_SCOPES
    assert record["aud"] == AUDIENCE
    assert record["issued_at"] == claims["iat"]
    assert record["expires_at"] == claims["exp"]
    assert record["ttl"] > claims["exp"]
    stored = json.dumps(records, default=str)
    for secret in (token, token.rsplit(".", 1)[1], app.secret, proof, proof.rsplit(".", 1)[1]):
        assert secret not in stored


def test_each_issuance_writes_one_token_issued_ledger_record_from_the_request(
    broker: Broker, app: App
) -> None:
    proof = broker.proof(app.key)
    event = broker.request(app, proof=proof)
    token = assert_token_response(broker.invoke_token(event))["access_token"]
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]

    (record,) = broker.ledger_records()
    assert record["id"] == "iss:" + jti
    assert (record["event"], record["decision"], record["reason"]) == (
        "token_issued",
        "allow",
        "ok",
    )
    assert (record["principal"], record["client_id"]) == (app.client_id, app.client_id)
    assert (record["jkt"], record["token_jti"]) == (app.key.jkt, jti)
    assert record["at"] == broker.now * 1000
    assert record["source_ip"] == event["requestContext"]["identity"]["sourceIp"]
    assert record["user_agent"] == event["requestContext"]["identity"]["userAgent"]
    assert record["request_id"] == event["requestContext"]["requestId"]
    # DynamoDB keeps it for the hot window (HotWindowDays), the archive for the retention
    assert record["ttl"] == broker.now + 30 * 86_400
    assert record["ru"] == broker.now + 400 * 86_400  # USAGE_RETENTION_DAYS default
    assert "actor" not in record
    # no index key at all: the usage table has no GSI (the time index is stream-built)
    assert not {"hour_shard", "principal_shard", "device_shard", "token_shard"} & set(record)
    stored = json.dumps(broker.ledger_records(event=None), default=str)
    secret_hash = hashlib.sha256(app.secret.encode()).hexdigest()
    for secret in (token, token.rsplit(".", 1)[1], app.secret, secret_hash, proof):
        assert secret not in stored


def test_the_genuine_composition_root_on_the_wall_clock_issues_a_token(
    broker: Broker, app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bootstrap, "default", REAL_DEFAULT)
    REAL_DEFAULT.cache_clear()
    # the wall clock reads at most a few seconds after the fixed one: inside the window
    response = broker.issue(app, auth="basic")

    token = assert_token_response(response)["access_token"]
    assert verify_with_pyjwt(broker, token)["cnf"] == {"jkt": app.key.jkt}


def test_a_base64_encoded_form_body_is_accepted_when_is_base64_encoded_is_set(
    broker: Broker, app: App
) -> None:
    event = token_event(urlencode(credentials(app)), dpop=broker.proof(app.key), base64_body=True)
    assert event["isBase64Encoded"] is True

    assert_token_response(broker.invoke_token(event))


def test_lower_case_header_names_and_a_charset_parameter_are_accepted(
    broker: Broker, app: App
) -> None:
    event = token_event(
        credentials(app),
        content_type=None,
        headers={
            "content-type": "application/x-www-form-urlencoded; charset=UTF-8",
            "dpop": broker.proof(app.key),
        },
    )

    assert_token_response(broker.invoke_token(event))


def test_the_configured_audience_may_be_requested_as_resource(broker: Broker, app: App) -> None:
    body = assert_token_response(broker.issue(app, resource=AUDIENCE))

    assert verify_with_pyjwt(broker, body["access_token"])["aud"] == AUDIENCE


# ================================================================ client authentication


@pytest.mark.parametrize("auth", ["basic", "post"])
def test_unknown_client_wrong_secret_and_disabled_client_get_byte_identical_401s(
    broker: Broker, app: App, auth: str
) -> None:
    disabled = broker.new_app()
    bootstrap.default().admin.disable_client(disabled.client_id)
    unenrolled = DeviceKey.generate()

    responses = {
        "unknown client": broker.issue(app, auth=auth, client_id="tbc_" + "0" * 24),
        "wrong secret": broker.issue(app, auth=auth, secret="x" * len(app.secret)),
        "wrong secret, unenrolled key": broker.issue(
            app, auth=auth, secret=app.secret[:-1], key=unenrolled
        ),
        "disabled client": broker.issue(disabled, auth=auth),
    }

    first = responses["unknown client"]
    for name, response in responses.items():
        assert response == first, name
    assert_error(first, 401, "invalid_client")
    challenge = header(first, "WWW-Authenticate")
    if auth == "basic":
        assert challenge is not None
        assert challenge.startswith(BASIC_CHALLENGE_PREFIX)
    else:
        assert challenge is None
    assert broker.token_records() == []


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Basic !!!not-base64!!!", id="not base64"),
        pytest.param("Basic " + base64.b64encode(b"no-colon-here").decode(), id="no colon"),
        pytest.param("Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(), id="not UTF-8"),
        pytest.param("Basic ", id="empty"),
    ],
)
def test_basic_credentials_that_do_not_decode_are_invalid_client_with_a_basic_challenge(
    broker: Broker, app: App, authorization: str
) -> None:
    form = {"grant_type": "client_credentials"}
    event = token_event(form, authorization=authorization, dpop=broker.proof(app.key))

    response = broker.invoke_token(event)

    assert_error(response, 401, "invalid_client")
    assert (header(response, "WWW-Authenticate") or "").startswith(BASIC_CHALLENGE_PREFIX)


def test_basic_authentication_and_a_client_secret_in_the_body_together_are_invalid_request(
    broker: Broker, app: App
) -> None:
    event = token_event(
        credentials(app), basic=(app.client_id, app.secret), dpop=broker.proof(app.key)
    )

    assert_error(broker.invoke_token(event), 400, "invalid_request")
    assert broker.token_records() == []


# ================================================================ malformed requests


def _appended(extra: str) -> Callable[[App], str]:
    return lambda app: urlencode(credentials(app)) + extra


def _raw_bytes(extra: bytes) -> Callable[[App], bytes]:
    return lambda app: urlencode(credentials(app)).encode() + extra


MALFORMED_FORMS: list[Any] = [
    pytest.param(_appended("&=x&&"), id="empty names and empty fields"),
    pytest.param(_appended("&&"), id="empty fields"),
    pytest.param(_raw_bytes(b"&scope=\xff\xfe"), id="not UTF-8 (base64-encoded body)"),
    pytest.param(_appended("&scope=%ff%fe"), id="percent-encoded bytes that are not UTF-8"),
    pytest.param(_appended("&grant_type=client_credentials"), id="grant_type twice"),
    pytest.param(_appended("&scope=profile&scope=profile"), id="scope twice"),
    pytest.param(lambda app: _appended(f"&client_id={app.client_id}")(app), id="client_id twice"),
    pytest.param(_appended("&pad=" + "a" * 9000), id="body over 8 KiB"),
    pytest.param(_raw_bytes(b"&pad=" + b"a" * 9000), id="base64-encoded body over 8 KiB"),
    pytest.param(_appended("&f=1" * 40), id="too many fields"),
]


@pytest.mark.parametrize("make_body", MALFORMED_FORMS)
def test_malformed_form_bodies_are_invalid_request(
    broker: Broker, app: App, make_body: Callable[[App], str | bytes]
) -> None:
    event = token_event(make_body(app), dpop=broker.proof(app.key))

    assert_error(broker.invoke_token(event), 400, "invalid_request")
    assert broker.token_records() == []


def test_an_invalid_percent_escape_makes_the_form_invalid_request(broker: Broker, app: App) -> None:
    event = token_event(urlencode(credentials(app)) + "&a=%zz", dpop=broker.proof(app.key))

    assert_error(broker.invoke_token(event), 400, "invalid_request")


def test_a_base64_flagged_body_that_is_not_base64_is_invalid_request(
    broker: Broker, app: App
) -> None:
    event = token_event(urlencode(credentials(app)), dpop=broker.proof(app.key))
    event["isBase64Encoded"] = True

    assert_error(broker.invoke_token(event), 400, "invalid_request")


@pytest.mark.parametrize(
    ("content_type", "encode"),
    [
        pytest.param("application/json", json.dumps, id="application/json"),
        pytest.param(None, urlencode, id="missing"),
        pytest.param("text/plain", urlencode, id="text/plain"),
        pytest.param("multipart/form-data; boundary=x", urlencode, id="multipart"),
        pytest.param(
            ["application/x-www-form-urlencoded", "application/x-www-form-urlencoded"],
            urlencode,
            id="two Content-Type headers",
        ),
    ],
)
def test_a_body_that_is_not_one_urlencoded_form_is_invalid_request(
    broker: Broker, app: App, content_type: Any, encode: Callable[[Any], str]
) -> None:
    event = token_event(
        encode(credentials(app)),
        content_type=None,
        headers={"Content-Type": content_type} if content_type else None,
        dpop=broker.proof(app.key),
    )

    assert_error(broker.invoke_token(event), 400, "invalid_request")


def test_a_request_without_grant_type_is_invalid_request(broker: Broker, app: App) -> None:
    form = credentials(app)
    del form["grant_type"]
    event = token_event(form, dpop=broker.proof(app.key))

    assert_error(broker.invoke_token(event), 400, "invalid_request")


@pytest.mark.parametrize(
    "grant_type",
    [
        "password",
        "authorization_code",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
        # refresh_token and token-exchange are served for people (tests/endpoint/
        # test_refresh_tokens.py, test_token_exchange.py)
        "Client_Credentials",
        "",
    ],
)
def test_grant_types_other_than_client_credentials_are_unsupported(
    broker: Broker, app: App, grant_type: str
) -> None:
    event = token_event(credentials(app, grant_type=grant_type), dpop=broker.proof(app.key))

    assert_error(broker.invoke_token(event), 400, "unsupported_grant_type")


@pytest.mark.parametrize("resource", ["https://elsewhere.example/api", "", AUDIENCE + "/"])
def test_a_resource_that_is_not_a_configured_audience_is_invalid_target(
    broker: Broker, app: App, resource: str
) -> None:
    assert_error(broker.issue(app, resource=resource), 400, "invalid_target")


# ================================================================ DPoP proof (RFC 9449 §4.3)


ProofCase = Callable[[Broker, App], str | list[str] | None]


def _proof(**kw: Any) -> ProofCase:
    return lambda broker, app: broker.proof(app.key, **kw)


def _at(offset: int) -> ProofCase:
    return lambda broker, app: broker.proof(app.key, iat=broker.now + offset)


def _two_proofs(broker: Broker, app: App) -> list[str]:
    return [broker.proof(app.key), broker.proof(app.key)]


def _same_proof_twice(broker: Broker, app: App) -> list[str]:
    proof = broker.proof(app.key)
    return [proof, proof]


def _claims(broker: Broker) -> dict[str, Any]:
    return {"jti": "j-" + str(broker.now), "htm": "POST", "htu": TOKEN_URL, "iat": broker.now}


def _alg_none(broker: Broker, app: App) -> str:
    head = {"typ": "dpop+jwt", "alg": "none", "jwk": app.key.public_jwk}
    return raw_jws(head, _claims(broker))


def _hs256_with_the_public_jwk_as_secret(broker: Broker, app: App) -> str:
    head = {"typ": "dpop+jwt", "alg": "HS256", "jwk": app.key.public_jwk}
    signing_input = f"{b64url_json(head)}.{b64url_json(_claims(broker))}"
    secret = json.dumps(app.key.public_jwk).encode()
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return raw_jws(head, _claims(broker), signature=mac)


def _bad_signature(broker: Broker, app: App) -> str:
    head = {"typ": "dpop+jwt", "alg": "ES256", "jwk": app.key.public_jwk}
    return raw_jws(head, _claims(broker), signature=app.key.sign(b"some other message"))


def _signed_by_another_key(broker: Broker, app: App) -> str:
    head = {"typ": "dpop+jwt", "alg": "ES256", "jwk": app.key.public_jwk}
    return raw_jws(head, _claims(broker), sign_with=DeviceKey.generate())


def _p384_key_under_es256(broker: Broker, app: App) -> str:
    other = DeviceKey.generate("ES384")
    head = {"typ": "dpop+jwt", "alg": "ES256", "jwk": other.public_jwk}
    return raw_jws(head, _claims(broker), sign_with=other)


PROOF_DEFECTS: list[Any] = [
    pytest.param(lambda broker, app: None, id="no DPoP header"),
    pytest.param(_two_proofs, id="two DPoP headers"),
    pytest.param(_same_proof_twice, id="the same proof in two DPoP headers"),
    pytest.param(lambda broker, app: "not-a-jws", id="not a JWS"),
    pytest.param(lambda broker, app: "", id="empty"),
    pytest.param(_proof(drop_claims=["jti"]), id="no jti"),
    pytest.param(_proof(drop_claims=["htm"]), id="no htm"),
    pytest.param(_proof(drop_claims=["htu"]), id="no htu"),
    pytest.param(_proof(drop_claims=["iat"]), id="no iat"),
    pytest.param(_proof(claim_overrides={"jti": "j" * 129}), id="jti too long"),
    pytest.param(lambda b, a: b.proof(a.key, iat=str(b.now)), id="iat a string"),
    pytest.param(lambda b, a: b.proof(a.key, iat=b.now + 0.5), id="iat a float"),
    pytest.param(_proof(header_overrides={"typ": "JWT"}), id="typ JWT"),
    pytest.param(_proof(drop_header=["typ"]), id="no typ"),
    pytest.param(_alg_none, id="alg none"),
    pytest.param(_hs256_with_the_public_jwk_as_secret, id="alg HS256"),
    pytest.param(_p384_key_under_es256, id="P-384 key under ES256"),
    pytest.param(lambda b, a: b.proof(a.key, header_overrides={"jwk": a.key.private_jwk}), id="d"),
    pytest.param(_proof(drop_header=["jwk"]), id="no jwk"),
    pytest.param(_proof(header_overrides={"kid": "k1"}), id="kid header"),
    pytest.param(_proof(header_overrides={"crit": ["exp"]}), id="crit header"),
    pytest.param(_proof(htm="GET"), id="htm GET"),
    pytest.param(_proof(htm="post"), id="htm post (lower case)"),
    pytest.param(_proof(htu=ISSUER + "/oauth2/revoke"), id="htu other path"),
    pytest.param(_proof(htu=f"https://{HOST}/oauth2/token"), id="htu without the stage"),
    pytest.param(_proof(htu="https://evil.example/prod/oauth2/token"), id="htu other host"),
    pytest.param(_proof(htu=f"http://{HOST}/{STAGE}/oauth2/token"), id="htu http scheme"),
    pytest.param(_proof(htu=f"https://{HOST}:8443/{STAGE}/oauth2/token"), id="htu other port"),
    pytest.param(_proof(htu=AUDIENCE), id="htu the resource"),
    pytest.param(_proof(htu=ISSUER + "/v1/whoami"), id="htu the resource URL"),
    pytest.param(_at(-(PROOF_MAX_AGE + SKEW + 1)), id="stale iat"),
    pytest.param(_at(-3600), id="iat an hour old"),
    pytest.param(_at(SKEW + 1), id="future iat"),
    pytest.param(_bad_signature, id="bad signature"),
    pytest.param(_signed_by_another_key, id="signed by another key than its jwk"),
]


@pytest.mark.parametrize("make_proof", PROOF_DEFECTS)
def test_each_dpop_proof_defect_is_invalid_dpop_proof(
    broker: Broker, app: App, make_proof: ProofCase
) -> None:
    event = token_event(credentials(app), dpop=make_proof(broker, app))

    assert_error(broker.invoke_token(event), 400, "invalid_dpop_proof")
    assert broker.token_records() == []


@pytest.mark.parametrize(
    "offset",
    [-(PROOF_MAX_AGE + SKEW), SKEW, 0],
    ids=["oldest accepted", "newest accepted", "now"],
)
def test_proofs_at_the_edges_of_the_acceptance_window_are_accepted(
    broker: Broker, app: App, offset: int
) -> None:
    proof = broker.proof(app.key, iat=broker.now + offset)

    assert_token_response(broker.issue(app, proof=proof))


@pytest.mark.parametrize(
    "htu",
    [
        TOKEN_URL + "?x=1",
        TOKEN_URL + "#frag",
        f"HTTPS://{HOST.upper()}:443/{STAGE}/oauth2/token",
        f"https://{HOST}/{STAGE}/oauth2/%74oken",
    ],
    ids=["query", "fragment", "case and default port", "percent-encoded unreserved"],
)
def test_htu_is_compared_after_normalisation_without_query_and_fragment(
    broker: Broker, app: App, htu: str
) -> None:
    assert_token_response(broker.issue(app, proof=broker.proof(app.key, htu=htu)))


# ================================================================ device and scope


def test_a_proof_key_that_is_not_enrolled_is_invalid_grant(broker: Broker, app: App) -> None:
    response = broker.issue(app, key=DeviceKey.generate())

    assert_error(response, 400, "invalid_grant")
    assert broker.token_records() == []


def test_a_proof_key_enrolled_to_another_client_is_invalid_grant(broker: Broker, app: App) -> None:
    other = broker.new_app()

    assert_error(broker.issue(app, key=other.key), 400, "invalid_grant")
    assert broker.token_records() == []


def test_a_revoked_device_is_invalid_grant(broker: Broker, app: App) -> None:
    assert_token_response(broker.issue(app))
    bootstrap.default().admin.revoke_device(app.key.jkt)

    assert_error(broker.issue(app), 400, "invalid_grant")
    assert len(broker.token_records()) == 1


@pytest.mark.parametrize(
    "scope",
    [
        "profile admin",
        "admin",
        "model:gamma:invoke",
        "profile  model:alpha:invoke",
        "pro\u00effile",
    ],
)
def test_a_scope_beyond_the_clients_scopes_or_malformed_is_invalid_scope(
    broker: Broker, app: App, scope: str
) -> None:
    assert_error(broker.issue(app, scope=scope), 400, "invalid_scope")
    assert broker.token_records() == []


@pytest.mark.parametrize("scope", ["profile", "model:beta:invoke profile"])
def test_a_subset_of_the_clients_scopes_is_granted_as_requested(
    broker: Broker, app: App, scope: str
) -> None:
    body = assert_token_response(broker.issue(app, scope=scope), scope=scope)

    assert verify_with_pyjwt(broker, body["access_token"])["scope"] == scope


@pytest.mark.parametrize("form", [{}, {"scope": ""}], ids=["no scope", "empty scope"])
def test_without_a_scope_every_scope_of_the_client_is_granted(
    broker: Broker, app: App, form: dict[str, str]
) -> None:
    body = assert_token_response(broker.issue(app, **form), scope=ALL_SCOPES)

    assert verify_with_pyjwt(broker, body["access_token"])["scope"] == ALL_SCOPES


# ================================================================ replay (RFC 9449 §11.1)


@pytest.mark.parametrize("second_auth", ["post", "basic"])
def test_a_proof_used_twice_is_rejected_the_second_time_and_recorded_once(
    broker: Broker, app: App, second_auth: str
) -> None:
    proof = broker.proof(app.key)
    assert_token_response(broker.issue(app, proof=proof))

    replay = broker.issue(app, proof=proof, auth=second_auth)

    assert_error(replay, 400, "invalid_dpop_proof")
    assert len(broker.token_records()) == 1
    assert len(broker.ledger_records()) == 1  # the replay wrote no ledger record either


def test_a_replayed_proof_with_a_malleated_ecdsa_signature_is_still_a_replay(
    broker: Broker, app: App
) -> None:
    proof = broker.proof(app.key)
    assert_token_response(broker.issue(app, proof=proof))
    twin = malleate_ecdsa(proof)
    assert twin != proof

    assert_error(broker.issue(app, proof=twin), 400, "invalid_dpop_proof")
    assert len(broker.token_records()) == 1


def test_a_proof_from_a_rejected_request_is_not_spent(broker: Broker, app: App) -> None:
    proof = broker.proof(app.key)
    assert_error(broker.issue(app, proof=proof, secret="wrong"), 401, "invalid_client")
    assert_error(broker.issue(app, proof=proof, scope="admin"), 400, "invalid_scope")

    assert_token_response(broker.issue(app, proof=proof))
    assert len(broker.token_records()) == 1
    assert len(broker.ledger_records()) == 1


# ================================================================ log hygiene


def test_no_response_or_log_line_contains_a_secret_a_proof_or_a_token(
    broker: Broker, app: App, capsys: pytest.CaptureFixture[str]
) -> None:
    proofs: list[str] = []
    tokens: list[str] = []
    bodies: list[str] = []

    def call(**kw: Any) -> dict[str, Any]:
        proof = kw.pop("proof", None) or broker.proof(app.key)
        proofs.append(proof)
        response = broker.issue(app, proof=proof, **kw)
        bodies.append(response["body"])
        if response["statusCode"] == 200:
            tokens.append(json_body(response)["access_token"])
        return response

    with captured_output(capsys) as output:
        call(auth="basic")
        call(auth="post")
        replayed = proofs[0]
        call(proof=replayed)
        call(secret=app.secret + "x")
        call(auth="basic", secret=app.secret[:-2])
        call(scope="admin")
        call(proof=broker.proof(DeviceKey.generate()))
        call(proof=broker.proof(app.key, htm="GET"))
        call(proof=proofs[0].rsplit(".", 1)[0] + ".AAAA")
        logged = output.text()

    assert len(tokens) == 2
    # the Powertools JSON lines themselves were captured, not only the log records
    assert '"message":"token issued"' in logged
    assert '"message":"token request rejected"' in logged
    secrets = {
        "client secret": app.secret,
        "Basic credentials": basic_authorization(app.client_id, app.secret)[6:],
        **{f"proof {i}": p for i, p in enumerate(proofs)},
        **{f"proof signature {i}": p.rsplit(".", 1)[1] for i, p in enumerate(proofs)},
        **{f"token {i}": t for i, t in enumerate(tokens)},
        **{f"token signature {i}": t.rsplit(".", 1)[1] for i, t in enumerate(tokens)},
    }
    for name, secret in secrets.items():
        assert secret not in logged, f"{name} was logged"
        for body in bodies:
            if name.startswith("token"):
                continue  # a 200 body carries its own token, by design
            assert secret not in body, f"{name} is in a response body"
    for token in tokens:
        assert sum(token in body for body in bodies) == 1


# ================================================================ no input is a 5xx


def _mutated(mutate: Callable[[dict[str, Any]], None]) -> Callable[[Broker, App], Any]:
    def make(broker: Broker, app: App) -> Any:
        event = broker.request(app)
        mutate(event)
        return event

    return make


def _set(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda event: event.update(values)


def _headers(values: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def mutate(event: dict[str, Any]) -> None:
        event["headers"] = {**(event["headers"] or {}), **values}
        event["multiValueHeaders"] = {
            **(event["multiValueHeaders"] or {}),
            **{k: [v] for k, v in values.items()},
        }

    return mutate


def _context(value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda event: event.update(requestContext=value)


def _without_proof(event: dict[str, Any]) -> None:
    for headers in (event["headers"], event["multiValueHeaders"]):
        headers.pop("DPoP", None)


def _many_headers(event: dict[str, Any]) -> None:
    _without_proof(event)
    _headers({f"X-Pad-{i}": "v" * 100 for i in range(1000)})(event)


def _huge_header(event: dict[str, Any]) -> None:
    _without_proof(event)
    _headers({"X-Big": "a" * 100_000})(event)


def _nowhere(event: dict[str, Any]) -> None:
    event.update(path=None, resource=None)
    event["requestContext"].update(path=None, resourcePath=None)


GARBAGE: list[tuple[str, Callable[[Broker, App], Any]]] = [
    ("headers null, body null", _mutated(_set(headers=None, multiValueHeaders=None, body=None))),
    ("headers empty, body empty", _mutated(_set(headers={}, multiValueHeaders={}, body=""))),
    ("body null", _mutated(_set(body=None))),
    ("body an integer", _mutated(_set(body=12345))),
    ("body an object", _mutated(_set(body={"grant_type": "client_credentials"}))),
    ("body a list", _mutated(_set(body=["grant_type=client_credentials"]))),
    ("body true", _mutated(_set(body=True))),
    ("body NULs", _mutated(_set(body="\x00" * 64))),
    ("body of 10000 ampersands", _mutated(_set(body="&" * 10_000))),
    ("base64 flag on garbage", _mutated(_set(isBase64Encoded=True, body="%%%"))),
    ("base64 flag a string", _mutated(_set(isBase64Encoded="yes"))),
    ("huge unrelated header, no proof", _mutated(_huge_header)),
    ("a thousand headers, no proof", _mutated(_many_headers)),
    ("huge DPoP header", _mutated(_headers({"DPoP": "a" * 100_000}))),
    ("huge Authorization", _mutated(_headers({"Authorization": "Basic " + "A" * 100_000}))),
    ("Authorization Basic without space", _mutated(_headers({"Authorization": "Basic"}))),
    ("Authorization Bearer", _mutated(_headers({"Authorization": "Bearer abc"}))),
    ("Authorization DPoP", _mutated(_headers({"Authorization": "DPoP abc"}))),
    (
        "header values not strings",
        _mutated(
            _set(
                headers={"Content-Type": 5, "DPoP": None},
                multiValueHeaders={"Content-Type": [5], "DPoP": [None]},
            )
        ),
    ),
    (
        "multi-value headers not lists",
        _mutated(_set(multiValueHeaders={"Content-Type": "x", "DPoP": {"a": 1}})),
    ),
    ("headers a list", _mutated(_set(headers=["DPoP"], multiValueHeaders=["DPoP"]))),
    ("a hundred DPoP headers", lambda b, a: token_event(credentials(a), dpop=["x"] * 100)),
    ("method GET", _mutated(_set(httpMethod="GET"))),
    ("method DELETE", _mutated(_set(httpMethod="DELETE"))),
    ("method post", _mutated(_set(httpMethod="post"))),
    ("method empty", _mutated(_set(httpMethod=""))),
    ("method null", _mutated(_set(httpMethod=None))),
    ("method a number", _mutated(_set(httpMethod=7))),
    ("method with CRLF", _mutated(_set(httpMethod="POST\r\nX-Injected: 1"))),
    ("requestContext null", _mutated(_context(None))),
    ("requestContext a string", _mutated(_context("prod"))),
    ("requestContext empty", _mutated(_context({}))),
    ("paths null", _mutated(_nowhere)),
    ("scope of control characters", lambda b, a: b.request(a, scope="\x00\x01\x7f")),
    ("scope of 100 tokens", lambda b, a: b.request(a, scope=" ".join(f"s{i}" for i in range(100)))),
    ("empty client_id", lambda b, a: b.request(a, client_id="")),
    ("client_id with NUL", lambda b, a: b.request(a, client_id="tbc_\x00")),
    ("unicode client_id", lambda b, a: b.request(a, client_id="tbc_\u00e9\U0001f600")),
    ("empty secret", lambda b, a: b.request(a, secret="")),
    ("huge secret", lambda b, a: b.request(a, secret="s" * 7000)),
]


def test_no_garbage_event_produces_a_server_error(broker: Broker, app: App) -> None:
    assert len(GARBAGE) >= 30
    failures: list[str] = []
    for name, make in GARBAGE:
        try:
            response = broker.invoke_token(make(broker, app))
        except Exception as exc:  # noqa: BLE001 (report every case, not just the first)
            failures.append(f"{name}: raised {exc!r}")
            continue
        try:
            assert response["statusCode"] in (400, 401)
            assert header(response, "Cache-Control") == "no-store"
            body = json_body(response)
            assert isinstance(body.get("error"), str)
            assert "access_token" not in body
        except (AssertionError, ValueError, KeyError, TypeError):
            failures.append(f"{name}: {response!r}"[:300])
    assert not failures, "\n".join(failures)
    assert broker.token_records() == []


def test_an_event_without_http_method_is_rejected_not_raised(broker: Broker, app: App) -> None:
    event = broker.request(app)
    del event["httpMethod"]

    assert broker.invoke_token(event)["statusCode"] == 400
