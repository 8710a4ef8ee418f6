"""Parsing API Gateway REST (proxy) events into domain requests, strictly.

Everything here runs on untrusted input: sizes are bounded before parsing, duplicated
parameters are rejected (RFC 6749 §3.2), and every failure is an OAuth error.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from tokenbroker.domain.errors import (
    InvalidClient,
    InvalidDpopProof,
    InvalidRequest,
    InvalidTarget,
)
from tokenbroker.domain.pairs import unique_mapping
from tokenbroker.services.issuance import TokenRequest
from tokenbroker.web.events import raw_header_values, raw_request_url

_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
MAX_FORM_BYTES = 8192
MAX_FORM_FIELDS = 32
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class ParsedTokenRequest:
    request: TokenRequest
    basic_auth: bool  # whether the client tried HTTP Basic (for WWW-Authenticate)
    issuer: str  # derived from the URL the client called


def header_values(event: APIGatewayProxyEvent, name: str) -> list[str]:
    return raw_header_values(event.raw_event, name)


def single_header(event: APIGatewayProxyEvent, name: str) -> str | None:
    values = header_values(event, name)
    if len(values) > 1:
        raise InvalidRequest(f"more than one {name} header")
    return values[0] if values else None


def request_url(event: APIGatewayProxyEvent) -> tuple[str, str]:
    return raw_request_url(event.raw_event)


def _form(event: APIGatewayProxyEvent) -> dict[str, str]:
    return unique_mapping(
        _form_pairs(event), lambda key: InvalidRequest(f"parameter {key!r} is repeated")
    )


def _token_form(event: APIGatewayProxyEvent) -> dict[str, str]:
    """The token request's form. RFC 8707 §2 lets a client name several resources; a
    token here has exactly one audience (the edge of a resource accepts tokens for it
    alone), so more than one is ``invalid_target``, with a description saying what to
    do: one token per resource."""
    pairs = _form_pairs(event)
    if sum(1 for key, _ in pairs if key == "resource") > 1:
        raise InvalidTarget(
            "one resource per token request: request a token for each resource",
            reason="multiple_resources",
        )
    return unique_mapping(pairs, lambda key: InvalidRequest(f"parameter {key!r} is repeated"))


def _form_pairs(event: APIGatewayProxyEvent) -> list[tuple[str, str]]:
    content_type = (single_header(event, "Content-Type") or "").split(";")[0].strip().lower()
    if content_type != FORM_MEDIA_TYPE:
        raise InvalidRequest(f"the token request must be {FORM_MEDIA_TYPE}")
    raw_body = event.raw_event.get("body") or ""
    if not isinstance(raw_body, str) or len(raw_body) > MAX_FORM_BYTES * 4 // 3 + 4:
        raise InvalidRequest("the request body is too large")
    try:
        body = (
            base64.b64decode(raw_body, validate=True)
            if event.is_base64_encoded
            else raw_body.encode("utf-8")
        )
        if len(body) > MAX_FORM_BYTES:
            raise InvalidRequest("the request body is too large")
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=bool(body),
            max_num_fields=MAX_FORM_FIELDS,
            errors="strict",
        )
    except InvalidRequest:
        raise
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise InvalidRequest("the request body is not a valid form") from exc
    if _BAD_ESCAPE.search(body):
        raise InvalidRequest("the request body has a malformed percent-encoding")
    return pairs


def _basic_credentials(authorization: str) -> tuple[str, str]:
    """RFC 6749 §2.3.1: Basic with form-urlencoded client id and secret."""
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidClient() from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise InvalidClient()
    return unquote_plus(client_id), unquote_plus(secret)


def uses_basic_auth(event: APIGatewayProxyEvent) -> bool:
    return any(v[:6].lower() == "basic " for v in header_values(event, "Authorization"))


def parse_token_request(event: APIGatewayProxyEvent) -> ParsedTokenRequest:
    url, issuer = request_url(event)
    authorization = single_header(event, "Authorization")
    basic = authorization is not None and authorization[:6].lower() == "basic "
    form = _token_form(event)
    if basic:
        if "client_secret" in form:
            raise InvalidRequest("use one client authentication method, not two")
        client_id, secret = _basic_credentials(authorization or "")
        if form.get("client_id", client_id) != client_id:
            raise InvalidRequest("client_id does not match the authenticated client")
        credentials: tuple[str | None, str | None] = (client_id, secret)
    elif authorization is not None:
        raise InvalidClient()
    else:
        credentials = (form.get("client_id"), form.get("client_secret"))
    proofs = header_values(event, "DPoP")
    if len(proofs) > 1:
        raise InvalidDpopProof("exactly one DPoP header is allowed")
    request = TokenRequest(
        grant_type=form.get("grant_type"),
        client_id=credentials[0],
        client_secret=credentials[1],
        scope=form.get("scope"),
        resource=form.get("resource"),
        dpop_proof=proofs[0] if proofs else None,
        method=str(event.raw_event.get("httpMethod") or ""),
        url=url,
        source_ip=source_ip(event),
        user_agent=user_agent(event),
        request_id=request_id(event),
        subject_token=form.get("subject_token"),
        subject_token_type=form.get("subject_token_type"),
        label=form.get("label"),
        refresh_token=form.get("refresh_token"),
        # RFC 7523 §2.2 (services/client_auth.py refuses it together with a secret)
        client_assertion_type=form.get("client_assertion_type"),
        client_assertion=form.get("client_assertion"),
    )
    return ParsedTokenRequest(request, basic, issuer)


def _request_context(event: APIGatewayProxyEvent) -> dict[str, Any]:
    context = event.raw_event.get("requestContext")
    return context if isinstance(context, dict) else {}


def _identity(event: APIGatewayProxyEvent) -> dict[str, Any]:
    identity = _request_context(event).get("identity")
    return identity if isinstance(identity, dict) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def source_ip(event: APIGatewayProxyEvent) -> str:
    """The client's address as API Gateway saw it (requestContext.identity.sourceIp)."""
    return _text(_identity(event).get("sourceIp"))


def user_agent(event: APIGatewayProxyEvent) -> str:
    """requestContext.identity.userAgent (API Gateway copies the User-Agent header)."""
    return _text(_identity(event).get("userAgent"))


def request_id(event: APIGatewayProxyEvent) -> str:
    """API Gateway's id of this request (requestContext.requestId)."""
    return _text(_request_context(event).get("requestId"))
