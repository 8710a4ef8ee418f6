"""Every ledger writer gives its item the hot-window TTL (issue 9): the edge (allowed
and denied requests), the token endpoint (issuance, refusal), the admin plane (client,
scopes, tokens, device), revocation (RFC 7009) and signing key events. DynamoDB keeps
no record longer than ``USAGE_HOT_WINDOW_DAYS``; the retention is kept in ``ru`` (the
archive holds the record for it). Run with a window of 7 days, not the default 30, so
a writer the composition root does not hand the deployment's window fails."""

from __future__ import annotations

from typing import Any

import pytest

from endpoint._support import App, Broker
from tokenbroker import bootstrap
from tokenbroker.adapters.ledger_items import HOT_WINDOW_DAYS, RETAIN_UNTIL, TTL
from tokenbroker.domain.liveness import MAX_AGE
from tokenbroker.domain.models import EventType
from tokenbroker.domain.units import DAY_SECONDS

from ._support import Lifecycle

WINDOW_DAYS = 7


def _every_item(broker: Broker) -> list[dict[str, Any]]:
    return broker.ledger_records(None)


def test_every_writer_expires_its_item_at_the_end_of_the_hot_window(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert WINDOW_DAYS != HOT_WINDOW_DAYS  # a writer left on the default would fail
    monkeypatch.setenv("USAGE_HOT_WINDOW_DAYS", str(WINDOW_DAYS))
    broker.reset()
    life = Lifecycle(broker)
    app: App = broker.new_app()  # admin: client_created, device_enrolled
    admin = bootstrap.default().admin
    token = life.access_token(app)  # token endpoint: token_issued
    assert life.at_edge(app, token) == "allow"  # edge: request allow
    refused = broker.issue(app, secret="wrong" * 8)  # token endpoint: token_denied
    assert refused["statusCode"] == 401
    admin.update_client_scopes(app.client_id, " ".join(app.scopes))
    assert life.revoke(app, token)["statusCode"] == 200  # RFC 7009: token_revoked
    broker.clock.advance(MAX_AGE)  # the edge's liveness cache bound
    assert life.at_edge(app, token) == "401"  # edge: request deny
    admin.revoke_client_tokens(app.client_id)
    admin.revoke_device(app.key.jkt)
    admin.disable_client(app.client_id)

    items = _every_item(broker)
    events = {item["event"] for item in items}
    assert {
        EventType.CLIENT_CREATED,
        EventType.DEVICE_ENROLLED,
        EventType.TOKEN_ISSUED,
        EventType.TOKEN_DENIED,
        EventType.CLIENT_SCOPES_CHANGED,
        EventType.TOKEN_REVOKED,
        EventType.CLIENT_TOKENS_REVOKED,
        EventType.DEVICE_REVOKED,
        EventType.CLIENT_DISABLED,
        EventType.REQUEST,
    } <= events, events
    assert {i["decision"] for i in items if i["event"] == EventType.REQUEST} == {"allow", "deny"}
    for item in items:
        hot_until = int(item["at"]) // 1000 + WINDOW_DAYS * DAY_SECONDS
        retain = int(item.get(RETAIN_UNTIL, item[TTL]))
        # never longer in DynamoDB than the window (nor than the record's retention)
        assert int(item[TTL]) == min(hot_until, retain), item["event"]
        if RETAIN_UNTIL in item:
            assert int(item[RETAIN_UNTIL]) > hot_until, item["event"]
