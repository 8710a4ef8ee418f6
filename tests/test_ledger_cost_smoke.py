"""Smoke test of benchmarks/ledger_cost.py: DynamoDB's item-size rules, the copies the
template's indexes keep of a real item, and the aggregates' write count against an
independent count of the buckets each batch touches."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is a top-level directory, not installed
    sys.path.insert(0, str(ROOT))

from benchmarks import ledger_cost as bench  # noqa: E402

from tokenbroker.adapters.ledger_items import to_item  # noqa: E402
from tokenbroker.domain.ledger import INDEXES, hour_of  # noqa: E402
from tokenbroker.domain.models import EventType  # noqa: E402
from tokenbroker.local.template import load_template  # noqa: E402


def test_item_sizes_follow_dynamodbs_rules() -> None:
    assert bench.item_size({"id": {"S": "abc"}}) == 2 + 3
    assert bench.item_size({"n": {"N": "123"}}) == 1 + 3  # ceil(3 digits / 2) + 1
    assert bench.item_size({"s": {"SS": ["ab", "c"]}, "b": {"BOOL": True}}) == 1 + 3 + 1 + 1
    assert bench.units(1024, 1024) == 1
    assert bench.units(1025, 1024) == 2
    assert bench.units(0, 1024) == 1  # every write costs at least one unit


def test_an_allowed_request_is_copied_into_the_table_and_every_index() -> None:
    usage = bench.Table.of(load_template().tables()["UsageTable"])
    [request] = bench.edge_records(1, seed=1)
    copies = usage.copies(to_item(request))
    assert [where for where, _ in copies] == ["table", *INDEXES]
    assert len({size for _, size in copies}) == 1  # ALL projections: full copies


def test_sparse_indexes_skip_records_without_their_key() -> None:
    import dataclasses

    usage = bench.Table.of(load_template().tables()["UsageTable"])
    [request] = bench.edge_records(1, seed=1)
    admin = dataclasses.replace(
        request, event=EventType.DEVICE_ENROLLED, token_jti="", resource="", jkt=""
    )
    assert [where for where, _ in usage.copies(to_item(admin))] == [
        "table",
        "by_principal",
        "by_hour",
    ]


def test_the_aggregates_are_written_once_per_principal_hour_and_batch() -> None:
    records = bench.edge_records(300, seed=2)
    counted, _ = bench.count_aggregates(records, batch_size=100)
    expected = sum(
        len({(r.principal, hour_of(r.at_ms)) for r in records[start : start + 100]})
        for start in range(0, 300, 100)
    )
    assert counted.calls["PutItem"] == counted.writes - counted.calls["UpdateItem"] == expected
    assert counted.calls["GetItem"] == expected
    assert counted.write_units >= expected
