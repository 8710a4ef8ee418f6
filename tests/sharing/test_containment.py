"""Containment modes on fakes, and the edge's liveness view of a step-up flag."""

from __future__ import annotations

import pytest

from tokenbroker.domain.errors import InvalidToken, NotFound
from tokenbroker.domain.liveness import Liveness, LivenessView
from tokenbroker.domain.models import UsageRecord
from tokenbroker.domain.sharing import Mode
from tokenbroker.services.containment import ContainmentService


class FakeStore:
    def __init__(self) -> None:
        self.modes: dict[str, str] = {}
        self.flagged: dict[str, int] = {}
        self.records: list[UsageRecord] = []

    def mode(self, client_id: str) -> str:
        return self.modes.get(client_id, "")

    def set_mode(self, client_id: str, mode: str, record: UsageRecord) -> None:
        if client_id == "tbc_missing":
            raise NotFound("no such client")
        self.modes[client_id] = mode
        self.records.append(record)

    def require_step_up(self, jkt: str, client_id: str, at: int, record: UsageRecord) -> bool:
        self.flagged[jkt] = at
        self.records.append(record)
        return True

    def step_up_required(self, jkt: str) -> bool:
        return jkt in self.flagged

    def clear_step_up(self, jkt: str) -> None:
        self.flagged.pop(jkt, None)


class FakeRevoker:
    def __init__(self) -> None:
        self.revoked: list[str] = []

    def revoke_device(self, jkt: str) -> object:
        if jkt in self.revoked:
            raise NotFound("already revoked")
        self.revoked.append(jkt)
        return jkt


def service(default: Mode = Mode.AUDIT) -> tuple[ContainmentService, FakeStore, FakeRevoker]:
    store, revoker = FakeStore(), FakeRevoker()
    svc = ContainmentService(
        store=store, revoker=revoker, clock=lambda: 1_800_000_000.0, default_mode=default
    )
    return svc, store, revoker


def test_audit_touches_nothing() -> None:
    svc, store, revoker = service()
    assert svc.contain(alert_id="a", client_id="c", jkt="k") is Mode.AUDIT
    assert (store.flagged, revoker.revoked) == ({}, [])


def test_revoke_revokes_once_and_a_retry_is_harmless() -> None:
    svc, _, revoker = service()
    svc.set_mode("c", "revoke")
    assert svc.contain(alert_id="a", client_id="c", jkt="k") is Mode.REVOKE
    assert svc.contain(alert_id="a", client_id="c", jkt="k") is Mode.REVOKE  # retry
    assert revoker.revoked == ["k"]


def test_step_up_flags_the_device_with_a_ledger_event() -> None:
    svc, store, revoker = service()
    svc.set_mode("c", "step_up")
    svc.contain(alert_id="a1", client_id="c", jkt="k")
    assert store.flagged == {"k": 1_800_000_000}
    assert store.records[-1].event.value == "device_step_up_required"
    assert store.records[-1].record_id == "shr:stepup:a1"
    assert revoker.revoked == []


def test_the_deployment_default_applies_to_clients_without_a_mode() -> None:
    svc, _, revoker = service(default=Mode.REVOKE)
    svc.contain(alert_id="a", client_id="c", jkt="k")
    assert revoker.revoked == ["k"]


def test_an_unknown_stored_mode_is_treated_as_step_up_not_as_audit() -> None:
    svc, store, _ = service()
    store.modes["c"] = "bogus"
    assert svc.mode_of("c") is Mode.STEP_UP


def test_set_mode_rejects_a_bad_mode_and_records_a_good_one() -> None:
    from tokenbroker.domain.errors import ConfigurationError

    svc, store, _ = service()
    with pytest.raises(ConfigurationError):
        svc.set_mode("c", "nuke")
    assert store.records == []
    svc.set_mode("c", "revoke")
    assert store.records[-1].event.value == "client_containment_changed"
    assert store.records[-1].resource == "containment=revoke"


def test_the_edge_refuses_a_step_up_device_with_its_reason() -> None:
    state = Liveness(
        client_active=True,
        device_active=True,
        client_scopes=frozenset({"read"}),
        step_up_required=True,
    )
    view = LivenessView(lambda c, j: state, clock=lambda: 0.0)
    with pytest.raises(InvalidToken) as refused:
        view.require_active("c", "k", scope=("read",))
    assert refused.value.reason == "step_up_required"
    ok = LivenessView(lambda c, j: Liveness(True, True, frozenset({"read"})), clock=lambda: 0.0)
    ok.require_active("c", "k", scope=("read",))  # no flag: allowed


def test_settings_reject_bad_sharing_configuration() -> None:
    from tokenbroker.domain.errors import ConfigurationError
    from tokenbroker.settings import Settings

    with pytest.raises(ConfigurationError, match="CONTAINMENT_DEFAULT"):
        Settings.from_mapping({"CONTAINMENT_DEFAULT": "nuke"})
    with pytest.raises(ConfigurationError, match="unknown rule"):
        Settings.from_mapping({"SHARING_RULES": '{"x": {}}'})
    assert Settings.from_mapping({"CONTAINMENT_DEFAULT": "revoke"}).containment_default == "revoke"
