"""Client and device administration (the CLI's service) against the fake directory."""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from dataclasses import asdict

import pytest

from support.dpop import DeviceKey
from support.fakes import FakeClientDirectory
from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.errors import (
    Conflict,
    DeviceLimitReached,
    NotFound,
    TemporarilyUnavailable,
)
from tokenbroker.domain.models import Decision, EventType, Status, UsageRecord
from tokenbroker.domain.secrets import secret_matches
from tokenbroker.services.admin import AdminService, InvalidInput

NOW = 1_800_000_000
ACTOR = "arn:aws:iam::123456789012:user/alice"


@pytest.fixture
def directory() -> FakeClientDirectory:
    return FakeClientDirectory()


@pytest.fixture
def admin(directory: FakeClientDirectory, fixed_clock: FixedClock) -> AdminService:
    return AdminService(directory=directory, clock=fixed_clock, actor=ACTOR, retention_days=400)


def jkt() -> str:
    return DeviceKey.generate().jkt


# ---- clients -----------------------------------------------------------------------------


def test_a_created_client_is_stored_active_with_its_scopes(
    admin: AdminService, directory: FakeClientDirectory
) -> None:
    created = admin.create_client(name="  Model team  ", scope="read model:a:invoke read")
    stored = directory.clients[created.client.client_id]
    assert stored == created.client
    assert stored.name == "Model team"
    assert stored.scopes == frozenset({"read", "model:a:invoke"})
    assert stored.status is Status.ACTIVE
    assert stored.max_devices == 3
    assert stored.created_at == NOW


def test_the_client_secret_is_256_random_bits_of_urlsafe_base64(admin: AdminService) -> None:
    secrets_seen = set()
    for _ in range(20):
        secret = admin.create_client(name="c", scope="read").client_secret
        assert re.fullmatch(r"[A-Za-z0-9_-]+", secret)
        assert len(base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))) * 8 >= 256
        secrets_seen.add(secret)
    assert len(secrets_seen) == 20


def test_only_a_hash_of_the_secret_is_stored(
    admin: AdminService, directory: FakeClientDirectory
) -> None:
    created = admin.create_client(name="c", scope="read")
    stored = directory.clients[created.client.client_id]
    expected = "sha256:" + hashlib.sha256(created.client_secret.encode()).hexdigest()
    assert stored.secret_hash == expected
    assert created.client_secret not in repr(asdict(stored))
    assert secret_matches(created.client_secret, stored.secret_hash)
    assert not secret_matches(created.client_secret + "x", stored.secret_hash)


def test_each_client_gets_its_own_id(admin: AdminService) -> None:
    ids = {admin.create_client(name="c", scope="read").client.client_id for _ in range(10)}
    assert len(ids) == 10
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", i) for i in ids)


def test_a_client_id_collision_is_a_conflict_not_an_overwrite(
    directory: FakeClientDirectory, fixed_clock: FixedClock
) -> None:
    admin = AdminService(
        directory=directory, clock=fixed_clock, actor=ACTOR, client_ids=lambda: "tbc_fixed"
    )
    first = admin.create_client(name="first", scope="read")
    with pytest.raises(Conflict):
        admin.create_client(name="second", scope="write")
    assert directory.clients["tbc_fixed"] == first.client
    assert len(directory.records) == 1  # the refused create left no record


@pytest.mark.parametrize(
    "name", ["", "   ", "x" * 129, "bad\nname", "tab\there", "nul\x00"], ids=repr
)
def test_an_invalid_name_is_rejected_and_nothing_is_stored(
    admin: AdminService, directory: FakeClientDirectory, name: str
) -> None:
    with pytest.raises(InvalidInput):
        admin.create_client(name=name, scope="read")
    assert directory.clients == {}


@pytest.mark.parametrize(
    "scope",
    ["", "   ", 'say"hi', "back\\slash", "caf\u00e9", "a\tb", " ".join(f"s{i}" for i in range(65))],
    ids=["empty", "blank", "quote", "backslash", "non-ascii", "tab", "65-scopes"],
)
def test_an_invalid_scope_is_rejected_and_nothing_is_stored(
    admin: AdminService, directory: FakeClientDirectory, scope: str
) -> None:
    with pytest.raises(InvalidInput):
        admin.create_client(name="c", scope=scope)
    assert directory.clients == {}


@pytest.mark.parametrize("max_devices", [0, -1, 101])
def test_max_devices_outside_1_to_100_is_rejected(
    admin: AdminService, directory: FakeClientDirectory, max_devices: int
) -> None:
    with pytest.raises(InvalidInput):
        admin.create_client(name="c", scope="read", max_devices=max_devices)
    assert directory.clients == {}


@pytest.mark.parametrize("max_devices", [1, 100])
def test_max_devices_at_the_bounds_is_accepted(admin: AdminService, max_devices: int) -> None:
    assert admin.create_client(name="c", scope="r", max_devices=max_devices).client.max_devices == (
        max_devices
    )


def test_a_disabled_client_stays_stored_as_disabled(admin: AdminService) -> None:
    client_id = admin.create_client(name="c", scope="read").client.client_id
    assert admin.disable_client(client_id).status is Status.DISABLED
    assert admin.get_client(client_id).status is Status.DISABLED


def test_unknown_clients_are_not_found(admin: AdminService) -> None:
    with pytest.raises(NotFound):
        admin.get_client("tbc_nobody")
    with pytest.raises(NotFound):
        admin.disable_client("tbc_nobody")
    with pytest.raises(NotFound):
        list(admin.list_devices("tbc_nobody"))


@pytest.mark.parametrize("client_id", ["", "has space", "x" * 65, "a/b", "é"])
def test_a_malformed_client_id_is_rejected_before_any_lookup(
    admin: AdminService, directory: FakeClientDirectory, client_id: str
) -> None:
    with pytest.raises(InvalidInput):
        admin.get_client(client_id)
    with pytest.raises(InvalidInput):
        admin.enroll_device(client_id=client_id, jkt=jkt())
    assert directory.calls == {}


def test_a_failing_directory_fails_the_command(
    admin: AdminService, directory: FakeClientDirectory
) -> None:
    directory.fail_with()
    with pytest.raises(TemporarilyUnavailable):
        admin.create_client(name="c", scope="read")


# ---- devices -----------------------------------------------------------------------------


@pytest.fixture
def client_id(admin: AdminService) -> str:
    return admin.create_client(name="c", scope="read", max_devices=2).client.client_id


def test_an_enrolled_device_is_active_and_counted(
    admin: AdminService, directory: FakeClientDirectory, client_id: str
) -> None:
    key = jkt()
    device = admin.enroll_device(client_id=client_id, jkt=key, label="laptop 1")
    assert (device.jkt, device.client_id, device.status) == (key, client_id, Status.ACTIVE)
    assert device.enrolled_at == NOW
    assert directory.devices[key] == device
    assert directory.clients[client_id].active_devices == 1
    assert list(admin.list_devices(client_id)) == [device]


@pytest.mark.parametrize(
    "value",
    ["", "not-a-thumbprint", "A" * 42, "A" * 44, "A" * 42 + "=", "A" * 42 + "B", "+" * 43],
    ids=["empty", "word", "42", "44", "padded", "non-canonical", "std-alphabet"],
)
def test_a_malformed_jkt_is_rejected_and_nothing_is_enrolled(
    admin: AdminService, directory: FakeClientDirectory, client_id: str, value: str
) -> None:
    with pytest.raises(InvalidInput):
        admin.enroll_device(client_id=client_id, jkt=value)
    with pytest.raises(InvalidInput):
        admin.revoke_device(value)
    assert directory.devices == {}


@pytest.mark.parametrize("label", ["x" * 65, "new\nline", "semi;colon", "<script>"])
def test_a_malformed_label_is_rejected(
    admin: AdminService, directory: FakeClientDirectory, client_id: str, label: str
) -> None:
    with pytest.raises(InvalidInput):
        admin.enroll_device(client_id=client_id, jkt=jkt(), label=label)
    assert directory.devices == {}


def test_enrolling_beyond_max_devices_is_refused(
    admin: AdminService, directory: FakeClientDirectory, client_id: str
) -> None:
    admin.enroll_device(client_id=client_id, jkt=jkt())
    admin.enroll_device(client_id=client_id, jkt=jkt())
    third = jkt()
    with pytest.raises(DeviceLimitReached):
        admin.enroll_device(client_id=client_id, jkt=third)
    assert third not in directory.devices
    assert directory.clients[client_id].active_devices == 2


def test_revoking_a_device_frees_its_slot(admin: AdminService, client_id: str) -> None:
    first = admin.enroll_device(client_id=client_id, jkt=jkt())
    admin.enroll_device(client_id=client_id, jkt=jkt())
    admin.revoke_device(first.jkt)
    admin.enroll_device(client_id=client_id, jkt=jkt())


def test_a_revoked_device_is_kept_as_revoked_with_its_time(
    admin: AdminService, fixed_clock: FixedClock, client_id: str
) -> None:
    key = jkt()
    admin.enroll_device(client_id=client_id, jkt=key)
    fixed_clock.advance(60)
    revoked = admin.revoke_device(key)
    assert (revoked.status, revoked.revoked_at) == (Status.REVOKED, NOW + 60)
    assert list(admin.list_devices(client_id)) == [revoked]


def test_a_revoked_key_cannot_be_enrolled_again(
    admin: AdminService, directory: FakeClientDirectory, client_id: str
) -> None:
    key = jkt()
    admin.enroll_device(client_id=client_id, jkt=key)
    admin.revoke_device(key)
    with pytest.raises(Conflict):
        admin.enroll_device(client_id=client_id, jkt=key)
    assert directory.devices[key].status is Status.REVOKED


def test_a_key_cannot_belong_to_two_clients(admin: AdminService, client_id: str) -> None:
    other = admin.create_client(name="other", scope="read").client.client_id
    key = jkt()
    admin.enroll_device(client_id=client_id, jkt=key)
    with pytest.raises(Conflict):
        admin.enroll_device(client_id=other, jkt=key)


def test_revoking_twice_or_an_unknown_key_is_not_found(
    admin: AdminService, directory: FakeClientDirectory, client_id: str
) -> None:
    key = jkt()
    admin.enroll_device(client_id=client_id, jkt=key)
    admin.revoke_device(key)
    with pytest.raises(NotFound):
        admin.revoke_device(key)
    with pytest.raises(NotFound):
        admin.revoke_device(jkt())
    assert directory.clients[client_id].active_devices == 0


def test_devices_cannot_be_enrolled_for_an_unknown_or_disabled_client(
    admin: AdminService, directory: FakeClientDirectory, client_id: str
) -> None:
    with pytest.raises(NotFound):
        admin.enroll_device(client_id="tbc_nobody", jkt=jkt())
    admin.disable_client(client_id)
    with pytest.raises(Conflict):
        admin.enroll_device(client_id=client_id, jkt=jkt())
    assert directory.devices == {}


def test_concurrent_enrolments_never_exceed_max_devices(
    admin: AdminService, directory: FakeClientDirectory, client_id: str
) -> None:
    outcomes: list[str] = []
    keys = [jkt() for _ in range(8)]

    def enroll(key: str) -> None:
        try:
            admin.enroll_device(client_id=client_id, jkt=key)
            outcomes.append("ok")
        except DeviceLimitReached:
            outcomes.append("limit")

    threads = [threading.Thread(target=enroll, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["limit"] * 6 + ["ok"] * 2
    assert directory.clients[client_id].active_devices == 2


# ---- the ledger: every admin change is one record, written with the change -----------


def only_record(directory: FakeClientDirectory, before: int = 0) -> UsageRecord:
    """The one record written since the ledger held ``before`` records."""
    records = list(directory.records.values())
    assert len(records) == before + 1
    return records[-1]


def assert_admin_record(
    record: UsageRecord, event: EventType, client_id: str, jkt: str = ""
) -> None:
    assert record.event is event
    assert (record.decision, record.reason) == (Decision.ALLOW, "ok")
    assert (record.principal, record.client_id, record.jkt) == (client_id, client_id, jkt)
    assert record.actor == ACTOR
    assert record.record_id == "adm:" + record.request_id
    assert re.fullmatch(r"[0-9a-f-]{36}", record.request_id)
    assert record.at_ms == NOW * 1000
    assert record.retain_until == NOW + 400 * 86_400
    assert record.token_jti == record.proof_jti_hash == record.resource == ""


def test_creating_a_client_writes_one_client_created_record(
    admin: AdminService, directory: FakeClientDirectory
) -> None:
    created = admin.create_client(name="c", scope="read")
    record = only_record(directory)
    assert_admin_record(record, EventType.CLIENT_CREATED, created.client.client_id)
    text = repr(record)
    assert created.client_secret not in text
    assert created.client.secret_hash not in text
    assert created.client.secret_hash.split(":", 1)[1] not in text


def test_disabling_a_client_writes_one_client_disabled_record(
    admin: AdminService, directory: FakeClientDirectory, client_id: str
) -> None:
    admin.disable_client(client_id)
    assert_admin_record(only_record(directory, 1), EventType.CLIENT_DISABLED, client_id)


def test_enrolling_and_revoking_write_one_record_each_with_the_device(
    admin: AdminService, directory: FakeClientDirectory, client_id: str
) -> None:
    key = jkt()
    admin.enroll_device(client_id=client_id, jkt=key, label="laptop")
    assert_admin_record(only_record(directory, 1), EventType.DEVICE_ENROLLED, client_id, key)
    admin.revoke_device(key)
    assert_admin_record(only_record(directory, 2), EventType.DEVICE_REVOKED, client_id, key)
    assert len({r.record_id for r in directory.records.values()}) == 3


def test_a_failed_admin_command_writes_no_record(
    admin: AdminService, directory: FakeClientDirectory, client_id: str
) -> None:
    admin.enroll_device(client_id=client_id, jkt=jkt())
    admin.enroll_device(client_id=client_id, jkt=jkt())
    before = len(directory.records)
    failures = [
        (DeviceLimitReached, lambda: admin.enroll_device(client_id=client_id, jkt=jkt())),
        (NotFound, lambda: admin.enroll_device(client_id="tbc_nobody", jkt=jkt())),
        (NotFound, lambda: admin.disable_client("tbc_nobody")),
        (NotFound, lambda: admin.revoke_device(jkt())),
        (InvalidInput, lambda: admin.create_client(name="", scope="read")),
    ]
    for error, command in failures:
        with pytest.raises(error):
            command()
    assert len(directory.records) == before


def test_a_failing_directory_writes_neither_change_nor_record(
    admin: AdminService, directory: FakeClientDirectory
) -> None:
    directory.fail_with()
    with pytest.raises(TemporarilyUnavailable):
        admin.create_client(name="c", scope="read")
    assert directory.clients == {}
    assert directory.records == {}


def test_a_colliding_record_id_cancels_the_change(
    directory: FakeClientDirectory, fixed_clock: FixedClock
) -> None:
    admin = AdminService(
        directory=directory, clock=fixed_clock, actor=ACTOR, request_ids=lambda: "same"
    )
    admin.create_client(name="first", scope="read")
    with pytest.raises(TemporarilyUnavailable):
        admin.create_client(name="second", scope="read")
    assert len(directory.clients) == 1
    assert list(directory.records) == ["adm:same"]
