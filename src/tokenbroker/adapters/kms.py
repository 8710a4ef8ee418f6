"""The Signer port on AWS KMS (ECC_NIST_P256, ECDSA_SHA_256, MessageType=RAW)."""

from __future__ import annotations

import threading
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from jwt.algorithms import ECAlgorithm
from jwt.utils import der_to_raw_signature

from tokenbroker.adapters.aws import failing_closed
from tokenbroker.domain.errors import ConfigurationError
from tokenbroker.domain.models import PublicJwk
from tokenbroker.domain.rfc7638 import jwk_thumbprint

_MAX_RAW_MESSAGE = 4096  # KMS accepts RAW messages up to 4096 bytes


class KmsSigner:
    """Signs with a KMS key. The public key (and so the ``kid``) is fetched once per
    execution environment and cached in memory.

    MessageType=RAW: KMS hashes the message itself. (moto treats DIGEST as RAW, so a
    DIGEST path would pass tests here and fail on AWS.)
    """

    def __init__(self, kms: Any, key_id: str) -> None:
        if not key_id:
            raise ConfigurationError("SIGNING_KEY_ID is not configured")
        self._kms = kms
        self._key_id = key_id
        self._lock = threading.Lock()
        self._public: tuple[PublicJwk, ec.EllipticCurvePublicKey] | None = None

    def _load(self) -> tuple[PublicJwk, ec.EllipticCurvePublicKey]:
        with self._lock:
            if self._public is None:
                self._public = fetch_public_key(self._kms, self._key_id)
            return self._public

    def public_jwk(self) -> PublicJwk:
        return self._load()[0]

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._load()[1]

    def sign(self, signing_input: bytes) -> bytes:
        if len(signing_input) > _MAX_RAW_MESSAGE:
            raise ValueError("signing input exceeds the KMS RAW message limit")
        with failing_closed("kms:Sign"):
            response = self._kms.sign(
                KeyId=self._key_id,
                Message=signing_input,
                MessageType="RAW",
                SigningAlgorithm="ECDSA_SHA_256",
            )
        return der_to_raw_signature(response["Signature"], ec.SECP256R1())


def fetch_public_key(kms: Any, key_id: str) -> tuple[PublicJwk, ec.EllipticCurvePublicKey]:
    """kms:GetPublicKey as a JWK (kid = RFC 7638 thumbprint) and a key object."""
    with failing_closed("kms:GetPublicKey"):
        response = kms.get_public_key(KeyId=key_id)
    key = load_der_public_key(response["PublicKey"])
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigurationError("the signing key must be ECC_NIST_P256")
    jwk = ECAlgorithm.to_jwk(key, as_dict=True)
    jwk = {k: jwk[k] for k in ("kty", "crv", "x", "y")}
    return PublicJwk(kid=jwk_thumbprint(jwk), jwk=jwk), key


class KmsPublicKeySource:
    """The edge's PublicKeySource: the public keys of the configured KMS signing keys."""

    def __init__(self, kms: Any, key_ids: tuple[str, ...]) -> None:
        if not key_ids:
            raise ConfigurationError("SIGNING_KEY_ID is not configured")
        self._kms = kms
        self._key_ids = key_ids

    def fetch(self) -> dict[str, Any]:
        keys = {}
        for key_id in self._key_ids:
            jwk, key = fetch_public_key(self._kms, key_id)
            keys[jwk.kid] = key
        return keys
