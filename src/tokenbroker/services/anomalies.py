"""The anomaly rules: which principals' credentials look shared or stolen.

Pure rules over per-principal aggregates (:class:`~tokenbroker.domain.aggregates.
PrincipalSummary`): thresholds on a window's totals (devices, source IPs, replayed
proofs, revoked devices used), denial bursts within one hour, and requests above the
principal's own daily baseline. :func:`find_anomalies` runs them against an
:class:`~tokenbroker.domain.ports.AggregateSource`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tokenbroker.domain.aggregates import PrincipalSummary, merge
from tokenbroker.domain.ports import AggregateSource
from tokenbroker.domain.units import DAY_MS


def find_anomalies(
    source: AggregateSource,
    since_ms: int,
    until_ms: int,
    thresholds: Thresholds | None = None,
    principal: str = "",
) -> list[Anomaly]:
    """Findings in the range (widened to whole hours), sorted by principal: reads one
    summary scan (one Query with ``principal``), then per active principal at most two
    queries (its hours when it has enough denials for a burst, its history)."""
    t = thresholds or Thresholds()
    day = since_ms - since_ms % DAY_MS
    found: list[Anomaly] = []
    for total in source.summaries(since_ms, until_ms, principal or None):
        found.extend(threshold_findings(total, t))
        if _denials(total) >= t.max_denials:
            hours = source.hourly(total.principal, since_ms, until_ms)
            if burst := burst_finding(total.principal, hours, t):
                found.append(burst)
        history = source.hourly(total.principal, day - t.baseline_days * DAY_MS, day)
        median = daily_median(history)
        if above := baseline_finding(total, median, t, window_ms=until_ms - since_ms):
            found.append(above)
    return found


@dataclass(frozen=True)
class Thresholds:
    max_devices: int = 3
    max_ips: int = 5
    #: denials (requests and token requests) of one principal within one hour
    max_denials: int = 20
    baseline_factor: float = 5.0
    baseline_days: int = 7


@dataclass(frozen=True)
class Anomaly:
    kind: str
    principal: str
    #: the counts behind the finding, and the threshold it crossed
    evidence: dict[str, Any]
    first_seen_ms: int | None
    last_seen_ms: int | None


MANY_DEVICES = "many_devices"
MANY_SOURCE_IPS = "many_source_ips"
PROOF_REPLAYED = "proof_replayed"
DENIAL_BURST = "denial_burst"
REVOKED_DEVICE_USED = "revoked_device_used"
ABOVE_BASELINE = "above_baseline"
#: addresses named in a many_source_ips finding (the count is always complete)
IP_SAMPLE = 10


def threshold_findings(total: PrincipalSummary, t: Thresholds) -> Iterator[Anomaly]:
    """Findings from a principal's totals over the window."""
    if total.distinct_devices > t.max_devices:
        yield _finding(
            MANY_DEVICES,
            total,
            devices=total.distinct_devices,
            threshold=t.max_devices,
            device_ids=sorted(total.devices),
        )
    if total.distinct_source_ips > t.max_ips:
        yield _finding(
            MANY_SOURCE_IPS,
            total,
            source_ips=total.distinct_source_ips,
            at_least=total.source_ips_overflow,
            threshold=t.max_ips,
            sample=sorted(total.source_ips)[:IP_SAMPLE],
        )
    if replays := total.denials.get("proof_replayed", 0):
        yield _finding(PROOF_REPLAYED, total, replays=replays)
    if revoked := total.denials.get("device_revoked", 0):
        yield _finding(REVOKED_DEVICE_USED, total, attempts=revoked)


def _denials(bucket: PrincipalSummary) -> int:
    return bucket.denied + bucket.tokens_denied


def burst_finding(
    principal: str, hours: Sequence[PrincipalSummary], t: Thresholds
) -> Anomaly | None:
    """Hours in which the principal was denied at least ``max_denials`` times."""
    bursts = [h for h in hours if _denials(h) >= t.max_denials]
    if not bursts:
        return None
    worst = max(bursts, key=lambda h: (_denials(h), h.since_ms))
    span = merge(principal, bursts[0].since_ms, bursts[-1].until_ms, bursts)
    return _finding(
        DENIAL_BURST,
        span,
        burst_hours=len(bursts),
        max_denials_in_an_hour=_denials(worst),
        worst_hour_start_ms=worst.since_ms,
        denials=_denials(span),
        threshold=t.max_denials,
    )


def daily_median(hours: Iterable[PrincipalSummary]) -> float | None:
    """Median of the daily requests on the UTC days with any (None: no history)."""
    per_day: dict[int, int] = {}
    for h in hours:
        day = h.since_ms - h.since_ms % DAY_MS
        per_day[day] = per_day.get(day, 0) + h.requests
    counts = sorted(n for n in per_day.values() if n)
    if not counts:
        return None
    mid = len(counts) // 2
    return float(counts[mid]) if len(counts) % 2 else (counts[mid - 1] + counts[mid]) / 2


def baseline_finding(
    total: PrincipalSummary, median: float | None, t: Thresholds, *, window_ms: int
) -> Anomaly | None:
    """Requests in the window above ``baseline_factor`` times the daily median (scaled
    to the window's length in days when it is longer than one day)."""
    if median is None:
        return None
    limit = t.baseline_factor * median * max(1.0, window_ms / DAY_MS)
    if total.requests <= limit:
        return None
    return _finding(
        ABOVE_BASELINE,
        total,
        requests=total.requests,
        baseline_daily_median=median,
        factor=t.baseline_factor,
        limit=limit,
    )


def _finding(kind: str, total: PrincipalSummary, **evidence: Any) -> Anomaly:
    return Anomaly(kind, total.principal, evidence, total.first_seen_ms, total.last_seen_ms)
