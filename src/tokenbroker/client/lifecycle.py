"""SDK calls for RFC 7009 revocation and RFC 7662 introspection. The endpoints come from
the broker's RFC 8414 metadata (``revocation_endpoint``, ``introspection_endpoint``);
the client authenticates with ``client_secret_basic`` (RFC 6749 §2.3.1) or, given a
``client_key`` instead of a secret, ``private_key_jwt`` (RFC 7523 §2.2).

    from tokenbroker.client.lifecycle import LifecycleClient
    broker = LifecycleClient(issuer, client_id="tbc_...", client_secret=secret)
    broker.revoke(access_token)                 # RFC 7009: None, whatever the token was
    broker.introspect(access_token)["active"]   # RFC 7662
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus

import httpx

from tokenbroker.client.assertions import assertion_form, one_method
from tokenbroker.client.errors import (
    BrokerUnavailable,
    InvalidClientError,
    MetadataError,
    TokenRequestError,
)
from tokenbroker.client.keys import DeviceKey
from tokenbroker.client.session import check_url

METADATA_PATH = "/.well-known/oauth-authorization-server"
DEFAULT_TIMEOUT = 10.0
TOKEN_TYPE_HINTS = ("access_token", "refresh_token")


class LifecycleClient:
    def __init__(
        self,
        issuer: str,
        *,
        client_id: str,
        client_secret: str | None = None,
        client_key: DeviceKey | None = None,
        http_client: httpx.Client | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        one_method(client_secret, client_key)
        self._client_key = client_key
        self._clock = clock
        self.issuer = check_url(issuer.rstrip("/"), "issuer")
        self.client_id = client_id
        self._secret = client_secret or ""
        self._http = http_client or httpx.Client(timeout=timeout)
        self._metadata: dict[str, Any] | None = None

    def __repr__(self) -> str:  # never the secret
        return f"LifecycleClient({self.issuer!r}, client_id={self.client_id!r})"

    def endpoint(self, name: str) -> str:
        if self._metadata is None:
            url = self.issuer + METADATA_PATH
            response = self._send("GET", url)
            if response.status_code != 200:
                raise MetadataError(f"no broker metadata at {url} ({response.status_code})")
            body = self._json(response, "metadata endpoint")
            if body.get("issuer", "").rstrip("/") != self.issuer:
                raise MetadataError(f"the metadata at {self.issuer} names another issuer")
            self._metadata = body
        value = self._metadata.get(name)
        if not isinstance(value, str) or not value:
            raise MetadataError(f"the broker's metadata has no {name}")
        return check_url(value, name)

    def revoke(self, token: str, *, token_type_hint: str | None = None) -> None:
        """RFC 7009: the broker answers 200 whether or not the token was revocable."""
        self._post("revocation_endpoint", token, token_type_hint)

    def introspect(self, token: str, *, token_type_hint: str | None = None) -> dict[str, Any]:
        """RFC 7662: ``{"active": false}`` or the live token's claims."""
        response = self._post("introspection_endpoint", token, token_type_hint)
        body = self._json(response, "introspection endpoint")
        if not isinstance(body.get("active"), bool):
            raise BrokerUnavailable("the introspection answer has no boolean 'active'")
        return body

    def _post(self, endpoint: str, token: str, hint: str | None) -> httpx.Response:
        if hint is not None and hint not in TOKEN_TYPE_HINTS:
            raise ValueError(f"token_type_hint must be one of {', '.join(TOKEN_TYPE_HINTS)}")
        form = {"token": token, **({"token_type_hint": hint} if hint else {})}
        url = self.endpoint(endpoint)
        headers = {"Accept": "application/json"}
        if self._client_key is not None:  # RFC 7523 §2.2, aud = this endpoint
            form.update(
                assertion_form(
                    self._client_key, client_id=self.client_id, audience=url, now=self._clock()
                )
            )
        else:
            credentials = f"{quote_plus(self.client_id)}:{quote_plus(self._secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        response = self._send("POST", url, data=form, headers=headers)
        if response.status_code == 200:
            return response
        code, description = "invalid_request", ""
        try:
            error = json.loads(response.content)
            code = str(error.get("error", code))
            description = str(error.get("error_description", ""))[:200]
        except (ValueError, AttributeError):
            pass
        message = f"{endpoint} answered {response.status_code} {code}" + (
            f": {description}" if description else ""
        )
        if response.status_code >= 500:
            raise BrokerUnavailable(message, error=code)
        if code == "invalid_client":
            raise InvalidClientError(message)
        raise TokenRequestError(message, error=code)

    def _send(self, method: str, url: str, **kw: Any) -> httpx.Response:
        try:
            return self._http.request(method, url, **kw)
        except httpx.HTTPError as exc:
            raise BrokerUnavailable(f"{url} unreachable ({type(exc).__name__})") from None

    @staticmethod
    def _json(response: httpx.Response, what: str) -> dict[str, Any]:
        try:
            body = json.loads(response.content)
        except ValueError:
            raise BrokerUnavailable(f"the broker's {what} answered with non-JSON") from None
        if not isinstance(body, dict):
            raise BrokerUnavailable(f"the broker's {what} answered with non-object JSON")
        return body
