"""The contract ``tokenbroker.domain.ports`` promises: the same cases run against the
in-memory fakes (``support.fakes``) and the DynamoDB adapters (on moto, tables
provisioned from template.yaml), so a fake cannot drift from the adapter it stands for.

Each case states what the port guarantees: the error a violated condition raises, and
that a refused change writes nothing (neither the change nor its ledger record).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from support.fakes import FakeClientDirectory, FakeTokenLedger, FakeUsageLedger
from tokenbroker import bootstrap
from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.errors import (
    ClientDisabled,
    Conflict,
    DeviceLimitReached,
    DeviceRevoked,
    NotFound,
    ProofReplayed,
)
from tokenbroker.domain.liveness import LivenessView
from tokenbroker.domain.models import (
    Client,
    Decision,
    Device,
    EventType,
    IssuedToken,
    Status,
    UsageRecord,
)
from tokenbroker.domain.ports import ClientDirectory, TokenLedger, UsageLedger
from tokenbroker.local.provision import provision
from tokenbroker.local.template import load_template
from tokenbroker.settings import Settings

NOW = 1_800_000_000
REGION = "us-east-1"
_ids = itertools.count()


@dataclass
class Ports:
    directory: ClientDirectory
    tokens: TokenLedger
    usage: UsageLedger
    liveness: LivenessView


def _fakes() -> Ports:
    directory = FakeClientDirectory()
    usage = FakeUsageLedger(directory)
    return Ports(
        directory, FakeTokenLedger(), usage, LivenessView(usage.fetch, clock=FixedClock(NOW))
    )


@pytest.fixture(scope="module")
def template() -> Any:
    return load_template()


@pytest.fixture(scope="module")
def moto_clients() -> Iterator[dict[str, Any]]:
    """One moto backend and one set of clients for the module; each case provisions
    its own stack in it (a fresh ``mock_aws`` and clients per case cost seconds)."""
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        yield {service: session.client(service) for service in ("dynamodb", "kms", "ssm", "s3")}


_stacks = itertools.count()


@pytest.fixture(params=["fakes", "dynamodb"])
def ports(request: pytest.FixtureRequest, template: Any) -> Ports:
    if request.param == "fakes":
        return _fakes()
    clients: dict[str, Any] = request.getfixturevalue("moto_clients")
    deployment = provision(
        template,
        session_or_clients=clients,
        stack_name=f"tb-contract-{next(_stacks)}",
        region=REGION,
    )
    environment = {
        **deployment.environment("TokenFunction"),
        **deployment.environment("AuthorizerFunction"),
    }
    container = bootstrap.build(
        Settings.from_mapping(environment),
        aws=clients.__getitem__,
        clock=FixedClock(NOW),
    )
    return Ports(container.directory, container.ledger, container.usage, container.liveness)


def client(client_id: str = "tbc_contract", *, max_devices: int = 2) -> Client:
    return Client(
        client_id=client_id,
        name="contract",
        secret_hash="h",
        scopes=frozenset({"profile"}),
        max_devices=max_devices,
        status=Status.ACTIVE,
        created_at=NOW,
    )


def device(jkt: str, client_id: str = "tbc_contract") -> Device:
    return Device(jkt=jkt, client_id=client_id, label="d", status=Status.ACTIVE, enrolled_at=NOW)


def record(client_id: str = "tbc_contract", *, jkt: str = "", record_id: str = "") -> UsageRecord:
    return UsageRecord.build(
        at=NOW,
        retention_days=30,
        record_id=record_id or f"adm:{next(_ids)}",
        principal=client_id,
        client_id=client_id,
        jkt=jkt,
        event=EventType.CLIENT_CREATED,
    )


def use(client_id: str, jkt: str, record_id: str, request_id: str = "req-1") -> UsageRecord:
    return UsageRecord.build(
        at=NOW,
        request_id=request_id,
        retention_days=30,
        record_id=record_id,
        principal=client_id,
        client_id=client_id,
        jkt=jkt,
        token_jti="jti",
        method="GET",
        route="/v1/whoami",
    )


JKT_A, JKT_B, JKT_C = ("A" * 43, "B" * 43, "C" * 43)


# ------------------------------------------------------------------ ClientDirectory


def test_a_created_client_reads_back_and_an_unknown_one_is_none(ports: Ports) -> None:
    ports.directory.create_client(client(), record())
    got = ports.directory.get_client("tbc_contract")
    assert got is not None
    assert (got.client_id, got.scopes, got.max_devices, got.status, got.active_devices) == (
        "tbc_contract",
        frozenset({"profile"}),
        2,
        Status.ACTIVE,
        0,
    )
    assert ports.directory.get_client("tbc_nobody") is None
    assert [c.client_id for c in ports.directory.list_clients()] == ["tbc_contract"]


def test_a_client_id_is_created_once(ports: Ports) -> None:
    ports.directory.create_client(client(), record())
    with pytest.raises(Conflict):
        ports.directory.create_client(client(), record())


def test_enrolment_needs_an_existing_active_client_with_a_free_slot(ports: Ports) -> None:
    with pytest.raises(NotFound):
        ports.directory.enroll_device(device(JKT_A, "tbc_nobody"), record("tbc_nobody"))
    ports.directory.create_client(client(max_devices=2), record())
    ports.directory.enroll_device(device(JKT_A), record(jkt=JKT_A))
    ports.directory.enroll_device(device(JKT_B), record(jkt=JKT_B))
    with pytest.raises(DeviceLimitReached):
        ports.directory.enroll_device(device(JKT_C), record(jkt=JKT_C))
    assert ports.directory.get_device(JKT_C) is None  # refused: nothing written
    got_client, got_device = ports.directory.get_client_and_device("tbc_contract", JKT_A)
    assert got_client is not None
    assert got_client.active_devices == 2
    assert got_device is not None
    assert (got_device.client_id, got_device.status) == ("tbc_contract", Status.ACTIVE)
    assert sorted(d.jkt for d in ports.directory.list_devices("tbc_contract")) == [JKT_A, JKT_B]


def test_a_key_is_enrolled_at_most_once_ever(ports: Ports) -> None:
    ports.directory.create_client(client(), record())
    ports.directory.enroll_device(device(JKT_A), record(jkt=JKT_A))
    with pytest.raises(Conflict):
        ports.directory.enroll_device(device(JKT_A), record(jkt=JKT_A))
    revoked = ports.directory.revoke_device(device(JKT_A), NOW + 1, record(jkt=JKT_A))
    assert (revoked.status, revoked.revoked_at) == (Status.REVOKED, NOW + 1)
    with pytest.raises(Conflict):  # a revoked key is not re-enrollable
        ports.directory.enroll_device(device(JKT_A), record(jkt=JKT_A))


def test_revocation_frees_the_slot_and_happens_once(ports: Ports) -> None:
    ports.directory.create_client(client(max_devices=1), record())
    ports.directory.enroll_device(device(JKT_A), record(jkt=JKT_A))
    ports.directory.revoke_device(device(JKT_A), NOW, record(jkt=JKT_A))
    with pytest.raises(NotFound):
        ports.directory.revoke_device(device(JKT_A), NOW, record(jkt=JKT_A))
    with pytest.raises(NotFound):
        ports.directory.revoke_device(device(JKT_B), NOW, record(jkt=JKT_B))
    ports.directory.enroll_device(device(JKT_B), record(jkt=JKT_B))  # the freed slot
    got = ports.directory.get_client("tbc_contract")
    assert got is not None
    assert got.active_devices == 1


def test_a_disabled_client_stays_and_enrols_nothing(ports: Ports) -> None:
    with pytest.raises(NotFound):
        ports.directory.set_client_status("tbc_nobody", "disabled", NOW, record("tbc_nobody"))
    ports.directory.create_client(client(), record())
    updated = ports.directory.set_client_status("tbc_contract", "disabled", NOW, record())
    assert updated.status is Status.DISABLED
    got = ports.directory.get_client("tbc_contract")
    assert got is not None
    assert got.status is Status.DISABLED
    with pytest.raises(Conflict):
        ports.directory.enroll_device(device(JKT_A), record(jkt=JKT_A))


# -------------------------------------------------------------------- TokenLedger


def test_an_issuance_is_recorded_once_per_jti(ports: Ports) -> None:
    token = IssuedToken(
        jti="jti-1",
        client_id="tbc_contract",
        jkt=JKT_A,
        scope=("profile",),
        audience="urn:tokenbroker:api",
        issued_at=NOW,
        expires_at=NOW + 300,
        retain_until=NOW + 86_400,
    )
    ports.tokens.record_issuance(token, record(record_id="iss:jti-1"))
    with pytest.raises(ProofReplayed):
        ports.tokens.record_issuance(token, record(record_id="iss:jti-1-again"))


# -------------------------------------------------------------------- UsageLedger


def _enrolled(ports: Ports) -> None:
    ports.directory.create_client(client(), record())
    ports.directory.enroll_device(device(JKT_A), record(jkt=JKT_A))


def test_an_allowed_use_is_recorded_once_per_record_id(ports: Ports) -> None:
    _enrolled(ports)
    ports.usage.record_use(use("tbc_contract", JKT_A, "rk-1"))
    # the same proof in another request (API Gateway gives each its own request id)
    with pytest.raises(ProofReplayed):
        ports.usage.record_use(use("tbc_contract", JKT_A, "rk-1", request_id="req-2"))
    ports.usage.record_use(use("tbc_contract", JKT_A, "rk-2"))


def test_a_retry_of_the_same_write_is_its_own_record_not_a_replay(ports: Ports) -> None:
    # a write whose answer was lost is retried with the very same item: not a replay
    _enrolled(ports)
    ports.usage.record_use(use("tbc_contract", JKT_A, "rk-1"))
    ports.usage.record_use(use("tbc_contract", JKT_A, "rk-1"))
    # ... but only when the request is identified: without a request id, never
    ports.usage.record_use(use("tbc_contract", JKT_A, "rk-3", request_id=""))
    with pytest.raises(ProofReplayed):
        ports.usage.record_use(use("tbc_contract", JKT_A, "rk-3", request_id=""))


def test_liveness_sees_a_revoked_or_unknown_device(ports: Ports) -> None:
    _enrolled(ports)
    ports.directory.revoke_device(device(JKT_A), NOW, record(jkt=JKT_A))
    assert not ports.liveness.current("tbc_contract", JKT_A).device_active
    assert not ports.liveness.current("tbc_contract", JKT_B).device_active
    with pytest.raises(DeviceRevoked):
        ports.liveness.require_active("tbc_contract", JKT_A)


def test_liveness_sees_a_disabled_client(ports: Ports) -> None:
    _enrolled(ports)
    ports.directory.set_client_status("tbc_contract", "disabled", NOW, record())
    state = ports.liveness.current("tbc_contract", JKT_A)
    assert state.device_active
    assert not state.client_active
    with pytest.raises(ClientDisabled):
        ports.liveness.require_active("tbc_contract", JKT_A)


def test_liveness_reports_the_clients_scopes_now(ports: Ports) -> None:
    _enrolled(ports)
    state = ports.liveness.current("tbc_contract", JKT_A)
    assert state.client_active
    assert state.device_active
    assert state.client_scopes == frozenset({"profile"})
    assert state.tokens_not_before == 0


def test_a_denial_is_recorded_best_effort_and_twice_is_no_error(ports: Ports) -> None:
    denial = UsageRecord.build(
        at=NOW,
        retention_days=30,
        record_id="deny:1",
        principal="tbc_contract",
        client_id="tbc_contract",
        decision=Decision.DENY,
        reason="insufficient_scope",
    )
    ports.usage.record_denial(denial)
    ports.usage.record_denial(denial)
