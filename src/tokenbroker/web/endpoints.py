"""Glue for the broker's own HTTP endpoints: one parsed request, one service call, one
response. Errors are mapped here and only here."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from tokenbroker.domain.errors import BrokerError, OAuthError
from tokenbroker.web.http import json_response, oauth_error_response
from tokenbroker.web.requests import parse_token_request, request_url, uses_basic_auth

if TYPE_CHECKING:
    from tokenbroker.bootstrap import Container

ContainerFactory = Callable[[], "Container"]


def token(
    event: APIGatewayProxyEvent, container: ContainerFactory, logger: Logger, metrics: Metrics
) -> dict[str, Any]:
    """POST token endpoint (RFC 6749 §4.4, RFC 9449 §5)."""
    basic = uses_basic_auth(event)
    try:
        parsed = parse_token_request(event)
        issued = container().issuance.issue(parsed.request, request_issuer=parsed.issuer)
    except OAuthError as err:
        # ids and codes only: never the secret, the proof or a token
        logger.info(
            "token request rejected",
            extra={
                "error": err.error,
                "reason": err.reason,
                "description": err.description,
            },
        )
        metrics.add_metric(name="TokenRequestsRejected", unit=MetricUnit.Count, value=1)
        return oauth_error_response(err, basic_auth=basic)
    logger.info(
        "token issued",
        extra={
            "jti": issued.jti,
            "client_id": issued.client_id,
            "jkt": issued.jkt,
            "scope": " ".join(issued.scope),
            "expires_in": issued.expires_in,
        },
    )
    metrics.add_metric(name="TokensIssued", unit=MetricUnit.Count, value=1)
    return json_response(200, issued.response_body())


def discovery(
    event: APIGatewayProxyEvent, container: ContainerFactory, logger: Logger, metrics: Metrics
) -> dict[str, Any]:
    """RFC 8414 metadata, or the JWKS when the route is the configured jwks path."""
    try:
        services = container()
        if event.resource == services.settings.jwks_path:
            body = services.discovery.jwks()
        else:
            body = services.discovery.metadata(request_url(event)[1])
    except BrokerError as err:
        logger.warning("discovery failed", extra={"error": err.error, "reason": err.reason})
        metrics.add_metric(name="DiscoveryFailures", unit=MetricUnit.Count, value=1)
        return oauth_error_response(err)
    metrics.add_metric(name="DiscoveryRequests", unit=MetricUnit.Count, value=1)
    # public documents: cacheable, unlike token responses
    response = json_response(200, body)
    response["headers"]["Cache-Control"] = "public, max-age=300"
    response["headers"].pop("Pragma", None)
    return response
