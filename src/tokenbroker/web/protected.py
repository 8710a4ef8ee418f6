"""The sample protected functions: they trust only the authorizer context that API
Gateway passes in ``requestContext.authorizer`` (never client headers)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from tokenbroker.domain.errors import OAuthError
from tokenbroker.web.http import json_response, oauth_error_response
from tokenbroker.web.quota_responses import quota_refusal
from tokenbroker.web.usage_report import report_usage

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


def _authorizer(event: APIGatewayProxyEvent) -> object:
    ctx = event.raw_event.get("requestContext")
    return ctx.get("authorizer") if isinstance(ctx, Mapping) else None


def whoami(event: APIGatewayProxyEvent) -> dict[str, Any]:
    refusal = quota_refusal(_authorizer(event))  # a spent quota: 429 before any work
    if refusal is not None:
        return refusal
    grant = grant_context(event)
    if grant is None:
        return _forbidden()
    return _with_nonce(event, json_response(200, {**grant, "scope": grant["scope"].split()}))


def invoke_model(event: APIGatewayProxyEvent) -> dict[str, Any]:
    refusal = quota_refusal(_authorizer(event))  # a spent quota: 429 before any work
    if refusal is not None:
        return refusal
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
    output = f"[{model}] stub answer to a {len(prompt)}-character prompt"
    # a stub's "LLM tokens": ~4 characters each, in and out
    units = (len(prompt) + 3) // 4 + (len(output) + 3) // 4
    try:
        report_usage(event, units=units, model=model)
    except OAuthError as error:
        # unreported units would run past the units/day quota: withhold the answer
        return oauth_error_response(error)
    return _with_nonce(
        event,
        json_response(
            200,
            {
                "model": model,
                "principal": grant["principal"],
                "output": output,
                "usage_id": grant["usage_id"],
                "units": units,
            },
        ),
    )
