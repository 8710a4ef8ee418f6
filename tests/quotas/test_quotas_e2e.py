"""Done check of the quotas on `tokenbroker dev` (the running-stack fixture and helpers of
tests/test_local_stack.py): 64 concurrent requests against 50 per minute -> exactly 50
allowed with 50 usage records, 14 x 429 with Retry-After; the model reports its units."""

from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from test_local_stack import (
    RunningStack,
    _cli_ready,
    _client_with_device,
    _token,
    _usage_items,
    stack,
)

__all__ = ["stack"]
pytestmark = pytest.mark.http


def test_64_concurrent_requests_against_50_per_minute(stack: RunningStack) -> None:
    _cli_ready(stack)
    client, device = _client_with_device(stack, "model:quota-demo:invoke")
    quota = stack.cli(
        "quotas",
        "set",
        "--client-id",
        client["client_id"],
        "--requests-per-minute",
        "50",
        "-o",
        "json",
    )
    assert quota.returncode == 0, quota.stderr
    assert json.loads(quota.stdout)["requests_per_minute"] == 50
    token = _token(stack, client, device)
    url = f"{stack.api_url}/v1/models/quota-demo/invoke"
    if time.time() % 60 > 30:  # all 64 inside one clock minute, even on a loaded machine
        time.sleep(61 - time.time() % 60)
    proofs = [device.proof("POST", url, token) for _ in range(64)]

    def call(proof: str) -> requests.Response:
        headers = {"Authorization": f"DPoP {token}", "DPoP": proof}
        return requests.post(url, headers=headers, json={"prompt": "hello"}, timeout=120)

    with ThreadPoolExecutor(max_workers=64) as pool:
        responses = list(pool.map(call, proofs))
    assert Counter(r.status_code for r in responses) == {200: 50, 429: 14}
    for refused in (r for r in responses if r.status_code == 429):
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.json()["reason"] == "quota_exceeded:requests_per_minute"
    assert all(r.json()["units"] > 0 for r in responses if r.status_code == 200)
    items: list[dict[str, Any]] = _usage_items(stack, client["client_id"])
    requests_ = [i for i in items if i["event"]["S"] == "request"]
    decisions = Counter((i["decision"]["S"], i["reason"]["S"]) for i in requests_)
    assert decisions[("allow", "ok")] == 50
    # denial records are rate-limited per token per minute (services/authorization.py)
    assert 1 <= decisions[("deny", "quota_exceeded:requests_per_minute")] <= 4
