"""The folded lease on the wire: LeanTransactWriteItems against a fake DynamoDB HTTP
server (tests/edge/test_put_item.py's): the request is ONE signed TransactWriteItems (the
signature checked with botocore's SigV4Auth), its body the usage Put and the counter
Update with an idempotency token per record and attempt; retries resend the same body;
and each cancellation reason, as DynamoDB puts it on the wire, maps to its outcome."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from edge.test_put_item import FakeDynamoDB, _verify_signature, ddb, dynamodb_server, sleeps
from quotas.test_folded_lease import DAY, MINUTE, record
from tokenbroker.adapters.quotas import DynamoQuotaStore, lease_update
from tokenbroker.adapters.usage import client_request_token, usage_item
from tokenbroker.domain.errors import ProofReplayed, TemporarilyUnavailable
from tokenbroker.domain.quotas import QuotaContended, QuotaLimits, ask

__all__ = ["ddb", "dynamodb_server", "sleeps"]
COUNTER = 'use#["tbc_client","alice","*"]'
ASK = ask(QuotaLimits(5), MINUTE, 1)


def _store(ddb: Callable[..., Any]) -> DynamoQuotaStore:
    return DynamoQuotaStore(ddb(), table="quotas", usage_table="usage")


def _cancelled(*reasons: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
    return (
        400,
        {
            "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
            "Message": "Transaction cancelled, please refer cancellation reasons for specific "
            "reasons [...]",
            "CancellationReasons": list(reasons),
        },
        0.0,
    )


NONE = {"Code": "None"}


def test_one_signed_transaction_with_the_record_the_lease_and_a_token(
    dynamodb_server: FakeDynamoDB, ddb: Callable[..., Any]
) -> None:
    granted, _ = _store(ddb).lease_with_use(record(1), COUNTER, DAY, ASK, 0)
    assert granted
    (seen,) = dynamodb_server.seen  # one round trip
    assert seen.headers["X-Amz-Target"] == "DynamoDB_20120810.TransactWriteItems"
    _verify_signature(seen, dynamodb_server.url, "testing")
    body = json.loads(seen.body)
    put, update = (item for item in body["TransactItems"])
    assert put == {
        "Put": {
            "TableName": "usage",
            "Item": usage_item(record(1)),
            "ConditionExpression": "attribute_not_exists(#key)",
            "ExpressionAttributeNames": {"#key": "id"},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    }
    assert update == {
        "Update": {
            **lease_update("quotas", COUNTER, DAY, ASK),
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    }
    token = body["ClientRequestToken"]
    assert token == client_request_token("rk-1", 0)
    assert 1 <= len(token) <= 36
    assert len({token, client_request_token("rk-1", 1), client_request_token("rk-2", 0)}) == 3


def test_a_throttled_transaction_is_resent_identically_then_fails_closed(
    dynamodb_server: FakeDynamoDB, ddb: Callable[..., Any], sleeps: list[float]
) -> None:
    throttled = (
        400,
        {"__type": "com.amazonaws.dynamodb.v20120810#ThrottlingException", "message": "slow"},
        0.0,
    )
    dynamodb_server.script = [throttled, (200, {}, 0.0)]
    assert _store(ddb).lease_with_use(record(1), COUNTER, DAY, ASK, 0)[0]
    first, second = dynamodb_server.seen
    # the same token: had the first attempt landed, DynamoDB would not run it twice
    assert json.loads(first.body) == json.loads(second.body)
    assert second.headers["amz-sdk-request"].startswith("attempt=2")

    dynamodb_server.seen.clear()
    dynamodb_server.script = [throttled] * 10
    with pytest.raises(TemporarilyUnavailable) as failed:
        _store(ddb).lease_with_use(record(1), COUNTER, DAY, ASK, 0)
    assert failed.value.reason == "dependency_failure"
    assert "TransactWriteItems failed (ThrottlingException)" in str(failed.value)


def test_the_counter_s_refusal_reports_its_old_values(
    dynamodb_server: FakeDynamoDB, ddb: Callable[..., Any]
) -> None:
    minute_of_day = MINUTE - DAY * 1440
    old = {"d": {"N": "9"}, f"m{minute_of_day}": {"N": "5"}}
    dynamodb_server.script = [
        _cancelled(NONE, {"Code": "ConditionalCheckFailed", "Item": old, "Message": "x"})
    ]
    granted, state = _store(ddb).lease_with_use(record(1), COUNTER, DAY, ASK, 0)
    assert not granted
    assert (state.count(MINUTE), state.day_count) == (5, 9)


def test_the_usage_put_s_refusal_is_a_replay(
    dynamodb_server: FakeDynamoDB, ddb: Callable[..., Any]
) -> None:
    theirs = usage_item(record(1, request_id="another request"))
    dynamodb_server.script = [
        _cancelled({"Code": "ConditionalCheckFailed", "Item": theirs}, NONE),
        # both refused: the replay decides (nothing was written either way)
        _cancelled(
            {"Code": "ConditionalCheckFailed", "Item": theirs}, {"Code": "ConditionalCheckFailed"}
        ),
    ]
    for _ in range(2):
        with pytest.raises(ProofReplayed) as replayed:
            _store(ddb).lease_with_use(record(1), COUNTER, DAY, ASK, 0)
        assert replayed.value.reason == "proof_replayed"


def test_the_usage_put_finding_our_own_item_is_our_earlier_attempt(
    dynamodb_server: FakeDynamoDB, ddb: Callable[..., Any]
) -> None:
    ours = usage_item(record(1))
    dynamodb_server.script = [_cancelled({"Code": "ConditionalCheckFailed", "Item": ours}, NONE)]
    assert _store(ddb).lease_with_use(record(1), COUNTER, DAY, ASK, 0)[0]


@pytest.mark.parametrize(
    "reasons",
    [
        (NONE, {"Code": "TransactionConflict", "Message": "conflict"}),
        ({"Code": "TransactionConflict"}, NONE),
    ],
)
def test_a_transaction_conflict_is_contention(
    dynamodb_server: FakeDynamoDB, ddb: Callable[..., Any], reasons: tuple[dict[str, Any], ...]
) -> None:
    dynamodb_server.script = [_cancelled(*reasons)]
    with pytest.raises(QuotaContended) as contended:
        _store(ddb).lease_with_use(record(1), COUNTER, DAY, ASK, 0)
    assert contended.value.reason == "quota_contention"
    assert isinstance(contended.value, TemporarilyUnavailable)  # if not retried: closed


@pytest.mark.parametrize(
    "reasons",
    [
        (NONE, {"Code": "ThrottlingError", "Message": "throttled"}),
        ({"Code": "ValidationError", "Message": "too large"}, NONE),
        (NONE, {"Code": "ConditionalCheckFailed"}, {"Code": "ItemCollectionSizeLimitExceeded"}),
        (),
    ],
)
def test_any_other_cancellation_fails_closed(
    dynamodb_server: FakeDynamoDB, ddb: Callable[..., Any], reasons: tuple[dict[str, Any], ...]
) -> None:
    dynamodb_server.script = [_cancelled(*reasons)]
    with pytest.raises(TemporarilyUnavailable) as failed:
        _store(ddb).lease_with_use(record(1), COUNTER, DAY, ASK, 0)
    assert not isinstance(failed.value, QuotaContended)
    assert failed.value.reason == "dependency_failure"
    assert "TransactionCanceledException" in str(failed.value)


def test_another_request_with_the_same_record_id_and_token_is_a_replay(
    dynamodb_server: FakeDynamoDB, ddb: Callable[..., Any]
) -> None:
    """The token derives from the record id (the proof's replay key): a replayed proof
    within DynamoDB's 10 minutes sends the first request's token with other parameters
    (another request id, time), which DynamoDB refuses as a parameter mismatch."""
    mismatch = "com.amazonaws.dynamodb.v20120810#IdempotentParameterMismatchException"
    dynamodb_server.script = [(400, {"__type": mismatch, "message": "mismatch"}, 0.0)]
    with pytest.raises(ProofReplayed) as replayed:
        _store(ddb).lease_with_use(record(1, request_id="replay"), COUNTER, DAY, ASK, 0)
    assert replayed.value.reason == "proof_replayed"
