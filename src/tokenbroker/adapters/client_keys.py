"""DynamoDB adapters for RFC 7523 ``private_key_jwt``: the client's registered public
JWK (on the client item, read with the client by the one GetItem / TransactGetItems the
endpoints do anyway), and the single-use guard of assertion ``jti``s (a conditional put
in the tokens table under the ``cas:`` key prefix, TTL = the assertion's ``exp`` plus
skew, so the guard outlives every chance to replay the assertion)."""

from __future__ import annotations

import hashlib
from typing import Any

from botocore.exceptions import ClientError

from tokenbroker.adapters.aws import error_code, failing_closed, new_item
from tokenbroker.adapters.dynamodb import (
    CLIENT_ID,
    EXPIRES_AT,
    JTI,
    PUBLIC_JWK,
    SECRET_HASH,
    TTL,
    UPDATED_AT,
    _cancellation_codes,
    _is_cancellation,
    ledger_put,
)
from tokenbroker.adapters.ledger_items import HOT_WINDOW_DAYS
from tokenbroker.domain.errors import NotFound
from tokenbroker.domain.models import UsageRecord

ASSERTION_PREFIX = "cas:"
#: a secret hash no secret matches (no "sha256:" prefix: see domain/secrets.py)
NO_SECRET = "none"


class DynamoClientKeys:
    def __init__(
        self,
        dynamodb: Any,
        *,
        clients_table: str,
        usage_table: str,
        tokens_table: str = "",
        hot_window_days: int = HOT_WINDOW_DAYS,
    ) -> None:
        self._ddb = dynamodb
        self._clients = clients_table
        self._usage = usage_table
        self._hot_window_days = hot_window_days
        self._tokens = tokens_table

    def set_jwk(
        self, client_id: str, jwk: str, *, remove_secret: bool, at: int, record: UsageRecord
    ) -> None:
        """Register ``jwk`` (and optionally drop the secret) with the ledger record, in
        ONE transaction. Raises NotFound (nothing written)."""
        update = "SET #j = :j, #u = :u" + (", #h = :none" if remove_secret else "")
        names = {"#j": PUBLIC_JWK, "#u": UPDATED_AT, "#c": CLIENT_ID}
        values: dict[str, Any] = {":j": {"S": jwk}, ":u": {"N": str(at)}}
        if remove_secret:
            names["#h"] = SECRET_HASH
            values[":none"] = {"S": NO_SECRET}
        transact = [
            {
                "Update": {
                    "TableName": self._clients,
                    "Key": {CLIENT_ID: {"S": client_id}},
                    "UpdateExpression": update,
                    "ConditionExpression": "attribute_exists(#c)",
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
                    raise NotFound(f"client {client_id} does not exist") from exc
                raise

    def use_assertion(self, client_id: str, jti: str, *, keep_until: int) -> bool:
        """Record the assertion ``jti`` of ``client_id`` as used; False if it was."""
        key = hashlib.sha256(f"{client_id}\x00{jti}".encode()).hexdigest()
        item = {
            JTI: {"S": ASSERTION_PREFIX + key},
            CLIENT_ID: {"S": client_id},
            EXPIRES_AT: {"N": str(keep_until)},
            TTL: {"N": str(keep_until)},
        }
        with failing_closed("dynamodb:PutItem"):
            try:
                self._ddb.put_item(**new_item(self._tokens, item, JTI))
            except ClientError as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    return False
                raise
        return True
