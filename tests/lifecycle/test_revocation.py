"""RFC 7009 revocation at /oauth2/revoke on a moto deployment of template.yaml: a
revoked access token is refused at the edge within the liveness bound (5 s) with reason
``token_revoked`` and no extra AWS call on the edge's path; introspection reports it
inactive at once; foreign, unknown and malformed tokens answer 200 and change nothing."""

from __future__ import annotations

from endpoint._support import LIFETIME, SKEW, App, Broker, assert_error, json_body
from tokenbroker.domain.liveness import MAX_AGE

from ._support import REVOKE_PATH, Lifecycle, lifecycle_event


def ok(response: dict[str, object]) -> None:
    assert response["statusCode"] == 200, response


def test_a_revoked_token_is_refused_at_the_edge_within_the_liveness_bound(
    broker: Broker, app: App, life: Lifecycle
) -> None:
    token = life.access_token(app)
    assert life.at_edge(app, token) == "allow"  # the edge now caches the device's liveness

    ok(life.revoke(app, token))

    broker.clock.advance(MAX_AGE)  # the stated bound: 5 s
    assert life.at_edge(app, token) == "401"
    assert life.denials() == ["token_revoked"]
    # another token of the same device is untouched: only that jti was revoked
    assert life.at_edge(app, life.access_token(app)) == "allow"


def test_revocation_is_a_ledger_event_with_ids_only(
    broker: Broker, app: App, life: Lifecycle
) -> None:
    token = life.access_token(app)
    (issued,) = broker.ledger_records("token_issued")
    ok(life.revoke(app, token, basic=True, token_type_hint="access_token"))
    (record,) = broker.ledger_records("token_revoked")
    assert record["client_id"] == app.client_id
    assert record["token_jti"] == issued["token_jti"]
    assert record["jkt"] == app.key.jkt
    assert token not in str(record)
    assert app.secret not in str(record)


def test_revoking_twice_answers_200_and_records_once(
    broker: Broker, app: App, life: Lifecycle
) -> None:
    token = life.access_token(app)
    ok(life.revoke(app, token))
    ok(life.revoke(app, token))
    assert len(broker.ledger_records("token_revoked")) == 1


def test_another_clients_token_answers_200_and_stays_valid(
    broker: Broker, app: App, life: Lifecycle
) -> None:
    other = broker.new_app()
    token = life.access_token(app)
    ok(life.revoke(other, token))
    broker.clock.advance(MAX_AGE)
    assert life.at_edge(app, token) == "allow"
    assert broker.ledger_records("token_revoked") == []


def test_unknown_malformed_and_expired_tokens_answer_200_and_change_nothing(
    broker: Broker, app: App, life: Lifecycle
) -> None:
    token = life.access_token(app)
    for garbage in ("x", "a.b.c", token[:-4] + "AAAA", "é" * 10, "x" * 5000):
        ok(life.revoke(app, garbage))
    broker.clock.advance(LIFETIME + SKEW)  # expired even for the edge's clock skew
    ok(life.revoke(app, token))
    assert broker.ledger_records("token_revoked") == []


def test_a_forged_token_signed_by_another_key_changes_nothing(
    broker: Broker, app: App, life: Lifecycle
) -> None:
    from edge._support import Issuer

    forged = Issuer(client_id=app.client_id).token(broker.now, app.key.jkt)
    ok(life.revoke(app, forged))
    assert broker.ledger_records("token_revoked") == []


def test_a_bad_client_is_invalid_client_and_nothing_is_revoked(
    broker: Broker, app: App, life: Lifecycle
) -> None:
    token = life.access_token(app)
    event = lifecycle_event(
        REVOKE_PATH, {"token": token, "client_id": app.client_id, "client_secret": "wrong"}
    )
    assert_error(life.call("revocation", event), 401, "invalid_client")
    unknown = lifecycle_event(
        REVOKE_PATH, {"token": token, "client_id": "nobody", "client_secret": "wrong"}
    )
    assert json_body(life.call("revocation", unknown)) == json_body(life.call("revocation", event))
    assert broker.ledger_records("token_revoked") == []


def test_a_missing_token_or_two_auth_methods_is_invalid_request(app: App, life: Lifecycle) -> None:
    event = lifecycle_event(REVOKE_PATH, {"client_id": app.client_id, "client_secret": app.secret})
    assert_error(life.call("revocation", event), 400, "invalid_request")
    both = lifecycle_event(
        REVOKE_PATH,
        {"token": "x", "client_secret": app.secret},
        basic=(app.client_id, app.secret),
    )
    assert_error(life.call("revocation", both), 400, "invalid_request")
    repeated = lifecycle_event(
        REVOKE_PATH, f"token=a&token=b&client_id={app.client_id}&client_secret={app.secret}"
    )
    assert_error(life.call("revocation", repeated), 400, "invalid_request")


def test_round_trips_revocation_3_and_the_edge_none_extra(
    broker: Broker, app: App, life: Lifecycle
) -> None:
    from endpoint._support import RoundTrips

    token = life.access_token(app)
    assert life.at_edge(app, token) == "allow"  # warm: public key cached, liveness read
    trips = RoundTrips().attach(broker.container.client("dynamodb"))
    broker.clock.advance(MAX_AGE)
    assert life.at_edge(app, token) == "allow"
    before = trips.take()  # the edge's reads per 5 s before any revocation
    ok(life.revoke(app, token))
    assert trips.take() == [
        "dynamodb:GetItem",  # the client (authentication)
        "dynamodb:GetItem",  # the device's revoked set and version
        "dynamodb:TransactWriteItems",  # the device update + the ledger record
    ]
    broker.clock.advance(MAX_AGE)
    assert life.at_edge(app, token) == "401"
    # the same one liveness read as before; writes: at most the usage/denial record
    after = trips.take()
    reads = [c for c in after if c != "dynamodb:PutItem"]
    assert reads == [c for c in before if c != "dynamodb:PutItem"] == ["dynamodb:BatchGetItem"]
    assert len(after) - len(reads) <= 1
    life.introspect(app, token)
    assert trips.take() == ["dynamodb:GetItem", "dynamodb:BatchGetItem"]
