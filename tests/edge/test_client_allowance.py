"""A token is worth no more than its client is allowed NOW (ARCHITECTURE invariant 9),
on the real DynamoDB adapters (moto) and the real REST handler: the token's scope must
be within the client's current scopes and its ``iat`` not before the client's
tokens-not-before, both read in the liveness view the edge already keeps (the same one
BatchGetItem per (client, device) per MAX_AGE, no extra round trip)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from botocore.awsrequest import AWSPreparedRequest

from edge import _support as s
from edge.test_authorizer_faults import Stack, _count_sends
from tokenbroker.domain.liveness import MAX_AGE


def _invoke_event(stack: Stack, token: str, model: str) -> dict[str, Any]:
    path = f"/v1/models/{model}/invoke"
    proof = s.proof(stack.device, token, htm="POST", htu=s.url_for(path), iat=stack.now)
    return s.rest_event(
        s.dpop_headers(token, proof),
        method="POST",
        resource=s.INVOKE,
        path=path,
        path_parameters={"model": model},
    )


def _client_scopes(stack: Stack) -> set[str]:
    item = stack.ddb.get_item(
        TableName=stack.deployment.refs["ClientsTable"],
        Key={"client_id": {"S": stack.client_id}},
        ConsistentRead=True,
    )["Item"]
    return set(item["scopes"]["SS"])


def test_a_token_signed_straight_through_kms_for_a_scope_the_client_lacks_is_denied(
    stack: Stack, app: Any
) -> None:
    # the attack of issue 8.4: whoever can kms:Sign mints model:secret:invoke for a
    # client allowed only profile and model:x:invoke; no token_issued record exists
    issuer = stack.kms_issuer()
    container = stack.container(kms_keys=True)
    token = issuer.token(stack.now, stack.device.jkt, scope="model:secret:invoke")

    assert app(container, _invoke_event(stack, token, "secret")) == "401"
    assert stack.decisions() == [("deny", "scope_not_allowed")]
    assert "model:secret:invoke" not in _client_scopes(stack)


def test_a_token_with_one_extra_scope_is_denied_even_on_a_route_it_may_use(
    stack: Stack, app: Any
) -> None:
    token = stack.issuer.token(stack.now, stack.device.jkt, scope="model:x:invoke admin")

    assert app(stack.container(), _invoke_event(stack, token, "x")) == "401"
    assert stack.decisions() == [("deny", "scope_not_allowed")]


def test_a_token_within_the_clients_scopes_is_allowed(stack: Stack, app: Any) -> None:
    token = stack.issuer.token(stack.now, stack.device.jkt, scope="profile model:x:invoke")

    assert app(stack.container(), _invoke_event(stack, token, "x")) == "allow"
    assert stack.decisions() == [("allow", "ok")]


def test_a_scope_removed_from_the_client_stops_working_within_the_liveness_bound(
    stack: Stack, app: Any
) -> None:
    container = stack.container()
    token = stack.issuer.token(stack.now, stack.device.jkt, scope="model:x:invoke")
    assert app(container, _invoke_event(stack, token, "x")) == "allow"

    client = stack.admin.update_client_scopes(stack.client_id, "profile")
    assert client.scopes == frozenset({"profile"})
    assert "client_scopes_changed" in stack.admin_events()

    stack.clock.advance(MAX_AGE - 1)  # the view may still be the old one
    assert app(container, _invoke_event(stack, token, "x")) in ("allow", "401")
    stack.clock.advance(1)  # at the bound: never later
    assert app(container, _invoke_event(stack, token, "x")) == "401"
    assert app(container, _invoke_event(stack, token, "x")) == "401"
    assert Counter(stack.decisions())[("deny", "scope_not_allowed")] >= 2


def test_a_scope_added_to_the_client_is_usable_by_its_new_tokens(stack: Stack, app: Any) -> None:
    stack.admin.update_client_scopes(stack.client_id, "profile model:x:invoke model:y:invoke")
    token = stack.issuer.token(stack.now, stack.device.jkt, scope="model:y:invoke")

    assert app(stack.container(), _invoke_event(stack, token, "y")) == "allow"


def test_revoking_a_clients_tokens_refuses_those_issued_before_and_not_after(
    stack: Stack, app: Any
) -> None:
    container = stack.container()
    old = stack.issuer.token(stack.now, stack.device.jkt, iat=stack.now)
    assert app(container, stack.event(token=old)) == "allow"

    client = stack.admin.revoke_client_tokens(stack.client_id)
    assert client.tokens_not_before == stack.now + 1
    assert "client_tokens_revoked" in stack.admin_events()

    stack.clock.advance(MAX_AGE)
    assert app(container, stack.event(token=old)) == "401"
    assert ("deny", "token_revoked") in stack.decisions()
    fresh = stack.issuer.token(stack.now, stack.device.jkt, iat=stack.now)
    assert app(container, stack.event(token=fresh)) == "allow"


def test_a_token_issued_in_the_second_of_the_revocation_is_refused(stack: Stack, app: Any) -> None:
    container = stack.container()
    stack.admin.revoke_client_tokens(stack.client_id)
    same_second = stack.issuer.token(stack.now, stack.device.jkt, iat=stack.now)

    assert app(container, stack.event(token=same_second)) == "401"
    assert stack.decisions() == [("deny", "token_revoked")]


def test_the_scopes_and_not_before_come_in_the_one_liveness_read(stack: Stack, app: Any) -> None:
    container = stack.container()
    sent = _count_sends(stack.ddb)
    bodies: list[dict[str, Any]] = []

    def keep(request: AWSPreparedRequest, **kwargs: Any) -> None:
        bodies.append(json.loads(request.body))

    stack.ddb.meta.events.register("before-send.dynamodb.BatchGetItem", keep)

    for _ in range(3):
        assert app(container, stack.event()) == "allow"

    # (the client's quota rules ride in that read: adapters/quotas.py::RulesRider)
    assert sent == {"BatchGetItem": 1, "PutItem": 3}
    (body,) = bodies
    clients = body["RequestItems"][stack.deployment.refs["ClientsTable"]]
    projected = {
        clients["ExpressionAttributeNames"][n.strip()]
        for n in clients["ProjectionExpression"].split(",")
    }
    assert projected == {"status", "scopes", "tokens_not_before"}
