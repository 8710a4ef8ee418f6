"""One :class:`TokenSource` per (issuer, client, device key), shared by every request,
thread and event loop: RFC 8414 discovery, RFC 6749 §4.4 ``client_credentials`` with
``client_secret_basic`` or ``private_key_jwt`` (RFC 7523 §2.2, a client key instead of
a secret) and a DPoP proof (RFC 9449 §5), the token cached and renewed ahead
of expiry, and at most one token request in flight. (Longer than ~400 lines: the grant
flows, client credentials, token exchange and refresh, share one single-flight state
machine and one set of sync/async drivers.)

The HTTP exchanges are written once, as generators that yield requests and receive
responses; a sync (``httpx.Client``) and an async (``httpx.AsyncClient``) driver run them.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import os
import threading
import time
from collections.abc import Callable, Generator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, TypeAlias, TypeVar
from urllib.parse import quote_plus, urlsplit

import httpx

from tokenbroker.client.assertions import METHOD as PRIVATE_KEY_JWT
from tokenbroker.client.assertions import assertion_form, one_method
from tokenbroker.client.errors import (
    BrokerClientError,
    BrokerUnavailable,
    ClockSkewError,
    InvalidClientError,
    InvalidGrantError,
    MetadataError,
    TokenRequestError,
)
from tokenbroker.client.keys import DeviceKey
from tokenbroker.client.proofs import NonceStore, make_proof, origin

WELL_KNOWN = "/.well-known/oauth-authorization-server"
GRANT_TYPE = "client_credentials"
#: RFC 8693 token exchange: a person's ID token from a trusted issuer (see client/people.py)
EXCHANGE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
DEFAULT_TIMEOUT = 10.0
#: renew when less than this many seconds, or this fraction of the lifetime, is left
RENEW_BEFORE = 30.0
RENEW_FRACTION = 0.1
#: tokens without expires_in are treated as living this long (RFC 6749 §5.1: RECOMMENDED)
DEFAULT_LIFETIME = 60
_SKEW_HINT = 30.0  # a broker Date this far from our clock explains a proof rejection
_MAX_BODY = 1024 * 1024
_MAX_DESCRIPTION = 200

T = TypeVar("T")


# ---- values -------------------------------------------------------------------------


@dataclass(frozen=True)
class Metadata:
    """The RFC 8414 fields the client relies on."""

    issuer: str
    token_endpoint: str
    dpop_signing_alg_values_supported: tuple[str, ...]


@dataclass(frozen=True)
class AccessToken:
    """A DPoP-bound access token and when to stop using it (the token itself is in no
    repr)."""

    access_token: str = field(repr=False)
    token_type: str
    expires_in: int
    scope: str | None
    obtained_at: float  # our clock when the request was sent (so expiry errs early)
    response: Mapping[str, Any] = field(repr=False)  # the token response, as sent

    @property
    def expires_at(self) -> float:
        return self.obtained_at + self.expires_in

    @property
    def renew_at(self) -> float:
        """Stop using the token from here on: 30 s or 10 % of its lifetime before it
        expires, whichever is earlier, but never before half of its lifetime."""
        lead = min(max(RENEW_BEFORE, RENEW_FRACTION * self.expires_in), self.expires_in / 2)
        return self.expires_at - lead


@dataclass(frozen=True)
class _Request:
    method: str
    url: str
    headers: Mapping[str, str]
    form: Mapping[str, str] | None = None


@dataclass(frozen=True)
class _Response:
    status: int
    headers: httpx.Headers
    body: bytes


_Exchange: TypeAlias = Generator[_Request, _Response, T]


class _Abandoned(Exception):
    """The fetch a caller was waiting for was cancelled: the caller tries itself."""


# ---- metadata -------------------------------------------------------------------------


def check_url(url: str, what: str) -> str:
    """``url`` if it is absolute https (or http to a loopback host, for the local stack)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return url
    if parts.scheme == "http" and _is_loopback(host):
        return url
    raise MetadataError(f"{what} must be an https URL (http only for localhost): {url!r}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_metadata(
    body: object, issuer: str, *, auth_method: str = "client_secret_basic"
) -> Metadata:
    """Validate RFC 8414 metadata for ``issuer`` (§3.3: it must name that issuer) and
    the client's ``auth_method``."""
    if not isinstance(body, dict):
        raise MetadataError("the broker's metadata is not a JSON object")
    for name in ("issuer", "token_endpoint"):
        if not isinstance(body.get(name), str) or not body[name]:
            raise MetadataError(f"the broker's metadata has no {name}")
    if body["issuer"].rstrip("/") != issuer.rstrip("/"):
        raise MetadataError(
            f"the metadata at {issuer} names another issuer ({body['issuer']!r}); "
            "check the issuer URL"
        )
    algs = body.get("dpop_signing_alg_values_supported")
    if not isinstance(algs, list) or "ES256" not in algs:
        raise MetadataError(
            "the broker's metadata does not list ES256 in dpop_signing_alg_values_supported"
        )
    grants = body.get("grant_types_supported")
    if grants is not None and (not isinstance(grants, list) or GRANT_TYPE not in grants):
        raise MetadataError("the broker does not support the client_credentials grant")
    methods = body.get("token_endpoint_auth_methods_supported")  # default: basic (§2)
    if (methods is None and auth_method != "client_secret_basic") or (
        methods is not None and (not isinstance(methods, list) or auth_method not in methods)
    ):
        raise MetadataError(f"the broker does not support {auth_method}")
    return Metadata(
        issuer=body["issuer"],
        token_endpoint=check_url(body["token_endpoint"], "token_endpoint"),
        dpop_signing_alg_values_supported=tuple(str(a) for a in algs),
    )


def _json(response: _Response, what: str) -> object:
    try:
        return json.loads(response.body)
    except ValueError:
        raise BrokerUnavailable(
            f"the broker's {what} answered {response.status} with a body that is not JSON"
        ) from None


# ---- the token source ---------------------------------------------------------------


class TokenSource:
    """DPoP-bound access tokens for one client and device key. Thread-safe and usable
    from any number of event loops; share one per process."""

    def __init__(
        self,
        issuer: str,
        *,
        client_id: str,
        client_secret: str | None = None,
        key: DeviceKey,
        client_key: DeviceKey | None = None,
        scope: str | None = None,
        clock: Callable[[], float] = time.time,
        http_client: httpx.Client | None = None,
        async_http_client: httpx.AsyncClient | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        subject_token: Callable[[], str] | None = None,
        subject_token_type: str = ID_TOKEN_TYPE,
    ) -> None:
        """``subject_token``: a provider of the person's current ID token (a callable;
        see :mod:`tokenbroker.client.people` for file and environment providers). With
        it, every fetch is an RFC 8693 exchange of that token, so the token's ``sub`` is
        the person; without it, client_credentials (the client is the principal).
        ``client_secret`` or ``client_key`` (exactly one): how the client authenticates;
        a client key signs an RFC 7523 assertion for every token request."""
        one_method(client_secret, client_key)
        self._client_key = client_key
        self._subject_token = subject_token
        self._subject_token_type = subject_token_type
        self._refresh_token: str | None = None  # never in a repr or an error
        self.issuer = check_url(issuer.rstrip("/"), "the issuer")
        self.client_id = client_id
        self.key = key
        self.scope = scope
        self.clock = clock
        self.nonces = NonceStore()
        self._secret = client_secret or ""
        self._basic = (
            "Basic "
            + base64.b64encode(
                f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
            ).decode("ascii")  # RFC 6749 §2.3.1: form-encoded, then Basic
            if client_secret is not None
            else ""
        )
        self._http = http_client
        self._async_http = async_http_client
        self._timeout = timeout
        self._lock = threading.Lock()
        self._metadata: Metadata | None = None
        self._current: AccessToken | None = None
        self._inflight: Future[AccessToken] | None = None

    @classmethod
    def from_env(
        cls,
        key: DeviceKey | None = None,
        *,
        scope: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> TokenSource:
        """From ``TOKENBROKER_ISSUER``, ``TOKENBROKER_CLIENT_ID`` and
        ``TOKENBROKER_CLIENT_SECRET`` (or ``TOKENBROKER_CLIENT_KEY_FILE``: a client key's
        PEM file, for private_key_jwt); ``key`` defaults to the stored key "default"."""
        env = os.environ if environ is None else environ
        key_file = env.get("TOKENBROKER_CLIENT_KEY_FILE")
        needed = ["TOKENBROKER_ISSUER", "TOKENBROKER_CLIENT_ID"]
        missing = [name for name in needed if not env.get(name)]
        if not key_file and not env.get("TOKENBROKER_CLIENT_SECRET"):
            missing.append("TOKENBROKER_CLIENT_SECRET (or TOKENBROKER_CLIENT_KEY_FILE)")
        if missing:
            raise BrokerClientError(f"set {', '.join(missing)}", error="invalid_configuration")
        return cls(
            env["TOKENBROKER_ISSUER"],
            client_id=env["TOKENBROKER_CLIENT_ID"],
            client_secret=None if key_file else env["TOKENBROKER_CLIENT_SECRET"],
            client_key=DeviceKey.from_file(key_file) if key_file else None,
            key=key or DeviceKey.load(),
            scope=scope,
        )

    def __repr__(self) -> str:
        return (
            f"TokenSource(issuer={self.issuer!r}, client_id={self.client_id!r}, "
            f"jkt={self.key.jkt!r}, scope={self.scope!r})"
        )

    # ---- public API ---------------------------------------------------------------
    def metadata(self) -> Metadata:
        """The broker's RFC 8414 metadata (fetched once)."""
        if self._metadata is None:
            self._metadata = self._run(self._discovery())
        return self._metadata

    async def ametadata(self) -> Metadata:
        if self._metadata is None:
            self._metadata = await self._arun(self._discovery())
        return self._metadata

    def token(self, *, replacing: str | None = None) -> AccessToken:
        """A token with enough life left, fetching one if needed. ``replacing``: a token
        a resource refused; the result is a different one."""
        while True:
            flight, leader = self._join(replacing)
            if isinstance(flight, AccessToken):
                return flight
            if not leader:
                try:
                    return flight.result()
                except _Abandoned:
                    continue
            try:
                fetched = self._run(self._token_exchange())
            except Exception as exc:
                self._land(flight, error=exc)
                raise
            except BaseException:
                self._land(flight, error=_Abandoned())
                raise
            self._land(flight, token=fetched)
            return fetched

    async def atoken(self, *, replacing: str | None = None) -> AccessToken:
        """:meth:`token` for asyncio: waits without blocking the event loop."""
        while True:
            flight, leader = self._join(replacing)
            if isinstance(flight, AccessToken):
                return flight
            if not leader:
                try:
                    return await asyncio.wrap_future(flight)
                except _Abandoned:
                    continue
            try:
                fetched = await self._arun(self._token_exchange())
            except Exception as exc:
                self._land(flight, error=exc)
                raise
            except BaseException:  # cancelled: let a waiter fetch instead
                self._land(flight, error=_Abandoned())
                raise
            self._land(flight, token=fetched)
            return fetched

    def proof(self, method: str, url: str, access_token: str | None = None) -> str:
        """A fresh proof for one request, with the latest nonce of the URL's origin."""
        return make_proof(
            self.key,
            method=method,
            url=url,
            now=self.clock(),
            access_token=access_token,
            nonce=self.nonces.get(url),
        )

    # ---- single flight ------------------------------------------------------------
    def _join(self, replacing: str | None) -> tuple[AccessToken | Future[AccessToken], bool]:
        """The cached token if usable; else the fetch in flight, or a new one to lead.

        One ``Future`` for the fetch (not a lock per thread or loop) so that threads and
        event loops all wait for the same request: exactly one fetch per renewal."""
        with self._lock:
            current = self._current
            if (
                current is not None
                and current.access_token != replacing
                and self.clock() < current.renew_at
            ):
                return current, False
            if self._inflight is not None:
                return self._inflight, False
            flight: Future[AccessToken] = Future()
            flight.set_running_or_notify_cancel()  # a waiter's cancel cannot cancel it
            self._inflight = flight
            return flight, True

    def _land(
        self,
        flight: Future[AccessToken],
        *,
        token: AccessToken | None = None,
        error: BaseException | None = None,
    ) -> None:
        with self._lock:
            if token is not None:
                self._current = token
            self._inflight = None
        if token is not None:
            flight.set_result(token)
        else:
            flight.set_exception(error or _Abandoned())

    # ---- exchanges (no I/O here) --------------------------------------------------
    def _discovery(self) -> _Exchange[Metadata]:
        url = self.issuer + WELL_KNOWN
        response = yield _Request("GET", url, {"Accept": "application/json"})
        if response.status >= 500:
            raise BrokerUnavailable(f"the broker's metadata at {url} answered {response.status}")
        if response.status != 200:
            raise MetadataError(
                f"no broker metadata at {url} ({response.status}); check the issuer URL"
            )
        method = PRIVATE_KEY_JWT if self._client_key is not None else "client_secret_basic"
        return parse_metadata(_json(response, "metadata endpoint"), self.issuer, auth_method=method)

    def _token_exchange(self) -> _Exchange[AccessToken]:
        metadata = self._metadata
        if metadata is None:
            metadata = self._metadata = yield from self._discovery()
        endpoint = metadata.token_endpoint
        form = {"grant_type": GRANT_TYPE}
        refreshing = self._subject_token is not None and self._refresh_token is not None
        if refreshing:  # RFC 6749 §6: rotate the refresh token the last exchange gave us
            form = {"grant_type": "refresh_token", "refresh_token": str(self._refresh_token)}
        elif self._subject_token is not None:  # read on every fetch: it may have been renewed
            form = self._exchange_form()
        if self.scope:
            form["scope"] = self.scope
        nonce_retried = False
        while True:
            sent_at = self.clock()
            headers = {"DPoP": self.proof("POST", endpoint), "Accept": "application/json"}
            sent = form
            if self._client_key is not None:  # a new assertion each time (single use)
                sent = {**form, **self._assertion(endpoint, sent_at)}
            else:
                headers["Authorization"] = self._basic
            response = yield _Request("POST", endpoint, headers, sent)
            nonce_saved = self.nonces.remember(endpoint, response.headers.get("dpop-nonce"))
            if response.status == 200:
                body = _json(response, "token endpoint")
                issued = self._access_token(body, sent_at)
                if self._subject_token is not None:  # the newest one (rotated on every use)
                    refresh = body.get("refresh_token") if isinstance(body, dict) else None
                    self._refresh_token = refresh if isinstance(refresh, str) else None
                return issued
            code, description = self._oauth_error(response)
            if code == "use_dpop_nonce" and nonce_saved and not nonce_retried:
                nonce_retried = True  # RFC 9449 §8: retry once with the nonce
                continue
            if refreshing and code == "invalid_grant":
                # expired, revoked or rotated elsewhere: exchange the subject token again
                refreshing, self._refresh_token = False, None
                form = {**self._exchange_form(), **({"scope": self.scope} if self.scope else {})}
                continue
            raise self._token_error(response, code, description)

    def _assertion(self, endpoint: str, now: float) -> dict[str, str]:
        assert self._client_key is not None
        return assertion_form(
            self._client_key, client_id=self.client_id, audience=endpoint, now=now
        )

    def _exchange_form(self) -> dict[str, str]:
        assert self._subject_token is not None
        return {
            "grant_type": EXCHANGE_GRANT_TYPE,
            "subject_token": self._subject_token(),
            "subject_token_type": self._subject_token_type,
        }

    def _access_token(self, body: object, sent_at: float) -> AccessToken:
        if not isinstance(body, dict):
            raise TokenRequestError(
                "the token response is not a JSON object", error="invalid_response"
            )
        token, token_type = body.get("access_token"), body.get("token_type")
        if not isinstance(token, str) or not token or not token.isascii():
            raise TokenRequestError(
                "the token response has no access_token", error="invalid_response"
            )
        if not isinstance(token_type, str) or token_type.lower() != "dpop":
            raise TokenRequestError(
                f"the broker returned a {self._scrub(str(token_type))} token, not a DPoP-bound one",
                error="invalid_response",
            )
        lifetime = body.get("expires_in", DEFAULT_LIFETIME)
        if type(lifetime) is not int or lifetime <= 0:
            raise TokenRequestError(
                "the token response has an invalid expires_in", error="invalid_response"
            )
        scope = body.get("scope")
        return AccessToken(
            access_token=token,
            token_type=token_type,
            expires_in=lifetime,
            scope=scope if isinstance(scope, str) else self.scope,
            obtained_at=sent_at,
            response=dict(body),
        )

    def _oauth_error(self, response: _Response) -> tuple[str, str]:
        """(error, error_description) of an RFC 6749 §5.2 response; BrokerUnavailable
        for 5xx and bodies that are not JSON."""
        try:
            body = json.loads(response.body)
        except ValueError:
            body = None
        code = body.get("error") if isinstance(body, dict) else None
        text = body.get("error_description") if isinstance(body, dict) else None
        description = self._scrub(text) if isinstance(text, str) else ""
        if response.status >= 500:
            detail = f" ({self._scrub(code)})" if isinstance(code, str) else ""
            raise BrokerUnavailable(
                f"the broker's token endpoint answered {response.status}{detail}",
                error=self._scrub(code) if isinstance(code, str) else None,
            )
        if body is None:
            _json(response, "token endpoint")  # raises BrokerUnavailable
        if not isinstance(code, str) or not code:
            raise TokenRequestError(
                f"the token endpoint answered {response.status} without an OAuth error code",
                error="invalid_response",
            )
        return self._scrub(code), description

    def _token_error(self, response: _Response, code: str, description: str) -> TokenRequestError:
        said = f" ({description})" if description else ""
        if code == "invalid_client":
            return InvalidClientError(
                f"the broker rejected the client credentials (invalid_client): check the "
                f"client id {self.client_id!r} and its "
                + ("registered key (tokenbroker clients set-jwk)" if self._client_key else "secret")
            )
        if code == "invalid_grant":
            detail = f": {description}" if description else ""
            return InvalidGrantError(
                f"the broker refused this device key (invalid_grant{detail}); it is not "
                f"enrolled for client {self.client_id} or was revoked. An admin can enroll "
                f"it: tokenbroker devices enroll --client-id {self.client_id} --jkt {self.key.jkt}"
            )
        offset = self._clock_offset(response)
        time_words = ("iat", "too old", "in the future", "clock")
        if code == "invalid_dpop_proof" and (
            any(w in description.lower() for w in time_words)
            or (offset is not None and abs(offset) >= _SKEW_HINT)
        ):
            ahead = ""
            if offset is not None and abs(offset) >= 1:
                relation = "ahead of" if offset > 0 else "behind"
                ahead = f"; this machine's clock is {abs(offset):.0f} s {relation} the broker's"
            return ClockSkewError(
                f"the broker rejected the DPoP proof's time{said}{ahead}: check this machine's "
                "clock (enable NTP time synchronisation)"
            )
        if code == "use_dpop_nonce":
            return TokenRequestError(
                "the broker asked for a DPoP nonce again after a retry with one", error=code
            )
        return TokenRequestError(
            f"the token endpoint refused the request ({code}{said})", error=code
        )

    def _clock_offset(self, response: _Response) -> float | None:
        """Our clock minus the broker's (from its Date header), if it sent one."""
        date = response.headers.get("date")
        if not date:
            return None
        try:
            return self.clock() - parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            return None

    def _scrub(self, text: str) -> str:
        """Broker-supplied text fit for a one-line message: printable, short, and never
        the secret (whatever the broker echoes)."""
        text = "".join(c if c.isprintable() else " " for c in text)[:_MAX_DESCRIPTION]
        return text.replace(self._secret, "***") if self._secret else text

    # ---- drivers --------------------------------------------------------------------
    def _run(self, exchange: _Exchange[T]) -> T:
        client = self._http or httpx.Client(timeout=self._timeout)
        try:
            request = next(exchange)
            while True:
                request = exchange.send(_send(client, request))
        except StopIteration as done:
            result: T = done.value
            return result
        finally:
            if client is not self._http:
                client.close()

    async def _arun(self, exchange: _Exchange[T]) -> T:
        client = self._async_http or httpx.AsyncClient(timeout=self._timeout)
        try:
            request = next(exchange)
            while True:
                request = exchange.send(await _asend(client, request))
        except StopIteration as done:
            result: T = done.value
            return result
        finally:
            if client is not self._async_http:
                await client.aclose()


def _send(client: httpx.Client, request: _Request) -> _Response:
    try:
        response = client.request(
            request.method, request.url, headers=dict(request.headers), data=request.form
        )
    except httpx.HTTPError as exc:
        raise _unreachable(request.url, exc) from None  # the cause holds our headers
    return _response(response)


async def _asend(client: httpx.AsyncClient, request: _Request) -> _Response:
    try:
        response = await client.request(
            request.method, request.url, headers=dict(request.headers), data=request.form
        )
    except httpx.HTTPError as exc:
        raise _unreachable(request.url, exc) from None
    return _response(response)


def _response(response: httpx.Response) -> _Response:
    if len(response.content) > _MAX_BODY:
        raise BrokerUnavailable(
            f"the broker's answer from {origin(str(response.url))} is too large"
        )
    return _Response(response.status_code, response.headers, response.content)


def _unreachable(url: str, exc: httpx.HTTPError) -> BrokerUnavailable:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return BrokerUnavailable(f"cannot reach the broker at {origin(url)}: {reason[:200]}")
