"""A whole signing key rotation on moto, with tokens of both keys in flight.

The real template is provisioned into moto (both key slots are ECC_NIST_P256 keys, the
key set is an SSM parameter, the ledger is the usage table). Three composition roots,
each with its own caches and clients, stand in for the token, discovery and authorizer
functions; a fourth is the admin CLI's. One fixed clock moves them all: no sleeping.

Tokens are signed by the token function's signer exactly as the issuance does
(``signing_input`` + ``assemble``) and checked by the authorizer's key resolver through
``verify_access_token`` (what the authorization service calls).
"""

from __future__ import annotations

import base64
import itertools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from moto import mock_aws

from tokenbroker import bootstrap
from tokenbroker.adapters import aws
from tokenbroker.adapters.kms import KmsSigner
from tokenbroker.adapters.ledger_items import from_item
from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.errors import ConfigurationError, InvalidToken, TemporarilyUnavailable
from tokenbroker.domain.keyset import KEYSET_MAX_AGE, RotationInProgress, SigningKeyRetired
from tokenbroker.domain.models import EventType
from tokenbroker.domain.rfc9068 import (
    MAX_LIFETIME,
    AccessTokenClaims,
    assemble,
    signing_input,
    verify_access_token,
)
from tokenbroker.local.provision import Deployment, provision
from tokenbroker.local.template import load_template
from tokenbroker.settings import Settings

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
REGION = "us-east-1"
NOW = 1_800_000_000
ISSUER = "https://broker.example/prod"
AUDIENCE = "urn:tokenbroker:api"
PROPAGATION = 600
ADMIN = "arn:aws:iam::123456789012:user/admin"
JKT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
_stacks = itertools.count()


@pytest.fixture(scope="module")
def session() -> Iterator[boto3.Session]:
    with mock_aws():
        yield boto3.Session(region_name=REGION)


class Stack:
    def __init__(self, session: boto3.Session) -> None:
        self.session = session
        self.deployment: Deployment = provision(
            load_template(TEMPLATE),
            session_or_clients=session,
            stack_name=f"tb-rotation-{next(_stacks)}",
            region=REGION,
        )
        self.clock = FixedClock(NOW)
        self.token = self.container("TokenFunction")
        self.discovery = self.container("DiscoveryFunction")
        self.authorizer = self.container("AuthorizerFunction")

    def container(self, function: str) -> bootstrap.Container:
        env = {**self.deployment.environment(function), "ISSUER": ISSUER}
        return bootstrap.build(
            Settings.from_mapping(env),
            aws=lambda service: aws.client(service, session=self.session),
            clock=self.clock,
            actor=ADMIN,
        )

    def admin(self) -> bootstrap.Container:
        """A fresh admin CLI (its own caches and clients)."""
        return self.container("TokenFunction")

    @property
    def slots(self) -> tuple[str, str]:
        refs = self.deployment.refs
        return str(refs["SigningKey"]), str(refs["SigningKeyB"])

    def issue(self, lifetime: int = 300) -> str:
        now = int(self.clock())
        claims = AccessTokenClaims(
            iss=ISSUER,
            sub="tbc_walk",
            aud=AUDIENCE,
            exp=now + lifetime,
            iat=now,
            jti=uuid.uuid4().hex,
            client_id="tbc_walk",
            scope=("profile",),
            jkt=JKT,
        )
        signer = self.token.signer
        payload = signing_input(claims, signer.public_jwk().kid)
        return assemble(payload, signer.sign(payload))

    def check(self, token: str) -> AccessTokenClaims:
        return verify_access_token(
            token,
            resolve_key=self.authorizer.key_cache.resolve,
            issuer=ISSUER,
            audience=AUDIENCE,
            now=self.clock(),
            skew=5,
        )

    def jwks_kids(self) -> set[str]:
        return {str(k["kid"]) for k in self.discovery.discovery.jwks()["keys"]}  # type: ignore[attr-defined]

    def key_events(self) -> list[tuple[EventType, str]]:
        ddb = self.session.client("dynamodb")
        table = str(self.deployment.refs["UsageTable"])
        items = ddb.scan(TableName=table)["Items"]
        records = [from_item(item) for item in items]
        return sorted(
            ((r.event, r.resource) for r in records if r.event.value.startswith("key_")),
            key=lambda e: e[0].value,
        )

    def key_set_document(self) -> str | None:
        ssm = self.session.client("ssm")
        name = self.token.settings.key_set_parameter
        try:
            return str(ssm.get_parameter(Name=name)["Parameter"]["Value"])
        except ssm.exceptions.ParameterNotFound:
            return None


@pytest.fixture
def stack(session: boto3.Session) -> Stack:
    return Stack(session)


def kid_of(token: str) -> str:
    head = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"])


def test_a_whole_rotation_refuses_nothing_and_the_jwks_never_lacks_a_live_tokens_key(
    stack: Stack,
) -> None:
    kid_a = stack.token.signer.public_jwk().kid
    first = stack.issue(lifetime=MAX_LIFETIME)
    assert stack.jwks_kids() == {kid_a}

    report = stack.admin().key_rotation.rotate(propagation=PROPAGATION)
    states = {row.state for row in report.keys}
    assert states == {"current", "next"}
    kid_b = next(row.kid for row in report.keys if row.state == "next")
    assert kid_b != kid_a

    live: list[tuple[int, str]] = [(NOW + MAX_LIFETIME, first)]
    kids_seen: list[str] = []
    end = NOW + PROPAGATION + MAX_LIFETIME + 5 + KEYSET_MAX_AGE + 120
    while stack.clock() < end:
        stack.clock.advance(30)
        now = int(stack.clock())
        token = stack.issue(lifetime=MAX_LIFETIME)
        kids_seen.append(kid_of(token))
        live = [(exp, t) for exp, t in live if exp > now] + [(now + MAX_LIFETIME, token)]
        published = stack.jwks_kids()
        for _, t in live:
            stack.check(t)  # nothing refused during the rotation
            assert kid_of(t) in published, (now - NOW, kid_of(t))

    # the new key signed only after the propagation interval (plus one cache age at most)
    switch = kids_seen.index(kid_b) * 30 + 30
    assert PROPAGATION <= switch <= PROPAGATION + KEYSET_MAX_AGE
    assert set(kids_seen[kids_seen.index(kid_b) :]) == {kid_b}
    assert stack.jwks_kids() == {kid_b}

    # the retired key is refused with its own reason, even for a token that has not expired
    token = _signed_by(stack, stack.slots[0])[1]
    with pytest.raises(SigningKeyRetired) as refused:
        stack.check(token)
    assert refused.value.reason == "signing_key_retired"

    status = stack.admin().key_rotation.status()  # settles the finished rotation
    assert status.changed
    assert {(r.kid, r.state) for r in status.keys} == {(kid_a, "retired"), (kid_b, "current")}
    assert [e for e, _ in stack.key_events()] == [
        EventType.KEY_RETIRED,
        EventType.KEY_ROTATION_STARTED,
    ]
    assert stack.admin().key_rotation.status().changed is False  # idempotent


def _signed_by(stack: Stack, key_id: str) -> tuple[bytes, str]:
    """A fresh, otherwise valid token signed directly with ``key_id`` (as if its
    retirement had not happened)."""
    now = int(stack.clock())
    claims = AccessTokenClaims(
        iss=ISSUER,
        sub="tbc_walk",
        aud=AUDIENCE,
        exp=now + 300,
        iat=now,
        jti=uuid.uuid4().hex,
        client_id="tbc_walk",
        scope=("profile",),
        jkt=JKT,
    )
    signer = KmsSigner(stack.session.client("kms"), key_id)
    payload = signing_input(claims, signer.public_jwk().kid)
    return payload, assemble(payload, signer.sign(payload))


def test_a_next_keys_token_is_accepted_it_is_published(stack: Stack) -> None:
    stack.admin().key_rotation.rotate(propagation=PROPAGATION)
    _, token = _signed_by(stack, stack.slots[1])
    assert stack.check(token).sub == "tbc_walk"


def test_a_second_rotate_mid_rotation_is_refused_and_changes_nothing(stack: Stack) -> None:
    stack.admin().key_rotation.rotate(propagation=PROPAGATION)
    before = stack.key_set_document()
    for advance in (0, PROPAGATION, MAX_LIFETIME):
        stack.clock.advance(advance)
        with pytest.raises(RotationInProgress, match="already in progress"):
            stack.admin().key_rotation.rotate(propagation=PROPAGATION)
    assert stack.key_set_document() == before
    assert [e for e, _ in stack.key_events()] == [EventType.KEY_ROTATION_STARTED]


def _fail(client: Any, operation: str, code: str) -> None:
    def reply(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        response = AWSResponse("https://kms", 400, {}, None)
        return response, {"Error": {"Code": code, "Message": "injected"}}

    service = client.meta.service_model.service_id.hyphenize()
    client.meta.events.register_first(f"before-call.{service}.{operation}", reply)


@pytest.mark.parametrize("code", ["KMSInvalidStateException", "ThrottlingException"])
def test_kms_unavailable_during_rotation_is_a_clear_error_and_changes_nothing(
    stack: Stack, code: str
) -> None:
    admin = stack.admin()
    _fail(admin.client("kms"), "GetPublicKey", code)
    with pytest.raises(TemporarilyUnavailable, match="kms:GetPublicKey failed"):
        admin.key_rotation.rotate(propagation=PROPAGATION)
    assert stack.key_set_document() is None
    assert stack.key_events() == []
    # the deployment keeps signing and verifying with slot A
    assert stack.check(stack.issue()).sub == "tbc_walk"


def test_an_unreadable_key_set_fails_closed_at_the_edge_and_the_token_endpoint(
    stack: Stack,
) -> None:
    _fail(stack.authorizer.client("ssm"), "GetParameter", "ThrottlingException")
    _fail(stack.token.client("ssm"), "GetParameter", "InternalServerError")
    with pytest.raises(TemporarilyUnavailable):
        stack.token.signer.public_jwk()
    token = _signed_by(stack, stack.slots[0])[1]
    with pytest.raises(TemporarilyUnavailable):
        stack.check(token)


def test_a_corrupt_key_set_fails_closed(stack: Stack) -> None:
    stack.session.client("ssm").put_parameter(
        Name=stack.token.settings.key_set_parameter, Value="{not json", Type="String"
    )
    token = _signed_by(stack, stack.slots[0])[1]
    with pytest.raises(TemporarilyUnavailable, match="not JSON"):
        stack.check(token)


def test_a_stranger_kid_is_refused_as_an_unknown_key(stack: Stack) -> None:
    kms = stack.session.client("kms")
    other = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    token = _signed_by(stack, other)[1]
    with pytest.raises(InvalidToken) as refused:
        stack.check(token)
    assert not isinstance(refused.value, SigningKeyRetired)


def test_the_signer_signs_with_the_key_its_header_names_and_never_with_a_next_key(
    stack: Stack,
) -> None:
    signer = stack.token.signer
    kid_a = signer.public_jwk().kid
    stack.admin().key_rotation.rotate(propagation=PROPAGATION)
    stack.clock.advance(KEYSET_MAX_AGE)  # the token function has read the rotation
    kid_b = stack.authorizer.keyset_view.key(stack.slots[1])[0].kid
    claims = AccessTokenClaims(
        iss=ISSUER,
        sub="tbc_walk",
        aud=AUDIENCE,
        exp=int(stack.clock()) + MAX_LIFETIME,
        iat=int(stack.clock()),
        jti=uuid.uuid4().hex,
        client_id="tbc_walk",
        scope=("profile",),
        jkt=JKT,
    )
    assert signer.public_jwk().kid == kid_a  # next: published, not signing yet
    with pytest.raises(TemporarilyUnavailable, match="may not sign now"):
        signer.sign(signing_input(claims, kid_b))
    # the kid was chosen just before the promotion: the signature still matches it
    payload = signing_input(claims, kid_a)
    stack.clock.advance(PROPAGATION - KEYSET_MAX_AGE + 1)
    assert signer.public_jwk().kid == kid_b
    assert stack.check(assemble(payload, signer.sign(payload))).jti == claims.jti


def test_the_key_set_write_failing_is_a_clear_error_and_changes_no_state(stack: Stack) -> None:
    admin = stack.admin()
    _fail(admin.client("ssm"), "PutParameter", "ThrottlingException")
    with pytest.raises(TemporarilyUnavailable, match="ssm:PutParameter failed"):
        admin.key_rotation.rotate(propagation=PROPAGATION)
    assert stack.key_set_document() is None
    # the ledger shows the attempt (written first: never a change without its record)
    assert [e for e, _ in stack.key_events()] == [EventType.KEY_ROTATION_STARTED]
    assert stack.check(stack.issue()).sub == "tbc_walk"


def test_a_signing_key_id_outside_the_slots_is_a_configuration_error(stack: Stack) -> None:
    env = {**stack.deployment.environment("AuthorizerFunction"), "SIGNING_KEY_ID": "arn:other"}
    container = bootstrap.build(Settings.from_mapping(env), clock=stack.clock)
    with pytest.raises(ConfigurationError, match="SIGNING_KEY_ID must be one of"):
        container.key_cache.resolve("kid")
