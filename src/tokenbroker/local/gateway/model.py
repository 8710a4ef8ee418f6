"""The gateway's model of the template: APIs, routes, Lambda authorizers and gateway
responses, read from the SAM model (``Template.api_properties``: Globals merged, the
implicit API included) and resolved against a deployment."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tokenbroker.local.errors import LocalConfigError, UnresolvedReference
from tokenbroker.local.template import Template

#: SAM's default for ``Identity.ReauthorizeEvery``; API Gateway's maximum
SAM_DEFAULT_AUTHORIZER_TTL = 300
MAX_AUTHORIZER_TTL = 3600


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
    #: header -> authorizer context key (``context.authorizer.<key>`` mappings)
    context_headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ApiSpec:
    logical_id: str
    api_id: str
    stage: str
    stage_variables: Mapping[str, str] | None = None
    binary_media_types: tuple[str, ...] = ()
    gateway_responses: Mapping[str, GatewayResponse] = field(default_factory=dict)
    #: the API's execute-api URL as the template's intrinsics name it (a gateway
    #: response header that names it is answered with the local URL instead)
    deployed_url: str = ""


@dataclass(frozen=True)
class RouteSpec:
    method: str  # upper case, or ANY
    path: str  # as declared: /v1/models/{model}/invoke, /{proxy+}
    function: str  # logical id
    api: ApiSpec
    authorizer: AuthorizerSpec | None = None


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


def _api_from_template(
    template: Template, api: str, resolve: Callable[[Any], Any], stack_name: str
) -> tuple[ApiSpec, dict[str, AuthorizerSpec | str]]:
    props = template.api_properties(api)
    stage = str(resolve(props.get("StageName", "Prod")))
    variables = resolve(props.get("Variables")) if props.get("Variables") else None
    binary = tuple(
        str(resolve(t)).replace("~1", "/").lower() for t in props.get("BinaryMediaTypes") or ()
    )
    responses = {
        str(kind): _gateway_response(resolve(spec) or {})
        for kind, spec in (props.get("GatewayResponses") or {}).items()
    }
    local_id = api_id_for(stack_name, api)
    responses.update(
        _standalone_responses(template, api, lambda v: resolve(_naming_api(v, api, local_id)))
    )
    try:
        deployed_url = resolve(
            {
                "Fn::Sub": (
                    f"https://{local_id}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/{stage}"
                )
            }
        )
    except UnresolvedReference:  # a deployment without a region names no such URL
        deployed_url = ""
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
        deployed_url=str(deployed_url),
    )
    return spec, authorizers


def _naming_api(value: Any, api: str, api_id: str) -> Any:
    """``value`` with the API's own Ref (``!Ref Api``, ``${Api}`` in a Sub) replaced by
    its local id: CloudFormation knows the id of the API a gateway response belongs to,
    the local deployment has none before the API is served."""
    if isinstance(value, list):
        return [_naming_api(v, api, api_id) for v in value]
    if not isinstance(value, dict):
        return value
    if value == {"Ref": api}:
        return api_id
    sub = value.get("Fn::Sub")
    if len(value) == 1 and isinstance(sub, str):
        return {"Fn::Sub": sub.replace("${" + api + "}", api_id)}
    if len(value) == 1 and isinstance(sub, list) and sub and isinstance(sub[0], str):
        return {"Fn::Sub": [sub[0].replace("${" + api + "}", api_id), *sub[1:]]}
    return {k: _naming_api(v, api, api_id) for k, v in value.items()}


def _literal(value: Any) -> str | None:
    """A ResponseParameters value: ``'text'`` is the literal text; mapping expressions
    (method.request.header.X) are not literals and are skipped."""
    text = str(value)
    if len(text) >= 2 and text[0] == "'" and text[-1] == "'":
        return text[1:-1]
    return None


_AUTHORIZER_CONTEXT = "context.authorizer."
_HEADER_PARAMETER = "gatewayresponse.header."


def _standalone_responses(
    template: Template, api: str, resolve: Callable[[Any], Any]
) -> dict[str, GatewayResponse]:
    """``AWS::ApiGateway::GatewayResponse`` resources of ``api`` (used where SAM's
    ``GatewayResponses`` cannot say it, e.g. a status that is a condition)."""
    found: dict[str, GatewayResponse] = {}
    for props in template.resources("AWS::ApiGateway::GatewayResponse").values():
        if props.get("RestApiId") != {"Ref": api}:
            continue
        # RestApiId is not resolved: the API has no physical id before it is served
        resolved = {k: resolve(v) for k, v in props.items() if k != "RestApiId"}
        params = resolved.get("ResponseParameters") or {}
        headers = {
            k[len(_HEADER_PARAMETER) :]: v
            for k, v in params.items()
            if k.startswith(_HEADER_PARAMETER)
        }
        found[str(resolved["ResponseType"])] = _gateway_response(
            {
                "StatusCode": resolved.get("StatusCode"),
                "ResponseParameters": {"Headers": headers},
                "ResponseTemplates": resolved.get("ResponseTemplates") or {},
            }
        )
    return found


def _gateway_response(spec: Mapping[str, Any]) -> GatewayResponse:
    params = spec.get("ResponseParameters") or {}
    headers = {
        str(name): literal
        for name, value in (params.get("Headers") or {}).items()
        if (literal := _literal(value)) is not None
    }
    status = spec.get("StatusCode")
    mapped = {
        str(name): str(value)[len(_AUTHORIZER_CONTEXT) :]
        for name, value in (params.get("Headers") or {}).items()
        if str(value).startswith(_AUTHORIZER_CONTEXT)
    }
    return GatewayResponse(
        status=int(status) if status is not None else None,
        headers=headers,
        context_headers=mapped,
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
