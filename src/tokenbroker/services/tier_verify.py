"""``audit verify`` across tiers: the sealed manifests of periods still inside the hot
window are checked against the DynamoDB table too (one ``BatchGetItem`` per 100 sealed
records, by id): a sealed record whose item now hashes differently is *changed*, one
that is gone before its ``ttl`` is *deleted* (gone after its ``ttl``: expired, fine).
The archive side (objects against manifests) is :mod:`tokenbroker.services.digest_verify`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from tokenbroker.domain.digest_format import ManifestLine

#: ids per BatchGetItem (DynamoDB's limit)
BATCH = 100
#: how many ids a problem's text names
NAMED = 5


class HotRecords(Protocol):
    """The hot tier, read by record id."""

    def hashes(self, ids: Sequence[str]) -> dict[str, str]:
        """id -> ``record_hash`` of the item the table holds now (absent: no item).
        Raises TemporarilyUnavailable when the table cannot be read (fail closed)."""
        ...


class HotCheck:
    """Buffers sealed manifest lines of one period and checks them in batches."""

    def __init__(
        self, source: HotRecords, now_ms: int, report: Callable[[str, list[str]], None]
    ) -> None:
        self._source = source
        self._now_s = now_ms // 1000
        self._report = report
        self._pending: list[ManifestLine] = []
        self.changed: list[str] = []
        self.deleted: list[str] = []

    def add(self, line: ManifestLine) -> None:
        self._pending.append(line)
        if len(self._pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        found = self._source.hashes([line.id for line in lines])
        for line in lines:
            current = found.get(line.id)
            if current is None:
                if line.ttl is None or line.ttl >= self._now_s:
                    self.deleted.append(line.id)
            elif current != line.sha256:
                self.changed.append(line.id)

    def finish(self) -> None:
        self.flush()
        if self.changed:
            self._report("changed", sorted(self.changed))
        if self.deleted:
            self._report("deleted", sorted(self.deleted))


def describe(kind: str, ids: list[str]) -> str:
    named = ", ".join(ids[:NAMED]) + (f" and {len(ids) - NAMED} more" if len(ids) > NAMED else "")
    what = "changed in" if kind == "changed" else "deleted before its ttl from"
    return f"hot tier: {len(ids)} sealed record(s) {what} the table: {named}"
