"""DynamoDB adapter for the UsageLedger port (the usage table declared in template.yaml).

Key design: ``id`` is the record id (for allowed requests the proof's replay key). The
item schema is :mod:`tokenbroker.adapters.ledger_items`; the auditors' indexes and their
sharding are defined in :mod:`tokenbroker.domain.ledger`.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from tokenbroker.adapters.aws import error_code, failing_closed, new_item
from tokenbroker.adapters.dynamodb import CLIENT_ID, JKT, STATUS
from tokenbroker.adapters.ledger_items import ID, to_item
from tokenbroker.domain.errors import ProofReplayed, TemporarilyUnavailable
from tokenbroker.domain.liveness import Liveness, LivenessView
from tokenbroker.domain.models import Status, UsageRecord

#: the item of a ledger record (the schema lives in :mod:`tokenbroker.adapters.ledger_items`)
usage_item = to_item


class DynamoUsageLedger:
    """The edge's one write per request: a conditional PutItem that is both the usage
    record and the replay guard. Device and client liveness come from a bounded-staleness
    view (see :mod:`tokenbroker.domain.liveness` for why not a transaction)."""

    def __init__(self, dynamodb: Any, *, usage_table: str, liveness: LivenessView) -> None:
        self._ddb = dynamodb
        self._usage = usage_table
        self._liveness = liveness

    def record_use(self, record: UsageRecord) -> None:
        self._liveness.require_active(record.client_id, record.jkt)
        # New record or nothing: this (jkt, proof jti) was never accepted before
        # (RFC 9449 §11.1). The item lives for the retention period, far past the
        # proof's acceptance window, so the guard outlives every replay chance.
        if not self._insert(record):
            raise ProofReplayed("the DPoP proof has already been used")

    def record_denial(self, record: UsageRecord) -> None:
        self._insert(record)  # a repeated denial id is the same denial: nothing to add

    def _insert(self, record: UsageRecord) -> bool:
        """Put the record unless its id exists; False if it did."""
        with failing_closed("dynamodb:PutItem"):
            try:
                self._ddb.put_item(**new_item(self._usage, usage_item(record), ID))
            except ClientError as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    return False
                raise
        return True


class DynamoLiveness:
    """Reads a client and a device in one consistent BatchGetItem round trip."""

    def __init__(self, dynamodb: Any, *, clients_table: str, devices_table: str) -> None:
        self._ddb = dynamodb
        self._clients = clients_table
        self._devices = devices_table

    def fetch(self, client_id: str, jkt: str) -> Liveness:
        with failing_closed("dynamodb:BatchGetItem"):
            response = self._ddb.batch_get_item(
                RequestItems={
                    self._clients: {
                        "Keys": [{CLIENT_ID: {"S": client_id}}],
                        "ConsistentRead": True,
                        "ProjectionExpression": "#s",
                        "ExpressionAttributeNames": {"#s": STATUS},
                    },
                    self._devices: {
                        "Keys": [{JKT: {"S": jkt}}],
                        "ConsistentRead": True,
                        "ProjectionExpression": "#s, #c",
                        "ExpressionAttributeNames": {"#s": STATUS, "#c": CLIENT_ID},
                    },
                }
            )
        if response.get("UnprocessedKeys"):
            raise TemporarilyUnavailable("dynamodb:BatchGetItem left keys unprocessed")
        found = response.get("Responses", {})
        client = (found.get(self._clients) or [{}])[0]
        device = (found.get(self._devices) or [{}])[0]
        active = {"S": Status.ACTIVE.value}
        return Liveness(
            client_active=client.get(STATUS) == active,
            device_active=device.get(STATUS) == active
            and device.get(CLIENT_ID) == {"S": client_id},
        )
