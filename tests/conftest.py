"""Generic fixtures for every test: a fixed clock, a fake AWS environment, no network.

Unit tests must never reach AWS: the environment holds fake credentials only, the
configuration chain cannot be pointed elsewhere (AWS_ENDPOINT_URL / AWS_PROFILE are
removed), and any socket connection to a non-loopback address raises.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from tokenbroker.domain.clock import FixedClock

NOW = 1_800_000_000
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


@pytest.fixture
def fixed_clock() -> FixedClock:
    """A clock at 1_800_000_000 that moves only when a test calls ``advance``."""
    return FixedClock(NOW)


@pytest.fixture(autouse=True)
def fake_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_METRICS_NAMESPACE": "TokenBrokerTest",
        "POWERTOOLS_SERVICE_NAME": "tokenbroker",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)


class NetworkBlocked(RuntimeError):
    """A test tried to open a connection off the loopback interface."""


def _is_loopback(address: Any) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    if isinstance(address, tuple) and address:
        return str(address[0]) in _LOOPBACK
    return False


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only loopback connections (moto servers, the local stack) are allowed."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def connect(self: socket.socket, address: Any) -> None:
        if not _is_loopback(address):
            raise NetworkBlocked(f"unit tests may not connect to {address!r}")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not _is_loopback(address):
            raise NetworkBlocked(f"unit tests may not connect to {address!r}")
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
