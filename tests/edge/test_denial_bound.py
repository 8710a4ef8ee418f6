"""Denial floods are bounded: a token holder without the device key can be denied as
often as they like, but the ledger keeps at most DENIALS_PER_MINUTE denial records per
token ``jti`` per clock minute, across every execution environment (deterministic,
time-bucketed record ids + the conditional put), and an environment that has spent a
minute's budget for a token makes no more writes for it."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from edge import _support as s
from support.dpop import DeviceKey
from tokenbroker import bootstrap
from tokenbroker.domain.clock import FixedClock
from tokenbroker.services.authorization import DENIALS_PER_MINUTE, denial_record_id

STOLEN_TOKEN_FLOOD = 50


def _env(clock: FixedClock, issuer: s.Issuer, ledger: s.FakeUsageLedger) -> bootstrap.Container:
    """One execution environment: its own container (service, caches), shared ledger."""
    return s.build_container(
        s.settings(), clock=clock, key_cache=issuer.key_cache(clock), usage=ledger
    )


def _thief_event(token: str, clock: FixedClock) -> dict[str, Any]:
    """The stolen token with a proof signed by the thief's own key: denied."""
    thief = DeviceKey.generate("ES256")
    return s.rest_event(s.dpop_headers(token, s.proof(thief, token, iat=int(clock()))))


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Any:
    module = s.load_authorizer()

    def run(container: bootstrap.Container, event: dict[str, Any]) -> str:
        monkeypatch.setattr(bootstrap, "default", lambda: container)
        return s.call_rest_authorizer_raw(module, event)

    return run


def test_a_flood_with_a_stolen_token_leaves_at_most_the_bound_per_minute(
    fixed_clock: FixedClock, app: Any
) -> None:
    issuer, ledger = s.Issuer(), s.FakeUsageLedger()
    container = _env(fixed_clock, issuer, ledger)
    token = issuer.token(int(fixed_clock()), DeviceKey.generate("ES256").jkt)

    for _ in range(STOLEN_TOKEN_FLOOD):
        assert app(container, _thief_event(token, fixed_clock)) == "401"

    assert ledger.decisions() == [("deny", "proof_key_mismatch")] * DENIALS_PER_MINUTE
    # the environment stopped writing once the minute's budget was spent
    assert ledger.calls["record_denial"] == DENIALS_PER_MINUTE


def test_the_next_minute_has_a_new_budget(fixed_clock: FixedClock, app: Any) -> None:
    issuer, ledger = s.Issuer(), s.FakeUsageLedger()
    container = _env(fixed_clock, issuer, ledger)
    token = issuer.token(int(fixed_clock()), DeviceKey.generate("ES256").jkt)
    fixed_clock.advance(60 - fixed_clock() % 60)  # the start of a clock minute

    for _ in range(3):
        for _ in range(10):
            assert app(container, _thief_event(token, fixed_clock)) == "401"
        fixed_clock.advance(60)

    assert len(ledger.records) == 3 * DENIALS_PER_MINUTE


def test_many_execution_environments_together_stay_within_the_bound(
    fixed_clock: FixedClock, app: Any
) -> None:
    issuer, ledger = s.Issuer(), s.FakeUsageLedger()  # one table, many environments
    token = issuer.token(int(fixed_clock()), DeviceKey.generate("ES256").jkt)
    environments = [_env(fixed_clock, issuer, ledger) for _ in range(8)]

    for container in environments:
        for _ in range(10):
            assert app(container, _thief_event(token, fixed_clock)) == "401"

    assert len(ledger.records) == DENIALS_PER_MINUTE
    assert ledger.calls["record_denial"] == len(environments) * DENIALS_PER_MINUTE


def test_each_token_has_its_own_budget(fixed_clock: FixedClock, app: Any) -> None:
    issuer, ledger = s.Issuer(), s.FakeUsageLedger()
    container = _env(fixed_clock, issuer, ledger)
    tokens = [issuer.token(int(fixed_clock()), DeviceKey.generate("ES256").jkt) for _ in range(3)]

    for token in tokens:
        for _ in range(10):
            app(container, _thief_event(token, fixed_clock))

    assert Counter(r.token_jti for r in ledger.records.values()) == {
        jti: DENIALS_PER_MINUTE for jti in {r.token_jti for r in ledger.records.values()}
    }
    assert len(ledger.records) == 3 * DENIALS_PER_MINUTE


def test_allowed_requests_are_never_limited(fixed_clock: FixedClock, app: Any) -> None:
    issuer, ledger = s.Issuer(), s.FakeUsageLedger()
    container = _env(fixed_clock, issuer, ledger)
    device = DeviceKey.generate("ES256")
    token = issuer.token(int(fixed_clock()), device.jkt)

    for _ in range(3 * DENIALS_PER_MINUTE):
        event = s.rest_event(s.dpop_headers(token, s.proof(device, token, iat=int(fixed_clock()))))
        assert app(container, event) == "Allow"

    assert len(ledger.records) == 3 * DENIALS_PER_MINUTE


def test_denial_ids_are_deterministic_per_token_minute_and_slot() -> None:
    ids = {denial_record_id("jti", minute, slot) for minute in (1, 2) for slot in range(4)}
    assert len(ids) == 8
    assert denial_record_id("jti", 1, 0) == denial_record_id("jti", 1, 0)
    assert all(i.startswith("deny:") for i in ids)
