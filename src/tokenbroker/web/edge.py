"""Edge adapters: one validation core (AuthorizationService), three event shapes.

- API Gateway REST API ``REQUEST`` authorizer: IAM policy with context; 401 by raising
  ``Exception("Unauthorized")`` (the only way a REST authorizer yields 401), 403 by a
  Deny policy (insufficient scope);
- API Gateway HTTP API payload 2.0 authorizer: simple response with context;
- CloudFront Lambda@Edge viewer-request: the request goes on (with the grant in
  ``x-tokenbroker-*`` headers, client-sent ones stripped) or a 401/403 response.

Every adapter turns its event into a ResourceRequest and calls the service once, with
its renderer: the service builds the allow response BEFORE the usage write (so nothing
can fail after the write: ARCHITECTURE invariant 8); a denial is rendered here.

Path parameters reach the service percent-decoded in all three shapes (API Gateway
decodes them; for CloudFront the adapter does), and the URL the proof is checked against
is the percent-encoded one the client called: REST APIs keep ``path`` and
``requestContext.path`` as sent; HTTP APIs decode ``rawPath``, so that adapter encodes
back what can never appear literally in a path; CloudFront's ``uri`` is as sent.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, unquote

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from tokenbroker.domain.errors import (
    BrokerError,
    InsufficientScope,
    InvalidToken,
    OAuthError,
    TemporarilyUnavailable,
)
from tokenbroker.domain.nonces import NonceChallenge
from tokenbroker.domain.quotas import QuotaExceeded
from tokenbroker.services.authorization import Grant, ResourceRequest
from tokenbroker.web.events import raw_headers, raw_request_url
from tokenbroker.web.quota_responses import quota_body, quota_context, quota_response

if TYPE_CHECKING:
    from tokenbroker.bootstrap import Container

ALGS = "ES256 ES384 EdDSA"
GRANT_HEADER_PREFIX = "x-tokenbroker-"
R = TypeVar("R")
#: reasons of InvalidToken denials whose token was authentic (counted as denials, not
#: as unauthenticated noise)
AUTHENTIC_DENIALS = frozenset(
    {"device_revoked", "client_disabled", "scope_not_allowed", "token_revoked"}
)


class Unauthorized(Exception):
    """Raised by the REST authorizer: API Gateway answers 401 on exactly this message."""

    def __init__(self) -> None:
        super().__init__("Unauthorized")


def _mapping(value: object) -> Mapping[str, Any]:
    # type(...) is dict first: the runtime's events are dicts, and an ABC check is not free
    return value if type(value) is dict or isinstance(value, Mapping) else {}


def _raw(event: object) -> Mapping[str, Any]:
    """The event as Lambda delivered it (a dict), or a Powertools event data class's
    ``raw_event``. The API Gateway authorizers take the dict: importing
    ``aws_lambda_powertools.utilities.data_classes`` imports every event class of the
    package (~2.8 MiB resident, ~20 ms of cold init; benchmarks/authorizer.py), and only
    the raw event is read here."""
    if type(event) is dict:
        return event
    return _mapping(getattr(event, "raw_event", event))


def www_authenticate(error: OAuthError, resource_metadata: str = "") -> str:
    """RFC 9449 §7.1 / RFC 6750 §3 challenge (no description: it may echo input), with
    RFC 9728 §5.1 ``resource_metadata`` when known."""
    code = "insufficient_scope" if isinstance(error, InsufficientScope) else "invalid_token"
    if error.error in ("invalid_dpop_proof", "use_dpop_nonce"):
        code = error.error
    challenge = f'DPoP error="{code}", algs="{ALGS}"'
    if resource_metadata and '"' not in resource_metadata and "\\" not in resource_metadata:
        challenge += f', resource_metadata="{resource_metadata}"'
    return challenge


@dataclass(frozen=True)
class Outcome:
    grant: Grant | None
    error: OAuthError | None
    #: RFC 9728 metadata URL for the challenge of a denial ("" = none)
    resource_metadata: str = ""
    #: RFC 9449 §9: the next nonce for an allowed request ("" = nonces are off)
    next_nonce: str = ""


def authorize(
    container: Callable[[], Container],
    request: ResourceRequest,
    issuer: str,
    logger: Logger,
    metrics: Metrics,
    render: Callable[[Outcome], R],
    *,
    count_allowed: bool = True,
) -> R:
    """Run the checks and answer with ``render``: for an allowed request the service
    calls it before its one write and the response it built is returned unchanged; for
    a denial it is called here. Log and count the decision (ids and codes only, never
    the token or proof). ``count_allowed=False``: no ``RequestsAllowed`` metric (the
    API Gateway authorizers count allowed requests in the usage ledger and its
    aggregates, where each has its record: one EMF line per request would cost about
    a third of the two signature checks, benchmarks/authorizer.py); denials are always
    counted."""
    try:
        services = container()
        response = services.authorization.authorize_then(
            request,
            lambda grant: (grant, render(Outcome(grant, None, next_nonce=_next_nonce(services)))),
            request_issuer=issuer,
        )
    except OAuthError as error:
        denied = _denied(error, request, logger, metrics)
        return render(replace(denied, resource_metadata=_metadata_url(container, issuer)))
    except Exception as exc:  # noqa: BLE001 - a bug must still fail closed, and say so
        # the type only: a message or traceback could carry request data
        logger.error("authorizer failed", extra={"error_type": type(exc).__name__})
        return render(_denied(TemporarilyUnavailable("internal error"), request, logger, metrics))
    grant, rendered = response
    # The record is written and the response built: nothing below may turn it into an
    # error. Allowed requests are on record in the usage table already (with more detail
    # than a log line); logging each at INFO would cost as much CPU as a signature check.
    try:
        if _debugging(logger):
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
        if count_allowed:
            metrics.add_metric(name="RequestsAllowed", unit=MetricUnit.Count, value=1)
    except Exception:  # noqa: BLE001, S110 - the request is allowed and on record
        pass
    return rendered


def _debugging(logger: Logger) -> bool:
    """Whether ``logger.debug`` may do anything: its level lets DEBUG through (a level
    left unset counts as yes), or Powertools buffers debug lines (``buffer_config``; an
    unknown Logger counts as buffering). Asked before building the allowed request's
    debug line (~2 us per allowed request otherwise, for a line that is dropped)."""
    return logger.log_level <= logging.DEBUG or bool(getattr(logger, "_buffer_config", True))


def _next_nonce(services: Container) -> str:
    """A fresh nonce for an allowed request's answer, when nonces are on (best effort:
    the request is allowed either way; the secret was just read to check its nonce)."""
    try:
        nonces = services.resource_nonces
        return nonces.issue(services.clock()) if nonces is not None else ""
    except BrokerError:
        return ""


def _metadata_url(container: Callable[[], Container], issuer: str) -> str:
    """RFC 9728 §5.1: the configured metadata URL, else the one beside this API's base."""
    from tokenbroker.services.protected_resource import metadata_url

    try:
        configured = container().settings.resource_metadata_url
    except Exception:  # noqa: BLE001 - a denial stands without the hint
        return ""
    return configured or (metadata_url(issuer) if issuer else "")


def _denied(
    error: OAuthError, request: ResourceRequest, logger: Logger, metrics: Metrics
) -> Outcome:
    authentic = not isinstance(error, InvalidToken) or error.reason in AUTHENTIC_DENIALS
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


_REST_HEADERS = ("Authorization", "DPoP", "X-Forwarded-Proto", "Host")


def rest_request(event: Mapping[str, Any]) -> tuple[ResourceRequest, str]:
    raw = _raw(event)
    headers = raw_headers(raw, _REST_HEADERS)  # one pass over the headers for all four
    url, issuer = raw_request_url(raw, headers)
    ctx = _mapping(raw.get("requestContext"))
    identity = _mapping(ctx.get("identity"))
    params = _mapping(raw.get("pathParameters"))
    return ResourceRequest(
        authorization=tuple(headers["authorization"]),
        dpop=tuple(headers["dpop"]),
        method=str(raw.get("httpMethod") or ""),
        url=url,
        route=str(raw.get("resource") or ""),
        path_parameters={str(k): str(v) for k, v in params.items()},
        source_ip=str(identity.get("sourceIp") or ""),
        user_agent=str(identity.get("userAgent") or ""),
        request_id=str(ctx.get("requestId") or ""),
    ), issuer


def _method_arn(event: Mapping[str, Any]) -> str:
    """The event's ``methodArn``, exactly as API Gateway sent it. Never re-assembled from
    parsed parts: Powertools' parser splits on ``:`` (a model ``llama3:8b`` keeps its
    colon in the ARN) and its policy builder rejects ``@``, ``~``, ``%`` and more."""
    arn = _raw(event).get("methodArn")
    if not isinstance(arn, str) or not arn.startswith("arn:") or len(arn) > 2048:
        raise Unauthorized()  # API Gateway always sends one: anything else is not it
    return arn


def rest_response(event: Mapping[str, Any], outcome: Outcome) -> dict[str, Any]:
    """Allow: a policy for exactly this request's ``methodArn``, with the grant as
    context. Insufficient scope: a Deny policy for it (403). Everything else: 401."""
    if isinstance(outcome.error, QuotaExceeded):
        return quota_response(_method_arn(event), outcome.error)
    grant = outcome.grant
    challenged = isinstance(outcome.error, InsufficientScope | NonceChallenge)
    if grant is None and not challenged:
        raise Unauthorized()
    response: dict[str, Any] = {
        "principalId": grant.principal if grant else "anonymous",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Action": "execute-api:Invoke",
                    "Effect": "Allow" if grant else "Deny",
                    "Resource": [_method_arn(event)],
                }
            ],
        },
    }
    if grant is not None:
        response["context"] = grant.context()
        if outcome.next_nonce:  # the protected function answers it (web/protected.py)
            response["context"]["dpop_nonce"] = outcome.next_nonce
    elif outcome.error is not None:
        # the ACCESS_DENIED gateway response maps these into its headers (template.yaml)
        response["context"] = challenge_context(outcome.error, outcome.resource_metadata)
    return response


def challenge_context(error: OAuthError, resource_metadata: str = "") -> dict[str, str]:
    """A Deny's context: the challenge, and the fresh nonce of a NonceChallenge."""
    context = {"challenge": www_authenticate(error, resource_metadata)}
    if isinstance(error, NonceChallenge):
        context["dpop_nonce"] = error.nonce
    return context


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


#: what may appear literally in an encoded path (RFC 3986 pchar and "/"); "%" is kept
#: only where it starts a valid escape (see _encoded_path)
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_PCT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def _encoded_path(path: str) -> str:
    """HTTP APIs hand the path over percent-decoded (``rawPath`` too): encode what can
    never appear literally in a path again (space, non-ASCII, ``?``, ``#``, a ``%`` that
    starts no escape...), leaving an already encoded path byte for byte as it was."""
    out = []
    for part in re.split(r"(%[0-9A-Fa-f]{2})", path):
        out.append(part if _PCT_ESCAPE.fullmatch(part) else quote(part, safe=_PATH_SAFE))
    return "".join(out)


def http_api_request(event: Mapping[str, Any]) -> tuple[ResourceRequest, str]:
    raw = _raw(event)
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
        url=f"https://{host}{_encoded_path(str(raw.get('rawPath') or http.get('path') or '/'))}",
        route=route_key.partition(" ")[2],
        path_parameters={str(k): str(v) for k, v in params.items()},
        source_ip=str(http.get("sourceIp") or ""),
        user_agent=str(http.get("userAgent") or ""),
        request_id=str(ctx.get("requestId") or ""),
    ), f"https://{host}{base}"


def http_api_response(outcome: Outcome) -> dict[str, Any]:
    """The simple response (``EnableSimpleResponses``): what Powertools'
    ``APIGatewayAuthorizerResponseV2.asdict()`` builds, without importing its package."""
    if isinstance(outcome.error, QuotaExceeded):
        return _simple_response(True, quota_context(outcome.error))
    if outcome.grant is None:
        return _simple_response(False)
    return _simple_response(True, outcome.grant.context())


def _simple_response(authorized: bool, context: Mapping[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"isAuthorized": authorized}
    if context:
        response["context"] = dict(context)
    return response


# ---- CloudFront Lambda@Edge viewer-request -----------------------------------------


def _route_patterns(route_scopes: Mapping[str, str]) -> list[tuple[str, str, re.Pattern[str]]]:
    patterns = []
    for key in route_scopes:
        method, _, route = key.partition(" ")
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(route))
        patterns.append((method, route, re.compile(f"{regex}")))
    return patterns


def _decoded(params: Mapping[str, str]) -> dict[str, str] | None:
    """Percent-decoded path parameters (as API Gateway hands them over); None if one is
    not valid UTF-8 once decoded (no route then: a clean denial)."""
    try:
        return {k: unquote(v, errors="strict") for k, v in params.items()}
    except UnicodeDecodeError:
        return None


def edge_request(
    event: Mapping[str, Any], route_scopes: Mapping[str, str]
) -> tuple[ResourceRequest, dict[str, Any]]:
    """(request, the CloudFront request object). No issuer comes from the request: the
    viewer chooses the Host header, so the issuer is the bundled configuration's alone."""
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
        decoded = _decoded(match.groupdict()) if m == method and match else None
        if decoded is not None:
            route, params = template, decoded
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
    return request, cf_request


def edge_response(cf_request: Mapping[str, Any], outcome: Outcome) -> dict[str, Any]:
    """The request to pass on (with the grant headers) or a 401/403 response. Builds a
    new object: the allow response is built before the usage write, and a failed write
    must still be able to answer a denial."""
    headers = {
        name: values
        for name, values in (cf_request.get("headers") or {}).items()
        if not name.startswith(GRANT_HEADER_PREFIX)  # never let a client send its own
    }
    if isinstance(outcome.error, QuotaExceeded):
        return {
            "status": "429",
            "statusDescription": "Too Many Requests",
            "headers": {
                "retry-after": [{"key": "Retry-After", "value": str(outcome.error.retry_after)}],
                "cache-control": [{"key": "Cache-Control", "value": "no-store"}],
                "content-type": [{"key": "Content-Type", "value": "application/json"}],
            },
            "body": quota_body(outcome.error),
        }
    if outcome.grant is None:
        error = outcome.error or InvalidToken()
        status = "403" if isinstance(error, InsufficientScope) else "401"
        denial_headers = {
            "www-authenticate": [
                {
                    "key": "WWW-Authenticate",
                    "value": www_authenticate(error, outcome.resource_metadata),
                }
            ],
            "cache-control": [{"key": "Cache-Control", "value": "no-store"}],
            "content-type": [{"key": "Content-Type", "value": "application/json"}],
        }
        if isinstance(error, NonceChallenge):
            denial_headers["dpop-nonce"] = [{"key": "DPoP-Nonce", "value": error.nonce}]
        return {
            "status": status,
            "statusDescription": "Forbidden" if status == "403" else "Unauthorized",
            "headers": denial_headers,
            "body": '{"message":"Unauthorized"}' if status == "401" else '{"message":"Forbidden"}',
        }
    for key, value in outcome.grant.context().items():
        name = GRANT_HEADER_PREFIX + key.replace("_", "-")
        headers[name] = [{"key": name, "value": value}]
    return {**cf_request, "headers": headers}
