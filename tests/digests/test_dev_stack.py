"""Tamper evidence on a running `tokenbroker dev` stack (HTTP on loopback, the digest
bucket provisioned from template.yaml with Object Lock): a fresh stack passes
`audit verify --since 2h`; after the digest function's own sealing (what its schedule
runs), an attacker deletes a sealed record and hides the period's digests behind delete
markers (deleting versions is refused), the sealer runs again, and `audit verify`
exits 1 naming the period."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from click.testing import CliRunner, Result

from tokenbroker import bootstrap
from tokenbroker.adapters import digest_store
from tokenbroker.adapters.usage import usage_item
from tokenbroker.cli.main import cli
from tokenbroker.domain.models import Decision, EventType, UsageRecord
from tokenbroker.local.stack import LocalStack

pytestmark = pytest.mark.http
HOUR = 3_600_000


@pytest.fixture
def stack() -> Iterator[LocalStack]:
    # function-scoped: it must start after conftest's fake-AWS environment fixture
    with LocalStack(
        "127.0.0.1", port=0, stack_name="tokenbroker-evidence", schedule_interval=3600
    ) as local:
        yield local


def _verify(stack: LocalStack, *args: str) -> Result:
    command = ["--stack", stack.exports["TOKENBROKER_STACK"], "audit", "verify", *args]
    return CliRunner().invoke(cli, command)


def _client(stack: LocalStack, service: str) -> Any:
    return boto3.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name=stack.exports["AWS_DEFAULT_REGION"],
    ).client(service, endpoint_url=stack.moto_url)


def _allowed(at_ms: int) -> UsageRecord:
    record_id = uuid.uuid4().hex
    return UsageRecord(
        record_id=record_id,
        at_ms=at_ms,
        decision=Decision.ALLOW,
        reason="ok",
        principal="tbc_dev",
        client_id="tbc_dev",
        jkt="jkt-dev",
        token_jti="jti-" + record_id,
        proof_jti_hash="ph-" + record_id,
        method="GET",
        route="/v1/whoami",
        resource="",
        source_ip="127.0.0.1",
        user_agent="evidence-tests",
        request_id="req-" + record_id,
        retain_until=at_ms // 1000 + 86_400,
        event=EventType.REQUEST,
    )


def test_a_fresh_dev_stack_passes_verify_and_a_hidden_deletion_fails_it(
    stack: LocalStack,
) -> None:
    fresh = _verify(stack, "--since", "2h")
    assert fresh.exit_code == 0, fresh.output
    assert fresh.stdout.strip().splitlines()[-2].endswith(", 0 failed")

    settings = bootstrap.default().settings
    period = settings.digest_period_seconds * 1000
    now = int(time.time() * 1000)
    victim_period = now - now % period - 3 * period  # due: it ended over a grace ago
    victim = _allowed(victim_period + 10)
    ddb = _client(stack, "dynamodb")
    for record in (victim, _allowed(victim_period + 20), _allowed(victim_period + period + 5)):
        ddb.put_item(TableName=settings.usage_table, Item=usage_item(record))
    stack.drain()  # the stream's two consumers ran in-process: the archive holds them
    archived = [x["id"] for x in bootstrap.default().archive_reader.records(now - HOUR, now)]
    assert victim.record_id in archived
    digests = bootstrap.default().digests
    assert victim_period in digests.seal_due()  # what the scheduled function runs
    sealed = _verify(stack, "--since", "15m")
    assert sealed.exit_code == 0, sealed.output

    # the attacker: DeleteItem, then every S3 delete it can make on the digests
    ddb.delete_item(TableName=settings.usage_table, Key={"id": {"S": victim.record_id}})
    s3, bucket = _client(stack, "s3"), settings.digest_bucket
    stem = digest_store.statement_key(victim_period)[: -len(".json")]
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=bucket, Prefix=digest_store.PREFIX)["Contents"]
        if o["Key"] >= stem and o["Key"] != digest_store.GENESIS_KEY
    ]
    assert digest_store.statement_key(victim_period) in keys
    for key in keys:
        s3.delete_object(Bucket=bucket, Key=key)
        for version in s3.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", []):
            with pytest.raises(ClientError):
                s3.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])
    assert victim_period not in digests.seal_due()  # never sealed twice

    result = _verify(stack, "--since", "15m")
    assert result.exit_code == 1
    named = time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(victim_period // 1000))
    row = next(line for line in result.stdout.splitlines() if line.startswith(named))
    assert "digest_deleted" in row
    assert victim.record_id in row
    assert f"(first: {named}/" in result.stderr
