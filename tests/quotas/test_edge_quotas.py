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
from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.liveness import LivenessView
from tokenbroker.domain.quotas import ALL_MODELS, QuotaLimits
from tokenbroker.local import load_template
from tokenbroker.services.quotas import MAX_ATTEMPTS

ROOT = Path(__file__).resolve().parents[2]
QUOTAS = "edge-quotas"
USAGE = "edge-usage"


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
        # a folded lease writes its usage record with the counter (one transaction)
        client.create_table(**load_template().create_table_kwargs("UsageTable", USAGE))
        yield client


def test_cloudfront_answers_a_spent_quota_with_429_and_retry_after(
    ddb: Any, fixed_clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenbroker import bootstrap

    issuer = s.Issuer()
    ledger = s.FakeUsageLedger()
    container = bootstrap.build(
        s.settings(quotas_table=QUOTAS, usage_table=USAGE),
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
    # one usage record per request that went on to the origin: the plain writes (the
    # ledger port) and those written with a folded lease (the usage table)
    allowed = [r for r in ledger.records.values() if r.decision.value == "allow"]
    folded = ddb.scan(TableName=USAGE)["Items"]
    assert folded  # the first lease is of one: folded
    assert all(item["decision"] == {"S": "allow"} for item in folded)
    assert len(allowed) + len(folded) == 3


@pytest.mark.xfail(
    strict=True,
    reason="not fixed (issue 12 item 4): with QUOTAS_TABLE in the edge's config.json a "
    "request may also make the quota lease (up to MAX_ATTEMPTS UpdateItems) and, before "
    "`quotas migrate`, the rules Query: EDGE_AWS_CALLS (3) does not count them, so a slow "
    "dependency can outlast CloudFront's 5 s (a 503, not a Deny)",
)
def test_the_edge_worst_case_with_quotas_stays_inside_cloudfronts_five_seconds() -> None:
    app = _load_edge()
    calls = app.EDGE_AWS_CALLS + MAX_ATTEMPTS + 1  # + the leases, + the rules Query
    per_call = app.ATTEMPTS * (app.CONNECT_TIMEOUT_S + app.READ_TIMEOUT_S)
    assert calls * per_call <= 0.8 * app.VIEWER_REQUEST_LIMIT_S
