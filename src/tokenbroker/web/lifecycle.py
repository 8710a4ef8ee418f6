"""HTTP glue for RFC 7009 revocation and RFC 7662 introspection: one parsed request,
one service call, one response; errors are mapped here.

Parsing reuses the token endpoint's strict form rules (web/requests.py: size bounds,
no repeated parameters, one client authentication method, RFC 6749 §2.3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from tokenbroker.domain.errors import InvalidClient, InvalidRequest, OAuthError
from tokenbroker.services.client_auth import ClientCredentials
from tokenbroker.services.revocation import LifecycleRequest
from tokenbroker.web.http import json_response, oauth_error_response
from tokenbroker.web.requests import (
    _basic_credentials,
    _form,
    request_id,
    request_url,
    single_header,
    source_ip,
    user_agent,
    uses_basic_auth,
)

if TYPE_CHECKING:
    from tokenbroker.bootstrap import Container

ContainerFactory = Callable[[], "Container"]


def parse_lifecycle_request(event: APIGatewayProxyEvent) -> tuple[LifecycleRequest, str]:
    """(request, issuer derived from the URL). Raises InvalidRequest / InvalidClient."""
    url, issuer = request_url(event)
    authorization = single_header(event, "Authorization")
    form = _form(event)
    if authorization is not None and authorization[:6].lower() == "basic ":
        if "client_secret" in form:
            raise InvalidRequest("use one client authentication method, not two")
        client_id, secret = _basic_credentials(authorization)
        if form.get("client_id", client_id) != client_id:
            raise InvalidRequest("client_id does not match the authenticated client")
        credentials = ClientCredentials(client_id, secret)
    elif authorization is not None:
        raise InvalidClient()
    else:
        credentials = ClientCredentials(form.get("client_id"), form.get("client_secret"))
    if "client_assertion" in form or "client_assertion_type" in form:  # RFC 7523 §2.2
        credentials = ClientCredentials(
            credentials.client_id,
            credentials.client_secret,
            form.get("client_assertion_type"),
            form.get("client_assertion"),
        )
    request = LifecycleRequest(
        credentials=credentials,
        token=form.get("token"),
        token_type_hint=form.get("token_type_hint"),
        source_ip=source_ip(event),
        user_agent=user_agent(event),
        request_id=request_id(event),
        url=url,
    )
    return request, issuer


def revoke(
    event: APIGatewayProxyEvent, container: ContainerFactory, logger: Logger, metrics: Metrics
) -> dict[str, Any]:
    """POST revocation endpoint (RFC 7009 §2): 200 with an empty body whether or not the
    token was ours (§2.2); 401 for a bad client, 503 if the store failed (§2.2.1)."""
    basic = uses_basic_auth(event)
    try:
        request, issuer = parse_lifecycle_request(event)
        done = container().revocation.revoke(request, request_issuer=issuer)
    except OAuthError as err:
        logger.info("revocation rejected", extra={"error": err.error, "reason": err.reason})
        metrics.add_metric(name="RevocationsRejected", unit=MetricUnit.Count, value=1)
        return oauth_error_response(err, basic_auth=basic)
    logger.info(
        "revocation",
        extra={"revoked": done.revoked or "nothing", "client_id": done.client_id, "jti": done.jti},
    )
    # RFC 7009 §2.2: nothing revoked (not ours, not this client's) still answers 200
    metric = "TokensRevoked" if done.revoked else "RevocationsWithoutEffect"
    metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
    return json_response(200, {})  # RFC 7009 §2.2: the client ignores the body


def introspect(
    event: APIGatewayProxyEvent, container: ContainerFactory, logger: Logger, metrics: Metrics
) -> dict[str, Any]:
    """POST introspection endpoint (RFC 7662 §2): the token's claims or
    ``{"active": false}``; 401 for a bad client, 503 if a read failed."""
    basic = uses_basic_auth(event)
    try:
        request, issuer = parse_lifecycle_request(event)
        result = container().introspection.introspect(request, request_issuer=issuer)
    except OAuthError as err:
        logger.info("introspection rejected", extra={"error": err.error, "reason": err.reason})
        metrics.add_metric(name="IntrospectionsRejected", unit=MetricUnit.Count, value=1)
        return oauth_error_response(err, basic_auth=basic)
    logger.info(
        "introspection",
        extra={
            "caller": result.caller,
            "active": result.claims is not None,
            "reason": result.reason,
            "jti": result.claims.jti if result.claims else "",
        },
    )
    metrics.add_metric(name="Introspections", unit=MetricUnit.Count, value=1)
    return json_response(200, result.response_body())
