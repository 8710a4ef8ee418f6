"""The hot tier as ``audit verify`` reads it: usage items by id (``BatchGetItem``),
hashed exactly as the sealer hashed their stream images (plain values, every attribute).
Unprocessed keys are asked again a few times; then, like every AWS failure, it fails
closed (TemporarilyUnavailable): a verify never passes on records it could not read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from tokenbroker.adapters.aws import failing_closed
from tokenbroker.adapters.ledger_items import ID
from tokenbroker.adapters.ledger_scan import plain
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.domain.ledger import record_hash

#: BatchGetItem rounds for keys DynamoDB left unprocessed (throttling), with backoff
ROUNDS = 5


class HotLedgerHashes:
    def __init__(
        self,
        dynamodb: Any,
        *,
        table: str,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._ddb = dynamodb
        self._table = table
        self._sleep = sleep

    def hashes(self, ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        keys: list[dict[str, Any]] = [{ID: {"S": i}} for i in dict.fromkeys(ids)]
        for attempt in range(ROUNDS):
            if not keys:
                return found
            request = {self._table: {"Keys": keys, "ConsistentRead": True}}
            with failing_closed("dynamodb:BatchGetItem"):
                page = self._ddb.batch_get_item(RequestItems=request)
            for item in page.get("Responses", {}).get(self._table, []):
                image = plain(item)
                found[str(image[ID])] = record_hash(image)
            keys = page.get("UnprocessedKeys", {}).get(self._table, {}).get("Keys", [])
            if keys:
                self._sleep(0.05 * 2**attempt)
        if keys:
            raise TemporarilyUnavailable(
                f"dynamodb:BatchGetItem left {len(keys)} key(s) unprocessed after {ROUNDS} rounds"
            )
        return found
