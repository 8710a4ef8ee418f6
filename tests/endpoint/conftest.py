"""Fixtures: one moto backend for the package, a fresh deployment of the real
template.yaml per test (tables, KMS key, function environments), a composition root on
a fixed clock standing in for ``bootstrap.default``, and a registered client app."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest
from moto import mock_aws

from tokenbroker import bootstrap
from tokenbroker.domain.clock import FixedClock
from tokenbroker.local.provision import provision
from tokenbroker.local.template import Template, load_template

from ._support import REAL_DEFAULT, REGION, TEMPLATE, App, Broker, shared_session

_stacks = itertools.count()


@pytest.fixture(scope="package")
def moto_backend() -> Iterator[None]:
    """moto for the whole package; each test provisions its own stack in it (a fresh
    ``mock_aws`` per test costs a backend reset, ~0.3 s)."""
    with mock_aws():
        yield


@pytest.fixture(scope="package")
def template() -> Template:
    return load_template(TEMPLATE)


@pytest.fixture
def broker(
    moto_backend: None, template: Template, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Broker]:
    REAL_DEFAULT.cache_clear()
    deployment = provision(
        template,
        session_or_clients=shared_session(),
        stack_name=f"tb-endpoint-{next(_stacks)}",
        region=REGION,
    )
    environment = {
        **deployment.environment("DiscoveryFunction"),
        **deployment.environment("TokenFunction"),
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    # the clock is fixed at the wall-clock second the test starts: tokens it issues
    # also pass pyjwt's and joserfc's own time checks
    broker = Broker(deployment, FixedClock(int(time.time())))
    monkeypatch.setattr(bootstrap, "default", broker.default)
    yield broker
    REAL_DEFAULT.cache_clear()


@pytest.fixture
def app(broker: Broker) -> App:
    """A client with three scopes and one enrolled ES256 device key."""
    return broker.new_app()
