"""The nonce secret from Secrets Manager (adapters/nonce_secret.py), on moto: AWSCURRENT
signs, AWSPREVIOUS verifies (rotation overlap), a bounded cache, and every AWS failure
is TemporarilyUnavailable (fail closed), injected with botocore events."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError
from moto import mock_aws

from tokenbroker.adapters.nonce_secret import SecretsManagerNonceSecrets
from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.errors import TemporarilyUnavailable

A, B = "a" * 64, "b" * 64


@pytest.fixture
def client() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="eu-west-1")


def make(client: Any, value: str = A) -> tuple[str, FixedClock, SecretsManagerNonceSecrets]:
    arn = client.create_secret(Name="nonce", SecretString=value)["ARN"]
    clock = FixedClock(1_000)
    return arn, clock, SecretsManagerNonceSecrets(client, arn, clock=clock, ttl=300)


def test_a_secret_never_rotated_is_the_only_secret(client: Any) -> None:
    _, _, secrets = make(client)
    assert secrets() == (A.encode(),)


def test_after_a_rotation_the_new_value_signs_and_the_old_one_still_verifies(
    client: Any,
) -> None:
    arn, clock, secrets = make(client)
    assert secrets() == (A.encode(),)
    client.put_secret_value(SecretId=arn, SecretString=B)
    assert secrets() == (A.encode(),)  # cached within its bounded lifetime
    clock.advance(300)
    assert secrets() == (B.encode(), A.encode())


def test_the_cache_means_one_read_per_lifetime(client: Any) -> None:
    _, clock, secrets = make(client)
    calls: list[str] = []
    client.meta.events.register("before-send.secrets-manager.GetSecretValue", _count(calls))
    secrets()
    secrets()
    clock.advance(299)
    secrets()
    assert len(calls) == 2  # AWSCURRENT + AWSPREVIOUS, once
    clock.advance(1)
    secrets()
    assert len(calls) == 4


def _count(calls: list[str]) -> Any:
    def hook(**_: Any) -> None:
        calls.append("GetSecretValue")

    return hook


def _error(code: str) -> Any:
    def reply(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        response = AWSResponse("https://secretsmanager", 400, {}, b"")
        return response, {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {}}

    return reply


@pytest.mark.parametrize(
    "code", ["ThrottlingException", "AccessDeniedException", "ResourceNotFoundException"]
)
def test_an_aws_failure_fails_closed(client: Any, code: str) -> None:
    _, _, secrets = make(client)
    client.meta.events.register_first("before-call.secrets-manager.GetSecretValue", _error(code))
    with pytest.raises(TemporarilyUnavailable) as caught:
        secrets()
    assert code in caught.value.description


def test_a_timeout_fails_closed(client: Any) -> None:
    _, _, secrets = make(client)

    def timeout(request: Any, **_: Any) -> None:
        raise ReadTimeoutError(endpoint_url=str(request.url))

    client.meta.events.register_first("before-send.secrets-manager.GetSecretValue", timeout)
    with pytest.raises(TemporarilyUnavailable):
        secrets()


def test_a_failure_after_the_lifetime_is_not_hidden_by_the_stale_value(client: Any) -> None:
    _, clock, secrets = make(client)
    secrets()
    clock.advance(300)
    client.meta.events.register_first(
        "before-call.secrets-manager.GetSecretValue", _error("InternalServiceError")
    )
    with pytest.raises(TemporarilyUnavailable):
        secrets()
