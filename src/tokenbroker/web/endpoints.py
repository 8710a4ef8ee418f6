"""Glue for the broker's own HTTP endpoints: one parsed request, one service call, one
response. Errors are mapped here and only here."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from tokenbroker.domain.errors import BrokerError, Conflict, OAuthError
from tokenbroker.domain.rfc8693 import GRANT_TYPE as EXCHANGE_GRANT
from tokenbroker.domain.rfc8693 import ISSUED_TOKEN_TYPE
from tokenbroker.services.issuance import IssuedAccessToken
from tokenbroker.services.protected_resource import (
    WELL_KNOWN_PATH as PROTECTED_RESOURCE_PATH,
)
from tokenbroker.services.protected_resource import protected_resource_metadata
from tokenbroker.services.registry import grant_handler
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
        # one registry of grants (services/registry.py): the RFC 8414 metadata lists it
        grant = grant_handler(parsed.request.grant_type)
        handle = getattr(getattr(container(), grant.service), grant.method)
        issued: IssuedAccessToken = handle(parsed.request, request_issuer=parsed.issuer)
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
        return _with_nonce(oauth_error_response(err, basic_auth=basic), container, err)
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
    body = issued.response_body()
    if parsed.request.grant_type == EXCHANGE_GRANT:
        body["issued_token_type"] = ISSUED_TOKEN_TYPE  # RFC 8693 §2.2.1
    return _with_nonce(json_response(200, body), container)


def _protected_resource(services: Container, request_issuer: str) -> dict[str, object]:
    s = services.settings
    s.require("audience")
    return protected_resource_metadata(
        resource=s.audience,
        issuer=s.issuer or request_issuer,
        route_scopes=dict(s.route_scopes),
    )


def _with_nonce(
    response: dict[str, Any], container: ContainerFactory, error: BaseException | None = None
) -> dict[str, Any]:
    """RFC 9449 §8: the token endpoint's DPoP-Nonce header (web/nonces.py)."""
    from tokenbroker.web.nonces import add_nonce

    try:
        services = container()
        nonces = services.token_nonces
    except BrokerError:
        return response  # no configuration: nothing to add (the error says so already)
    return add_nonce(response, nonces, services.clock, error)


def enroll_device(
    event: APIGatewayProxyEvent, container: ContainerFactory, logger: Logger, metrics: Metrics
) -> dict[str, Any]:
    """POST /oauth2/devices: a person enrolls their DPoP key (subject token + proof)."""
    basic = uses_basic_auth(event)
    try:
        parsed = parse_token_request(event)
        enrollment = container().exchange.enroll(parsed.request, request_issuer=parsed.issuer)
    except OAuthError as err:
        logger.info(
            "device enrollment rejected",
            extra={"error": err.error, "reason": err.reason, "description": err.description},
        )
        metrics.add_metric(name="EnrollmentsRejected", unit=MetricUnit.Count, value=1)
        return oauth_error_response(err, basic_auth=basic)
    except Conflict as err:  # the per-person cap, or a key enrolled already
        logger.info("device enrollment refused", extra={"error": err.error})
        metrics.add_metric(name="EnrollmentsRejected", unit=MetricUnit.Count, value=1)
        return json_response(409, {"error": err.error, "error_description": err.description})
    device = enrollment.device
    logger.info(
        "device enrolled",
        extra={"jkt": device.jkt, "client_id": device.client_id, "principal": device.principal},
    )
    metrics.add_metric(name="DevicesEnrolled", unit=MetricUnit.Count, value=1)
    return json_response(201, enrollment.response_body())


def discovery(
    event: APIGatewayProxyEvent, container: ContainerFactory, logger: Logger, metrics: Metrics
) -> dict[str, Any]:
    """RFC 8414 metadata, or the JWKS when the route is the configured jwks path."""
    try:
        services = container()
        if event.resource == services.settings.jwks_path:
            body = services.discovery.jwks()
        elif event.resource == PROTECTED_RESOURCE_PATH:  # RFC 9728
            body = _protected_resource(services, request_url(event)[1])
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
