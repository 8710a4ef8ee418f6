"""DynamoDB adapter for people as principals: the people table (key ``principal``) and
the devices people enroll themselves.

The per-person cap is a conditional counter on the person's item, written in ONE
transaction with the device and its ledger record: concurrent enrollments serialise on
that item in DynamoDB, so no interleaving can pass the cap.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from tokenbroker.adapters.aws import failing_closed, new_item
from tokenbroker.adapters.dynamodb import (
    ACTIVE_DEVICES,
    CLIENT_ID,
    ENROLLED_AT,
    JKT,
    LABEL,
    PRINCIPAL,
    STATUS,
    _cancellation_codes,
    _client,
    _device,
    _failed,
    _is_cancellation,
    _item,
    _plain,
    ledger_put,
)
from tokenbroker.adapters.ledger_items import HOT_WINDOW_DAYS
from tokenbroker.domain.errors import Conflict, DeviceLimitReached
from tokenbroker.domain.models import Client, Device, PersonAccount, Status, UsageRecord

UPDATED_AT = "updated_at"


def _person(item: Any) -> PersonAccount:
    v = _plain(item)
    return PersonAccount(
        principal=v[PRINCIPAL],
        status=Status(v.get(STATUS, Status.ACTIVE.value)),
        active_devices=int(v.get(ACTIVE_DEVICES, 0)),
    )


class DynamoPeopleDirectory:
    def __init__(
        self,
        dynamodb: Any,
        *,
        people_table: str,
        clients_table: str,
        devices_table: str,
        usage_table: str,
        hot_window_days: int = HOT_WINDOW_DAYS,
    ) -> None:
        self._ddb = dynamodb
        self._people = people_table
        self._clients = clients_table
        self._devices = devices_table
        self._usage = usage_table
        self._hot_window_days = hot_window_days

    def get_client_device_person(
        self, client_id: str, jkt: str, principal: str
    ) -> tuple[Client | None, Device | None, PersonAccount | None]:
        """The three records an exchange needs, in ONE consistent round trip."""
        with failing_closed("dynamodb:TransactGetItems"):
            response = self._ddb.transact_get_items(
                TransactItems=[
                    {"Get": {"TableName": self._clients, "Key": _item({CLIENT_ID: client_id})}},
                    {"Get": {"TableName": self._devices, "Key": _item({JKT: jkt})}},
                    {"Get": {"TableName": self._people, "Key": _item({PRINCIPAL: principal})}},
                ]
            )
        c, d, p = (r.get("Item") for r in response["Responses"])
        return (
            _client(c) if c else None,
            _device(d) if d else None,
            _person(p) if p else None,
        )

    def enroll_own_device(self, device: Device, *, cap: int, record: UsageRecord) -> int:
        """Atomically: the person is not disabled and has fewer than ``cap`` active
        devices (their item is created on the first enrollment), the key is new, and the
        ledger record is written. Returns the person's active device count after it."""
        transact = [
            {
                "Update": {
                    "TableName": self._people,
                    "Key": _item({PRINCIPAL: device.principal}),
                    # a missing counter is 0; a disabled person cannot enroll; the cap is
                    # checked on the value before the increment (so N passes, N+1 fails)
                    "UpdateExpression": (
                        "SET #n = if_not_exists(#n, :zero) + :one, "
                        "#s = if_not_exists(#s, :active), #u = :at"
                    ),
                    "ConditionExpression": (
                        "(attribute_not_exists(#s) OR #s = :active) AND "
                        "(attribute_not_exists(#n) OR #n < :cap)"
                    ),
                    "ExpressionAttributeNames": {
                        "#n": ACTIVE_DEVICES,
                        "#s": STATUS,
                        "#u": UPDATED_AT,
                    },
                    "ExpressionAttributeValues": _item(
                        {
                            ":zero": 0,
                            ":one": 1,
                            ":cap": cap,
                            ":active": Status.ACTIVE.value,
                            ":at": device.enrolled_at,
                        }
                    ),
                }
            },
            {
                "Put": new_item(
                    self._devices,
                    _item(
                        {
                            JKT: device.jkt,
                            CLIENT_ID: device.client_id,
                            PRINCIPAL: device.principal,
                            LABEL: device.label,
                            STATUS: device.status.value,
                            ENROLLED_AT: device.enrolled_at,
                        }
                    ),
                    JKT,
                )
            },
            ledger_put(self._usage, record, self._hot_window_days),
        ]
        with failing_closed("dynamodb:TransactWriteItems"):
            try:
                self._ddb.transact_write_items(TransactItems=transact)
            except ClientError as exc:
                if not _is_cancellation(exc):
                    raise
                codes = _cancellation_codes(exc)
                if _failed(codes, 1, of=3):
                    raise Conflict(
                        f"key {device.jkt} is already enrolled (generate a new device key)"
                    ) from exc
                if _failed(codes, 0, of=3):
                    self._explain_cap(device.principal, cap, exc)
                raise
        person = self.get_person(device.principal)
        return person.active_devices if person else 1

    def _explain_cap(self, principal: str, cap: int, exc: ClientError) -> None:
        person = self.get_person(principal)
        if person is not None and not person.active:
            raise Conflict(f"{principal} is disabled") from exc
        raise DeviceLimitReached(
            f"{principal} already has {person.active_devices if person else cap} of {cap} "
            "active devices (the per-person cap); revoke one first: "
            "tokenbroker devices revoke --jkt THUMBPRINT"
        ) from exc

    def get_person(self, principal: str) -> PersonAccount | None:
        with failing_closed("dynamodb:GetItem"):
            response = self._ddb.get_item(
                TableName=self._people, Key=_item({PRINCIPAL: principal}), ConsistentRead=True
            )
        item = response.get("Item")
        return _person(item) if item else None

    def set_person_status(
        self, principal: str, status: Status, at: int, record: UsageRecord | None = None
    ) -> None:
        """Sets the status (creating the person's item if need be), with its ledger
        ``record`` in the same transaction."""
        update = {
            "TableName": self._people,
            "Key": _item({PRINCIPAL: principal}),
            "UpdateExpression": "SET #s = :s, #u = :u",
            "ExpressionAttributeNames": {"#s": STATUS, "#u": UPDATED_AT},
            "ExpressionAttributeValues": _item({":s": status.value, ":u": at}),
        }
        transact = [{"Update": update}]
        if record is not None:
            transact.append(ledger_put(self._usage, record, self._hot_window_days))
        with failing_closed("dynamodb:TransactWriteItems"):
            self._ddb.transact_write_items(TransactItems=transact)
