"""Tamper evidence for the usage ledger: signed, chained digests of closed periods, in
the spirit of CloudTrail digest files (format: :mod:`tokenbroker.domain.digest_format`).
(Longer than ~400 lines: sealing, resuming and fan-out share one state machine per
period; verification lives apart, in :mod:`tokenbroker.services.digest_verify`.)

Periods are ``[start, start + period)`` aligned to the epoch. A period is *due* once
``now >= end + grace`` (late writes land first); the scheduled function seals every due
period after the newest one ever sealed, in order, and the first seal of a deployment
also writes the signed genesis (where the chain starts).

**Never twice.** A period whose statement was ever written (any version, also one hidden
behind a delete marker) is never sealed again, and the next period chains to the oldest
stored version of the previous statement: deleting digests and waiting for the sealer
to re-seal a doctored table does not work (under Object Lock the versions survive).

**Bounded memory at any rate.** A period is sealed one reader *segment* at a time (today
one ``by_hour`` shard): the segment's records arrive in time order, are hashed line by
line and streamed into the segment manifest (multipart upload), so memory holds one page
of records and one upload part whatever the traffic. The periods of one hour are sealed
together (one read per segment for the hour), each segment manifest committed as the
stream passes its period's end. A sealing run that runs out of time (``keep_going``)
records which segments it finished (a *part*) and the next run resumes there; the
statement is written when every segment is sealed. Sizing: benchmarks/ledger_sealing.py.

Verification: :mod:`tokenbroker.services.digest_verify`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from tokenbroker.domain.clock import Clock
from tokenbroker.domain.digest_format import (
    VERSION,
    DigestFormatError,
    ManifestLine,
    Ref,
    SegmentSeal,
    canonical_json,
    decode_digest,
    decode_part,
    encode_digest,
    encode_index,
    encode_part,
    sha256_hex,
)
from tokenbroker.domain.errors import ConfigurationError
from tokenbroker.domain.ledger import ID_ATTRIBUTE, SORT_KEY, TTL_ATTRIBUTE, hour_of, record_hash
from tokenbroker.domain.ports import DigestDispatcher, DigestSigner, DigestStore, LedgerReader
from tokenbroker.domain.units import DAY_MS

if TYPE_CHECKING:
    from tokenbroker.services.digest_verify import DigestVerifier, PeriodReport
    from tokenbroker.services.tier_verify import HotRecords

#: one invocation's sealing work: a segment is started only if it should end within this
#: (judged by the slowest segment so far), and dispatched batches are sized to it
WORK_BUDGET_MS = 55_000
#: a period is sealed at most this many at a time (the function runs every 15 minutes)
MAX_PERIODS_PER_RUN = 48
#: with no digest in this window, sealing (re)starts at the period containing now - 1 day
HEAD_LOOKBACK_MS = 7 * DAY_MS
START_BACK_MS = DAY_MS

Outcome = Literal["sealed", "exists", "incomplete"]


# ----------------------------------------------------------------- pure pieces
def manifest_line(item: dict[str, Any]) -> ManifestLine:
    """The manifest line of one ledger record (plain values, as read from the index)."""
    ttl = item.get(TTL_ATTRIBUTE)
    return ManifestLine(
        at=int(item[SORT_KEY]),
        id=str(item[ID_ATTRIBUTE]),
        sha256=record_hash(item),
        ttl=int(ttl) if ttl is not None else None,
    )


def in_order(items: Iterable[dict[str, Any]]) -> Iterator[ManifestLine]:
    """Manifest lines in (at, id) order from records in ascending time (the reader's
    promise; records of one millisecond are sorted here). Memory: one millisecond's
    records. Raises ValueError if the reader breaks its promise."""
    run: list[ManifestLine] = []
    for item in items:
        line = manifest_line(item)
        if run and line.at != run[0].at:
            if line.at < run[0].at:
                raise ValueError("the ledger reader returned records out of time order")
            yield from sorted(run)
            run = []
        run.append(line)
    yield from sorted(run)


def group_by_hour(starts: Iterable[int]) -> Iterator[list[int]]:
    """Consecutive period starts grouped by the UTC hour they start in."""
    group: list[int] = []
    for start in starts:
        if group and hour_of(start) != hour_of(group[0]):
            yield group
            group = []
        group.append(start)
    if group:
        yield group


@dataclass(frozen=True)
class Genesis:
    chain_start: int
    sealed_at: int
    body: bytes


# --------------------------------------------------------------------- service
class DigestService:
    def __init__(
        self,
        *,
        store: DigestStore,
        ledger: LedgerReader,
        signer: DigestSigner,
        period_seconds: int = 3600,
        grace_seconds: int = 900,
        clock: Clock = time.time,
        max_periods_per_run: int = MAX_PERIODS_PER_RUN,
        #: how long past ``end + grace`` a missing digest still counts as "unsealed",
        #: and a seal as on time (the function runs every 15 minutes and may be retried)
        pending_seconds: int = 1800,
        #: the hot tier verify also checks sealed records in, for periods ending within
        #: ``hot_window_days`` of now (tokenbroker.services.tier_verify); None: archive only
        hot: HotRecords | None = None,
        hot_window_days: int = 0,
    ) -> None:
        if period_seconds <= 0 or 86_400 % period_seconds or period_seconds > 3600:
            raise ConfigurationError("DIGEST_PERIOD_SECONDS must divide an hour")
        if grace_seconds < 0:
            raise ConfigurationError("DIGEST_GRACE_SECONDS must not be negative")
        self.store = store
        self.ledger = ledger
        self.signer = signer
        self.period_ms = period_seconds * 1000
        self.grace_ms = grace_seconds * 1000
        self.clock = clock
        self._max_periods = max_periods_per_run
        self.pending_ms = pending_seconds * 1000
        self.hot = hot
        self.hot_window_ms = hot_window_days * DAY_MS

    # ---- time -----------------------------------------------------------------------
    def now(self, now_ms: int | None = None) -> int:
        return int(self.clock() * 1000) if now_ms is None else now_ms

    def period_of(self, at_ms: int) -> int:
        """The start of the period containing ``at_ms``."""
        return at_ms - at_ms % self.period_ms

    def is_due(self, period_start: int, now_ms: int) -> bool:
        return now_ms >= period_start + self.period_ms + self.grace_ms

    def last_due(self, now_ms: int) -> int:
        """The start of the newest period that may be sealed at ``now_ms``."""
        return self.period_of(now_ms - self.grace_ms) - self.period_ms

    # ---- the stored chain -------------------------------------------------------------
    def authentic(self, ref: Ref) -> bytes | None:
        """The oldest stored version of ``ref`` (the one the sealer wrote: it writes a
        statement once; later versions are someone else's), delete markers ignored."""
        real = [v for v in self.store.versions(ref) if not v.deleted]
        return None if not real else self.store.get(ref, real[-1].version_id)

    def ever_sealed(self, period_start: int) -> bool:
        return bool(self.store.versions(Ref("statement", period_start)))

    def genesis(self) -> Genesis | None:
        body = self.authentic(Ref("genesis"))
        if body is None:
            return None
        try:
            statement, _ = decode_digest(body)
        except DigestFormatError:
            return None
        start, sealed_at = statement.get("chain_start"), statement.get("sealed_at")
        if type(start) is not int or type(sealed_at) is not int:
            return None
        return Genesis(start, sealed_at, body)

    def _ensure_genesis(self, period_start: int, now: int) -> int:
        """The chain start, writing the genesis (signed) if this is the first seal."""
        existing = self.genesis()
        if existing is not None:
            return existing.chain_start
        statement = {
            "version": VERSION,
            "kind": "genesis",
            "chain_start": period_start,
            "sealed_at": now,
            "key_id": self.signer.key_id,
        }
        body = self._signed(statement)
        if self.store.put_new(Ref("genesis"), body):
            return period_start
        found = self.genesis()  # written concurrently (or hidden behind a delete marker)
        return period_start if found is None else found.chain_start

    def _signed(self, statement: dict[str, Any]) -> bytes:
        signature = self.signer.sign(canonical_json(statement))
        return encode_digest(statement, signature, self.signer.algorithm)

    # ---- sealing --------------------------------------------------------------------
    def seal_due(
        self,
        now_ms: int | None = None,
        *,
        keep_going: Callable[[], bool] | None = None,
        dispatcher: DigestDispatcher | None = None,
        budget_ms: int | None = None,
    ) -> list[int]:
        """Seal, oldest first, every due period after the newest one ever sealed (at
        most ``max_periods_per_run``; ``keep_going`` is asked before each segment, e.g.
        for the function's remaining time; a segment is not started if, as slow as the
        slowest so far, it would end after ``budget_ms``). When time runs out mid-hour,
        the segments left are handed to ``dispatcher`` (other invocations) in batches
        that fit WORK_BUDGET_MS; without one the next run goes on. Returns the starts
        of the periods sealed."""
        now = self.now(now_ms)
        last = self.last_due(now)
        head = self.store.latest_sealed(
            before_ms=last + self.period_ms, not_before_ms=now - HEAD_LOOKBACK_MS
        )
        if head is None:
            # a first run seals at most one run's worth back (a day at most)
            back = min(START_BACK_MS, self._max_periods * self.period_ms)
            start = self.period_of(now - back)
        else:
            start = head + self.period_ms
        due = list(range(start, last + 1, self.period_ms)[: self._max_periods])
        sealed: list[int] = []
        for group in group_by_hour(due):
            outcomes = self._seal_group(
                group, now, keep_going, dispatcher=dispatcher, budget_ms=budget_ms
            )
            sealed.extend(p for p, outcome in outcomes if outcome == "sealed")
            if any(outcome == "incomplete" for _, outcome in outcomes):
                break
        return sealed

    def seal_segments(
        self, periods: Sequence[int], segments: Sequence[str], *, now_ms: int | None = None
    ) -> list[int]:
        """A worker's share of a dispatched hour: seal these segments of these periods,
        record them, and seal the periods if every segment is now done (else the last
        worker, or the next scheduled run, does). Returns the periods sealed."""
        now = self.now(now_ms)
        if not periods or any(not self.is_due(p, now) for p in periods):
            raise ValueError("only due periods can be sealed")
        group = sorted(periods)
        if len({hour_of(p) for p in group}) != 1:
            raise ValueError("a worker seals periods of one hour")
        outcomes = self._seal_group(group, now, None, only=frozenset(segments))
        return [p for p, outcome in outcomes if outcome == "sealed"]

    def seal(self, period_start: int, *, now_ms: int | None = None) -> bool:
        """Seal one due period; False if it ever was (nothing is written then).

        Periods are chained to the previous period's statement as stored now: seal in
        order (``seal_due`` does), or a later seal of an earlier period breaks a link.
        """
        now = self.now(now_ms)
        if period_start % self.period_ms:
            raise ValueError("period_start is not the start of a period")
        if not self.is_due(period_start, now):
            raise ValueError("the period has not closed (end + grace) yet")
        return self._seal_group([period_start], now, None) == [(period_start, "sealed")]

    def _seal_group(
        self,
        group: list[int],
        now: int,
        keep_going: Callable[[], bool] | None,
        *,
        only: frozenset[str] | None = None,
        dispatcher: DigestDispatcher | None = None,
        budget_ms: int | None = None,
    ) -> list[tuple[int, Outcome]]:
        """Seal consecutive periods of one hour: each segment is read once for all.
        ``only``: seal just these segments (a worker), then finish if all are done."""
        todo = [p for p in group if not self.ever_sealed(p)]
        if not todo:
            return [(p, "exists") for p in group]
        chain_start = self._ensure_genesis(todo[0], now)
        state = {p: self._resume(p) for p in todo}
        first, end = todo[0], todo[-1] + self.period_ms
        segments = list(self.ledger.segments(first, end))
        fresh: list[str] = []
        spent_ms = slowest_ms = 0
        for n, segment in enumerate(segments):
            if all(segment in state[p][0] for p in todo):
                continue
            if only is not None and segment not in only:
                continue
            over = budget_ms is not None and fresh and spent_ms + slowest_ms > budget_ms
            if over or (keep_going is not None and not keep_going()):
                self._save(todo, state, now, fresh)
                if dispatcher is not None:
                    left = [x for x in segments[n:] if any(x not in state[p][0] for p in todo)]
                    self._dispatch(dispatcher, todo, left, slowest_ms)
                return [(p, "incomplete") for p in todo]
            started = self.clock()
            skip = frozenset(p for p in todo if segment in state[p][0])
            for period, seal in self._seal_segment(todo, segment, skip).items():
                done, seals = state[period]
                done.add(segment)
                seals[segment] = seal
            took = int((self.clock() - started) * 1000)
            spent_ms, slowest_ms = spent_ms + took, max(slowest_ms, took)
            fresh.append(segment)
        if only is not None:
            self._save(todo, state, now, fresh)
            state = {p: self._resume(p) for p in todo}  # what the other workers did
        if any(x not in state[p][0] for p in todo for x in segments):
            return [(p, "incomplete") for p in todo]
        outcomes: list[tuple[int, Outcome]] = []
        for period in todo:
            written = self._finish(period, state[period][1].values(), chain_start, now)
            outcomes.append((period, "sealed" if written else "exists"))
        return outcomes

    def _save(
        self,
        periods: list[int],
        state: dict[int, tuple[set[str], dict[str, SegmentSeal]]],
        now: int,
        fresh: list[str],
    ) -> None:
        """Record the segments sealed so far (a part per period), if any are new."""
        if not fresh:
            return
        for p in periods:
            done, seals = state[p]
            name = f"{now}-{fresh[0]}-{len(fresh)}"
            self.store.put(Ref("part", p, name), encode_part(p, done, seals.values()))

    def _dispatch(
        self, dispatcher: DigestDispatcher, periods: list[int], left: list[str], per_ms: int
    ) -> None:
        batch = max(1, WORK_BUDGET_MS // per_ms) if per_ms else len(left)
        for i in range(0, len(left), batch):
            dispatcher.dispatch(periods, left[i : i + batch])

    def _resume(self, period: int) -> tuple[set[str], dict[str, SegmentSeal]]:
        done: set[str] = set()
        seals: dict[str, SegmentSeal] = {}
        for body in self.store.parts(period):
            try:
                names, found = decode_part(body)
            except DigestFormatError:
                continue  # not ours: those segments are sealed again
            done |= names
            seals.update((s.segment, s) for s in found)
        return done, seals

    def _seal_segment(
        self, periods: list[int], segment: str, skip: frozenset[int]
    ) -> dict[int, SegmentSeal]:
        """Stream one segment of ``periods`` (consecutive) into one manifest per period
        (only non-empty ones are stored; ``skip``: periods that have it already); at
        most one upload is open at a time."""
        seals = {p: SegmentSeal(segment, 0, sha256_hex(b"")) for p in periods if p not in skip}
        known = set(periods)
        records = self.ledger.segment_records(segment, periods[0], periods[-1] + self.period_ms)
        upload: Any = None
        current, count, digest = -1, 0, hashlib.sha256()
        try:
            for line in in_order(records):
                period = self.period_of(line.at)
                if period != current:
                    if upload is not None:
                        upload.commit()
                        seals[current] = SegmentSeal(segment, count, digest.hexdigest())
                        upload = None
                    if period not in known:
                        raise ValueError("the ledger reader returned a record out of range")
                    if period not in skip:
                        upload = self.store.upload(Ref("segment", period, segment))
                    current, count, digest = period, 0, hashlib.sha256()
                if upload is None:
                    continue
                data = line.encode()
                upload.write(data)
                digest.update(data)
                count += 1
            if upload is not None:
                upload.commit()
                seals[current] = SegmentSeal(segment, count, digest.hexdigest())
                upload = None
        finally:
            if upload is not None:
                upload.abort()
        return seals

    def _finish(self, start: int, seals: Iterable[SegmentSeal], chain_start: int, now: int) -> bool:
        ordered = sorted((s for s in seals if s.record_count), key=lambda s: s.segment)
        index = encode_index(ordered)
        self.store.put(Ref("index", start), index)
        previous = self.authentic(Ref("statement", start - self.period_ms))
        statement = {
            "version": VERSION,
            "period_start": start,
            "period_end": start + self.period_ms,
            "record_count": sum(s.record_count for s in ordered),
            "segments": len(ordered),
            "manifest_sha256": sha256_hex(index),
            "previous_digest_sha256": None if previous is None else sha256_hex(previous),
            "chain_start": chain_start,
            "sealed_at": now,
            "key_id": self.signer.key_id,
        }
        return self.store.put_new(Ref("statement", start), self._signed(statement))

    # ---- verification (tokenbroker.services.digest_verify) ----------------------------
    def verifier(self, trusted: DigestSigner | None = None) -> DigestVerifier:
        """A verifier trusting ``trusted`` (default: this service's own key)."""
        from tokenbroker.services.digest_verify import DigestVerifier

        return DigestVerifier(self, trusted or self.signer)

    def verify(
        self,
        since_ms: int,
        until_ms: int,
        *,
        now_ms: int | None = None,
        trusted: DigestSigner | None = None,
    ) -> list[PeriodReport]:
        """One report per period overlapping [since_ms, until_ms), oldest first."""
        return list(self.iter_verify(since_ms, until_ms, now_ms=now_ms, trusted=trusted))

    def iter_verify(
        self,
        since_ms: int,
        until_ms: int,
        *,
        now_ms: int | None = None,
        trusted: DigestSigner | None = None,
    ) -> Iterator[PeriodReport]:
        """:meth:`verify`, one period at a time (records are read an hour at a time)."""
        return self.verifier(trusted).periods(since_ms, until_ms, self.now(now_ms))
