"""The API Gateway emulation of the local stack: routing, proxy events, responses and
Lambda authorizers, driven through werkzeug's test client with fake functions."""

from __future__ import annotations

import base64
import json
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from tokenbroker.local.errors import LocalConfigError
from tokenbroker.local.gateway import (
    RAW_HEADERS_KEY,
    ApiSpec,
    AuthorizerCache,
    AuthorizerSpec,
    GatewayResponse,
    LocalApi,
    Router,
    RouteSpec,
    evaluate_policy,
    routes_from_template,
    werkzeug_rule,
)
from tokenbroker.local.lambda_host import load_handler
from tokenbroker.local.stack import LocalStackError, union_environment
from tokenbroker.local.template import Template, loads

DOMAIN = "127.0.0.1:8787"
API = ApiSpec(logical_id="BrokerApi", api_id="abcdefghij", stage="prod")
BINARY_API = ApiSpec(
    logical_id="BrokerApi", api_id="abcdefghij", stage="prod", binary_media_types=("image/*",)
)
DPOP_CHALLENGE = 'DPoP error="invalid_token"'


def ok(event: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": "{}"}


class Functions:
    """Fake in-process functions: each records its events and answers with a callable."""

    def __init__(self, **answers: Callable[[dict[str, Any]], Any]) -> None:
        self.answers = answers
        self.events: dict[str, list[dict[str, Any]]] = {name: [] for name in answers}

    def invoke(self, name: str, event: dict[str, Any]) -> Any:
        self.events[name].append(event)
        return self.answers[name](event)

    def last(self, name: str) -> dict[str, Any]:
        return self.events[name][-1]


def client_for(routes: list[RouteSpec], functions: Functions, **kw: Any) -> Client:
    return Client(LocalApi(routes, functions.invoke, domain_name=DOMAIN, log=None, **kw))


# ---------------------------------------------------------------------------- routing


@pytest.mark.parametrize(
    ("path", "rule", "names"),
    [
        ("/", "/", {}),
        ("/oauth2/token", "/oauth2/token", {}),
        ("/v1/models/{model}/invoke", "/v1/models/<p0>/invoke", {"p0": "model"}),
        ("/{proxy+}", "/<path:p0>", {"p0": "proxy"}),
        ("/a/{x-id}/{rest+}", "/a/<p0>/<path:p1>", {"p0": "x-id", "p1": "rest"}),
    ],
)
def test_template_paths_become_werkzeug_rules(path: str, rule: str, names: dict[str, str]) -> None:
    assert werkzeug_rule(path) == (rule, names)


@pytest.mark.parametrize("path", ["/{proxy+}/x", "relative", "/a{b}"])
def test_paths_api_gateway_rejects_are_errors(path: str) -> None:
    with pytest.raises(LocalConfigError):
        werkzeug_rule(path)


def test_router_prefers_static_paths_and_matches_methods() -> None:
    router = Router(
        [
            RouteSpec("GET", "/v1/models/catalog", "Static", API),
            RouteSpec("POST", "/v1/models/{model}/invoke", "Invoke", API),
            RouteSpec("GET", "/v1/models/{model}", "Model", API),
            RouteSpec("ANY", "/files/{proxy+}", "Files", API),
        ]
    )
    assert router.match("GET", "/v1/models/catalog") == (router._routes[0], {})
    matched = router.match("GET", "/v1/models/chat")
    assert matched is not None
    assert matched[0].function == "Model"
    assert matched[1] == {"model": "chat"}
    invoke = router.match("POST", "/v1/models/chat/invoke")
    assert invoke is not None
    assert invoke[1] == {"model": "chat"}
    files = router.match("DELETE", "/files/a/b/c.txt")
    assert files is not None
    assert files[1] == {"proxy": "a/b/c.txt"}
    assert router.match("GET", "/v1/models/chat/invoke") is None  # wrong method
    assert router.match("HEAD", "/v1/models/chat") is None  # werkzeug's implicit HEAD
    assert router.match("GET", "/files") is None  # {proxy+} needs a segment
    assert router.match("GET", "/nope") is None


def test_two_functions_on_one_route_is_an_error() -> None:
    with pytest.raises(LocalConfigError, match="declared by A and B"):
        Router([RouteSpec("GET", "/x", "A", API), RouteSpec("GET", "/x", "B", API)])


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/nope"), ("DELETE", "/oauth2/token"), ("HEAD", "/jwks")]
)
def test_unknown_routes_and_methods_are_missing_authentication_token(
    method: str, path: str
) -> None:
    functions = Functions(Token=ok, Jwks=ok)
    client = client_for(
        [RouteSpec("POST", "/oauth2/token", "Token", API), RouteSpec("GET", "/jwks", "Jwks", API)],
        functions,
    )
    response = client.open(path, method=method)
    assert response.status_code == 403
    assert response.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    if method != "HEAD":
        assert response.get_json() == {"message": "Missing Authentication Token"}
    assert functions.events == {"Token": [], "Jwks": []}


# ----------------------------------------------------------------------------- events


def test_proxy_event_has_the_rest_api_v1_shape() -> None:
    functions = Functions(Invoke=ok)
    client = client_for([RouteSpec("POST", "/v1/models/{model}/invoke", "Invoke", API)], functions)
    response = client.post(
        "/v1/models/chat%20x/invoke?a=1&b=2&a=3&empty=",
        data="hello=world",
        headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "ua/1"},
        environ_overrides={"REMOTE_ADDR": "127.0.0.9"},
    )
    assert response.status_code == 200
    event = functions.last("Invoke")
    assert event["resource"] == "/v1/models/{model}/invoke"
    assert event["path"] == "/v1/models/chat x/invoke"
    assert event["httpMethod"] == "POST"
    assert event["pathParameters"] == {"model": "chat x"}
    assert event["queryStringParameters"] == {"a": "3", "b": "2", "empty": ""}
    assert event["multiValueQueryStringParameters"] == {"a": ["1", "3"], "b": ["2"], "empty": [""]}
    assert event["stageVariables"] is None
    assert event["body"] == "hello=world"
    assert event["isBase64Encoded"] is False
    assert event["headers"]["X-Forwarded-Proto"] == "http"
    assert event["headers"]["X-Forwarded-Port"] == "8787"
    assert event["headers"]["X-Forwarded-For"] == "127.0.0.9"
    ctx = event["requestContext"]
    # as sent, percent-encoded (API Gateway does not decode it); no stage prefix locally
    assert ctx["path"] == "/v1/models/chat%20x/invoke"
    assert ctx["resourcePath"] == "/v1/models/{model}/invoke"
    assert ctx["httpMethod"] == "POST"
    assert ctx["stage"] == "prod"
    assert ctx["domainName"] == DOMAIN
    assert ctx["apiId"] == "abcdefghij"
    assert ctx["accountId"] == "123456789012"
    assert ctx["protocol"] == "HTTP/1.1"
    assert ctx["identity"]["sourceIp"] == "127.0.0.9"
    assert ctx["identity"]["userAgent"] == "ua/1"
    assert isinstance(ctx["requestTimeEpoch"], int)
    assert ctx["requestId"] == response.headers["x-amzn-RequestId"]
    assert "authorizer" not in ctx


@pytest.mark.parametrize(
    ("sent", "decoded", "parameter"),
    [
        ("/v1/models/llama3:8b/invoke", "/v1/models/llama3:8b/invoke", "llama3:8b"),
        ("/v1/models/team%40eu/invoke", "/v1/models/team@eu/invoke", "team@eu"),
        ("/v1/models/a~b/invoke", "/v1/models/a~b/invoke", "a~b"),
        ("/v1/models/100%25/invoke", "/v1/models/100%/invoke", "100%"),
        ("/v1/models/%E2%82%AC/invoke", "/v1/models/\u20ac/invoke", "\u20ac"),
    ],
)
def test_request_context_path_stays_percent_encoded_as_sent(
    sent: str, decoded: str, parameter: str
) -> None:
    functions = Functions(Invoke=ok)
    client = client_for([RouteSpec("POST", "/v1/models/{model}/invoke", "Invoke", API)], functions)
    assert client.post(sent).status_code == 200
    event = functions.last("Invoke")
    assert event["requestContext"]["path"] == sent
    assert event["path"] == decoded
    assert event["pathParameters"] == {"model": parameter}


def test_a_request_without_query_body_or_parameters_has_nulls() -> None:
    functions = Functions(Jwks=ok)
    client_for([RouteSpec("GET", "/jwks", "Jwks", API)], functions).get("/jwks")
    event = functions.last("Jwks")
    assert event["queryStringParameters"] is None
    assert event["multiValueQueryStringParameters"] is None
    assert event["pathParameters"] is None
    assert event["body"] is None
    assert event["isBase64Encoded"] is False


def test_repeated_headers_stay_separate_and_the_last_one_wins_in_headers() -> None:
    functions = Functions(Token=ok)
    client = client_for([RouteSpec("POST", "/token", "Token", API)], functions)
    raw = [("Host", DOMAIN), ("DPoP", "first"), ("dpop", "second"), ("X-Forwarded-Proto", "ftp")]
    client.post("/token", environ_overrides={RAW_HEADERS_KEY: raw})
    event = functions.last("Token")
    assert event["multiValueHeaders"]["DPoP"] == ["first", "second"]
    assert event["headers"]["DPoP"] == "second"
    # API Gateway sets X-Forwarded-Proto itself; a client cannot choose the scheme
    assert event["multiValueHeaders"]["X-Forwarded-Proto"] == ["http"]


def test_binary_media_types_are_base64_encoded_and_text_is_not() -> None:
    functions = Functions(Upload=ok)
    client = client_for([RouteSpec("PUT", "/upload", "Upload", BINARY_API)], functions)
    payload = bytes(range(256))
    client.put("/upload", data=payload, headers={"Content-Type": "image/png"})
    event = functions.last("Upload")
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == payload
    client.put("/upload", data="plain", headers={"Content-Type": "text/plain"})
    assert functions.last("Upload")["body"] == "plain"
    assert functions.last("Upload")["isBase64Encoded"] is False


def test_stage_variables_come_from_the_api() -> None:
    api = ApiSpec("BrokerApi", "abcdefghij", "prod", stage_variables={"tier": "gold"})
    functions = Functions(Jwks=ok)
    client_for([RouteSpec("GET", "/jwks", "Jwks", api)], functions).get("/jwks")
    assert functions.last("Jwks")["stageVariables"] == {"tier": "gold"}


# -------------------------------------------------------------------------- responses


def test_proxy_responses_become_http() -> None:
    def answer(event: dict[str, Any]) -> dict[str, Any]:
        return {
            "statusCode": 201,
            "headers": {"X-One": "a", "X-Both": "from-headers", "X-Num": 5},
            "multiValueHeaders": {"X-Both": ["m1", "m2"]},
            "body": base64.b64encode(b"\x00\x01").decode(),
            "isBase64Encoded": True,
        }

    response = client_for([RouteSpec("GET", "/x", "X", API)], Functions(X=answer)).get("/x")
    assert response.status_code == 201
    assert response.data == b"\x00\x01"
    assert response.headers["X-One"] == "a"
    assert response.headers["X-Num"] == "5"
    assert response.headers.getlist("X-Both") == ["m1", "m2"]
    assert response.headers["Content-Type"] == "application/json"  # API Gateway's default


def _raise(event: dict[str, Any]) -> Any:
    raise RuntimeError("boom")


@pytest.mark.parametrize(
    "answer",
    [
        _raise,
        lambda e: None,
        lambda e: {"body": "{}"},
        lambda e: {"statusCode": 200, "body": {"not": "a string"}},
        lambda e: {"statusCode": 200, "body": "!!", "isBase64Encoded": True},
    ],
)
def test_handler_errors_and_malformed_responses_are_502(answer: Any) -> None:
    response = client_for([RouteSpec("GET", "/x", "X", API)], Functions(X=answer)).get("/x")
    assert response.status_code == 502
    assert response.get_json() == {"message": "Internal server error"}


# ------------------------------------------------------------------------ authorizers

AUTHORIZER = AuthorizerSpec(
    name="DpopAuthorizer", function="Authorizer", headers=("Authorization", "DPoP"), ttl=0
)
DPOP_API = ApiSpec(
    logical_id="BrokerApi",
    api_id="abcdefghij",
    stage="prod",
    gateway_responses={
        "UNAUTHORIZED": GatewayResponse(headers={"WWW-Authenticate": DPOP_CHALLENGE}),
        "ACCESS_DENIED": GatewayResponse(
            headers={"WWW-Authenticate": 'DPoP error="insufficient_scope"'},
            templates={"application/json": '{"error":$context.error.messageString}'},
        ),
    },
)
CREDENTIALS = {"Authorization": "DPoP token", "DPoP": "proof"}


def policy(effect: str, resource: str = "*", **context: Any) -> Callable[[Any], Any]:
    def answer(event: dict[str, Any]) -> dict[str, Any]:
        return {
            "principalId": "client-1",
            "policyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}
                ],
            },
            "context": context,
        }

    return answer


def protected(authorizer: AuthorizerSpec = AUTHORIZER) -> list[RouteSpec]:
    return [
        RouteSpec("GET", "/v1/whoami", "WhoAmI", DPOP_API, authorizer),
        RouteSpec("POST", "/v1/models/{model}/invoke", "Invoke", DPOP_API, authorizer),
    ]


@pytest.mark.parametrize("missing", ["Authorization", "DPoP"])
def test_missing_identity_sources_are_401_without_calling_the_authorizer(missing: str) -> None:
    functions = Functions(Authorizer=policy("Allow"), WhoAmI=ok, Invoke=ok)
    headers = {k: v for k, v in CREDENTIALS.items() if k != missing}
    response = client_for(protected(), functions).get("/v1/whoami", headers=headers)
    assert response.status_code == 401
    assert response.get_json() == {"message": "Unauthorized"}
    assert response.headers["WWW-Authenticate"] == DPOP_CHALLENGE  # from GatewayResponses
    assert functions.events["Authorizer"] == []
    assert functions.events["WhoAmI"] == []


def test_authorizer_gets_a_request_event_and_the_function_its_context() -> None:
    functions = Functions(
        Authorizer=policy("Allow", jkt="abc", scopes="model:x:invoke", n=3, flag=True),
        WhoAmI=ok,
        Invoke=ok,
    )
    client = client_for(protected(), functions)
    response = client.post("/v1/models/x/invoke?q=1", headers=CREDENTIALS)
    assert response.status_code == 200
    auth_event = functions.last("Authorizer")
    assert auth_event["type"] == "REQUEST"
    assert auth_event["methodArn"] == (
        "arn:aws:execute-api:us-east-1:123456789012:abcdefghij/prod/POST/v1/models/x/invoke"
    )
    assert auth_event["resource"] == "/v1/models/{model}/invoke"
    assert auth_event["path"] == "/v1/models/x/invoke"
    assert auth_event["httpMethod"] == "POST"
    # (the test client spells names its own way; the real server keeps the client's)
    assert {k.lower(): v for k, v in auth_event["headers"].items()}["dpop"] == "proof"
    assert auth_event["multiValueHeaders"]["Authorization"] == ["DPoP token"]
    assert auth_event["queryStringParameters"] == {"q": "1"}
    assert auth_event["pathParameters"] == {"model": "x"}
    assert auth_event["requestContext"]["domainName"] == DOMAIN
    authorizer = functions.last("Invoke")["requestContext"]["authorizer"]
    # REST APIs hand the context to the function as strings
    assert authorizer["principalId"] == "client-1"
    assert authorizer["jkt"] == "abc"
    assert authorizer["n"] == "3"
    assert authorizer["flag"] == "true"


def test_unauthorized_exception_is_401() -> None:
    def reject(event: dict[str, Any]) -> Any:
        raise Exception("Unauthorized")

    functions = Functions(Authorizer=reject, WhoAmI=ok, Invoke=ok)
    response = client_for(protected(), functions).get("/v1/whoami", headers=CREDENTIALS)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == DPOP_CHALLENGE
    assert functions.events["WhoAmI"] == []


@pytest.mark.parametrize(
    "answer",
    [
        policy("Deny"),
        policy("Allow", resource="arn:aws:execute-api:*:*:*/prod/GET/other"),  # no match
    ],
)
def test_deny_is_403_with_the_configured_gateway_response(answer: Any) -> None:
    functions = Functions(Authorizer=answer, WhoAmI=ok, Invoke=ok)
    response = client_for(protected(), functions).get("/v1/whoami", headers=CREDENTIALS)
    assert response.status_code == 403
    assert response.headers["WWW-Authenticate"] == 'DPoP error="insufficient_scope"'
    assert response.get_json()["error"].startswith("User is not authorized")
    assert functions.events["WhoAmI"] == []


@pytest.mark.parametrize(
    "answer",
    [
        _raise,
        lambda e: {"principalId": "x"},  # no policy
        lambda e: {"policyDocument": {"Statement": []}},  # no principal
        policy("Allow", nested={"not": "allowed"}),  # objects are not allowed in context
    ],
)
def test_authorizer_failures_are_500_configuration_errors(answer: Any) -> None:
    functions = Functions(Authorizer=answer, WhoAmI=ok, Invoke=ok)
    response = client_for(protected(), functions).get("/v1/whoami", headers=CREDENTIALS)
    assert response.status_code == 500
    assert response.headers["x-amzn-ErrorType"] == "AuthorizerConfigurationException"
    assert response.get_json() == {"message": None}
    assert functions.events["WhoAmI"] == []


def test_reauthorize_every_zero_calls_the_authorizer_every_time() -> None:
    functions = Functions(Authorizer=policy("Allow"), WhoAmI=ok, Invoke=ok)
    client = client_for(protected(), functions)
    for _ in range(3):
        assert client.get("/v1/whoami", headers=CREDENTIALS).status_code == 200
    assert len(functions.events["Authorizer"]) == 3


def test_caching_skips_the_authorizer_for_the_same_identity_sources() -> None:
    """Why the template sets ReauthorizeEvery: 0 - a cached Allow replays a proof."""
    now = [0.0]
    cached = AuthorizerSpec(
        name="DpopAuthorizer", function="Authorizer", headers=("Authorization", "DPoP"), ttl=300
    )
    allow_whoami = policy("Allow", resource="arn:aws:execute-api:*:*:abcdefghij/prod/GET/v1/whoami")
    functions = Functions(Authorizer=allow_whoami, WhoAmI=ok, Invoke=ok)
    client = client_for(protected(cached), functions, cache=AuthorizerCache(lambda: now[0]))
    assert client.get("/v1/whoami", headers=CREDENTIALS).status_code == 200
    assert client.get("/v1/whoami", headers=CREDENTIALS).status_code == 200  # same proof!
    assert len(functions.events["Authorizer"]) == 1
    # the cached policy is evaluated against the new method ARN
    assert client.post("/v1/models/x/invoke", headers=CREDENTIALS).status_code == 403
    assert len(functions.events["Authorizer"]) == 1
    other = {**CREDENTIALS, "DPoP": "another proof"}
    assert client.get("/v1/whoami", headers=other).status_code == 200
    assert len(functions.events["Authorizer"]) == 2
    now[0] = 301
    assert client.get("/v1/whoami", headers=CREDENTIALS).status_code == 200
    assert len(functions.events["Authorizer"]) == 3


def test_token_authorizers_get_the_token_and_check_the_validation_expression() -> None:
    spec = AuthorizerSpec(
        name="Tok",
        function="Authorizer",
        payload_type="TOKEN",
        headers=("Authorization",),
        ttl=0,
        validation_expression=r"DPoP \S+",
    )
    functions = Functions(Authorizer=policy("Allow"), WhoAmI=ok, Invoke=ok)
    client = client_for(protected(spec), functions)
    assert client.get("/v1/whoami", headers={"Authorization": "Bearer x"}).status_code == 401
    assert functions.events["Authorizer"] == []
    assert client.get("/v1/whoami", headers={"Authorization": "DPoP x"}).status_code == 200
    event = functions.last("Authorizer")
    assert event["type"] == "TOKEN"
    assert event["authorizationToken"] == "DPoP x"
    assert event["methodArn"].endswith("/prod/GET/v1/whoami")


@pytest.mark.parametrize(
    ("statements", "effect"),
    [
        ([{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": "*"}], "Allow"),
        ([{"Action": "execute-api:*", "Effect": "Allow", "Resource": ["arn:*/GET/*"]}], "Allow"),
        (
            [
                {"Action": "*", "Effect": "Allow", "Resource": "*"},
                {"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": "arn:*"},
            ],
            "Deny",
        ),
        ([{"Action": "s3:GetObject", "Effect": "Allow", "Resource": "*"}], "None"),
        ([{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": "arn:x"}], "None"),
    ],
)
def test_policy_evaluation(statements: list[dict[str, Any]], effect: str) -> None:
    arn = "arn:aws:execute-api:us-east-1:123456789012:abcdefghij/prod/GET/v1/whoami"
    assert evaluate_policy({"Statement": statements}, arn) == effect


# ------------------------------------------------------------------- from a template

TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage: {Type: String, Default: live}
Globals:
  Function: {Runtime: python3.13}
Resources:
  Api:
    Type: AWS::Serverless::Api
    Properties:
      StageName: !Ref Stage
      Variables: {tier: gold}
      BinaryMediaTypes: ["application~1octet-stream"]
      GatewayResponses:
        UNAUTHORIZED:
          ResponseParameters:
            Headers:
              WWW-Authenticate: "'DPoP error=\\"invalid_token\\"'"
              X-Mapped: method.request.header.X
      Auth:
        DefaultAuthorizer: Dpop
        Authorizers:
          Dpop:
            FunctionArn: !GetAtt AuthFn.Arn
            FunctionPayloadType: REQUEST
            Identity:
              Headers: [Authorization, DPoP]
              ReauthorizeEvery: 0
          Cognito:
            UserPoolArn: arn:aws:cognito-idp:us-east-1:123456789012:userpool/x
  AuthFn:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: fn/, Handler: app.handler}
  Protected:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: app.handler
      Events:
        WhoAmI:
          Type: Api
          Properties: {RestApiId: !Ref Api, Path: /v1/whoami, Method: get}
        Open:
          Type: Api
          Properties:
            RestApiId: !Ref Api
            Path: /open
            Method: get
            Auth: {Authorizer: NONE}
"""


def template_from(text: str, tmp_path: Path) -> Template:
    return Template(loads(textwrap.dedent(text)), tmp_path / "template.yaml")


def test_routes_authorizers_and_gateway_responses_come_from_the_template(
    tmp_path: Path,
) -> None:
    template = template_from(TEMPLATE, tmp_path)
    routes = {r.path: r for r in routes_from_template(template, template.resolve, stack_name="s")}
    whoami, public = routes["/v1/whoami"], routes["/open"]
    assert (whoami.method, whoami.function) == ("GET", "Protected")
    assert whoami.authorizer == AuthorizerSpec(
        name="Dpop",
        function="AuthFn",
        payload_type="REQUEST",
        headers=("Authorization", "DPoP"),
        ttl=0,
    )
    assert public.authorizer is None
    api = whoami.api
    assert api.stage == "live"
    assert api.stage_variables == {"tier": "gold"}
    assert api.binary_media_types == ("application/octet-stream",)
    assert len(api.api_id) == 10
    # quoted literals are unquoted; mapping expressions are not literals
    assert api.gateway_responses["UNAUTHORIZED"].headers == {
        "WWW-Authenticate": 'DPoP error="invalid_token"'
    }


def test_api_globals_merge_as_sam_merges_them_lists_concatenated(tmp_path: Path) -> None:
    text = TEMPLATE.replace(
        "  Function: {Runtime: python3.13}\n",
        "  Function: {Runtime: python3.13}\n"
        "  Api:\n"
        '    BinaryMediaTypes: ["image~1png"]\n'
        "    Variables: {tier: silver, region: eu}\n",
    )
    template = template_from(text, tmp_path)
    (route, *_) = routes_from_template(template, template.resolve, stack_name="s")
    # one Globals merge (SAM's): lists concatenate globals first, local keys win
    assert route.api.binary_media_types == ("image/png", "application/octet-stream")
    assert route.api.stage_variables == {"tier": "gold", "region": "eu"}


def test_the_implicit_api_gets_the_api_globals_and_the_prod_stage(tmp_path: Path) -> None:
    template = template_from(
        """
        Globals:
          Api:
            Variables: {tier: gold}
        Resources:
          Fn:
            Type: AWS::Serverless::Function
            Properties:
              CodeUri: fn/
              Handler: app.handler
              Events:
                Hello: {Type: Api, Properties: {Path: /hello, Method: get}}
        """,
        tmp_path,
    )
    (route,) = routes_from_template(template, template.resolve, stack_name="s")
    assert (route.api.logical_id, route.api.stage) == ("ServerlessRestApi", "Prod")
    assert route.api.stage_variables == {"tier": "gold"}
    assert route.authorizer is None


def test_sam_default_reauthorize_every_is_300(tmp_path: Path) -> None:
    text = TEMPLATE.replace("ReauthorizeEvery: 0", "Context: [httpMethod]")
    template = template_from(text, tmp_path)
    routes = routes_from_template(template, template.resolve, stack_name="s")
    assert {r.authorizer.ttl for r in routes if r.authorizer} == {300}


def test_routes_using_an_authorizer_that_cannot_run_locally_are_errors(tmp_path: Path) -> None:
    template = template_from(
        TEMPLATE.replace("DefaultAuthorizer: Dpop", "DefaultAuthorizer: Cognito"), tmp_path
    )
    with pytest.raises(LocalConfigError, match="Cognito"):
        routes_from_template(template, template.resolve, stack_name="s")


def test_handlers_load_under_unique_module_names(tmp_path: Path) -> None:
    for name, answer in (("one", 1), ("two", 2)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "app.py").write_text(
            f"def handler(event, context):\n    return {answer}\n"
        )
    one = load_handler(tmp_path / "one", "app.handler", "One")
    two = load_handler(tmp_path / "two", "app.handler", "Two")
    assert (one({}, None), two({}, None)) == (1, 2)
    with pytest.raises(LocalConfigError, match="does not exist"):
        load_handler(tmp_path / "one", "missing.handler", "Three")


def test_functions_must_agree_on_shared_environment_variables() -> None:
    assert union_environment({"A": {"X": "1", "Y": "2"}, "B": {"X": "1"}}) == {"X": "1", "Y": "2"}
    with pytest.raises(LocalStackError, match="ISSUER is 'a' in A but 'b' in B"):
        union_environment({"A": {"ISSUER": "a"}, "B": {"ISSUER": "b"}})


def test_error_bodies_are_json() -> None:
    response = client_for([], Functions()).get("/")
    assert json.loads(response.data) == {"message": "Missing Authentication Token"}


def test_each_request_is_logged_as_one_line_without_headers_or_body() -> None:
    lines: list[str] = []
    api = LocalApi(
        [RouteSpec("POST", "/token", "Token", API)],
        Functions(Token=ok).invoke,
        domain_name=DOMAIN,
        log=lines.append,
    )
    Client(api).post("/token?secret=q", data="client_secret=s3cret", headers={"DPoP": "proof"})
    Client(api).get("/a b\x1b[31m")
    assert len(lines) == 2
    assert re.fullmatch(r"POST /token 200 \d+ms", lines[0])
    assert re.fullmatch(r"GET /a\?b\?\[31m 403 \d+ms", lines[1])


def test_bodies_over_the_api_gateway_limit_are_413() -> None:
    functions = Functions(Token=ok)
    client = client_for([RouteSpec("POST", "/token", "Token", API)], functions)
    response = client.post("/token", data=b"x" * (10 * 1024 * 1024 + 1))
    assert response.status_code == 413
    assert functions.events["Token"] == []


def test_unknown_routes_use_the_apis_gateway_responses() -> None:
    api = ApiSpec(
        "BrokerApi",
        "abcdefghij",
        "prod",
        gateway_responses={"DEFAULT_4XX": GatewayResponse(headers={"X-Custom": "yes"})},
    )
    response = client_for([RouteSpec("GET", "/x", "X", api)], Functions(X=ok)).get("/y")
    assert response.status_code == 403
    assert response.headers["X-Custom"] == "yes"


# ---- context.authorizer.<key> header mappings (DPoP nonce challenges, RFC 9449 §9) -----

NONCE_API = ApiSpec(
    logical_id="BrokerApi",
    api_id="abcdefghij",
    stage="prod",
    gateway_responses={
        "UNAUTHORIZED": GatewayResponse(headers={"WWW-Authenticate": DPOP_CHALLENGE}),
        "ACCESS_DENIED": GatewayResponse(
            status=401,
            headers={"Cache-Control": "no-store"},
            context_headers={"WWW-Authenticate": "challenge", "DPoP-Nonce": "dpop_nonce"},
        ),
    },
)


def test_a_denys_context_reaches_the_gateway_responses_mapped_headers() -> None:
    functions = Functions(
        Authorizer=policy("Deny", challenge='DPoP error="use_dpop_nonce"', dpop_nonce="1.abc"),
        WhoAmI=ok,
        Invoke=ok,
    )
    routes = [RouteSpec("GET", "/v1/whoami", "WhoAmI", NONCE_API, AUTHORIZER)]
    response = client_for(routes, functions).get("/v1/whoami", headers=CREDENTIALS)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'DPoP error="use_dpop_nonce"'
    assert response.headers["DPoP-Nonce"] == "1.abc"
    assert response.headers["Cache-Control"] == "no-store"
    assert functions.events["WhoAmI"] == []


def test_a_mapping_whose_key_the_context_lacks_leaves_its_header_out() -> None:
    functions = Functions(
        Authorizer=policy("Deny", challenge='DPoP error="insufficient_scope"'),
        WhoAmI=ok,
        Invoke=ok,
    )
    routes = [RouteSpec("GET", "/v1/whoami", "WhoAmI", NONCE_API, AUTHORIZER)]
    response = client_for(routes, functions).get("/v1/whoami", headers=CREDENTIALS)
    assert response.headers["WWW-Authenticate"] == 'DPoP error="insufficient_scope"'
    assert "DPoP-Nonce" not in response.headers


def test_standalone_gateway_responses_of_the_api_come_from_the_template(
    tmp_path: Path,
) -> None:
    text = TEMPLATE + (
        "  Denied:\n"
        "    Type: AWS::ApiGateway::GatewayResponse\n"
        "    Properties:\n"
        "      RestApiId: !Ref Api\n"
        "      ResponseType: ACCESS_DENIED\n"
        "      StatusCode: '401'\n"
        "      ResponseParameters:\n"
        "        gatewayresponse.header.DPoP-Nonce: context.authorizer.dpop_nonce\n"
        "        gatewayresponse.header.Cache-Control: \"'no-store'\"\n"
    )
    template = template_from(text, tmp_path)
    (route, *_) = routes_from_template(template, template.resolve, stack_name="s")
    denied = route.api.gateway_responses["ACCESS_DENIED"]
    assert denied.status == 401
    assert denied.headers == {"Cache-Control": "no-store"}
    assert denied.context_headers == {"DPoP-Nonce": "dpop_nonce"}
