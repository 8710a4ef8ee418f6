"""A fake broker (RFC 8414 metadata + token endpoint) and a fake protected API, for the
client SDK's unit tests.

Why a fake rather than the real services: these tests need what the real stack does not
do on demand (server nonces, 5xx, bodies that are not JSON, a token refused at the
resource, a broker clock that disagrees). Proofs are verified with joserfc, a JOSE
implementation the SDK does not use, so a mistake shared by the SDK's signer and the
broker's verifier cannot hide here; the end-to-end test runs against the real stack.

The fake speaks to httpx (``MockTransport``, sync and async) and to requests (a
transport adapter); every request it receives is recorded in ``seen``.
"""

from __future__ import annotations

import base64
import hashlib
import http
import io
import itertools
import json
import secrets
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urljoin, urlsplit

import httpx
import requests
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

ISSUER = "https://broker.test"
TOKEN_URL = f"{ISSUER}/oauth2/token"
API = "https://api.test"
ELSEWHERE = "https://elsewhere.test"
CLIENT_ID = "tbc_0123456789abcdef01234567"
SECRET = "Secr3t+/=&value-that-must-never-leak"
LIFETIME = 300
PROOF_MAX_AGE = 60
PROOF_SKEW = 5

Reply = tuple[int, dict[str, str], bytes]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def expected_htu(url: str) -> str:
    """What htu must be (computed here, independently of the SDK)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path or '/'}"


def json_reply(status: int, body: Mapping[str, Any], headers: Mapping[str, str] = {}) -> Reply:
    return status, {"Content-Type": "application/json", **headers}, json.dumps(body).encode()


class Rejected(Exception):
    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


@dataclass
class Proof:
    header: dict[str, Any]
    claims: dict[str, Any]
    jkt: str


@dataclass
class Seen:
    """One request the fake received, and what it made of the proof."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    proof: Proof | None = None
    outcome: str = ""


@dataclass
class Issued:
    jkt: str
    expires_at: float


@dataclass
class FakeBroker:
    clock: Callable[[], float]
    lifetime: int = LIFETIME
    enrolled: set[str] = field(default_factory=set)
    revoked: set[str] = field(default_factory=set)
    metadata: dict[str, Any] = field(
        default_factory=lambda: {
            "issuer": ISSUER,
            "token_endpoint": TOKEN_URL,
            "jwks_uri": f"{ISSUER}/.well-known/jwks.json",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "dpop_signing_alg_values_supported": ["ES256", "ES384", "EdDSA"],
            "response_types_supported": [],
        }
    )
    #: a canned reply for an endpoint ("metadata", "token") instead of the real logic
    canned: dict[str, Reply] = field(default_factory=dict)
    #: nonces the token endpoint / the API require (None: no nonce)
    token_nonce: str | None = None
    api_nonce: str | None = None
    rotate_token_nonce: bool = False
    token_type: str = "DPoP"
    #: tokens the API refuses with invalid_token (as if revoked at the edge)
    refused_tokens: set[str] = field(default_factory=set)
    refuse_all_tokens: bool = False
    #: called before a token is issued (concurrency tests hold the first fetch here)
    before_issue: Callable[[], None] | None = None
    before_issue_async: Callable[[], Awaitable[None]] | None = None
    seen: list[Seen] = field(default_factory=list)
    issued: dict[str, Issued] = field(default_factory=dict)
    jtis: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # ---- adapters -------------------------------------------------------------------
    def transport(self) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            if self._is_token_request(request) and self.before_issue:
                self.before_issue()
            return self._httpx_reply(request)

        return httpx.MockTransport(handle)

    def async_transport(self) -> httpx.MockTransport:
        async def handle(request: httpx.Request) -> httpx.Response:
            if self._is_token_request(request) and self.before_issue_async:
                await self.before_issue_async()
            return self._httpx_reply(request)

        return httpx.MockTransport(handle)

    def adapter(self) -> FakeAdapter:
        return FakeAdapter(self)

    def _is_token_request(self, request: httpx.Request) -> bool:
        return str(request.url) == TOKEN_URL and "token" not in self.canned

    def _httpx_reply(self, request: httpx.Request) -> httpx.Response:
        status, headers, body = self.handle(
            request.method, str(request.url), dict(request.headers), request.content
        )
        return httpx.Response(status, headers=headers, content=body)

    # ---- views for assertions -----------------------------------------------------
    @property
    def token_fetches(self) -> int:
        return sum(1 for s in self.seen if s.url == TOKEN_URL and s.outcome == "issued")

    def api_calls(self) -> list[Seen]:
        return [s for s in self.seen if not s.url.startswith(ISSUER)]

    # ---- the server -----------------------------------------------------------------
    def handle(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> Reply:
        lowered = {k.lower(): v for k, v in headers.items()}
        seen = Seen(method, url, lowered, body)
        with self._lock:
            self.seen.append(seen)
        path = urlsplit(url).path
        if url.startswith(ISSUER) and path == "/.well-known/oauth-authorization-server":
            return self.canned.get("metadata") or json_reply(200, self.metadata)
        if url == TOKEN_URL and method == "POST":
            return self.canned.get("token") or self._token(seen)
        if url.startswith(ELSEWHERE):
            seen.outcome = "elsewhere"
            return json_reply(
                200, {"authorization": "authorization" in lowered, "dpop": "dpop" in lowered}
            )
        if url.startswith(API):
            return self._api(seen, path)
        return json_reply(404, {"message": "not found"})

    def _date(self) -> dict[str, str]:
        return {"Date": formatdate(self.clock(), usegmt=True)}

    def _token(self, seen: Seen) -> Reply:
        def error(status: int, code: str, description: str, extra: Mapping[str, str] = {}) -> Reply:
            seen.outcome = code
            body = {"error": code, "error_description": description}
            return json_reply(status, body, {**self._date(), "Cache-Control": "no-store", **extra})

        try:
            proof = self.verify(seen, access_token=None)
        except Rejected as exc:
            return error(400, "invalid_dpop_proof", exc.description)
        wrong_nonce = proof.claims.get("nonce") != self.token_nonce
        if self.token_nonce is not None and (wrong_nonce or self.rotate_token_nonce):
            if self.rotate_token_nonce:  # a broker that wants a new nonce every time
                self.token_nonce = secrets.token_urlsafe(8)
            return error(
                400, "use_dpop_nonce", "a nonce is required", {"DPoP-Nonce": self.token_nonce}
            )
        if self._client_id(seen.headers.get("authorization", "")) is None:
            return error(401, "invalid_client", "client authentication failed")
        form = dict(parse_qsl(seen.body.decode()))
        if form.get("grant_type") != "client_credentials":
            return error(400, "unsupported_grant_type", "only client_credentials")
        if proof.jkt in self.revoked:
            return error(400, "invalid_grant", "the DPoP proof key belongs to a revoked device")
        if proof.jkt not in self.enrolled:
            return error(
                400, "invalid_grant", "the DPoP proof key is not an enrolled device of this client"
            )
        token = f"at-{next(self._ids)}-{secrets.token_urlsafe(12)}"
        with self._lock:
            self.issued[token] = Issued(proof.jkt, self.clock() + self.lifetime)
        seen.outcome = "issued"
        body = {"access_token": token, "token_type": self.token_type, "expires_in": self.lifetime}
        if "scope" in form:
            body["scope"] = form["scope"]
        return json_reply(200, body, {**self._date(), "Cache-Control": "no-store"})

    def _client_id(self, authorization: str) -> str | None:
        if authorization[:6].lower() != "basic ":
            return None
        decoded = base64.b64decode(authorization[6:]).decode()
        client_id, _, secret = decoded.partition(":")
        if (unquote_plus(client_id), unquote_plus(secret)) != (CLIENT_ID, SECRET):
            return None
        return CLIENT_ID

    def _api(self, seen: Seen, path: str) -> Reply:
        challenge = 'DPoP error="invalid_token", algs="ES256"'
        authorization = seen.headers.get("authorization", "")
        token = authorization[5:] if authorization[:5].lower() == "dpop " else ""
        issued = self.issued.get(token)
        try:
            proof = self.verify(seen, access_token=token)
        except Rejected as exc:
            seen.outcome = f"denied: {exc.description}"
            return 401, {"WWW-Authenticate": challenge}, b'{"message":"Unauthorized"}'
        if (
            issued is None
            or self.clock() >= issued.expires_at
            or issued.jkt != proof.jkt
            or token in self.refused_tokens
            or self.refuse_all_tokens
        ):
            seen.outcome = "denied: token"
            return 401, {"WWW-Authenticate": challenge}, b'{"message":"Unauthorized"}'
        if self.api_nonce is not None and proof.claims.get("nonce") != self.api_nonce:
            seen.outcome = "denied: nonce"
            nonce_challenge = 'DPoP error="use_dpop_nonce", error_description="nonce", algs="ES256"'
            return 401, {"WWW-Authenticate": nonce_challenge, "DPoP-Nonce": self.api_nonce}, b"{}"
        seen.outcome = "allowed"
        if path == "/redirect-same":
            return 303, {"Location": "/final?after=redirect"}, b""
        if path == "/redirect-other":
            return 302, {"Location": urljoin(ELSEWHERE, "/landing")}, b""
        return json_reply(200, {"ok": True, "path": path, "method": seen.method})

    # ---- proofs, verified with joserfc ----------------------------------------------
    def verify(self, seen: Seen, *, access_token: str | None) -> Proof:
        value = seen.headers.get("dpop")
        if not value:
            raise Rejected("DPoP proof missing")
        header = json.loads(base64.urlsafe_b64decode(value.split(".")[0] + "=="))
        if header.get("typ") != "dpop+jwt" or header.get("alg") != "ES256":
            raise Rejected("DPoP proof typ/alg")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict) or "d" in jwk:
            raise Rejected("DPoP proof jwk must be a public key")
        key = ECKey.import_key(jwk)
        try:
            compact = jws.deserialize_compact(value, key, algorithms=["ES256"])
        except JoseError as exc:
            raise Rejected("DPoP proof signature is invalid") from exc
        claims = json.loads(compact.payload)
        proof = Proof(header, claims, key.thumbprint())
        seen.proof = proof
        with self._lock:
            if claims.get("jti") in self.jtis:
                raise Rejected("DPoP proof replayed")
            self.jtis.append(claims["jti"])
        if claims.get("htm") != seen.method:
            raise Rejected("DPoP proof htm does not match the request method")
        if claims.get("htu") != expected_htu(seen.url):
            raise Rejected("DPoP proof htu does not match the request URI")
        now = self.clock()
        if claims["iat"] > now + PROOF_SKEW:
            raise Rejected("DPoP proof iat is in the future")
        if claims["iat"] < now - PROOF_MAX_AGE - PROOF_SKEW:
            raise Rejected("DPoP proof is too old")
        if access_token is not None:
            digest = b64url(hashlib.sha256(access_token.encode()).digest())
            if claims.get("ath") != digest:
                raise Rejected("DPoP proof ath does not match the access token")
        elif "ath" in claims:
            raise Rejected("no ath at the token endpoint")
        return proof


class FakeAdapter(BaseAdapter):
    """A requests transport adapter that answers from the fake (mount it on a Session)."""

    def __init__(self, broker: FakeBroker) -> None:
        super().__init__()
        self.broker = broker

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        body = request.body or b""
        content = body.encode() if isinstance(body, str) else bytes(body)
        status, headers, payload = self.broker.handle(
            str(request.method), str(request.url), dict(request.headers), content
        )
        response = requests.Response()
        response.status_code = status
        response.reason = http.HTTPStatus(status).phrase
        response.headers = CaseInsensitiveDict(headers)
        response._content = payload
        response.raw = io.BytesIO(payload)
        response.url = str(request.url)
        response.request = request
        response.connection = self  # type: ignore[assignment]
        response.encoding = "utf-8"
        return response

    def close(self) -> None:
        return None
