"""Verifying the ledger's digests: every period of a range, each problem with its own
status (see :class:`PeriodReport`), in bounded memory. (Longer than ~400 lines because
every status is one small check over the same streamed period; split apart, each check
would need the period's whole state passed to it.)

Versions, not current objects: a statement is checked in its *oldest* stored version
(the sealer writes each once), so a delete marker over it (``digest_deleted``) or a later
version (``digest_replaced``) is reported and the period is still checked against what
was sealed. The index and each segment manifest are taken in the version whose hash the
signed statement names (``manifest_deleted`` / ``manifest_replaced`` when that is not
the current one). Records are compared segment by segment, both sides streamed in
``(at, id)`` order (a merge join): memory holds the ids that differ, not the period.

Only statements signed by the *trusted* key count (``wrong_key`` otherwise): by default
the deployment's digest key, or the one an auditor pins.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from tokenbroker.domain.digest_format import (
    VERSION,
    DigestFormatError,
    ManifestLine,
    Ref,
    SegmentSeal,
    canonical_json,
    decode_digest,
    decode_index,
    decode_lines,
    sha256_hex,
)
from tokenbroker.domain.ports import DigestSigner
from tokenbroker.services.digests import HEAD_LOOKBACK_MS, Genesis, group_by_hour, in_order
from tokenbroker.services.tier_verify import HotCheck, describe

if TYPE_CHECKING:
    from tokenbroker.services.digests import DigestService

Status = Literal[
    "intact",
    "unsealed",
    "before_first_digest",
    "wrong_key",
    "bad_signature",
    "digest_deleted",
    "digest_replaced",
    "broken_chain",
    "manifest_deleted",
    "manifest_replaced",
    "bad_manifest",
    "tampered",
    "hot_tampered",
    "late_seal",
    "late_record",
    "missing_digest",
]
OK: frozenset[str] = frozenset({"intact", "unsealed", "before_first_digest"})
#: the status a period gets is its most severe problem, in this order
SEVERITY: tuple[str, ...] = (
    "wrong_key",
    "bad_signature",
    "digest_deleted",
    "digest_replaced",
    "broken_chain",
    "manifest_deleted",
    "manifest_replaced",
    "bad_manifest",
    "tampered",
    "hot_tampered",
    "late_seal",
    "late_record",
    "missing_digest",
)


@dataclass(frozen=True)
class PeriodReport:
    """One period's verdict. ``record_count`` is the sealed count when the period has an
    authentic digest, else the number of records the table holds for it now. The id
    lists are sorted; ``expired`` records (sealed, gone, ``ttl`` passed) are not
    tampering; ``added`` ones are late records (or forged). ``problems`` lists every
    status found (the most severe is ``status``); ``detail`` says each in words."""

    period_start: int  # ms
    period_end: int  # ms, exclusive
    status: Status
    record_count: int
    altered: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    detail: str = ""
    problems: list[str] = field(default_factory=list)
    #: sealed records changed in, or deleted before their ttl from, the hot tier
    hot_changed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in OK

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ChainReport:
    """What holds for the whole chain: the key trusted, where the chain starts, and
    problems outside single periods (a deleted or replaced genesis, a deleted head)."""

    trusted_key: str
    chain_start: int | None
    problems: list[tuple[str, str]]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _Period:
    start: int
    end: int
    base: Status = "intact"
    problems: list[tuple[str, str]] = field(default_factory=list)
    #: segment -> seal of the authentic index; None: records cannot be compared
    seals: dict[str, SegmentSeal] | None = None
    sealed_count: int | None = None
    body: bytes | None = None  # the authentic statement file
    altered: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    added: set[str] = field(default_factory=set)
    expired: set[str] = field(default_factory=set)
    current: int = 0
    hot: HotCheck | None = None  # the hot-tier check, while the period is in the window
    hot_changed: set[str] = field(default_factory=set)

    def problem(self, status: str, detail: str) -> None:
        self.problems.append((status, detail))


class DigestVerifier:
    def __init__(self, service: DigestService, trusted: DigestSigner) -> None:
        self._s = service
        self._store = service.store
        self.trusted = trusted
        self._names = trusted.names()
        self._genesis: Genesis | None = None
        self._now_ms = 0

    # ---- the chain ------------------------------------------------------------------
    def chain(self, until_ms: int, now_ms: int) -> ChainReport:
        problems: list[tuple[str, str]] = []
        versions = self._store.versions(Ref("genesis"))
        real = [v for v in versions if not v.deleted]
        self._genesis = self._s.genesis()
        if versions and versions[0].deleted:
            problems.append(("genesis_deleted", "the genesis is hidden behind a delete marker"))
        if len(real) > 1:
            problems.append(("genesis_replaced", f"{len(real) - 1} later genesis version(s)"))
        if self._genesis is not None and not self._authentic_signature(self._genesis.body):
            problems.append(("wrong_key", "the genesis is not signed by the trusted key"))
        head = self._store.latest_sealed(before_ms=now_ms, not_before_ms=now_ms - HEAD_LOOKBACK_MS)
        if head is not None and head >= until_ms:
            head_versions = self._store.versions(Ref("statement", head))
            if head_versions and head_versions[0].deleted:
                problems.append(("head_deleted", f"the newest statement ({head}) is deleted"))
        chain_start = None if self._genesis is None else self._genesis.chain_start
        return ChainReport(self.trusted.key_id, chain_start, problems)

    def _authentic_signature(self, body: bytes) -> bool:
        try:
            statement, signature = decode_digest(body)
        except DigestFormatError:
            return False
        return statement.get("key_id") in self._names and self.trusted.verify(
            canonical_json(statement), signature
        )

    # ---- periods --------------------------------------------------------------------
    def periods(self, since_ms: int, until_ms: int, now_ms: int) -> Iterator[PeriodReport]:
        if until_ms <= since_ms:
            raise ValueError("the range is empty (until must be after since)")
        if self._genesis is None:
            self._genesis = self._s.genesis()
        self._now_ms = now_ms
        p = self._s.period_ms
        starts = range(self._s.period_of(since_ms), until_ms, p)
        previous = self._s.authentic(Ref("statement", starts[0] - p))
        for group in group_by_hour(starts):
            states = []
            for start in group:
                state = self._statement(start, previous, now_ms)
                states.append(state)
                previous = state.body
            self._hot_checks(states, now_ms)
            self._records(states)
            yield from (self._report(s, now_ms) for s in states)

    def _statement(self, start: int, previous: bytes | None, now: int) -> _Period:
        s = self._s
        state = _Period(start, start + s.period_ms)
        ref = Ref("statement", start)
        versions = self._store.versions(ref)
        real = [v for v in versions if not v.deleted]
        if not versions:
            genesis = self._genesis
            if now < state.end + s.grace_ms + s.pending_ms:
                state.base = "unsealed"
            elif genesis is not None and start < genesis.chain_start:
                state.base = "before_first_digest"
            else:  # decided with the record count: see _report
                state.base = "missing_digest"
            return state
        if not real:
            state.problem("digest_deleted", "every version of the statement is gone")
            return state
        if versions[0].deleted:
            state.problem(
                "digest_deleted", "the statement is behind a delete marker (checked its version)"
            )
        if len(real) > 1:
            state.problem("digest_replaced", f"{len(real) - 1} later version(s) of the statement")
        body = self._store.get(ref, real[-1].version_id)
        state.body = body
        try:
            statement, signature = decode_digest(body or b"")
        except DigestFormatError as exc:
            state.problem("bad_signature", f"unreadable statement: {exc}")
            return state
        if statement.get("key_id") not in self._names:
            signer = statement.get("key_id")
            state.problem("wrong_key", f"signed by {signer!s}, not by the trusted key")
            return state
        if not self.trusted.verify(canonical_json(statement), signature):
            state.problem("bad_signature", "signature does not verify")
            return state
        count = statement.get("record_count")
        if (
            statement.get("version") != VERSION
            or statement.get("period_start") != start
            or statement.get("period_end") != state.end
            or type(count) is not int
        ):
            state.problem("bad_signature", "a valid digest of another period")
            return state
        state.sealed_count = count
        sealed_at = statement.get("sealed_at")
        on_time = state.end + s.grace_ms + s.pending_ms
        first_run = self._genesis.sealed_at if self._genesis is not None else -1
        if type(sealed_at) is not int or (sealed_at > on_time and sealed_at > first_run):
            state.problem("late_seal", f"sealed at {sealed_at}, after {on_time}")
        expected = None if previous is None else sha256_hex(previous)
        if statement.get("previous_digest_sha256") != expected:
            state.problem(
                "broken_chain",
                "the previous period's digest is missing"
                if previous is None
                else "the previous period's digest was changed or replaced",
            )
        state.seals = self._index(state, str(statement.get("manifest_sha256")), count)
        return state

    def _index(self, state: _Period, digest: str, count: int) -> dict[str, SegmentSeal] | None:
        body = self._matching(state, Ref("index", state.start), digest, "the manifest")
        if body is None:
            return None
        try:
            seals = decode_index(body)
        except DigestFormatError as exc:  # signed, so only a sealing bug gets here
            state.problem("bad_manifest", f"unreadable manifest: {exc}")
            return None
        if sum(x.record_count for x in seals.values()) != count:
            state.problem("bad_manifest", "manifest and record count disagree")
            return None
        return seals

    def _matching(self, state: _Period, ref: Ref, digest: str, what: str) -> bytes | None:
        """The version of ``ref`` with SHA-256 ``digest`` (the one the statement names)."""
        versions = self._store.versions(ref)
        for version in versions:
            if version.deleted:
                continue
            body = self._store.get(ref, version.version_id)
            if body is not None and sha256_hex(body) == digest:
                if versions[0].deleted:
                    state.problem("manifest_deleted", f"{what} is behind a delete marker")
                elif version is not versions[0]:
                    state.problem("manifest_replaced", f"{what} was replaced")
                return body
        missing = "is missing" if not versions else "does not match its digest"
        state.problem("bad_manifest", f"{what} {missing}")
        return None

    # ---- records --------------------------------------------------------------------
    def _records(self, states: list[_Period]) -> None:
        """Compare the current records of consecutive periods of one hour with their
        manifests, one segment at a time (each segment read once for the hour)."""
        first, end = states[0].start, states[-1].end
        by_start = {s.start: s for s in states}
        readable = list(self._s.ledger.segments(first, end))
        listed = {name for s in states if s.seals for name in s.seals}
        # a sealed segment the reader no longer has (e.g. fewer shards now): all deleted
        for segment in [*readable, *sorted(listed - set(readable))]:
            records = (
                self._s.ledger.segment_records(segment, first, end)
                if segment in readable
                else iter(())
            )
            seen: set[int] = set()
            lines = in_order(records)
            for period, current in itertools.groupby(lines, key=lambda x: self._s.period_of(x.at)):
                state = by_start.get(period)
                if state is None:
                    raise ValueError("the ledger reader returned a record out of range")
                seen.add(period)
                self._compare(state, segment, current)
            for state in states:
                if state.start not in seen and state.seals and segment in state.seals:
                    self._compare(state, segment, iter(()))

    def _hot_checks(self, states: list[_Period], now_ms: int) -> None:
        """Periods still inside the hot window also check their sealed records in the
        table (tokenbroker.services.tier_verify)."""
        source, window = self._s.hot, self._s.hot_window_ms
        if source is None:
            return
        for state in states:
            if state.seals is not None and state.end > now_ms - window:

                def report(kind: str, ids: list[str], state: _Period = state) -> None:
                    state.problem("hot_tampered", describe(kind, ids))
                    state.hot_changed.update(ids)

                state.hot = HotCheck(source, now_ms, report)

    def _compare(self, state: _Period, segment: str, current: Iterable[ManifestLine]) -> None:
        if state.seals is None:  # nothing authentic to compare with: count only
            state.current += sum(1 for _ in current)
            return
        seal = state.seals.get(segment)
        sealed = self._segment_lines(state, segment, seal) if seal else iter(())
        now_s = self._now_ms // 1000
        for mine, theirs in _merge(sealed, current):
            if mine is not None and state.hot is not None:
                state.hot.add(mine)
            if theirs is not None:
                state.current += 1
            if mine is None and theirs is not None:
                state.added.add(theirs.id)
            elif mine is not None and theirs is None:
                gone = state.expired if mine.ttl is not None and mine.ttl < now_s else state.deleted
                gone.add(mine.id)
            elif mine is not None and theirs is not None and mine.sha256 != theirs.sha256:
                state.altered.add(mine.id)

    def _segment_lines(
        self, state: _Period, segment: str, seal: SegmentSeal
    ) -> Iterator[ManifestLine]:
        """The segment manifest in the version the index names, streamed; a delete
        marker over it or a replacement is a problem of its own."""
        ref = Ref("segment", state.start, segment)
        versions = self._store.versions(ref)
        real = [v for v in versions if not v.deleted]
        what = f"segment {segment}'s manifest"
        chosen = real[0].version_id if real else None
        if versions and (versions[0].deleted or len(real) > 1):
            chosen = None
            for version in real:
                digest = hashlib.sha256()
                for chunk in self._store.chunks(ref, version.version_id):
                    digest.update(chunk)
                if digest.hexdigest() == seal.sha256:
                    chosen = version.version_id
                    break
            if chosen is not None and versions[0].deleted:
                state.problem("manifest_deleted", f"{what} is behind a delete marker")
            elif chosen is not None and chosen != real[0].version_id:
                state.problem("manifest_replaced", f"{what} was replaced")
        if chosen is None:
            state.problem("bad_manifest", f"{what} is missing")
            return
        digest, count = hashlib.sha256(), 0

        def hashed() -> Iterator[bytes]:
            for chunk in self._store.chunks(ref, chosen):
                digest.update(chunk)
                yield chunk

        try:
            for line in decode_lines(hashed()):
                count += 1
                yield line
        except DigestFormatError as exc:
            state.problem("bad_manifest", f"{what} is unreadable: {exc}")
            return
        if digest.hexdigest() != seal.sha256 or count != seal.record_count:
            state.problem("bad_manifest", f"{what} does not match its digest")

    # ---- verdict --------------------------------------------------------------------
    def _report(self, state: _Period, now: int) -> PeriodReport:
        if state.hot is not None:
            state.hot.finish()
        both = state.deleted & state.added  # moved inside the period: an alteration
        altered = sorted(state.altered | both)
        deleted, added = sorted(state.deleted - both), sorted(state.added - both)
        expired = sorted(state.expired)
        if altered or deleted:
            parts = [f"{len(v)} {k}" for k, v in (("altered", altered), ("deleted", deleted)) if v]
            state.problem("tampered", ", ".join(parts))
        if added:
            state.problem("late_record", f"{len(added)} record(s) not in the sealed manifest")
        base = state.base
        if base == "missing_digest" and self._genesis is None and not state.current:
            base = "before_first_digest"  # nothing sealed yet and nothing to seal
        found = {status for status, _ in state.problems}
        status = next((s for s in SEVERITY if s in found), base)
        details = [d for _, d in state.problems] or [_BASE_DETAIL.get(base, "")]
        count = state.sealed_count if state.sealed_count is not None else state.current
        return PeriodReport(
            state.start,
            state.end,
            status,  # type: ignore[arg-type]
            count,
            altered,
            deleted,
            added,
            expired,
            "; ".join(d for d in details if d),
            [s for s in SEVERITY if s in found],
            sorted(state.hot_changed),
        )


_BASE_DETAIL = {
    "unsealed": "the period is not sealed yet",
    "missing_digest": "no digest for a closed period",
    "before_first_digest": "before the chain's first period",
}


def _merge(
    mine: Iterator[ManifestLine], theirs: Iterable[ManifestLine]
) -> Iterator[tuple[ManifestLine | None, ManifestLine | None]]:
    """Pairs of two (at, id)-ordered streams, matched on (at, id)."""
    other = iter(theirs)
    a, b = next(mine, None), next(other, None)
    while a is not None or b is not None:
        if b is None or (a is not None and (a.at, a.id) < (b.at, b.id)):
            yield a, None
            a = next(mine, None)
        elif a is None or (b.at, b.id) < (a.at, a.id):
            yield None, b
            b = next(other, None)
        else:
            yield a, b
            a, b = next(mine, None), next(other, None)
