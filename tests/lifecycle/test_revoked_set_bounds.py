"""The device item's revoked set stays bounded: entries of expired tokens are pruned on
every write, and an overflow revokes every token the device holds (its own
tokens-not-before) instead of growing the item or dropping a revocation."""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from endpoint._support import LIFETIME, App, Broker
from tokenbroker.adapters import revocations
from tokenbroker.domain.liveness import MAX_AGE

from ._support import Lifecycle


def device_item(broker: Broker, app: App) -> dict[str, Any]:
    item = broker.ddb.get_item(
        TableName=broker.table("DevicesTable"), Key={"jkt": {"S": app.key.jkt}}
    )["Item"]
    return dict(item)


def revoked(broker: Broker, app: App) -> set[str]:
    return set(device_item(broker, app).get("revoked_jtis", {}).get("M", {}))


def jti_of(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


def test_expired_entries_are_pruned_on_the_next_write(
    broker: Broker, app: App, life: Lifecycle
) -> None:
    first = life.access_token(app)
    life.revoke(app, first)
    assert revoked(broker, app) == {jti_of(first)}
    broker.clock.advance(LIFETIME + 1)
    second = life.access_token(app)
    life.revoke(app, second)
    assert revoked(broker, app) == {jti_of(second)}


def test_an_overflow_revokes_every_token_of_the_device_so_far(
    broker: Broker, app: App, life: Lifecycle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(revocations, "MAX_REVOKED_PER_DEVICE", 2)
    tokens = [life.access_token(app) for _ in range(4)]
    for token in tokens[:3]:
        assert life.revoke(app, token)["statusCode"] == 200
    item = device_item(broker, app)
    assert item["revoked_jtis"] == {"M": {}}
    assert int(item["tokens_not_before"]["N"]) == broker.now + 1
    assert len(broker.ledger_records("token_revoked")) == 3

    broker.clock.advance(MAX_AGE)
    for token in tokens:  # the unrevoked fourth too: the server may revoke more (§2)
        assert life.at_edge(app, token) == "401"
    assert set(life.denials()) == {"token_revoked"}
    assert life.at_edge(app, life.access_token(app)) == "allow"  # issued after: fine
