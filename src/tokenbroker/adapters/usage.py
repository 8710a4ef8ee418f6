"""DynamoDB adapter for the UsageLedger port (the usage table declared in template.yaml).

Key design: ``id`` is the record id (for allowed requests the proof's replay key). The
item schema is :mod:`tokenbroker.adapters.ledger_items`; the auditors' indexes and their
sharding are defined in :mod:`tokenbroker.domain.ledger`.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from tokenbroker.adapters.aws import error_code, failing_closed, new_item
from tokenbroker.adapters.ledger_items import ID, to_item
from tokenbroker.adapters.put_item import LeanPutItem
from tokenbroker.domain.errors import ProofReplayed, TemporarilyUnavailable
from tokenbroker.domain.liveness import Liveness
from tokenbroker.domain.models import Status, UsageRecord

#: the item of a ledger record (the schema lives in :mod:`tokenbroker.adapters.ledger_items`)
usage_item = to_item


class DynamoUsageLedger:
    """The edge's one write per request: a conditional PutItem that is both the usage
    record and the replay guard. What the client and device may still do is decided
    before (the service's liveness view, see :mod:`tokenbroker.domain.liveness`)."""

    def __init__(
        self, dynamodb: Any, *, usage_table: str, hot_window_days: int | None = None
    ) -> None:
        self._ddb = dynamodb
        self._usage = usage_table
        #: the item's TTL is the hot window's end (the archive keeps the retention)
        self._hot_window_days = hot_window_days
        self._put_item = LeanPutItem.for_client(dynamodb)  # the write's transport

    def record_use(self, record: UsageRecord) -> None:
        # New record or nothing: this (jkt, proof jti) was never accepted before
        # (RFC 9449 §11.1). The item lives for the retention period, far past the
        # proof's acceptance window, so the guard outlives every replay chance.
        if not self._insert(record):
            raise ProofReplayed("the DPoP proof has already been used")

    def record_denial(self, record: UsageRecord) -> None:
        # Denial ids are per (token, minute, slot): an id that exists already is the
        # rate limit at work (see services/authorization.py), nothing to add.
        self._insert(record)

    def _insert(self, record: UsageRecord) -> bool:
        """Put the record unless its id exists; False if it did."""
        item = usage_item(record, hot_window_days=self._hot_window_days)
        with failing_closed("dynamodb:PutItem"):
            try:
                # botocore's put_item semantics at a fraction of its CPU (put_item.py)
                self._put_item(
                    **new_item(self._usage, item, ID), ReturnValuesOnConditionCheckFailure="ALL_OLD"
                )
            except ClientError as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    # A retry whose first attempt landed (its answer was lost) finds the
                    # very item it sent: this request's own record, not a replay. Another
                    # request's record differs (request id, time) and is a replay. A
                    # record without a request id cannot tell the two apart: a replay.
                    return bool(record.request_id) and exc.response.get("Item") == item
                raise
        return True


class DynamoLiveness:
    """Reads a client and a device in one consistent BatchGetItem round trip: the
    client's status, scopes and tokens-not-before, the device's status and client."""

    def __init__(self, dynamodb: Any, *, clients_table: str, devices_table: str) -> None:
        from tokenbroker.adapters import dynamodb as names  # imports this module

        self._ddb = dynamodb
        self._clients = clients_table
        self._devices = devices_table
        self._status = names.STATUS
        self._client_id = names.CLIENT_ID
        self._scopes = names.SCOPES
        self._not_before = names.TOKENS_NOT_BEFORE
        self._jkt = names.JKT

    def fetch(self, client_id: str, jkt: str) -> Liveness:
        with failing_closed("dynamodb:BatchGetItem"):
            response = self._ddb.batch_get_item(
                RequestItems={
                    self._clients: {
                        "Keys": [{self._client_id: {"S": client_id}}],
                        "ConsistentRead": True,
                        "ProjectionExpression": "#s, #sc, #nb",
                        "ExpressionAttributeNames": {
                            "#s": self._status,
                            "#sc": self._scopes,
                            "#nb": self._not_before,
                        },
                    },
                    self._devices: {
                        "Keys": [{self._jkt: {"S": jkt}}],
                        "ConsistentRead": True,
                        "ProjectionExpression": "#s, #c",
                        "ExpressionAttributeNames": {"#s": self._status, "#c": self._client_id},
                    },
                }
            )
        if response.get("UnprocessedKeys"):
            raise TemporarilyUnavailable("dynamodb:BatchGetItem left keys unprocessed")
        found = response.get("Responses", {})
        client = (found.get(self._clients) or [{}])[0]
        device = (found.get(self._devices) or [{}])[0]
        active = {"S": Status.ACTIVE.value}
        scopes = client.get(self._scopes, {}).get("SS", [])
        not_before = client.get(self._not_before, {}).get("N", "0")
        try:
            tokens_not_before = int(not_before)
        except ValueError as exc:  # never written by us: refuse rather than guess
            raise TemporarilyUnavailable("the client's tokens_not_before is invalid") from exc
        return Liveness(
            client_active=client.get(self._status) == active,
            device_active=device.get(self._status) == active
            and device.get(self._client_id) == {"S": client_id},
            client_scopes=frozenset(s for s in scopes if isinstance(s, str)),
            tokens_not_before=tokens_not_before,
        )
