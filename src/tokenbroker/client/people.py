"""People as principals, client side: subject-token providers and self-service device
enrollment.

    from tokenbroker.client import DeviceKey, TokenSource
    from tokenbroker.client.people import enroll_device, subject_token_from_file

    key = DeviceKey.load()
    id_token = subject_token_from_file("~/.cache/idp/id_token")
    enroll_device(issuer, client_id=..., client_secret=..., key=key, subject_token=id_token)
    source = TokenSource(issuer, client_id=..., client_secret=..., key=key,
                         subject_token=id_token)     # tokens whose sub is the person

A provider is any zero-argument callable returning the person's current ID token; it is
called on every exchange (so a token renewed on disk or in the environment is picked up).
The token is never logged and never part of an error message.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx

from tokenbroker.client.errors import (
    BrokerClientError,
    BrokerUnavailable,
    InvalidClientError,
    InvalidGrantError,
)
from tokenbroker.client.keys import DeviceKey
from tokenbroker.client.proofs import make_proof
from tokenbroker.client.session import ID_TOKEN_TYPE, WELL_KNOWN, check_url

MAX_SUBJECT_TOKEN = 8192
ENROLLMENT_PATH = "/oauth2/devices"
_MAX_DESCRIPTION = 300

SubjectTokenProvider = Callable[[], str]


class DeviceLimitError(BrokerClientError):
    """The person already has the maximum number of devices (the message names the cap
    and how to revoke one)."""

    error = "device_limit_reached"


def _checked(token: str, where: str) -> str:
    token = token.strip()
    if not token or len(token) > MAX_SUBJECT_TOKEN or not token.isascii():
        raise BrokerClientError(
            f"no usable subject token in {where}", error="invalid_subject_token"
        )
    return token


def subject_token_from_file(path: str | os.PathLike[str]) -> SubjectTokenProvider:
    """Reads the file on every call (an IdP helper may rewrite it)."""
    file = Path(path).expanduser()

    def read() -> str:
        try:
            return _checked(file.read_text(encoding="ascii"), str(file))
        except (OSError, UnicodeDecodeError) as exc:
            raise BrokerClientError(
                f"cannot read the subject token file {file}", error="invalid_subject_token"
            ) from exc

    return read


def subject_token_from_env(name: str = "TOKENBROKER_SUBJECT_TOKEN") -> SubjectTokenProvider:
    def read() -> str:
        return _checked(os.environ.get(name, ""), f"${name}")

    return read


def _basic(client_id: str, client_secret: str) -> str:
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _endpoint(client: httpx.Client, issuer: str) -> str:
    """The enrollment endpoint sits next to the token endpoint (RFC 8414 metadata)."""
    try:
        metadata = client.get(issuer + WELL_KNOWN).json()
    except (httpx.HTTPError, ValueError) as exc:
        raise BrokerUnavailable(f"no broker metadata at {issuer}{WELL_KNOWN}") from exc
    token_endpoint = metadata.get("token_endpoint") if isinstance(metadata, dict) else None
    if not isinstance(token_endpoint, str) or not token_endpoint.endswith("/oauth2/token"):
        raise BrokerUnavailable("the broker's metadata has no usable token_endpoint")
    return token_endpoint[: -len("/oauth2/token")] + ENROLLMENT_PATH


def enroll_device(
    issuer: str,
    *,
    client_id: str,
    client_secret: str,
    key: DeviceKey,
    subject_token: SubjectTokenProvider,
    label: str = "",
    http_client: httpx.Client | None = None,
    timeout: float = 10.0,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Enroll ``key`` as a device of the person ``subject_token`` names, for the app
    ``client_id``. Returns the broker's answer (jkt, principal, active_devices,
    max_devices). Raises DeviceLimitError at the cap, InvalidGrantError/
    InvalidClientError/BrokerClientError when refused, BrokerUnavailable if unreachable."""
    issuer = check_url(issuer.rstrip("/"), "the issuer")
    client = http_client or httpx.Client(timeout=timeout)
    try:
        endpoint = _endpoint(client, issuer)
        form = {"subject_token": subject_token(), "subject_token_type": ID_TOKEN_TYPE}
        if label:
            form["label"] = label
        try:
            response = client.post(
                endpoint,
                data=form,
                headers={
                    "Authorization": _basic(client_id, client_secret),
                    "DPoP": make_proof(key, method="POST", url=endpoint, now=clock()),
                    "Accept": "application/json",
                },
            )
        except httpx.HTTPError as exc:
            raise BrokerUnavailable(f"cannot reach {endpoint} ({type(exc).__name__})") from exc
    finally:
        if http_client is None:
            client.close()
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code == 201 and isinstance(body, dict):
        return body
    code = str(body.get("error", "")) if isinstance(body, dict) else ""
    description = str(body.get("error_description", "")) if isinstance(body, dict) else ""
    description = description[:_MAX_DESCRIPTION] or f"enrollment refused ({response.status_code})"
    if response.status_code >= 500:
        raise BrokerUnavailable(description)
    if code == "device_limit_reached":
        raise DeviceLimitError(description)
    if code == "invalid_client":
        raise InvalidClientError(description)
    if code == "invalid_grant":
        raise InvalidGrantError(description)
    raise BrokerClientError(description, error=code or "enrollment_failed")
