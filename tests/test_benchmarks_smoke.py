"""Smoke test of benchmarks/authorizer.py with tiny N: structure and correctness
invariants only (every measured request was ALLOWED, one AWS round trip per allowed
request), never timings: the machines are shared and noisy."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is a top-level directory, not installed
    sys.path.insert(0, str(ROOT))

from benchmarks import authorizer as bench  # noqa: E402

REQUESTS = 20


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return bench.run(REQUESTS, repetitions=1, cold_runs=1)


def test_every_measured_request_was_allowed(report: dict[str, Any]) -> None:
    cpu = report["cpu"]
    assert set(cpu["allowed"]) == set(bench.LOOPS)
    assert cpu["allowed"] == bench.loop_sizes(REQUESTS)
    assert cpu["allowed"]["handler"] == REQUESTS
    assert cpu["denied"] == dict.fromkeys(bench.LOOPS, 0)
    assert cpu["cold_request"]["allowed"] == 1
    assert cpu["warmup"]["allowed"] == cpu["warmup"]["requests"]
    assert report["violations"] == []


def test_one_round_trip_per_allowed_request(report: dict[str, Any]) -> None:
    rt = report["cpu"]["round_trips"]
    assert rt["per_allowed_request"] == 1
    # the handler loops: every token new, and one token reused
    assert rt["warm_sends"] == {"dynamodb:PutItem": 2 * REQUESTS}
    # the cold request also fetches the signing key and reads the liveness view, once
    assert rt["cold_request"] == 3
    assert report["cpu"]["cold_request"]["sends"] == {
        "kms:GetPublicKey": 1,
        "dynamodb:BatchGetItem": 1,
        "dynamodb:PutItem": 1,
    }


def test_memory_run_served_allowed_requests_through_the_stub(report: dict[str, Any]) -> None:
    rss = report["rss"]
    assert rss["served"] == rss["allowed"] == REQUESTS
    assert rss["sends"] == {
        "kms:GetPublicKey": 1,
        "dynamodb:BatchGetItem": 1,
        "dynamodb:PutItem": REQUESTS,
    }
    assert rss["rss_peak_kib"] >= rss["rss_init_kib"] > 0


def test_report_shape(report: dict[str, Any]) -> None:
    cpu, cold = report["cpu"], report["cold_init"]
    assert set(cpu["us_per_request"]) == set(bench.LOOPS)
    assert all(v > 0 for v in cpu["us_per_request"].values())
    assert set(cpu["ratio"]) == set(bench.LOOPS) - {"baseline"}
    assert set(cold["wall_ms"]) == set(bench.COLD_KINDS)
    assert all(v > 0 for v in cold["wall_ms"].values())
    assert cold["ratio"] > 0
    assert cold["ratio_no_kms"] > 0
    assert cold["ratio_full_data"] > 0
    assert "kms_client" in cold["authorizer_phases_ms_cumulative"]
    json.dumps(report)  # --json
    table = bench.render(report)
    for metric in ("2 P-256 verifies", "round trips", "cold init", "peak RSS"):
        assert metric in table
    assert table.count("PASS") + table.count("MISS") == 7
    assert report["glue"]["of_2_verifies"]["2 verifies"] == 1
    assert all(v > 0 for v in report["glue"]["us"].values())
    pt = report["powertools"]
    assert set(pt["allowed"].values()) == {pt["requests"]}  # every variant allowed all


def test_a_benchmark_of_denials_cannot_pass() -> None:
    """Tokens for another audience are all denied: the invariants say so."""
    cpu = bench.measure_cpu(6, 1, warmup=1, audience="https://other-api.example")
    assert cpu["allowed"] == dict.fromkeys(bench.LOOPS, 0) | {"baseline": 6}
    violations = bench.invariant_violations({"cpu": cpu})
    assert any(v.startswith("handler:") for v in violations)
    assert any(v.startswith("service:") for v in violations)
    assert any("PutItem" in v for v in violations)


# ---- benchmarks/peer.py (aws-jwt-verify in Node) -------------------------------------

from benchmarks import peer  # noqa: E402


def test_the_peer_benchmark_skips_with_its_reason_when_node_is_absent(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert peer.main(["--node", "no-such-node-binary", "--requests", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("peer benchmark skipped: Node.js not found")


def test_the_peer_benchmark_skips_without_installing_when_told_not_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENBROKER_BENCH_CACHE", str(tmp_path))
    report = peer.run(2, 1, node=sys.executable, install=False)  # any binary on PATH
    assert report == {
        "skipped": f"aws-jwt-verify@5.2.1 is not installed in {tmp_path / 'aws-jwt-verify'}"
    }


def test_our_side_of_the_peer_benchmark_allows_every_request() -> None:
    keys = bench.Keys.generate()
    ours = peer._ours(keys, bench.NOW, 3, 2)
    assert ours["allowed"] == 12  # every token new, then one token reused
    assert ours["us_per_request"] > 0
    assert ours["us_per_request_token_reused"] > 0
