"""DynamoDB adapter for RFC 7009 access token revocation: the revoked jtis live ON THE
DEVICE ITEM, which the edge's liveness read (adapters/usage.py::DynamoLiveness) fetches
anyway, so a revocation costs the hot path no extra round trip and takes effect within
the liveness bound (domain/liveness.py ``MAX_AGE`` = 5 s).

The map ``revoked_jtis`` (jti -> exp) holds only tokens that are still alive: every
write drops the entries whose ``exp`` has passed, and it never holds more than
``MAX_REVOKED_PER_DEVICE`` entries (43-byte jtis: ~1.6 KB, well inside one 4 KB read
unit). A revocation that would overflow it sets the device's own ``tokens_not_before``
past now instead (every token of that device issued so far is refused, RFC 7009 §2:
the server may revoke more than was asked) and clears the map: revocation never
silently fails to happen and the item never grows past the bound.

The write is ONE TransactWriteItems: the device update and the ledger record
(``token_revoked``). Its condition is optimistic concurrency on ``revocations_version``
(read just before), plus the device still belonging to the token's client; a lost race
is retried a few times, then 503 (fail closed, never "revoked" when it was not).
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from tokenbroker.adapters.aws import failing_closed
from tokenbroker.adapters.dynamodb import (
    CLIENT_ID,
    DEVICE_TOKENS_NOT_BEFORE,
    JKT,
    REVOCATIONS_VERSION,
    REVOKED_JTIS,
    _cancellation_codes,
    _is_cancellation,
    ledger_put,
)
from tokenbroker.adapters.ledger_items import HOT_WINDOW_DAYS
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.domain.models import UsageRecord

MAX_REVOKED_PER_DEVICE = 32
_ATTEMPTS = 3


class DynamoRevocations:
    def __init__(
        self,
        dynamodb: Any,
        *,
        devices_table: str,
        usage_table: str,
        hot_window_days: int = HOT_WINDOW_DAYS,
    ) -> None:
        self._ddb = dynamodb
        self._devices = devices_table
        self._usage = usage_table
        self._hot_window_days = hot_window_days

    def revoke_access_token(
        self, *, client_id: str, jkt: str, jti: str, exp: int, now: int, record: UsageRecord
    ) -> bool:
        """Add ``jti`` (alive until ``exp``) to device ``jkt``'s revoked set, with the
        ledger ``record``. False (nothing written) when the device is gone, belongs to
        another client, or the jti is revoked already. Raises TemporarilyUnavailable."""
        for _ in range(_ATTEMPTS):
            device = self._read(jkt)
            if device is None or device.get(CLIENT_ID) != {"S": client_id}:
                return False  # no such device of this client: its tokens are refused anyway
            stored = device.get(REVOKED_JTIS, {}).get("M", {})
            if jti in stored:
                return False  # idempotent: RFC 7009 answers 200 either way
            version = int(device.get(REVOCATIONS_VERSION, {}).get("N", "0"))
            alive = {
                k: v
                for k, v in stored.items()
                if isinstance(v, dict) and v.get("N", "").isdigit() and int(v["N"]) > now
            }
            alive[jti] = {"N": str(exp)}
            names = {"#r": REVOKED_JTIS, "#v": REVOCATIONS_VERSION, "#c": CLIENT_ID}
            values: dict[str, Any] = {
                ":v": {"N": str(version + 1)},
                ":c": {"S": client_id},
            }
            if len(alive) > MAX_REVOKED_PER_DEVICE:
                # overflow: refuse every token of this device issued up to now instead
                names["#nb"] = DEVICE_TOKENS_NOT_BEFORE
                values[":nb"] = {"N": str(now + 1)}
                values[":m"] = {"M": {}}
                update = "SET #r = :m, #v = :v, #nb = :nb"
            else:
                values[":m"] = {"M": alive}
                update = "SET #r = :m, #v = :v"
            if version:
                condition = "#c = :c AND #v = :old"
                values[":old"] = {"N": str(version)}
            else:
                condition = "#c = :c AND attribute_not_exists(#v)"
            transact = [
                {
                    "Update": {
                        "TableName": self._devices,
                        "Key": {JKT: {"S": jkt}},
                        "UpdateExpression": update,
                        # the set we pruned is still the stored one (no concurrent
                        # revocation lost), and the device still is this client's
                        "ConditionExpression": condition,
                        "ExpressionAttributeNames": names,
                        "ExpressionAttributeValues": values,
                    }
                },
                ledger_put(self._usage, record, self._hot_window_days),
            ]
            with failing_closed("dynamodb:TransactWriteItems"):
                try:
                    self._ddb.transact_write_items(TransactItems=transact)
                except ClientError as exc:
                    codes = _cancellation_codes(exc) if _is_cancellation(exc) else []
                    if codes[:1] == ["ConditionalCheckFailed"]:
                        continue  # a concurrent revocation moved the version: read again
                    if len(codes) == 2 and codes[1] == "ConditionalCheckFailed":
                        return False  # this revocation's ledger record exists: done before
                    raise
            return True
        raise TemporarilyUnavailable("concurrent revocations on one device; retry")

    def _read(self, jkt: str) -> dict[str, Any] | None:
        with failing_closed("dynamodb:GetItem"):
            response = self._ddb.get_item(
                TableName=self._devices,
                Key={JKT: {"S": jkt}},
                ConsistentRead=True,
                ProjectionExpression="#c, #r, #v",
                ExpressionAttributeNames={
                    "#c": CLIENT_ID,
                    "#r": REVOKED_JTIS,
                    "#v": REVOCATIONS_VERSION,
                },
            )
        item = response.get("Item")
        return item if isinstance(item, dict) else None
