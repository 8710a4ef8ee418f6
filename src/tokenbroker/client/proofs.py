"""RFC 9449 on the client side: DPoP proofs, ``ath``, ``htu``, server nonces per origin,
and what a resource's ``WWW-Authenticate: DPoP`` challenge asks the client to do."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from tokenbroker.client.keys import DeviceKey
from tokenbroker.domain.jose import b64url_encode

PROOF_TYPE = "dpop+jwt"
#: RFC 9449 §8.1: nonce = 1*NQCHAR (printable ASCII without space, '"' and '\')
_NONCE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,512}")
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_MAX_ORIGINS = 256


def _split(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError("DPoP needs an absolute http(s) URL")
    netloc = parts.netloc.rpartition("@")[2].lower()  # never the userinfo
    return scheme, netloc, parts.path or "/"


def htu(url: str) -> str:
    """RFC 9449 §4.2 ``htu``: the request URL without query and fragment (and without
    userinfo)."""
    scheme, netloc, path = _split(url)
    return f"{scheme}://{netloc}{path}"


def origin(url: str) -> str:
    """``scheme://host[:port]`` with the default port dropped: the key for nonces."""
    scheme, netloc, _ = _split(url)
    host, _, port = netloc.rpartition(":") if not netloc.endswith("]") else (netloc, "", "")
    if host and port == _DEFAULT_PORTS[scheme]:
        netloc = host
    return f"{scheme}://{netloc}"


def ath(access_token: str) -> str:
    """RFC 9449 §4.2 ``ath``: base64url(SHA-256(ASCII(access_token)))."""
    return b64url_encode(hashlib.sha256(access_token.encode("ascii")).digest())


def make_proof(
    key: DeviceKey,
    *,
    method: str,
    url: str,
    now: float,
    access_token: str | None = None,
    nonce: str | None = None,
) -> str:
    """A fresh DPoP proof for one HTTP request (a new random ``jti`` every call)."""
    claims: dict[str, Any] = {
        "jti": secrets.token_urlsafe(16),
        "htm": method,
        "htu": htu(url),
        "iat": int(now),
    }
    if access_token is not None:
        claims["ath"] = ath(access_token)
    if nonce is not None:
        claims["nonce"] = nonce
    return key.sign_jwt(claims, {"typ": PROOF_TYPE, "jwk": key.public_jwk})


class NonceStore:
    """The latest ``DPoP-Nonce`` each origin sent (RFC 9449 §8, §9). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nonces: OrderedDict[str, str] = OrderedDict()

    def get(self, url: str) -> str | None:
        with self._lock:
            return self._nonces.get(origin(url))

    def remember(self, url: str, nonce: str | None) -> bool:
        """Keep ``nonce`` for ``url``'s origin if it is a valid nonce; whether it was."""
        if nonce is None or not _NONCE.fullmatch(nonce):
            return False
        key = origin(url)
        with self._lock:
            self._nonces[key] = nonce
            self._nonces.move_to_end(key)
            while len(self._nonces) > _MAX_ORIGINS:
                self._nonces.popitem(last=False)
        return True


# ---- resource challenges ------------------------------------------------------------

_ITEM = re.compile(
    r"\s*(?P<name>[!#$%&'*+.^_`|~0-9A-Za-z-]+)"
    r"(?:\s*=\s*(?:\"(?P<quoted>(?:[^\"\\]|\\.)*)\"|(?P<token>[^\s,\"]*)))?\s*,?"
)


def challenges(www_authenticate: str) -> dict[str, dict[str, str]]:
    """The challenges of a ``WWW-Authenticate`` value (RFC 9110 §11.6.1), as
    ``{scheme (lower case): {param (lower case): value}}``."""
    found: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    position = 0
    while position < len(www_authenticate):
        match = _ITEM.match(www_authenticate, position)
        if match is None or match.end() == position:
            break
        position = match.end()
        name = match.group("name").lower()
        if match.group("quoted") is None and match.group("token") is None:
            current = found.setdefault(name, {})
        elif current is not None:
            quoted = match.group("quoted")
            value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else match["token"]
            current[name] = value
    return found


Retry = Literal["nonce", "token"]


class ResourceAttempts:
    """What to do after a protected resource answered, for one request: retry once with
    the nonce it asked for, get a new token once and retry once, or stop. Never loops."""

    def __init__(self) -> None:
        self.nonce_retried = False
        self.token_retried = False

    def after(self, status: int, headers: Mapping[str, str], *, nonce_saved: bool) -> Retry | None:
        if status != 401:
            return None
        dpop = challenges(headers.get("www-authenticate") or "").get("dpop")
        if dpop is None:
            return None  # not a DPoP challenge: nothing we can fix
        error = dpop.get("error")
        if error == "use_dpop_nonce":
            if nonce_saved and not self.nonce_retried:
                self.nonce_retried = True
                return "nonce"
            return None
        if error in (None, "invalid_token") and not self.token_retried:
            self.token_retried = True
            return "token"
        return None
