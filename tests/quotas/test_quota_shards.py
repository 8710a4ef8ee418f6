"""Counter shards of hot principals (domain/quotas.py shard_count / shard_limits)."""

from __future__ import annotations

import pytest

from tokenbroker.domain.quotas import (
    MAX_SHARDS,
    QuotaLimits,
    shard_count,
    shard_counter_id,
    shard_limits,
)


@pytest.mark.parametrize(
    ("limits", "shards"),
    [
        (QuotaLimits(50, None, None), 1),
        (QuotaLimits(60_000, None, None), 1),
        (QuotaLimits(120_000, None, None), 2),
        (QuotaLimits(10_000_000, None, None), MAX_SHARDS),
        # a units limit keeps one exact counter, however high the request limits
        (QuotaLimits(10_000_000, None, 5_000), 1),
        (QuotaLimits(None, None, 5_000), 1),
        # a low daily limit bounds the split too
        (QuotaLimits(10_000_000, 1_000, None), 1),
    ],
)
def test_only_limits_above_one_partition_split_the_window(limits: QuotaLimits, shards: int) -> None:
    assert shard_count(limits) == shards


@pytest.mark.parametrize("shards", [2, 3, 7, 16])
def test_the_shares_of_every_limit_sum_to_the_limit_exactly(shards: int) -> None:
    limits = QuotaLimits(1_000_003, 0, None)
    parts = [shard_limits(limits, k, shards) for k in range(shards)]
    assert sum(p.astuple()[0] or 0 for p in parts) == 1_000_003
    assert all(p.astuple()[1] == 0 and p.astuple()[2] is None for p in parts)  # unlimited stays


def test_shard_zero_of_an_unsplit_window_is_the_counter_itself() -> None:
    assert shard_counter_id("c#p#m#d", 0, 1) == "c#p#m#d"
    assert shard_counter_id("c#p#m#d", 3, 16) == "c#p#m#d#3"
