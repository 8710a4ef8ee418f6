"""RFC 7009 for refresh tokens: revoking one revokes its whole family (RFC 7009 §2.1),
as a ledger event; another client's refresh token changes nothing."""

# ruff: noqa: F811  (the idp fixture is imported from the endpoint tests)
from __future__ import annotations

from endpoint._support import App, Broker, assert_error, json_body
from endpoint.test_refresh_tokens import refresh, started
from endpoint.test_token_exchange import FakeIdp, idp, person  # noqa: F401

from ._support import Lifecycle


def test_revoking_a_refresh_token_revokes_its_family(
    broker: Broker, idp: FakeIdp, app: App, life: Lifecycle
) -> None:
    key, first = started(broker, idp, app)
    second = json_body(refresh(broker, app, first, key))["refresh_token"]

    assert life.revoke(app, second, token_type_hint="refresh_token")["statusCode"] == 200

    body = assert_error(refresh(broker, app, second, key), 400, "invalid_grant")
    assert "revoked" in body["error_description"]
    (record,) = broker.ledger_records("token_revoked")
    assert (record["principal"], record["client_id"], record["reason"]) == (
        person(),
        app.client_id,
        "refresh_token",
    )
    # again (and with the wrong hint): 200, nothing new
    assert life.revoke(app, second, token_type_hint="access_token")["statusCode"] == 200
    assert len(broker.ledger_records("token_revoked")) == 1


def test_another_clients_refresh_token_changes_nothing(
    broker: Broker, idp: FakeIdp, app: App, life: Lifecycle
) -> None:
    key, first = started(broker, idp, app)
    stranger = broker.new_app()
    assert life.revoke(stranger, first)["statusCode"] == 200
    assert broker.ledger_records("token_revoked") == []
    assert refresh(broker, app, first, key)["statusCode"] == 200
