"""Token issuance (RFC 6749 §4.4 + RFC 9449 §5) with in-memory fakes and a fixed clock."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import jwt
import pytest

from support.dpop import DeviceKey, malleate_ecdsa, raw_jws
from support.fakes import FakeClientDirectory, FakeSigner, FakeTokenLedger
from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.errors import (
    BrokerError,
    InvalidClient,
    InvalidDpopProof,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    ProofReplayed,
    TemporarilyUnavailable,
    UnsupportedGrantType,
)
from tokenbroker.domain.models import Client, Decision, Device, EventType, Status
from tokenbroker.domain.rfc9068 import verify_access_token
from tokenbroker.domain.rfc9449 import ProofPolicy
from tokenbroker.domain.secrets import hash_secret
from tokenbroker.services.issuance import (
    IssuancePolicy,
    IssuanceService,
    IssuedAccessToken,
    TokenRequest,
)

NOW = 1_800_000_000
ISSUER = "https://broker.example"
TOKEN_URL = ISSUER + "/oauth2/token"
API = "https://api.example"
OTHER_API = "https://other-api.example"
SECRET = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t-x"
CLIENT_ID = "tbc_app"
LIFETIME = 300
RETENTION_DAYS = 30
USAGE_RETENTION_DAYS = 400
PROOF_POLICY = ProofPolicy(max_age=60, skew=5)


@dataclass
class World:
    clock: FixedClock
    directory: FakeClientDirectory
    ledger: FakeTokenLedger
    signer: FakeSigner
    service: IssuanceService
    device: DeviceKey

    def request(self, **overrides: Any) -> TokenRequest:
        base = TokenRequest(
            grant_type="client_credentials",
            client_id=CLIENT_ID,
            client_secret=SECRET,
            scope=None,
            resource=None,
            dpop_proof=self.device.proof("POST", TOKEN_URL, iat=int(self.clock())),
            method="POST",
            url=TOKEN_URL,
        )
        return replace(base, **overrides)

    def issue(self, request: TokenRequest | None = None) -> IssuedAccessToken:
        return self.service.issue(request or self.request(), request_issuer="https://ignored")

    def rejects(self, request: TokenRequest, error: type[BrokerError]) -> BrokerError:
        with pytest.raises(error) as caught:
            self.issue(request)
        self.assert_nothing_issued()
        return caught.value

    def assert_nothing_issued(self) -> None:
        assert self.ledger.tokens == {}
        # at most the (rate-bounded) records of refusals, never an issuance
        assert {r.event for r in self.ledger.records.values()} <= {EventType.TOKEN_DENIED}
        assert self.signer.calls["sign"] == 0


def client(client_id: str = CLIENT_ID, **kw: Any) -> Client:
    fields: dict[str, Any] = {
        "client_id": client_id,
        "name": "app",
        "secret_hash": hash_secret(SECRET),
        "scopes": frozenset({"read", "model:a:invoke", "write"}),
        "max_devices": 3,
        "status": Status.ACTIVE,
        "created_at": NOW - 1000,
    }
    fields.update(kw)
    return Client(**fields)


def device_record(key: DeviceKey, client_id: str = CLIENT_ID, **kw: Any) -> Device:
    return Device(
        jkt=key.jkt,
        client_id=client_id,
        label="laptop",
        status=kw.pop("status", Status.ACTIVE),
        enrolled_at=NOW - 500,
        **kw,
    )


def build(clock: FixedClock, *, issuer: str = ISSUER) -> World:
    directory, ledger, signer = FakeClientDirectory(), FakeTokenLedger(), FakeSigner()
    device = DeviceKey.generate()
    directory.add_client(client())
    directory.add_device(device_record(device))
    service = IssuanceService(
        directory=directory,
        ledger=ledger,
        signer=signer,
        clock=clock,
        policy=IssuancePolicy(
            issuer=issuer,
            audiences=(API, OTHER_API),
            lifetime=LIFETIME,
            proof=PROOF_POLICY,
            record_retention_days=RETENTION_DAYS,
            usage_retention_days=USAGE_RETENTION_DAYS,
        ),
    )
    return World(clock, directory, ledger, signer, service, device)


@pytest.fixture
def world(fixed_clock: FixedClock) -> World:
    return build(fixed_clock)


def decode(world: World, access_token: str, audience: str = API) -> dict[str, Any]:
    """pyjwt, with the fake signer's public key (time checks off: the clock is fixed)."""
    return jwt.decode(
        access_token,
        world.signer.public_key,
        algorithms=["ES256"],
        audience=audience,
        issuer=ISSUER,
        options={
            "verify_exp": False,
            "verify_iat": False,
            "verify_nbf": False,
            "require": ["iss", "sub", "aud", "exp", "iat", "jti"],
        },
    )


# ---- the happy path ----------------------------------------------------------------------


def test_a_valid_request_gets_a_dpop_bound_access_token(world: World) -> None:
    issued = world.issue()
    body = issued.response_body()
    assert body["token_type"] == "DPoP"
    assert body["expires_in"] == LIFETIME
    assert body["scope"] == "model:a:invoke read write"

    claims = decode(world, issued.access_token)
    assert claims == {
        "iss": ISSUER,
        "sub": CLIENT_ID,
        "aud": API,
        "iat": NOW,
        "exp": NOW + LIFETIME,
        "jti": issued.jti,
        "client_id": CLIENT_ID,
        "scope": "model:a:invoke read write",
        "cnf": {"jkt": world.device.jkt},
    }
    header = jwt.get_unverified_header(issued.access_token)
    assert header == {"alg": "ES256", "typ": "at+jwt", "kid": world.signer.public_jwk().kid}


def test_the_issued_token_passes_the_brokers_own_verification(world: World) -> None:
    issued = world.issue()
    kid = world.signer.public_jwk().kid
    verified = verify_access_token(
        issued.access_token,
        resolve_key={kid: world.signer.public_key}.get,
        issuer=ISSUER,
        audience=API,
        now=NOW,
        skew=5,
    )
    assert verified.jkt == world.device.jkt
    assert verified.scope == ("model:a:invoke", "read", "write")


def test_an_issuance_costs_one_directory_read_one_sign_and_one_record(world: World) -> None:
    world.issue()
    assert dict(world.directory.calls) == {"get_client_and_device": 1}
    assert world.signer.calls["sign"] == 1
    assert dict(world.ledger.calls) == {"record_issuance": 1}


def test_the_ledger_records_the_token_without_the_token_itself(world: World) -> None:
    issued = world.issue()
    (record,) = world.ledger.tokens.values()
    assert record.jti == issued.jti
    assert record.client_id == CLIENT_ID
    assert record.jkt == world.device.jkt
    assert record.scope == ("model:a:invoke", "read", "write")
    assert record.audience == API
    assert (record.issued_at, record.expires_at) == (NOW, NOW + LIFETIME)
    assert issued.access_token not in repr(record)


def test_the_record_outlives_the_token_and_the_proofs_replay_window(world: World) -> None:
    world.issue()
    (record,) = world.ledger.tokens.values()
    accepted_until = NOW + PROOF_POLICY.max_age + PROOF_POLICY.skew
    assert record.retain_until >= max(record.expires_at, accepted_until)
    assert record.retain_until >= record.expires_at + RETENTION_DAYS * 86_400


def test_an_issuance_writes_exactly_one_ledger_record_with_the_token(world: World) -> None:
    request = world.request(
        source_ip="203.0.113.9", user_agent="billing-app/2.1", request_id="req-123"
    )
    issued = world.issue(request)
    # one ledger call: the token and its record are one transaction in the adapter
    assert dict(world.ledger.calls) == {"record_issuance": 1}
    assert list(world.ledger.tokens) == [issued.jti]
    (record,) = world.ledger.records.values()
    assert record.record_id == "iss:" + issued.jti
    assert (record.event, record.decision, record.reason) == (
        EventType.TOKEN_ISSUED,
        Decision.ALLOW,
        "ok",
    )
    assert (record.principal, record.client_id) == (CLIENT_ID, CLIENT_ID)
    assert (record.jkt, record.token_jti) == (world.device.jkt, issued.jti)
    assert record.at_ms == NOW * 1000
    assert (record.source_ip, record.user_agent, record.request_id) == (
        "203.0.113.9",
        "billing-app/2.1",
        "req-123",
    )
    assert record.retain_until == NOW + USAGE_RETENTION_DAYS * 86_400
    assert record.actor == ""


def test_the_issuance_record_holds_no_token_secret_or_secret_hash(world: World) -> None:
    request = world.request()
    issued = world.issue(request)
    (record,) = world.ledger.records.values()
    text = repr(record)
    for forbidden in (issued.access_token, SECRET, hash_secret(SECRET), request.dpop_proof):
        assert forbidden
        assert forbidden not in text


def test_oversized_request_metadata_is_truncated_in_the_record(world: World) -> None:
    world.issue(world.request(source_ip="9" * 500, user_agent="a" * 5000, request_id="r" * 900))
    (record,) = world.ledger.records.values()
    assert (len(record.source_ip), len(record.user_agent), len(record.request_id)) == (
        64,
        256,
        256,
    )


def test_requests_refused_before_the_lookup_or_for_their_scope_write_no_ledger_record(
    world: World,
) -> None:
    world.rejects(world.request(client_id="not a client id!"), InvalidClient)
    world.rejects(world.request(dpop_proof=None), InvalidDpopProof)
    world.rejects(world.request(scope="admin"), InvalidScope)
    assert world.ledger.records == {}


def _refusal(world: World) -> Any:
    (record,) = world.ledger.records.values()
    return record


@pytest.mark.parametrize(
    ("setup", "overrides", "error", "reason"),
    [
        (None, {"client_id": "tbc_nobody"}, InvalidClient, "unknown_client"),
        (None, {"client_secret": SECRET + "x"}, InvalidClient, "wrong_secret"),
        ("disable", {}, InvalidClient, "client_disabled"),
        ("revoke", {}, InvalidGrant, "device_revoked"),
        ("stranger", {}, InvalidGrant, "device_not_enrolled"),
    ],
)
def test_a_refused_token_request_leaves_a_denial_record_naming_who_which_device_and_why(
    world: World,
    setup: str | None,
    overrides: dict[str, Any],
    error: type[BrokerError],
    reason: str,
) -> None:
    key = world.device
    if setup == "disable":
        world.directory.clients[CLIENT_ID] = client(status=Status.DISABLED)
    elif setup == "revoke":
        world.directory.devices[key.jkt] = device_record(key, status=Status.REVOKED)
    elif setup == "stranger":
        key = DeviceKey.generate()
        overrides = {"dpop_proof": key.proof("POST", TOKEN_URL, iat=NOW)}
    request = replace(
        world.request(**overrides), source_ip="198.51.100.7", user_agent="curl/8", request_id="r1"
    )
    world.rejects(request, error)
    record = _refusal(world)
    assert (record.event, record.decision, record.reason) == (
        EventType.TOKEN_DENIED,
        Decision.DENY,
        reason,
    )
    claimed = overrides.get("client_id", CLIENT_ID)
    assert (record.principal, record.client_id, record.jkt) == (claimed, claimed, key.jkt)
    assert (record.source_ip, record.user_agent, record.request_id) == (
        "198.51.100.7",
        "curl/8",
        "r1",
    )
    assert record.at_ms == NOW * 1000
    assert record.retain_until == NOW + USAGE_RETENTION_DAYS * 86_400
    assert record.token_jti == ""
    assert SECRET not in repr(record)


def test_refusals_are_bounded_to_one_record_per_reason_and_client_a_minute(world: World) -> None:
    for _ in range(5):
        world.rejects(world.request(client_secret=SECRET + "x"), InvalidClient)
    assert len(world.ledger.records) == 1
    assert world.ledger.calls["record_refusal"] == 5  # the same work every time
    world.directory.add_client(client("tbc_other"))
    world.rejects(world.request(client_id="tbc_other", client_secret="nope"), InvalidClient)
    assert len(world.ledger.records) == 2  # another client: its own bucket
    world.clock.advance(60 - NOW % 60)
    world.rejects(world.request(client_secret=SECRET + "x"), InvalidClient)
    assert len(world.ledger.records) == 3  # the next minute


def test_unknown_client_ids_share_one_bucket_so_garbage_cannot_grow_the_ledger(
    world: World,
) -> None:
    for n in range(50):
        world.rejects(world.request(client_id=f"tbc_garbage{n}"), InvalidClient)
    (record,) = world.ledger.records.values()
    assert (record.reason, record.principal) == ("unknown_client", "tbc_garbage0")


def test_a_ledger_outage_does_not_change_the_refusal(world: World) -> None:
    world.ledger.fail_with(TemporarilyUnavailable("dynamodb:PutItem failed (Throttling)"))
    error = world.rejects(world.request(client_secret=SECRET + "x"), InvalidClient)
    assert error.error == "invalid_client"


def test_without_a_configured_issuer_the_request_issuer_is_used(fixed_clock: FixedClock) -> None:
    world = build(fixed_clock, issuer="")
    issued = world.service.issue(world.request(), request_issuer=ISSUER)
    assert decode(world, issued.access_token)["iss"] == ISSUER


def test_two_proofs_give_two_tokens_with_distinct_jtis(world: World) -> None:
    first, second = world.issue(), world.issue()
    assert first.jti != second.jti
    assert set(world.ledger.tokens) == {first.jti, second.jti}


def test_the_same_proof_jti_from_two_devices_does_not_collide(world: World) -> None:
    other = DeviceKey.generate()
    world.directory.add_device(device_record(other))
    world.issue(world.request(dpop_proof=world.device.proof("POST", TOKEN_URL, iat=NOW, jti="x")))
    world.issue(world.request(dpop_proof=other.proof("POST", TOKEN_URL, iat=NOW, jti="x")))
    assert len(world.ledger.tokens) == 2


@pytest.mark.parametrize("alg", ["ES384", "EdDSA"])
def test_a_device_with_another_allowed_algorithm_gets_a_token(world: World, alg: str) -> None:
    key = DeviceKey.generate(alg)
    world.directory.add_device(device_record(key))
    issued = world.issue(world.request(dpop_proof=key.proof("POST", TOKEN_URL, iat=NOW)))
    assert decode(world, issued.access_token)["cnf"] == {"jkt": key.jkt}


# ---- client authentication ---------------------------------------------------------------


def _client_failures(world: World) -> list[BrokerError]:
    failures = [world.rejects(world.request(client_id="tbc_nobody"), InvalidClient)]
    failures.append(world.rejects(world.request(client_secret=SECRET + "x"), InvalidClient))
    world.directory.clients[CLIENT_ID] = client(status=Status.DISABLED)
    failures.append(world.rejects(world.request(), InvalidClient))
    return failures


def test_unknown_client_wrong_secret_and_disabled_client_fail_identically(world: World) -> None:
    failures = _client_failures(world)
    seen = {(type(e), e.error, e.description, e.reason, str(e)) for e in failures}
    assert len(seen) == 1
    assert failures[0].error == "invalid_client"


def test_unknown_wrong_secret_and_disabled_client_do_the_same_work(world: World) -> None:
    _client_failures(world)
    assert dict(world.directory.calls) == {"get_client_and_device": 3}
    assert dict(world.ledger.calls) == {"record_refusal": 3}


@pytest.mark.parametrize(
    "overrides",
    [{"client_id": None}, {"client_id": ""}, {"client_secret": None}, {"client_secret": ""}],
    ids=["no-id", "empty-id", "no-secret", "empty-secret"],
)
def test_missing_client_credentials_are_an_invalid_client(
    world: World, overrides: dict[str, Any]
) -> None:
    error = world.rejects(world.request(**overrides), InvalidClient)
    assert error.description == "client authentication failed"


def test_a_client_whose_stored_hash_is_corrupt_cannot_authenticate(world: World) -> None:
    world.directory.clients[CLIENT_ID] = client(secret_hash="plain:" + SECRET)
    world.rejects(world.request(), InvalidClient)


# ---- proof and device --------------------------------------------------------------------


def test_a_request_without_a_proof_is_rejected_before_any_lookup(world: World) -> None:
    error = world.rejects(world.request(dpop_proof=None), InvalidDpopProof)
    assert error.reason == "dpop_proof_missing"
    assert world.directory.calls == {}


@pytest.mark.parametrize(
    "proof_args",
    [
        ("GET", TOKEN_URL, NOW),
        ("POST", ISSUER + "/other", NOW),
        ("POST", TOKEN_URL, NOW - 3600),
    ],
    ids=["method", "uri", "stale"],
)
def test_an_invalid_proof_is_rejected_before_any_lookup(
    world: World, proof_args: tuple[str, str, int]
) -> None:
    htm, htu, iat = proof_args
    request = world.request(dpop_proof=world.device.proof(htm, htu, iat=iat))
    error = world.rejects(request, InvalidDpopProof)
    assert type(error) is InvalidDpopProof
    assert world.directory.calls == {}


def test_a_proof_older_than_the_window_by_the_clock_is_rejected(world: World) -> None:
    request = world.request()
    world.clock.advance(PROOF_POLICY.max_age + PROOF_POLICY.skew + 1)
    world.rejects(request, InvalidDpopProof)


def test_a_proof_key_that_is_not_enrolled_is_an_invalid_grant(world: World) -> None:
    stranger = DeviceKey.generate()
    request = world.request(dpop_proof=stranger.proof("POST", TOKEN_URL, iat=NOW))
    error = world.rejects(request, InvalidGrant)
    assert error.reason == "device_not_enrolled"


def test_a_device_of_another_client_is_an_invalid_grant_with_no_hint_it_exists(
    world: World,
) -> None:
    world.directory.add_client(client("tbc_other"))
    theirs = DeviceKey.generate()
    world.directory.add_device(device_record(theirs, "tbc_other"))
    request = world.request(dpop_proof=theirs.proof("POST", TOKEN_URL, iat=NOW))
    error = world.rejects(request, InvalidGrant)
    stranger = DeviceKey.generate()
    unknown = world.rejects(
        world.request(dpop_proof=stranger.proof("POST", TOKEN_URL, iat=NOW)), InvalidGrant
    )
    assert (error.reason, error.description) == (unknown.reason, unknown.description)


def test_a_revoked_device_is_an_invalid_grant_with_its_own_reason(world: World) -> None:
    world.directory.devices[world.device.jkt] = device_record(
        world.device, status=Status.REVOKED, revoked_at=NOW - 10
    )
    error = world.rejects(world.request(), InvalidGrant)
    assert error.reason == "device_revoked"
    assert error.reason != "device_not_enrolled"


def test_a_revoked_device_of_another_client_reveals_nothing(world: World) -> None:
    world.directory.add_client(client("tbc_other"))
    theirs = DeviceKey.generate()
    world.directory.add_device(device_record(theirs, "tbc_other", status=Status.REVOKED))
    request = world.request(dpop_proof=theirs.proof("POST", TOKEN_URL, iat=NOW))
    assert world.rejects(request, InvalidGrant).reason == "device_not_enrolled"


def test_a_proof_jti_that_is_not_valid_unicode_is_rejected_not_a_crash(world: World) -> None:
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": world.device.public_jwk}
    body = f'{{"jti":"\\ud800","htm":"POST","htu":"{TOKEN_URL}","iat":{NOW}}}'
    world.rejects(
        world.request(dpop_proof=raw_jws(header, body, sign_with=world.device)),
        InvalidDpopProof,
    )


# ---- scope, resource, grant type ---------------------------------------------------------


def test_a_requested_subset_of_the_clients_scopes_is_granted(world: World) -> None:
    issued = world.issue(world.request(scope="read"))
    assert issued.scope == ("read",)
    assert decode(world, issued.access_token)["scope"] == "read"


def test_without_a_scope_every_allowed_scope_is_granted(world: World) -> None:
    assert world.issue(world.request(scope=None)).scope == ("model:a:invoke", "read", "write")
    assert world.issue(world.request(scope="")).scope == ("model:a:invoke", "read", "write")


@pytest.mark.parametrize("scope", ["read admin", "admin", "read  write", " read", 're"ad'])
def test_a_scope_beyond_the_clients_or_malformed_is_rejected(world: World, scope: str) -> None:
    world.rejects(world.request(scope=scope), InvalidScope)


def test_a_known_resource_becomes_the_audience(world: World) -> None:
    issued = world.issue(world.request(resource=OTHER_API))
    assert decode(world, issued.access_token, audience=OTHER_API)["aud"] == OTHER_API
    assert next(iter(world.ledger.tokens.values())).audience == OTHER_API


@pytest.mark.parametrize("resource", ["https://attacker.example", "", API + "/"])
def test_an_unknown_resource_is_an_invalid_target(world: World, resource: str) -> None:
    error = world.rejects(world.request(resource=resource), InvalidTarget)
    assert error.error == "invalid_target"
    assert world.directory.calls == {}


@pytest.mark.parametrize("grant_type", ["authorization_code", "password", "CLIENT_CREDENTIALS"])
def test_an_unsupported_grant_type_is_rejected(world: World, grant_type: str) -> None:
    world.rejects(world.request(grant_type=grant_type), UnsupportedGrantType)
    assert world.directory.calls == {}


def test_a_missing_grant_type_is_an_invalid_request(world: World) -> None:
    world.rejects(world.request(grant_type=None), InvalidRequest)


# ---- replay ------------------------------------------------------------------------------


def test_replaying_a_proof_is_rejected_and_writes_no_second_record(world: World) -> None:
    request = world.request()
    first = world.issue(request)
    with pytest.raises(ProofReplayed) as caught:
        world.issue(request)
    assert caught.value.error == "invalid_dpop_proof"
    assert list(world.ledger.tokens) == [first.jti]
    # the replay wrote neither a second token nor a second ledger record
    assert list(world.ledger.records) == ["iss:" + first.jti]


def test_replaying_a_proof_with_a_malleated_signature_is_still_a_replay(world: World) -> None:
    request = world.request()
    world.issue(request)
    twin = replace(request, dpop_proof=malleate_ecdsa(request.dpop_proof or ""))
    with pytest.raises(ProofReplayed):
        world.issue(twin)
    assert len(world.ledger.tokens) == 1


# ---- fail closed -------------------------------------------------------------------------


def test_a_failing_signer_means_no_token_and_nothing_recorded(world: World) -> None:
    world.signer.fail_with(methods=("sign",))
    with pytest.raises(TemporarilyUnavailable):
        world.issue()
    assert world.ledger.tokens == {}
    assert world.ledger.records == {}
    assert world.ledger.calls == {}


def test_a_signer_that_cannot_publish_its_key_means_no_token(world: World) -> None:
    world.signer.fail_with(methods=("public_jwk",))
    with pytest.raises(TemporarilyUnavailable):
        world.issue()
    world.assert_nothing_issued()


def test_a_failing_directory_means_no_token_and_no_signature(world: World) -> None:
    world.directory.fail_with()
    with pytest.raises(TemporarilyUnavailable):
        world.issue()
    world.assert_nothing_issued()
    assert world.signer.calls == {}


def test_a_failing_ledger_means_no_token_is_handed_out(world: World) -> None:
    world.ledger.fail_with()
    with pytest.raises(TemporarilyUnavailable):
        world.issue()
    assert world.ledger.tokens == {}
    assert world.ledger.records == {}


def test_after_a_backend_recovers_the_same_proof_can_still_be_used(world: World) -> None:
    request = world.request()
    world.signer.fail_with(methods=("sign",))
    with pytest.raises(TemporarilyUnavailable):
        world.issue(request)
    world.signer.recover()
    assert world.issue(request).client_id == CLIENT_ID
