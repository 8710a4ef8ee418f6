"""An in-memory QuotaStore: the conditions of adapters/quotas.py, evaluated with the
domain's own ``fits``/``apply`` (tests/quotas/test_quota_store.py runs the same scenario
on both, so the fake cannot drift from the DynamoDB adapter)."""

from __future__ import annotations

import json
import threading

from tokenbroker.domain.errors import ProofReplayed
from tokenbroker.domain.models import UsageRecord
from tokenbroker.domain.quotas import CounterState, LeaseAsk, QuotaLimits, apply, fits


class FakeQuotaStore:
    def __init__(self) -> None:
        self.counters: dict[tuple[str, int], CounterState] = {}
        self.rule_items: dict[str, dict[str, QuotaLimits]] = {}
        self.reports: dict[str, int] = {}
        self.events: dict[str, UsageRecord] = {}
        #: usage records written with a folded lease (``lease_with_use``)
        self.uses: dict[str, UsageRecord] = {}
        self.transactions = 0
        self.calls = 0
        self.fail: Exception | None = None
        self._lock = threading.Lock()

    def counter_id(self, client_id: str, principal: str, model_key: str) -> str:
        return "use#" + json.dumps([client_id, principal, model_key])

    def rules(self, client_id: str) -> dict[str, QuotaLimits]:
        self._call()
        return dict(self.rule_items.get(client_id, {}))

    def lease(self, counter_id: str, day: int, a: LeaseAsk) -> tuple[bool, CounterState]:
        with self._lock:
            self._call()
            old = self.counters.get((counter_id, day), CounterState())
            if not fits(a, old):
                return False, old
            new = self.counters[(counter_id, day)] = apply(a, old)
            return True, new

    def lease_with_use(
        self, record: UsageRecord, counter_id: str, day: int, a: LeaseAsk, attempt: int
    ) -> tuple[bool, CounterState]:
        """The adapter's transaction: the record (new id only) and the lease, or
        neither."""
        with self._lock:
            self._call()
            self.transactions += 1
            if record.record_id in self.uses:
                raise ProofReplayed("the DPoP proof has already been used")
            old = self.counters.get((counter_id, day), CounterState())
            if not fits(a, old):
                return False, old
            self.uses[record.record_id] = record
            new = self.counters[(counter_id, day)] = apply(a, old)
            return True, new

    def report_units(
        self,
        *,
        usage_id: str,
        counter_id: str,
        day: int,
        model: str,
        units: int,
        at: int,
        event: UsageRecord | None = None,
    ) -> bool:
        with self._lock:
            self._call()
            if usage_id in self.reports or (event is not None and event.record_id in self.events):
                return False
            self.reports[usage_id] = units
            if event is not None:
                self.events[event.record_id] = event
            old = self.counters.get((counter_id, day), CounterState())
            self.counters[(counter_id, day)] = CounterState(
                minutes=old.minutes, day_count=old.day_count, units=old.units + units
            )
            return True

    def record_units(self, event: UsageRecord) -> bool:
        with self._lock:
            self._call()
            if event.record_id in self.events:
                return False
            self.events[event.record_id] = event
            return True

    def _call(self) -> None:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
