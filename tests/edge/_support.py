"""Test-side harness for the edge authorizer: signed tokens and proofs, API Gateway and
CloudFront events, a Lambda context, the real REST authorizer handler, and a usage
ledger fake.

Tokens are built by hand (base64url + ``cryptography`` through ``support.dpop``), never
with ``tokenbroker``'s own JOSE code, so the malformed ones can be built too and a bug in
the code under test cannot hide behind the same bug here.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc.jwk import ECKey

from support import fakes, lambda_events
from support.dpop import DeviceKey, ath_for, b64url, b64url_json
from support.lambda_events import ACCOUNT, API_ID, HOST, ISSUER, REGION, STAGE
from tokenbroker import bootstrap
from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.keycache import KeyCache
from tokenbroker.domain.liveness import LivenessView
from tokenbroker.settings import Settings
from tokenbroker.web.edge import Unauthorized

ROOT = Path(__file__).resolve().parents[2]
AUTHORIZER_APP = ROOT / "functions" / "authorizer" / "app.py"

AUDIENCE = "urn:tokenbroker:api"
WHOAMI = "/v1/whoami"
INVOKE = "/v1/models/{model}/invoke"
MODEL = "gpt-secret"
INVOKE_SCOPE = f"model:{MODEL}:invoke"
ROUTE_SCOPES = (("GET /v1/whoami", ""), ("POST /v1/models/{model}/invoke", "model:{model}:invoke"))
CLIENT_ID = "tbc_0123456789abcdef01234567"
PRINCIPAL = CLIENT_ID
DEFAULT_SCOPE = "profile"


def url_for(path: str, *, stage: str = STAGE, host: str = HOST, scheme: str = "https") -> str:
    return f"{scheme}://{host}/{stage}{path}"


def method_arn(method: str = "GET", path: str = WHOAMI, *, stage: str = STAGE) -> str:
    return f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API_ID}/{stage}/{method}{path}"


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "route_scopes": ROUTE_SCOPES,
        "proof_max_age": 60,
        "clock_skew": 5,
    }
    values.update(overrides)
    return Settings(**values)


# ---------------------------------------------------------------- Lambda plumbing


@dataclass
class LambdaContext(lambda_events.LambdaContext):
    function_name: str = "AuthorizerFunction"


def load_authorizer() -> ModuleType:
    """``functions/authorizer/app.py`` as a fresh module with a unique name."""
    return lambda_events.load_function(AUTHORIZER_APP, "_tb_authorizer_app")


def call_rest_authorizer(
    module: ModuleType, event: Mapping[str, Any], context: LambdaContext
) -> tuple[str, dict[str, Any] | None]:
    """Run the REST authorizer handler: ("401", None) | ("403", policy) | ("allow",
    policy). A 401 is exactly ``Exception("Unauthorized")`` (what API Gateway maps to
    401); any other exception propagates and fails the test (API Gateway: 500). Every
    policy has one statement, for exactly the event's methodArn."""
    try:
        response: dict[str, Any] = module.handler(dict(event), context)
    except Unauthorized as exc:
        message = str(exc)
    else:
        (statement,) = response["policyDocument"]["Statement"]
        assert statement["Action"] == "execute-api:Invoke"
        assert statement["Resource"] == [event["methodArn"]]
        assert statement["Effect"] in ("Allow", "Deny")
        return ("allow" if statement["Effect"] == "Allow" else "403"), response
    assert message == "Unauthorized"
    return "401", None


def call_rest_authorizer_raw(module: ModuleType, event: Mapping[str, Any]) -> str:
    """Run the REST authorizer handler on any event: "401" (exactly ``Unauthorized``) or
    the policy's effect; any other exception propagates (API Gateway: 500)."""
    try:
        response = module.handler(dict(event), LambdaContext())
    except Unauthorized as exc:
        message = str(exc)
    else:
        return str(response["policyDocument"]["Statement"][0]["Effect"])
    assert message == "Unauthorized"
    return "401"


def build_container(
    config: Settings,
    *,
    clock: FixedClock,
    key_cache: KeyCache,
    usage: Any,
    aws: Callable[[str], Any] | None = None,
) -> bootstrap.Container:
    """``bootstrap.build`` with the key cache and (unless None) the usage ledger given
    (a FakeUsageLedger is also the liveness source); without ``aws``, any AWS client the
    container asks for fails the test."""

    def no_aws(service: str) -> Any:
        raise AssertionError(f"unexpected AWS client {service!r} in this test")

    liveness = (
        LivenessView(usage.fetch, clock=clock) if isinstance(usage, FakeUsageLedger) else None
    )
    return bootstrap.build(
        config,
        aws=aws or no_aws,
        clock=clock,
        key_cache=key_cache,
        usage=usage,
        liveness=liveness,
    )


# ---------------------------------------------------------------- tokens and proofs


class Issuer:
    """The token signer (KMS in production): a local P-256 key, ``kid`` = RFC 7638
    thumbprint (computed by joserfc)."""

    def __init__(self, *, client_id: str = CLIENT_ID) -> None:
        self.key = DeviceKey.generate("ES256")
        self.client_id = client_id

    @property
    def kid(self) -> str:
        return self.key.jkt

    @property
    def public_key(self) -> Any:
        return self.key.private_key.public_key()

    def sign(self, signing_input: bytes) -> bytes:
        """Raw r||s ES256 signature."""
        return self.key.sign(signing_input)

    def key_cache(self, clock: FixedClock) -> KeyCache:
        return KeyCache(lambda: {self.kid: self.public_key}, clock=clock)

    def header(self, **overrides: Any) -> dict[str, Any]:
        header = {"alg": "ES256", "typ": "at+jwt", "kid": self.kid}
        header.update(overrides)
        return {k: v for k, v in header.items() if v is not _DROP}

    def claims(self, now: float, jkt: str, **overrides: Any) -> dict[str, Any]:
        claims = {
            "iss": ISSUER,
            "sub": self.client_id,
            "aud": AUDIENCE,
            "exp": int(now) + 290,
            "iat": int(now) - 10,
            "jti": secrets.token_urlsafe(16),
            "client_id": self.client_id,
            "scope": DEFAULT_SCOPE,
            "cnf": {"jkt": jkt},
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not _DROP}

    def token(
        self,
        now: float,
        jkt: str,
        *,
        header: Mapping[str, Any] | str | bytes | None = None,
        claims: Mapping[str, Any] | str | bytes | None = None,
        sign_with: DeviceKey | None = None,
        signature: bytes | None = None,
        **claim_overrides: Any,
    ) -> str:
        """An access token; by default a valid one. ``header``/``claims`` may be raw
        JSON text or bytes; ``sign_with`` another key; ``signature`` fixed bytes."""
        if header is None:
            header = self.header()
        if claims is None:
            claims = self.claims(now, jkt, **claim_overrides)
        signing_input = f"{b64url_json(header)}.{b64url_json(claims)}".encode("ascii")
        if signature is None:
            signature = (sign_with.sign if sign_with else self.sign)(signing_input)
        return f"{signing_input.decode('ascii')}.{b64url(signature)}"


class KmsIssuer(Issuer):
    """Tokens signed by the deployment's KMS key (moto), as the token endpoint does:
    MessageType=RAW, ECDSA_SHA_256, DER turned into raw r||s."""

    def __init__(self, kms: Any, key_id: str, *, client_id: str = CLIENT_ID) -> None:
        super().__init__(client_id=client_id)
        self._kms = kms
        self._key_id = key_id
        der = kms.get_public_key(KeyId=key_id)["PublicKey"]
        self._public_key = serialization.load_der_public_key(der)
        self._kid = ECKey.import_key(self._public_key).thumbprint()

    @property
    def kid(self) -> str:
        return self._kid

    @property
    def public_key(self) -> Any:
        return self._public_key

    def sign(self, signing_input: bytes) -> bytes:
        der = self._kms.sign(
            KeyId=self._key_id,
            Message=signing_input,
            MessageType="RAW",
            SigningAlgorithm="ECDSA_SHA_256",
        )["Signature"]
        r, s = decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


class _Drop:
    def __repr__(self) -> str:
        return "DROP"


#: a header parameter or claim to leave out
_DROP: Any = _Drop()
DROP: Any = _DROP


def proof(
    device: DeviceKey,
    token: str | None,
    *,
    htm: str = "GET",
    htu: str | None = None,
    iat: Any,
    jti: str | None = None,
    header: Mapping[str, Any] | None = None,
    claims: Mapping[str, Any] | None = None,
    drop_claims: Iterable[str] = (),
    drop_header: Iterable[str] = (),
) -> str:
    """A DPoP proof for ``htm``/``htu`` bound to ``token`` (ath), signed by ``device``."""
    return device.proof(
        htm,
        htu if htu is not None else url_for(WHOAMI),
        iat=iat,
        jti=jti,
        ath=ath_for(token) if token is not None else None,
        header_overrides=header,
        claim_overrides=claims,
        drop_claims=drop_claims,
        drop_header=drop_header,
    )


# ---------------------------------------------------------------- events

Headers = Iterable[tuple[str, str]]
_NULL: Any = object()


def rest_event(
    headers: Headers | None,
    *,
    method: str = "GET",
    resource: str = WHOAMI,
    path: str | None = None,
    path_parameters: Mapping[str, str] | None = None,
    single_headers: Any = _NULL,
    multi_headers: Any = _NULL,
) -> dict[str, Any]:
    """An API Gateway REST API ``REQUEST`` authorizer event, as API Gateway sends it:
    ``headers`` keeps the last value of a repeated header, ``multiValueHeaders`` all."""
    path = path or resource
    single: dict[str, str] | None = None
    multi: dict[str, list[str]] | None = None
    if headers is not None:
        base = [
            ("Host", HOST),
            ("User-Agent", "edge-tests/1.0"),
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Port", "443"),
        ]
        single, multi = lambda_events.header_maps([*base, *headers])
    return {
        "type": "REQUEST",
        "methodArn": method_arn(method, path),
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": single if single_headers is _NULL else single_headers,
        "multiValueHeaders": multi if multi_headers is _NULL else multi_headers,
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": dict(path_parameters) if path_parameters else None,
        "stageVariables": None,
        "requestContext": lambda_events.rest_request_context(
            method,
            resource,
            path,
            source_ip="203.0.113.7",
            user_agent="edge-tests/1.0",
            request_time="01/Jan/2027:08:00:00 +0000",
            epoch_ms=1_800_000_000_000,
        ),
    }


def http_api_event(
    headers: Mapping[str, str] | None,
    *,
    method: str = "GET",
    route: str = WHOAMI,
    path: str | None = None,
    path_parameters: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """An API Gateway HTTP API payload 2.0 ``REQUEST`` authorizer event (repeated
    headers arrive comma-joined, header names in lower case)."""
    path = path or route
    raw_path = f"/{STAGE}{path}"
    request_id = str(uuid.uuid4())
    base = {"host": HOST, "user-agent": "edge-tests/1.0", "x-forwarded-proto": "https"}
    return {
        "version": "2.0",
        "type": "REQUEST",
        "routeArn": f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API_ID}/{STAGE}/{method}{path}",
        "identitySource": [],
        "routeKey": f"{method} {route}",
        "rawPath": raw_path,
        "rawQueryString": "",
        "cookies": [],
        "headers": None if headers is None else {**base, **headers},
        "queryStringParameters": {},
        "pathParameters": dict(path_parameters or {}),
        "stageVariables": {},
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": API_ID,
            "domainName": HOST,
            "domainPrefix": API_ID,
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "edge-tests/1.0",
            },
            "requestId": request_id,
            "routeKey": f"{method} {route}",
            "stage": STAGE,
            "time": "01/Jan/2027:08:00:00 +0000",
            "timeEpoch": 1_800_000_000_000,
        },
    }


EDGE_HOST = "d111111abcdef8.cloudfront.net"


def edge_event(
    headers: Iterable[tuple[str, str]], *, method: str = "GET", uri: str = WHOAMI
) -> dict[str, Any]:
    """A CloudFront Lambda@Edge viewer-request event (header keys lower case, each a
    list of {key, value})."""
    cf_headers: dict[str, list[dict[str, str]]] = {}
    for name, value in [("Host", EDGE_HOST), ("User-Agent", "edge-tests/1.0"), *headers]:
        cf_headers.setdefault(name.lower(), []).append({"key": name, "value": value})
    return {
        "Records": [
            {
                "cf": {
                    "config": {
                        "distributionDomainName": EDGE_HOST,
                        "distributionId": "EDFDVBD6EXAMPLE",
                        "eventType": "viewer-request",
                        "requestId": str(uuid.uuid4()),
                    },
                    "request": {
                        "clientIp": "203.0.113.7",
                        "headers": cf_headers,
                        "method": method,
                        "querystring": "",
                        "uri": uri,
                    },
                }
            }
        ]
    }


def dpop_headers(token: str, proof_value: str, scheme: str = "DPoP") -> list[tuple[str, str]]:
    return [("Authorization", f"{scheme} {token}"), ("DPoP", proof_value)]


# ---------------------------------------------------------------- usage ledger fake


#: the scopes FakeUsageLedger's clients are allowed unless a test says otherwise
FAKE_CLIENT_SCOPES = frozenset({DEFAULT_SCOPE, INVOKE_SCOPE, "model:other:invoke"})


class FakeUsageLedger(fakes.FakeUsageLedger):
    """The shared fake, its clients allowed the edge tests' scopes."""

    def __init__(self) -> None:
        super().__init__(client_scopes=FAKE_CLIENT_SCOPES)


def context_is_flat_strings(context: Mapping[str, Any]) -> bool:
    return all(isinstance(k, str) and isinstance(v, str) for k, v in context.items())
