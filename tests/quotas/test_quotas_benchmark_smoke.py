"""Smoke test of benchmarks/quotas.py at a tiny rate: the hot-partition figure is the
count of lease writes of the busiest counter in its busiest second."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

from tokenbroker.domain.quotas import FoldPolicy

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `benchmarks` is a top-level directory, not installed
    sys.path.insert(0, str(ROOT))

from benchmarks import quotas as bench  # noqa: E402


def test_the_hot_partition_report_at_a_small_rate() -> None:
    report = bench.hot_partition(
        rate=2000, seconds=6, environments=20, principals=50, zipf=1.1, seed=3
    )
    assert report["ok"]
    assert report["hottest_counter_writes_per_second_after_warm_up"] > 0
    assert (
        report["hottest_counter_writes_per_second_after_warm_up"]
        <= (report["hottest_counter_writes_per_second"])
    )
    # leases: far fewer lease writes than requests once warm
    assert report["lease_writes_per_request"] < 0.5
    assert report["hottest_principal_rate"] > 2000 / 50


def test_each_policy_run_for_real_matches_its_price_derived_from_the_never_run() -> None:
    """The benchmark runs the fleet once (separate leases) and prices every fold policy
    from the sizes of its leases; run for real, each policy makes exactly those leases
    and folds exactly the ones the derivation folds."""
    shape = {"rate": 1500, "seconds": 5, "environments": 15, "principals": 40, "zipf": 1.1}
    never = bench.hot_partition(**shape, seed=5)
    derived = bench.fleet_prices(never, usage_wu=1, counter_wu=1)
    all_leases = Counter(never["lease_updates_by_size"])
    for policy in (FoldPolicy.SINGLE, FoldPolicy.ALWAYS):
        real = bench.hot_partition(**shape, seed=5, policy=policy)
        sizes = Counter(real["lease_updates_by_size"]) + Counter(real["folded_by_size"])
        assert sizes == all_leases  # the same leases, whatever the policy
        assert sum(real["folded_by_size"].values()) > 0
        assert sum(real["folded_by_size"].values()) / real["requests"] == pytest.approx(
            derived[str(policy)]["transactions_per_request"], abs=1e-5
        )
        assert all(policy.folds(size) for size in real["folded_by_size"])
        assert (
            real["hottest_counter_writes_per_second"] == never["hottest_counter_writes_per_second"]
        )
    assert derived["always"]["round_trips_per_allowed_request"] == 1.0
    assert derived["never"]["round_trips_per_allowed_request"] > 1.0


def test_prices_count_a_transaction_as_two_writes_of_each_item() -> None:
    priced = bench.price(requests=10, puts=8, updates=1, transactions=2, usage_wu=1, counter_wu=1)
    # 8 PutItems + 1 UpdateItem + 2 transactions x 2 x (usage + counter) = 17 WU
    assert priced["write_units_per_allowed_request"] == 1.7
    assert priced["round_trips_per_allowed_request"] == 1.1
    assert priced["dollars_per_million_allowed_requests"] == pytest.approx(1.7 * 0.625)
