"""Edge adapters: one validation core (AuthorizationService), three event shapes.

- API Gateway REST API ``REQUEST`` authorizer: IAM policy with context; 401 by raising
  ``Exception("Unauthorized")`` (the only way a REST authorizer yields 401), 403 by a
  Deny policy (insufficient scope);
- API Gateway HTTP API payload 2.0 authorizer: simple response with context;
- CloudFront Lambda@Edge viewer-request: the request goes on (with the grant in
  ``x-tokenbroker-*`` headers, client-sent ones stripped) or a 401/403 response.

Every adapter turns its event into a ResourceRequest and calls the service once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerEventV2,
    APIGatewayAuthorizerRequestEvent,
    APIGatewayAuthorizerResponse,
    APIGatewayAuthorizerResponseV2,
)

from tokenbroker.domain.errors import (
    InsufficientScope,
    InvalidToken,
    OAuthError,
    TemporarilyUnavailable,
)
from tokenbroker.services.authorization import Grant, ResourceRequest
from tokenbroker.web.events import raw_header_values, raw_request_url

if TYPE_CHECKING:
    from tokenbroker.bootstrap import Container

ALGS = "ES256 ES384 EdDSA"
GRANT_HEADER_PREFIX = "x-tokenbroker-"


class Unauthorized(Exception):
    """Raised by the REST authorizer: API Gateway answers 401 on exactly this message."""

    def __init__(self) -> None:
        super().__init__("Unauthorized")


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def www_authenticate(error: OAuthError) -> str:
    """RFC 9449 §7.1 / RFC 6750 §3 challenge (no description: it may echo input)."""
    code = "insufficient_scope" if isinstance(error, InsufficientScope) else "invalid_token"
    if error.error in ("invalid_dpop_proof",):
        code = "invalid_dpop_proof"
    return f'DPoP error="{code}", algs="{ALGS}"'


@dataclass(frozen=True)
class Outcome:
    grant: Grant | None
    error: OAuthError | None


def authorize(
    container: Callable[[], Container],
    request: ResourceRequest,
    issuer: str,
    logger: Logger,
    metrics: Metrics,
) -> Outcome:
    """Run the checks; log and count the decision (ids and codes only, never the token
    or proof)."""
    try:
        grant = container().authorization.authorize(request, request_issuer=issuer)
    except OAuthError as error:
        return _denied(error, request, logger, metrics)
    except Exception as exc:  # noqa: BLE001 - a bug must still fail closed, and say so
        # the type only: a message or traceback could carry request data
        logger.error("authorizer failed", extra={"error_type": type(exc).__name__})
        return _denied(TemporarilyUnavailable("internal error"), request, logger, metrics)
    # Allowed requests are on record in the usage table already (with more detail than a
    # log line); logging each at INFO would cost as much CPU as a signature check.
    logger.debug(
        "request allowed",
        extra={
            "principal": grant.principal,
            "client_id": grant.client_id,
            "jkt": grant.jkt,
            "token_jti": grant.token_jti,
            "usage_id": grant.usage_id,
            "method": request.method,
            "route": request.route,
            "request_id": request.request_id,
        },
    )
    metrics.add_metric(name="RequestsAllowed", unit=MetricUnit.Count, value=1)
    return Outcome(grant, None)


def _denied(
    error: OAuthError, request: ResourceRequest, logger: Logger, metrics: Metrics
) -> Outcome:
    authentic = not isinstance(error, InvalidToken) or error.reason in (
        "device_revoked",
        "client_disabled",
    )
    logger.info(
        "request denied",
        extra={
            "error": error.error,
            "reason": error.reason,
            "description": error.description,
            "method": request.method,
            "route": request.route,
            "request_id": request.request_id,
        },
    )
    metrics.add_metric(
        name="RequestsDenied" if authentic else "UnauthenticatedRequests",
        unit=MetricUnit.Count,
        value=1,
    )
    return Outcome(None, error)


# ---- API Gateway REST API REQUEST authorizer ---------------------------------------


def rest_request(event: APIGatewayAuthorizerRequestEvent) -> tuple[ResourceRequest, str]:
    raw = event.raw_event
    url, issuer = raw_request_url(raw)
    ctx = _mapping(raw.get("requestContext"))
    identity = _mapping(ctx.get("identity"))
    params = _mapping(raw.get("pathParameters"))
    return ResourceRequest(
        authorization=tuple(raw_header_values(raw, "Authorization")),
        dpop=tuple(raw_header_values(raw, "DPoP")),
        method=str(raw.get("httpMethod") or ""),
        url=url,
        route=str(raw.get("resource") or ""),
        path_parameters={str(k): str(v) for k, v in params.items()},
        source_ip=str(identity.get("sourceIp") or ""),
        user_agent=str(identity.get("userAgent") or ""),
        request_id=str(ctx.get("requestId") or ""),
    ), issuer


def rest_response(event: APIGatewayAuthorizerRequestEvent, outcome: Outcome) -> dict[str, Any]:
    """Allow: a policy for exactly this method ARN, with the grant as context.
    Insufficient scope: a Deny policy (403). Everything else: 401 (raise)."""
    try:
        arn = event.parsed_arn
        method, resource = arn.http_method, arn.resource
    except Exception as exc:  # a malformed methodArn never comes from API Gateway
        raise Unauthorized() from exc
    if not method or (outcome.grant is None and not isinstance(outcome.error, InsufficientScope)):
        raise Unauthorized()
    grant = outcome.grant
    policy = APIGatewayAuthorizerResponse(
        principal_id=grant.principal if grant else "anonymous",
        region=arn.region,
        aws_account_id=arn.aws_account_id,
        api_id=arn.api_id,
        stage=arn.stage,
        context=grant.context() if grant else None,
    )
    if grant is None:
        policy.deny_route(http_method=method, resource=resource)
    else:
        policy.allow_route(http_method=method, resource=resource)
    return policy.asdict()


# ---- API Gateway HTTP API payload 2.0 authorizer -----------------------------------


def _v2_header(raw: Mapping[str, Any], name: str) -> tuple[str, ...]:
    """HTTP APIs join repeated headers with commas. A DPoP proof or a DPoP/Bearer
    credential never contains a comma, so a comma means more than one header."""
    headers = raw.get("headers")
    if not isinstance(headers, Mapping):
        return ()
    values = [
        v
        for k, v in headers.items()
        if isinstance(k, str) and k.lower() == name.lower() and isinstance(v, str)
    ]
    return tuple(part for v in values for part in v.split(","))


def http_api_request(event: APIGatewayAuthorizerEventV2) -> tuple[ResourceRequest, str]:
    raw = event.raw_event
    ctx = _mapping(raw.get("requestContext"))
    http = _mapping(ctx.get("http"))
    host = str(ctx.get("domainName") or "")
    stage = str(ctx.get("stage") or "$default")
    base = "" if stage == "$default" else f"/{stage}"
    route_key = str(raw.get("routeKey") or "")
    params = _mapping(raw.get("pathParameters"))
    return ResourceRequest(
        authorization=_v2_header(raw, "Authorization"),
        dpop=_v2_header(raw, "DPoP"),
        method=str(http.get("method") or ""),
        url=f"https://{host}{raw.get('rawPath') or http.get('path') or '/'}",
        route=route_key.partition(" ")[2],
        path_parameters={str(k): str(v) for k, v in params.items()},
        source_ip=str(http.get("sourceIp") or ""),
        user_agent=str(http.get("userAgent") or ""),
        request_id=str(ctx.get("requestId") or ""),
    ), f"https://{host}{base}"


def http_api_response(outcome: Outcome) -> dict[str, Any]:
    if outcome.grant is None:
        return APIGatewayAuthorizerResponseV2(authorize=False).asdict()
    return APIGatewayAuthorizerResponseV2(authorize=True, context=outcome.grant.context()).asdict()


# ---- CloudFront Lambda@Edge viewer-request -----------------------------------------


def _route_patterns(route_scopes: Mapping[str, str]) -> list[tuple[str, str, re.Pattern[str]]]:
    patterns = []
    for key in route_scopes:
        method, _, route = key.partition(" ")
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(route))
        patterns.append((method, route, re.compile(f"{regex}")))
    return patterns


def edge_request(
    event: Mapping[str, Any], route_scopes: Mapping[str, str]
) -> tuple[ResourceRequest, str, dict[str, Any]]:
    """(request, issuer fallback, the CloudFront request object)."""
    record = event["Records"][0]["cf"]
    cf_request: dict[str, Any] = record["request"]
    headers = cf_request.get("headers") or {}

    def values(name: str) -> tuple[str, ...]:
        return tuple(h.get("value", "") for h in headers.get(name.lower(), []))

    host = (values("host") or ("",))[0]
    uri = str(cf_request.get("uri") or "/")
    method = str(cf_request.get("method") or "")
    route, params = "", {}
    for m, template, pattern in _route_patterns(route_scopes):
        match = pattern.fullmatch(uri)
        if m == method and match:
            route, params = template, match.groupdict()
            break
    request = ResourceRequest(
        authorization=values("authorization"),
        dpop=values("dpop"),
        method=method,
        url=f"https://{host}{uri}",
        route=route,
        path_parameters=params,
        source_ip=str(cf_request.get("clientIp") or ""),
        user_agent=(values("user-agent") or ("",))[0],
        request_id=str(record.get("config", {}).get("requestId") or ""),
    )
    return request, f"https://{host}", cf_request


def edge_response(cf_request: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
    headers = cf_request.setdefault("headers", {})
    for name in [h for h in headers if h.startswith(GRANT_HEADER_PREFIX)]:
        del headers[name]  # never let a client supply its own grant headers
    if outcome.grant is None:
        error = outcome.error or InvalidToken()
        status = "403" if isinstance(error, InsufficientScope) else "401"
        return {
            "status": status,
            "statusDescription": "Forbidden" if status == "403" else "Unauthorized",
            "headers": {
                "www-authenticate": [{"key": "WWW-Authenticate", "value": www_authenticate(error)}],
                "cache-control": [{"key": "Cache-Control", "value": "no-store"}],
                "content-type": [{"key": "Content-Type", "value": "application/json"}],
            },
            "body": '{"message":"Unauthorized"}' if status == "401" else '{"message":"Forbidden"}',
        }
    for key, value in outcome.grant.context().items():
        name = GRANT_HEADER_PREFIX + key.replace("_", "-")
        headers[name] = [{"key": name, "value": value}]
    return cf_request
