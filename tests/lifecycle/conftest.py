"""Fixtures for RFC 7009 / RFC 7662: the endpoint tests' moto deployment of the real
template.yaml (tests/endpoint/_support.py ``Broker``) with the environments of the token,
discovery, revocation, introspection and authorizer functions, so one test can issue a
token, revoke it, and present it at the edge."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest
from moto import mock_aws

from endpoint._support import REAL_DEFAULT, REGION, TEMPLATE, App, Broker, shared_session
from tokenbroker import bootstrap
from tokenbroker.domain.clock import FixedClock
from tokenbroker.local.provision import provision
from tokenbroker.local.template import Template, load_template

from ._support import Lifecycle

_stacks = itertools.count()
FUNCTIONS = (
    "DiscoveryFunction",
    "AuthorizerFunction",
    "TokenFunction",
    "RevocationFunction",
    "IntrospectionFunction",
)


@pytest.fixture(scope="package")
def moto_backend() -> Iterator[None]:
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
        stack_name=f"tb-lifecycle-{next(_stacks)}",
        region=REGION,
    )
    for function in FUNCTIONS:
        for name, value in deployment.environment(function).items():
            monkeypatch.setenv(name, value)
    broker = Broker(deployment, FixedClock(int(time.time())))
    monkeypatch.setattr(bootstrap, "default", broker.default)
    yield broker
    REAL_DEFAULT.cache_clear()


@pytest.fixture
def app(broker: Broker) -> App:
    return broker.new_app()


@pytest.fixture
def life(broker: Broker) -> Lifecycle:
    return Lifecycle(broker)
