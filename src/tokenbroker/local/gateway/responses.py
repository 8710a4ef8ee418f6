"""What the gateway answers: a Lambda proxy response turned into HTTP, or a gateway
response (API Gateway's defaults, customised by the Api's ``GatewayResponses``)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tokenbroker.local.gateway.events import RequestInfo
from tokenbroker.local.gateway.model import ApiSpec, GatewayResponse


@dataclass(frozen=True)
class Reply:
    """An HTTP response before it becomes a werkzeug Response."""

    status: int
    headers: Sequence[tuple[str, str]]
    body: bytes


_DEFAULT_RESPONSES: dict[str, tuple[int, str, str]] = {
    # type: (status, message, x-amzn-ErrorType)
    "MISSING_AUTHENTICATION_TOKEN": (
        403,
        "Missing Authentication Token",
        "MissingAuthenticationTokenException",
    ),
    "UNAUTHORIZED": (401, "Unauthorized", "UnauthorizedException"),
    "ACCESS_DENIED": (403, "Forbidden", "AccessDeniedException"),
    "AUTHORIZER_CONFIGURATION_ERROR": (500, "", "AuthorizerConfigurationException"),
    "REQUEST_TOO_LARGE": (413, "Request Too Long", "RequestTooLargeException"),
    "BAD_GATEWAY": (502, "Internal server error", "InternalServerErrorException"),
}

_VTL_VARIABLE = re.compile(r"\$(?:\{context\.([\w.]+)\}|context\.([\w.]*\w))")


def gateway_response(
    api: ApiSpec | None,
    kind: str,
    info: RequestInfo | None,
    message: str | None = None,
    *,
    authorizer: Mapping[str, str] | None = None,
) -> Reply:
    """A gateway response: ``api``'s customisation of ``kind`` (or of
    DEFAULT_4XX/DEFAULT_5XX), else API Gateway's default. ``authorizer``: the context of
    the authorizer's Deny, for ``context.authorizer.<key>`` header mappings (a key the
    context lacks leaves its header out)."""
    status, default_message, error_type = _DEFAULT_RESPONSES[kind]
    text = message if message is not None else default_message
    configured = api.gateway_responses if api is not None else {}
    default_kind = "DEFAULT_5XX" if status >= 500 else "DEFAULT_4XX"
    custom = configured.get(kind) or configured.get(default_kind) or GatewayResponse()
    variables = {
        "error.message": text or "",
        "error.messageString": json.dumps(text or None),
        "error.responseType": kind,
        "requestId": info.request_id if info else "",
    }
    template = custom.templates.get("application/json")
    if template is not None:
        body = _VTL_VARIABLE.sub(
            lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), template
        )
    else:
        body = json.dumps({"message": text or None}, separators=(",", ":"))
    headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", error_type)]
    if info is not None:
        headers.append(("x-amzn-RequestId", info.request_id))
    headers += [(name, _local(value, api, info)) for name, value in custom.headers.items()]
    for name, key in custom.context_headers.items():
        if authorizer and key in authorizer:
            headers.append((name, authorizer[key]))
    return Reply(custom.status or status, headers, body.encode("utf-8"))


def _local(value: str, api: ApiSpec | None, info: RequestInfo | None) -> str:
    """A static header naming the API's deployed URL (e.g. RFC 9728 ``resource_metadata``
    in the UNAUTHORIZED challenge) names the URL the local gateway serves it at."""
    if api is None or info is None or not api.deployed_url:
        return value
    return value.replace(api.deployed_url, f"http://{info.domain_name}")


def proxy_reply(output: Any, info: RequestInfo) -> Reply:
    """A Lambda proxy response as API Gateway turns it into HTTP (ValueError: malformed,
    which API Gateway answers with 502)."""
    if not isinstance(output, Mapping):
        raise ValueError("the function did not return an object")
    status = output.get("statusCode")
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise ValueError("statusCode must be an HTTP status code")
    headers = output.get("headers") or {}
    multi = output.get("multiValueHeaders") or {}
    if not isinstance(headers, Mapping) or not isinstance(multi, Mapping):
        raise ValueError("headers and multiValueHeaders must be objects")
    pairs: list[tuple[str, str]] = []
    for name, values in multi.items():
        if not isinstance(values, list):
            raise ValueError("multiValueHeaders values must be lists")
        pairs += [(str(name), _scalar(v)) for v in values]
    multi_names = {str(name).lower() for name in multi}
    pairs += [(str(k), _scalar(v)) for k, v in headers.items() if str(k).lower() not in multi_names]
    body = output.get("body")
    if body is None:
        payload = b""
    elif not isinstance(body, str):
        raise ValueError("body must be a string")
    elif output.get("isBase64Encoded") is True:
        try:
            payload = base64.b64decode(body, validate=True)
        except ValueError as exc:
            raise ValueError("isBase64Encoded but the body is not base64") from exc
    else:
        payload = body.encode("utf-8")
    names = {name.lower() for name, _ in pairs}
    if "content-type" not in names:
        pairs.append(("Content-Type", "application/json"))
    pairs.append(("x-amzn-RequestId", info.request_id))
    return Reply(status, pairs, payload)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ValueError("header values must be strings, numbers or booleans")
