"""One TokenSource under load: 50 threads, 50 asyncio tasks, and both at once, get
exactly one token fetch per token lifetime, and every request succeeds with its own
proof.

The first token request is held at the fake broker until every caller has asked for a
token, so all of them really are waiting while it is in flight (no sleeping: events)."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import requests

from client.fake_broker import API, LIFETIME, FakeBroker
from tokenbroker.client import DPoPAuth, DPoPHttpxAuth, TokenSource
from tokenbroker.domain.clock import FixedClock

INVOKE = f"{API}/v1/models/demo/invoke"
CALLERS = 50
ROUNDS = 3
WAIT = 10.0  # seconds; only reached if single flight is broken


class Gate:
    """Opens when ``expected`` callers have asked the source for a token."""

    def __init__(self, source: TokenSource, monkeypatch: pytest.MonkeyPatch) -> None:
        self.event = threading.Event()
        self.expected = 0
        self._lock = threading.Lock()
        self._count = itertools.count(1)
        token, atoken = source.token, source.atoken

        def counted_token(**kw: Any) -> Any:
            self._arrive()
            return token(**kw)

        async def counted_atoken(**kw: Any) -> Any:
            self._arrive()
            return await atoken(**kw)

        monkeypatch.setattr(source, "token", counted_token)
        monkeypatch.setattr(source, "atoken", counted_atoken)

    def reset(self, expected: int) -> None:
        self.event.clear()
        self.expected = expected
        self._count = itertools.count(1)

    def _arrive(self) -> None:
        with self._lock:
            if next(self._count) == self.expected:
                self.event.set()

    def hold(self) -> None:
        assert self.event.wait(WAIT), "not every caller asked for a token"

    async def ahold(self) -> None:
        assert await asyncio.to_thread(self.event.wait, WAIT), "not every caller asked"


@pytest.fixture
def gate(broker: FakeBroker, source: TokenSource, monkeypatch: pytest.MonkeyPatch) -> Gate:
    gate = Gate(source, monkeypatch)
    broker.before_issue = gate.hold
    broker.before_issue_async = gate.ahold
    return gate


def _thread_call(broker: FakeBroker, auth: DPoPAuth) -> Callable[[int], int]:
    def call(_: int) -> int:
        with requests.Session() as session:
            session.mount("https://", broker.adapter())
            return session.post(INVOKE, json={"prompt": "hi"}, auth=auth).status_code

    return call


def _assert_every_call_allowed_with_its_own_proof(broker: FakeBroker, calls: int) -> None:
    seen = broker.api_calls()
    assert len(seen) == calls
    assert {s.outcome for s in seen} == {"allowed"}
    assert len({s.proof.claims["jti"] for s in seen if s.proof}) == calls


def test_fifty_threads_share_one_token_fetch_per_token_lifetime(
    broker: FakeBroker, source: TokenSource, gate: Gate, fixed_clock: FixedClock
) -> None:
    auth = DPoPAuth(source, origins=[API])
    with ThreadPoolExecutor(max_workers=CALLERS) as pool:
        for round_ in range(1, ROUNDS + 1):
            gate.reset(CALLERS)
            statuses = list(pool.map(_thread_call(broker, auth), range(CALLERS)))
            assert statuses == [200] * CALLERS
            assert broker.token_fetches == round_
            fixed_clock.advance(LIFETIME - 29)  # inside the renewal window
    _assert_every_call_allowed_with_its_own_proof(broker, CALLERS * ROUNDS)


def test_fifty_asyncio_tasks_share_one_token_fetch_per_token_lifetime(
    broker: FakeBroker, source: TokenSource, gate: Gate, fixed_clock: FixedClock
) -> None:
    async def main() -> None:
        auth = DPoPHttpxAuth(source, origins=[API])
        async with httpx.AsyncClient(transport=broker.async_transport(), auth=auth) as client:
            for round_ in range(1, ROUNDS + 1):
                gate.reset(CALLERS)
                calls = (client.post(INVOKE, json={"prompt": "hi"}) for _ in range(CALLERS))
                responses = await asyncio.gather(*calls)
                assert [r.status_code for r in responses] == [200] * CALLERS
                assert broker.token_fetches == round_
                fixed_clock.advance(LIFETIME - 29)

    asyncio.run(main())
    _assert_every_call_allowed_with_its_own_proof(broker, CALLERS * ROUNDS)


def test_threads_and_asyncio_tasks_together_share_one_token_fetch_per_lifetime(
    broker: FakeBroker, source: TokenSource, gate: Gate, fixed_clock: FixedClock
) -> None:
    thread_call = _thread_call(broker, DPoPAuth(source, origins=[API]))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        auth = DPoPHttpxAuth(source, origins=[API])
        async with httpx.AsyncClient(transport=broker.async_transport(), auth=auth) as client:
            with ThreadPoolExecutor(max_workers=CALLERS) as pool:
                for round_ in range(1, ROUNDS + 1):
                    gate.reset(2 * CALLERS)
                    in_threads = [
                        loop.run_in_executor(pool, thread_call, i) for i in range(CALLERS)
                    ]
                    in_tasks = [client.post(INVOKE, json={}) for _ in range(CALLERS)]
                    results = await asyncio.gather(*in_threads, *in_tasks)
                    statuses = [
                        r.status_code if isinstance(r, httpx.Response) else r for r in results
                    ]
                    assert statuses == [200] * (2 * CALLERS)
                    assert broker.token_fetches == round_
                    fixed_clock.advance(LIFETIME - 29)

    asyncio.run(main())
    _assert_every_call_allowed_with_its_own_proof(broker, 2 * CALLERS * ROUNDS)
