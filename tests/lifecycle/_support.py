"""Calls of the revocation, introspection and authorizer Lambdas (their real modules)
on genuine API Gateway events, for the lifecycle tests."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from edge import _support as edge
from endpoint._support import (
    FORM,
    App,
    Broker,
    LambdaContext,
    basic_authorization,
    json_body,
    load_function,
    rest_event,
)

ROOT = Path(__file__).resolve().parents[2]
REVOKE_PATH = "/oauth2/revoke"
INTROSPECT_PATH = "/oauth2/introspect"
_modules: dict[str, Any] = {}


def _module(name: str) -> Any:
    if name not in _modules:
        _modules[name] = load_function(ROOT / "functions" / name / "app.py")
    return _modules[name]


def lifecycle_event(
    path: str,
    form: Mapping[str, str] | str,
    *,
    basic: tuple[str, str] | None = None,
    content_type: str = FORM,
) -> dict[str, Any]:
    headers = {"Content-Type": content_type}
    if basic is not None:
        headers["Authorization"] = basic_authorization(*basic)
    body = form if isinstance(form, str) else urlencode(list(form.items()))
    return rest_event("POST", path, headers=headers, body=body)


class Lifecycle:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.authorizer = edge.load_authorizer()

    def access_token(self, app: App, **params: str) -> str:
        response = self.broker.issue(app, **params)
        assert response["statusCode"] == 200, response
        return str(json_body(response)["access_token"])

    def call(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        response = _module(function).handler(event, LambdaContext())
        assert isinstance(response, dict)
        return response

    def revoke(self, app: App, token: str, *, basic: bool = False, **extra: str) -> dict[str, Any]:
        return self.call("revocation", self._event(REVOKE_PATH, app, token, basic, extra))

    def introspect(
        self, app: App, token: str, *, basic: bool = False, **extra: str
    ) -> dict[str, Any]:
        return self.call("introspection", self._event(INTROSPECT_PATH, app, token, basic, extra))

    def _event(
        self, path: str, app: App, token: str, basic: bool, extra: Mapping[str, str]
    ) -> dict[str, Any]:
        form = {"token": token, **extra}
        if basic:
            return lifecycle_event(path, form, basic=(app.client_id, app.secret))
        credentials = {"client_id": app.client_id, "client_secret": app.secret}
        return lifecycle_event(path, {**form, **credentials})

    def at_edge(self, app: App, token: str) -> str:
        """GET /v1/whoami through the real REST authorizer: "allow", "401" or "403"."""
        proof = edge.proof(app.key, token, iat=self.broker.now)
        event = edge.rest_event(edge.dpop_headers(token, proof))
        return edge.call_rest_authorizer(self.authorizer, event, edge.LambdaContext())[0]

    def denials(self) -> list[str]:
        return [
            r["reason"] for r in self.broker.ledger_records("request") if r["decision"] == "deny"
        ]
