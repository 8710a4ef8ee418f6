"""The events the gateway sends: the Lambda proxy event (REST API, payload format 1.0)
and the Lambda authorizer event (REQUEST or TOKEN), built from the request as received.

Faithful where API Gateway is surprising: ``path`` and ``pathParameters`` are
percent-decoded but ``requestContext.path`` is the path as the client sent it,
percent-encoded (there is no stage prefix locally); repeated headers stay separate in
``multiValueHeaders`` and the last one wins in ``headers``; API Gateway sets the
``X-Forwarded-*`` headers itself, whatever the client sent.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tokenbroker.local.gateway.model import RouteSpec
from tokenbroker.local.lambda_host import DEFAULT_ACCOUNT_ID, DEFAULT_REGION, Event

#: what stays as it is when a decoded path is encoded again (RFC 3986 pchar and "/")
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


@dataclass(frozen=True)
class IncomingRequest:
    """An HTTP request as API Gateway sees it (before routing)."""

    method: str
    path: str  # percent-decoded
    headers: Sequence[tuple[str, str]]  # as received: original case, repeats kept
    query: Sequence[tuple[str, str]]  # decoded, in order
    body: bytes
    source_ip: str
    protocol: str = "HTTP/1.1"
    #: the path as sent, percent-encoded ("": ``path`` encoded again)
    raw_path: str = ""

    def header(self, name: str) -> str | None:
        """The last value of a header (what API Gateway puts in ``headers``)."""
        wanted = name.lower()
        values = [v for k, v in self.headers if k.lower() == wanted]
        return values[-1] if values else None

    @property
    def encoded_path(self) -> str:
        return self.raw_path or urllib.parse.quote(self.path, safe=_PATH_SAFE)


def _multi(pairs: Iterable[tuple[str, str]]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(last value per name, every value per name); names grouped case-insensitively
    for headers is the caller's job."""
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in pairs:
        single[name] = value
        multi.setdefault(name, []).append(value)
    return single, multi


def _canonical_headers(headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers with the spelling of a name's first occurrence (names are
    case-insensitive, but a dict keyed by spelling would split them)."""
    spelling: dict[str, str] = {}
    return [(spelling.setdefault(name.lower(), name), value) for name, value in headers]


def is_binary(content_type: str | None, binary_media_types: Sequence[str]) -> bool:
    if not content_type or not binary_media_types:
        return False
    media = content_type.split(";")[0].strip().lower()
    return any(fnmatch.fnmatchcase(media, pattern) for pattern in binary_media_types)


@dataclass(frozen=True)
class RequestInfo:
    """Per-request values API Gateway generates."""

    request_id: str
    epoch_ms: int
    domain_name: str
    account_id: str = DEFAULT_ACCOUNT_ID
    region: str = DEFAULT_REGION

    @classmethod
    def new(cls, domain_name: str, *, account_id: str = DEFAULT_ACCOUNT_ID) -> RequestInfo:
        return cls(str(uuid.uuid4()), int(time.time() * 1000), domain_name, account_id)


def method_arn(route: RouteSpec, request: IncomingRequest, info: RequestInfo) -> str:
    return (
        f"arn:aws:execute-api:{info.region}:{info.account_id}:{route.api.api_id}/"
        f"{route.api.stage}/{request.method}/{request.path.lstrip('/')}"
    )


def gateway_headers(request: IncomingRequest, info: RequestInfo) -> list[tuple[str, str]]:
    """The request headers plus those API Gateway adds or replaces."""
    replaced = {"x-forwarded-proto", "x-forwarded-port", "x-forwarded-for", "x-amzn-trace-id"}
    headers = [(k, v) for k, v in request.headers if k.lower() not in replaced]
    forwarded = request.header("X-Forwarded-For")
    port = info.domain_name.rpartition(":")[2]
    trace = f"Root=1-{info.epoch_ms // 1000:08x}-{info.request_id.replace('-', '')[:24]}"
    headers += [
        ("X-Amzn-Trace-Id", trace),
        (
            "X-Forwarded-For",
            f"{forwarded}, {request.source_ip}" if forwarded else request.source_ip,
        ),
        ("X-Forwarded-Port", port),
        ("X-Forwarded-Proto", "http"),
    ]
    return _canonical_headers(headers)


def request_context(
    route: RouteSpec, request: IncomingRequest, info: RequestInfo
) -> dict[str, Any]:
    when = time.gmtime(info.epoch_ms / 1000)
    return {
        "resourceId": hashlib.sha256(route.path.encode()).hexdigest()[:6],
        "resourcePath": route.path,
        "httpMethod": request.method,
        "extendedRequestId": info.request_id.replace("-", "")[:16],
        "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", when),
        "path": request.encoded_path,  # as sent: API Gateway does not decode it
        "accountId": info.account_id,
        "protocol": request.protocol,
        "stage": route.api.stage,
        "domainPrefix": info.domain_name.split(".")[0].split(":")[0],
        "requestTimeEpoch": info.epoch_ms,
        "requestId": info.request_id,
        "identity": {
            "cognitoIdentityPoolId": None,
            "accountId": None,
            "cognitoIdentityId": None,
            "caller": None,
            "sourceIp": request.source_ip,
            "principalOrgId": None,
            "accessKey": None,
            "cognitoAuthenticationType": None,
            "cognitoAuthenticationProvider": None,
            "userArn": None,
            "userAgent": request.header("User-Agent"),
            "user": None,
        },
        "domainName": info.domain_name,
        "apiId": route.api.api_id,
    }


def proxy_event(
    route: RouteSpec,
    request: IncomingRequest,
    path_parameters: Mapping[str, str],
    info: RequestInfo,
    *,
    authorizer: Mapping[str, Any] | None = None,
) -> Event:
    """The Lambda proxy integration event (REST API, payload format 1.0)."""
    headers, multi_headers = _multi(gateway_headers(request, info))
    query, multi_query = _multi(request.query)
    body: str | None = None
    encoded = False
    if request.body:
        if is_binary(request.header("Content-Type"), route.api.binary_media_types):
            body, encoded = base64.b64encode(request.body).decode("ascii"), True
        else:
            # API Gateway passes non-binary payloads as text
            body = request.body.decode("utf-8", errors="replace")
    context = request_context(route, request, info)
    if authorizer is not None:
        context["authorizer"] = dict(authorizer)
    return {
        "resource": route.path,
        "path": request.path,
        "httpMethod": request.method,
        "headers": headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": dict(path_parameters) or None,
        "stageVariables": dict(route.api.stage_variables) if route.api.stage_variables else None,
        "requestContext": context,
        "body": body,
        "isBase64Encoded": encoded,
    }


def authorizer_event(
    route: RouteSpec,
    request: IncomingRequest,
    path_parameters: Mapping[str, str],
    info: RequestInfo,
) -> Event:
    """The Lambda authorizer event (REQUEST or TOKEN) for ``route.authorizer``."""
    assert route.authorizer is not None
    arn = method_arn(route, request, info)
    if route.authorizer.payload_type == "TOKEN":
        token = request.header(route.authorizer.headers[0])
        return {"type": "TOKEN", "authorizationToken": token, "methodArn": arn}
    headers, multi_headers = _multi(gateway_headers(request, info))
    query, multi_query = _multi(request.query)
    return {
        "type": "REQUEST",
        "methodArn": arn,
        "resource": route.path,
        "path": request.path,
        "httpMethod": request.method,
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": dict(path_parameters),
        "stageVariables": dict(route.api.stage_variables or {}),
        "requestContext": request_context(route, request, info),
    }
