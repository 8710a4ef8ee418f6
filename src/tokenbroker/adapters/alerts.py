"""DynamoDB, EventBridge and SNS adapters for sharing detection and containment.

The sharing table (template.yaml ``SharingTable``, key ``pk`` + ``sk``, TTL ``ttl``)
holds two kinds of item:

- window state, ``pk = "win#<rule>#<subject>"``, ``sk = <window start ms>``: a string
  set ``m`` of networks (per device) or devices (per principal). One UpdateItem per
  (rule, subject, window) per batch; ``ADD`` of a set is a union, so a retried batch
  adds nothing twice. The set stops growing at ``MAX_SET`` members (the condition):
  items stay small whatever a flood looks like, and the window then counts as over.
- the burst rule's hourly counts, ``pk = "burst#<principal>"``, ``sk = "hours"``: one
  number ``h<epoch hour>`` per hour of the principal's baseline and the current hour
  (at most 169, under 2 KB), ADDed by one UpdateItem per principal per batch that
  returns the whole item (ALL_NEW): the rule reads nothing else. Hours before the
  baseline are REMOVEd (the one that just fell out in the same update; older ones,
  left by an idle principal, in a cleanup update when seen); TTL after the baseline.
- alerts, ``pk = "alert#<YYYYMMDD>"``, ``sk = <alert id>``: written once (a conditional
  put in the same transaction as the finding's ledger record), so a retried batch
  neither duplicates an alert nor its ledger event. ``delivered`` says whether it was
  published and contained; a retry finishes an alert that was written but not delivered.

Containment state lives on the items the edge and the token endpoint already read: the
client's ``containment`` mode (clients table) and the device's ``step_up_at`` (devices
table; the liveness view and the token endpoint refuse the device while it is set).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from tokenbroker.adapters.aws import error_code, failing_closed, new_item
from tokenbroker.adapters.dynamodb import CLIENT_ID, JKT, STATUS, STEP_UP_AT, ledger_put
from tokenbroker.adapters.ledger_items import HOT_WINDOW_DAYS
from tokenbroker.domain.errors import NotFound, TemporarilyUnavailable
from tokenbroker.domain.models import Status, UsageRecord
from tokenbroker.domain.sharing import MAX_SET, Alert, WindowDelta, WindowState, alert_day

PK = "pk"
SK = "sk"
TTL = "ttl"
MEMBERS = "m"
PRINCIPAL = "principal"
CLIENT = "client_id"
DEVICE = "jkt"
# alert attributes
RULE = "rule"
SUMMARY = "summary"
EVIDENCE = "evidence"
AT_MS = "at_ms"
WINDOW_START = "window_start_ms"
ALERT_STATUS = "status"
CONTAINMENT = "containment"
DELIVERED = "delivered"
ACKED_BY = "acked_by"
ACKED_AT = "acked_at_ms"
# on the clients table: the client's containment mode; on the devices table: step-up
CLIENT_CONTAINMENT = "containment"
#: the burst counts: ``h<epoch hour>`` (requests in that hour)
HOUR_PREFIX = "h"

_ser = TypeSerializer()
_de = TypeDeserializer()


def _item(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in values.items() if v is not None and v != ""}


def _plain(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _de.deserialize(v) for k, v in item.items()}


def _burst_key(principal: str) -> dict[str, Any]:
    return {PK: {"S": "burst#" + principal}, SK: {"S": "hours"}}


def _alert_key(alert_id: str) -> dict[str, Any]:
    day = alert_id.partition("-")[0]
    return _item({PK: f"alert#{day}", SK: alert_id})


def _alert(item: Mapping[str, Any]) -> Alert:
    v = _plain(item)
    return Alert(
        alert_id=str(v[SK]),
        rule=str(v.get(RULE, "")),
        principal=str(v.get(PRINCIPAL, "")),
        client_id=str(v.get(CLIENT, "")),
        jkt=str(v.get(DEVICE, "")),
        summary=str(v.get(SUMMARY, "")),
        evidence=tuple(str(e) for e in v.get(EVIDENCE, [])),
        at_ms=int(v.get(AT_MS, 0)),
        window_start_ms=int(v.get(WINDOW_START, 0)),
        status=str(v.get(ALERT_STATUS, "open")),
        containment=str(v.get(CONTAINMENT, "audit")),
        acked_by=str(v.get(ACKED_BY, "")),
        acked_at_ms=int(v.get(ACKED_AT, 0)),
    )


class DynamoSharingStore:
    """Window state and alerts (the sharing table)."""

    def __init__(
        self, dynamodb: Any, *, table: str, usage_table: str, hot_window_days: int = HOT_WINDOW_DAYS
    ) -> None:
        self._ddb = dynamodb
        self._table = table
        self._usage = usage_table
        self._hot_window_days = hot_window_days

    def add_window(self, delta: WindowDelta, *, expires_at: int) -> WindowState:
        key = delta.key
        with failing_closed("dynamodb:UpdateItem"):
            try:
                response = self._ddb.update_item(
                    TableName=self._table,
                    Key=_item({PK: f"win#{key.rule}#{key.subject}", SK: str(key.start_ms)}),
                    UpdateExpression=(
                        "ADD #m :m SET #p = if_not_exists(#p, :p), #c = if_not_exists(#c, :c),"
                        " #t = if_not_exists(#t, :t)"
                    ),
                    # bounded items: a window already at MAX_SET members takes no more
                    ConditionExpression="attribute_not_exists(#m) OR size(#m) < :cap",
                    ExpressionAttributeNames={
                        "#m": MEMBERS,
                        "#p": PRINCIPAL,
                        "#c": CLIENT,
                        "#t": TTL,
                    },
                    ExpressionAttributeValues={
                        ":m": {"SS": sorted(delta.members)},
                        ":p": {"S": delta.principal or "-"},
                        ":c": {"S": delta.client_id or "-"},
                        ":t": {"N": str(expires_at)},
                        ":cap": {"N": str(MAX_SET)},
                    },
                    ReturnValues="ALL_NEW",
                )
            except ClientError as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    return WindowState(delta, delta.members, overflow=True)
                raise
        members = response.get("Attributes", {}).get(MEMBERS, {}).get("SS", [])
        return WindowState(delta, frozenset(members) | delta.members)

    # ---- the burst rule's own hourly counts (services/sharing.py::_bursts) ---------
    def add_hours(
        self, principal: str, counts: Mapping[int, int], *, keep_from: int, expires_at: int
    ) -> dict[int, int]:
        """ADD ``counts`` (epoch hour -> requests, hours >= ``keep_from``) to the
        principal's hours; returns its hours from ``keep_from`` on, after the update."""
        adds = {hour: n for hour, n in counts.items() if hour >= keep_from and n > 0}
        names = {"#t": TTL}
        values: dict[str, Any] = {":t": {"N": str(expires_at)}}
        added = []
        for i, (hour, n) in enumerate(sorted(adds.items())):
            names[f"#h{i}"] = f"{HOUR_PREFIX}{hour}"
            values[f":h{i}"] = {"N": str(n)}
            added.append(f"#h{i} :h{i}")
        update = (f"ADD {', '.join(added)} " if added else "") + "SET #t = :t REMOVE #old"
        names["#old"] = f"{HOUR_PREFIX}{keep_from - 1}"  # the hour that just fell out
        with failing_closed("dynamodb:UpdateItem"):
            item = self._ddb.update_item(
                TableName=self._table,
                Key=_burst_key(principal),
                UpdateExpression=update,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            ).get("Attributes", {})
        return self._kept(principal, item, keep_from)

    def hours(self, principal: str, *, keep_from: int) -> dict[int, int]:
        """The principal's hours from ``keep_from`` on (a redelivered batch adds
        nothing, but its principals are evaluated again: a consistent GetItem)."""
        with failing_closed("dynamodb:GetItem"):
            item = self._ddb.get_item(
                TableName=self._table, Key=_burst_key(principal), ConsistentRead=True
            ).get("Item", {})
        return self._kept(principal, item, keep_from)

    def _kept(self, principal: str, item: Mapping[str, Any], keep_from: int) -> dict[int, int]:
        hours: dict[int, int] = {}
        for name, value in item.items():
            if name.startswith(HOUR_PREFIX) and name[1:].isdigit():
                try:
                    hours[int(name[1:])] = int(value["N"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise TemporarilyUnavailable(
                        f"the burst counts of a principal hold an invalid count ({name})"
                    ) from exc
        stale = sorted(h for h in hours if h < keep_from)[:100]
        if stale:  # left by a principal idle when its hour fell out: one cleanup write
            with failing_closed("dynamodb:UpdateItem"):
                self._ddb.update_item(
                    TableName=self._table,
                    Key=_burst_key(principal),
                    UpdateExpression="REMOVE " + ", ".join(f"#s{i}" for i in range(len(stale))),
                    ExpressionAttributeNames={
                        f"#s{i}": f"{HOUR_PREFIX}{h}" for i, h in enumerate(stale)
                    },
                )
        return {h: n for h, n in hours.items() if h >= keep_from}

    def put_alert(self, alert: Alert, record: UsageRecord, *, expires_at: int) -> bool:
        """Write the alert and its ledger record, both or neither; False if the alert
        was written before (a retried batch)."""
        item = _alert_key(alert.alert_id) | _item(
            {
                RULE: alert.rule,
                PRINCIPAL: alert.principal,
                CLIENT: alert.client_id,
                DEVICE: alert.jkt,
                SUMMARY: alert.summary,
                EVIDENCE: list(alert.evidence),
                AT_MS: alert.at_ms,
                WINDOW_START: alert.window_start_ms,
                ALERT_STATUS: alert.status,
                CONTAINMENT: alert.containment,
                DELIVERED: False,
                TTL: expires_at,
            }
        )
        with failing_closed("dynamodb:TransactWriteItems"):
            try:
                self._ddb.transact_write_items(
                    TransactItems=[
                        {"Put": new_item(self._table, item, SK)},
                        ledger_put(self._usage, record, self._hot_window_days),
                    ]
                )
            except ClientError as exc:
                if error_code(exc) == "TransactionCanceledException" and _first_failed(exc):
                    return False
                raise
        return True

    def mark_delivered(self, alert_id: str) -> None:
        with failing_closed("dynamodb:UpdateItem"):
            self._ddb.update_item(
                TableName=self._table,
                Key=_alert_key(alert_id),
                UpdateExpression="SET #d = :t",
                ExpressionAttributeNames={"#d": DELIVERED},
                ExpressionAttributeValues={":t": {"BOOL": True}},
            )

    def delivered(self, alert_id: str) -> bool:
        with failing_closed("dynamodb:GetItem"):
            item = self._ddb.get_item(
                TableName=self._table, Key=_alert_key(alert_id), ConsistentRead=True
            ).get("Item")
        return bool(item and item.get(DELIVERED, {}).get("BOOL"))

    def get_alert(self, alert_id: str) -> Alert | None:
        with failing_closed("dynamodb:GetItem"):
            item = self._ddb.get_item(
                TableName=self._table, Key=_alert_key(alert_id), ConsistentRead=True
            ).get("Item")
        return _alert(item) if item else None

    def list_alerts(self, days: list[str]) -> Iterator[Alert]:
        """The alerts of the given UTC days (``YYYYMMDD``), oldest day first."""
        for day in days:
            kwargs: dict[str, Any] = {
                "TableName": self._table,
                "KeyConditionExpression": "#pk = :pk",
                "ExpressionAttributeNames": {"#pk": PK},
                "ExpressionAttributeValues": {":pk": {"S": f"alert#{day}"}},
            }
            while True:
                with failing_closed("dynamodb:Query"):
                    page = self._ddb.query(**kwargs)
                yield from (_alert(item) for item in page.get("Items", []))
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def ack(self, alert_id: str, *, actor: str, at_ms: int) -> Alert:
        with failing_closed("dynamodb:UpdateItem"):
            try:
                response = self._ddb.update_item(
                    TableName=self._table,
                    Key=_alert_key(alert_id),
                    UpdateExpression="SET #s = :acked, #by = :by, #at = :at",
                    ConditionExpression="attribute_exists(#sk)",
                    ExpressionAttributeNames={
                        "#s": ALERT_STATUS,
                        "#by": ACKED_BY,
                        "#at": ACKED_AT,
                        "#sk": SK,
                    },
                    ExpressionAttributeValues=_item(
                        {":acked": "acked", ":by": actor or "-", ":at": at_ms}
                    ),
                    ReturnValues="ALL_NEW",
                )
            except ClientError as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    raise NotFound(f"no alert {alert_id}") from exc
                raise
        return _alert(response["Attributes"])


def _first_failed(exc: ClientError) -> bool:
    reasons = exc.response.get("CancellationReasons") or []
    return bool(reasons) and reasons[0].get("Code") == "ConditionalCheckFailed"


class DynamoContainmentStore:
    """The client's containment mode and the device's step-up flag."""

    def __init__(
        self,
        dynamodb: Any,
        *,
        clients_table: str,
        devices_table: str,
        usage_table: str,
        hot_window_days: int = HOT_WINDOW_DAYS,
    ):
        self._ddb = dynamodb
        self._clients = clients_table
        self._devices = devices_table
        self._usage = usage_table
        self._hot_window_days = hot_window_days

    def mode(self, client_id: str) -> str:
        """The client's mode; "" if none is set (then the deployment's default holds)."""
        with failing_closed("dynamodb:GetItem"):
            item = self._ddb.get_item(
                TableName=self._clients,
                Key={CLIENT_ID: {"S": client_id}},
                ConsistentRead=True,
                ProjectionExpression="#m",
                ExpressionAttributeNames={"#m": CLIENT_CONTAINMENT},
            ).get("Item")
        return str((item or {}).get(CLIENT_CONTAINMENT, {}).get("S", ""))

    def set_mode(self, client_id: str, mode: str, record: UsageRecord) -> None:
        with failing_closed("dynamodb:TransactWriteItems"):
            try:
                self._ddb.transact_write_items(
                    TransactItems=[
                        {
                            "Update": {
                                "TableName": self._clients,
                                "Key": {CLIENT_ID: {"S": client_id}},
                                "UpdateExpression": "SET #m = :m",
                                "ConditionExpression": "attribute_exists(#id)",
                                "ExpressionAttributeNames": {
                                    "#m": CLIENT_CONTAINMENT,
                                    "#id": CLIENT_ID,
                                },
                                "ExpressionAttributeValues": {":m": {"S": mode}},
                            }
                        },
                        ledger_put(self._usage, record, self._hot_window_days),
                    ]
                )
            except ClientError as exc:
                if error_code(exc) == "TransactionCanceledException" and _first_failed(exc):
                    raise NotFound(f"client {client_id} does not exist") from exc
                raise

    def require_step_up(self, jkt: str, client_id: str, at: int, record: UsageRecord) -> bool:
        """Flag an active device of ``client_id``; False if it is not one (revoked)."""
        with failing_closed("dynamodb:TransactWriteItems"):
            try:
                self._ddb.transact_write_items(
                    TransactItems=[
                        {
                            "Update": {
                                "TableName": self._devices,
                                "Key": {JKT: {"S": jkt}},
                                "UpdateExpression": "SET #su = :at",
                                "ConditionExpression": "#s = :active AND #c = :c",
                                "ExpressionAttributeNames": {
                                    "#su": STEP_UP_AT,
                                    "#s": STATUS,
                                    "#c": CLIENT_ID,
                                },
                                "ExpressionAttributeValues": {
                                    ":at": {"N": str(at)},
                                    ":active": {"S": Status.ACTIVE.value},
                                    ":c": {"S": client_id},
                                },
                            }
                        },
                        ledger_put(self._usage, record, self._hot_window_days),
                    ]
                )
            except ClientError as exc:
                if error_code(exc) == "TransactionCanceledException":
                    reasons = exc.response.get("CancellationReasons") or []
                    codes = [r.get("Code") for r in reasons]
                    if codes and codes[0] == "ConditionalCheckFailed":
                        return False
                    if len(codes) > 1 and codes[1] == "ConditionalCheckFailed":
                        return True  # the same finding's record: flagged before
                raise
        return True

    def step_up_required(self, jkt: str) -> bool:
        with failing_closed("dynamodb:GetItem"):
            item = self._ddb.get_item(
                TableName=self._devices,
                Key={JKT: {"S": jkt}},
                ConsistentRead=True,
                ProjectionExpression="#su",
                ExpressionAttributeNames={"#su": STEP_UP_AT},
            ).get("Item")
        return STEP_UP_AT in (item or {})

    def clear_step_up(self, jkt: str) -> None:
        with failing_closed("dynamodb:UpdateItem"):
            self._ddb.update_item(
                TableName=self._devices,
                Key={JKT: {"S": jkt}},
                UpdateExpression="REMOVE #su",
                ExpressionAttributeNames={"#su": STEP_UP_AT},
            )


class AlertPublisher:
    """An alert to EventBridge (source ``tokenbroker``) and to the alerts SNS topic."""

    SOURCE = "tokenbroker"
    DETAIL_TYPE = "tokenbroker.sharing"

    def __init__(self, *, events: Any, sns: Any, topic_arn: str, bus: str = "default") -> None:
        self._events = events
        self._sns = sns
        self._topic = topic_arn
        self._bus = bus

    def publish(self, alert: Alert) -> None:
        detail = json.dumps(alert_detail(alert), sort_keys=True)
        with failing_closed("events:PutEvents"):
            response = self._events.put_events(
                Entries=[
                    {
                        "Source": self.SOURCE,
                        "DetailType": self.DETAIL_TYPE,
                        "Detail": detail,
                        "EventBusName": self._bus,
                        "Resources": [],
                    }
                ]
            )
        if response.get("FailedEntryCount"):
            raise TemporarilyUnavailable("events:PutEvents failed for the alert")
        if self._topic:
            with failing_closed("sns:Publish"):
                self._sns.publish(
                    TopicArn=self._topic,
                    Subject=f"tokenbroker sharing alert: {alert.rule}"[:100],
                    Message=detail,
                )


def alert_detail(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.alert_id,
        "rule": alert.rule,
        "principal": alert.principal,
        "client_id": alert.client_id,
        "jkt": alert.jkt,
        "summary": alert.summary,
        "evidence": list(alert.evidence),
        "at_ms": alert.at_ms,
        "window_start_ms": alert.window_start_ms,
        "status": alert.status,
        "containment": alert.containment,
        "acked_by": alert.acked_by,
        "acked_at_ms": alert.acked_at_ms,
    }


__all__ = ["AlertPublisher", "DynamoContainmentStore", "DynamoSharingStore", "alert_day"]
