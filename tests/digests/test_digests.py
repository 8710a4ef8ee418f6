"""Tamper evidence: signed, chained digests of the usage ledger, on the real template.yaml
provisioned into moto (DynamoDB usage table + by_hour index, KMS ECC key, versioned S3).

Records are written the way the adapters write them (``usage_item`` + put_item) at chosen
times across periods of 60 s, sealed on a fixed clock, then altered, deleted, added and
the digest files tampered with; ``verify`` must name exactly what changed. Signatures are
also checked independently: public key from kms:GetPublicKey, verified with
``cryptography`` (and with kms:Verify).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import itertools
import json
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from moto import mock_aws

from tokenbroker.adapters import digest_store
from tokenbroker.adapters.ledger_scan import LedgerScanner
from tokenbroker.adapters.usage import usage_item
from tokenbroker.bootstrap import build
from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.ledger import HOUR_SHARDS, hour_of, shard_of
from tokenbroker.domain.models import Decision, EventType, UsageRecord
from tokenbroker.local.provision import provision
from tokenbroker.local.template import load_template
from tokenbroker.services.digest_verify import PeriodReport
from tokenbroker.services.digests import DigestService
from tokenbroker.settings import Settings

REGION = "us-east-1"
P = 60_000  # DIGEST_PERIOD_SECONDS=60
GRACE = 900_000  # the template's default DigestGraceSeconds
HOUR = 3_600_000
# T0 is the last minute of an hour, T1 the first of the next: periods cross an hour
H = 1_800_000_000_000 - 1_800_000_000_000 % HOUR
T0 = H + HOUR - P
T1 = H + HOUR
T2 = T1 + P
SEAL_NOW = T2 + GRACE + 1  # T0 and T1 are due, T2 is not
LATER = SEAL_NOW + 10 * HOUR  # long after: a missing digest is missing, not pending
FUTURE_TTL = 1_900_000_000  # seconds
PAST_TTL = (SEAL_NOW // 1000) + 3600  # expires between sealing and LATER
_ids = itertools.count()


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")


@dataclass
class Env:
    clients: dict[str, Any]
    settings: Settings
    clock: FixedClock
    service: DigestService
    table: str
    bucket: str
    records: dict[str, dict[str, Any]]  # id -> item written

    def put(self, at_ms: int, *, ttl: int = FUTURE_TTL, record_id: str = "", **changes: Any) -> str:
        record_id = record_id or f"rec-{next(_ids):04d}-{uuid.uuid4().hex[:6]}"
        record = UsageRecord(
            record_id=record_id,
            at_ms=at_ms,
            decision=Decision.ALLOW,
            reason="ok",
            principal="tbc_principal",
            client_id="tbc_principal",
            jkt="jkt-" + record_id,
            token_jti="jti-" + record_id,
            proof_jti_hash=hashlib.sha256(record_id.encode()).hexdigest(),
            method="POST",
            route="/v1/models/{model}/invoke",
            resource="model:gpt-secret",
            source_ip="198.51.100.7",
            user_agent="pytest",
            request_id="req-" + record_id,
            retain_until=ttl,
            event=EventType.REQUEST,
        )
        record = replace(record, **changes)
        item = usage_item(record)
        self.clients["dynamodb"].put_item(TableName=self.table, Item=item)
        self.records[record_id] = item
        return record_id

    def edit(self, record_id: str, attribute: str, value: str) -> None:
        item = dict(self.records[record_id])
        item[attribute] = {"S": value}
        self.clients["dynamodb"].put_item(TableName=self.table, Item=item)

    def delete(self, record_id: str) -> None:
        self.clients["dynamodb"].delete_item(TableName=self.table, Key={"id": {"S": record_id}})

    def get_object(self, key: str) -> bytes:
        body: bytes = self.clients["s3"].get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body

    def put_object(self, key: str, body: bytes) -> None:
        self.clients["s3"].put_object(Bucket=self.bucket, Key=key, Body=body)

    def statement(self, period: int) -> dict[str, Any]:
        envelope: dict[str, Any] = json.loads(self.get_object(digest_store.statement_key(period)))
        return envelope

    def verify(self, now: int = LATER) -> dict[int, PeriodReport]:
        return {r.period_start: r for r in self.service.verify(T0 - P, T2 + P, now_ms=now)}


@pytest.fixture
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    with mock_aws():
        clients = {
            name: boto3.client(name, region_name=REGION)
            for name in ("dynamodb", "kms", "ssm", "s3")
        }
        stack = "dg-" + uuid.uuid4().hex[:10]
        deployment = provision(
            load_template(), session_or_clients=clients, stack_name=stack, region=REGION
        )
        environment = deployment.environment("DigestFunction")
        settings = Settings.from_mapping({**environment, "DIGEST_PERIOD_SECONDS": "60"})
        assert settings.digest_period_seconds == 60
        assert settings.digest_grace_seconds * 1000 == GRACE
        clock = FixedClock(SEAL_NOW / 1000)
        service = build(settings, aws=clients.__getitem__, clock=clock).digests
        # The sealing and verifying logic over a LedgerReader, read from the table by
        # a Scan here (test-only); the deployment reads the archive (tests/archive).
        service.ledger = LedgerScanner(clients["dynamodb"], table=settings.usage_table)
        service.hot = None
        yield Env(
            clients=clients,
            settings=settings,
            clock=clock,
            service=service,
            table=settings.usage_table,
            bucket=settings.digest_bucket,
            records={},
        )


@dataclass
class Sealed:
    env: Env
    p0: list[str]  # ids in T0
    p1: list[str]  # ids in T1
    expiring: str  # in T1, ttl passes between sealing and LATER


@pytest.fixture
def sealed(env: Env) -> Sealed:
    p0 = [env.put(T0), env.put(T0 + 1), env.put(T0 + P // 2), env.put(T1 - 1)]
    p1 = [env.put(T1), env.put(T1 + 59_999)]
    expiring = env.put(T1 + 10, ttl=PAST_TTL)
    # outside the sealed periods (must not be counted in them)
    env.put(T0 - P - 1)
    env.put(T2)
    # an empty genesis period, then the scheduled run seals everything due after it
    assert env.service.seal(T0 - P) is True
    assert env.service.seal_due(SEAL_NOW) == [T0, T1]
    return Sealed(env, p0, [*p1, expiring], expiring)


def _only(reports: dict[int, PeriodReport], bad: int) -> PeriodReport:
    for start, report in reports.items():
        if start != bad and start != T2:
            assert report.status == "intact", report
    return reports[bad]


# ----------------------------------------------------------------------- sealing


def test_sealed_periods_verify_intact_with_their_record_counts(sealed: Sealed) -> None:
    reports = sealed.env.verify()
    assert list(reports) == [T0 - P, T0, T1, T2]
    assert [(r.status, r.record_count) for r in reports.values()] == [
        ("intact", 0),
        ("intact", 4),
        ("intact", 3),
        # T2 was not due at SEAL_NOW and was never sealed; LATER is long past it
        ("missing_digest", 1),
    ]
    for report in list(reports.values())[:3]:
        assert report.altered == report.deleted == report.added == report.expired == []
    # before the pending allowance (two scheduled runs) ran out it is merely "unsealed"
    assert sealed.env.verify(now=SEAL_NOW)[T2].status == "unsealed"


def test_the_manifests_list_every_record_of_the_period_per_segment_in_time_order(
    sealed: Sealed,
) -> None:
    env = sealed.env
    index = [json.loads(x) for x in env.get_object(digest_store.manifest_key(T0)).splitlines()]
    assert [e["segment"] for e in index] == sorted(e["segment"] for e in index)
    seen = []
    for entry in index:
        body = env.get_object(digest_store.segment_key(T0, entry["segment"]))
        lines = [json.loads(line) for line in body.splitlines()]
        assert [(x["at"], x["id"]) for x in lines] == sorted((x["at"], x["id"]) for x in lines)
        assert all(set(x) == {"at", "id", "sha256", "ttl"} for x in lines)
        assert (entry["record_count"], entry["sha256"]) == (
            len(lines),
            hashlib.sha256(body).hexdigest(),
        )
        seen += [x["id"] for x in lines]
    assert sorted(seen) == sorted(sealed.p0)
    # an empty period has an empty index and no segment manifest
    assert env.get_object(digest_store.manifest_key(T0 - P)) == b""
    statement = env.statement(T0)["statement"]
    assert statement["record_count"] == 4
    assert statement["segments"] == len(index)
    assert (
        statement["manifest_sha256"]
        == hashlib.sha256(env.get_object(digest_store.manifest_key(T0))).hexdigest()
    )
    assert (statement["period_start"], statement["period_end"]) == (T0, T1)
    assert statement["key_id"] == env.settings.digest_key_id
    assert statement["sealed_at"] == SEAL_NOW
    assert statement["chain_start"] == T0 - P


def test_the_first_seal_writes_a_signed_genesis_naming_the_chain_start(sealed: Sealed) -> None:
    env = sealed.env
    envelope = json.loads(env.get_object(digest_store.GENESIS_KEY))
    genesis = envelope["statement"]
    assert genesis == {
        "version": 2,
        "kind": "genesis",
        "chain_start": T0 - P,
        "sealed_at": SEAL_NOW,
        "key_id": env.settings.digest_key_id,
    }
    signed = json.dumps(genesis, sort_keys=True, separators=(",", ":")).encode()
    assert env.clients["kms"].verify(
        KeyId=env.settings.digest_key_id,
        Message=signed,
        MessageType="RAW",
        Signature=base64.b64decode(envelope["signature"]),
        SigningAlgorithm="ECDSA_SHA_256",
    )["SignatureValid"]


def test_the_signature_verifies_independently_with_the_kms_public_key(sealed: Sealed) -> None:
    env = sealed.env
    der = env.clients["kms"].get_public_key(KeyId=env.settings.digest_key_id)["PublicKey"]
    public_key = load_der_public_key(der)
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert isinstance(public_key.curve, ec.SECP256R1)
    for period in (T0 - P, T0, T1):
        envelope = env.statement(period)
        assert envelope["signing_algorithm"] == "ECDSA_SHA_256"
        signed = json.dumps(
            envelope["statement"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
        signature = base64.b64decode(envelope["signature"])
        public_key.verify(signature, signed, ec.ECDSA(hashes.SHA256()))
        assert env.clients["kms"].verify(
            KeyId=env.settings.digest_key_id,
            Message=signed,
            MessageType="RAW",
            Signature=signature,
            SigningAlgorithm="ECDSA_SHA_256",
        )["SignatureValid"]
        with pytest.raises(InvalidSignature):
            public_key.verify(signature, signed + b" ", ec.ECDSA(hashes.SHA256()))


def test_each_digest_chains_to_the_stored_previous_one(sealed: Sealed) -> None:
    env = sealed.env
    assert env.statement(T0 - P)["statement"]["previous_digest_sha256"] is None
    for period in (T0, T1):
        previous = env.get_object(digest_store.statement_key(period - P))
        link = env.statement(period)["statement"]["previous_digest_sha256"]
        assert link == hashlib.sha256(previous).hexdigest()


def test_sealing_again_is_idempotent(sealed: Sealed) -> None:
    env = sealed.env
    assert env.service.seal_due(SEAL_NOW) == []
    assert env.service.seal_due(SEAL_NOW + 1) == []
    assert env.service.seal(T0, now_ms=SEAL_NOW) is False
    versions = env.clients["s3"].list_object_versions(Bucket=env.bucket)["Versions"]
    statements = [v for v in versions if v["Key"] == digest_store.statement_key(T0)]
    assert len(statements) == 1


def test_periods_not_past_grace_are_not_sealed(env: Env) -> None:
    env.put(T0)
    env.put(T1)
    assert env.service.seal(T0 - P, now_ms=T1 + GRACE) is True
    # T1 ends at T2: one millisecond before T2 + grace it is not due
    assert env.service.seal_due(T2 + GRACE - 1) == [T0]
    with pytest.raises(ValueError, match="not closed"):
        env.service.seal(T1, now_ms=T2 + GRACE - 1)
    reports = {r.period_start: r for r in env.service.verify(T0, T2, now_ms=T2 + GRACE - 1)}
    assert reports[T0].status == "intact"
    assert (reports[T1].status, reports[T1].record_count) == ("unsealed", 1)
    assert env.service.seal_due(T2 + GRACE) == [T1]


def test_a_first_run_goes_back_one_run_of_periods_at_most_a_day(env: Env) -> None:
    env.put(T0)
    sealed = env.service.seal_due(SEAL_NOW)
    back = min(86_400_000, 48 * P)
    first = (SEAL_NOW - back) - (SEAL_NOW - back) % P
    assert sealed[0] == first
    assert sealed == [first + i * P for i in range(len(sealed))]
    assert len(sealed) <= 48
    # a later run continues where this one stopped
    later = env.service.seal_due(SEAL_NOW + 10 * P)
    assert later[0] == sealed[-1] + P


def test_a_run_out_of_time_resumes_where_it_stopped_and_seals_the_same_manifest(
    env: Env,
) -> None:
    shards = HOUR_SHARDS
    ids = [f"r-{n}" for n in range(2000)]
    early = [i for i in ids if shard_of(i, shards) < 3][:3]
    late = [i for i in ids if shard_of(i, shards) > 200][:3]
    for n, record_id in enumerate(early + late):
        env.put(T0 + n, record_id=record_id)
    env.service.seal(T0 - P, now_ms=SEAL_NOW)
    budget = iter([True] * 100 + [False])
    # the first run seals 100 of T0's 256 segments, then records them in a part
    assert env.service.seal_due(SEAL_NOW, keep_going=lambda: next(budget)) == []
    parts = env.clients["s3"].list_objects_v2(
        Bucket=env.bucket, Prefix=digest_store.parts_prefix(T0)
    )["Contents"]
    assert len(parts) == 1
    assert not env.service.ever_sealed(T0)
    # the next run seals the rest (reading the 156 others only) and the statement
    queried: list[tuple[str, int]] = []
    ledger = env.service.ledger
    real = ledger.segment_records

    def counted(segment: str, start_ms: int, end_ms: int) -> Any:
        queried.append((segment, start_ms))
        return real(segment, start_ms, end_ms)

    ledger.segment_records = counted  # type: ignore[method-assign]
    assert env.service.seal_due(SEAL_NOW) == [T0, T1]
    assert sum(1 for _, start in queried if hour_of(start) == hour_of(T0)) == shards - 100
    assert env.verify()[T0].status == "intact"
    assert env.statement(T0)["statement"]["record_count"] == 6


def test_a_misaligned_period_is_refused(env: Env) -> None:
    with pytest.raises(ValueError, match="start of a period"):
        env.service.seal(T0 + 1, now_ms=SEAL_NOW)


class Workers:
    """A dispatcher that queues work, as asynchronous invocations would."""

    def __init__(self) -> None:
        self.queued: list[tuple[list[int], list[str]]] = []

    def dispatch(self, periods: Any, segments: Any) -> None:
        self.queued.append((list(periods), list(segments)))


def test_what_one_invocation_has_no_time_for_is_dispatched_and_the_last_worker_seals(
    env: Env,
) -> None:
    ids = {env.put(T0 + n) for n in range(30)} | {env.put(T0 - P + n) for n in range(5)}
    env.service.seal(T0 - 2 * P, now_ms=SEAL_NOW)
    budget = iter([True] * 10 + [False])
    workers = Workers()
    assert env.service.seal_due(SEAL_NOW, keep_going=lambda: next(budget), dispatcher=workers) == []
    shards = HOUR_SHARDS
    # the clock is fixed (no time per segment measured): one batch of all that is left
    ((periods, segments),) = workers.queued
    assert periods == [T0 - P, T0]
    assert len(segments) == shards - 10
    # two workers share it; the second one finds every segment done and seals both
    half = len(segments) // 2
    assert env.service.seal_segments(periods, segments[:half], now_ms=SEAL_NOW) == []
    assert env.service.seal_segments(periods, segments[half:], now_ms=SEAL_NOW) == [T0 - P, T0]
    reports = env.verify()
    assert (reports[T0].status, reports[T0].record_count) == ("intact", 30)
    assert (reports[T0 - P].status, reports[T0 - P].record_count) == ("intact", 5)
    assert len(ids) == 35
    # the next scheduled run continues after them
    assert env.service.seal_due(SEAL_NOW)[0] == T1


def test_periods_left_incomplete_by_racing_workers_are_sealed_by_the_next_run(env: Env) -> None:
    env.put(T0 + 5)
    env.service.seal(T0 - P, now_ms=SEAL_NOW)
    segments = list(env.service.ledger.segments(T0, T0 + P))
    # a worker that saw the other half missing seals nothing; the schedule finishes it
    assert env.service.seal_segments([T0], segments[:100], now_ms=SEAL_NOW) == []
    assert not env.service.ever_sealed(T0)
    assert env.service.seal_due(SEAL_NOW) == [T0, T1]
    assert env.verify()[T0].status == "intact"


def test_a_worker_refuses_periods_that_are_not_due_or_span_hours(env: Env) -> None:
    with pytest.raises(ValueError, match="due"):
        env.service.seal_segments([T2], ["000"], now_ms=SEAL_NOW)
    with pytest.raises(ValueError, match="one hour"):
        env.service.seal_segments([T0, T1], ["000"], now_ms=SEAL_NOW)


# ---------------------------------------------------------------------- tampering


def test_an_altered_record_is_named(sealed: Sealed) -> None:
    sealed.env.edit(sealed.p0[2], "source_ip", "203.0.113.66")
    report = _only(sealed.env.verify(), T0)
    assert (report.status, report.altered, report.deleted, report.added) == (
        "tampered",
        [sealed.p0[2]],
        [],
        [],
    )
    assert report.detail == "1 altered"


def test_a_changed_ttl_is_an_alteration(sealed: Sealed) -> None:
    env = sealed.env
    item = dict(env.records[sealed.p1[0]])
    item["ttl"] = {"N": "1"}
    env.clients["dynamodb"].put_item(TableName=env.table, Item=item)
    assert _only(env.verify(), T1).altered == [sealed.p1[0]]


def test_a_deleted_record_is_named(sealed: Sealed) -> None:
    sealed.env.delete(sealed.p1[1])
    report = _only(sealed.env.verify(), T1)
    assert (report.status, report.deleted, report.altered, report.added, report.expired) == (
        "tampered",
        [sealed.p1[1]],
        [],
        [],
        [],
    )


def test_a_record_added_to_a_sealed_period_is_a_late_record(sealed: Sealed) -> None:
    added = sealed.env.put(T1 + 30_000)
    report = _only(sealed.env.verify(), T1)
    assert (report.status, report.added, report.altered, report.deleted) == (
        "late_record",
        [added],
        [],
        [],
    )
    assert not report.ok


def test_a_record_moved_to_another_period_is_deleted_there_and_added_here(
    sealed: Sealed,
) -> None:
    env = sealed.env
    moved = sealed.p0[0]
    item = dict(env.records[moved])
    item["at"] = {"N": str(T1 + 5)}  # T1 is in the next hour
    env.clients["dynamodb"].put_item(TableName=env.table, Item=item)
    reports = env.verify()
    assert (reports[T0].status, reports[T0].deleted) == ("tampered", [moved])
    assert (reports[T1].status, reports[T1].added) == ("late_record", [moved])


def test_a_record_moved_inside_its_period_is_altered(sealed: Sealed) -> None:
    env = sealed.env
    moved = sealed.p0[1]
    item = dict(env.records[moved])
    item["at"] = {"N": str(T0 + 40_000)}
    env.clients["dynamodb"].put_item(TableName=env.table, Item=item)
    report = _only(env.verify(), T0)
    assert (report.status, report.altered, report.deleted, report.added) == (
        "tampered",
        [moved],
        [],
        [],
    )


def test_an_expired_record_is_not_tampering(sealed: Sealed) -> None:
    sealed.env.delete(sealed.expiring)  # DynamoDB TTL removed it after its ttl passed
    report = sealed.env.verify()[T1]
    assert (report.status, report.expired, report.deleted) == ("intact", [sealed.expiring], [])
    # before its ttl passed, the same absence is a deletion
    early = sealed.env.verify(now=SEAL_NOW)[T1]
    assert (early.status, early.deleted, early.expired) == ("tampered", [sealed.expiring], [])


def test_deleting_every_record_of_a_period_is_detected(sealed: Sealed) -> None:
    for record_id in sealed.p0:
        sealed.env.delete(record_id)
    report = _only(sealed.env.verify(), T0)
    assert (report.status, report.deleted, report.record_count) == (
        "tampered",
        sorted(sealed.p0),
        4,
    )


def test_a_record_added_to_an_empty_sealed_period_is_detected(sealed: Sealed) -> None:
    added = sealed.env.put(T0 - P + 5)
    report = _only(sealed.env.verify(), T0 - P)
    assert (report.status, report.added) == ("late_record", [added])


def test_a_replaced_index_is_reported_and_the_sealed_one_still_names_the_deletion(
    sealed: Sealed,
) -> None:
    env = sealed.env
    key = digest_store.manifest_key(T0)
    (first, *rest) = env.get_object(key).splitlines(keepends=True)
    env.put_object(key, b"".join(rest))  # hide a segment from the index...
    segment = json.loads(first)["segment"]
    victim = json.loads(env.get_object(digest_store.segment_key(T0, segment)).splitlines()[0])
    env.delete(victim["id"])  # ... and delete a record of it
    report = _only(env.verify(), T0)
    assert report.status == "manifest_replaced"
    assert report.problems == ["manifest_replaced", "tampered"]
    assert report.deleted == [victim["id"]]


def test_a_replaced_segment_manifest_is_reported_and_the_sealed_one_used(sealed: Sealed) -> None:
    env = sealed.env
    victim = sealed.p1[0]  # not the record that expires
    segment = f"{shard_of(victim, HOUR_SHARDS):03d}"
    key = digest_store.segment_key(T1, segment)
    assert victim in env.get_object(key).decode()
    env.put_object(key, b"")
    env.delete(victim)
    report = _only(env.verify(), T1)
    assert report.problems == ["manifest_replaced", "tampered"]
    assert report.deleted == [victim]


def test_a_deleted_manifest_is_reported_and_checked_in_its_retained_version(
    sealed: Sealed,
) -> None:
    env = sealed.env
    env.clients["s3"].delete_object(Bucket=env.bucket, Key=digest_store.manifest_key(T1))
    env.delete(sealed.p1[0])
    report = _only(env.verify(), T1)
    assert report.problems == ["manifest_deleted", "tampered"]
    assert report.deleted == [sealed.p1[0]]


def test_a_replaced_statement_is_reported_and_the_sealed_version_keeps_the_chain(
    sealed: Sealed,
) -> None:
    env = sealed.env
    key = digest_store.statement_key(T0)
    envelope = env.statement(T0)
    envelope["statement"]["record_count"] = 3
    env.put_object(key, json.dumps(envelope).encode())
    reports = env.verify()
    assert (reports[T0].status, reports[T0].record_count) == ("digest_replaced", 4)
    assert reports[T1].status == "intact"  # chained to the version the sealer wrote
    assert reports[T0 - P].status == "intact"


def test_a_digest_from_another_period_is_a_replacement(sealed: Sealed) -> None:
    env = sealed.env
    env.put_object(digest_store.statement_key(T1), env.get_object(digest_store.statement_key(T0)))
    assert env.verify()[T1].status == "digest_replaced"


def test_garbage_in_place_of_a_statement_is_a_replacement(sealed: Sealed) -> None:
    env = sealed.env
    env.put_object(digest_store.statement_key(T0), b"{not json")
    assert env.verify()[T0].status == "digest_replaced"


def test_a_deleted_statement_is_reported_and_never_sealed_again(sealed: Sealed) -> None:
    env = sealed.env
    env.clients["s3"].delete_object(Bucket=env.bucket, Key=digest_store.statement_key(T0))
    env.delete(sealed.p0[0])
    assert env.service.seal(T0, now_ms=LATER) is False
    assert env.service.seal_due(LATER)[0] == T2  # continues after T1, never re-seals T0
    reports = env.verify()
    assert (reports[T0].status, reports[T0].record_count) == ("digest_deleted", 4)
    assert reports[T0].problems == ["digest_deleted", "tampered"]
    assert reports[T0].deleted == [sealed.p0[0]]
    assert reports[T1].status == "intact"  # chained to the retained version
    # the delete marker is still the current object: nothing was written over it
    versions = env.clients["s3"].list_object_versions(
        Bucket=env.bucket, Prefix=digest_store.statement_key(T0)
    )
    assert len(versions["Versions"]) == 1
    assert versions["DeleteMarkers"][0]["IsLatest"]


def test_a_statement_signed_by_another_key_is_wrong_key(sealed: Sealed) -> None:
    env = sealed.env
    other = env.clients["kms"].create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    pinned = build(env.settings, aws=env.clients.__getitem__).digest_key(
        other["KeyMetadata"]["Arn"]
    )
    reports = env.service.verify(T0 - P, T2, now_ms=LATER, trusted=pinned)
    assert {r.status for r in reports} == {"wrong_key"}
    assert all(env.settings.digest_key_id in r.detail for r in reports)


def test_verify_rejects_an_empty_range(env: Env) -> None:
    with pytest.raises(ValueError, match="empty"):
        env.service.verify(T1, T1)


def test_report_shape(sealed: Sealed) -> None:
    report = sealed.env.verify()[T0]
    assert report.as_dict() == {
        "period_start": T0,
        "period_end": T1,
        "status": "intact",
        "record_count": 4,
        "altered": [],
        "deleted": [],
        "added": [],
        "expired": [],
        "detail": "",
        "problems": [],
        "hot_changed": [],
    }
    assert report.ok


# --------------------------------------------------------------------- the reader


def test_the_scanner_reads_every_record_of_the_range_and_paginates(env: Env) -> None:
    shards = HOUR_SHARDS
    same_shard = [i for i in (f"same-{n}" for n in range(5000)) if shard_of(i, shards) == 7][:3]
    late = {env.put(T1 + i) for i in range(10)} | {env.put(T1, record_id=i) for i in same_shard}
    ids = {env.put(T0 + i) for i in range(40)} | late
    env.put(T0 - 1)
    env.put(T2)
    scanner = LedgerScanner(env.clients["dynamodb"], table=env.table, max_workers=4)
    assert {r["id"] for r in scanner.records(T0, T2)} == ids
    # a segment: one id shard's records in (at, id) order
    assert [r["id"] for r in scanner.segment_records("007", T1, T2)] == sorted(same_shard)
    # pages: force tiny pages through the botocore parameters
    calls: list[int] = []

    def small_pages(params: dict[str, Any], **_: Any) -> None:
        params["Limit"] = 1
        calls.append(1)

    env.clients["dynamodb"].meta.events.register("provide-client-params.dynamodb.Scan", small_pages)
    try:
        assert {r["id"] for r in scanner.records(T1, T2)} == late
    finally:
        env.clients["dynamodb"].meta.events.unregister(
            "provide-client-params.dynamodb.Scan", small_pages
        )
    assert len(calls) > len(late)  # one page per item scanned


# ----------------------------------------------------------------- the function


def test_the_scheduled_function_seals_due_periods(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenbroker import bootstrap

    env.put(T0)
    env.service.seal(T0 - P)

    class Container:
        digests = env.service
        digest_dispatcher = None

    monkeypatch.setattr(bootstrap, "default", lambda: Container)
    path = Path(__file__).resolve().parents[2] / "functions" / "digest" / "app.py"
    spec = importlib.util.spec_from_file_location("_tb_digest_app", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["_tb_digest_app"] = module
    spec.loader.exec_module(module)

    @dataclass
    class Context:
        function_name: str = "DigestFunction"
        memory_limit_in_mb: int = 512
        invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:Digest"
        aws_request_id: str = "req-1"

        def get_remaining_time_in_millis(self) -> int:
            return 300_000

    event = {
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2027-01-15T08:30:00Z",
        "region": REGION,
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/Digest"],
        "detail": {},
    }
    assert module.handler(event, Context()) == {"sealed": [T0, T1]}
    assert module.handler(event, Context()) == {"sealed": []}
    # a worker's event seals its segments (nothing left to do here)
    work = {"digest_work": {"periods": [T0], "segments": ["000"]}}
    assert module.handler(work, Context()) == {"sealed": []}
    assert module.handler({"digest_work": {"periods": "x"}}, Context()) == {
        "sealed": [],
        "error": "malformed digest work event",
    }


# ------------------------------------------------------------------- the chain


def test_a_deleted_chain_head_is_a_chain_problem_outside_the_range(sealed: Sealed) -> None:
    env = sealed.env
    env.clients["s3"].delete_object(Bucket=env.bucket, Key=digest_store.statement_key(T1))
    chain = env.service.verifier().chain(T1, LATER)  # a range that ends before the head
    assert chain.problems == [("head_deleted", f"the newest statement ({T1}) is deleted")]
    assert not chain.ok
    assert chain.chain_start == T0 - P


def test_a_deleted_or_replaced_genesis_is_a_chain_problem(sealed: Sealed) -> None:
    env = sealed.env
    original = env.get_object(digest_store.GENESIS_KEY)
    env.put_object(digest_store.GENESIS_KEY, original.replace(b'"chain_start"', b'"chain_start" '))
    env.clients["s3"].delete_object(Bucket=env.bucket, Key=digest_store.GENESIS_KEY)
    chain = env.service.verifier().chain(T2 + P, LATER)
    assert [status for status, _ in chain.problems] == ["genesis_deleted", "genesis_replaced"]
    assert chain.chain_start == T0 - P  # the version the sealer wrote still counts


def test_periods_before_the_genesis_are_before_the_first_digest(sealed: Sealed) -> None:
    env = sealed.env
    env.put(T0 - 3 * P + 5)  # a record from before the chain started: never sealed
    reports = {r.period_start: r for r in env.service.verify(T0 - 3 * P, T0, now_ms=LATER)}
    assert reports[T0 - 3 * P].status == "before_first_digest"
    assert reports[T0 - 3 * P].record_count == 1
    assert reports[T0 - 2 * P].status == "before_first_digest"
    assert reports[T0 - P].status == "intact"


def test_a_seal_later_than_the_grace_and_allowance_is_late(env: Env) -> None:
    env.put(T0)
    env.service.seal(T0 - P, now_ms=SEAL_NOW)
    on_time = T1 + GRACE + env.service.pending_ms
    assert env.service.seal(T0, now_ms=on_time + 1) is True
    report = env.verify()[T0]
    assert report.status == "late_seal"
    assert report.detail == f"sealed at {on_time + 1}, after {on_time}"


# ------------------------------------------------------------------- faults


def test_a_refused_version_listing_fails_closed_and_seals_nothing(env: Env) -> None:
    from botocore.awsrequest import AWSResponse

    from tokenbroker.domain.errors import TemporarilyUnavailable

    env.put(T0)

    def throttled(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        # e.g. s3:ListBucketVersions missing from the role: not retried
        error = {
            "Error": {"Code": "AccessDenied", "Message": "injected"},
            "ResponseMetadata": {"HTTPStatusCode": 403},
        }
        return AWSResponse("https://injected.invalid/", 403, {}, None), error

    s3 = env.clients["s3"]
    s3.meta.events.register("before-call.s3.ListObjectVersions", throttled)
    try:
        with pytest.raises(TemporarilyUnavailable, match=r"s3:ListObjectVersions failed \(Acc"):
            env.service.seal_due(SEAL_NOW)
        with pytest.raises(TemporarilyUnavailable):
            env.service.verify(T0, T1, now_ms=LATER)
    finally:
        s3.meta.events.unregister("before-call.s3.ListObjectVersions", throttled)
    assert "Contents" not in s3.list_objects_v2(Bucket=env.bucket)
