"""Which leases fold (issue 12), decided in the composition root: bootstrap's quota_gate
folds by QUOTA_LEASE_FOLD only when the quota store's transaction writes the very usage
item the container's UsageLedger writes (the Dynamo ledger of the same table and hot
window); with any other ledger (an injected fake, another table) folding would bypass
it, so the gate leases separately (``never``). The Lambda@Edge function builds its
container from its bundled config.json the same way."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from edge import _support as s
from quotas.test_edge_quotas import _load_edge
from support.lambda_events import ISSUER
from tokenbroker import bootstrap
from tokenbroker.adapters.aws import client as aws_client
from tokenbroker.adapters.quotas import DynamoQuotaStore
from tokenbroker.adapters.usage import DynamoUsageLedger
from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.errors import ConfigurationError
from tokenbroker.domain.quotas import ALL_MODELS, FoldPolicy, QuotaLimits
from tokenbroker.local import load_template
from tokenbroker.settings import Settings

QUOTAS, USAGE = "fold-quotas", "fold-usage"
T0 = 1_760_000_000.0


@pytest.fixture
def ddb() -> Iterator[Any]:
    with mock_aws():
        client = aws_client("dynamodb")
        client.create_table(**load_template().create_table_kwargs("QuotasTable", QUOTAS))
        client.create_table(**load_template().create_table_kwargs("UsageTable", USAGE))
        yield client


def _container(ddb: Any, usage: Any = None, **settings: Any) -> bootstrap.Container:
    container = bootstrap.build(
        s.settings(quotas_table=QUOTAS, usage_table=USAGE, **settings),
        aws=lambda service: ddb,
        clock=FixedClock(T0),
        usage=usage,
    )
    container.quota_admin.set(s.CLIENT_ID, ALL_MODELS, QuotaLimits(requests_per_minute=50))
    return container


def _first_admission_claims(container: bootstrap.Container) -> bool:
    gate = container.quota_gate
    assert gate is not None
    return gate.admission(s.CLIENT_ID, "alice", "", T0).claim is not None


@pytest.mark.parametrize("policy", list(FoldPolicy))
def test_the_dynamo_ledger_of_the_quota_stores_usage_table_folds_by_the_setting(
    ddb: Any, policy: FoldPolicy
) -> None:
    container = _container(ddb, quota_lease_fold=policy.value)
    assert isinstance(container.usage, DynamoUsageLedger)
    assert container.quota_gate is not None
    assert container.quota_gate.fold is policy
    # the first lease is of one: folded unless the policy is never
    assert _first_admission_claims(container) == (policy is not FoldPolicy.NEVER)


def test_the_default_is_always(ddb: Any) -> None:
    assert Settings().quota_lease_fold == "always"
    gate = _container(ddb).quota_gate
    assert gate is not None
    assert gate.fold is FoldPolicy.ALWAYS


def test_an_injected_ledger_gets_separate_leases_so_it_sees_every_record(ddb: Any) -> None:
    """The regression of test_edge_quotas: a fake ledger with a usage table configured:
    folding would have written the record past it (or, without the table, Denied every
    request). The gate leases by itself; the lease is an UpdateItem on the counter."""
    ledger = s.FakeUsageLedger()
    container = _container(ddb, usage=ledger, quota_lease_fold="always")
    assert container.quota_gate is not None
    assert container.quota_gate.fold is FoldPolicy.NEVER
    assert not _first_admission_claims(container)
    assert ddb.scan(TableName=USAGE, Select="COUNT")["Count"] == 0  # nothing bypassed it
    store = container.quota_store
    assert isinstance(store, DynamoQuotaStore)
    counter = store.counter(store.counter_id(s.CLIENT_ID, "alice", ALL_MODELS), int(T0 // 86_400))
    assert counter.day_count == 1  # the lease was its own UpdateItem on the counter


def test_a_dynamo_ledger_of_another_table_gets_separate_leases(ddb: Any) -> None:
    other = DynamoUsageLedger(ddb, usage_table="another-usage-table")
    container = _container(ddb, usage=other)
    assert container.quota_gate is not None
    assert container.quota_gate.fold is FoldPolicy.NEVER


def test_a_dynamo_ledger_of_another_hot_window_gets_separate_leases(ddb: Any) -> None:
    other = DynamoUsageLedger(ddb, usage_table=USAGE, hot_window_days=7)
    container = _container(ddb, usage=other)
    assert container.quota_gate is not None
    assert container.quota_gate.fold is FoldPolicy.NEVER


@pytest.mark.parametrize("value", ["never", "single", "always"])
def test_quota_lease_fold_is_parsed(value: str) -> None:
    settings = Settings.from_mapping({"QUOTA_LEASE_FOLD": f" {value} "})
    assert FoldPolicy(settings.quota_lease_fold).value == value


@pytest.mark.parametrize("value", ["sometimes", "ALWAYS", "1", "true"])
def test_an_invalid_quota_lease_fold_is_a_configuration_error_at_load(value: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_mapping({"QUOTA_LEASE_FOLD": value})
    assert str(refused.value) == "QUOTA_LEASE_FOLD must be never, single or always"


def _edge_config(tmp_path: Path, **extra: str) -> Path:
    config = tmp_path / "config.json"
    values = {
        "ISSUER": ISSUER,
        "AUDIENCE": s.AUDIENCE,
        "USAGE_TABLE": USAGE,
        "QUOTAS_TABLE": QUOTAS,
        "AWS_REGION": "us-east-1",
        **extra,
    }
    config.write_text(json.dumps(values), encoding="utf-8")
    return config


@pytest.mark.parametrize(
    ("extra", "expected"), [({}, "always"), ({"QUOTA_LEASE_FOLD": "single"}, "single")]
)
def test_the_edge_function_folds_into_its_own_usage_table_by_its_config(
    ddb: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: dict[str, str], expected: str
) -> None:
    """Lambda@Edge: config.json carries the REST authorizer's names; its container's
    ledger is the Dynamo ledger of USAGE_TABLE, the quota store's too: it folds by
    QUOTA_LEASE_FOLD (absent: the template's default, always)."""
    app = _load_edge()
    monkeypatch.setattr(app, "CONFIG", _edge_config(tmp_path, **extra))
    container = app._build()
    assert container.quota_gate is not None
    assert container.quota_gate.fold is FoldPolicy(expected)


def test_an_invalid_fold_in_the_edge_config_fails_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _load_edge()
    monkeypatch.setattr(app, "CONFIG", _edge_config(tmp_path, QUOTA_LEASE_FOLD="sometimes"))
    with pytest.raises(ConfigurationError, match="QUOTA_LEASE_FOLD must be"):
        app._build()
    assert isinstance(app._loaded(), ConfigurationError)  # every request: a 401, no Allow
