"""DynamoDB adapter for the UsageLedger port (the usage table declared in template.yaml).

Key design: ``id`` is the record id (for allowed requests the proof's replay key). The
auditors' indexes and their sharding are defined in :mod:`tokenbroker.domain.ledger`.
"""

from __future__ import annotations

from typing import Any

from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import ClientError

from tokenbroker.adapters.aws import error_code, failing_closed
from tokenbroker.domain.errors import (
    ClientDisabled,
    DeviceRevoked,
    ProofReplayed,
    TemporarilyUnavailable,
)
from tokenbroker.domain.ledger import SORT_KEY, hour_of, index_keys
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
    def __init__(
        self, dynamodb: Any, *, usage_table: str, clients_table: str, devices_table: str
    ) -> None:
        self._ddb = dynamodb
        self._usage = usage_table
        self._clients = clients_table
        self._devices = devices_table

    def record_use(self, record: UsageRecord) -> None:
        active = {":active": {"S": Status.ACTIVE.value}}
        transact = [
            # the device is still enrolled to this client and not revoked
            {
                "ConditionCheck": {
                    "TableName": self._devices,
                    "Key": {"jkt": {"S": record.jkt}},
                    "ConditionExpression": "#s = :active AND #c = :client",
                    "ExpressionAttributeNames": {"#s": _STATUS, "#c": "client_id"},
                    "ExpressionAttributeValues": {**active, ":client": {"S": record.client_id}},
                }
            },
            # the client has not been disabled
            {
                "ConditionCheck": {
                    "TableName": self._clients,
                    "Key": {"client_id": {"S": record.client_id}},
                    "ConditionExpression": "#s = :active",
                    "ExpressionAttributeNames": {"#s": _STATUS},
                    "ExpressionAttributeValues": active,
                }
            },
            # the record is new: this (jkt, proof jti) was never accepted (RFC 9449 §11.1).
            # The item lives for the retention period, far past the proof's window.
            {
                "Put": {
                    "TableName": self._usage,
                    "Item": usage_item(record),
                    "ConditionExpression": "attribute_not_exists(#id)",
                    "ExpressionAttributeNames": {"#id": ID},
                }
            },
        ]
        with failing_closed("dynamodb:TransactWriteItems"):
            try:
                self._ddb.transact_write_items(TransactItems=transact)
            except ClientError as exc:
                if error_code(exc) != "TransactionCanceledException":
                    raise
                reasons = exc.response.get("CancellationReasons") or []
                codes = [str(r.get("Code", "")) for r in reasons]
                if len(codes) == 3:
                    if codes[0] == "ConditionalCheckFailed":
                        raise DeviceRevoked("the device key has been revoked") from exc
                    if codes[1] == "ConditionalCheckFailed":
                        raise ClientDisabled("the client has been disabled") from exc
                    if codes[2] == "ConditionalCheckFailed":
                        raise ProofReplayed("the DPoP proof has already been used") from exc
                raise TemporarilyUnavailable("usage record was not written") from exc

    def record_denial(self, record: UsageRecord) -> None:
        with failing_closed("dynamodb:PutItem"):
            try:
                self._ddb.put_item(
                    TableName=self._usage,
                    Item=usage_item(record),
                    ConditionExpression="attribute_not_exists(#id)",
                    ExpressionAttributeNames={"#id": ID},
                )
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
