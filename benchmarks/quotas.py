"""Quotas at the edge (issue 12): AWS round trips and write units per allowed request with
quotas on, for each lease design (domain/quotas.py::FoldPolicy: ``never`` = every lease an
UpdateItem of its own; ``single`` = a lease of one rides in the usage write as ONE
TransactWriteItems; ``always`` = every lease rides in it, the default of the template's
QuotaLeaseFold), and the hottest quota counter's writes/s at a given total rate (Zipf
principals, as benchmarks/ledger_partitions.py loads the ledger).

    .venv/bin/python -m benchmarks.quotas [--rate 100000] [--seconds 10]
        [--environments 1000] [--principals 2000] [--zipf 1.1] [--seed 1]
        [--conflict-ms 10] [--json]

Write units: the usage item's size is measured (``ledger_cost.edge_records`` through
``to_item``, sized by DynamoDB's rules: ``ledger_cost.item_size``; the largest of the
sample decides) and so is the counter item's (read back from moto after the run); a
standard write costs 1 unit per KB, a transactional write 2 per item per KB (AWS: a
transaction performs two underlying writes of each item, prepare and commit). Priced at
on-demand $0.625 per million write units (us-east-1).

1. One environment: the real QuotaGate (each policy in turn) on the real DynamoQuotaStore
   and the real usage ledger against moto (in process), every ``before-send`` counted,
   for one hot principal served by one environment at ``--env-rate`` req/s (the clock
   steps 1/env-rate per request; nothing sleeps): the edge's admission, then its write
   (the plain usage PutItem, or the claim's TransactWriteItems), with the production
   wiring of the rules: the real DynamoLiveness with the RulesRider, its BatchGetItem
   once per 5 s (the liveness read the edge makes anyway; counted apart).
2. Hot partition: ``--rate`` req/s for ``--seconds`` simulated seconds (every request
   simulated), principals Zipf(``--zipf``) over ``--principals``, each request served by
   a uniformly random one of ``--environments`` execution environments (a Lambda
   concurrency of rate x latency: 1,000 = 10 ms at 100,000 req/s), each with its own
   QuotaGate, against an in-memory store with the adapter's condition
   (``domain.quotas.fits``). Lease writes (granted or refused) are counted per counter
   item per second; the hottest item-second is the figure against DynamoDB's 1,000
   writes/s per partition. Limits are high enough never to deny (the worst case for
   writes). Each environment keeps the edge's liveness view (one read per (client,
   device) per 5 s, a device per principal here) and its rules ride in that read, as in
   production: rules reads of their own (the gate's fallback) are counted, as are the
   liveness reads (not a quota cost: the edge makes them with quotas off too). Lease
   writes are split between principals every environment sees at least once per lease
   target (rate >= environments / 2 s: leases amortise) and the Zipf tail.
   The fleet runs once, with separate leases (``never``), and records each lease's size:
   the gate's decisions do not depend on the policy (a folded lease is planned, sized and
   granted on the same condition at the same moment; limits here never refuse), so each
   policy is priced from the same leases: a lease the policy folds costs no round trip of
   its own and turns its request's PutItem into a transaction. (tests/quotas/
   test_quotas_benchmark_smoke.py runs the fleet with each policy for real and checks
   the derivation.) Transaction conflicts cannot be simulated: the run counts folded
   writes that met another write of the same counter item within ``--conflict-ms`` (an
   assumption, not a measured latency), the writes DynamoDB could cancel as
   TransactionConflict (retried by the gate, then fail closed).
   Exit 1 if the hottest counter exceeds 1,000 writes/s.

Why the tail keeps a lease write per request (a strict design, by choice): a lease is
the only thing that lets an environment admit without asking the counter; it holds
units of the current minute and grows only while it is spent within the lease target
(2 s: that is what bounds the under-use near a limit), so a principal one environment
sees less than once per 2 s costs it a write per request. Admitting such requests unsynced (counted
later by the stream) would bring the fleet near 1 round trip but overshoots by up to
the number of environments x their unsynced allowance per window, and Lambda's
recycling of environments leaves that count unbounded within a window, so no bound
could be proved; the design stays exact (64 concurrent vs 50/min -> exactly 50). The
tail's lease write is instead folded into the usage write's round trip (``single``):
still exact, at 4 write units (a transaction of two items) instead of 2 (two writes).
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import random
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.liveness import MAX_AGE
from tokenbroker.domain.models import Decision, UsageRecord
from tokenbroker.domain.quotas import (
    ALL_MODELS,
    LEASE_TARGET_SECONDS,
    CounterState,
    FoldPolicy,
    LeaseAsk,
    QuotaLimits,
    apply,
    fits,
    parse_quota_reference,
)
from tokenbroker.services.quotas import QuotaGate

WRITE_UNIT_DOLLARS = 0.625 / 1e6
POLICIES = (FoldPolicy.NEVER, FoldPolicy.SINGLE, FoldPolicy.ALWAYS)

PARTITION_LIMIT = 1000
#: every environment starts cold (leases of 1, doubling): the first seconds are reported
#: apart (a real fleet does not cold-start 1,000 environments in the same second)
WARM_UP_SECONDS = 4
HIGH = QuotaLimits(requests_per_minute=10**9, requests_per_day=10**11)


class CountingStore:
    """In-memory counters with the adapter's condition, counting writes per item-second."""

    def __init__(self, conflict_window: float = 0.0) -> None:
        self.counters: dict[tuple[str, int], CounterState] = {}
        self.writes: Counter[tuple[str, int]] = Counter()
        self.second = 0
        self.now = 0.0
        self.rule_reads = 0
        #: lease size -> separate lease UpdateItems / folded transactions
        self.leases: Counter[int] = Counter()
        self.folded: Counter[int] = Counter()
        #: (this lease's size, the previous write's size on the same item) for writes
        #: within ``conflict_window`` of that previous write
        self.near: Counter[tuple[int, int]] = Counter()
        self._conflict_window = conflict_window
        self._last: dict[str, tuple[float, int]] = {}

    def _write(self, counter_id: str, size: int) -> None:
        self.writes[(counter_id, self.second)] += 1
        last = self._last.get(counter_id)
        if last is not None and self.now - last[0] < self._conflict_window:
            self.near[(size, last[1])] += 1
        self._last[counter_id] = (self.now, size)

    def counter_id(self, client_id: str, principal: str, model_key: str) -> str:
        return f"{client_id}/{principal}/{model_key}"

    def rules(self, client_id: str) -> dict[str, QuotaLimits]:
        self.rule_reads += 1
        return {ALL_MODELS: HIGH}

    def lease(self, counter_id: str, day: int, a: LeaseAsk) -> tuple[bool, CounterState]:
        self._write(counter_id, a.size)
        self.leases[a.size] += 1
        old = self.counters.get((counter_id, day), CounterState())
        if not fits(a, old):
            return False, old
        new = self.counters[(counter_id, day)] = apply(a, old)
        return True, new

    def lease_with_use(
        self, record: UsageRecord, counter_id: str, day: int, a: LeaseAsk, attempt: int
    ) -> tuple[bool, CounterState]:
        self.leases[a.size] -= 1  # counted as a lease by lease(), then as folded
        self.folded[a.size] += 1
        return self.lease(counter_id, day, a)

    def report_units(self, **_: Any) -> bool:
        return True

    def record_units(self, event: Any) -> bool:
        return True


def _zipf_cum(n: int, s: float) -> list[float]:
    weights = [1 / (k**s) for k in range(1, n + 1)]
    return list(itertools.accumulate(weights))


#: the record a simulated request writes (the in-memory store does not look at it)
_RECORD = UsageRecord.build(
    at=0,
    retention_days=1,
    record_id="r",
    decision=Decision.ALLOW,
    reason="ok",
    principal="p",
    client_id="c",
)


def hot_partition(
    *,
    rate: int,
    seconds: int,
    environments: int,
    principals: int,
    zipf: float,
    seed: int,
    policy: FoldPolicy = FoldPolicy.NEVER,
    conflict_ms: float = 10.0,
) -> dict[str, Any]:
    rng = random.Random(seed)
    cum = _zipf_cum(principals, zipf)
    total = cum[-1]
    store = CountingStore(conflict_window=conflict_ms / 1000)
    start = 1_800_000_000.0
    clock = FixedClock(start)
    gates = [
        QuotaGate(
            store,
            defaults=QuotaLimits(0, 0, 0),
            clock=clock,
            config_ttl=MAX_AGE,
            rng=random.Random(seed * 100_003 + e),
            fold=policy,
        )
        for e in range(environments)
    ]
    # each environment's liveness view: (principal's device) -> when it was read
    liveness: list[dict[int, float]] = [{} for _ in range(environments)]
    liveness_reads = 0
    rules = {ALL_MODELS: HIGH}
    per_principal: Counter[int] = Counter()
    for second in range(seconds):
        store.second = second
        for i in range(rate):
            now = clock.now = store.now = start + second + i / rate
            principal = bisect.bisect_left(cum, rng.random() * total)
            per_principal[principal] += 1
            e = rng.randrange(environments)
            read_at = liveness[e].get(principal)
            if read_at is None or now - read_at >= MAX_AGE:
                liveness_reads += 1  # the rules item rides in it (RulesRider)
                liveness[e][principal] = now
                gates[e].rules_read(f"c{principal}", rules)
            admission = gates[e].admission(f"c{principal}", f"p{principal}", "", now)
            if admission.claim is not None:
                gates[e].record_claimed(admission.claim, _RECORD, now)
    ((hottest, writes),) = store.writes.most_common(1)
    steady = [w for (_, sec), w in store.writes.items() if sec >= WARM_UP_SECONDS]
    requests = rate * seconds
    top_share = per_principal.most_common(1)[0][1] / requests
    # principals every environment sees at least once per lease target: leases amortise
    hot = {
        p for p, n in per_principal.items() if n / seconds >= environments / LEASE_TARGET_SECONDS
    }
    by_counter: Counter[str] = Counter()
    for (counter_id, _), w in store.writes.items():
        by_counter[counter_id.split("/")[0]] += w
    hot_writes = sum(by_counter[f"c{p}"] for p in hot)
    hot_requests = sum(per_principal[p] for p in hot)
    lease_writes = sum(store.writes.values())
    return {
        "rate": rate,
        "seconds": seconds,
        "environments": environments,
        "principals": principals,
        "zipf": zipf,
        "hottest_principal_share": round(top_share, 4),
        "hottest_principal_rate": round(top_share * rate),
        "hottest_counter_writes_per_second": writes,
        "hottest_counter_second": hottest[1],
        "hottest_counter_writes_per_second_after_warm_up": max(steady, default=0),
        "lease_writes_per_request": round(lease_writes / requests, 5),
        "rule_reads": store.rule_reads,
        "rule_reads_per_request": round(store.rule_reads / requests, 5),
        "liveness_reads_per_request": round(liveness_reads / requests, 5),
        "amortised_principals": len(hot),
        "amortised_request_share": round(hot_requests / requests, 4),
        "amortised_lease_writes_per_request": round(hot_writes / max(1, hot_requests), 5),
        "tail_lease_writes_per_request": round(
            (lease_writes - hot_writes) / max(1, requests - hot_requests), 5
        ),
        "partition_limit": PARTITION_LIMIT,
        "ok": max(steady, default=writes) <= PARTITION_LIMIT,
        "requests": requests,
        "policy": str(policy),
        "conflict_ms": conflict_ms,
        "lease_updates_by_size": dict(sorted((k, v) for k, v in store.leases.items() if v)),
        "folded_by_size": dict(sorted(store.folded.items())),
        "near_writes": {f"{a},{b}": n for (a, b), n in sorted(store.near.items())},
    }


def usage_write_units(sample: int = 2000, seed: int = 1) -> int:
    """Write units of the edge's usage item (the largest of a production-shaped sample,
    measured as benchmarks/ledger_cost.py measures it; 1 KB per unit)."""
    from benchmarks.ledger_cost import edge_records, item_size, units
    from tokenbroker.adapters.usage import usage_item

    return max(units(item_size(usage_item(r)), 1024) for r in edge_records(sample, seed))


def one_environment(
    *, requests: int, env_rate: float, policy: FoldPolicy, migrated: bool = True
) -> tuple[dict[str, Any], int]:
    """The real adapters on moto: sends per allowed request for one hot principal (the
    usage write and the leases, by operation), the rules riding in the real liveness
    BatchGetItem (counted apart); ``migrated``: ``quotas migrate`` ran (else the rules
    fallback Query of both formats is counted too). Also returns the counter item's
    write units."""
    from moto import mock_aws

    from benchmarks.ledger_cost import item_size, units
    from tokenbroker.adapters.aws import client as aws_client
    from tokenbroker.adapters.quotas import DynamoQuotaStore, RulesRider, counter_key
    from tokenbroker.adapters.usage import DynamoLiveness, DynamoUsageLedger
    from tokenbroker.domain.liveness import LivenessView
    from tokenbroker.local import load_template

    with mock_aws():
        ddb = aws_client("dynamodb", region="us-east-1")
        template = load_template()
        for logical_id in ("QuotasTable", "ClientsTable", "DevicesTable", "UsageTable"):
            ddb.create_table(**template.create_table_kwargs(logical_id, f"bench-{logical_id}"))
        store = DynamoQuotaStore(ddb, table="bench-QuotasTable", usage_table="bench-UsageTable")
        ledger = DynamoUsageLedger(ddb, usage_table="bench-UsageTable")
        store.set_rule("c", ALL_MODELS, QuotaLimits(10**9, 10**11, 0), at=0)
        if migrated:  # `quotas migrate` ran: the rules item alone rides in the liveness read
            store.mark_migrated(0)
        sent: Counter[str] = Counter()

        def count(event_name: str, **_: Any) -> None:
            sent[event_name.rsplit(".", 1)[-1]] += 1

        ddb.meta.events.register("before-send", count)
        start = 1_800_000_000.0
        clock = FixedClock(start)
        gate = QuotaGate(
            store, defaults=QuotaLimits(0, 0, 0), clock=clock, config_ttl=MAX_AGE, fold=policy
        )
        source = DynamoLiveness(
            ddb,
            clients_table="bench-ClientsTable",
            devices_table="bench-DevicesTable",
            riders=(RulesRider(table="bench-QuotasTable", deliver=gate.rules_read),),
        )
        view = LivenessView(source.fetch, clock=clock)
        for i in range(requests):
            now = clock.now = start + i / env_rate
            view.current("c", "device")  # as the authorizer, before the quotas
            admission = gate.admission("c", "p", "", now)
            record = UsageRecord.build(
                at=now,
                retention_days=400,
                record_id=f"rk-{i}",
                decision=Decision.ALLOW,
                reason="ok",
                principal="p",
                client_id="c",
                request_id=f"req-{i}",
            )
            if admission.claim is not None:
                gate.record_claimed(admission.claim, record, now)
            else:
                ledger.record_use(record)
        ddb.meta.events.unregister("before-send", count)
        day, counter_id = parse_quota_reference(admission.reference)  # the shard's item
        counter = ddb.get_item(TableName="bench-QuotasTable", Key=counter_key(counter_id, day))[
            "Item"
        ]
    liveness_sends = sent.pop("BatchGetItem", 0)
    return (
        {
            "policy": str(policy),
            "requests": requests,
            "env_rate": env_rate,
            "sends": dict(sent),
            "liveness_reads_with_rules_inside": liveness_sends,
        },
        units(item_size(counter), 1024),
    )


def price(
    *,
    requests: int,
    puts: int,
    updates: int,
    transactions: int,
    usage_wu: int,
    counter_wu: int,
) -> dict[str, float]:
    """Round trips, write units and dollars per allowed request (every allowed request
    has exactly one usage write: a PutItem or a transaction)."""
    assert puts + transactions == requests, (puts, transactions, requests)
    wu = puts * usage_wu + updates * counter_wu + transactions * 2 * (usage_wu + counter_wu)
    return {
        "round_trips_per_allowed_request": round((puts + updates + transactions) / requests, 5),
        "write_units_per_allowed_request": round(wu / requests, 5),
        "dollars_per_million_allowed_requests": round(wu / requests * 1e6 * WRITE_UNIT_DOLLARS, 4),
    }


def fleet_prices(
    hot: dict[str, Any], usage_wu: int, counter_wu: int
) -> dict[str, dict[str, float]]:
    """Each policy priced from one fleet run's leases (the module docstring says why the
    leases are the same under every policy)."""
    sizes: Counter[int] = Counter(hot["lease_updates_by_size"])
    sizes.update(hot["folded_by_size"])
    requests = hot["requests"]
    out = {}
    for policy in POLICIES:
        folded = sum(n for size, n in sizes.items() if policy.folds(size))
        separate = sum(sizes.values()) - folded
        conflicts = sum(
            n
            for pair, n in hot["near_writes"].items()
            if any(policy.folds(int(size)) for size in pair.split(","))
        )
        out[str(policy)] = {
            **price(
                requests=requests,
                puts=requests - folded,
                updates=separate,
                transactions=folded,
                usage_wu=usage_wu,
                counter_wu=counter_wu,
            ),
            "transactions_per_request": round(folded / requests, 5),
            "transactions_near_another_write_per_request": round(conflicts / requests, 5),
        }
    return out


def render(report: dict[str, Any]) -> str:
    hot, wu = report["hot_partition"], report["write_units"]
    lines = [
        "quotas at the edge",
        f"  write units: usage item {wu['usage_item']} (standard write), counter item "
        f"{wu['counter_item']}; a transaction costs 2 per item per KB; "
        f"${WRITE_UNIT_DOLLARS * 1e6:.3f} per million write units",
        f"  one environment, one hot principal at {report['env_rate']:g} req/s over "
        f"{report['requests']} requests (real gate, store and ledger on moto):",
    ]
    for policy in POLICIES:
        one = report["one_environment"][str(policy)]
        lines.append(
            f"    {policy!s:<6} {one['round_trips_per_allowed_request']:.5f} round trips, "
            f"{one['write_units_per_allowed_request']:.5f} WU, "
            f"${one['dollars_per_million_allowed_requests']:.4f}/M per allowed request "
            f"(sends {one['sends']}; {one['liveness_reads_with_rules_inside']} liveness "
            "reads carried the rules)"
        )
    lines += [
        f"  the fleet: {hot['rate']:,} req/s, {hot['environments']} environments, Zipf "
        f"{hot['zipf']} over {hot['principals']} principals, {hot['seconds']} s "
        f"(hottest principal {hot['hottest_principal_rate']:,} req/s):",
    ]
    for policy in POLICIES:
        fleet = report["fleet"][str(policy)]
        lines.append(
            f"    {policy!s:<6} {fleet['round_trips_per_allowed_request']:.5f} round trips, "
            f"{fleet['write_units_per_allowed_request']:.5f} WU, "
            f"${fleet['dollars_per_million_allowed_requests']:.4f}/M per allowed request; "
            f"{fleet['transactions_per_request']:.5f} transactions per request, "
            f"{fleet['transactions_near_another_write_per_request']:.5f} within "
            f"{hot['conflict_ms']:g} ms of another write of their counter"
        )
    lines += [
        f"    (QuotaLeaseFold's default is always; lease writes of their own under never: "
        f"{hot['lease_writes_per_request']} per request, "
        f"{hot['amortised_lease_writes_per_request']} for the "
        f"{hot['amortised_principals']} principals every environment sees at least "
        f"once per {LEASE_TARGET_SECONDS:g} s ({hot['amortised_request_share']:.1%} of "
        f"requests), {hot['tail_lease_writes_per_request']} in the Zipf tail; "
        f"{hot['rule_reads_per_request']} rules reads of their own per request)",
        f"  hottest quota counter: {hot['hottest_counter_writes_per_second_after_warm_up']} "
        f"writes/s after {WARM_UP_SECONDS} s of warm-up, "
        f"{hot['hottest_counter_writes_per_second']} at the cold start (second "
        f"{hot['hottest_counter_second']}; limit {hot['partition_limit']}; the same under "
        f"every policy: a folded lease writes the counter as the UpdateItem would) -> "
        f"{'ok' if hot['ok'] else 'OVER'}",
        f"    (not quota cost: the edge's liveness reads, one per (client, device) per "
        f"{MAX_AGE:g} s per environment, {hot['liveness_reads_per_request']} per request)",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--environments", type=int, default=1000)
    parser.add_argument("--principals", type=int, default=2000)
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--env-rate", type=float, default=100.0)
    parser.add_argument("--conflict-ms", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    usage_wu = usage_write_units()
    one: dict[str, Any] = {}
    counter_wu = 1
    for policy in POLICIES:
        run, counter_wu = one_environment(
            requests=args.requests, env_rate=args.env_rate, policy=policy
        )
        sent = run["sends"]
        run.update(
            price(
                requests=args.requests,
                puts=sent.get("PutItem", 0),
                updates=sent.get("UpdateItem", 0),
                transactions=sent.get("TransactWriteItems", 0),
                usage_wu=usage_wu,
                counter_wu=counter_wu,
            )
        )
        one[str(policy)] = run
    hot = hot_partition(
        rate=args.rate,
        seconds=args.seconds,
        environments=args.environments,
        principals=args.principals,
        zipf=args.zipf,
        seed=args.seed,
        conflict_ms=args.conflict_ms,
    )
    report = {
        "requests": args.requests,
        "env_rate": args.env_rate,
        "write_units": {"usage_item": usage_wu, "counter_item": counter_wu},
        "one_environment": one,
        "fleet": fleet_prices(hot, usage_wu, counter_wu),
        "hot_partition": hot,
    }
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0 if hot["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
