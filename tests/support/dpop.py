"""A test-side DPoP toolkit that shares no code with ``tokenbroker``.

Proofs are built with joserfc (an independent JOSE implementation) and, for the
malformed cases joserfc refuses to produce, by hand: base64url + ``cryptography``.
Thumbprints come from joserfc, so a bug in ``tokenbroker.domain.rfc7638`` cannot hide
behind the same bug in the tests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from joserfc import jws
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, OKPKey

_EC = {
    "ES256": (ec.SECP256R1, hashes.SHA256, 32),
    "ES384": (ec.SECP384R1, hashes.SHA384, 48),
}
#: Group orders, for malleating ECDSA signatures.
CURVE_ORDER = {
    32: 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    48: int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
        "581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
}

JsonPart = Mapping[str, Any] | str | bytes


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(part: JsonPart) -> str:
    """A JWS segment from a dict (compact JSON), a raw JSON string, or raw bytes."""
    if isinstance(part, bytes):
        return b64url(part)
    if isinstance(part, str):
        return b64url(part.encode("utf-8"))
    return b64url(json.dumps(part, separators=(",", ":")).encode("utf-8"))


def ath_for(access_token: str) -> str:
    """RFC 9449 §4.2: base64url(SHA-256(ASCII(access_token)))."""
    return b64url(hashlib.sha256(access_token.encode("ascii")).digest())


@dataclass(frozen=True)
class DeviceKey:
    """A client device key pair (what the SDK keeps in the device's key store)."""

    alg: str
    private_key: Any

    @classmethod
    def generate(cls, alg: str = "ES256") -> DeviceKey:
        if alg in _EC:
            return cls(alg, ec.generate_private_key(_EC[alg][0]()))
        if alg == "EdDSA":
            return cls(alg, ed25519.Ed25519PrivateKey.generate())
        raise ValueError(f"unsupported alg {alg}")

    @property
    def _joserfc_key(self) -> ECKey | OKPKey:
        if self.alg == "EdDSA":
            return OKPKey.import_key(self.private_key)
        return ECKey.import_key(self.private_key)

    @property
    def public_jwk(self) -> dict[str, Any]:
        jwk = self._joserfc_key.as_dict(private=False)
        return {k: jwk[k] for k in ("kty", "crv", "x", "y") if k in jwk}

    @property
    def private_jwk(self) -> dict[str, Any]:
        return dict(self._joserfc_key.as_dict(private=True))

    @property
    def jkt(self) -> str:
        """RFC 7638 thumbprint, computed by joserfc."""
        key = OKPKey if self.alg == "EdDSA" else ECKey
        return key.import_key(self.public_jwk).thumbprint()

    def sign(self, data: bytes) -> bytes:
        """A raw JWS signature (r||s for ECDSA) over ``data`` with this key's own alg."""
        if self.alg == "EdDSA":
            return bytes(self.private_key.sign(data))
        _, digest, size = _EC[self.alg]
        r, s = decode_dss_signature(self.private_key.sign(data, ec.ECDSA(digest())))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")

    def proof(
        self,
        htm: str,
        htu: str,
        *,
        iat: Any,
        jti: str | None = None,
        ath: str | None = None,
        header_overrides: Mapping[str, Any] | None = None,
        claim_overrides: Mapping[str, Any] | None = None,
        drop_claims: Iterable[str] = (),
        drop_header: Iterable[str] = (),
    ) -> str:
        """A DPoP proof (RFC 9449 §4.2), signed by this key.

        Signed with joserfc when the header is one joserfc will produce for this key;
        otherwise (an ``alg`` that does not fit the key, unknown critical headers) the
        same key signs a hand-built JWS, so the only defect is the one asked for.
        """
        header: dict[str, Any] = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.public_jwk}
        header.update(header_overrides or {})
        for name in drop_header:
            header.pop(name, None)
        claims: dict[str, Any] = {
            "jti": jti if jti is not None else secrets.token_urlsafe(16),
            "htm": htm,
            "htu": htu,
            "iat": iat,
        }
        if ath is not None:
            claims["ath"] = ath
        claims.update(claim_overrides or {})
        for name in drop_claims:
            claims.pop(name, None)
        payload = json.dumps(claims, separators=(",", ":")).encode("utf-8")
        if header.get("alg") == self.alg:
            try:
                with warnings.catch_warnings():
                    # joserfc warns that "EdDSA" is deprecated by RFC 9864; the broker
                    # accepts exactly that name, so the proof must carry it.
                    warnings.simplefilter("ignore", SecurityWarning)
                    return jws.serialize_compact(
                        header, payload, self._joserfc_key, algorithms=[self.alg]
                    )
            except JoseError:
                pass
        return raw_jws(header, payload, sign_with=self)


def raw_jws(
    header: JsonPart,
    claims: JsonPart,
    *,
    sign_with: DeviceKey | None = None,
    signature: bytes | None = None,
) -> str:
    """A compact JWS built by hand, for inputs no JOSE library will produce.

    ``header``/``claims`` may be dicts, raw JSON text (duplicate members, NaN), or raw
    bytes (invalid UTF-8). The signature is ``signature`` if given, else the signature of
    ``sign_with`` over the signing input, else empty (``alg: none``).
    """
    signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
    if signature is None:
        signature = sign_with.sign(signing_input.encode("ascii")) if sign_with else b""
    return f"{signing_input}.{b64url(signature)}"


def split(compact: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """Header, claims and raw signature of a compact JWS (no verification)."""
    h, p, s = compact.split(".")

    def dec(seg: str) -> bytes:
        return base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))

    return json.loads(dec(h)), json.loads(dec(p)), dec(s)


def malleate_ecdsa(compact: str) -> str:
    """The same JWS with its ECDSA signature (r, s) replaced by (r, n - s): a second,
    equally valid signature over the same bytes."""
    h, p, s = compact.split(".")
    sig = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    size = len(sig) // 2
    r, s_int = int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big")
    other = r.to_bytes(size, "big") + (CURVE_ORDER[size] - s_int).to_bytes(size, "big")
    return f"{h}.{p}.{b64url(other)}"


def der_signature(raw: bytes) -> bytes:
    """DER form of a raw r||s ECDSA signature (what KMS returns)."""
    size = len(raw) // 2
    return encode_dss_signature(
        int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big")
    )
