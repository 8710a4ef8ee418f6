"""Trusted external OIDC issuers: their configuration (DynamoDB) and their keys (HTTP).

Configuration lives in the IdPs table (key ``issuer``) declared in template.yaml; the
token function reads an entry once per cool-down (an in-memory cache, like its keys),
so an exchange costs no extra round trip once warm.

Keys: OIDC Discovery (``/.well-known/openid-configuration`` -> ``jwks_uri``) then the JWKS,
fetched with stdlib ``urllib`` under strict limits (timeouts, response size, key count,
https unless loopback). Why not pyjwt's ``PyJWKClient``: it has no response-size limit,
its own cache rules, and raises its own errors; here each issuer's keys sit in a
:class:`~tokenbroker.domain.keycache.KeyCache` (the broker's own cool-down and penalty
box: a flood of unknown ``kid`` s refetches at most once per cool-down), and every
failure is ``TemporarilyUnavailable`` (fail closed: 503, never a token). Keys are parsed
with pyjwt's :class:`jwt.PyJWK` (RS256 keys ≥ 2048 bits, ES256 keys on P-256 only).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import jwt
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tokenbroker.adapters.aws import error_code, failing_closed
from tokenbroker.domain.clock import Clock
from tokenbroker.domain.errors import Conflict, NotFound, TemporarilyUnavailable
from tokenbroker.domain.keycache import KeyCache
from tokenbroker.domain.rfc8693 import ALGORITHMS, MIN_RSA_BITS, TrustedIssuer

ISSUER = "issuer"
AUDIENCES = "audiences"
SCOPES = "scopes"
SUBJECT_CLAIM = "subject_claim"
REQUIRED_CLAIMS = "required_claims"
DISCOVERY_URL = "discovery_url"
CREATED_AT = "created_at"

MAX_DOCUMENT_BYTES = 64 * 1024
MAX_KEYS = 32
CONNECT_TIMEOUT = 2.0  # urllib has one timeout per socket operation
CONFIG_CACHE_SECONDS = 60.0

_ser = TypeSerializer()
_de = TypeDeserializer()


def _issuer_item(idp: TrustedIssuer) -> dict[str, Any]:
    values: dict[str, Any] = {
        ISSUER: idp.issuer,
        AUDIENCES: list(idp.audiences),
        SCOPES: sorted(idp.scopes),
        SUBJECT_CLAIM: idp.subject_claim,
        REQUIRED_CLAIMS: dict(idp.required_claims),
        DISCOVERY_URL: idp.discovery_url,
        CREATED_AT: idp.created_at,
    }
    return {k: _ser.serialize(v) for k, v in values.items()}


def _issuer(item: Mapping[str, Any]) -> TrustedIssuer:
    v = {k: _de.deserialize(x) for k, x in item.items()}
    return TrustedIssuer(
        issuer=v[ISSUER],
        audiences=tuple(v.get(AUDIENCES) or ()),
        scopes=frozenset(v.get(SCOPES) or ()),
        subject_claim=v.get(SUBJECT_CLAIM) or "sub",
        required_claims={str(k): str(x) for k, x in (v.get(REQUIRED_CLAIMS) or {}).items()},
        discovery_url=v.get(DISCOVERY_URL) or "",
        created_at=int(v.get(CREATED_AT) or 0),
    )


class DynamoIdpDirectory:
    """The trusted-issuer table. ``get`` is cached in memory for CONFIG_CACHE_SECONDS
    (a removed issuer stops being trusted within that time on every warm function)."""

    def __init__(self, dynamodb: Any, *, table: str, clock: Clock) -> None:
        self._ddb = dynamodb
        self._table = table
        self._clock = clock
        self._cache: dict[str, tuple[float, TrustedIssuer | None]] = {}
        self._lock = threading.Lock()

    def get(self, issuer: str) -> TrustedIssuer | None:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(issuer)
        if cached is not None and now - cached[0] < CONFIG_CACHE_SECONDS:
            return cached[1]
        with failing_closed("dynamodb:GetItem"):
            response = self._ddb.get_item(
                TableName=self._table, Key={ISSUER: {"S": issuer}}, ConsistentRead=True
            )
        item = response.get("Item")
        found = _issuer(item) if item else None
        with self._lock:
            if len(self._cache) > 256:  # unknown issuers cannot grow it without bound
                self._cache.clear()
            self._cache[issuer] = (now, found)
        return found

    def add(self, idp: TrustedIssuer) -> None:
        with failing_closed("dynamodb:PutItem"):
            try:
                self._ddb.put_item(
                    TableName=self._table,
                    Item=_issuer_item(idp),
                    ConditionExpression="attribute_not_exists(#i)",
                    ExpressionAttributeNames={"#i": ISSUER},
                )
            except ClientError as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    raise Conflict(f"issuer {idp.issuer} is already trusted") from exc
                raise

    def list(self) -> Iterator[TrustedIssuer]:
        with failing_closed("dynamodb:Scan"):
            for page in self._ddb.get_paginator("scan").paginate(TableName=self._table):
                for item in page.get("Items", []):
                    yield _issuer(item)

    def remove(self, issuer: str) -> None:
        with failing_closed("dynamodb:DeleteItem"):
            try:
                self._ddb.delete_item(
                    TableName=self._table,
                    Key={ISSUER: {"S": issuer}},
                    ConditionExpression="attribute_exists(#i)",
                    ExpressionAttributeNames={"#i": ISSUER},
                )
            except ClientError as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    raise NotFound(f"issuer {issuer} is not trusted") from exc
                raise
        with self._lock:
            self._cache.pop(issuer, None)


# ---- keys --------------------------------------------------------------------------

Fetch = Callable[[str], bytes]


def _allowed_url(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return bool(parts.hostname)
    # plain http only to this machine (the local stack's moto server)
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


def http_get(url: str, *, timeout: float = CONNECT_TIMEOUT) -> bytes:
    """GET ``url`` with a timeout and a size limit; any failure is TemporarilyUnavailable."""
    if not _allowed_url(url):
        raise TemporarilyUnavailable("issuer URL must be https")
    # the scheme was checked just above (https, or http to loopback only)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            if response.status != 200:
                raise TemporarilyUnavailable(f"issuer answered {response.status}")
            body: bytes = response.read(MAX_DOCUMENT_BYTES + 1)
    except TemporarilyUnavailable:
        raise
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise TemporarilyUnavailable(f"issuer keys unreachable ({type(exc).__name__})") from exc
    if len(body) > MAX_DOCUMENT_BYTES:
        raise TemporarilyUnavailable("issuer document is too large")
    return body


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise TemporarilyUnavailable(f"issuer {what} is not JSON") from exc
    if not isinstance(value, dict):
        raise TemporarilyUnavailable(f"issuer {what} is not a JSON object")
    return value


def parse_jwks(document: Mapping[str, Any]) -> dict[str, Any]:
    """kid -> public key, for the usable signing keys of a JWKS (others are skipped)."""
    keys = document.get("keys")
    if not isinstance(keys, list) or len(keys) > MAX_KEYS:
        raise TemporarilyUnavailable("issuer JWKS has no usable key list")
    found: dict[str, Any] = {}
    for jwk in keys:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or any(m in jwk for m in ("d", "p", "q", "k")):
            continue
        kty = jwk.get("kty")
        alg = jwk.get("alg") or {"RSA": "RS256", "EC": "ES256"}.get(str(kty))
        if alg not in ALGORITHMS:
            continue
        try:
            key = jwt.PyJWK(jwk, algorithm=alg).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
        if (isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS) or (
            isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
        ):
            found[kid] = key
    return found


class OidcKeySource:
    """Discovery document -> jwks_uri -> keys, for one issuer."""

    def __init__(self, idp: TrustedIssuer, *, fetch: Fetch = http_get) -> None:
        self._idp = idp
        self._fetch = fetch

    def fetch(self) -> dict[str, Any]:
        discovery = _json_object(self._fetch(self._idp.discovery), "discovery document")
        # OIDC Discovery §4.3: the document's issuer must be the issuer we trust
        if discovery.get("issuer") != self._idp.issuer:
            raise TemporarilyUnavailable("issuer discovery document names another issuer")
        jwks_uri = discovery.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not _allowed_url(jwks_uri):
            raise TemporarilyUnavailable("issuer discovery document has no usable jwks_uri")
        return parse_jwks(_json_object(self._fetch(jwks_uri), "JWKS"))


class IssuerKeys:
    """One :class:`KeyCache` per trusted issuer (same cool-down rules as the broker's own
    key cache). Rebuilt when an issuer's configuration changes."""

    def __init__(self, *, clock: Clock, fetch: Fetch = http_get, cooldown: float = 60.0) -> None:
        self._clock = clock
        self._fetch = fetch
        self._cooldown = cooldown
        self._caches: dict[str, tuple[TrustedIssuer, KeyCache]] = {}
        self._lock = threading.Lock()

    def resolver(self, idp: TrustedIssuer) -> Callable[[str], Any | None]:
        with self._lock:
            entry = self._caches.get(idp.issuer)
            if entry is None or entry[0] != idp:
                cache = KeyCache(
                    OidcKeySource(idp, fetch=self._fetch).fetch,
                    clock=self._clock,
                    cooldown=self._cooldown,
                )
                self._caches[idp.issuer] = entry = (idp, cache)
        return entry[1].resolve
