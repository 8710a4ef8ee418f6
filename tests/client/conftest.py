"""Fixtures for the client SDK tests: a fixed clock, a device key, the fake broker, and
a TokenSource / requests session / httpx clients wired to it (no sockets)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import requests

from client.fake_broker import API, CLIENT_ID, ISSUER, SECRET, FakeBroker
from tokenbroker.client import DeviceKey, DPoPAuth, TokenSource
from tokenbroker.domain.clock import FixedClock


@pytest.fixture
def key() -> DeviceKey:
    return DeviceKey.generate()


@pytest.fixture
def broker(fixed_clock: FixedClock, key: DeviceKey) -> FakeBroker:
    return FakeBroker(fixed_clock, enrolled={key.jkt})


def make_source(broker: FakeBroker, key: DeviceKey, clock: FixedClock, **kw: object) -> TokenSource:
    return TokenSource(
        ISSUER,
        client_id=CLIENT_ID,
        client_secret=str(kw.pop("secret", SECRET)),
        key=key,
        clock=clock,
        http_client=httpx.Client(transport=broker.transport()),
        async_http_client=httpx.AsyncClient(transport=broker.async_transport()),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def source(broker: FakeBroker, key: DeviceKey, fixed_clock: FixedClock) -> TokenSource:
    return make_source(broker, key, fixed_clock, scope="model:demo:invoke")


@pytest.fixture
def api(broker: FakeBroker, source: TokenSource) -> Iterator[requests.Session]:
    """A requests session whose transport is the fake, authenticated with DPoPAuth."""
    with requests.Session() as session:
        session.mount("https://", broker.adapter())
        session.auth = DPoPAuth(source, origins=[API])
        yield session
