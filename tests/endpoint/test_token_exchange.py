"""RFC 8693 token exchange and self-service enrollment through the real Lambda handlers
on moto, with an external OIDC issuer played by an RSA key of our own (its discovery
document and JWKS served by a fake fetch that counts requests). Every refusal asserts its
specific OAuth error and description; an unreachable issuer fails closed (503)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from support.dpop import DeviceKey
from tokenbroker import bootstrap
from tokenbroker.adapters.idps import IssuerKeys, http_get
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.domain.models import Status
from tokenbroker.domain.rfc8693 import TrustedIssuer
from tokenbroker.settings import Settings

from ._support import (
    TOKEN_URL,
    App,
    Broker,
    LambdaContext,
    RoundTrips,
    assert_error,
    captured_output,
    json_body,
    lambda_client,
    load_function,
    rest_event,
    token_event,
)

ROOT = Path(__file__).resolve().parents[2]
ENROLL_APP = ROOT / "functions" / "device_enrollment" / "app.py"
ENROLL_URL = TOKEN_URL.replace("/oauth2/token", "/oauth2/devices")
IDP = "https://idp.example.com/tenant"
DISCOVERY = IDP + "/.well-known/openid-configuration"
JWKS_URI = "https://idp.example.com/tenant/keys"
AUDIENCE = "people-app"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
_enroll_module: list[Any] = []


class FakeIdp:
    """An OIDC issuer: an RSA signing key, its discovery document and JWKS."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.fetches: list[str] = []
        self.down = False

    def fetch(self, url: str) -> bytes:
        self.fetches.append(url)
        if self.down:
            raise TemporarilyUnavailable("issuer keys unreachable (URLError)")
        if url == DISCOVERY:
            return json.dumps({"issuer": IDP, "jwks_uri": JWKS_URI}).encode()
        if url == JWKS_URI:
            public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
            return json.dumps({"keys": [{**public, "kid": "k1", "alg": "RS256"}]}).encode()
        raise TemporarilyUnavailable("404")

    def id_token(
        self, sub: str = "alice", *, key: Any = None, kid: str = "k1", **claims: Any
    ) -> str:
        now = int(self.clock())
        body = {"iss": IDP, "sub": sub, "aud": AUDIENCE, "iat": now, "exp": now + 600}
        body.update(claims)
        return jwt.encode(body, key or self.key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def idp(broker: Broker) -> FakeIdp:
    fake = FakeIdp(broker.clock)
    settings = Settings.from_mapping(os.environ)
    broker._container = bootstrap.build(
        settings,
        aws=lambda_client,
        clock=broker.clock,
        issuer_keys=IssuerKeys(clock=broker.clock, fetch=fake.fetch),
    )
    broker.container.idps.add(
        TrustedIssuer(
            issuer=IDP,
            audiences=(AUDIENCE,),
            scopes=frozenset({"model:alpha:invoke", "profile"}),
            required_claims={"groups": "ml"},
        )
    )
    return fake


def person(sub: str = "alice") -> str:
    return f"{IDP}|{sub}"


def enroll_event(app: App, key: DeviceKey, subject: str, broker: Broker, **form: str) -> Any:
    body = {"subject_token": subject, "subject_token_type": ID_TOKEN, **form}
    event = token_event(
        body, dpop=broker.proof(key, htu=ENROLL_URL), basic=(app.client_id, app.secret)
    )
    shaped = rest_event("POST", "/oauth2/devices", headers=event["multiValueHeaders"])
    return {**shaped, "body": event["body"]}


def enroll(broker: Broker, app: App, key: DeviceKey, subject: str, **form: str) -> dict[str, Any]:
    if not _enroll_module:
        _enroll_module.append(load_function(ENROLL_APP))
    response = _enroll_module[0].handler(
        enroll_event(app, key, subject, broker, **form), LambdaContext()
    )
    assert isinstance(response, dict)
    return response


def exchange(
    broker: Broker, app: App, subject: str | None, key: DeviceKey | None = None, **form: str
) -> dict[str, Any]:
    body = {"grant_type": EXCHANGE, "subject_token_type": ID_TOKEN, **form}
    if subject is not None:
        body["subject_token"] = subject
    event = token_event(body, dpop=broker.proof(key or app.key), basic=(app.client_id, app.secret))
    return broker.invoke_token(event)


def enrolled(broker: Broker, idp: FakeIdp, app: App, sub: str = "alice") -> DeviceKey:
    key = DeviceKey.generate()
    response = enroll(broker, app, key, idp.id_token(sub, groups=["ml"]), label="laptop")
    assert response["statusCode"] == 201, response
    return key


# ---- the exchange ---------------------------------------------------------------------


def test_an_id_token_is_exchanged_for_a_token_naming_the_person_with_the_app_acting(
    broker: Broker, idp: FakeIdp, app: App
) -> None:
    key = enrolled(broker, idp, app)
    response = exchange(broker, app, idp.id_token(groups=["ml"]), key)
    assert response["statusCode"] == 200, response
    body = json_body(response)
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert body["token_type"] == "DPoP"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == person()
    assert claims["client_id"] == app.client_id
    assert claims["act"] == {"sub": app.client_id}
    assert claims["cnf"] == {"jkt": key.jkt}
    # the app may have three scopes, the issuer allows two: the person gets the overlap
    assert body["scope"] == "model:alpha:invoke profile"
    [issued] = broker.ledger_records("token_issued")
    assert (issued["principal"], issued["client_id"]) == (person(), app.client_id)
    [enrollment] = broker.ledger_records("device_enrolled")[-1:]
    assert (enrollment["principal"], enrollment["jkt"]) == (person(), key.jkt)


def test_warm_exchange_costs_three_aws_round_trips_and_no_issuer_fetch(
    broker: Broker, idp: FakeIdp, app: App
) -> None:
    key = enrolled(broker, idp, app)
    assert exchange(broker, app, idp.id_token(groups=["ml"]), key)["statusCode"] == 200
    fetched = len(idp.fetches)
    trips = RoundTrips().attach(broker.container.client("dynamodb"), broker.container.client("kms"))
    broker.clock.advance(1)
    assert exchange(broker, app, idp.id_token(groups=["ml"]), key)["statusCode"] == 200
    assert trips.take() == [
        "dynamodb:TransactGetItems",
        "kms:Sign",
        "dynamodb:TransactWriteItems",
    ]
    assert len(idp.fetches) == fetched  # discovery and JWKS were fetched once (cold)
    assert fetched == 2


@pytest.mark.parametrize(
    ("claims", "description"),
    [
        ({"aud": "another-app"}, "audience is not accepted"),
        ({"exp": -10}, "has expired"),
        ({"iat": +120}, "not valid yet"),
        ({"nbf": +120}, "not valid yet"),
        ({"groups": ["sales"]}, "lacks the required claim groups=ml"),
        ({"token_use": "access"}, "is not an ID token"),
        ({"sub": "a|b"}, "does not name a person"),
    ],
)
def test_a_subject_token_failing_a_claim_check_is_refused(
    broker: Broker, idp: FakeIdp, app: App, claims: dict[str, Any], description: str
) -> None:
    key = enrolled(broker, idp, app)
    now = broker.now
    fixed = {
        name: (now + value if name in ("exp", "iat", "nbf") else value)
        for name, value in claims.items()
    }
    if "exp" in claims:
        fixed["iat"] = now - 600
    token = idp.id_token(**{"groups": ["ml"], **fixed})
    body = assert_error(exchange(broker, app, token, key), 400, "invalid_request")
    assert description in body["error_description"]
    assert broker.ledger_records("token_issued") == []


def test_unknown_issuer_wrong_alg_and_foreign_keys_are_refused(
    broker: Broker, idp: FakeIdp, app: App
) -> None:
    key = enrolled(broker, idp, app)
    now = broker.now
    claims = {"iss": IDP, "sub": "alice", "aud": AUDIENCE, "iat": now, "exp": now + 60}
    cases = {
        "subject token issuer is not trusted": jwt.encode(
            {**claims, "iss": "https://evil.example"}, idp.key, "RS256", headers={"kid": "k1"}
        ),
        "alg must be RS256 or ES256": jwt.encode(claims, "s" * 32, "HS256", headers={"kid": "k1"}),
        "key the issuer does not publish": idp.id_token(groups=["ml"], kid="other"),
        "signature is invalid": idp.id_token(
            key=rsa.generate_private_key(public_exponent=65537, key_size=2048), groups=["ml"]
        ),
    }
    unsigned = jwt.encode(claims, None, "none", headers={"kid": "k1"})
    cases["alg must be RS256 or ES256 "] = unsigned
    for description, token in cases.items():
        body = assert_error(exchange(broker, app, token, key), 400, "invalid_request")
        assert description.strip() in body["error_description"], (description, body)
    assert broker.ledger_records("token_issued") == []


def test_an_es256_key_cannot_stand_in_for_the_issuers_rsa_key(
    broker: Broker, idp: FakeIdp, app: App
) -> None:
    key = enrolled(broker, idp, app)
    now = broker.now
    claims = {"iss": IDP, "sub": "alice", "aud": AUDIENCE, "iat": now, "exp": now + 60}
    token = jwt.encode(
        {**claims, "groups": ["ml"]},
        ec.generate_private_key(ec.SECP256R1()),
        "ES256",
        headers={"kid": "k1"},
    )
    body = assert_error(exchange(broker, app, token, key), 400, "invalid_request")
    assert "signature is invalid" in body["error_description"]


def test_missing_subject_token_or_type_is_invalid_request(
    broker: Broker, idp: FakeIdp, app: App
) -> None:
    body = assert_error(exchange(broker, app, None), 400, "invalid_request")
    assert "subject_token is required" in body["error_description"]
    body = assert_error(
        exchange(broker, app, idp.id_token(groups=["ml"]), subject_token_type="urn:x"),
        400,
        "invalid_request",
    )
    assert "subject_token_type" in body["error_description"]


def test_an_unreachable_issuer_fails_closed_with_503(
    broker: Broker, idp: FakeIdp, app: App
) -> None:
    key = enrolled(broker, idp, app)
    idp.down = True
    broker._container = None  # a cold function: no keys cached
    broker._container = bootstrap.build(
        Settings.from_mapping(os.environ),
        aws=lambda_client,
        clock=broker.clock,
        issuer_keys=IssuerKeys(clock=broker.clock, fetch=idp.fetch),
    )
    response = exchange(broker, app, idp.id_token(groups=["ml"]), key)
    assert_error(response, 503, "temporarily_unavailable")
    assert broker.ledger_records("token_issued") == []


def test_the_real_fetch_of_an_unreachable_issuer_is_temporarily_unavailable() -> None:
    with pytest.raises(TemporarilyUnavailable, match="unreachable"):
        http_get("http://127.0.0.1:9/.well-known/openid-configuration", timeout=1)
    with pytest.raises(TemporarilyUnavailable, match="https"):
        http_get("http://idp.example.com/.well-known/openid-configuration")


def test_a_device_must_be_the_persons_own(broker: Broker, idp: FakeIdp, app: App) -> None:
    alices = enrolled(broker, idp, app, "alice")
    body = assert_error(
        exchange(broker, app, idp.id_token("bob", groups=["ml"]), alices), 400, "invalid_grant"
    )
    assert "enrolled to someone else" in body["error_description"]
    # the app's admin-enrolled device is not a device of any person
    body = assert_error(exchange(broker, app, idp.id_token(groups=["ml"])), 400, "invalid_grant")
    assert "enrolled to someone else" in body["error_description"]
    body = assert_error(
        exchange(broker, app, idp.id_token(groups=["ml"]), DeviceKey.generate()),
        400,
        "invalid_grant",
    )
    assert "not a device enrolled" in body["error_description"]


def test_a_revoked_device_or_a_disabled_person_gets_no_token(
    broker: Broker, idp: FakeIdp, app: App
) -> None:
    key = enrolled(broker, idp, app)
    broker.container.people.set_person_status(person(), Status.DISABLED, broker.now)
    body = assert_error(
        exchange(broker, app, idp.id_token(groups=["ml"]), key), 400, "invalid_grant"
    )
    assert "disabled" in body["error_description"]
    broker.container.people.set_person_status(person(), Status.ACTIVE, broker.now)
    bootstrap.default().admin.revoke_device(key.jkt)
    body = assert_error(
        exchange(broker, app, idp.id_token(groups=["ml"]), key), 400, "invalid_grant"
    )
    assert "revoked" in body["error_description"]


def test_no_subject_token_reaches_a_log_line_or_record(
    broker: Broker, idp: FakeIdp, app: App, capsys: pytest.CaptureFixture[str]
) -> None:
    key = enrolled(broker, idp, app)
    good, expired = idp.id_token(groups=["ml"]), idp.id_token(groups=["ml"], exp=1, iat=0)
    with captured_output(capsys) as output:
        assert exchange(broker, app, good, key)["statusCode"] == 200
        broker.clock.advance(1)
        assert exchange(broker, app, expired, key)["statusCode"] == 400
    text = output.text()
    records = json.dumps(broker.ledger_records(None), default=str) + json.dumps(
        broker.token_records(), default=str
    )
    for token in (good, expired):
        signature = token.rsplit(".", 1)[1]
        assert signature not in text
        assert signature not in records


# ---- self-service enrollment under the cap ----------------------------------------------


def test_the_cap_refuses_the_next_device_naming_the_cap_and_how_to_revoke(
    broker: Broker, idp: FakeIdp, app: App
) -> None:
    cap = broker.container.settings.max_devices_per_person
    keys = [enrolled(broker, idp, app) for _ in range(cap)]
    response = enroll(broker, app, DeviceKey.generate(), idp.id_token(groups=["ml"]))
    body = assert_error(response, 409, "device_limit_reached")
    assert f"{cap} of {cap} active devices" in body["error_description"]
    assert "tokenbroker devices revoke --jkt" in body["error_description"]
    assert len(broker.ledger_records("device_enrolled")) == cap + 1  # + the app fixture's
    bootstrap.default().admin.revoke_device(keys[0].jkt)
    assert (
        enroll(broker, app, DeviceKey.generate(), idp.id_token(groups=["ml"]))["statusCode"] == 201
    )


def test_concurrent_enrollments_cannot_pass_the_cap(broker: Broker, idp: FakeIdp, app: App) -> None:
    cap = broker.container.settings.max_devices_per_person
    ddb = broker.container.client("dynamodb")
    moto_lock = threading.Lock()  # moto is not atomic across threads; DynamoDB is
    original = ddb.transact_write_items

    def serialised(**kw: Any) -> Any:
        with moto_lock:
            return original(**kw)

    ddb.transact_write_items = serialised
    token = idp.id_token(groups=["ml"])
    assert broker.container.exchange is not None  # built before the threads race
    barrier = threading.Barrier(cap + 3)
    results: list[int] = []

    def attempt() -> None:
        key = DeviceKey.generate()
        event = enroll_event(app, key, token, broker)
        barrier.wait()
        results.append(_enroll_module[0].handler(event, LambdaContext())["statusCode"])

    assert enroll(broker, app, DeviceKey.generate(), "x")["statusCode"] == 400  # loads it
    threads = [threading.Thread(target=attempt) for _ in range(cap + 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [201] * cap + [409] * 3
    assert broker.container.people.get_person(person()).active_devices == cap  # type: ignore[union-attr]


def test_enrollment_needs_a_fresh_sign_in(broker: Broker, idp: FakeIdp, app: App) -> None:
    stale = idp.id_token(groups=["ml"], iat=broker.now - 601, exp=broker.now + 3000)
    body = assert_error(enroll(broker, app, DeviceKey.generate(), stale), 400, "invalid_request")
    assert "too old" in body["error_description"]
    fresh = idp.id_token(groups=["ml"], iat=broker.now - 599, exp=broker.now + 3000)
    assert enroll(broker, app, DeviceKey.generate(), fresh)["statusCode"] == 201


def test_enrollment_refuses_a_bad_subject_token_and_an_enrolled_key(
    broker: Broker, idp: FakeIdp, app: App
) -> None:
    body = assert_error(
        enroll(broker, app, DeviceKey.generate(), idp.id_token(groups=["sales"])),
        400,
        "invalid_request",
    )
    assert "required claim" in body["error_description"]
    body = assert_error(
        enroll(broker, app, app.key, idp.id_token(groups=["ml"])), 400, "invalid_grant"
    )
    assert "already enrolled" in body["error_description"]
    wrong = dict(app.__dict__, secret="nope")
    response = enroll(broker, App(**wrong), DeviceKey.generate(), idp.id_token(groups=["ml"]))
    assert_error(response, 401, "invalid_client")
