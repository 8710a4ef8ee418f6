"""An API Gateway REST API (Lambda proxy integration) emulation, served by werkzeug.

Routes, authorizers, stage, binary media types and gateway responses come from
template.yaml. Each request becomes a genuine REST proxy event (payload v1), Lambda
authorizers get REQUEST/TOKEN events and their policy is evaluated against the method
ARN as API Gateway does, and the functions' handlers run in this process.

Faithful on purpose, including where API Gateway is surprising: unknown routes and
methods are 403 ``Missing Authentication Token``; missing identity sources are a 401
without calling the authorizer; authorizer ``context`` values reach the function as
strings; an authorizer result is cached per identity-source values for
``ReauthorizeEvery`` seconds (SAM's default is 300), so the danger of caching a
replay-checking authorizer is visible locally. Differences: there is no stage prefix in
the URL (``requestContext.path`` is the request path, ``domainName`` is ``host:port``),
one process runs every function, and handler timeouts are reported, not enforced.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import importlib.util
import json
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.routing import Map, Rule
from werkzeug.serving import WSGIRequestHandler
from werkzeug.wrappers import Request, Response

from tokenbroker.local.template import IMPLICIT_API, SAM_API, Template, TemplateError

DEFAULT_ACCOUNT_ID = "123456789012"
DEFAULT_REGION = "us-east-1"
#: API Gateway's payload limit
MAX_REQUEST_BYTES = 10 * 1024 * 1024
#: the environ key where ``RequestHandler`` keeps the headers as received
RAW_HEADERS_KEY = "tokenbroker.raw_headers"
#: SAM's default for ``Identity.ReauthorizeEvery``; API Gateway's maximum
SAM_DEFAULT_AUTHORIZER_TTL = 300
MAX_AUTHORIZER_TTL = 3600

Event = dict[str, Any]
Invoke = Callable[[str, Event], Any]


class LocalConfigError(TemplateError):
    """The template asks for something the local API cannot emulate."""


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class AuthorizerSpec:
    """A Lambda authorizer from the Api's ``Auth.Authorizers``."""

    name: str
    function: str  # logical id of the authorizer function
    payload_type: str = "REQUEST"  # or TOKEN
    headers: tuple[str, ...] = ()
    query_strings: tuple[str, ...] = ()
    stage_variables: tuple[str, ...] = ()
    ttl: int = SAM_DEFAULT_AUTHORIZER_TTL  # Identity.ReauthorizeEvery
    validation_expression: str | None = None  # TOKEN only


@dataclass(frozen=True)
class GatewayResponse:
    """One entry of the Api's ``GatewayResponses`` (literal values already unquoted)."""

    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    templates: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ApiSpec:
    logical_id: str
    api_id: str
    stage: str
    stage_variables: Mapping[str, str] | None = None
    binary_media_types: tuple[str, ...] = ()
    gateway_responses: Mapping[str, GatewayResponse] = field(default_factory=dict)


@dataclass(frozen=True)
class RouteSpec:
    method: str  # upper case, or ANY
    path: str  # as declared: /v1/models/{model}/invoke, /{proxy+}
    function: str  # logical id
    api: ApiSpec
    authorizer: AuthorizerSpec | None = None


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

    def header(self, name: str) -> str | None:
        """The last value of a header (what API Gateway puts in ``headers``)."""
        wanted = name.lower()
        values = [v for k, v in self.headers if k.lower() == wanted]
        return values[-1] if values else None


@dataclass(frozen=True)
class Reply:
    """An HTTP response before it becomes a werkzeug Response."""

    status: int
    headers: Sequence[tuple[str, str]]
    body: bytes


# ----------------------------------------------------------------- from the template


def api_id_for(stack_name: str, api_logical_id: str) -> str:
    """A stable, API Gateway shaped (10 lower-case alphanumerics) id."""
    digest = hashlib.sha256(f"{stack_name}/{api_logical_id}".encode()).digest()
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(alphabet[b % len(alphabet)] for b in digest[:10])


def routes_from_template(
    template: Template, resolve: Callable[[Any], Any], *, stack_name: str
) -> list[RouteSpec]:
    """The template's ``Type: Api`` events, with their API and authorizer resolved.

    ``resolve`` resolves intrinsics (``Deployment.resolve``). An authorizer the local API
    cannot emulate (Cognito, IAM, a function outside the template) is a LocalConfigError
    if, and only if, a route uses it.
    """
    apis: dict[str, tuple[ApiSpec, dict[str, AuthorizerSpec | str]]] = {}
    routes: list[RouteSpec] = []
    for route in template.routes():
        if route.api not in apis:
            apis[route.api] = _api_from_template(template, route.api, resolve, stack_name)
        api, authorizers = apis[route.api]
        authorizer: AuthorizerSpec | None = None
        if route.auth is not None:
            found = authorizers.get(route.auth)
            where = f"{route.function} {route.method} {route.path}"
            if found is None:
                raise LocalConfigError(
                    f"{where}: authorizer {route.auth!r} is not declared in {route.api}.Auth"
                )
            if isinstance(found, str):
                raise LocalConfigError(f"{where}: {found}")
            authorizer = found
        routes.append(RouteSpec(route.method, route.path, route.function, api, authorizer))
    return routes


def _api_properties(template: Template, api: str) -> dict[str, Any]:
    document = template.document()
    global_props = (document.get("Globals") or {}).get("Api") or {}
    if api == IMPLICIT_API:
        return dict(global_props)
    if api not in template.resources(SAM_API):
        raise LocalConfigError(f"routes name RestApiId {api!r}, which is not an {SAM_API}")
    merged = _merge(global_props, template.resources(SAM_API)[api])
    return dict(merged) if isinstance(merged, dict) else {}


def _merge(base: Any, local: Any) -> Any:
    """SAM's Globals merge for plain mappings (local keys win)."""
    if isinstance(base, dict) and isinstance(local, dict) and not _is_intrinsic(local):
        merged = dict(base)
        for key, value in local.items():
            merged[key] = _merge(merged[key], value) if key in merged else value
        return merged
    return local


def _is_intrinsic(value: Mapping[str, Any]) -> bool:
    if len(value) != 1:
        return False
    (key,) = value
    return key in ("Ref", "Condition") or str(key).startswith("Fn::")


def _api_from_template(
    template: Template, api: str, resolve: Callable[[Any], Any], stack_name: str
) -> tuple[ApiSpec, dict[str, AuthorizerSpec | str]]:
    props = _api_properties(template, api)
    stage = "Prod" if api == IMPLICIT_API else str(resolve(props.get("StageName", "Prod")))
    variables = resolve(props.get("Variables")) if props.get("Variables") else None
    binary = tuple(
        str(resolve(t)).replace("~1", "/").lower() for t in props.get("BinaryMediaTypes") or ()
    )
    responses = {
        str(kind): _gateway_response(resolve(spec) or {})
        for kind, spec in (props.get("GatewayResponses") or {}).items()
    }
    auth = props.get("Auth") or {}
    authorizers = {
        str(name): _authorizer(str(name), spec, resolve, set(template.functions()))
        for name, spec in (auth.get("Authorizers") or {}).items()
    }
    spec = ApiSpec(
        logical_id=api,
        api_id=api_id_for(stack_name, api),
        stage=stage,
        stage_variables={str(k): str(v) for k, v in variables.items()} if variables else None,
        binary_media_types=binary,
        gateway_responses=responses,
    )
    return spec, authorizers


def _literal(value: Any) -> str | None:
    """A ResponseParameters value: ``'text'`` is the literal text; mapping expressions
    (method.request.header.X) are not literals and are skipped."""
    text = str(value)
    if len(text) >= 2 and text[0] == "'" and text[-1] == "'":
        return text[1:-1]
    return None


def _gateway_response(spec: Mapping[str, Any]) -> GatewayResponse:
    params = spec.get("ResponseParameters") or {}
    headers = {
        str(name): literal
        for name, value in (params.get("Headers") or {}).items()
        if (literal := _literal(value)) is not None
    }
    status = spec.get("StatusCode")
    return GatewayResponse(
        status=int(status) if status is not None else None,
        headers=headers,
        templates={
            str(k).lower(): str(v) for k, v in (spec.get("ResponseTemplates") or {}).items()
        },
    )


def _authorizer(
    name: str, spec: Mapping[str, Any], resolve: Callable[[Any], Any], functions: set[str]
) -> AuthorizerSpec | str:
    """The authorizer, or why it cannot be emulated."""
    if "UserPoolArn" in spec:
        return f"Cognito authorizer {name!r} cannot be emulated locally"
    arn = spec.get("FunctionArn")
    target = arn.get("Fn::GetAtt") if isinstance(arn, dict) else None
    if not (isinstance(target, list) and len(target) == 2 and target[1] == "Arn"):
        return f"authorizer {name!r}: FunctionArn must be !GetAtt <Function>.Arn to run locally"
    if target[0] not in functions:
        return f"authorizer {name!r}: {target[0]} is not an AWS::Serverless::Function"
    payload = str(resolve(spec.get("FunctionPayloadType", "TOKEN"))).upper()
    identity = resolve(spec.get("Identity") or {})
    raw_ttl = identity.get("ReauthorizeEvery", SAM_DEFAULT_AUTHORIZER_TTL)
    ttl = min(int(raw_ttl), MAX_AUTHORIZER_TTL)
    if payload == "TOKEN":
        return AuthorizerSpec(
            name=name,
            function=target[0],
            payload_type="TOKEN",
            headers=(str(identity.get("Header", "Authorization")),),
            ttl=ttl,
            validation_expression=identity.get("ValidationExpression"),
        )
    if payload != "REQUEST":
        return f"authorizer {name!r}: FunctionPayloadType {payload!r} is not TOKEN or REQUEST"
    return AuthorizerSpec(
        name=name,
        function=target[0],
        payload_type="REQUEST",
        headers=tuple(str(h) for h in identity.get("Headers") or ()),
        query_strings=tuple(str(q) for q in identity.get("QueryStrings") or ()),
        stage_variables=tuple(str(s) for s in identity.get("StageVariables") or ()),
        ttl=ttl,
    )


# -------------------------------------------------------------------------- routing


_PARAM = re.compile(r"\{([^{}]+?)(\+?)\}")


def werkzeug_rule(path: str) -> tuple[str, dict[str, str]]:
    """A werkzeug rule string for an API Gateway path, and rule argument -> parameter
    name (API Gateway names may not be Python identifiers)."""
    if not path.startswith("/"):
        raise LocalConfigError(f"route path {path!r} must start with '/'")
    names: dict[str, str] = {}
    segments = []
    parts = path.strip("/").split("/") if path != "/" else []
    for index, segment in enumerate(parts):
        match = _PARAM.fullmatch(segment)
        if match is None:
            if "{" in segment or "}" in segment or "<" in segment or ">" in segment:
                raise LocalConfigError(f"route path {path!r}: bad segment {segment!r}")
            segments.append(segment)
            continue
        argument = f"p{len(names)}"
        names[argument] = match.group(1)
        if match.group(2):
            if index != len(parts) - 1:
                raise LocalConfigError(f"route path {path!r}: {{proxy+}} must be last")
            segments.append(f"<path:{argument}>")
        else:
            segments.append(f"<{argument}>")
    return "/" + "/".join(segments), names


class Router:
    """Matches method + path against the routes, with werkzeug's routing."""

    def __init__(self, routes: Sequence[RouteSpec]) -> None:
        seen: dict[tuple[str, str], RouteSpec] = {}
        rules = []
        self._routes = list(routes)
        self._names: list[dict[str, str]] = []
        for index, route in enumerate(self._routes):
            key = (route.method, route.path)
            if key in seen:
                raise LocalConfigError(
                    f"{route.method} {route.path} is declared by {seen[key].function} and "
                    f"{route.function}"
                )
            seen[key] = route
            rule, names = werkzeug_rule(route.path)
            methods = None if route.method == "ANY" else [route.method]
            rules.append(Rule(rule, endpoint=index, methods=methods))
            self._names.append(names)
        self._map = Map(rules, strict_slashes=False, merge_slashes=False, redirect_defaults=False)

    def match(self, method: str, path: str) -> tuple[RouteSpec, dict[str, str]] | None:
        """The route and its path parameters, or None (API Gateway's 403)."""
        adapter = self._map.bind("localhost")
        try:
            endpoint, arguments = adapter.match(path, method=method)
        except HTTPException:  # NotFound, MethodNotAllowed, RequestRedirect
            return None
        route = self._routes[endpoint]
        if route.method not in ("ANY", method):  # werkzeug adds HEAD to GET rules
            return None
        names = self._names[endpoint]
        return route, {names[arg]: str(value) for arg, value in arguments.items()}


# ------------------------------------------------------------------------- events


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
        "path": request.path,
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


# ---------------------------------------------------------------------- authorizers


@dataclass(frozen=True)
class Decision:
    """What the authorizer step decided: ``context`` for the function, or a response."""

    context: Mapping[str, Any] | None = None
    error: str | None = None  # gateway response type
    message: str | None = None


_ALLOWED = Decision()


def _glob(pattern: str, value: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


def evaluate_policy(policy: Mapping[str, Any], arn: str) -> str:
    """``Allow``, ``Deny`` (explicit) or ``None`` (no statement matched), as IAM does."""
    statements = policy.get("Statement")
    if isinstance(statements, Mapping):
        statements = [statements]
    if not isinstance(statements, list):
        raise ValueError("policyDocument.Statement must be a list")
    allowed = False
    for statement in statements:
        if not isinstance(statement, Mapping):
            raise ValueError("a policy statement must be an object")
        actions = statement.get("Action", [])
        resources = statement.get("Resource", [])
        actions = [actions] if isinstance(actions, str) else actions
        resources = [resources] if isinstance(resources, str) else resources
        if not any(_glob(a.lower(), "execute-api:invoke") for a in actions if isinstance(a, str)):
            continue
        if not any(_glob(r, arn) for r in resources if isinstance(r, str)):
            continue
        effect = statement.get("Effect")
        if effect == "Deny":
            return "Deny"
        if effect == "Allow":
            allowed = True
    return "Allow" if allowed else "None"


@dataclass(frozen=True)
class _AuthorizerResult:
    principal_id: str
    policy: Mapping[str, Any]
    context: Mapping[str, str]


def _check_authorizer_output(output: Any) -> _AuthorizerResult:
    """API Gateway's validation of an authorizer's answer (ValueError: config error)."""
    if not isinstance(output, Mapping):
        raise ValueError("the authorizer did not return an object")
    principal = output.get("principalId")
    policy = output.get("policyDocument")
    if not isinstance(principal, str) or not principal:
        raise ValueError("principalId is missing")
    if not isinstance(policy, Mapping):
        raise ValueError("policyDocument is missing")
    context: dict[str, str] = {}
    for key, value in (output.get("context") or {}).items():
        if value is None:
            continue
        if isinstance(value, bool):
            context[str(key)] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            context[str(key)] = str(value)
        else:  # API Gateway rejects objects and arrays in the context
            raise ValueError(f"context[{key!r}] must be a string, number or boolean")
    return _AuthorizerResult(principal, policy, context)


class AuthorizerCache:
    """API Gateway's authorizer cache: results per identity-source values, for TTL s."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[tuple[Any, ...], tuple[float, _AuthorizerResult]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> _AuthorizerResult | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] <= self._clock():
                self._entries.pop(key, None)
                return None
            return entry[1]

    def put(self, key: tuple[Any, ...], ttl: int, result: _AuthorizerResult) -> None:
        with self._lock:
            self._entries[key] = (self._clock() + ttl, result)


# --------------------------------------------------------------------------- gateway

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


def log_to_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


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
    ) -> None:
        self.router = Router(routes)
        #: whose GatewayResponses answer requests that match no route
        self.default_api = routes[0].api if routes else None
        self.invoke = invoke
        self.domain_name = domain_name
        self.account_id = account_id
        self.cache = cache or AuthorizerCache()
        self._log = log

    # ---- WSGI -------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        started = time.perf_counter()
        request = Request(environ)
        request.max_content_length = MAX_REQUEST_BYTES
        try:
            incoming = incoming_request(request)
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
        decision = _ALLOWED
        if route.authorizer is not None:
            decision = self.authorize(route, request, path_parameters, info)
            if decision.error is not None:
                return self._error(route, decision.error, info, decision.message)
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

    def authorize(
        self,
        route: RouteSpec,
        request: IncomingRequest,
        path_parameters: Mapping[str, str],
        info: RequestInfo,
    ) -> Decision:
        spec = route.authorizer
        assert spec is not None
        sources = self._identity_sources(spec, route, request)
        if sources is None:
            return Decision(error="UNAUTHORIZED")
        key = (route.api.api_id, spec.name, *sources)
        result = self.cache.get(key) if spec.ttl > 0 else None
        started = time.perf_counter()
        if result is None:
            event = authorizer_event(route, request, path_parameters, info)
            try:
                output = self.invoke(spec.function, event)
            except Exception as exc:  # noqa: BLE001 - any failure is API Gateway's 401/500
                # a Lambda authorizer says 401 with raise Exception("Unauthorized")
                if str(exc) == "Unauthorized":
                    return Decision(error="UNAUTHORIZED")
                traceback.print_exc(file=sys.stderr)
                return Decision(error="AUTHORIZER_CONFIGURATION_ERROR")
            try:
                result = _check_authorizer_output(output)
            except ValueError as exc:
                log_to_stderr(f"authorizer {spec.name}: invalid response: {exc}")
                return Decision(error="AUTHORIZER_CONFIGURATION_ERROR")
            if spec.ttl > 0:
                self.cache.put(key, spec.ttl, result)
        try:
            effect = evaluate_policy(result.policy, method_arn(route, request, info))
        except ValueError as exc:
            log_to_stderr(f"authorizer {spec.name}: {exc}")
            return Decision(error="AUTHORIZER_CONFIGURATION_ERROR")
        if effect != "Allow":
            return Decision(
                error="ACCESS_DENIED",
                message="User is not authorized to access this resource"
                + (" with an explicit deny" if effect == "Deny" else ""),
            )
        latency = int((time.perf_counter() - started) * 1000)
        return Decision(
            context={
                **result.context,
                "principalId": result.principal_id,
                "integrationLatency": latency,
            }
        )

    @staticmethod
    def _identity_sources(
        spec: AuthorizerSpec, route: RouteSpec, request: IncomingRequest
    ) -> tuple[str, ...] | None:
        """The identity-source values, or None if one is missing or empty (401)."""
        values: list[str] = []
        for name in spec.headers:
            values.append(request.header(name) or "")
        query = dict(request.query)
        values += [query.get(name, "") for name in spec.query_strings]
        stage_variables = route.api.stage_variables or {}
        values += [stage_variables.get(name, "") for name in spec.stage_variables]
        if any(not value for value in values):
            return None
        if spec.validation_expression is not None and not re.fullmatch(
            spec.validation_expression, values[0]
        ):
            return None
        return tuple(values)

    def _error(
        self,
        route: RouteSpec | None,
        kind: str,
        info: RequestInfo | None,
        message: str | None = None,
    ) -> Reply:
        """A gateway response: the template's customisation of ``kind`` (or of
        DEFAULT_4XX/DEFAULT_5XX), else API Gateway's default."""
        status, default_message, error_type = _DEFAULT_RESPONSES[kind]
        text = message if message is not None else default_message
        api = route.api if route is not None else self.default_api
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
        headers += list(custom.headers.items())
        return Reply(custom.status or status, headers, body.encode("utf-8"))


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


def incoming_request(request: Request) -> IncomingRequest:
    raw = request.environ.get(RAW_HEADERS_KEY)
    headers = list(raw) if raw is not None else list(request.headers.items())
    return IncomingRequest(
        method=request.method.upper(),
        path=request.path,
        headers=headers,
        query=list(request.args.items(multi=True)),
        body=request.get_data(cache=False),
        source_ip=request.remote_addr or "127.0.0.1",
        protocol=str(request.environ.get("SERVER_PROTOCOL") or "HTTP/1.1"),
    )


# ------------------------------------------------------------------ function runtime


@dataclass
class LambdaContext:
    """The part of the Lambda context object handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int
    invoked_function_arn: str
    aws_request_id: str
    timeout_seconds: float
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "local"
    identity: Any = None
    client_context: Any = None
    tenant_id: Any = None
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds
        self.log_group_name = self.log_group_name or f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


Handler = Callable[[Event, Any], Any]


@dataclass(frozen=True)
class LocalFunction:
    logical_id: str
    name: str
    handler: Handler
    memory_mb: int = 128
    timeout_seconds: float = 3.0


def load_handler(code_uri: Path, handler: str, logical_id: str) -> Handler:
    """Import ``handler`` ("app.handler", "pkg/mod.fn"...) from ``code_uri`` under a
    module name unique to the function (every function's module is called app.py)."""
    module_path, dot, attribute = handler.rpartition(".")
    if not dot or not module_path or not attribute:
        raise LocalConfigError(f"{logical_id}: Handler {handler!r} is not module.function")
    file = code_uri / (module_path.replace(".", "/") + ".py")
    if not file.is_file():
        raise LocalConfigError(f"{logical_id}: handler module {file} does not exist")
    name = "_tokenbroker_local_" + re.sub(r"\W", "_", logical_id)
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise LocalConfigError(f"{logical_id}: cannot load {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # Lambda puts the code directory on sys.path (for the function's own modules);
    # Powertools' Logger binds to sys.stdout when created: give it stderr, like the
    # function's logs, and keep stdout for the stack's export lines.
    sys.path.insert(0, str(code_uri))
    try:
        with contextlib.redirect_stdout(sys.stderr):
            spec.loader.exec_module(module)
    except Exception:
        sys.modules.pop(name, None)
        raise
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(code_uri))
    function = getattr(module, attribute, None)
    if not callable(function):
        raise LocalConfigError(f"{logical_id}: {file} has no function {attribute!r}")
    return function  # type: ignore[no-any-return]


class FunctionHost:
    """Runs the functions in this process, one invocation at a time: the functions
    share os.environ and module state, and moto's conditional writes are not atomic
    across threads (in AWS each concurrent invocation has its own environment)."""

    def __init__(
        self,
        functions: Mapping[str, LocalFunction],
        *,
        region: str = DEFAULT_REGION,
        account_id: str = DEFAULT_ACCOUNT_ID,
    ) -> None:
        self.functions = dict(functions)
        self.region = region
        self.account_id = account_id
        self._lock = threading.Lock()

    def context(self, function: LocalFunction) -> LambdaContext:
        return LambdaContext(
            function_name=function.name,
            memory_limit_in_mb=function.memory_mb,
            invoked_function_arn=(
                f"arn:aws:lambda:{self.region}:{self.account_id}:function:{function.name}"
            ),
            aws_request_id=str(uuid.uuid4()),
            timeout_seconds=function.timeout_seconds,
        )

    def invoke(self, logical_id: str, event: Event) -> Any:
        function = self.functions[logical_id]
        # (no stdout redirection here: it is process-wide, and invocations run on the
        # server's and the event sources' threads; metrics are disabled locally and
        # Powertools' Logger was bound to stderr when the module was loaded)
        with self._lock:
            context = self.context(function)
            started = time.monotonic()
            try:
                return function.handler(event, context)
            finally:
                took = time.monotonic() - started
                if took > function.timeout_seconds:
                    log_to_stderr(
                        f"{logical_id}: took {took:.1f}s, over its {function.timeout_seconds:g}s"
                        " timeout (Lambda would have stopped it)"
                    )


def functions_from_template(
    template: Template, resolve: Callable[[Any], Any], *, stack_name: str
) -> dict[str, LocalFunction]:
    """Load every function's handler, with its name, memory and timeout."""
    document = template.document()
    global_props = (document.get("Globals") or {}).get("Function") or {}
    loaded: dict[str, LocalFunction] = {}
    for logical_id, spec in template.functions().items():
        props = {**global_props, **(document["Resources"][logical_id].get("Properties") or {})}
        name = resolve(props.get("FunctionName")) or f"{stack_name}-{logical_id}"
        loaded[logical_id] = LocalFunction(
            logical_id=logical_id,
            name=str(name),
            handler=load_handler(spec.code_uri, spec.handler, logical_id),
            memory_mb=int(resolve(props.get("MemorySize", 128))),
            timeout_seconds=float(resolve(props.get("Timeout", 3))),
        )
    return loaded
