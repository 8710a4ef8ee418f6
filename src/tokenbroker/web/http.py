"""The one module that knows HTTP statuses and headers for broker errors."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tokenbroker.domain.errors import BrokerError

_STATUS: dict[str, int] = {
    "invalid_client": 401,
    "invalid_token": 401,
    "insufficient_scope": 403,
    "temporarily_unavailable": 503,
    "server_error": 500,
}
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
JSON = {"Content-Type": "application/json"}
BASIC_CHALLENGE = 'Basic realm="tokenbroker", charset="UTF-8"'


def status_for(error: BrokerError) -> int:
    return _STATUS.get(error.error, 400)


def json_response(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """An API Gateway (REST, proxy integration) response."""
    return {
        "statusCode": status,
        "headers": {**JSON, **NO_STORE, **(headers or {})},
        "body": json.dumps(body, separators=(",", ":")),
        "isBase64Encoded": False,
    }


def oauth_error_response(error: BrokerError, *, basic_auth: bool = False) -> dict[str, Any]:
    """RFC 6749 §5.2 error JSON. Only OAuth errors reach here; anything else is a 500
    with a generic body (the cause is logged, never shown)."""
    headers: dict[str, str] = {}
    if error.error == "invalid_client" and basic_auth:
        headers["WWW-Authenticate"] = BASIC_CHALLENGE  # RFC 6749 §5.2
    body = {"error": error.error}
    if error.description:
        body["error_description"] = error.description
    return json_response(status_for(error), body, headers)
