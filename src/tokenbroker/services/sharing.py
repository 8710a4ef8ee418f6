"""Sharing detection on the ledger stream: one batch in, findings -> alerts -> containment.

Runs inside the aggregates function's batch (after the aggregates were counted), off
the request path. Per batch: fold the records into one delta per (rule, subject, window)
(:func:`tokenbroker.domain.sharing.fold`), write each once (the store returns the
window's union), evaluate, and for each finding write the alert and its ledger event
(once per alert id), publish it (EventBridge + SNS) and apply the client's containment.

The burst rule keeps its own per-principal hourly counts (adapters/alerts.py): one
UpdateItem per principal per batch that returns the principal's baseline hours, so it
reads nothing (it read the principal's aggregates shard partition for 25 hours, two
Queries per principal per batch: benchmarks/sharing_burst.py prints both). The counts
come from the aggregates pages this batch wrote *now*: a redelivered batch's pages are
skipped by the aggregates store, so it adds nothing twice (its principals are read with
a GetItem and evaluated again, so an undelivered finding is still delivered). Stated
bounds: a retry that carries later records too rewrites its pages and adds them again
(an over-count of at most that batch's records of the principal, BatchSize 2,500); a
failure after a page was written but before its counts were added loses those counts
(an under-count of at most one batch).

Idempotent on a retried batch: windows are set unions, alerts are keyed by a hash of
(rule, subject, window), and an alert written but not yet delivered (the publish or the
containment failed) is delivered by the retry. Any store or publish failure propagates:
the stream delivers the batch again (fail closed: a finding is never dropped).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from tokenbroker.domain.aggregates import Page, hour_start
from tokenbroker.domain.clock import Clock
from tokenbroker.domain.errors import MalformedRecord
from tokenbroker.domain.models import Decision, EventType, UsageRecord
from tokenbroker.domain.sharing import (
    DEVICE_RULES,
    Alert,
    Finding,
    Rule,
    Rules,
    WindowDelta,
    WindowKey,
    WindowState,
    alert_day,
    day_of_alert,
    evaluate_burst,
    evaluate_window,
    fold,
    principals,
)
from tokenbroker.domain.units import DAY_MS, HOUR_MS
from tokenbroker.services.admin import InvalidInput
from tokenbroker.services.aggregates import RecordDecoder
from tokenbroker.services.containment import ContainmentService

#: window state outlives its window by this long (then TTL removes it)
STATE_TTL_SECONDS = 86_400
#: alerts are kept this long
ALERT_TTL_SECONDS = 400 * 86_400
RECORD_PREFIX = "shr:"
#: windows remembered per execution environment (to skip writes that add nothing)
MAX_KNOWN_WINDOWS = 50_000


class SharingStore(Protocol):
    def add_window(self, delta: WindowDelta, *, expires_at: int) -> WindowState: ...

    def put_alert(self, alert: Alert, record: UsageRecord, *, expires_at: int) -> bool: ...

    def delivered(self, alert_id: str) -> bool: ...

    def mark_delivered(self, alert_id: str) -> None: ...

    def add_hours(
        self, principal: str, counts: Mapping[int, int], *, keep_from: int, expires_at: int
    ) -> dict[int, int]: ...

    def hours(self, principal: str, *, keep_from: int) -> dict[int, int]: ...


class Publisher(Protocol):
    def publish(self, alert: Alert) -> None: ...


@dataclass(frozen=True)
class SharingResult:
    windows: int  # window items written
    findings: int
    alerts_new: int
    alerts_redelivered: int


class SharingService:
    def __init__(
        self,
        *,
        store: SharingStore,
        publisher: Publisher,
        containment: ContainmentService,
        decode: RecordDecoder,
        rules: Rules,
        clock: Clock,
        retention_days: int = 400,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._containment = containment
        self._decode = decode
        self._rules = rules
        self._clock = clock
        self._retention_days = retention_days
        #: per execution environment: what each window is known to hold in the store
        self._known: dict[WindowKey, frozenset[str]] = {}

    def evaluate_batch(
        self,
        images: Sequence[Mapping[str, object]],
        *,
        new_pages: Sequence[Page] | None = None,
    ) -> SharingResult:
        """``new_pages``: the aggregates pages the batch wrote now (none skipped as
        already held), whose request counts feed the burst rule; None: no aggregates
        ran, so the burst rule counts the batch's own requests (a redelivery counts
        them again)."""
        records: list[UsageRecord] = []
        for image in images:
            try:
                records.append(self._decode(image))
            except MalformedRecord:
                continue  # the aggregates report it; one bad item must not stop a shard
        deltas = fold(records, self._rules)
        findings: list[Finding] = []
        written = 0
        learned: dict[WindowKey, frozenset[str]] = {}
        for delta in deltas:
            known = self._known.get(delta.key)
            if known is not None and delta.members <= known:
                # nothing new for this window: the store holds it already and it was
                # evaluated when it was written (a steady device costs no writes)
                continue
            expires = (delta.key.start_ms + delta.window_ms) // 1000 + STATE_TTL_SECONDS
            state = self._store.add_window(delta, expires_at=expires)
            written += 1
            learned[delta.key] = state.members
            finding = evaluate_window(state, self._rules)
            if finding is not None:
                findings.append(finding)
        findings.extend(self._bursts(records, new_pages))
        new = redelivered = 0
        for finding in findings:
            fresh, late = self._deliver(finding)
            new += fresh
            redelivered += late
        # remembered only once the batch's findings were delivered: a retry after a
        # failure must evaluate (and deliver) them again
        if len(self._known) + len(learned) > MAX_KNOWN_WINDOWS:
            self._known.clear()  # bounded memory; the next batches refill it
        self._known.update(learned)
        return SharingResult(written, len(findings), new, redelivered)

    def _bursts(
        self, records: Sequence[UsageRecord], new_pages: Sequence[Page] | None
    ) -> list[Finding]:
        if not self._rules.enabled(Rule.PRINCIPAL_BURST):
            return []
        hours = self._rules.get(Rule.PRINCIPAL_BURST).baseline_hours
        added = _hourly_requests(records, new_pages)
        out = []
        for principal, (client_id, at_ms) in principals(records).items():
            current = at_ms // HOUR_MS
            adds = added.pop(principal, {})
            current = max([current, *adds])
            counted = self._count(principal, adds, current - hours, hours)
            hourly = [(hour * HOUR_MS, n) for hour, n in sorted(counted.items())]
            finding = evaluate_burst(principal, client_id, current * HOUR_MS, hourly, self._rules)
            if finding is not None:
                out.append(finding)
        for principal, adds in sorted(added.items()):  # requests but no counted use here
            self._count(principal, adds, max(adds) - hours, hours)
        return out

    def _count(
        self, principal: str, adds: Mapping[int, int], keep_from: int, baseline_hours: int
    ) -> dict[int, int]:
        if not adds:  # a redelivered batch: counted before, evaluated again
            return self._store.hours(principal, keep_from=keep_from)
        # kept until its newest hour has left every later hour's baseline
        expires = (max(adds) + 1 + baseline_hours) * HOUR_MS // 1000
        return self._store.add_hours(principal, adds, keep_from=keep_from, expires_at=expires)

    def _deliver(self, finding: Finding) -> tuple[int, int]:
        """(1, 0) for a new alert, (0, 1) for one a failed try left undelivered."""
        now = self._clock()
        alert = Alert(
            alert_id=finding.alert_id,
            rule=finding.rule.value,
            principal=finding.principal,
            client_id=finding.client_id,
            jkt=finding.jkt,
            summary=finding.summary(),
            evidence=finding.evidence,
            at_ms=int(now * 1000),
            window_start_ms=finding.window_start_ms,
        )
        if finding.jkt and finding.rule in DEVICE_RULES:
            mode = self._containment.mode_of(finding.client_id)
            alert = replace(alert, containment=mode.value)
        record = UsageRecord.build(
            at=now,
            retention_days=self._retention_days,
            record_id=RECORD_PREFIX + finding.alert_id,
            principal=finding.principal,
            client_id=finding.client_id,
            jkt=finding.jkt,
            decision=Decision.ALLOW,
            reason=finding.rule.value,
            event=EventType.SHARING_DETECTED,
            resource=alert.alert_id,
            actor="tokenbroker:sharing",
        )
        written = self._store.put_alert(alert, record, expires_at=int(now) + ALERT_TTL_SECONDS)
        if not written and self._store.delivered(alert.alert_id):
            return 0, 0
        # containment first: the edge's liveness bound starts at the revocation
        if finding.jkt and finding.rule in DEVICE_RULES:
            self._containment.contain(
                alert_id=alert.alert_id, client_id=finding.client_id, jkt=finding.jkt
            )
        self._publisher.publish(alert)
        self._store.mark_delivered(alert.alert_id)
        return (1, 0) if written else (0, 1)


class AlertReader(Protocol):
    def list_alerts(self, days: list[str]) -> Iterator[Alert]: ...

    def get_alert(self, alert_id: str) -> Alert | None: ...

    def ack(self, alert_id: str, *, actor: str, at_ms: int) -> Alert: ...


#: the most days ``alerts list`` reads (one Query per day partition)
MAX_LIST_DAYS = 400
STATUSES = ("open", "acked", "all")


class AlertsService:
    """``tokenbroker alerts list|ack``: alerts by day partition, newest last."""

    def __init__(self, *, store: AlertReader, clock: Clock, actor: str = "") -> None:
        self._store = store
        self._clock = clock
        self._actor = actor

    def list(self, *, since_ms: int, status: str = "open") -> list[Alert]:
        if status not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}")
        now_ms = int(self._clock() * 1000)
        if since_ms > now_ms:
            raise InvalidInput("--since is in the future")
        first = since_ms - since_ms % DAY_MS
        days = [alert_day(d) for d in range(first, now_ms + 1, DAY_MS)][-MAX_LIST_DAYS:]
        alerts = [
            a
            for a in self._store.list_alerts(days)
            if a.at_ms >= since_ms and (status == "all" or a.status == status)
        ]
        return sorted(alerts, key=lambda a: (a.at_ms, a.alert_id))

    def ack(self, alert_id: str) -> Alert:
        """InvalidInput for a malformed id; NotFound if no such alert."""
        if not day_of_alert(alert_id):
            raise InvalidInput("an alert id looks like YYYYMMDD-<20 hex digits>")
        return self._store.ack(alert_id, actor=self._actor, at_ms=int(self._clock() * 1000))


def _hourly_requests(
    records: Sequence[UsageRecord], new_pages: Sequence[Page] | None
) -> dict[str, dict[int, int]]:
    """principal -> epoch hour -> requests this batch adds: from the aggregates pages
    written now (their ``requests``: every request record, as the aggregates count
    them), or from the records when no aggregates ran."""
    out: dict[str, dict[int, int]] = {}
    if new_pages is None:
        for r in records:
            if r.event is EventType.REQUEST:
                hours = out.setdefault(r.principal or r.client_id, {})
                hours[r.at_ms // HOUR_MS] = hours.get(r.at_ms // HOUR_MS, 0) + 1
        return out
    for page in new_pages:
        hour = hour_start(page.hour) // HOUR_MS
        for delta in page.deltas:
            if delta.requests:
                hours = out.setdefault(delta.principal, {})
                hours[hour] = hours.get(hour, 0) + delta.requests
    return out
