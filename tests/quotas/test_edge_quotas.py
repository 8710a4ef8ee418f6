"""Quotas at Lambda@Edge (functions/edge_authorizer): CloudFront answers a spent quota
with 429 and Retry-After itself (web/edge.py::edge_response), through the real handler
with the quota table on moto; and the edge's worst-case time with quotas on."""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from moto import mock_aws

from edge import _support as s
from support.dpop import DeviceKey
from tokenbroker.adapters.aws import client as aws_client
from tokenbroker.adapters.call_budget import CallBudgetSpent
from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.liveness import LivenessView
from tokenbroker.domain.quotas import ALL_MODELS, QuotaLimits
from tokenbroker.local import load_template
from tokenbroker.services.quotas import MAX_ATTEMPTS

ROOT = Path(__file__).resolve().parents[2]
QUOTAS = "edge-quotas"


def _load_edge() -> ModuleType:
    path = ROOT / "functions" / "edge_authorizer" / "app.py"
    spec = importlib.util.spec_from_file_location("fn_edge_quotas", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def ddb() -> Iterator[Any]:
    with mock_aws():
        client = aws_client("dynamodb")
        client.create_table(**load_template().create_table_kwargs("QuotasTable", QUOTAS))
        yield client


def test_cloudfront_answers_a_spent_quota_with_429_and_retry_after(
    ddb: Any, fixed_clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenbroker import bootstrap

    issuer = s.Issuer()
    ledger = s.FakeUsageLedger()
    container = bootstrap.build(
        s.settings(quotas_table=QUOTAS),
        aws=lambda service: ddb,
        clock=fixed_clock,
        key_cache=issuer.key_cache(fixed_clock),
        usage=ledger,
        liveness=LivenessView(ledger.fetch, clock=fixed_clock),
    )
    container.quota_admin.migrate()  # a fresh table: marked, nothing to move
    container.quota_admin.set(s.CLIENT_ID, ALL_MODELS, QuotaLimits(requests_per_minute=3))
    app = _load_edge()
    monkeypatch.setattr(app, "_loaded", lambda: container)
    device = DeviceKey.generate("ES256")
    now = int(fixed_clock())
    token = issuer.token(now, device.jkt)
    responses = []
    for _ in range(5):
        proof = s.proof(device, token, htu=f"https://{s.EDGE_HOST}{s.WHOAMI}", iat=now)
        responses.append(app.handler(s.edge_event(s.dpop_headers(token, proof)), s.LambdaContext()))
    outcomes = Counter(r.get("status", "origin") for r in responses)
    assert outcomes == {"origin": 3, "429": 2}  # exactly the limit, no overshoot
    for refused in (r for r in responses if r.get("status") == "429"):
        [header] = refused["headers"]["retry-after"]
        assert 1 <= int(header["value"]) <= 60
        assert "x-tokenbroker-principal" not in refused["headers"]
    # one usage record per request that went on to the origin
    allowed = [r for r in ledger.records.values() if r.decision.value == "allow"]
    assert len(allowed) == 3


class _Remaining:
    """A LambdaContext's clock: every AWS send that starts takes its worst case."""

    def __init__(self, left_ms: int) -> None:
        self.left_ms = left_ms
        self.sends = 0

    def get_remaining_time_in_millis(self) -> int:
        return self.left_ms

    def spend(self, worst_case_ms: int, **_: Any) -> None:
        self.sends += 1
        self.left_ms -= worst_case_ms


def test_the_edge_never_starts_a_call_it_could_not_finish_however_many_it_needs() -> None:
    """With quotas a request may make more calls than EDGE_AWS_CALLS (the leases, up to
    MAX_ATTEMPTS, and the rules Query before `quotas migrate`): the call budget, not a
    count, keeps the worst case inside CloudFront's 5 s (a Deny, never a 503)."""
    app = _load_edge()
    worst_ms = round(app.CALL_WORST_CASE_S * 1000)
    clock = _Remaining(round(app.VIEWER_REQUEST_LIMIT_S * 1000))
    app.CALL_BUDGET.begin(clock)
    wanted = app.EDGE_AWS_CALLS + MAX_ATTEMPTS + 1  # every call a request could want
    refusals: list[str] = []
    for _ in range(wanted):
        try:
            app.CALL_BUDGET.check()
        except CallBudgetSpent as exc:
            refusals.append(str(exc))
            continue
        clock.spend(worst_ms)
    refused = len(refusals)
    assert all("not enough of the invocation's time" in r for r in refusals)
    assert clock.left_ms >= round(app.RESERVE_S * 1000)  # time left to answer the viewer
    assert (clock.sends, refused) == (3, wanted - 3)  # (5,000 - 200) // 1,300 = 3


def test_a_request_with_no_time_left_for_its_quota_call_is_denied_not_a_503(
    ddb: Any,
    fixed_clock: FixedClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tokenbroker import bootstrap

    app = _load_edge()
    issuer = s.Issuer()
    ledger = s.FakeUsageLedger()
    app.CALL_BUDGET.guard(ddb)
    clock = _Remaining(app.CALL_BUDGET.needed_ms - 1)  # one ms short of a call's worst case
    ddb.meta.events.register("before-send", lambda **kw: clock.spend(0, **kw))
    container = bootstrap.build(
        s.settings(quotas_table=QUOTAS),
        aws=lambda service: ddb,
        clock=fixed_clock,
        key_cache=issuer.key_cache(fixed_clock),
        usage=ledger,
        liveness=LivenessView(ledger.fetch, clock=fixed_clock),
    )
    container.quota_admin.set(s.CLIENT_ID, ALL_MODELS, QuotaLimits(requests_per_minute=3))
    sent_before = clock.sends  # the admin's calls ran outside an invocation: no budget
    monkeypatch.setattr(app, "_loaded", lambda: container)
    device = DeviceKey.generate("ES256")
    now = int(fixed_clock())
    token = issuer.token(now, device.jkt)
    proof = s.proof(device, token, htu=f"https://{s.EDGE_HOST}{s.WHOAMI}", iat=now)

    class Context(s.LambdaContext):
        def get_remaining_time_in_millis(self) -> int:
            return clock.get_remaining_time_in_millis()

    response = app.handler(s.edge_event(s.dpop_headers(token, proof)), Context())
    app.CALL_BUDGET.begin(None)
    assert response.get("status") == "401"  # the edge's Deny, returned in time
    assert clock.sends == sent_before  # the quota call never started
    [denied] = [r for r in caplog.records if r.getMessage() == "request denied"]
    assert getattr(denied, "reason", "") == "dependency_failure"
    assert "CallBudgetSpent" in getattr(denied, "description", "")  # the budget refused
    assert [r for r in ledger.records.values() if r.decision.value == "allow"] == []
