"""The local stack's moto server serves one request at a time.

moto's ``TransactWriteItems`` deep-copies each table it touches and puts the copies
back when the transaction is cancelled: a write that another thread made in between is
silently lost (while its stream record may already have been read). This is how
``tests/people/test_people_e2e.py`` once found an indexed usage record missing from the
usage table. DynamoDB serialises this itself; the local stack must too."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tokenbroker.local.moto_server import MotoServer, listen

TABLE = "race"
WRITES = 150


@contextlib.contextmanager
def _served(table: str, ballast: int = 0) -> Iterator[Any]:
    """A moto server of our own and a client of it, with ``table`` created."""
    sock = listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = MotoServer(sock)
    server.start()
    try:
        client = boto3.client(
            "dynamodb",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"mode": "standard", "max_attempts": 1}),
        )
        client.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        # a table big enough that each cancelled transaction's deep copy takes a while
        for n in range(ballast):
            client.put_item(TableName=table, Item={"pk": {"S": f"ballast-{n}"}})
        yield client
    finally:
        server.stop()


@pytest.fixture
def ddb() -> Iterator[tuple[Any, str]]:
    # a name of its own: moto's backends outlive a server (they are the process's)
    table = f"{TABLE}-{uuid.uuid4().hex[:8]}"
    with _served(table, ballast=300) as client:
        yield client, table


def _cancelling(ddb: Any, table: str, done: threading.Event, answers: set[str]) -> threading.Thread:
    def cancelled_transactions() -> None:
        while not done.is_set():
            try:
                ddb.transact_write_items(
                    TransactItems=[
                        {"Put": {"TableName": table, "Item": {"pk": {"S": "tx"}}}},
                        {
                            "ConditionCheck": {
                                "TableName": table,
                                "Key": {"pk": {"S": "ballast-0"}},
                                "ConditionExpression": "attribute_not_exists(pk)",
                            }
                        },
                    ]
                )
            except ClientError as error:
                answers.add(error.response["Error"]["Code"])
            else:
                answers.add("committed")

    return threading.Thread(target=cancelled_transactions)


def test_a_cancelled_transaction_does_not_undo_a_concurrent_write(
    ddb: tuple[Any, str],
) -> None:
    client, table = ddb
    _assert_no_write_lost((client, table), client, table)


def test_two_servers_in_one_process_do_not_undo_each_others_writes(
    ddb: tuple[Any, str],
) -> None:
    """moto's backends are the process's, not a server's: a transaction cancelled
    through one server puts back the table a client of a second server is writing to
    (here the same table, reached through both). So the one lock is the process's."""
    client, table = ddb
    with _served(f"other-{uuid.uuid4().hex[:8]}") as other:
        _assert_no_write_lost((client, table), other, table)


def _assert_no_write_lost(cancelling: tuple[Any, str], writing: Any, table: str) -> None:
    done = threading.Event()
    answers: set[str] = set()  # what each transaction answered (not asserted in the thread)
    canceller = _cancelling(*cancelling, done, answers)
    canceller.start()
    try:
        for n in range(WRITES):
            writing.put_item(TableName=table, Item={"pk": {"S": f"write-{n}"}})
    finally:
        done.set()
        canceller.join()
    lost = [
        n
        for n in range(WRITES)
        if "Item" not in writing.get_item(TableName=table, Key={"pk": {"S": f"write-{n}"}})
    ]
    assert lost == [], f"{len(lost)} of {WRITES} writes were undone by a cancelled transaction"
    assert answers == {"TransactionCanceledException"}  # not a 500 from a half-applied race
    client, own = cancelling
    assert "Item" not in client.get_item(TableName=own, Key={"pk": {"S": "tx"}})
