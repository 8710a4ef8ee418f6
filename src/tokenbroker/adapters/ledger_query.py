"""The read side of the usage ledger: DynamoDB Query on one shard of one auditor index.

The only module of the audit path that knows DynamoDB's request and response shapes
(key conditions, filter expressions, ``ExclusiveStartKey``, typed attribute values).
It returns :class:`~tokenbroker.domain.models.UsageRecord` (the item schema is
:mod:`tokenbroker.adapters.ledger_items`); fanning out over shards and merging is
:mod:`tokenbroker.services.audit_query`'s job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokenbroker.adapters.aws import failing_closed
from tokenbroker.adapters.ledger_items import ATTRIBUTES, from_item
from tokenbroker.domain.ledger import INDEXES, SORT_KEY
from tokenbroker.domain.models import UsageRecord

#: DynamoDB caps a Query page at 1 MB anyway; more items per request gains nothing
MAX_PAGE_ITEMS = 1000


class ShardPage:
    """One Query response: the matching records and where the next page starts."""

    __slots__ = ("items", "next_key")

    def __init__(self, items: list[UsageRecord], next_key: dict[str, Any] | None) -> None:
        self.items = items
        self.next_key = next_key


class DynamoLedgerQuery:
    """Queries the usage table's sharded indexes (``tokenbroker.domain.ledger.INDEXES``)."""

    def __init__(self, dynamodb: Any, *, usage_table: str) -> None:
        self._ddb = dynamodb
        self._table = usage_table

    def query_shard(
        self,
        index: str,
        partition_key: str,
        since_ms: int,
        until_ms: int,
        *,
        newest_first: bool,
        limit: int,
        equals: Mapping[str, str] | None = None,
        start_key: dict[str, Any] | None = None,
    ) -> ShardPage:
        """Records of one index partition with ``since_ms <= at < until_ms``, by time.

        ``equals`` maps record fields (``UsageRecord`` names) to required values
        (applied by DynamoDB as a filter; ``limit`` counts items read before
        filtering, so a page may hold fewer).
        ``start_key`` is the ``next_key`` of the previous page.
        """
        spec = INDEXES[index]
        names = {"#pk": spec.attribute, "#at": SORT_KEY}
        values: dict[str, Any] = {
            ":pk": {"S": partition_key},
            ":since": {"N": str(since_ms)},
            ":last": {"N": str(until_ms - 1)},
        }
        request: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": spec.name,
            "KeyConditionExpression": "#pk = :pk AND #at BETWEEN :since AND :last",
            "ScanIndexForward": not newest_first,
            "Limit": max(1, min(limit, MAX_PAGE_ITEMS)),
        }
        conditions = []
        for n, (attribute, value) in enumerate(sorted((equals or {}).items())):
            names[f"#f{n}"] = ATTRIBUTES[attribute]
            values[f":f{n}"] = {"S": value}
            conditions.append(f"#f{n} = :f{n}")
        if conditions:
            request["FilterExpression"] = " AND ".join(conditions)
        request["ExpressionAttributeNames"] = names
        request["ExpressionAttributeValues"] = values
        if start_key is not None:
            request["ExclusiveStartKey"] = start_key
        with failing_closed("dynamodb:Query"):
            response = self._ddb.query(**request)
        items = [from_item(item) for item in response.get("Items", [])]
        return ShardPage(items, response.get("LastEvaluatedKey"))
