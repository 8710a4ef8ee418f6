"""The sample protected functions: they trust only the authorizer context that API
Gateway passes in ``requestContext.authorizer`` (never client headers)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from tokenbroker.web.http import json_response

_CONTEXT_KEYS = ("principal", "client_id", "jkt", "scope", "token_jti", "usage_id")
MAX_PROMPT = 16_384


def grant_context(event: APIGatewayProxyEvent) -> dict[str, str] | None:
    ctx = event.raw_event.get("requestContext")
    authorizer = ctx.get("authorizer") if isinstance(ctx, Mapping) else None
    if not isinstance(authorizer, Mapping) or not authorizer.get("principal"):
        return None
    return {k: str(authorizer.get(k, "")) for k in _CONTEXT_KEYS}


def _with_nonce(event: APIGatewayProxyEvent, response: dict[str, Any]) -> dict[str, Any]:
    """RFC 9449 §9: pass on the next DPoP nonce the authorizer minted (if nonces are on),
    so the client needs no challenge round trip on its next request."""
    ctx = event.raw_event.get("requestContext")
    authorizer = ctx.get("authorizer") if isinstance(ctx, Mapping) else None
    nonce = authorizer.get("dpop_nonce") if isinstance(authorizer, Mapping) else None
    if isinstance(nonce, str) and nonce:
        response["headers"]["DPoP-Nonce"] = nonce
    return response


def _forbidden() -> dict[str, Any]:
    # reached only if the function was wired without the authorizer: fail closed
    return json_response(403, {"message": "Forbidden"})


def whoami(event: APIGatewayProxyEvent) -> dict[str, Any]:
    grant = grant_context(event)
    if grant is None:
        return _forbidden()
    return _with_nonce(event, json_response(200, {**grant, "scope": grant["scope"].split()}))


def invoke_model(event: APIGatewayProxyEvent) -> dict[str, Any]:
    grant = grant_context(event)
    if grant is None:
        return _forbidden()
    model = (event.path_parameters or {}).get("model", "")
    try:
        body = json.loads(event.decoded_body or "{}")
    except ValueError:
        return json_response(400, {"message": "the body must be JSON"})
    prompt = body.get("prompt", "") if isinstance(body, dict) else ""
    if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT:
        return json_response(400, {"message": f"prompt must be a string of at most {MAX_PROMPT}"})
    return _with_nonce(
        event,
        json_response(
            200,
            {
                "model": model,
                "principal": grant["principal"],
                "output": f"[{model}] stub answer to a {len(prompt)}-character prompt",
                "usage_id": grant["usage_id"],
            },
        ),
    )
