"""The sharing burst rule's cost per stream batch: before (each principal's 25 hours of
aggregates pages, read with a Query per UTC day of its shard's partition) and after
(its own hourly counts: one UpdateItem per principal that returns them).

On moto with the real adapters: a history of ``hours`` hours of batches, each holding
``principals`` principals, is written as aggregates pages; then one more batch is
evaluated both ways. Counted at the botocore layer: calls, items and bytes returned,
and read/write units at DynamoDB's list rules (an eventually consistent read is half a
unit per 4 KB of the items a Query returns; a write a unit per started KB of the larger
item image). Run: ``.venv/bin/python -m benchmarks.sharing_burst``.

The projection at 100,000 requests/s is arithmetic, not a run: every batch (BatchSize
2,500) writes at most one page per (hour, shard), so a shard's hour holds up to
``rate / 2,500 * 3,600`` pages and the old read of one principal scans 25 hours of them.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from tokenbroker.domain.units import HOUR_MS

T0 = 1_800_003_600_000 - 1_800_003_600_000 % HOUR_MS
BATCH_SIZE = 2_500


def _record(n: int, principal: str, at_ms: int) -> Any:
    from tokenbroker.domain.models import Decision, UsageRecord

    return UsageRecord(
        record_id=f"rec-{n:08d}",
        at_ms=at_ms,
        decision=Decision.ALLOW,
        reason="ok",
        principal=principal,
        client_id="tbc_bench",
        jkt="jkt",
        token_jti="jti-bench",  # noqa: S106 - a token id, not a secret
        method="POST",
        route="/v1/models/{model}/invoke",
        resource="chat",
        source_ip="198.51.100.7",
        request_id=f"api-{n}",
        retain_until=at_ms // 1000 + 86_400,
    )


def _item_bytes(item: dict[str, Any]) -> int:
    """DynamoDB's item size: attribute names plus values (S/N as text, B as bytes)."""
    size = 0
    for name, value in item.items():
        size += len(name.encode())
        for kind, v in value.items():
            size += len(v) if kind == "B" else len(str(v).encode())
    return size


def run(*, principals: int, hours: int, batches_per_hour: int) -> dict[str, Any]:
    from moto import mock_aws

    from tokenbroker.adapters.aggregates import AggregatesReader, DynamoAggregatesStore
    from tokenbroker.adapters.alerts import DynamoSharingStore
    from tokenbroker.adapters.aws import client as aws_client
    from tokenbroker.domain.aggregates import contribution, fold
    from tokenbroker.local import load_template

    with mock_aws():
        ddb = aws_client("dynamodb", region="us-east-1")
        template = load_template()
        for logical_id in ("AggregatesTable", "SharingTable"):
            ddb.create_table(**template.create_table_kwargs(logical_id, logical_id))
        pages = DynamoAggregatesStore(ddb, table="AggregatesTable")
        sharing = DynamoSharingStore(ddb, table="SharingTable", usage_table="")
        n = 0
        who = [f"tbc_p{i:05d}" for i in range(principals)]
        for hour in range(hours, -1, -1):  # the history, then the current hour's batches
            for b in range(batches_per_hour):
                at = T0 - hour * HOUR_MS + b * 1000
                batch = []
                for p in who:
                    n += 1
                    batch.append(contribution(_record(n, p, at)))
                for page in fold(batch):
                    pages.write(page)
        hour = T0 // HOUR_MS
        for p in who:  # the after path's counts of the history, as the stream kept them
            history = {h: batches_per_hour for h in range(hour - hours, hour)}
            sharing.add_hours(p, history, keep_from=hour - 24, expires_at=(hour + 26) * 3600)
        seen: Counter[str] = Counter()
        units: dict[str, float] = {"read": 0.0, "write": 0.0}

        def after(http_response: Any, parsed: dict[str, Any], model: Any, **_: Any) -> None:
            name = model.name
            seen[name] += 1
            if name == "Query":
                size = sum(_item_bytes(i) for i in parsed.get("Items", []))
                seen["query_items"] += len(parsed.get("Items", []))
                seen["query_bytes"] += size
                units["read"] += 0.5 * max(1, math.ceil(size / 4096))
            elif name == "UpdateItem":
                size = _item_bytes(parsed.get("Attributes", {}))
                seen["update_item_bytes"] = max(seen["update_item_bytes"], size)
                units["write"] += max(1, math.ceil(size / 1024))

        ddb.meta.events.register("after-call.dynamodb", after)
        # before: what the old rule did for each principal of the new batch
        current = T0 // HOUR_MS * HOUR_MS
        reader = AggregatesReader(ddb, table="AggregatesTable")
        for p in who:
            reader.hourly(p, current - 24 * HOUR_MS, current + HOUR_MS - 1)
        before = {**seen, "read_units": units["read"]}
        seen.clear()
        units.update(read=0.0, write=0.0)
        # after: the rule's own counts, one UpdateItem per principal of the batch
        for p in who:
            sharing.add_hours(
                p, {hour: batches_per_hour}, keep_from=hour - 24, expires_at=(hour + 26) * 3600
            )
        after_counts = {**seen, "write_units": units["write"]}
    pages_per_shard_hour_at_100k = 100_000 / BATCH_SIZE * 3600
    return {
        "principals_in_batch": principals,
        "history_hours": hours,
        "batches_per_hour": batches_per_hour,
        "before": before,
        "after": after_counts,
        "before_queries_per_batch": before.get("Query", 0),
        "after_queries_per_batch": after_counts.get("Query", 0),
        "before_read_units_per_batch": before["read_units"],
        "projection_100k": {
            "pages_per_shard_hour": pages_per_shard_hour_at_100k,
            "pages_read_per_principal_before": 25 * pages_per_shard_hour_at_100k,
            "reads_per_principal_after": 0,
        },
    }


def render(r: dict[str, Any]) -> str:
    b, a, p = r["before"], r["after"], r["projection_100k"]
    return "\n".join(
        [
            f"sharing burst rule, one batch of {r['principals_in_batch']} principals "
            f"({r['history_hours']} h of history, {r['batches_per_hour']} batches/h):",
            f"  before: {b.get('Query', 0)} Queries, {b.get('query_items', 0)} page items, "
            f"{b.get('query_bytes', 0):,} bytes read, {b['read_units']:g} read units",
            f"  after:  {a.get('Query', 0)} Queries, {a.get('GetItem', 0)} GetItems, "
            f"{a.get('UpdateItem', 0)} UpdateItems ({a['write_units']:g} write units, items "
            f"<= {a.get('update_item_bytes', 0)} bytes returned), 0 bytes read",
            f"  projection at 100,000 req/s (BatchSize {BATCH_SIZE:,}): a shard's hour holds "
            f"up to {p['pages_per_shard_hour']:,.0f} pages; the old rule read up to "
            f"{p['pages_read_per_principal_before']:,.0f} pages per principal per batch, "
            "the new one reads none",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--principals", type=int, default=100)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--batches-per-hour", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = run(
        principals=args.principals, hours=args.hours, batches_per_hour=args.batches_per_hour
    )
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
