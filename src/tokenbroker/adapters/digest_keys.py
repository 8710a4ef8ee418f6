"""The digest signing key on AWS KMS (ECC_NIST_P256, ECDSA_SHA_256, MessageType=RAW).

Digest signatures are kept in the DER form KMS returns: that is what ``kms:Verify``,
``openssl dgst -verify`` and ``cryptography`` all take, so an auditor can check a digest
with any of them. Verification here is local, with the public key from
``kms:GetPublicKey`` (fetched once and cached); ``verify_with_kms`` asks KMS instead.

MessageType=RAW, not DIGEST: KMS hashes the message itself (moto signs DIGEST as if it
were RAW, so a DIGEST path would pass tests here and fail on AWS).
"""

from __future__ import annotations

import threading
from typing import Any

from botocore.exceptions import ClientError
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from tokenbroker.adapters.aws import error_code, failing_closed
from tokenbroker.domain.errors import ConfigurationError

ALGORITHM = "ECDSA_SHA_256"
_MAX_RAW_MESSAGE = 4096  # KMS accepts RAW messages up to 4096 bytes
_NO_SUCH_KEY = frozenset({"NotFoundException", "InvalidArnException"})


class KmsDigestKey:
    """Signs digest statements with a KMS key and verifies them with its public key."""

    algorithm = ALGORITHM

    def __init__(self, kms: Any, key_id: str) -> None:
        if not key_id:
            raise ConfigurationError("DIGEST_KEY_ID is not configured")
        self._kms = kms
        self.key_id = key_id
        self._lock = threading.Lock()
        self._public: tuple[ec.EllipticCurvePublicKey, str] | None = None

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._fetch()[0]

    def names(self) -> frozenset[str]:
        """The key id as configured and the key ARN KMS resolves it to, so a statement
        names the same key whichever spelling an auditor pinned."""
        return frozenset({self.key_id, self._fetch()[1]})

    def _fetch(self) -> tuple[ec.EllipticCurvePublicKey, str]:
        """kms:GetPublicKey once: the key and its ARN (``KeyId`` in the response)."""
        with self._lock:
            if self._public is None:
                with failing_closed("kms:GetPublicKey"):
                    try:
                        response = self._kms.get_public_key(KeyId=self.key_id)
                    except ClientError as exc:
                        if error_code(exc) in _NO_SUCH_KEY:
                            raise ConfigurationError(
                                f"digest key {self.key_id} does not exist"
                            ) from exc
                        raise
                key = load_der_public_key(response["PublicKey"])
                if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
                    key.curve, ec.SECP256R1
                ):
                    raise ConfigurationError(f"digest key {self.key_id} is not ECC_NIST_P256")
                self._public = (key, str(response.get("KeyId") or self.key_id))
            return self._public

    def sign(self, message: bytes) -> bytes:
        """A DER-encoded ECDSA P-256 / SHA-256 signature of ``message``."""
        if len(message) > _MAX_RAW_MESSAGE:
            raise ValueError("digest statement exceeds the KMS RAW message limit")
        with failing_closed("kms:Sign"):
            response = self._kms.sign(
                KeyId=self.key_id,
                Message=message,
                MessageType="RAW",
                SigningAlgorithm=ALGORITHM,
            )
        return bytes(response["Signature"])

    def verify(self, message: bytes, signature: bytes) -> bool:
        return verify_signature(self.public_key(), message, signature)

    def verify_with_kms(self, message: bytes, signature: bytes) -> bool:
        """The same check done by KMS (``kms:Verify``)."""
        with failing_closed("kms:Verify"):
            try:
                response = self._kms.verify(
                    KeyId=self.key_id,
                    Message=message,
                    MessageType="RAW",
                    Signature=signature,
                    SigningAlgorithm=ALGORITHM,
                )
            except ClientError as exc:
                if error_code(exc) == "KMSInvalidSignatureException":
                    return False
                raise
        return bool(response.get("SignatureValid"))


def verify_signature(key: ec.EllipticCurvePublicKey, message: bytes, signature: bytes) -> bool:
    """ECDSA P-256 / SHA-256 over ``message`` with a DER signature."""
    try:
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True
