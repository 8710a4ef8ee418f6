"""How a spent quota becomes ``429 Too Many Requests`` with ``Retry-After`` at each edge.

A REST API Lambda authorizer can only Allow, Deny (``ACCESS_DENIED``, 403) or fail with
``Unauthorized`` (401). A gateway response (``AWS::ApiGateway::GatewayResponse``) sets one
static status code per response type, and ``ACCESS_DENIED`` also answers insufficient
scope, which RFC 6750 §3.1 makes a 403: a quota Deny cannot be told apart from it by
status. So for API Gateway (REST and HTTP APIs) the authorizer **allows** the call with a
context that carries no grant: ``quota_exceeded`` (the reason) and ``retry_after``, and
NO ``principal`` or ``usage_id``. The protected function turns that into the 429 before
doing any work (:func:`quota_refusal`; the sample functions do). Why this is still safe:
the request is already on the ledger as a denial with its reason; a function written to
the documented pattern (trust only ``requestContext.authorizer.principal``) finds no
principal and refuses (403). What it costs: the protected function is invoked (a few ms
of Lambda) for a refused request, and a function that ignores the context entirely would
serve it unmetered by the broker's request quotas: platform teams must call
``quota_refusal`` (or the SDK) first. CloudFront (Lambda@Edge) answers 429 directly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tokenbroker.domain.quotas import QuotaExceeded
from tokenbroker.web.http import json_response

QUOTA_EXCEEDED = "quota_exceeded"
RETRY_AFTER = "retry_after"


def quota_context(error: QuotaExceeded) -> dict[str, str]:
    return {QUOTA_EXCEEDED: error.reason, RETRY_AFTER: str(error.retry_after)}


def quota_body(error: QuotaExceeded) -> str:
    return json.dumps(
        {"error": QUOTA_EXCEEDED, "error_description": error.description, "reason": error.reason}
    )


def quota_response(method_arn: str, error: QuotaExceeded) -> dict[str, Any]:
    """The REST authorizer's answer to a spent quota (see the module docstring)."""
    return {
        "principalId": QUOTA_EXCEEDED,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": [method_arn]}
            ],
        },
        "context": quota_context(error),
    }


def quota_refusal(authorizer: object) -> dict[str, Any] | None:
    """The 429 a protected function must return, before any work, when the authorizer
    context (``requestContext.authorizer``) says the quota is spent; None otherwise."""
    if isinstance(authorizer, Mapping) and isinstance(authorizer.get("lambda"), Mapping):
        authorizer = authorizer["lambda"]  # an HTTP API (payload 2.0) authorizer's context
    if not isinstance(authorizer, Mapping) or not authorizer.get(QUOTA_EXCEEDED):
        return None
    reason = str(authorizer.get(QUOTA_EXCEEDED))
    retry_after = str(authorizer.get(RETRY_AFTER) or "60")
    if not retry_after.isdigit():
        retry_after = "60"
    body = {"error": QUOTA_EXCEEDED, "error_description": "quota spent", "reason": reason}
    return json_response(429, body, {"Retry-After": retry_after})
