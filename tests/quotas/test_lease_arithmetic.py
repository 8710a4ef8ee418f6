"""The lease arithmetic of domain/quotas.py and the gate of services/quotas.py on the
in-memory store: the stated bounds (no overshoot; under-use <= (E - 1) * (n - 1) per
window), checked on seeded random schedules of several execution environments."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from quotas.fake_store import FakeQuotaStore
from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.domain.quotas import (
    ALL_MODELS,
    LEASE_TARGET_SECONDS,
    MAX_LEASE,
    CounterState,
    QuotaExceeded,
    QuotaLimits,
    apply,
    ask,
    effective_quota,
    fits,
    lease_cap,
    plan_after_refusal,
)
from tokenbroker.services.quotas import QuotaGate

T0 = 1_800_000_000 - 1_800_000_000 % 86_400  # midnight UTC
CLIENT, PRINCIPAL = "tbc_client", "tbc_client"


def gate(store: FakeQuotaStore, clock: FixedClock, limits: QuotaLimits) -> QuotaGate:
    store.rule_items[CLIENT] = {ALL_MODELS: limits}
    return QuotaGate(store, defaults=QuotaLimits(0, 0, 0), clock=clock)


def admit(g: QuotaGate, now: float) -> str:
    try:
        g.admit(CLIENT, PRINCIPAL, "", now)
    except QuotaExceeded as exc:
        return exc.reason
    return "allowed"


def test_64_requests_against_50_per_minute_allow_exactly_50_and_deny_14() -> None:
    store, clock = FakeQuotaStore(), FixedClock(T0 + 5)
    g = gate(store, clock, QuotaLimits(requests_per_minute=50))
    outcomes = Counter(admit(g, clock()) for _ in range(64))
    assert outcomes == {"allowed": 50, "quota_exceeded:requests_per_minute": 14}
    # leases of 1, 2, 4, then the cap (50 // 10 = 5): far fewer writes than requests, and
    # the 14 denials cost none (the spent minute is remembered)
    assert store.counters[(store.counter_id(CLIENT, PRINCIPAL, "*"), T0 // 86_400)] == (
        CounterState(minutes={(T0 + 5) // 60: 50}, day_count=50, units=0)
    )
    # one rules read; leases 1+2+4+5*8 = 47 (11 writes); a lease of 5 refused and the
    # 3 left granted (2); the 51st request's ask refused (1): the window is spent
    assert store.calls == 1 + 11 + 2 + 1
    with pytest.raises(QuotaExceeded) as denied:
        g.admit(CLIENT, PRINCIPAL, "", clock())
    assert denied.value.retry_after == 55  # to the next minute
    assert store.calls == 15


def test_the_next_minute_opens_a_new_window_and_the_day_keeps_counting() -> None:
    store, clock = FakeQuotaStore(), FixedClock(T0 + 59)
    g = gate(store, clock, QuotaLimits(requests_per_minute=3, requests_per_day=5))
    assert [admit(g, clock()) for _ in range(4)][-1] == "quota_exceeded:requests_per_minute"
    clock.advance(1)
    results = [admit(g, clock()) for _ in range(3)]
    assert results == ["allowed", "allowed", "quota_exceeded:requests_per_day"]
    with pytest.raises(QuotaExceeded) as denied:
        g.admit(CLIENT, PRINCIPAL, "", clock())
    assert denied.value.retry_after == 86_400 - 60


def test_units_spent_deny_the_next_lease_with_the_units_reason() -> None:
    store, clock = FakeQuotaStore(), FixedClock(T0)
    g = gate(store, clock, QuotaLimits(units_per_day=100))
    reference = g.admit(CLIENT, PRINCIPAL, "", clock())
    day, counter = reference.split("/", 1)
    store.report_units(usage_id="u1", counter_id=counter, day=int(day), model="", units=100, at=0)
    clock.advance(2)  # the lease (size 1) is spent: the next request asks the store
    with pytest.raises(QuotaExceeded) as denied:
        g.admit(CLIENT, PRINCIPAL, "", clock())
    assert denied.value.reason == "quota_exceeded:units_per_day"
    assert denied.value.retry_after == 86_400 - 2


def test_a_store_failure_is_temporarily_unavailable_never_an_allow() -> None:
    store, clock = FakeQuotaStore(), FixedClock(T0)
    g = gate(store, clock, QuotaLimits(requests_per_minute=10))
    store.fail = TemporarilyUnavailable("dynamodb:UpdateItem failed (ThrottlingException)")
    with pytest.raises(TemporarilyUnavailable):
        g.admit(CLIENT, PRINCIPAL, "", clock())


def test_no_limit_means_no_counter_and_no_write() -> None:
    store, clock = FakeQuotaStore(), FixedClock(T0)
    g = QuotaGate(store, defaults=QuotaLimits(0, 0, 0), clock=clock)
    assert g.admit(CLIENT, PRINCIPAL, "m", clock()) == ""
    assert g.admit(CLIENT, PRINCIPAL, "m", clock()) == ""
    assert store.calls == 1  # one rules read per TTL
    assert store.counters == {}


def test_rules_resolve_model_then_client_then_defaults() -> None:
    defaults = QuotaLimits(100, 1000, 0)
    rules = {ALL_MODELS: QuotaLimits(requests_per_minute=10), "big": QuotaLimits(units_per_day=5)}
    assert effective_quota(rules, defaults, "small") == effective_quota(rules, defaults, "")
    assert effective_quota(rules, defaults, "small").limits == QuotaLimits(10, 1000, 0)
    big = effective_quota(rules, defaults, "big")
    assert (big.model_key, big.limits) == ("big", QuotaLimits(10, 1000, 5))


def test_a_minute_ahead_of_ours_is_counted_never_reset() -> None:
    """Another environment's clock is a second ahead, in the next minute: our refused
    ask is re-planned into THAT minute, so no window is ever counted from zero twice."""
    limits = QuotaLimits(requests_per_minute=10)
    old = CounterState(minutes={100: 3, 101: 9}, day_count=30)
    assert not fits(ask(limits, 100, 1), old)  # the item holds minute 101
    plan = plan_after_refusal(limits, 100, 4, old, now=100 * 60 + 59)
    assert (plan.minute, plan.size) == (101, 1)
    assert fits(plan, old)
    assert apply(plan, old) == CounterState(minutes={100: 3, 101: 10}, day_count=31)
    # a lease two minutes on drops the minute before last (the item stays small)
    later = apply(ask(limits, 102, 1), apply(plan, old))
    assert later.minutes == {101: 10, 102: 1}
    # ... and a clock still in minute 100 can no longer count it from zero
    assert not fits(ask(limits, 100, 1), later)


def test_the_lease_cap_bounds_under_use_by_a_tenth_of_the_limit() -> None:
    assert lease_cap(QuotaLimits(50, 0, 0)) == 5
    assert lease_cap(QuotaLimits(5, 0, 0)) == 1
    assert lease_cap(QuotaLimits(0, 10**9, 0)) == MAX_LEASE


@pytest.mark.parametrize("seed", range(60))
def test_random_schedules_of_several_environments_never_overshoot(seed: int) -> None:
    """Property: for any interleaving of E environments, allowed per minute <= rpm, and
    a minute with a denial allowed >= rpm - (E - 1) * (cap - 1) (the stated under-use)."""
    rng = random.Random(seed)
    rpm = rng.randint(1, 120)
    environments = rng.randint(1, 6)
    store, now = FakeQuotaStore(), float(T0 + rng.randint(0, 3000))
    clock = FixedClock(now)
    gates = [gate(store, clock, QuotaLimits(requests_per_minute=rpm)) for _ in range(environments)]
    allowed: Counter[int] = Counter()
    denied: Counter[int] = Counter()
    for _ in range(rng.randint(50, 600)):
        now += rng.choice((0.0, 0.0, 0.01, 0.1, 0.5, 3.0))
        minute = int(now // 60)
        if admit(rng.choice(gates), now) == "allowed":
            allowed[minute] += 1
        else:
            denied[minute] += 1
    cap = lease_cap(QuotaLimits(requests_per_minute=rpm))
    for minute in set(allowed) | set(denied):
        assert allowed[minute] <= rpm
        if denied[minute]:
            assert allowed[minute] >= rpm - (environments - 1) * (cap - 1)
    if environments == 1:
        assert all(allowed[m] == rpm for m in denied)  # one environment under-uses nothing


@pytest.mark.parametrize("seed", range(20))
def test_random_schedules_never_overshoot_the_day(seed: int) -> None:
    rng = random.Random(1000 + seed)
    rpd = rng.randint(1, 300)
    environments = rng.randint(1, 5)
    store, now = FakeQuotaStore(), float(T0 + 86_400 - rng.randint(1, 400))
    clock = FixedClock(now)
    gates = [gate(store, clock, QuotaLimits(requests_per_day=rpd)) for _ in range(environments)]
    allowed: Counter[int] = Counter()
    for _ in range(rng.randint(100, 800)):
        now += rng.choice((0.0, 0.05, 1.0, 5.0))
        if admit(rng.choice(gates), now) == "allowed":
            allowed[int(now // 86_400)] += 1
    assert all(count <= rpd for count in allowed.values())


@pytest.mark.parametrize("rate", [0.5, 3.0, 40.0, 1000.0])
def test_an_environment_writes_a_counter_about_once_per_lease_target_whatever_its_rate(
    rate: float,
) -> None:
    """The adaptive size: at a steady r req/s, after warm-up, one environment writes a
    counter at most 60 / T times a minute (T = LEASE_TARGET_SECONDS), or r * 60 / 256
    when the lease is at its cap, plus one lease per minute start (the store's count also
    holds the rules reads, one per 30 s)."""
    store, clock = FakeQuotaStore(), FixedClock(T0)
    g = gate(store, clock, QuotaLimits(requests_per_minute=10**9))
    writes_at = 0
    for i in range(int(rate * 120)):
        now = T0 + i / rate
        if now >= T0 + 60 and not writes_at:
            writes_at = store.calls
        assert g.admit(CLIENT, PRINCIPAL, "", now)
    writes = store.calls - writes_at - 2  # during the second minute, less 2 rules reads
    assert writes <= max(60 / LEASE_TARGET_SECONDS, rate * 60 / MAX_LEASE) + 2
    assert writes <= rate * 60
