"""Each lifecycle function works with ITS OWN template environment alone (the other
lifecycle tests merge several functions' environments, which would hide a variable the
template forgot to give one of them)."""

from __future__ import annotations

import pytest

from endpoint._support import App, Broker, lambda_client
from tokenbroker import bootstrap
from tokenbroker.settings import Settings

from ._support import Lifecycle


@pytest.mark.parametrize(
    ("function", "logical_id"),
    [("revocation", "RevocationFunction"), ("introspection", "IntrospectionFunction")],
)
def test_the_function_runs_on_its_own_environment(
    broker: Broker,
    app: App,
    life: Lifecycle,
    monkeypatch: pytest.MonkeyPatch,
    function: str,
    logical_id: str,
) -> None:
    token = life.access_token(app)
    own = Settings.from_mapping(broker.deployment.environment(logical_id))
    container = bootstrap.build(own, aws=lambda_client, clock=broker.clock)
    monkeypatch.setattr(bootstrap, "default", lambda: container)
    call = life.revoke if function == "revocation" else life.introspect
    response = call(app, token)
    assert response["statusCode"] == 200, response
    if function == "introspection":
        assert '"active":true' in response["body"]
