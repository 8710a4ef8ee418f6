"""The DynamoDB quota store on moto (QuotasTable from template.yaml): the lease condition
holds under concurrency, units count once per usage record, and every AWS failure is
TemporarilyUnavailable (faults injected with botocore events: moto cannot throttle).

moto's conditional writes are not atomic across threads (ARCHITECTURE, Known traps), so
concurrent requests here go through a lock around each moto call: what the test proves
is the lease protocol (no overshoot whatever the interleaving of whole calls); in AWS
the atomicity of one UpdateItem comes from DynamoDB itself.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError
from moto import mock_aws

from quotas.fake_store import FakeQuotaStore
from tokenbroker.adapters.aws import client as aws_client
from tokenbroker.adapters.ledger_items import from_item
from tokenbroker.adapters.quotas import DynamoQuotaStore
from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.domain.models import Decision, EventType, UsageRecord
from tokenbroker.domain.quotas import ALL_MODELS, QuotaExceeded, QuotaLimits, ask
from tokenbroker.local import load_template
from tokenbroker.services.quotas import QuotaGate, UnitsReporter

TABLE = "quotas-test"
USAGE = "usage-test"
T0 = 1_800_000_000 - 1_800_000_000 % 86_400 + 7
CLIENT = "tbc_client"


@pytest.fixture
def ddb() -> Iterator[Any]:
    with mock_aws():
        client = aws_client("dynamodb")
        client.create_table(**load_template().create_table_kwargs("QuotasTable", TABLE))
        client.create_table(**load_template().create_table_kwargs("UsageTable", USAGE))
        yield client


class Serialised:
    """A DynamoDB client whose calls run one at a time (the moto trap, see above)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(**kwargs: Any) -> Any:
            with self._lock:
                return method(**kwargs)

        return call


def _admit(g: QuotaGate, principal: str = "alice") -> str:
    try:
        g.admit(CLIENT, principal, "", T0)
    except QuotaExceeded as exc:
        return exc.reason
    return "allowed"


def test_64_concurrent_requests_in_one_environment_allow_exactly_50(ddb: Any) -> None:
    store = DynamoQuotaStore(Serialised(ddb), table=TABLE)
    store.set_rule(CLIENT, ALL_MODELS, QuotaLimits(requests_per_minute=50), at=T0)
    g = QuotaGate(store, defaults=QuotaLimits(0, 0, 0), clock=FixedClock(T0))
    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = Counter(pool.map(lambda _: _admit(g), range(64)))
    assert outcomes == {"allowed": 50, "quota_exceeded:requests_per_minute": 14}
    counter = store.counter(store.counter_id(CLIENT, "alice", ALL_MODELS), T0 // 86_400)
    assert (counter.count(T0 // 60), counter.day_count) == (50, 50)


def test_eight_environments_together_never_overshoot_and_under_use_within_the_bound(
    ddb: Any,
) -> None:
    store = DynamoQuotaStore(Serialised(ddb), table=TABLE)
    store.set_rule(CLIENT, ALL_MODELS, QuotaLimits(requests_per_minute=50), at=T0)
    gates = [QuotaGate(store, defaults=QuotaLimits(), clock=FixedClock(T0)) for _ in range(8)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = Counter(pool.map(lambda i: _admit(gates[i % 8]), range(200)))
    # stated bound: 50 - (E - 1) * (cap - 1) = 50 - 7 * 4 = 22 <= allowed <= 50
    assert 22 <= outcomes["allowed"] <= 50
    counter = store.counter(store.counter_id(CLIENT, "alice", ALL_MODELS), T0 // 86_400)
    assert counter.count(T0 // 60) <= 50


@pytest.mark.parametrize("backend", ["moto", "fake"])
def test_the_fake_and_the_adapter_agree_on_the_lease_condition(backend: str, ddb: Any) -> None:
    store: Any = DynamoQuotaStore(ddb, table=TABLE) if backend == "moto" else FakeQuotaStore()
    counter, day, minute = store.counter_id(CLIENT, "p", "*"), T0 // 86_400, T0 // 60
    limits = QuotaLimits(requests_per_minute=5, requests_per_day=7, units_per_day=10)
    per_minute = QuotaLimits(requests_per_minute=5)
    steps = [
        (ask(limits, minute, 3), True),
        (ask(limits, minute, 3), False),  # 3 + 3 > 5 per minute
        (ask(limits, minute, 2), True),
        (ask(limits, minute + 1, 3), False),  # 5 + 3 > 7 per day
        (ask(limits, minute + 1, 2), True),
        (ask(per_minute, minute - 1, 1), False),  # the item holds later minutes
        (ask(per_minute, minute + 2, 1), True),  # ... and drops `minute`
        (ask(per_minute, minute, 1), False),  # which no lagging clock may recount
    ]
    results = [store.lease(counter, day, a)[0] for a, _ in steps]
    assert results == [expected for _, expected in steps]
    granted, state = store.lease(counter, day, ask(per_minute, minute + 2, 4))
    assert granted
    assert (dict(state.minutes), state.day_count) == ({minute + 1: 2, minute + 2: 5}, 12)


def test_units_count_once_per_usage_record_and_stop_the_next_lease(ddb: Any) -> None:
    store = DynamoQuotaStore(ddb, table=TABLE, usage_table=USAGE)
    store.set_rule(CLIENT, "big", QuotaLimits(units_per_day=100), at=T0)
    clock = FixedClock(T0)
    g = QuotaGate(store, defaults=QuotaLimits(), clock=clock)
    reference = g.admit(CLIENT, "alice", "big", T0)
    reporter = UnitsReporter(store, clock=clock)
    context = {"usage_id": "rec-1", "quota": reference}
    assert reporter.report(context, units=60, model="big") is True
    assert reporter.report(context, units=60, model="big") is False  # a retry counts once
    assert reporter.report({"usage_id": "rec-2", "quota": reference}, units=45) is True
    day, counter = reference.split("/", 1)
    assert store.counter(counter, int(day)).units == 105
    with pytest.raises(QuotaExceeded) as denied:
        g.admit(CLIENT, "alice", "big", T0 + 1)  # the lease of 1 is spent: ask again
    assert denied.value.reason == "quota_exceeded:units_per_day"
    # another model of the same client has no units rule: its counter is separate
    assert g.admit(CLIENT, "alice", "small", T0 + 1) == ""


def test_rules_merge_and_list(ddb: Any) -> None:
    store = DynamoQuotaStore(ddb, table=TABLE)
    store.set_rule(CLIENT, ALL_MODELS, QuotaLimits(requests_per_minute=5), at=T0)
    merged = store.set_rule(CLIENT, ALL_MODELS, QuotaLimits(requests_per_day=50), at=T0)
    assert merged == QuotaLimits(5, 50, None)
    store.set_rule(CLIENT, "m", QuotaLimits(units_per_day=9), at=T0)
    assert store.rules(CLIENT) == {
        ALL_MODELS: QuotaLimits(5, 50, None),
        "m": QuotaLimits(None, None, 9),
    }
    assert store.rules("tbc_other") == {}


def _fail_with(client: Any, operation: str, code: str) -> None:
    def fail(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        parsed = {
            "Error": {"Code": code, "Message": f"injected {code}"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }
        return AWSResponse("https://dynamodb.us-east-1.amazonaws.com/", 400, {}, None), parsed

    client.meta.events.register(f"before-call.dynamodb.{operation}", fail)


@pytest.mark.parametrize(
    ("operation", "code"),
    [
        ("UpdateItem", "ProvisionedThroughputExceededException"),
        ("UpdateItem", "ThrottlingException"),
        ("Query", "ResourceNotFoundException"),  # the rules read (both formats)
        ("UpdateItem", "AccessDeniedException"),
    ],
)
def test_every_store_failure_fails_closed(ddb: Any, operation: str, code: str) -> None:
    store = DynamoQuotaStore(ddb, table=TABLE)
    store.set_rule(CLIENT, ALL_MODELS, QuotaLimits(requests_per_minute=50), at=T0)
    _fail_with(ddb, operation, code)
    g = QuotaGate(store, defaults=QuotaLimits(), clock=FixedClock(T0))
    with pytest.raises(TemporarilyUnavailable, match=code):
        g.admit(CLIENT, "alice", "", T0)


def test_a_timeout_fails_closed(ddb: Any) -> None:
    store = DynamoQuotaStore(ddb, table=TABLE)
    store.set_rule(CLIENT, ALL_MODELS, QuotaLimits(requests_per_minute=50), at=T0)

    def hang(**_: Any) -> None:
        raise ReadTimeoutError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com/")

    ddb.meta.events.register("before-send.dynamodb.UpdateItem", hang)
    g = QuotaGate(store, defaults=QuotaLimits(), clock=FixedClock(T0))
    with pytest.raises(TemporarilyUnavailable, match="ReadTimeoutError"):
        g.admit(CLIENT, "alice", "", T0)


def test_a_missing_table_fails_closed(ddb: Any) -> None:
    store = DynamoQuotaStore(ddb, table="no-such-table")
    with pytest.raises(TemporarilyUnavailable, match="ResourceNotFoundException"):
        QuotaGate(store, defaults=QuotaLimits(5), clock=FixedClock(T0)).admit(CLIENT, "a", "", T0)


def _units_events(ddb: Any) -> list[UsageRecord]:
    items = ddb.scan(TableName=USAGE)["Items"]
    return sorted(
        (r for r in map(from_item, items) if r.event is EventType.UNITS_REPORTED),
        key=lambda r: r.record_id,
    )


def test_each_units_report_is_a_ledger_event_linked_to_its_usage_record(ddb: Any) -> None:
    store = DynamoQuotaStore(ddb, table=TABLE, usage_table=USAGE)
    store.set_rule(CLIENT, ALL_MODELS, QuotaLimits(units_per_day=1000), at=T0)
    clock = FixedClock(T0)
    reference = QuotaGate(store, defaults=QuotaLimits(), clock=clock).admit(CLIENT, "al", "", T0)
    reporter = UnitsReporter(store, clock=clock, retention_days=30)
    context = {
        "usage_id": "rec-1",
        "quota": reference,
        "principal": "al",
        "client_id": CLIENT,
        "jkt": "jkt-1",
        "token_jti": "jti-1",
    }
    assert reporter.report(context, units=60, model="llama3:8b") is True
    [event] = _units_events(ddb)
    assert event.record_id == "units:rec-1"  # the usage record it reports on
    assert (event.decision, event.reason, event.resource) == (
        Decision.ALLOW,
        "units:60",
        "llama3:8b",
    )
    assert (event.principal, event.client_id, event.jkt, event.token_jti) == (
        "al",
        CLIENT,
        "jkt-1",
        "jti-1",
    )
    assert (event.at_ms, event.retain_until) == (T0 * 1000, T0 + 30 * 86_400)


def test_a_duplicate_report_is_refused_and_records_no_second_event(ddb: Any) -> None:
    store = DynamoQuotaStore(ddb, table=TABLE, usage_table=USAGE)
    store.set_rule(CLIENT, ALL_MODELS, QuotaLimits(units_per_day=1000), at=T0)
    clock = FixedClock(T0)
    reference = QuotaGate(store, defaults=QuotaLimits(), clock=clock).admit(CLIENT, "al", "", T0)
    reporter = UnitsReporter(store, clock=clock)
    context = {"usage_id": "rec-1", "quota": reference, "principal": "al", "client_id": CLIENT}
    assert reporter.report(context, units=60) is True
    clock.advance(5)
    assert reporter.report(context, units=99) is False  # a retry, even with other units
    assert [e.reason for e in _units_events(ddb)] == ["units:60"]
    day, counter = reference.split("/", 1)
    assert store.counter(counter, int(day)).units == 60


def test_an_existing_event_alone_refuses_the_report_and_counts_nothing(ddb: Any) -> None:
    """The ledger put's own condition (not only the report item's): nothing overwrites a
    ledger record, and the three writes move together."""
    store = DynamoQuotaStore(ddb, table=TABLE, usage_table=USAGE)
    store.set_rule(CLIENT, ALL_MODELS, QuotaLimits(units_per_day=1000), at=T0)
    clock = FixedClock(T0)
    reference = QuotaGate(store, defaults=QuotaLimits(), clock=clock).admit(CLIENT, "al", "", T0)
    UnitsReporter(store, clock=clock).report({"usage_id": "r1", "quota": reference}, units=7)
    ddb.delete_item(TableName=TABLE, Key={"pk": {"S": "report#r1"}, "sk": {"S": "units"}})
    assert (
        UnitsReporter(store, clock=clock).report({"usage_id": "r1", "quota": reference}, units=8)
        is False
    )
    day, counter = reference.split("/", 1)
    assert store.counter(counter, int(day)).units == 7
    assert [e.reason for e in _units_events(ddb)] == ["units:7"]


def test_a_failed_units_transaction_fails_closed_and_writes_nothing(ddb: Any) -> None:
    store = DynamoQuotaStore(ddb, table=TABLE, usage_table=USAGE)
    store.set_rule(CLIENT, ALL_MODELS, QuotaLimits(units_per_day=1000), at=T0)
    clock = FixedClock(T0)
    reference = QuotaGate(store, defaults=QuotaLimits(), clock=clock).admit(CLIENT, "al", "", T0)
    _fail_with(ddb, "TransactWriteItems", "ThrottlingException")
    with pytest.raises(TemporarilyUnavailable, match="ThrottlingException"):
        UnitsReporter(store, clock=clock).report({"usage_id": "r1", "quota": reference}, units=7)
    assert _units_events(ddb) == []


def test_a_store_without_a_ledger_refuses_units_events_rather_than_drop_them(ddb: Any) -> None:
    store = DynamoQuotaStore(ddb, table=TABLE)
    store.set_rule(CLIENT, ALL_MODELS, QuotaLimits(units_per_day=1000), at=T0)
    clock = FixedClock(T0)
    reference = QuotaGate(store, defaults=QuotaLimits(), clock=clock).admit(CLIENT, "al", "", T0)
    with pytest.raises(TemporarilyUnavailable, match="no usage table"):
        UnitsReporter(store, clock=clock).report({"usage_id": "r1", "quota": reference}, units=7)


def test_a_units_event_stays_in_the_table_for_the_deployments_hot_window(ddb: Any) -> None:
    """Audits read the usage table for the whole hot window (services/audit_tiers.py):
    an event expiring at the default 30 days under a 90-day window would vanish from
    ``audit usage`` for days 30-90, hiding the units a principal used."""
    store = DynamoQuotaStore(ddb, table=TABLE, usage_table=USAGE, hot_window_days=90)
    store.set_rule(CLIENT, ALL_MODELS, QuotaLimits(units_per_day=1000), at=T0)
    clock = FixedClock(T0)
    reference = QuotaGate(store, defaults=QuotaLimits(), clock=clock).admit(CLIENT, "al", "", T0)
    reporter = UnitsReporter(store, clock=clock, retention_days=400)
    assert reporter.report({"usage_id": "r1", "quota": reference}, units=7) is True
    [item] = ddb.scan(TableName=USAGE)["Items"]
    assert (item["ttl"]["N"], item["ru"]["N"]) == (str(T0 + 90 * 86_400), str(T0 + 400 * 86_400))


def test_a_rule_stored_by_the_previous_version_is_still_enforced(ddb: Any) -> None:
    ddb.put_item(
        TableName=TABLE,
        Item={"pk": {"S": "rule#" + CLIENT}, "sk": {"S": ALL_MODELS}, "rpm": {"N": "5"}},
    )
    store = DynamoQuotaStore(ddb, table=TABLE, usage_table=USAGE)
    assert store.rules(CLIENT) == {ALL_MODELS: QuotaLimits(requests_per_minute=5)}
    g = QuotaGate(store, defaults=QuotaLimits(0, 0, 0), clock=FixedClock(T0))
    assert Counter(_admit(g) for _ in range(7)) == {
        "allowed": 5,
        "quota_exceeded:requests_per_minute": 2,
    }


def test_a_grant_without_a_quota_still_records_its_units_event(ddb: Any) -> None:
    """Issue 12: units are "recorded in the ledger against the usage record" whether or
    not a quota counts them; no counter or report item is written (there is none to
    count toward), and a retry records nothing twice."""
    store = DynamoQuotaStore(ddb, table=TABLE, usage_table=USAGE)
    clock = FixedClock(T0)
    g = QuotaGate(store, defaults=QuotaLimits(0, 0, 0), clock=clock)
    assert g.admit(CLIENT, "al", "llama3:8b", T0) == ""  # no limit applies: no reference
    reporter = UnitsReporter(store, clock=clock)
    context = {"usage_id": "rec-9", "quota": "", "principal": "al", "client_id": CLIENT}
    assert reporter.report(context, units=33, model="llama3:8b") is True
    assert reporter.report(context, units=33, model="llama3:8b") is False  # a retry
    [event] = _units_events(ddb)
    assert (event.record_id, event.reason, event.resource, event.principal) == (
        "units:rec-9",
        "units:33",
        "llama3:8b",
        "al",
    )
    assert ddb.scan(TableName=TABLE)["Items"] == []  # no counter, no report item


def test_a_units_event_without_a_quota_fails_closed(ddb: Any) -> None:
    store = DynamoQuotaStore(ddb, table=TABLE, usage_table=USAGE)
    _fail_with(ddb, "PutItem", "ThrottlingException")
    reporter = UnitsReporter(store, clock=FixedClock(T0))
    with pytest.raises(TemporarilyUnavailable, match="ThrottlingException"):
        reporter.report({"usage_id": "rec-9", "quota": ""}, units=3)
    with pytest.raises(TemporarilyUnavailable, match="no usage table"):
        UnitsReporter(DynamoQuotaStore(ddb, table=TABLE), clock=FixedClock(T0)).report(
            {"usage_id": "rec-9"}, units=3
        )
