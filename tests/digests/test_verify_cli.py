"""``tokenbroker audit verify`` through click's CliRunner against template.yaml provisioned
into moto (DigestBucket under Object Lock, 60-second periods as on the local stack),
with the wall clock: the attacks of issue 8.1 (delete a sealed record, hide its digests
behind delete markers, try to delete every version, wait for the sealer), the same
without Object Lock (re-sealed late), a pinned key, day one (before the first digest),
the summary line, ``--failed-only`` and progress."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from click.testing import CliRunner, Result

from tokenbroker.adapters import digest_store
from tokenbroker.adapters.archive import ArchiveWriter, StreamImage
from tokenbroker.adapters.ledger_scan import plain
from tokenbroker.adapters.usage import usage_item
from tokenbroker.bootstrap import build
from tokenbroker.cli.deployment import load_settings
from tokenbroker.cli.main import cli
from tokenbroker.domain.models import Decision, EventType, UsageRecord
from tokenbroker.services.digests import DigestService
from tokenbroker.settings import Settings

REGION = "us-east-1"
P = 60_000
LOCAL = {"DigestPeriodSeconds": "60", "DigestGraceSeconds": "60"}


def iso(at_ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at_ms // 1000))


def record(at_ms: int) -> UsageRecord:
    """An allowed request, as the edge records it."""
    record_id = uuid.uuid4().hex
    return UsageRecord(
        record_id=record_id,
        at_ms=at_ms,
        decision=Decision.ALLOW,
        reason="ok",
        principal="tbc_vera",
        client_id="tbc_vera",
        jkt="jkt-vera",
        token_jti="jti-" + record_id,
        proof_jti_hash="ph-" + record_id,
        method="POST",
        route="/v1/models/{model}/invoke",
        resource="model:demo",
        source_ip="192.0.2.1",
        user_agent="verify-tests/1.0",
        request_id="req-" + record_id,
        retain_until=at_ms // 1000 + 400 * 86400,
        event=EventType.REQUEST,
    )


@dataclass
class Ledger:
    """The table, and the archive the stream function writes from it (as it would)."""

    dynamodb: Any
    table: str
    s3: Any
    bucket: str

    def write(self, records: list[UsageRecord]) -> None:
        writer = ArchiveWriter(self.s3, bucket=self.bucket)
        for n, r in enumerate(records):
            item = usage_item(r)
            self.dynamodb.put_item(TableName=self.table, Item=item)
            writer.write_batch([StreamImage(f"{r.at_ms}{n:06d}", r.record_id, plain(item))])


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("AWS_", "TOKENBROKER_")):
            monkeypatch.delenv(name)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)


@dataclass
class Stack:
    name: str
    settings: Settings
    ledger: Ledger
    now: int  # ms, the wall clock when the test started

    @property
    def s3(self) -> Any:
        return boto3.client("s3", region_name=REGION)

    def service(self) -> DigestService:
        settings = load_settings(self.name, boto3.Session())
        return build(settings, aws=lambda name: boto3.client(name, region_name=REGION)).digests

    def run(self, *args: str) -> Result:
        return CliRunner().invoke(cli, ["--stack", self.name, "audit", "verify", *args])

    def json(self, *args: str) -> tuple[int, dict[str, Any]]:
        result = self.run(*args, "-o", "json")
        return result.exit_code, json.loads(result.stdout)


@pytest.fixture
def stack() -> Iterator[Stack]:
    name = "vf-" + uuid.uuid4().hex[:8]
    with provisioned_with(name):
        settings = load_settings(name, boto3.Session())
        assert settings.digest_period_seconds == 60
        now = int(time.time() * 1000)
        book = Ledger(
            boto3.client("dynamodb", region_name=REGION),
            settings.usage_table,
            boto3.client("s3", region_name=REGION),
            settings.digest_bucket,
        )
        yield Stack(name, settings, book, now - now % P)


def provisioned_with(name: str) -> Any:
    from contextlib import contextmanager

    from moto import mock_aws

    from tokenbroker.local.provision import provision
    from tokenbroker.local.template import load_template

    @contextmanager
    def make() -> Iterator[Any]:
        with mock_aws():
            yield provision(
                load_template(),
                session_or_clients=boto3.Session(region_name=REGION),
                stack_name=name,
                region=REGION,
                parameters=LOCAL,
            )

    return make()


def periods(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {r["period_start"]: r for r in rows}


# ----------------------------------------------------------------------- day one


def test_a_fresh_deployment_passes_verify_before_its_first_digest(stack: Stack) -> None:
    result = stack.run("--since", "2h")
    assert result.exit_code == 0, result.output
    *_, summary, trusted = result.stdout.strip().splitlines()
    # 2 hours of minutes (121 when now is not on a minute): none sealed, none failed
    assert re.fullmatch(
        r"12[01] periods: 0 intact, 3\d not sealed yet, \d+ before first digest, 0 failed",
        summary,
    ), summary
    assert trusted == f"trusted digest key: {stack.settings.digest_key_id} (from the deployment)"
    # a long range shows progress, on stderr only
    assert "verifying" in result.stderr
    assert "verifying" not in result.stdout


def test_after_the_first_run_earlier_periods_are_before_the_first_digest(stack: Stack) -> None:
    stack.ledger.write([record(stack.now - 30 * P + 5), record(stack.now - 70 * P)])
    sealed = stack.service().seal_due(stack.now)
    assert sealed[0] == stack.now - 48 * P  # the first run goes back 48 periods
    code, document = stack.json("--since", "2h")
    assert code == 0, document
    rows = periods(document["periods"])
    assert document["chain_start"] == stack.now - 48 * P
    assert {r["status"] for s, r in rows.items() if s < stack.now - 48 * P} == {
        "before_first_digest"
    }
    assert {r["status"] for s, r in rows.items() if s in sealed} == {"intact"}
    assert rows[stack.now - 30 * P]["records"] == 1
    # the record before the chain start is not counted as missing
    assert rows[stack.now - 70 * P]["status"] == "before_first_digest"
    assert document["trusted_key"] == stack.settings.digest_key_id
    assert document["trusted_key_source"] == "the deployment"
    assert document["chain_problems"] == []
    assert document["summary"].endswith(", 0 failed")
    # --failed-only: nothing to list, the summary still counts every period
    code, only = stack.json("--since", "2h", "--failed-only")
    assert (code, only["periods"]) == (0, [])
    assert only["summary"].startswith("12")  # 120 or 121 periods counted, none listed
    assert only["summary"].endswith(", 0 failed")


# ------------------------------------------------------------------------ attacks


def _sealed_with_victim(stack: Stack) -> tuple[DigestService, int, str]:
    """Records in several periods, sealed by the first run; returns the victim period
    (ten periods back) and one of its allowed records."""
    victim_period = stack.now - 10 * P
    victim = record(victim_period + 1234)
    stack.ledger.write([victim, *(record(stack.now - n * P + 7) for n in range(4, 14))])
    service = stack.service()
    service.seal_due(stack.now)
    assert service.ever_sealed(victim_period)
    return service, victim_period, victim.record_id


def _digest_keys(stack: Stack, since: int) -> list[str]:
    """Every digest object of ``since`` and later periods (statements, indexes, segments)."""
    keys = []
    for page in stack.s3.get_paginator("list_objects_v2").paginate(
        Bucket=stack.settings.digest_bucket, Prefix=digest_store.PREFIX
    ):
        keys += [o["Key"] for o in page.get("Contents", [])]
    first = digest_store.statement_key(since)[: -len(".json")]
    return [k for k in keys if k != digest_store.GENESIS_KEY and k >= first]


def test_deleting_a_record_and_its_periods_digests_then_waiting_for_the_sealer_fails(
    stack: Stack,
) -> None:
    service, victim_period, victim = _sealed_with_victim(stack)
    # the attacker: DeleteItem on the record, every S3 delete right on the digests
    stack.ledger.dynamodb.delete_item(TableName=stack.ledger.table, Key={"id": {"S": victim}})
    bucket = stack.settings.digest_bucket
    for key in _digest_keys(stack, victim_period):
        stack.s3.delete_object(Bucket=bucket, Key=key)  # a delete marker
        versions = stack.s3.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
        for version in versions:
            with pytest.raises(ClientError) as refused:  # Object Lock, compliance mode
                stack.s3.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])
            assert refused.value.response["Error"]["Code"] == "AccessDenied"
    # the schedule runs again later: nothing is sealed twice
    later = stack.now + 5 * P
    assert all(p >= stack.now - 2 * P for p in service.seal_due(later))
    assert not stack.s3.list_object_versions(
        Bucket=bucket, Prefix=digest_store.statement_key(victim_period)
    )["Versions"][0]["IsLatest"]

    result = stack.run("--since", iso(victim_period - 2 * P), "--until", iso(stack.now))
    assert result.exit_code == 1
    named = f"{iso(victim_period)[:16]}Z/{iso(victim_period + P)[:16]}Z"
    (error,) = result.stderr.strip().splitlines()[-1:]
    # victim .. now - 2P were sealed (now - P is not due yet): nine periods deleted
    assert error.startswith("Error: 9 of 12 periods failed verification")
    assert f"(first: {named} digest_deleted)" in error
    code, document = stack.json(
        "--since", iso(victim_period - 2 * P), "--until", iso(stack.now), "--failed-only"
    )
    assert code == 1
    rows = periods(document["periods"])
    assert sorted(rows) == list(range(victim_period, stack.now - P, P))
    # the archive still holds it; the table lost it before its ttl: the hot tier fails
    assert rows[victim_period]["problems"] == [
        "digest_deleted",
        "manifest_deleted",
        "hot_tampered",
    ]
    assert rows[victim_period]["hot_changed"] == [victim]
    assert "deleted before its ttl" in rows[victim_period]["detail"]
    assert "9 failed (digest_deleted 9, hot_tampered 1, manifest_deleted 9)" in document["summary"]


def test_without_object_lock_a_period_resealed_from_a_doctored_table_is_a_late_seal(
    stack: Stack,
) -> None:
    # the same deployment with its digests in a versioned bucket without Object Lock
    plain = f"{stack.name}-unlocked"
    stack.s3.create_bucket(Bucket=plain)
    stack.s3.put_bucket_versioning(Bucket=plain, VersioningConfiguration={"Status": "Enabled"})
    ssm = boto3.client("ssm", region_name=REGION)
    name = f"/tokenbroker/{stack.name}/deployment"
    value = json.loads(ssm.get_parameter(Name=name)["Parameter"]["Value"])
    ssm.put_parameter(
        Name=name, Value=json.dumps({**value, "DIGEST_BUCKET": plain}), Overwrite=True
    )
    # deployed that way (the stack's outputs agree: the CLI checks the parameter against them)
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    body = cloudformation.get_template(StackName=stack.name)["TemplateBody"]
    body = body if isinstance(body, dict) else json.loads(body)
    body["Outputs"]["DigestBucketName"] = {"Value": plain}
    cloudformation.update_stack(StackName=stack.name, TemplateBody=json.dumps(body))
    stack.settings = load_settings(stack.name, boto3.Session())
    service, victim_period, victim = _sealed_with_victim(stack)
    stack.ledger.dynamodb.delete_item(TableName=stack.ledger.table, Key={"id": {"S": victim}})
    for key in _digest_keys(stack, victim_period):
        for version in stack.s3.list_object_versions(Bucket=plain, Prefix=key)["Versions"]:
            stack.s3.delete_object(Bucket=plain, Key=key, VersionId=version["VersionId"])
    # an hour later the sealer, seeing nothing, seals the doctored periods again
    later = stack.now + 60 * P
    resealed = service.seal_due(later)
    assert resealed[0] == victim_period
    code, document = stack.json("--since", iso(victim_period), "--until", iso(victim_period + P))
    assert code == 1
    (row,) = document["periods"]
    assert row["status"] == "late_seal"
    assert row["deleted"] == []  # the doctored table was sealed: only the time tells


def test_a_pinned_digest_key_rejects_statements_signed_by_another(stack: Stack) -> None:
    _sealed_with_victim(stack)
    kms = boto3.client("kms", region_name=REGION)
    other = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    window = ("--since", iso(stack.now - 10 * P), "--until", iso(stack.now - 8 * P))
    code, document = stack.json(*window, "--digest-key-arn", other["Arn"])
    assert code == 1
    assert document["trusted_key"] == other["Arn"]
    assert document["trusted_key_source"] == "--digest-key-arn"
    assert {r["status"] for r in document["periods"]} == {"wrong_key"}
    assert ("wrong_key", "the genesis is not signed by the trusted key") in {
        (p["status"], p["detail"]) for p in document["chain_problems"]
    }
    assert document["summary"].endswith("2 failed (wrong_key 2); chain: wrong_key")
    # pinning the deployment's own key (by its ARN) passes
    code, good = stack.json(*window, "--digest-key-arn", stack.settings.digest_key_id)
    assert code == 0, good
    table = stack.run(*window, "--digest-key-arn", other["Arn"])
    assert f"trusted digest key: {other['Arn']} (from --digest-key-arn)" in table.stdout


def test_an_unknown_pinned_key_is_a_one_line_configuration_error(stack: Stack) -> None:
    missing = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    result = stack.run("--since", "1h", "--digest-key-arn", missing)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == f"Error: digest key {missing} does not exist"
