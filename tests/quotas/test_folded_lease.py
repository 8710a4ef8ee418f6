"""The folded lease (issue 12: one round trip per allowed request with quotas on): when no
local lease unit is left, the lease rides in the usage write as ONE TransactWriteItems
[usage Put (replay guard), counter Update (the lease's condition)], on moto's real
transactions. Each outcome is tested: written together, refused by the counter (nothing
written, QuotaExceeded recorded and remembered), refused by the replay guard (nothing
written, no unit spent or given back), our own earlier attempt, a conflict (retried, then
fail closed). The wire-level cancellation reasons are tests/quotas/test_folded_wire.py.

moto's writes are not atomic across threads (ARCHITECTURE, Known traps): concurrent
requests go through ``Serialised`` (a lock around each whole call); in AWS the atomicity
of one transaction comes from DynamoDB itself.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from moto import mock_aws

from quotas.fake_store import FakeQuotaStore
from quotas.test_quota_store import CLIENT, T0, TABLE, USAGE, Serialised
from tokenbroker.adapters.aws import client as aws_client
from tokenbroker.adapters.quotas import DynamoQuotaStore, counter_key
from tokenbroker.adapters.usage import usage_item
from tokenbroker.domain import quotas as domain_quotas
from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.errors import ProofReplayed, TemporarilyUnavailable
from tokenbroker.domain.models import Decision, UsageRecord
from tokenbroker.domain.quotas import (
    ALL_MODELS,
    FoldPolicy,
    LeaseAsk,
    QuotaContended,
    QuotaExceeded,
    QuotaLimits,
    ask,
)
from tokenbroker.local import load_template
from tokenbroker.services import quotas as services_quotas
from tokenbroker.services.quotas import MAX_ATTEMPTS, QuotaGate

DAY, MINUTE = T0 // 86_400, T0 // 60


@pytest.fixture
def ddb() -> Iterator[Any]:
    with mock_aws():
        client = aws_client("dynamodb")
        client.create_table(**load_template().create_table_kwargs("QuotasTable", TABLE))
        client.create_table(**load_template().create_table_kwargs("UsageTable", USAGE))
        yield client


def record(n: int | str, *, request_id: str = "req", at: float = T0) -> UsageRecord:
    return UsageRecord.build(
        at=at,
        retention_days=400,
        record_id=f"rk-{n}",
        decision=Decision.ALLOW,
        reason="ok",
        principal="alice",
        client_id=CLIENT,
        jkt="jkt-a",
        token_jti="tok-1",
        method="POST",
        route="/v1/models/{model}/invoke",
        request_id=f"{request_id}-{n}" if request_id else "",
    )


def _usage(ddb: Any, record_id: str) -> dict[str, Any] | None:
    item: dict[str, Any] | None = ddb.get_item(TableName=USAGE, Key={"id": {"S": record_id}}).get(
        "Item"
    )
    return item


def _counter(store: DynamoQuotaStore, counter_id: str) -> tuple[int, int]:
    state = store.counter(counter_id, DAY)
    return state.count(MINUTE), state.day_count


def _store(client: Any) -> DynamoQuotaStore:
    return DynamoQuotaStore(client, table=TABLE, usage_table=USAGE)


@pytest.mark.parametrize("transport", ["lean", "boto3"])
def test_the_record_and_the_lease_are_written_together(ddb: Any, transport: str) -> None:
    # lean: LeanTransactWriteItems on the botocore client; boto3: a wrapper keeps
    # client.transact_write_items (the same items, the same outcome)
    store = _store(ddb if transport == "lean" else Serialised(ddb))
    counter_id = store.counter_id(CLIENT, "alice", ALL_MODELS)
    granted, _ = store.lease_with_use(record(1), counter_id, DAY, ask(QuotaLimits(5), MINUTE, 3), 0)
    assert granted
    assert _usage(ddb, "rk-1") == usage_item(record(1))
    assert _counter(store, counter_id) == (3, 3)


@pytest.mark.parametrize("transport", ["lean", "boto3"])
def test_a_lease_the_counter_refuses_writes_no_record_and_reports_the_old_counter(
    ddb: Any, transport: str
) -> None:
    store = _store(ddb if transport == "lean" else Serialised(ddb))
    counter_id = store.counter_id(CLIENT, "alice", ALL_MODELS)
    assert store.lease(counter_id, DAY, ask(QuotaLimits(5), MINUTE, 5))[0]
    granted, old = store.lease_with_use(
        record(1), counter_id, DAY, ask(QuotaLimits(5), MINUTE, 1), 0
    )
    assert not granted
    assert (old.count(MINUTE), old.day_count) == (5, 5)  # from the cancellation reason
    assert _usage(ddb, "rk-1") is None  # no access without its record: none written
    assert _counter(store, counter_id) == (5, 5)


@pytest.mark.parametrize("transport", ["lean", "boto3"])
def test_a_replayed_record_id_is_proof_replayed_and_spends_no_lease(
    ddb: Any, transport: str
) -> None:
    store = _store(ddb if transport == "lean" else Serialised(ddb))
    counter_id = store.counter_id(CLIENT, "alice", ALL_MODELS)
    a = ask(QuotaLimits(5), MINUTE, 1)
    assert store.lease_with_use(record(1), counter_id, DAY, a, 0)[0]
    # the same proof (same record id) in another request: another request id
    with pytest.raises(ProofReplayed) as replayed:
        store.lease_with_use(record(1, request_id="other"), counter_id, DAY, a, 0)
    assert replayed.value.reason == "proof_replayed"
    assert _counter(store, counter_id) == (1, 1)  # the transaction was cancelled whole
    assert _usage(ddb, "rk-1") == usage_item(record(1))


def test_our_own_earlier_attempt_is_our_record_not_a_replay(ddb: Any) -> None:
    """An attempt whose answer was lost landed: the retry finds the very item it sends
    (moto keeps no idempotency tokens, DynamoDB would answer the retry as a success)."""
    store = _store(ddb)
    counter_id = store.counter_id(CLIENT, "alice", ALL_MODELS)
    a = ask(QuotaLimits(5), MINUTE, 1)
    assert store.lease_with_use(record(1), counter_id, DAY, a, 0)[0]
    assert store.lease_with_use(record(1), counter_id, DAY, a, 0)[0]
    assert _counter(store, counter_id) == (1, 1)  # counted once
    # without a request id the two cannot be told apart: a replay (fail closed)
    assert store.lease_with_use(record(2, request_id=""), counter_id, DAY, a, 0)[0]
    with pytest.raises(ProofReplayed):
        store.lease_with_use(record(2, request_id=""), counter_id, DAY, a, 0)


def test_a_store_without_a_usage_table_fails_closed(ddb: Any) -> None:
    store = DynamoQuotaStore(ddb, table=TABLE)
    with pytest.raises(TemporarilyUnavailable):
        store.lease_with_use(record(1), "use#x", DAY, ask(QuotaLimits(5), MINUTE, 1), 0)


# ---- the gate: admission -> claim -> record_claimed ---------------------------------


def _gate(store: Any, limits: QuotaLimits, fold: FoldPolicy = FoldPolicy.SINGLE) -> QuotaGate:
    store_rules = getattr(store, "rule_items", None)
    if store_rules is not None:
        store_rules[CLIENT] = {ALL_MODELS: limits}
    else:
        store.set_rule(CLIENT, ALL_MODELS, limits, at=T0)
    return QuotaGate(store, defaults=QuotaLimits(0, 0, 0), clock=FixedClock(T0), fold=fold)


def _request(g: QuotaGate, n: int | str, now: float = T0) -> str:
    """One request at the edge: admission, then the write (the claim's transaction, or
    the plain usage write, counted here as "put")."""
    try:
        admission = g.admission(CLIENT, "alice", "", now)
        if admission.claim is None:
            return "put"
        g.record_claimed(admission.claim, record(n, at=now), now)
    except QuotaExceeded as exc:
        return exc.reason
    return "transaction"


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # the first lease is of one; then 2, 4, 5 (the cap: 50 // 10) while spent fast
        (FoldPolicy.SINGLE, ["transaction", "put", "put", "put", "put", "put", "put", "put"]),
        (FoldPolicy.ALWAYS, ["transaction", "transaction", "put", "transaction", "put"]),
        (FoldPolicy.NEVER, ["put"] * 4),
    ],
)
def test_the_fold_policy_decides_which_leases_ride_in_the_usage_write(
    policy: FoldPolicy, expected: list[str]
) -> None:
    store = FakeQuotaStore()
    g = _gate(store, QuotaLimits(requests_per_minute=50), policy)
    outcomes = [_request(g, n) for n in range(len(expected))]
    assert outcomes == expected
    assert store.transactions == expected.count("transaction")
    # every request was counted: by its transaction, by a lease UpdateItem, or from a lease
    (state,) = store.counters.values()
    assert state.day_count >= len(expected)


def test_policy_folds() -> None:
    assert [FoldPolicy.SINGLE.folds(n) for n in (1, 2)] == [True, False]
    assert [FoldPolicy.ALWAYS.folds(n) for n in (1, 256)] == [True, True]
    assert not FoldPolicy.NEVER.folds(1)


@pytest.mark.parametrize("policy", [FoldPolicy.SINGLE, FoldPolicy.ALWAYS])
def test_64_concurrent_requests_in_one_environment_allow_exactly_50_with_50_records(
    ddb: Any, policy: FoldPolicy
) -> None:
    store = _store(Serialised(ddb))
    g = _gate(store, QuotaLimits(requests_per_minute=50), policy)
    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = Counter(pool.map(lambda n: _request(g, n), range(64)))
    denied = outcomes.pop("quota_exceeded:requests_per_minute")
    assert (sum(outcomes.values()), denied) == (50, 14)
    assert _counter(store, store.counter_id(CLIENT, "alice", ALL_MODELS)) == (50, 50)
    records = ddb.scan(TableName=USAGE, Select="COUNT")["Count"]
    assert records == outcomes["transaction"]  # each folded lease wrote its record


@pytest.mark.parametrize("policy", [FoldPolicy.SINGLE, FoldPolicy.ALWAYS])
def test_eight_environments_with_folded_leases_never_overshoot(
    ddb: Any, policy: FoldPolicy
) -> None:
    """The worst case of the new path: 8 environments, 200 concurrent requests against
    50/min, folded and separate leases mixed: allowed <= 50 exactly (overshoot 0), within
    the stated under-use bound (50 - (E - 1) * (cap - 1) = 22)."""
    store = _store(Serialised(ddb))
    gates = [_gate(store, QuotaLimits(requests_per_minute=50), policy) for _ in range(8)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = Counter(pool.map(lambda n: _request(gates[n % 8], n), range(200)))
    allowed = outcomes["transaction"] + outcomes["put"]
    assert 22 <= allowed <= 50
    assert _counter(store, store.counter_id(CLIENT, "alice", ALL_MODELS))[0] <= 50
    assert ddb.scan(TableName=USAGE, Select="COUNT")["Count"] == outcomes["transaction"]


def test_a_spent_window_found_by_the_transaction_is_remembered() -> None:
    store = FakeQuotaStore()
    other = _gate(store, QuotaLimits(requests_per_minute=2), FoldPolicy.NEVER)
    for _ in range(2):
        other.admit(CLIENT, "alice", "", T0)  # another environment spends the minute
    g = _gate(store, QuotaLimits(requests_per_minute=2))
    assert _request(g, 1) == "quota_exceeded:requests_per_minute"
    assert store.uses == {}  # the refused transaction wrote no record
    calls = store.calls
    with pytest.raises(QuotaExceeded) as again:
        g.admission(CLIENT, "alice", "", T0 + 1)
    assert store.calls == calls  # remembered: no AWS call per denied request
    assert again.value.retry_after == 60 - (T0 + 1) % 60


def test_a_refusal_with_units_left_re_plans_within_the_same_write() -> None:
    """Another environment's clock is a minute ahead: the item holds ``minute + 1``, so
    the ask for ``minute`` is refused; the re-planned ask (the later minute) is a second
    transaction with a token of its own, and the request is allowed with its record."""
    store = FakeQuotaStore()
    ahead = _gate(store, QuotaLimits(requests_per_minute=50), FoldPolicy.NEVER)
    ahead.admit(CLIENT, "alice", "", T0 + 60)
    g = _gate(store, QuotaLimits(requests_per_minute=50))
    assert _request(g, 1) == "transaction"
    assert store.transactions == 2
    assert set(store.uses) == {"rk-1"}
    (state,) = store.counters.values()
    assert state.count(MINUTE + 1) == 2


class Conflicting(FakeQuotaStore):
    """A store whose transactions meet another on the counter ``conflicts`` times."""

    def __init__(self, conflicts: int) -> None:
        super().__init__()
        self.conflicts = conflicts
        self.attempts: list[int] = []

    def lease_with_use(
        self, record: UsageRecord, counter_id: str, day: int, a: LeaseAsk, attempt: int
    ) -> tuple[bool, Any]:
        self.attempts.append(attempt)
        if self.conflicts:
            self.conflicts -= 1
            self.transactions += 1
            raise QuotaContended()
        return super().lease_with_use(record, counter_id, day, a, attempt)


def test_a_transaction_conflict_is_retried_then_fails_closed() -> None:
    store = Conflicting(conflicts=1)
    g = _gate(store, QuotaLimits(requests_per_minute=5))
    assert _request(g, 1) == "transaction"  # the second attempt passed
    assert store.attempts == [0, 1]  # each attempt its own idempotency token

    store = Conflicting(conflicts=MAX_ATTEMPTS)
    g = _gate(store, QuotaLimits(requests_per_minute=5))
    with pytest.raises(TemporarilyUnavailable) as failed:
        _request(g, 1)
    assert failed.value.reason == "quota_contention"
    assert store.uses == {}
    assert store.counters == {}


def test_a_replayed_folded_request_gives_no_unit_back() -> None:
    """A folded lease cancelled by the replay guard took no unit: nothing may be put back
    into the environment's lease (that would be an overshoot of one per replay)."""
    store = FakeQuotaStore()
    g = _gate(store, QuotaLimits(requests_per_minute=1))
    assert _request(g, 1) == "transaction"
    admission = g.admission(CLIENT, "alice", "", T0)
    assert admission.claim is not None  # the lease of one is spent: ask again (folded)
    with pytest.raises(ProofReplayed):
        g.record_claimed(admission.claim, record(1), T0)  # the same record id
    assert _request(g, 2) == "quota_exceeded:requests_per_minute"
    (state,) = store.counters.values()
    assert state.count(MINUTE) == 1


def test_two_claims_granted_concurrently_keep_both_leases_units() -> None:
    store = FakeQuotaStore()
    g = _gate(store, QuotaLimits(requests_per_minute=50), FoldPolicy.ALWAYS)
    assert _request(g, 0) == "transaction"  # lease of 1; the next ask is of 2
    first = g.admission(CLIENT, "alice", "", T0)
    second = g.admission(CLIENT, "alice", "", T0)  # no unit left yet: a claim too
    assert first.claim is not None
    assert second.claim is not None
    g.record_claimed(first.claim, record(1), T0)
    g.record_claimed(second.claim, record(2), T0)
    (state,) = store.counters.values()
    leased = state.count(MINUTE)
    # every leased unit is either one of the 3 requests or still usable here
    spent_locally = 0
    while g.admission(CLIENT, "alice", "", T0).claim is None:
        spent_locally += 1
    assert 3 + spent_locally == leased


def test_the_counter_item_key_is_the_lease_path_s(ddb: Any) -> None:
    """The transaction updates the same counter item as the separate lease (one window)."""
    store = _store(ddb)
    counter_id = store.counter_id(CLIENT, "alice", ALL_MODELS)
    a = ask(QuotaLimits(5), MINUTE, 2)
    store.lease_with_use(record(1), counter_id, DAY, a, 0)
    store.lease(counter_id, DAY, a)
    item = ddb.get_item(TableName=TABLE, Key=counter_key(counter_id, DAY))["Item"]
    assert item["d"] == {"N": "4"}


def test_a_split_window_folds_its_shard_and_moves_on_when_that_shard_is_spent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A window over 2 shards of 2 requests each: the environment's shard is folded; when
    it is spent, the transaction's refusal moves on to the other shard (a separate lease,
    then the plain usage write); exactly 4 allowed, never more."""
    monkeypatch.setattr(domain_quotas, "SHARD_REQUESTS_PER_MINUTE", 2)
    store = FakeQuotaStore()
    g = _gate(store, QuotaLimits(requests_per_minute=4))
    plain: list[str] = []
    outcomes = []
    for n in range(7):
        try:
            admission = g.admission(CLIENT, "alice", "", T0)
            if admission.claim is None:
                outcomes.append("lease")
                continue
            g.record_claimed(admission.claim, record(n), T0, lambda r: plain.append(r.record_id))
            outcomes.append("plain" if plain and plain[-1] == f"rk-{n}" else "transaction")
        except QuotaExceeded as exc:
            outcomes.append(exc.reason)
    assert outcomes.count("quota_exceeded:requests_per_minute") == 3
    assert "plain" in outcomes  # the spent shard's refusal moved on to the other one
    assert sum(state.count(MINUTE) for state in store.counters.values()) == 4
    assert len(store.uses) + len(plain) == 4  # every allowed request has its record


# ---- one claim in flight per counter and environment (issue 12: lost units) ------------


class _WaitSpy(threading.Condition):
    """The gate's condition, telling the test when a request starts waiting on it."""

    def __init__(self, lock: Any, progress: threading.Event) -> None:
        super().__init__(lock)
        self.waits = 0
        self._progress = progress

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        self._progress.set()
        return super().wait(timeout)


def _spied(g: QuotaGate, progress: threading.Event) -> _WaitSpy:
    spy = _WaitSpy(g._lock, progress)
    g._settled = spy
    return spy


def test_a_request_waits_for_the_claim_in_flight_and_spends_its_leftover_unit() -> None:
    """The cause of the flaky 49-of-50: two claims of one environment in flight at once
    (one's refusal cleared the lease the other's grant installed). Now a request that
    finds no unit while a claim is in flight waits for it, then spends its leftover."""
    store = FakeQuotaStore()
    g = _gate(store, QuotaLimits(requests_per_minute=50), FoldPolicy.ALWAYS)
    assert _request(g, 1) == "transaction"  # a lease of one; the next one is of two
    first = g.admission(CLIENT, "alice", "", T0).claim
    assert first is not None
    assert first.ask.size == 2
    progress = threading.Event()
    spy = _spied(g, progress)
    result: list[Any] = []

    def other() -> None:
        result.append(g.admission(CLIENT, "alice", "", T0))
        progress.set()

    worker = threading.Thread(target=other)
    worker.start()
    assert progress.wait(10)
    assert not result
    assert spy.waits == 1
    g.record_claimed(first, record(2), T0)
    worker.join(10)
    assert result == [domain_quotas.Admission(result[0].reference, None)]  # the leftover
    assert store.transactions == 2
    (state,) = store.counters.values()
    assert state.count(MINUTE) == 3  # 1 + 2 leased, 3 allowed: nothing lost


def test_a_claim_left_unexecuted_in_the_same_thread_blocks_nothing() -> None:
    """Lambda serves one request at a time: a claim its thread left unexecuted (its
    response failed to build) is stale, the next request claims at once."""
    store = FakeQuotaStore()
    g = _gate(store, QuotaLimits(requests_per_minute=50), FoldPolicy.ALWAYS)
    spy = _spied(g, threading.Event())
    assert g.admission(CLIENT, "alice", "", T0).claim is not None  # never recorded
    assert _request(g, 1) == "transaction"
    assert spy.waits == 0


def test_another_threads_unexecuted_claim_is_waited_for_only_until_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(services_quotas, "CLAIM_WAIT_SECONDS", 0.0)
    store = FakeQuotaStore()
    g = _gate(store, QuotaLimits(requests_per_minute=50), FoldPolicy.ALWAYS)
    spy = _spied(g, threading.Event())
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(g.admission, CLIENT, "alice", "", T0).result().claim is not None
    assert _request(g, 1) == "transaction"  # the stale claim's deadline passed: no wait
    assert spy.waits == 0
