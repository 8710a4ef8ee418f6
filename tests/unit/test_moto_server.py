"""The local stack's moto server serves one request at a time.

moto's ``TransactWriteItems`` deep-copies each table it touches and puts the copies
back when the transaction is cancelled: a write that another thread made in between is
silently lost (while its stream record may already have been read). This is how
``tests/people/test_people_e2e.py`` once found an indexed usage record missing from the
usage table. DynamoDB serialises this itself; the local stack must too."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tokenbroker.local.moto_server import MotoServer, listen

TABLE = "race"
WRITES = 150


@pytest.fixture
def ddb() -> Iterator[Any]:
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
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        # a table big enough that each cancelled transaction's deep copy takes a while
        for n in range(300):
            client.put_item(TableName=TABLE, Item={"pk": {"S": f"ballast-{n}"}})
        yield client
    finally:
        server.stop()


def test_a_cancelled_transaction_does_not_undo_a_concurrent_write(ddb: Any) -> None:
    done = threading.Event()
    answers: set[str] = set()  # what each transaction answered (not asserted in the thread)

    def cancelled_transactions() -> None:
        while not done.is_set():
            try:
                ddb.transact_write_items(
                    TransactItems=[
                        {"Put": {"TableName": TABLE, "Item": {"pk": {"S": "tx"}}}},
                        {
                            "ConditionCheck": {
                                "TableName": TABLE,
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

    canceller = threading.Thread(target=cancelled_transactions)
    canceller.start()
    try:
        for n in range(WRITES):
            ddb.put_item(TableName=TABLE, Item={"pk": {"S": f"write-{n}"}})
    finally:
        done.set()
        canceller.join()
    lost = [
        n
        for n in range(WRITES)
        if "Item" not in ddb.get_item(TableName=TABLE, Key={"pk": {"S": f"write-{n}"}})
    ]
    assert lost == [], f"{len(lost)} of {WRITES} writes were undone by a cancelled transaction"
    assert answers == {"TransactionCanceledException"}  # not a 500 from a half-applied race
    assert "Item" not in ddb.get_item(TableName=TABLE, Key={"pk": {"S": "tx"}})
