"""The gateway as a WSGI application (served by werkzeug): route, authorize, invoke,
answer. Unknown routes and methods are 403 ``Missing Authentication Token``, bodies over
API Gateway's 10 MB limit are 413, a handler error or a malformed proxy response is 502.
"""

from __future__ import annotations

import ipaddress
import sys
import time
import traceback
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.serving import WSGIRequestHandler
from werkzeug.wrappers import Request, Response

from tokenbroker.local.gateway.authorizer import ALLOWED, AuthorizerCache, Authorizers
from tokenbroker.local.gateway.events import IncomingRequest, RequestInfo, proxy_event
from tokenbroker.local.gateway.model import RouteSpec
from tokenbroker.local.gateway.responses import Reply, gateway_response, proxy_reply
from tokenbroker.local.gateway.router import Router
from tokenbroker.local.lambda_host import DEFAULT_ACCOUNT_ID, Invoke, log_to_stderr

#: API Gateway's payload limit
MAX_REQUEST_BYTES = 10 * 1024 * 1024
#: the environ key where ``RequestHandler`` keeps the headers as received
RAW_HEADERS_KEY = "tokenbroker.raw_headers"


class LocalApi:
    """The WSGI application: routes, authorizes, invokes, answers."""

    def __init__(
        self,
        routes: Sequence[RouteSpec],
        invoke: Invoke,
        *,
        domain_name: str,
        account_id: str = DEFAULT_ACCOUNT_ID,
        log: Callable[[str], None] | None = log_to_stderr,
        cache: AuthorizerCache | None = None,
        trust_forwarded_for: bool = False,
    ) -> None:
        """``trust_forwarded_for``: the API sits behind a trusted proxy, so the client's
        address is the right-most ``X-Forwarded-For`` entry (:func:`forwarded_client`);
        off by default: the header is then ignored, as API Gateway ignores it."""
        self.trust_forwarded_for = trust_forwarded_for
        self.router = Router(routes)
        #: whose GatewayResponses answer requests that match no route
        self.default_api = routes[0].api if routes else None
        self.invoke = invoke
        self.domain_name = domain_name
        self.account_id = account_id
        self.cache = cache or AuthorizerCache()
        self.authorizers = Authorizers(invoke, self.cache)
        self._log = log

    # ---- WSGI -------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        started = time.perf_counter()
        request = Request(environ)
        request.max_content_length = MAX_REQUEST_BYTES
        try:
            incoming = incoming_request(request, trust_forwarded_for=self.trust_forwarded_for)
        except RequestEntityTooLarge:
            reply = self._error(None, "REQUEST_TOO_LARGE", None)
        else:
            reply = self.handle(incoming)
        if self._log is not None:
            took = (time.perf_counter() - started) * 1000
            path = "".join(c if c.isprintable() and c != " " else "?" for c in request.path)
            self._log(f"{request.method} {path} {reply.status} {took:.0f}ms")
        response = Response(reply.body, status=reply.status)
        response.headers.clear()
        for name, value in reply.headers:
            response.headers.add(name, value)
        return response(environ, start_response)

    # ---- the pipeline -----------------------------------------------------------------
    def handle(self, request: IncomingRequest) -> Reply:
        info = RequestInfo.new(self.domain_name, account_id=self.account_id)
        matched = self.router.match(request.method, request.path)
        if matched is None:
            return self._error(None, "MISSING_AUTHENTICATION_TOKEN", info)
        route, path_parameters = matched
        decision = ALLOWED
        if route.authorizer is not None:
            decision = self.authorizers.authorize(route, request, path_parameters, info)
            if decision.error is not None:
                return self._error(
                    route, decision.error, info, decision.message, decision.denied_context
                )
        event = proxy_event(route, request, path_parameters, info, authorizer=decision.context)
        try:
            output = self.invoke(route.function, event)
        except Exception:  # noqa: BLE001 - Lambda turns any handler error into a 502
            traceback.print_exc(file=sys.stderr)
            return self._error(route, "BAD_GATEWAY", info)
        try:
            return proxy_reply(output, info)
        except ValueError as exc:
            log_to_stderr(f"{route.function}: malformed Lambda proxy response: {exc}")
            return self._error(route, "BAD_GATEWAY", info)

    def _error(
        self,
        route: RouteSpec | None,
        kind: str,
        info: RequestInfo | None,
        message: str | None = None,
        authorizer: Mapping[str, str] | None = None,
    ) -> Reply:
        api = route.api if route is not None else self.default_api
        return gateway_response(api, kind, info, message, authorizer=authorizer)


# ---------------------------------------------------------------------- HTTP server


class RequestHandler(WSGIRequestHandler):
    """werkzeug's handler, keeping the headers as received (WSGI folds repeated
    headers into one comma-joined value) and without its access log (LocalApi logs
    its own line)."""

    def make_environ(self) -> Any:
        environ = super().make_environ()
        environ[RAW_HEADERS_KEY] = [(str(k), str(v)) for k, v in self.headers.items()]
        return environ

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


def raw_path(environ: dict[str, Any]) -> str:
    """The request path as the client sent it, still percent-encoded ("" if the server
    did not keep it). werkzeug's server and test client both set ``RAW_URI``; an
    absolute-form request target keeps only its path."""
    uri = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not isinstance(uri, str) or not uri:
        return ""
    target = uri if uri.startswith("/") else urllib.parse.urlsplit(uri).path
    path = target.partition("?")[0].partition("#")[0]
    # WSGI strings carry bytes as latin-1; anything not already encoded is encoded
    return urllib.parse.quote(path.encode("latin-1", "replace"), safe="/%:@!$&'()*+,;=-._~") or "/"


def forwarded_client(headers: Sequence[tuple[str, str]]) -> str | None:
    """The client address a trusted proxy put in ``X-Forwarded-For``: the RIGHT-MOST
    entry of the last such header (the one the proxy appended; anything left of it was
    sent by the client and may be forged). None if absent or not an IP address."""
    values = [v for k, v in headers if k.lower() == "x-forwarded-for"]
    if not values:
        return None
    candidate = values[-1].rsplit(",", 1)[-1].strip()
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def incoming_request(request: Request, *, trust_forwarded_for: bool = False) -> IncomingRequest:
    raw = request.environ.get(RAW_HEADERS_KEY)
    headers = list(raw) if raw is not None else list(request.headers.items())
    peer = request.remote_addr or "127.0.0.1"
    source_ip = (forwarded_client(headers) or peer) if trust_forwarded_for else peer
    return IncomingRequest(
        method=request.method.upper(),
        path=request.path,
        headers=headers,
        query=list(request.args.items(multi=True)),
        body=request.get_data(cache=False),
        source_ip=source_ip,
        protocol=str(request.environ.get("SERVER_PROTOCOL") or "HTTP/1.1"),
        raw_path=raw_path(request.environ),
    )
