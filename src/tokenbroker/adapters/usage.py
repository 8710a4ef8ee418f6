"""DynamoDB adapter for the UsageLedger port (the usage table declared in template.yaml).

Key design: ``id`` is the record id (for allowed requests the proof's replay key). The
auditors' indexes and their sharding are defined in :mod:`tokenbroker.domain.ledger`.
"""

from __future__ import annotations

from typing import Any

from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import ClientError

from tokenbroker.adapters.aws import error_code, failing_closed, new_item
from tokenbroker.adapters.put_item import LeanPutItem
from tokenbroker.domain.errors import ProofReplayed, TemporarilyUnavailable
from tokenbroker.domain.ledger import SORT_KEY, hour_of, index_keys
from tokenbroker.domain.liveness import Liveness, LivenessView
from tokenbroker.domain.models import Status, UsageRecord

ID = "id"
AT = SORT_KEY
EVENT = "event"
DECISION = "decision"
REASON = "reason"
PRINCIPAL = "principal"
CLIENT_ID = "client_id"
JKT = "jkt"
TOKEN_JTI = "token_jti"
PROOF_JTI_HASH = "proof_jti_hash"
METHOD = "method"
ROUTE = "route"
RESOURCE = "resource"
SOURCE_IP = "source_ip"
USER_AGENT = "user_agent"
REQUEST_ID = "request_id"
TTL = "ttl"
ACTOR = "actor"
# attributes of the clients/devices tables used in the condition checks
_STATUS = "status"

_ser = TypeSerializer()


def usage_item(record: UsageRecord) -> dict[str, Any]:
    """The item of a ledger record (DynamoDB JSON). Empty values are left out."""
    values: dict[str, Any] = {
        ID: record.record_id,
        AT: record.at_ms,
        EVENT: record.event.value,
        DECISION: record.decision.value,
        REASON: record.reason,
        PRINCIPAL: record.principal,
        CLIENT_ID: record.client_id,
        JKT: record.jkt,
        TOKEN_JTI: record.token_jti,
        PROOF_JTI_HASH: record.proof_jti_hash,
        METHOD: record.method,
        ROUTE: record.route,
        RESOURCE: record.resource,
        SOURCE_IP: record.source_ip,
        USER_AGENT: record.user_agent,
        REQUEST_ID: record.request_id,
        TTL: record.retain_until,
        ACTOR: record.actor,
        **index_keys(
            record.record_id,
            {
                "principal": record.principal,
                "jkt": record.jkt,
                "token_jti": record.token_jti,
                "resource": record.resource,
                "hour": hour_of(record.at_ms),
            },
        ),
    }
    return {k: _ser.serialize(v) for k, v in values.items() if v != ""}


class DynamoUsageLedger:
    """The edge's one write per request: a conditional PutItem that is both the usage
    record and the replay guard. Device and client liveness come from a bounded-staleness
    view (see :mod:`tokenbroker.domain.liveness` for why not a transaction)."""

    def __init__(self, dynamodb: Any, *, usage_table: str, liveness: LivenessView) -> None:
        self._ddb = dynamodb
        self._usage = usage_table
        self._liveness = liveness
        self._put_item = LeanPutItem.for_client(dynamodb)  # the write's transport

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
        item = usage_item(record)
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
                    # request's record differs (request id, time) and is a replay.
                    return bool(exc.response.get("Item") == item)
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
                        "Keys": [{"client_id": {"S": client_id}}],
                        "ConsistentRead": True,
                        "ProjectionExpression": "#s",
                        "ExpressionAttributeNames": {"#s": _STATUS},
                    },
                    self._devices: {
                        "Keys": [{"jkt": {"S": jkt}}],
                        "ConsistentRead": True,
                        "ProjectionExpression": "#s, #c",
                        "ExpressionAttributeNames": {"#s": _STATUS, "#c": "client_id"},
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
            client_active=client.get(_STATUS) == active,
            device_active=device.get(_STATUS) == active
            and device.get("client_id") == {"S": client_id},
        )
