"""An API Gateway REST API (Lambda proxy integration) emulation, served by werkzeug.

Routes, authorizers, stage, binary media types and gateway responses come from
template.yaml (``model``). Each request is matched (``router``), becomes a genuine REST
proxy event, payload v1 (``events``); Lambda authorizers get REQUEST/TOKEN events and
their policy is evaluated against the method ARN as API Gateway does (``authorizer``);
the answer is the function's proxy response or a gateway response (``responses``);
``app`` ties them into one WSGI application. The functions run in this process
(``tokenbroker.local.lambda_host``).

Differences from API Gateway: there is no stage prefix in the URL
(``requestContext.path`` is the request path as sent, ``domainName`` is ``host:port``).
"""

from tokenbroker.local.gateway.app import RAW_HEADERS_KEY, LocalApi, RequestHandler
from tokenbroker.local.gateway.authorizer import AuthorizerCache, evaluate_policy
from tokenbroker.local.gateway.model import (
    ApiSpec,
    AuthorizerSpec,
    GatewayResponse,
    RouteSpec,
    routes_from_template,
)
from tokenbroker.local.gateway.router import Router, werkzeug_rule

__all__ = [
    "RAW_HEADERS_KEY",
    "ApiSpec",
    "AuthorizerCache",
    "AuthorizerSpec",
    "GatewayResponse",
    "LocalApi",
    "RequestHandler",
    "RouteSpec",
    "Router",
    "evaluate_policy",
    "routes_from_template",
    "werkzeug_rule",
]
