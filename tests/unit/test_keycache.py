"""The edge's public-key cache: bounded refreshes, fail closed, no hammering."""

from __future__ import annotations

import pytest

from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.domain.keycache import KeyCache


class Source:
    def __init__(self) -> None:
        self.keys: dict[str, object] = {"k1": object()}
        self.calls = 0
        self.failing = False

    def __call__(self) -> dict[str, object]:
        self.calls += 1
        if self.failing:
            raise TemporarilyUnavailable("kms:GetPublicKey failed")
        return dict(self.keys)


def test_a_known_kid_is_served_from_memory_after_the_first_fetch() -> None:
    source, clock = Source(), FixedClock(1000)
    cache = KeyCache(source, clock=clock)
    assert cache.resolve("k1") is source.keys["k1"]
    assert cache.resolve("k1") is source.keys["k1"]
    assert source.calls == 1


def test_unknown_kids_refresh_at_most_once_per_cooldown() -> None:
    source, clock = Source(), FixedClock(1000)
    cache = KeyCache(source, clock=clock, cooldown=60)
    cache.resolve("k1")
    for _ in range(100):
        assert cache.resolve("attacker-kid") is None
    assert source.calls == 1
    clock.advance(60)
    source.keys["k2"] = object()
    assert cache.resolve("k2") is source.keys["k2"]
    assert source.calls == 2


def test_a_failing_source_with_no_keys_fails_closed_and_is_not_hammered() -> None:
    source, clock = Source(), FixedClock(1000)
    source.failing = True
    cache = KeyCache(source, clock=clock, failure_cooldown=2)
    for _ in range(50):
        with pytest.raises(TemporarilyUnavailable):
            cache.resolve("k1")
    assert source.calls == 1
    clock.advance(2)
    source.failing = False
    assert cache.resolve("k1") is source.keys["k1"]
    assert source.calls == 2


def test_a_failed_refresh_keeps_serving_the_keys_already_loaded() -> None:
    source, clock = Source(), FixedClock(1000)
    cache = KeyCache(source, clock=clock, cooldown=60)
    cache.resolve("k1")
    source.failing = True
    clock.advance(61)
    assert cache.resolve("unknown") is None
    assert cache.resolve("k1") is source.keys["k1"]


def test_callers_that_waited_for_another_threads_fetch_get_its_keys() -> None:
    """Cold start under concurrency (the local stack serves threads): one thread fetches,
    the others wait for the lock and must find the key it fetched, not 'unknown'."""
    import threading
    import time

    source, clock = Source(), FixedClock(1000)
    fetching = threading.Event()

    def slow() -> dict[str, object]:
        fetching.set()
        time.sleep(0.2)  # the others queue on the lock meanwhile
        return source()

    cache = KeyCache(slow, clock=clock)
    found: list[object | None] = []
    first = threading.Thread(target=lambda: found.append(cache.resolve("k1")))
    first.start()
    fetching.wait()
    others = [threading.Thread(target=lambda: found.append(cache.resolve("k1"))) for _ in range(5)]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join()
    assert found == [source.keys["k1"]] * 6
    assert source.calls == 1
