"""Shared builders for the audit tests: ledger records at chosen times, written with the
real item function (``usage_item``) into the usage table provisioned from template.yaml,
and an in-memory oracle that says which records a query must return, in which order."""

from __future__ import annotations

import calendar
import random
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
from moto import mock_aws

from tokenbroker.adapters.usage import usage_item
from tokenbroker.domain.models import Decision, EventType, UsageRecord
from tokenbroker.domain.units import HOUR_MS
from tokenbroker.local.provision import Deployment, provision
from tokenbroker.local.template import load_template

REGION = "us-east-1"
#: a device key thumbprint shaped like a real one (43 base64url characters): the CLI
#: refuses anything else for --device
DEV_A1 = "dev-a1".ljust(43, "0")
#: 2026-11-27T00:00:00Z
T0 = calendar.timegm((2026, 11, 27, 0, 0, 0)) * 1000


def iso(at_ms: int) -> str:
    """``at_ms`` as the ISO 8601 text the CLI accepts (whole seconds)."""
    from datetime import UTC, datetime

    assert at_ms % 1000 == 0
    return datetime.fromtimestamp(at_ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextmanager
def provisioned(stack: str, region: str = REGION) -> Iterator[Deployment]:
    """template.yaml's tables and deployment parameter in an in-process moto."""
    with mock_aws():
        yield provision(
            load_template(),
            session_or_clients=boto3.Session(region_name=region),
            stack_name=stack,
            region=region,
        )


@dataclass
class Ledger:
    """Records written to the usage table, and what a query should return."""

    dynamodb: Any
    table: str
    records: list[UsageRecord]

    #: the time index's table (AggregatesTable): ``write`` also does what the archive
    #: stream function does with the records' stream batch (one index page per hour)
    index_table: str = ""
    batches: int = 0

    def write(self, records: Iterable[UsageRecord]) -> None:
        batch: list[dict[str, Any]] = []
        written: list[UsageRecord] = []
        for record in records:
            self.records.append(record)
            written.append(record)
            batch.append({"PutRequest": {"Item": usage_item(record)}})
            if len(batch) == 25:
                self._flush(batch)
        self._flush(batch)
        if self.index_table:
            self.pump(written)

    def pump(self, records: list[UsageRecord]) -> None:
        """The stream consumer's index pages for ``records`` (one stream batch)."""
        from tokenbroker.adapters.archive import SUFFIX, StreamImage, plan_batch
        from tokenbroker.adapters.archive_index import HotIndexWriter
        from tokenbroker.adapters.ledger_scan import plain

        self.batches += 1
        images = [
            StreamImage(
                f"{self.batches:012d}{n:06d}", f"ev-{self.batches}-{n}", plain(usage_item(r))
            )
            for n, r in enumerate(records)
        ]
        writer = HotIndexWriter(self.dynamodb, table=self.index_table, hot_window_days=30)
        for key, (hour, group) in plan_batch(images).items():
            writer.write_page(hour, key.rsplit("/", 1)[1].removesuffix(SUFFIX), group)

    def _flush(self, batch: list[dict[str, Any]]) -> None:
        while batch:
            response = self.dynamodb.batch_write_item(RequestItems={self.table: batch})
            batch[:] = response.get("UnprocessedItems", {}).get(self.table, [])

    def expected(self, since_ms: int, until_ms: int, **filters: str) -> list[str]:
        """The ids a query must return, newest first: (at, id) descending. ``filters``:
        principal, device, token, model, decision."""
        attribute = {
            "principal": "principal",
            "device": "jkt",
            "token": "token_jti",
            "model": "resource",
        }
        wanted = [
            r
            for r in self.records
            if since_ms <= r.at_ms < until_ms
            and all(
                (r.decision.value if name == "decision" else getattr(r, attribute[name])) == value
                for name, value in filters.items()
                if value
            )
        ]
        wanted.sort(key=lambda r: (r.at_ms, r.record_id), reverse=True)
        return [r.record_id for r in wanted]

    def oldest_first(self, since_ms: int, until_ms: int) -> list[str]:
        return self.expected(since_ms, until_ms)[::-1]


def ledger(deployment: Deployment, region: str = REGION) -> Ledger:
    return Ledger(
        boto3.client("dynamodb", region_name=region),
        deployment.refs["UsageTable"],
        [],
        index_table=deployment.refs["AggregatesTable"],
    )


_ids = random.Random(20261127)


def new_id() -> str:
    """A record id; random, so id order is unrelated to time or insertion order."""
    return f"{_ids.getrandbits(80):020x}"


def record(
    at_ms: int,
    principal: str = "alice",
    *,
    device: str = DEV_A1,
    jti: str = "tok-a1",
    model: str = "chat",
    decision: str = "allow",
    reason: str = "",
    source_ip: str = "192.0.2.1",
    event: EventType = EventType.REQUEST,
    record_id: str = "",
) -> UsageRecord:
    allowed = decision == "allow"
    return UsageRecord(
        record_id=record_id or new_id(),
        at_ms=at_ms,
        decision=Decision(decision),
        reason=reason or ("ok" if allowed else "invalid_token"),
        principal=principal,
        client_id=principal,
        jkt=device,
        token_jti=jti,
        proof_jti_hash="ph-" + new_id(),
        method="POST" if model else "",
        route=f"/v1/models/{model}/invoke" if model else "",
        resource=model,
        source_ip=source_ip,
        user_agent="audit-tests/1.0",
        request_id="req-" + new_id(),
        retain_until=at_ms // 1000 + 400 * 86400,
        event=event,
    )


def standard_records() -> list[UsageRecord]:
    """Three hours of traffic from three principals with several devices, tokens, models
    and denials; a burst of records sharing one ``at``; admin events without a token."""
    rng = random.Random(7)
    out: list[UsageRecord] = []
    people = {
        "alice": ((DEV_A1, "dev-a2", "dev-a3"), 60),
        "bob": (("dev-b1",), 24),
        "carol": (("dev-c1", "dev-c2"), 16),
    }
    for principal, (devices, n) in people.items():
        for i in range(n):
            out.append(
                record(
                    T0 + rng.randrange(3 * HOUR_MS),
                    principal,
                    device=devices[i % len(devices)],
                    jti=f"tok-{principal}-{i % 5}",
                    model=("chat", "embed")[i % 2],
                    decision="deny" if i % 4 == 0 else "allow",
                )
            )
    # twelve of alice's requests in the same millisecond (one hot second, many shards)
    same = T0 + HOUR_MS + 1234
    out.extend(record(same, "alice", device="dev-a2", jti="tok-alice-9") for _ in range(12))
    # admin events: no token, no model
    out.extend(
        record(
            T0 + 2 * HOUR_MS + 5 + i,
            "carol",
            device="dev-c2",
            jti="",
            model="",
            event=EventType.DEVICE_ENROLLED,
        )
        for i in range(3)
    )
    return out
