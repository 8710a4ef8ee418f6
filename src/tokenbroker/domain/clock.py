"""Injected time and ids: the domain never reads the wall clock or calls uuid4 itself."""

from __future__ import annotations

from collections.abc import Callable

#: Returns the current time in seconds since the epoch (``time.time`` in production).
Clock = Callable[[], float]

#: Returns a fresh, unpredictable identifier (``secrets.token_urlsafe`` in production).
IdSource = Callable[[], str]


class FixedClock:
    """A clock that only moves when told to; for tests and benchmarks."""

    def __init__(self, now: float) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
